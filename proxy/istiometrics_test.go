package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/shunt-dev/shunt/proxy"
)

var productpage = proxy.Workload{Name: "productpage-v1", Namespace: "bookinfo", Principal: "unknown", App: "productpage",
	Version: "v1", CanonicalService: "productpage", CanonicalRevision: "v1", Cluster: "Kubernetes"}

// series finds the one series of a family whose labels include want, and
// returns it; it fails if there is none or more than one.
func series(t *testing.T, p *proxy.Proxy, family string, want map[string]string) *dto.Metric {
	t.Helper()
	found, all := matching(t, p, family, want)
	if len(found) != 1 {
		sort.Strings(all)
		t.Fatalf("%d series of %s with %v, want 1; there are:\n%s", len(found), family, want, strings.Join(all, "\n"))
	}
	return found[0]
}

// waitCount waits for the one counter of a family whose labels include
// want to reach n (the series may not be there yet: a request is counted
// after its response), and fails if it does not in 5 s.
func waitCount(t *testing.T, p *proxy.Proxy, family string, want map[string]string, n float64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		found, all := matching(t, p, family, want)
		if len(found) == 1 && found[0].GetCounter().GetValue() == n {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(all)
			t.Fatalf("%d series of %s with %v, want 1 counting %v; there are:\n%s", len(found), family, want, n, strings.Join(all, "\n"))
		}
	}
}

// matching are the series of a family whose labels include want, and
// every series of the family's labels.
func matching(t *testing.T, p *proxy.Proxy, family string, want map[string]string) (found []*dto.Metric, all []string) {
	t.Helper()
	mfs, err := p.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	metrics:
		for _, m := range mf.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			all = append(all, fmt.Sprint(have))
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			found = append(found, m)
		}
	}
	return found, all
}

// TestIstioMetrics: requests and TCP flows are counted in Istio's
// standard metrics with its label names and values: this pod as the
// source of outbound traffic and the destination of inbound, the peer
// unknown, and every label dashboards group by.
func TestIstioMetrics(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "0123456789") }))
	lp := startHTTP(t, b, func(c *proxy.Config) { c.Workload = &productpage })
	for range 3 {
		c := lp.dial(t, proxy.Outbound)
		exchange(t, c, bufio.NewReader(c), "POST /x HTTP/1.1\r\nHost: reviews.bookinfo:9080\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody", "POST")
	}
	c := lp.dial(t, proxy.Inbound)
	exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: productpage:9080\r\nConnection: close\r\n\r\n", "GET")
	refused := func() { // a 503 UF
		ln, _ := net.Listen("tcp4", "127.0.0.1:0")
		lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
		ln.Close()
		c := lp.dial(t, proxy.Outbound)
		exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n", "GET")
	}
	refused()
	lp.to(localEcho(t))
	tc := lp.dial(t, proxy.Outbound)
	roundTripLocal(t, tc, "\x00\x01not http\n")
	tc.Close()

	out := map[string]string{"reporter": "source", "source_workload": "productpage-v1", "source_workload_namespace": "bookinfo",
		"source_app": "productpage", "source_version": "v1", "source_canonical_service": "productpage",
		"source_canonical_revision": "v1", "source_cluster": "Kubernetes", "source_principal": "unknown",
		"destination_workload": "unknown", "destination_service": "reviews.bookinfo", "destination_service_name": "PassthroughCluster",
		"destination_service_namespace": "unknown", "request_protocol": "http", "response_code": "200",
		"grpc_response_status": "", "response_flags": "-", "connection_security_policy": "unknown"}
	waitCount(t, lp.Proxy, "istio_requests_total", out, 3)
	h := series(t, lp.Proxy, "istio_request_duration_milliseconds", out).GetHistogram()
	if h.GetSampleCount() != 3 {
		t.Errorf("duration count %d", h.GetSampleCount())
	}
	if s := series(t, lp.Proxy, "istio_request_bytes", out).GetHistogram().GetSampleSum(); s != 12 {
		t.Errorf("request bytes sum %v, want 12", s)
	}
	if s := series(t, lp.Proxy, "istio_response_bytes", out).GetHistogram().GetSampleSum(); s != 30 {
		t.Errorf("response bytes sum %v, want 30", s)
	}
	in := map[string]string{"reporter": "destination", "source_workload": "unknown", "destination_workload": "productpage-v1",
		"destination_workload_namespace": "bookinfo", "destination_app": "productpage", "destination_service": "productpage",
		"destination_service_name": "InboundPassthroughCluster", "destination_service_namespace": "bookinfo",
		"response_code": "200", "connection_security_policy": "none"}
	waitCount(t, lp.Proxy, "istio_requests_total", in, 1)
	uf := map[string]string{"reporter": "source", "destination_service": "ratings", "response_code": "503", "response_flags": "UF"}
	waitCount(t, lp.Proxy, "istio_requests_total", uf, 1)
	tcp := map[string]string{"reporter": "source", "source_workload": "productpage-v1", "request_protocol": "tcp",
		"destination_service_name": "PassthroughCluster", "response_flags": "-"}
	waitCount(t, lp.Proxy, "istio_tcp_connections_closed_total", tcp, 1)
	for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"} {
		want := 1.0
		if name != "istio_tcp_connections_opened_total" {
			want = 11 // "\x00\x01not http\n", echoed
		}
		if v := series(t, lp.Proxy, name, tcp).GetCounter().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
	}
}

func TestWorkloadFromEnv(t *testing.T) {
	env := map[string]string{
		"POD_NAME": "reviews-v2-5d9f8c7b6-abcde", "POD_NAMESPACE": "bookinfo",
		"ISTIO_METAJSON_LABELS": `{"app":"reviews","version":"v2","pod-template-hash":"5d9f8c7b6"}`,
	}
	got := proxy.WorkloadFromEnv(func(k string) string { return env[k] }, "/nonexistent")
	want := proxy.Workload{Name: "reviews-v2", Namespace: "bookinfo", Principal: "unknown", App: "reviews", Version: "v2",
		CanonicalService: "reviews", CanonicalRevision: "v2", Cluster: "Kubernetes"}
	if got != want {
		t.Errorf("from the environment:\n got %+v\nwant %+v", got, want)
	}
	file := t.TempDir() + "/labels"
	if err := os.WriteFile(file, []byte("app=\"ratings\"\nservice.istio.io/canonical-name=\"ratings-svc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = proxy.WorkloadFromEnv(func(k string) string { return map[string]string{"ISTIO_META_WORKLOAD_NAME": "ratings-v1"}[k] }, file)
	if got.Name != "ratings-v1" || got.App != "ratings" || got.CanonicalService != "ratings-svc" || got.CanonicalRevision != "latest" || got.Namespace != "unknown" {
		t.Errorf("from the labels file: %+v", got)
	}
	if got := proxy.WorkloadFromEnv(func(string) string { return "" }, "/nonexistent"); got.Name != "unknown" || got.Cluster != "Kubernetes" {
		t.Errorf("from nothing: %+v", got)
	}
}

// TestIstioMetricsServiceFromClusterMetadata: a cluster whose metadata
// names its services (Istio's istio.services, as shunt-control and istiod
// give inbound|PORT|| clusters) names destination_service, at the
// inbound sidecar too, whatever host the request came with, and for TCP.
func TestIstioMetricsServiceFromClusterMetadata(t *testing.T) {
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	echo := localEcho(t)
	cluster := func(name string, port uint16) string {
		return fmt.Sprintf(`  - name: "%s"
    connect_timeout: 1s
    type: STATIC
    metadata: {filter_metadata: {istio: {services: [{host: reviews.shop.svc.cluster.local, name: reviews, namespace: shop}]}}}
    load_assignment: {cluster_name: "%[1]s", endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, name, port)
	}
	config := `
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: INBOUND
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_0.0.0.0_9080
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: inbound, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: "inbound|9080||"}}]}]}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: INBOUND
    filter_chains:
    - filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound, cluster: "inbound|9000||"}}]
  clusters:
` + cluster("inbound|9080||", appPort) + cluster("inbound|9000||", echo.Port())
	cp := startConfig(t, config, nil)
	if resp, _ := cp.request(t, "GET / HTTP/1.1\r\nHost: 10.0.0.7:9080\r\nConnection: close\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(cp.ListenerAddr("tcp")))
	if err != nil {
		t.Fatal(err)
	}
	roundTripLocal(t, c, "\x00\x01not http\n")
	c.Close()
	svc := map[string]string{"reporter": "destination", "destination_service": "reviews.shop.svc.cluster.local",
		"destination_service_name": "reviews", "destination_service_namespace": "shop"}
	waitCount(t, cp.Proxy, "istio_requests_total", svc, 1)
	waitCount(t, cp.Proxy, "istio_tcp_connections_closed_total", svc, 1)
}
