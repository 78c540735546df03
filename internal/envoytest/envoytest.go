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
