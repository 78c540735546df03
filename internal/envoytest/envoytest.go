// Package envoytest writes the Envoy configurations shunt's tests and
// benchmarks run: a listener with an HTTP connection manager, access
// loggers, and a realistic route table.
package envoytest

import (
	"fmt"
	"strconv"
	"strings"
)

// HCM is a bootstrap whose listener_0 runs an HTTP connection manager.
type HCM struct {
	Address string // the listener's IP; 127.0.0.1 when empty
	Port    int    // 0: a free one
	// Fields are more of the manager's fields, each "name: value".
	Fields []string
	// AccessLogs are access_log entries in flow style (FileLog, StdoutLog).
	AccessLogs []string
	// Filters are http_filters before the router, in flow style, each
	// followed by ", ".
	Filters string
	// RouteConfig is route_config's fields, indented 12 spaces after a
	// newline; Clusters are static_resources.clusters' entries, indented
	// 2 after a newline.
	RouteConfig, Clusters string
}

// YAML is the bootstrap.
func (h HCM) YAML() string {
	addr := h.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	var fields strings.Builder
	for _, f := range h.Fields {
		fields.WriteString("\n          " + f)
	}
	if len(h.AccessLogs) > 0 {
		fields.WriteString("\n          access_log: [" + strings.Join(h.AccessLogs, ", ") + "]")
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: %s, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test%s
          http_filters: [%s{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:%s
  clusters:%s
`, addr, h.Port, fields.String(), h.Filters, h.RouteConfig, h.Clusters)
}

// FileLog is a file access logger in format (Envoy's default for "").
func FileLog(path, format string) string {
	return `{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` +
		strconv.Quote(path) + logFormat(format) + `}}`
}

// StdoutLog is a standard output access logger in format.
func StdoutLog(format string) string {
	return `{name: envoy.access_loggers.stdout, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` +
		logFormat(format) + `}}`
}

func logFormat(format string) string {
	if format == "" {
		return ""
	}
	return ", log_format: {text_format_source: {inline_string: " + strconv.Quote(format) + "}}"
}

// VirtualHosts are n virtual hosts (svc0 … svcN-1, by their cluster-local
// and short names) of 10 routes each — prefix, header and regex matches
// over clusters a, b and c — as route_config's virtual_hosts entries.
func VirtualHosts(n int) string {
	var b strings.Builder
	for v := range n {
		fmt.Fprintf(&b, "\n            - name: svc%d\n              domains: [\"svc%d.shop.svc.cluster.local\", \"svc%d\"]\n              routes:", v, v, v)
		for r := range 10 {
			cluster := []string{"a", "b", "c"}[r%3]
			switch r % 3 {
			case 0:
				fmt.Fprintf(&b, "\n              - {match: {prefix: \"/api/v%d/\"}, route: {cluster: %s}}", r, cluster)
			case 1:
				fmt.Fprintf(&b, "\n              - {match: {prefix: \"/api/\", headers: [{name: x-version, string_match: {exact: \"v%d\"}}]}, route: {cluster: %s}}", r, cluster)
			default:
				fmt.Fprintf(&b, "\n              - {match: {safe_regex: {regex: \"/items/[0-9]+/r%d\"}}, route: {cluster: %s}}", r, cluster)
			}
		}
	}
	return b.String()
}

// StaticCluster is a STATIC cluster of one endpoint.
func StaticCluster(name, ip string, port int) string {
	return fmt.Sprintf("\n  - name: %s\n    type: STATIC\n    load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %d}}}}]}]}",
		name, name, ip, port)
}

// sds is where Istio's SDS secrets come from, in flow style.
const sds = `{ads: {}, resource_api_version: V3}`

// MeshChainMatch is an inbound filter chain's filter_chain_match for
// Istio's mutual TLS (the mesh's ALPNs), in flow style.
const MeshChainMatch = `{transport_protocol: tls, application_protocols: [istio-peer-exchange, istio, istio-http/1.0, istio-http/1.1, istio-h2]}`

// MeshServerSocket is the transport socket of Istio's inbound mutual TLS:
// the workload certificate, a client certificate required and checked
// against the trust bundle; flow style.
const MeshServerSocket = `{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, ` +
	`require_client_certificate: true, common_tls_context: {alpn_protocols: [h2, http/1.1], ` +
	`tls_certificate_sds_secret_configs: [{name: default, sds_config: ` + sds + `}], ` +
	`combined_validation_context: {default_validation_context: {}, validation_context_sds_secret_config: {name: ROOTCA, sds_config: ` + sds + `}}}}}`

// MeshClientMatches are a cluster's transport_socket_matches as Istio's:
// mutual TLS to endpoints with the mesh's metadata (MeshEndpointMetadata),
// the peer checked to be san, plaintext to the rest; flow style.
func MeshClientMatches(san string) string {
	return `[{name: tlsMode-istio, match: {tlsMode: istio}, transport_socket: {name: envoy.transport_sockets.tls, typed_config: {` +
		`"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {` +
		`alpn_protocols: [istio-peer-exchange, istio], tls_certificate_sds_secret_configs: [{name: default, sds_config: ` + sds + `}], ` +
		`combined_validation_context: {default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "` + san + `"}}]}, ` +
		`validation_context_sds_secret_config: {name: ROOTCA, sds_config: ` + sds + `}}}}}}, ` +
		`{name: tlsMode-disabled, match: {}, transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}]`
}

// MeshEndpointMetadata marks an endpoint as a sidecar's (tlsMode istio);
// flow style.
const MeshEndpointMetadata = `{filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}`
