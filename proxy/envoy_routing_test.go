package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// routingConfig is a listener whose one virtual host (plus any others in
// vhosts) holds routes, over clusters a and b (and c, which has no
// endpoint), each a backend that says who it is and what it saw.
func routingConfig(t *testing.T, logFile string, vhosts, routes string) (string, map[string]netip.AddrPort) {
	t.Helper()
	eps := map[string]netip.AddrPort{}
	clusters := ""
	for _, name := range []string{"a", "b"} {
		_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
			keys := make([]string, 0, len(r.Header))
			for k := range r.Header {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			w.Header().Set("X-Backend", name)
			w.Header().Set("X-Drop-Me", "1")
			fmt.Fprintf(w, "%s %s %s host=%s", name, r.Method, r.URL.RequestURI(), r.Host)
			for _, k := range keys {
				if strings.HasPrefix(k, "X-") && k != "X-Request-Id" && k != "X-Forwarded-Proto" {
					fmt.Fprintf(w, " %s=%s", k, strings.Join(r.Header[k], ","))
				}
			}
		})
		eps[name] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		clusters += fmt.Sprintf(`
  - name: %s
    type: STATIC
    load_assignment:
      cluster_name: %s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]`, name, name, port)
	}
	clusters += "\n  - {name: c, type: STATIC}"
	return hcmYAML(logFile, "", "", `
            name: routes
            request_headers_to_add: [{header: {key: x-level, value: config}}]
            response_headers_to_add: [{header: {key: x-level-resp, value: config}}]
            virtual_hosts:`+vhosts+`
            - name: main
              domains: ["*"]
              request_headers_to_add: [{header: {key: x-level, value: vhost}}]
              routes:`+routes, clusters), eps
}

// keepAlive is a client connection to the listener that sends requests
// one after another.
type keepAlive struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (cp *configProxy) keepAlive(t *testing.T) *keepAlive {
	c, err := net.Dial("tcp", cp.ListenerAddr("listener_0").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{t: t, c: c, br: bufio.NewReader(c)}
}

func (k *keepAlive) do(method, target, headers string) (*http.Response, string) {
	k.t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(k.c, "%s %s HTTP/1.1\r\nHost: shop.example:8080\r\n%s\r\n", method, target, headers)
	resp, err := http.ReadResponse(k.br, &http.Request{Method: method})
	if err != nil {
		k.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestRouting: Envoy's route matching and actions, each case a request and
// what the client and the backend see.
func TestRouting(t *testing.T) {
	routes := `
              - match: {path: "/exact"}
                route: {cluster: a}
              - match: {path_separated_prefix: "/api"}
                route: {cluster: b}
              - match: {prefix: "/CaSe", case_sensitive: false}
                route: {cluster: b}
              - match: {safe_regex: {regex: "/v[0-9]+/users/[a-z]+"}}
                route: {cluster: b}
              - match:
                  prefix: "/h"
                  headers:
                  - {name: x-canary, string_match: {exact: "yes"}}
                  - {name: x-beta, present_match: true, invert_match: true}
                route: {cluster: b}
              - match:
                  prefix: "/q"
                  query_parameters: [{name: debug, string_match: {prefix: "on"}}]
                route: {cluster: b}
              - match: {prefix: "/", grpc: {}}
                direct_response: {status: 200, body: {inline_string: "grpc route"}}
              - match: {prefix: "/old/"}
                route: {cluster: b, prefix_rewrite: "/new/"}
              - match: {prefix: "/rx/"}
                route: {cluster: b, regex_rewrite: {pattern: {regex: "^/rx/([a-z]+)/(\\d+)$"}, substitution: "/items/\\2/\\1"}}
              - match: {prefix: "/host"}
                route: {cluster: a, host_rewrite_literal: internal.example}
              - match: {prefix: "/by-header"}
                route: {cluster_header: x-cluster}
              - match: {prefix: "/secure"}
                redirect: {https_redirect: true, strip_query: true}
              - match: {prefix: "/moved"}
                redirect: {path_redirect: "/there", response_code: PERMANENT_REDIRECT, host_redirect: "other.example"}
              - match: {prefix: "/teapot"}
                direct_response: {status: 418, body: {inline_string: "short and stout"}}
              - match: {prefix: "/hdr"}
                request_headers_to_add:
                - {header: {key: x-level, value: route}}
                - {header: {key: x-only, value: first}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
                request_headers_to_remove: [x-secret]
                response_headers_to_add: [{header: {key: x-added, value: "1"}}]
                response_headers_to_remove: [x-drop-me]
                route: {cluster: a}
              - match: {prefix: "/"}
                route: {cluster: a}`
	logFile := filepath.Join(t.TempDir(), "access.log")
	config, _ := routingConfig(t, logFile, "", routes)
	cp := startConfig(t, config, nil)
	cp.logFile = logFile
	k := cp.keepAlive(t)
	for _, tc := range []struct {
		name, method, target, headers string
		code                          int
		body                          string // the response body starts with this
		header                        string // "Name: value" the response has
	}{
		{"exact path", "GET", "/exact", "", 200, "a GET /exact ", ""},
		{"exact path is not a prefix", "GET", "/exact/more", "", 200, "a GET /exact/more ", ""},
		{"separated prefix, the whole segment", "GET", "/api", "", 200, "b GET /api ", ""},
		{"separated prefix, a sub-path", "GET", "/api/v1?x=1", "", 200, "b GET /api/v1?x=1 ", ""},
		{"separated prefix, not a segment", "GET", "/apix", "", 200, "a GET /apix ", ""},
		{"prefix, case-insensitive", "GET", "/case/x", "", 200, "b GET /case/x ", ""},
		{"safe_regex, the whole path", "GET", "/v2/users/ann", "", 200, "b ", ""},
		{"safe_regex, not a part", "GET", "/v2/users/ann/x", "", 200, "a ", ""},
		{"header match", "GET", "/h", "X-Canary: yes\r\n", 200, "b ", ""},
		{"header match, inverted presence", "GET", "/h", "X-Canary: yes\r\nX-Beta: 1\r\n", 200, "a ", ""},
		{"header match, wrong value", "GET", "/h", "X-Canary: no\r\n", 200, "a ", ""},
		{"query parameter", "GET", "/q?a=1&debug=only", "", 200, "b ", ""},
		{"query parameter, no match", "GET", "/q?debug=off", "", 200, "a ", ""},
		{"gRPC match", "POST", "/pkg.Svc/M", "Content-Type: application/grpc\r\nContent-Length: 0\r\n", 200, "grpc route", ""},
		{"prefix_rewrite", "GET", "/old/thing?k=v", "", 200, "b GET /new/thing?k=v host=shop.example:8080 X-Envoy-Original-Path=/old/thing?k=v", ""},
		{"regex_rewrite", "GET", "/rx/shoe/42", "", 200, "b GET /items/42/shoe ", ""},
		{"host_rewrite_literal", "GET", "/host", "", 200, "a GET /host host=internal.example", ""},
		{"cluster_header", "GET", "/by-header", "X-Cluster: b\r\n", 200, "b ", ""},
		{"cluster_header, no such cluster", "GET", "/by-header", "X-Cluster: zz\r\n", 503, "", ""},
		{"cluster_header, a cluster without endpoints", "GET", "/by-header", "X-Cluster: c\r\n", 503, "no healthy upstream", ""},
		{"https redirect", "GET", "/secure/x?q=1", "", 301, "", "Location: https://shop.example:8080/secure/x"},
		{"path and host redirect", "GET", "/moved?q=1", "", 308, "", "Location: http://other.example/there?q=1"},
		{"direct response", "GET", "/teapot", "", 418, "short and stout", ""},
		{"header mutations at three levels", "GET", "/hdr", "X-Only: client\r\nX-Secret: s\r\n", 200,
			"a GET /hdr host=shop.example:8080 X-Level=route,vhost,config X-Only=first", "X-Added: 1"},
		{"response headers of the route configuration", "GET", "/", "", 200, "a ", "X-Level-Resp: config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := k.do(tc.method, tc.target, tc.headers)
			if resp.StatusCode != tc.code || !strings.HasPrefix(body, tc.body) {
				t.Fatalf("%d %q, want %d %q…", resp.StatusCode, body, tc.code, tc.body)
			}
			if name, value, ok := strings.Cut(tc.header, ": "); ok && resp.Header.Get(name) != value {
				t.Errorf("%s: %q, want %q (headers %v)", name, resp.Header.Get(name), value, resp.Header)
			}
			if tc.name == "header mutations at three levels" && (strings.Contains(body, "X-Secret") || resp.Header.Get("X-Drop-Me") != "") {
				t.Errorf("removed headers came through: %q %v", body, resp.Header)
			}
		})
	}
	cp.waitLog(t, `"GET /by-header HTTP/1.1" 503 NC `)
	cp.waitLog(t, `"GET /old/thing?k=v HTTP/1.1" 200 - `) // the original path, as %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% says
}

// TestWeightedClusters: a 90/10 split holds within 2% over 10,000
// requests.
func TestWeightedClusters(t *testing.T) {
	routes := `
              - match: {prefix: "/"}
                route:
                  weighted_clusters:
                    clusters: [{name: a, weight: 90}, {name: b, weight: 10}]`
	config, _ := routingConfig(t, filepath.Join(t.TempDir(), "access.log"), "", routes)
	cp := startConfig(t, config, nil)
	k := cp.keepAlive(t)
	counts := map[string]int{}
	const n = 10000
	for range n {
		resp, _ := k.do("GET", "/", "")
		counts[resp.Header.Get("X-Backend")]++
	}
	if share := float64(counts["b"]) / n; share < 0.08 || share > 0.12 {
		t.Errorf("b took %.1f%% of the requests, want 10%% ± 2%%: %v", share*100, counts)
	}
}

// TestVirtualHostsByDomain: Envoy's domain order — exact, then the
// longest suffix wildcard, then the longest prefix wildcard, then "*".
func TestVirtualHostsByDomain(t *testing.T) {
	vhosts := `
            - name: exact
              domains: ["shop.example:8080"]
              routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: exact}}}]
            - name: suffix
              domains: ["*.example"]
              routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: suffix}}}]
            - name: prefix
              domains: ["api.*"]
              routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: prefix}}}]`
	routes := `
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: any}}`
	config, _ := routingConfig(t, filepath.Join(t.TempDir(), "access.log"), vhosts, routes)
	cp := startConfig(t, config, nil)
	for host, want := range map[string]string{"shop.example:8080": "exact", "cart.example": "suffix", "cart.example:80": "suffix",
		"api.internal": "prefix", "elsewhere": "any"} {
		resp, body := cp.request(t, "GET / HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", host, resp.StatusCode, body, want)
		}
	}
}

// TestRequestMirroring: a route's requests are copied to the mirror
// cluster, authority "-shadow", and the client sees only the main
// cluster's answer.
func TestRequestMirroring(t *testing.T) {
	var shadows atomic.Int64
	var shadowHost atomic.Value
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		shadows.Add(1)
		shadowHost.Store(r.Host)
		w.WriteHeader(500) // the mirror's answer goes nowhere
	})
	routes := `
              - match: {prefix: "/"}
                route: {cluster: a, request_mirror_policies: [{cluster: shadow}]}`
	config, _ := routingConfig(t, filepath.Join(t.TempDir(), "log"), "", routes)
	config += fmt.Sprintf(`  - name: shadow
    type: STATIC
    load_assignment: {cluster_name: shadow, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, port)
	cp := startConfig(t, config, nil)
	k := cp.keepAlive(t)
	for range 10 {
		if resp, body := k.do("GET", "/orders", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "a GET /orders") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	eventually(t, "10 shadow requests", func() bool { return shadows.Load() == 10 })
	if h := shadowHost.Load(); h != "shop.example-shadow:8080" {
		t.Errorf("the shadow's authority: %v", h)
	}
}
