package proxy_test

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/envoytest"
)

// rbacCallee is an inbound sidecar taking mutual TLS, with network RBAC
// filters before its last filter (an HTTP connection manager with HTTP
// RBAC filters before the router, or a TCP proxy), to the app on port.
func rbacCallee(logFile string, port uint16, netFilters, httpFilters string, tcp bool) string {
	logs := fmt.Sprintf(`[{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, `+
		`log_format: {text_format_source: {inline_string: "callee %%RESPONSE_CODE%% %%RESPONSE_CODE_DETAILS%% %%CONNECTION_TERMINATION_DETAILS%%\n"}}}}]`, logFile)
	last := `{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, ` +
		`stat_prefix: inbound, access_log: ` + logs + `, http_filters: [` + httpFilters + `{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}], ` +
		`route_config: {virtual_hosts: [{name: app, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]}}}`
	if tcp {
		last = `{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound, cluster: app, access_log: ` + logs + `}}`
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: INBOUND
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:
    - filter_chain_match: %s
      transport_socket: %s
      filters: [%s%s]
  clusters:
  - {name: app, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}}
`, envoytest.MeshChainMatch, envoytest.MeshServerSocket, netFilters, last, port)
}

// rbacHTTP is an HTTP RBAC filter with the action and policies (flow style).
func rbacHTTP(action, policies string) string {
	return `{name: envoy.filters.http.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: ` + action + `, policies: ` + policies + `}}}, `
}

const callerSAN = "spiffe://cluster.local/ns/default/sa/caller"

// TestHTTPRBAC: Envoy's HTTP RBAC filters as Istio puts them, DENY before
// ALLOW: a denied request is answered 403 "RBAC: access denied" with the
// policy in its details; one no ALLOW policy matches, likewise.
func TestHTTPRBAC(t *testing.T) {
	mesh := meshCA(t)
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "app saw %s %s", r.Method, r.URL.Path) })
	dir := t.TempDir()
	calleeLog := filepath.Join(dir, "callee.log")
	filters := rbacHTTP("DENY", `{deny-admin: {permissions: [{url_path: {path: {prefix: /admin}}}, {header: {name: ":method", string_match: {exact: DELETE}}}], principals: [{any: true}]}}`) +
		rbacHTTP("ALLOW", `{callers: {permissions: [{any: true}], principals: [{authenticated: {principal_name: {exact: "`+callerSAN+`"}}}]}}`)
	callee := startConfig(t, rbacCallee(calleeLog, appPort, "", filters, false), nil)
	callee.SetCertificates(func() *ca.Credentials { return workload(t, mesh, "callee") })
	request := func(sa, method, path string) (int, string) {
		caller := startConfig(t, callerConfig(filepath.Join(dir, sa+".log"), callee.ListenerAddr("inbound").String(), "spiffe://cluster.local/ns/default/sa/callee", true), nil)
		creds := workload(t, mesh, sa)
		caller.SetCertificates(func() *ca.Credentials { return creds })
		req, _ := http.NewRequest(method, "http://"+caller.ListenerAddr("outbound").String()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	for _, c := range []struct {
		sa, method, path string
		code             int
		body, details    string
	}{
		{"caller", "GET", "/hello", 200, "app saw GET /hello", "callee 200 via_upstream"},
		{"caller", "GET", "/admin/users", 403, "RBAC: access denied", "callee 403 rbac_access_denied_matched_policy[deny-admin]"},
		{"caller", "DELETE", "/hello", 403, "RBAC: access denied", "callee 403 rbac_access_denied_matched_policy[deny-admin]"},
		{"other", "GET", "/hello", 403, "RBAC: access denied", "callee 403 rbac_access_denied_matched_policy[none]"},
	} {
		code, body := request(c.sa, c.method, c.path)
		if code != c.code || body != c.body {
			t.Errorf("%s %s %s: %d %q, want %d %q", c.sa, c.method, c.path, code, body, c.code, c.body)
		}
		waitFile(t, calleeLog, c.details)
	}
	if _, text := adminGet(t, callee, "/stats?filter=rbac"); !strings.Contains(text, "http.inbound.rbac.denied: 3\n") {
		t.Errorf("Envoy's stats: %q, want http.inbound.rbac.denied: 3", text)
	}
}

// TestNetworkRBAC: Envoy's network RBAC filter before a TCP proxy: a
// connection from an identity it does not allow is closed before
// anything reaches the app, and logged with the policy.
func TestNetworkRBAC(t *testing.T) {
	mesh := meshCA(t)
	echo := localEcho(t)
	dir := t.TempDir()
	calleeLog := filepath.Join(dir, "callee.log")
	netRBAC := `{name: envoy.filters.network.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: tcp, ` +
		`rules: {action: ALLOW, policies: {callers: {permissions: [{destination_port: 0}, {not_rule: {destination_ip: {address_prefix: 192.0.2.0, prefix_len: 24}}}], ` +
		`principals: [{and_ids: {ids: [{authenticated: {principal_name: {exact: "` + callerSAN + `"}}}, {direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]}}]}}}}}, `
	callee := startConfig(t, rbacCallee(calleeLog, echo.Port(), netRBAC, "", true), nil)
	callee.SetCertificates(func() *ca.Credentials { return workload(t, mesh, "callee") })
	dial := func(sa string) (string, error) {
		cfg := callerConfig(filepath.Join(dir, sa+".log"), callee.ListenerAddr("inbound").String(), "spiffe://cluster.local/ns/default/sa/callee", true)
		start := strings.Index(cfg, "      - name: envoy.filters.network.http_connection_manager")
		end := strings.Index(cfg, "  clusters:")
		cfg = cfg[:start] + `      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: out, cluster: callee}
` + cfg[end:]
		caller := startConfig(t, cfg, nil)
		creds := workload(t, mesh, sa)
		caller.SetCertificates(func() *ca.Credentials { return creds })
		c, err := net.Dial("tcp", caller.ListenerAddr("outbound").String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	if got, err := dial("caller"); got != "ping" {
		t.Errorf("an allowed identity: %q %v, want the echo", got, err)
	}
	if got, err := dial("other"); got != "" || err == nil {
		t.Errorf("another identity: %q %v, want the connection closed", got, err)
	}
	waitFile(t, calleeLog, "callee 0 - rbac_access_denied_matched_policy[none]")
}
