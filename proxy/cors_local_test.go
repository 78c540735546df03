package proxy_test

import (
	"net/http"
	"testing"
)

const corsType = `"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy`

// TestCORS: a route's CORS policy, over HTTP/1.1 and HTTP/2: a preflight
// from an allowed origin is answered by the proxy with what the policy
// allows; a request from it goes to the upstream and its response says
// the origin may read it; another origin, and another route, get no
// CORS headers (and their preflights go to the upstream).
func TestCORS(t *testing.T) {
	cp, k := filterConfig(t, `{name: envoy.filters.http.cors, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}, `,
		`envoy.filters.http.cors: {`+corsType+`, allow_origin_string_match: [{exact: "https://shop.example"}, {suffix: ".shop.example"}],
                allow_methods: "GET,POST", allow_headers: "content-type", max_age: "600", expose_headers: "x-trace", allow_credentials: true}`)
	h2 := h2cClient()
	base := "http://" + cp.ListenerAddr("listener_0").String()
	do := func(proto, method, path, origin string, preflight bool) *http.Response {
		t.Helper()
		if proto == "HTTP/1.1" {
			headers := ""
			if origin != "" {
				headers += "Origin: " + origin + "\r\n"
			}
			if preflight {
				headers += "Access-Control-Request-Method: POST\r\n"
			}
			resp, _ := k.do(method, path, headers)
			return resp
		}
		req, _ := http.NewRequest(method, base+path, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if preflight {
			req.Header.Set("Access-Control-Request-Method", "POST")
		}
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("%s %s %s: %v", proto, method, path, err)
		}
		resp.Body.Close()
		return resp
	}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		resp := do(proto, "OPTIONS", "/limited", "https://app.shop.example", true)
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.shop.example" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "GET,POST" || resp.Header.Get("Access-Control-Allow-Headers") != "content-type" ||
			resp.Header.Get("Access-Control-Max-Age") != "600" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
			resp.Header.Get("X-Envoy-Upstream-Service-Time") != "" {
			t.Errorf("%s: a preflight from an allowed origin: %d %v", proto, resp.StatusCode, resp.Header)
		}
		resp = do(proto, "GET", "/limited", "https://shop.example", false)
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example" ||
			resp.Header.Get("Access-Control-Expose-Headers") != "x-trace" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("%s: a request from an allowed origin: %d %v", proto, resp.StatusCode, resp.Header)
		}
		for _, c := range []struct {
			method, path, origin string
			preflight            bool
		}{{"GET", "/limited", "https://evil.example", false}, {"OPTIONS", "/limited", "https://evil.example", true},
			{"GET", "/", "https://shop.example", false}, {"OPTIONS", "/", "https://shop.example", true}} {
			resp := do(proto, c.method, c.path, c.origin, c.preflight)
			if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
				t.Errorf("%s: %s %s from %s: %d %v, want the upstream's answer without CORS headers", proto, c.method, c.path, c.origin, resp.StatusCode, resp.Header)
			}
		}
	}
}
