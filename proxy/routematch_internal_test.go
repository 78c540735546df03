package proxy

import (
	"bytes"
	"io"
	"testing"

	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
	"github.com/shunt-dev/shunt/proxy/http1"
)

// bigRouteConfig is a realistic route table: 50 virtual hosts of 10
// routes each, prefix, header and regex matches over 3 clusters.
func bigRouteConfig(tb testing.TB) *routeConfig {
	tb.Helper()
	config := envoytest.HCM{RouteConfig: `
            virtual_hosts:` + envoytest.VirtualHosts(50),
		Clusters: "\n  - {name: a, type: STATIC}\n  - {name: b, type: STATIC}\n  - {name: c, type: STATIC}"}.YAML()
	b, err := envoyconfig.Parse([]byte(config))
	if err != nil {
		tb.Fatal(err)
	}
	res, err := build(b, buildOptions{open: func(string) (io.Writer, error) { return io.Discard, nil }})
	if err != nil {
		tb.Fatal(err)
	}
	return res.listeners[0].chains[0].http.routes
}

// parsedRequest is an h1conn holding a parsed request, for matching.
func parsedRequest(tb testing.TB, raw string) *h1conn {
	h := &h1conn{}
	r := http1.NewReader(bytes.NewReader([]byte(raw)), 0)
	if err := r.ReadRequest(&h.req); err != nil {
		tb.Fatal(err)
	}
	return h
}

// TestRouteMatchAllocatesNothing: matching a request against a large
// route table takes no allocation, whichever kind of match decides.
func TestRouteMatchAllocatesNothing(t *testing.T) {
	rc := bigRouteConfig(t)
	for _, tc := range []struct{ raw, want string }{
		{"GET /api/v9/x HTTP/1.1\r\nHost: svc49.shop.svc.cluster.local\r\n\r\n", "a"},
		{"GET /api/x HTTP/1.1\r\nHost: svc49:9080\r\nX-Version: v7\r\n\r\n", "b"},
		{"GET /items/123/r8 HTTP/1.1\r\nHost: svc25\r\n\r\n", "c"},
	} {
		h := parsedRequest(t, tc.raw)
		rt := rc.match(h, h.req.Host, false)
		if rt == nil || rt.cluster.name != tc.want {
			t.Fatalf("%q: route %+v, want cluster %s", tc.raw, rt, tc.want)
		}
		if n := testing.AllocsPerRun(100, func() { rc.match(h, h.req.Host, false) }); n != 0 {
			t.Errorf("%q: %v allocations per match", tc.raw, n)
		}
	}
}

// BenchmarkRouteMatch matches a request whose route is the last of its
// virtual host, a regex, in a 500-route table.
func BenchmarkRouteMatch(b *testing.B) {
	rc := bigRouteConfig(b)
	h := parsedRequest(b, "GET /items/123/r8 HTTP/1.1\r\nHost: svc49.shop.svc.cluster.local\r\nX-Version: v1\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if rc.match(h, h.req.Host, false) == nil {
			b.Fatal("no route")
		}
	}
}
