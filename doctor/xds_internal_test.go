package doctor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestControlPlaneCheck reads the sidecar's /xds_status as it answers in
// each state.
func TestControlPlaneCheck(t *testing.T) {
	all := `"versions": {"type.googleapis.com/envoy.config.listener.v3.Listener": "a1b2c3d4e5f6a7b8",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster": "c1", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "r1",
		"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "e1"}`
	for _, c := range []struct {
		name   string
		code   int
		body   string
		status Status
		want   string
	}{
		{"none", 404, "no control plane", Info, "no configuration from a control plane"},
		{"synced", 200, `{"address": "cp:15010", "connected": true, ` + all + `}`, Pass,
			"connected to cp:15010; in force: listeners a1b2c3d4e5f6, routes r1, clusters c1, endpoints e1"},
		{"refused", 200, `{"address": "cp:15010", "connected": true, ` + all + `, "nacked": {"type.googleapis.com/envoy.config.cluster.v3.Cluster": "version 3 refused: lb_policy"}}`,
			Fail, "refused its control plane's configuration: clusters: version 3 refused: lb_policy"},
		{"away", 200, `{"address": "cp:15010", "connected": false, "versions": {}, "last_error": "connection refused"}`, Fail,
			"not connected to cp:15010 (connection refused)"},
		{"warming", 200, `{"address": "cp:15010", "connected": true, "versions": {}}`, Fail, "listeners and clusters have not both come"},
		{"garbled", 500, `oops`, Fail, "answered 500"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(c.code)
			w.Write([]byte(c.body))
		}))
		got := controlPlaneFrom(srv.Client(), srv.URL)
		srv.Close()
		if got.Status != c.status || !strings.Contains(got.Detail, c.want) {
			t.Errorf("%s: %s %q, want %s %q", c.name, got.Status, got.Detail, c.status, c.want)
		}
	}
}
