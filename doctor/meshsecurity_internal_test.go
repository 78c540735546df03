package doctor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMeshSecurityCheck reads the modes and the policies from a
// /config_dump in the shape shunt's sidecar prints.
func TestMeshSecurityCheck(t *testing.T) {
	dump := `{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": [{"listener": {
		"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "virtualInbound", "filter_chains": [
		{"name": "0.0.0.0_8080-mtls", "filter_chain_match": {"destination_port": 8080, "transport_protocol": "tls"}, "transport_socket": {"name": "envoy.transport_sockets.tls"},
		 "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {"http_filters": [
			{"name": "envoy.filters.http.rbac", "typed_config": {"rules": {"action": "DENY", "policies": {"ns[default]-policy[no-admin]-rule[0]": {}}}}},
			{"name": "envoy.filters.http.rbac", "typed_config": {"rules": {"policies": {"ns[default]-policy[readers]-rule[0]": {}, "ns[default]-policy[readers]-rule[1]": {}}}}}]}}]},
		{"name": "0.0.0.0_8080-refused-tls", "filter_chain_match": {"destination_port": 8080, "transport_protocol": "tls"}},
		{"name": "0.0.0.0_8080-refused-raw_buffer", "filter_chain_match": {"destination_port": 8080, "transport_protocol": "raw_buffer"}},
		{"name": "0.0.0.0_9102-mtls", "filter_chain_match": {"destination_port": 9102, "transport_protocol": "tls"}, "transport_socket": {}},
		{"name": "0.0.0.0_9102", "filter_chain_match": {"destination_port": 9102, "transport_protocol": "raw_buffer"}},
		{"name": "virtualInbound", "filter_chain_match": {}}]}}]}]}`
	for _, c := range []struct {
		name, body string
		code       int
		status     Status
		want       string
	}{
		{"modes and policies", dump, 200, Pass, "inbound mutual TLS: 8080: STRICT, 9102: PERMISSIVE, the rest: DISABLE (plaintext); authorization policies: DENY default/no-admin, ALLOW default/readers"},
		{"no inbound", `{"configs": []}`, 200, Info, "no inbound listener"},
		{"garbled", `oops`, 500, Fail, "answered 500"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(c.code)
			w.Write([]byte(c.body))
		}))
		got := meshSecurityFrom(srv.Client(), srv.URL)
		srv.Close()
		if got.Status != c.status || got.Detail != c.want && c.status == Pass || c.status != Pass && !strings.Contains(got.Detail, c.want) {
			t.Errorf("%s: %s %q, want %s %q", c.name, got.Status, got.Detail, c.status, c.want)
		}
	}
}
