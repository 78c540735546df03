package proxy_test

import (
	"bufio"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/shunt-dev/shunt/proxy"
)

// meshSidecar is a sidecar of workload name (version v1) in namespace
// shop, its metadata exchange in mode.
func meshSidecar(name, mode string) func(*proxy.Config) {
	return func(c *proxy.Config) {
		c.Workload = &proxy.Workload{Name: name + "-v1", Namespace: "shop", Principal: "unknown", App: name, Version: "v1",
			CanonicalService: name, CanonicalRevision: "v1", Cluster: "Kubernetes"}
		c.NodeID = "sidecar~10.0.0.1~" + name + "-v1-1.shop~shop.svc.cluster.local"
		c.PeerMetadata = mode
	}
}

// headerRecorder is an app that keeps the headers of the last request
// it got.
type headerRecorder struct {
	mu  sync.Mutex
	got http.Header
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.got = r.Header.Clone()
	h.mu.Unlock()
	io.WriteString(w, "ok")
}

func (h *headerRecorder) last() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got
}

// hasPeerHeaders says a message carries the exchange's headers.
func hasPeerHeaders(h http.Header) bool {
	return h.Get("X-Envoy-Peer-Metadata") != "" || h.Get("X-Envoy-Peer-Metadata-Id") != ""
}

// TestPeerMetadataExchange: two sidecars name each other in Istio's
// metrics through Istio's x-envoy-peer-metadata headers, over HTTP/1.1
// and HTTP/2, and neither app sees them: the caller's source report
// names the callee's workload, the callee's destination report the
// caller's.
func TestPeerMetadataExchange(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2]
		t.Run(name, func(t *testing.T) {
			app := &headerRecorder{}
			var b *backend
			if h2 {
				b = h2cBackend(t, app)
			} else {
				b = newBackend(t, app)
			}
			callee := startHTTP(t, b, meshSidecar("reviews", ""))
			caller := startHTTP(t, nil, meshSidecar("productpage", ""))
			caller.to(callee.Addr(proxy.Inbound))

			var resp *http.Response
			if h2 {
				client := h2cClient()
				defer client.CloseIdleConnections()
				req, _ := http.NewRequest("GET", "http://"+caller.Addr(proxy.Outbound).String()+"/reviews/1", nil)
				req.Host = "reviews:9080"
				req.Header.Set("X-Envoy-Peer-Metadata", "c3Bvb2ZlZA==") // an app's own, replaced
				var err error
				if resp, err = client.Do(req); err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			} else {
				c := caller.dial(t, proxy.Outbound)
				resp, _ = exchange(t, c, bufio.NewReader(c), "GET /reviews/1 HTTP/1.1\r\nHost: reviews:9080\r\n"+
					"x-envoy-peer-metadata: c3Bvb2ZlZA==\r\n\r\n", "GET")
			}
			if resp.StatusCode != 200 || hasPeerHeaders(resp.Header) {
				t.Fatalf("the caller's app got %d with headers %v: want 200 without the exchange's", resp.StatusCode, resp.Header)
			}
			if got := app.last(); hasPeerHeaders(got) {
				t.Errorf("the callee's app got the exchange's headers: %v", got)
			}
			out := map[string]string{"reporter": "source", "source_workload": "productpage-v1", "destination_workload": "reviews-v1",
				"destination_workload_namespace": "shop", "destination_canonical_service": "reviews", "destination_canonical_revision": "v1",
				"destination_app": "reviews", "destination_version": "v1", "destination_cluster": "Kubernetes",
				"destination_service_namespace": "shop", "destination_principal": "unknown"}
			in := map[string]string{"reporter": "destination", "destination_workload": "reviews-v1", "source_workload": "productpage-v1",
				"source_workload_namespace": "shop", "source_canonical_service": "productpage", "source_canonical_revision": "v1",
				"source_app": "productpage", "source_version": "v1", "source_cluster": "Kubernetes", "source_principal": "unknown"}
			waitCount(t, caller.Proxy, "istio_requests_total", out, 1)
			waitCount(t, callee.Proxy, "istio_requests_total", in, 1)
		})
	}
}

// TestPeerMetadataModes: IN_MESH sends nothing to PassthroughCluster
// (the callee cannot name its caller), off takes no part; a caller
// without a sidecar gets no metadata back, and metadata that is not
// Istio's leaves its caller unknown.
func TestPeerMetadataModes(t *testing.T) {
	app := &headerRecorder{}
	callee := startHTTP(t, newBackend(t, app), meshSidecar("reviews", ""))
	for _, mode := range []string{proxy.PeerMetadataInMesh, proxy.PeerMetadataOff} {
		caller := startHTTP(t, nil, meshSidecar("productpage", mode))
		caller.to(callee.Addr(proxy.Inbound))
		c := caller.dial(t, proxy.Outbound)
		resp, _ := exchange(t, c, bufio.NewReader(c), "GET /"+mode+" HTTP/1.1\r\nHost: reviews:9080\r\n\r\n", "GET")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", mode, resp.StatusCode)
		}
		out := map[string]string{"reporter": "source", "destination_workload": "unknown"}
		waitCount(t, caller.Proxy, "istio_requests_total", out, 1)
	}
	for _, raw := range []string{"", "x-envoy-peer-metadata: not base64 of a Struct!\r\n"} {
		c := callee.dial(t, proxy.Inbound)
		resp, _ := exchange(t, c, bufio.NewReader(c), "GET /direct HTTP/1.1\r\nHost: reviews:9080\r\n"+raw+"\r\n", "GET")
		if resp.StatusCode != 200 || (raw == "" && hasPeerHeaders(resp.Header)) {
			t.Errorf("a caller sending %q got %d %v", raw, resp.StatusCode, resp.Header)
		}
		if hasPeerHeaders(app.last()) {
			t.Errorf("the app got the exchange's headers: %v", app.last())
		}
	}
	in := map[string]string{"reporter": "destination", "source_workload": "unknown"}
	waitCount(t, callee.Proxy, "istio_requests_total", in, 4)
}

// TestPeerMetadataFromEnvoy: the metadata an Istio sidecar's Envoy sends
// (its node metadata's workload fields, with more shunt does not read)
// names the caller.
func TestPeerMetadataFromEnvoy(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{
		"NAME": "details-v1-5f4d584748-x2x9z", "NAMESPACE": "bookinfo", "WORKLOAD_NAME": "details-v1", "CLUSTER_ID": "east",
		"OWNER": "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/details-v1", "MESH_ID": "cluster.local",
		"INSTANCE_IPS": "10.244.0.12", "ISTIO_VERSION": "1.24.2", "APP_CONTAINERS": "details",
		"LABELS": map[string]any{"app": "details", "version": "v1", "service.istio.io/canonical-name": "details",
			"service.istio.io/canonical-revision": "v1", "pod-template-hash": "5f4d584748"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := proto.Marshal(md)
	callee := startHTTP(t, newBackend(t, &headerRecorder{}), meshSidecar("reviews", ""))
	c := callee.dial(t, proxy.Inbound)
	resp, _ := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: reviews:9080\r\n"+
		"x-envoy-peer-metadata-id: sidecar~10.244.0.12~details-v1-5f4d584748-x2x9z.bookinfo~bookinfo.svc.cluster.local\r\n"+
		"x-envoy-peer-metadata: "+base64.StdEncoding.EncodeToString(raw)+"\r\n\r\n", "GET")
	// The answer is the callee's own metadata, which decodes to a Struct
	// naming it as Istio's sidecars name themselves.
	var answer structpb.Struct
	b, _ := base64.StdEncoding.DecodeString(resp.Header.Get("X-Envoy-Peer-Metadata"))
	if err := proto.Unmarshal(b, &answer); err != nil {
		t.Fatalf("the answer's metadata %q: %v", resp.Header.Get("X-Envoy-Peer-Metadata"), err)
	}
	a := answer.AsMap()
	labels, _ := a["LABELS"].(map[string]any)
	if a["WORKLOAD_NAME"] != "reviews-v1" || a["NAMESPACE"] != "shop" || a["CLUSTER_ID"] != "Kubernetes" ||
		labels["service.istio.io/canonical-name"] != "reviews" || labels["app"] != "reviews" ||
		!strings.HasPrefix(resp.Header.Get("X-Envoy-Peer-Metadata-Id"), "sidecar~10.0.0.1~reviews-v1-1.shop") {
		t.Errorf("the callee answered %v (id %q)", a, resp.Header.Get("X-Envoy-Peer-Metadata-Id"))
	}
	in := map[string]string{"reporter": "destination", "source_workload": "details-v1", "source_workload_namespace": "bookinfo",
		"source_canonical_service": "details", "source_canonical_revision": "v1", "source_app": "details", "source_version": "v1",
		"source_cluster": "east"}
	waitCount(t, callee.Proxy, "istio_requests_total", in, 1)
}

// TestPeerMetadataFilterConfig: Istio's istio.metadata_exchange filters,
// as istiod sends them (TypedStructs, udpa's or xds'), configure the
// exchange; Istio's stats filter is taken (shunt has Istio's metrics
// anyway); what shunt does not implement is refused with its path.
func TestPeerMetadataFilterConfig(t *testing.T) {
	hcm := func(filters string) string {
		return `
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: out
          http_filters: [` + filters + `{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: out, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]}
  clusters:
  - {name: app, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}}
`
	}
	typed := func(kind, typeURL, value string) string {
		return `{name: istio.metadata_exchange, typed_config: {"@type": type.googleapis.com/` + kind + `, type_url: ` + typeURL + `, value: ` + value + `}}, `
	}
	for _, c := range []struct{ name, filters, problem string }{
		{"istiod's outbound", typed("udpa.type.v1.TypedStruct", "type.googleapis.com/io.istio.http.peer_metadata.Config",
			`{upstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], upstream_propagation: [{istio_headers: {skip_external_clusters: true}}]}`), ""},
		{"istiod's inbound, xds TypedStruct", typed("xds.type.v3.TypedStruct", "type.googleapis.com/io.istio.http.peer_metadata.Config",
			`{downstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], downstream_propagation: [{istio_headers: {}}]}`), ""},
		{"Istio's stats", typed("udpa.type.v1.TypedStruct", "type.googleapis.com/stats.PluginConfig", `{}`), ""},
		{"a method shunt lacks", typed("udpa.type.v1.TypedStruct", "type.googleapis.com/io.istio.http.peer_metadata.Config",
			`{upstream_propagation: [{baggage: {}}]}`), "http_filters[0].typed_config.value.upstream_propagation: not implemented by shunt: the baggage method"},
		{"another Istio filter", typed("udpa.type.v1.TypedStruct", "type.googleapis.com/io.istio.http.other.Config", `{}`),
			"http_filters[0].typed_config.type_url: not implemented by shunt: type.googleapis.com/io.istio.http.other.Config"},
	} {
		err := validate(hcm(c.filters))
		switch {
		case c.problem == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
			t.Errorf("%s: %v, want a problem with %q", c.name, err, c.problem)
		}
	}
}
