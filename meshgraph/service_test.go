package meshgraph_test

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/meshgraph"
)

// TestServicePage: a node's page has its callers and calls with their
// numbers, what the control plane says of it (routing, policies,
// endpoints, sidecars' sync) and, with a trace backend, a search of its
// traces and a form that sends a request ID to the backend's search; a
// name neither the control plane nor the graph knows is 404.
func TestServicePage(t *testing.T) {
	pp, rv, rt := meshgraph.Node{Name: "productpage", Namespace: "shop"}, meshgraph.Node{Name: "reviews", Namespace: "shop"}, meshgraph.Node{Name: "ratings", Namespace: "shop"}
	g := meshgraph.Graph{Seconds: 60, Nodes: []meshgraph.Node{pp, rt, rv}, Edges: []meshgraph.Edge{
		{EdgeKey: meshgraph.EdgeKey{From: pp, To: rv}, RPS: 12.5, ErrorRate: 0.02, P50: 3, P99: 40, MTLS: 1},
		{EdgeKey: meshgraph.EdgeKey{From: rv, To: rt}, RPS: 12.5, P50: 1, P99: math.NaN()},
	}}
	describe := func(ns, name string) (meshgraph.ServiceInfo, bool) {
		if ns != "shop" || name != "reviews" {
			return meshgraph.ServiceInfo{}, false
		}
		return meshgraph.ServiceInfo{Name: "reviews", Namespace: "shop", Host: "reviews.shop.svc.cluster.local", Ports: []string{"http 9080 → 9080"},
			Routing:   []meshgraph.Item{{Kind: "VirtualService", Name: "shop/reviews", Detail: "reviews (v1) 90%, reviews (v2) 10%", Problems: []string{"mirrorPercentage: not run"}}},
			Policies:  []meshgraph.Item{{Kind: "PeerAuthentication", Name: "shop/default", Detail: "mTLS STRICT"}},
			Endpoints: []meshgraph.Endpoint{{Address: "10.1.0.1:9080", Pod: "shop/reviews-v1-1", Ready: true}, {Address: "10.1.0.2:9080", Pod: "shop/reviews-v2-1"}},
			Sidecars:  []meshgraph.SidecarSync{{Proxy: "sidecar~10.1.0.1~reviews-v1-1.shop~shop.svc.cluster.local", Connected: "2026-12-02T10:00:00Z", Synced: true, Detail: "CDS 3 ACKed"}},
		}, true
	}
	srv := httptest.NewServer(meshgraph.Handler(func() (meshgraph.Graph, map[string]string) { return g, nil }, 5*time.Second,
		meshgraph.Options{Describe: describe, TracingURL: "http://jaeger:16686/"}))
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string, http.Header) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, page, _ := get("/graph/service/shop/reviews")
	if code != 200 {
		t.Fatalf("status %d: %s", code, page)
	}
	for _, want := range []string{`<h1 id="service">reviews.shop</h1>`, "reviews.shop.svc.cluster.local · ports http 9080 → 9080",
		`<table id="callers">`, `<td><a href="/graph/service/shop/productpage">productpage.shop</a></td><td>12.50</td><td>2.0%</td><td>3.00</td><td>40</td><td>100%</td>`,
		`<td><a href="/graph/service/shop/ratings">ratings.shop</a></td><td>12.50</td><td>0.0%</td><td>1.00</td><td>-</td>`,
		`<td>VirtualService</td><td>shop/reviews</td><td>reviews (v1) 90%, reviews (v2) 10%</td><td class="bad">mirrorPercentage: not run</td>`,
		`<td>PeerAuthentication</td><td>shop/default</td><td>mTLS STRICT</td>`,
		`<td>10.1.0.1:9080</td><td>shop/reviews-v1-1</td><td class="good">ready</td>`, `<td>10.1.0.2:9080</td><td>shop/reviews-v2-1</td><td class="bad">not ready</td>`,
		`<td class="good">SYNCED</td><td>CDS 3 ACKed</td>`,
		`<a id="traces" href="http://jaeger:16686/search?service=reviews.shop">`, `<form id="trace-search" action="/graph/trace" method="get">`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	// A node the control plane does not describe (a caller outside it)
	// still has its calls; one neither knows is 404.
	if code, page, _ := get("/graph/service/shop/ratings"); code != 200 || !strings.Contains(page, "Not a service the control plane knows") ||
		!strings.Contains(page, `<table id="callers">`) {
		t.Errorf("ratings: %d %s", code, page)
	}
	if code, _, _ := get("/graph/service/shop/nothing"); code != 404 {
		t.Errorf("an unknown service: %d", code)
	}
	code, _, h := get("/graph/trace?service=reviews.shop&id=" + url.QueryEscape(" 0b8d5f5e-1c2a-4a7e-9d1f-3e6f7a8b9c0d "))
	want := `http://jaeger:16686/search?service=reviews.shop&tags=` + url.QueryEscape(`{"guid:x-request-id":"0b8d5f5e-1c2a-4a7e-9d1f-3e6f7a8b9c0d"}`)
	if code != http.StatusFound || h.Get("Location") != want {
		t.Errorf("the request ID's search: %d %s, want %s", code, h.Get("Location"), want)
	}
	if _, svg, _ := get("/graph.svg"); !strings.Contains(svg, `<a href="/graph/service/shop/reviews"><g class="node" data-node="reviews.shop">`) {
		t.Errorf("the drawing's nodes do not link their pages:\n%s", svg)
	}
	noTraces := httptest.NewServer(meshgraph.Handler(func() (meshgraph.Graph, map[string]string) { return g, nil }, 5*time.Second, meshgraph.Options{}))
	defer noTraces.Close()
	resp, err := http.Get(noTraces.URL + "/graph/service/shop/reviews")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "trace-search") || !strings.Contains(string(b), "Not a service the control plane knows") {
		t.Errorf("without a backend or a control plane: %s", b)
	}
}
