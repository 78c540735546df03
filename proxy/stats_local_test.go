package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// statsConfig has a route with retries and stat_prefix "flaky" to a
// backend that fails its first request, one with stat_prefix "down" to
// a backend that always answers 503, one without stats, a direct
// response, and no route for the rest.
func statsConfig(t *testing.T, extra string) string {
	_, up := backendPort(t, (&flaky{fail: 1}).ServeHTTP)
	_, down := backendPort(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	return hcmYAML(filepath.Join(t.TempDir(), "log"), "", "", `
            virtual_hosts:
            - name: shop
              domains: ["*"]`+extra+`
              routes:
              - match: {prefix: "/flaky"}
                stat_prefix: flaky
                route: {cluster: up, retry_policy: {retry_on: 5xx, num_retries: 1}}
              - match: {prefix: "/down"}
                stat_prefix: down
                route: {cluster: down, retry_policy: {retry_on: 5xx, num_retries: 1}}
              - match: {prefix: "/plain"}
                route: {cluster: up}
              - match: {path: "/direct"}
                direct_response: {status: 200, body: {inline_string: hi}}`, fmt.Sprintf(`
  - name: up
    type: STATIC
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: down
    type: STATIC
    load_assignment: {cluster_name: down, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}`, up, down))
}

func adminGet(t *testing.T, cp *configProxy, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + cp.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEnvoyStats: per-route stats under vhost.<vhost>.route.<stat_prefix>,
// the connection manager's under http.<stat_prefix>, the cluster's under
// cluster.<name>, on /stats in Envoy's text and JSON and on
// /stats/prometheus with Envoy's tags; a reload keeps counting.
func TestEnvoyStats(t *testing.T) {
	config := statsConfig(t, "")
	cp := startConfig(t, config, nil)
	k := cp.keepAlive(t)
	for _, r := range []struct { // in order: the backend's one failure goes to /flaky
		path string
		want int
	}{{"/flaky", 200}, {"/down", 503}, {"/plain", 200}, {"/direct", 200}, {"/nothing", 404}} {
		if resp, body := k.do("GET", r.path, ""); resp.StatusCode != r.want {
			t.Fatalf("%s: %d %q, want %d", r.path, resp.StatusCode, body, r.want)
		}
	}
	// A request is counted as it is logged, just after its answer.
	var text string
	eventually(t, "/stats counts the last request", func() bool {
		_, text = adminGet(t, cp, "/stats")
		return strings.Contains(text, "\nhttp.test.downstream_rq_total: 5\n")
	})
	for _, line := range []string{
		"vhost.shop.route.flaky.upstream_rq_total: 2", "vhost.shop.route.flaky.upstream_rq_503: 1",
		"vhost.shop.route.flaky.upstream_rq_200: 1", "vhost.shop.route.flaky.upstream_rq_5xx: 1",
		"vhost.shop.route.flaky.upstream_rq_2xx: 1", "vhost.shop.route.flaky.upstream_rq_retry: 1",
		"vhost.shop.route.flaky.upstream_rq_retry_success: 1", "vhost.shop.route.flaky.upstream_rq_retry_limit_exceeded: 0",
		"vhost.shop.route.down.upstream_rq_total: 2", "vhost.shop.route.down.upstream_rq_503: 2",
		"vhost.shop.route.down.upstream_rq_retry_limit_exceeded: 1", "vhost.shop.route.down.upstream_rq_retry_success: 0",
		"http.test.downstream_rq_total: 5", "http.test.downstream_rq_2xx: 3", "http.test.downstream_rq_4xx: 1",
		"http.test.downstream_rq_5xx: 1", "http.test.no_route: 1", "http.test.rq_direct_response: 1", "http.test.rq_total: 4",
		"cluster.up.upstream_rq_total: 3", "cluster.up.upstream_rq_retry: 1", "cluster.up.upstream_rq_200: 2",
		"cluster.down.upstream_rq_503: 2", "cluster.down.upstream_rq_retry_limit_exceeded: 1",
		"cluster.up.membership_total: 1", "cluster.up.outlier_detection.ejections_active: 0",
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("/stats has no %q", line)
		}
	}
	if strings.Contains(text, "route.plain") || !strings.Contains(text, "vhost.shop.route.flaky.upstream_rq_time: P0(nan,") {
		t.Errorf("/stats: a route without stat_prefix has stats, or the flaky route has no time:\n%s", text)
	}
	if t.Failed() {
		t.Logf("/stats:\n%s", text)
	}

	// ?filter, ?usedonly, ?format=json, ?format=prometheus.
	if _, f := adminGet(t, cp, "/stats?filter=route%5C.down%5C..*_5..$&usedonly"); f != "vhost.shop.route.down.upstream_rq_503: 2\nvhost.shop.route.down.upstream_rq_5xx: 2\n" {
		t.Errorf("filtered: %q", f)
	}
	if code, body := adminGet(t, cp, "/stats?filter=("); code != 400 || !strings.Contains(body, "filter") {
		t.Errorf("a bad filter: %d %q", code, body)
	}
	_, js := adminGet(t, cp, "/stats?format=json&filter=flaky")
	var doc struct {
		Stats []struct {
			Name       string   `json:"name"`
			Value      *float64 `json:"value"`
			Histograms *struct {
				Supported []float64 `json:"supported_quantiles"`
				Computed  []struct {
					Name   string `json:"name"`
					Values []struct{ Cumulative *float64 }
				} `json:"computed_quantiles"`
			} `json:"histograms"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, js)
	}
	values, hist := map[string]float64{}, false
	for _, s := range doc.Stats {
		if s.Value != nil {
			values[s.Name] = *s.Value
		}
		if h := s.Histograms; h != nil && len(h.Computed) == 1 && h.Computed[0].Name == "vhost.shop.route.flaky.upstream_rq_time" &&
			len(h.Computed[0].Values) == len(h.Supported) && h.Computed[0].Values[0].Cumulative != nil {
			hist = true
		}
	}
	if values["vhost.shop.route.flaky.upstream_rq_retry"] != 1 || !hist {
		t.Errorf("json: %v, histogram %v\n%s", values, hist, js)
	}
	_, prom := adminGet(t, cp, "/stats?format=prometheus")
	for _, want := range []string{
		`envoy_vhost_route_upstream_rq{envoy_response_code="503",envoy_route="flaky",envoy_virtual_host="shop"} 1`,
		`envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_route="flaky",envoy_virtual_host="shop"} 1`,
		`envoy_http_no_route{envoy_http_conn_manager_prefix="test"} 1`,
		`envoy_cluster_upstream_rq_retry{cluster_name="up"} 1`,
		`envoy_cluster_upstream_rq_time_count{cluster_name="up"} 2`,
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("prometheus has no %s", want)
		}
	}
	if _, same := adminGet(t, cp, "/stats/prometheus"); !strings.Contains(same, "envoy_http_no_route") {
		t.Error("/stats/prometheus on the admin port has no Envoy stats")
	}

	// A reload that changes the virtual host keeps the route's stats.
	b, err := envoyconfig.Parse([]byte(strings.Replace(config, `domains: ["*"]`, `domains: ["*"]
              response_headers_to_add: [{header: {key: x-gen, value: "2"}}]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Reload(b); err != nil {
		t.Fatal(err)
	}
	if resp, _ := cp.keepAlive(t).do("GET", "/flaky", ""); resp.StatusCode != 200 || resp.Header.Get("X-Gen") != "2" {
		t.Fatalf("after the reload: %d %v", resp.StatusCode, resp.Header)
	}
	eventually(t, "the route's stats go on counting after the reload", func() bool {
		_, f := adminGet(t, cp, "/stats?filter=flaky.upstream_rq_total")
		return f == "vhost.shop.route.flaky.upstream_rq_total: 3\n"
	})
}
