package meshgraph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/meshgraph"
)

// series is one istio_requests_total series and its duration histogram,
// as a sidecar exposes them.
type series struct {
	reporter, srcApp, srcNS, dstApp, dstService, dstNS, dstWorkload, code, security string
	count                                                                           int
	buckets                                                                         map[float64]int // cumulative, by upper bound; flat between, count past the last
}

func (s series) text() string {
	labels := fmt.Sprintf(`reporter=%q,source_canonical_service=%q,source_workload=%q,source_workload_namespace=%q,destination_canonical_service=%q,`+
		`destination_service_name=%q,destination_service_namespace=%q,destination_workload=%q,destination_workload_namespace=%q,response_code=%q,connection_security_policy=%q`,
		s.reporter, s.srcApp, s.srcApp+"-v1", s.srcNS, s.dstApp, s.dstService, s.dstNS, s.dstWorkload, s.dstNS, s.code, s.security)
	var b strings.Builder
	fmt.Fprintf(&b, "istio_requests_total{%s} %d\n", labels, s.count)
	top := 0.0 // the highest bound given
	for le := range s.buckets {
		top = max(top, le)
	}
	cur := 0
	for _, le := range meshgraph.Bounds {
		if v, ok := s.buckets[le]; ok {
			cur = v
		} else if le > top {
			cur = s.count
		}
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{%s,le=\"%g\"} %d\n", labels, le, cur)
	}
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{%s,le=\"+Inf\"} %d\n", labels, s.count)
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_sum{%s} 0\nistio_request_duration_milliseconds_count{%s} %d\n", labels, labels, s.count)
	return b.String()
}

func exposition(ss ...series) string {
	var b strings.Builder
	b.WriteString("# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n")
	for _, s := range ss {
		b.WriteString(s.text())
	}
	return b.String()
}

func snapshot(t *testing.T, texts ...string) meshgraph.Snapshot {
	t.Helper()
	s := meshgraph.Snapshot{}
	for _, text := range texts {
		if err := s.Add(strings.NewReader(text)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestDiff: rates, error rates, percentiles and mutual TLS over a window,
// the destination's report taken and the source's only where no sidecar
// reports at the destination.
func TestDiff(t *testing.T) {
	// productpage → reviews: 1,000 requests in 10 s, 20 of them 503, all
	// over mutual TLS; 500 took ≤ 5 ms, 990 ≤ 25 ms. reviews also reports
	// as a source (ignored: the destination reports). productpage → an
	// external host with no sidecar: the source's report.
	before := snapshot(t, exposition(
		series{"destination", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "200", "mutual_tls", 100, map[float64]int{1: 0, 5: 50, 10: 60, 25: 99}},
	))
	after := snapshot(t,
		exposition(
			series{"destination", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "200", "mutual_tls", 1080, map[float64]int{1: 0, 5: 540, 10: 650, 25: 1079}},
			series{"destination", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "503", "mutual_tls", 20, map[float64]int{1: 0, 5: 10, 10: 10, 25: 20}},
		),
		exposition(
			series{"source", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "200", "unknown", 1080, nil},
			series{"source", "productpage", "shop", "unknown", "api.example.com", "unknown", "unknown", "200", "unknown", 50, map[float64]int{1: 0, 5: 0, 10: 0, 25: 0, 50: 0, 100: 50}},
		),
	)
	all := meshgraph.Diff(before, after, 10)
	// By workload: the same calls, between productpage-v1 and
	// reviews-v1; the external host, which has no workload, by its name.
	if w := all.View(true); len(w.Edges) != 2 || w.Edges[0].To.String() != "api.example.com" ||
		w.Edges[1].From.String() != "productpage-v1.shop" || w.Edges[1].To.String() != "reviews-v1.shop" || w.Edges[1].Requests != 1000 {
		t.Errorf("the workloads' edges: %+v", w.Edges)
	}
	g := all.View(false)
	if len(g.Edges) != 2 {
		t.Fatalf("edges %+v, want 2", g.Edges)
	}
	ext, rev := g.Edges[0], g.Edges[1]
	if ext.To.String() != "api.example.com" || rev.To.String() != "reviews.shop" || rev.From.String() != "productpage.shop" {
		t.Fatalf("edges %v → %v and %v → %v", ext.From, ext.To, rev.From, rev.To)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
	// 1,000 requests over 10 s; 20 errors; all mTLS. In the window, 500
	// took ≤ 5 ms, 600 ≤ 10, all ≤ 25: p50, rank 500, is the top of
	// (1, 5]; p99, rank 990, is 390 of the 400 in (10, 25]: 10 + 15 × 390/400.
	if !near(rev.RPS, 100) || !near(rev.ErrorRate, 0.02) || !near(rev.MTLS, 1) || !near(rev.P50, 5) || !near(rev.P99, 10+15*390.0/400) {
		t.Errorf("reviews edge: %+v", rev)
	}
	if !near(ext.RPS, 5) || ext.MTLS != 0 || !near(ext.P50, 75) {
		t.Errorf("external edge: %+v", ext)
	}
	if got := fmt.Sprint(g.Nodes); got != "[api.example.com productpage.shop reviews.shop]" {
		t.Errorf("nodes %s", got)
	}
	// A sidecar restarted: its counters start over, and count from zero.
	restarted := snapshot(t, exposition(series{"destination", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "200", "mutual_tls", 30, nil}))
	if g := meshgraph.Diff(after, restarted, 10).View(false); len(g.Edges) != 1 || !near(g.Edges[0].RPS, 3) {
		t.Errorf("after a restart: %+v", g.Edges)
	}
}

// TestScraperAndPage: sidecars scraped over HTTP, one of them down; the
// page, the SVG and the JSON say the same numbers.
func TestScraperAndPage(t *testing.T) {
	var count atomic.Int64
	count.Store(100)
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/prometheus" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, exposition(series{"destination", "productpage", "shop", "reviews", "reviews", "shop", "reviews-v1", "200", "mutual_tls", int(count.Load()), nil}))
	}))
	defer sidecar.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	s := &meshgraph.Scraper{Targets: func() []string {
		return []string{strings.TrimPrefix(sidecar.URL, "http://"), strings.TrimPrefix(down.URL, "http://")}
	}}
	s.Scrape(context.Background())
	if g, _ := s.Graph(); len(g.Edges) != 0 {
		t.Fatalf("one scrape made edges: %+v", g.Edges)
	}
	time.Sleep(100 * time.Millisecond)
	count.Add(50)
	s.Scrape(context.Background())
	g, failed := s.Graph()
	g = g.View(false)
	if len(g.Edges) != 1 || g.Edges[0].Requests != 50 || len(failed) != 1 {
		t.Fatalf("graph %+v, failed %v", g, failed)
	}
	srv := httptest.NewServer(meshgraph.Handler(s.Graph, 5*time.Second, meshgraph.Options{}))
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	page := get("/graph")
	rps := fmt.Sprintf("%.2f", g.Edges[0].RPS)
	for _, want := range []string{`<meta http-equiv="refresh" content="5">`, `data-node="productpage.shop"`, `data-node="reviews.shop"`,
		`data-from="productpage.shop" data-to="reviews.shop" data-rps="` + rps + `"`, `data-mtls="1.00"`, "🔒 mTLS",
		`<td><a href="/graph/service/shop/productpage">productpage.shop</a></td><td><a href="/graph/service/shop/reviews">reviews.shop</a></td><td>` + rps + "</td>", `class="failed"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	if page := get("/graph?view=workloads"); !strings.Contains(page, `data-node="productpage-v1.shop"`) || !strings.Contains(page, `data-node="reviews-v1.shop"`) ||
		!strings.Contains(page, `<a id="services" href="/graph">services</a>`) || strings.Contains(page, `data-node="reviews.shop"`) {
		t.Errorf("the workloads' page:\n%s", page)
	}
	if svg := get("/graph.svg"); !strings.HasPrefix(svg, `<svg xmlns="http://www.w3.org/2000/svg"`) || !strings.Contains(svg, `class="edge"`) {
		t.Errorf("/graph.svg: %s", svg)
	}
	var j struct {
		Edges []struct {
			From, To string
			RPS      float64 `json:"rps"`
			MTLS     float64 `json:"mtls"`
		} `json:"edges"`
		Failed map[string]string `json:"failed"`
	}
	if err := json.Unmarshal([]byte(get("/graph.json")), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Edges) != 1 || j.Edges[0].From != "productpage.shop" || fmt.Sprintf("%.2f", j.Edges[0].RPS) != rps || j.Edges[0].MTLS != 1 || len(j.Failed) != 1 {
		t.Errorf("/graph.json: %+v", j)
	}
}

// TestPrometheusSource: the graph from Prometheus's query API — its
// increase() vectors read as a window's counts; a server that answers
// an error is named under failed.
func TestPrometheusSource(t *testing.T) {
	labels := `"reporter":"destination","source_canonical_service":"productpage","source_workload_namespace":"shop",` +
		`"destination_canonical_service":"reviews","destination_service_name":"reviews","destination_service_namespace":"shop",` +
		`"destination_workload":"reviews-v1","destination_workload_namespace":"shop","connection_security_policy":"mutual_tls"`
	var queries []string
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		queries = append(queries, q)
		switch {
		case strings.Contains(q, "istio_requests_total[60s]"):
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[`+
				`{"metric":{%s,"response_code":"200"},"value":[1,"594"]},{"metric":{%s,"response_code":"503"},"value":[1,"6"]}]}}`, labels, labels)
		case strings.Contains(q, "istio_request_duration_milliseconds_bucket[60s]"):
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[`+
				`{"metric":{%s,"response_code":"200","le":"5"},"value":[1,"300"]},{"metric":{%s,"response_code":"200","le":"10"},"value":[1,"600"]},`+
				`{"metric":{%s,"response_code":"200","le":"+Inf"},"value":[1,"600"]}]}}`, labels, labels, labels)
		default:
			w.WriteHeader(400)
			io.WriteString(w, `{"status":"error","error":"unexpected query"}`)
		}
	}))
	defer prom.Close()
	g, failed := (&meshgraph.Prometheus{URL: prom.URL}).Graph()
	g = g.View(false)
	if len(failed) != 0 || len(g.Edges) != 1 {
		t.Fatalf("graph %+v, failed %v (queries %q)", g, failed, queries)
	}
	e := g.Edges[0]
	if e.From.String() != "productpage.shop" || e.To.String() != "reviews.shop" || e.RPS != 10 || e.ErrorRate != 0.01 || e.MTLS != 1 || e.P50 != 5 {
		t.Errorf("edge %+v", e)
	}
	if !strings.Contains(queries[0], "sum by (reporter,") || !strings.Contains(queries[1], ",le) (increase(") {
		t.Errorf("queries %q", queries)
	}
	prom.Close()
	if _, failed := (&meshgraph.Prometheus{URL: prom.URL}).Graph(); failed[prom.URL] == "" {
		t.Errorf("a Prometheus that is not there: failed %v", failed)
	}
}
