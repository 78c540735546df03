package proxy_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// filterConfig is lbConfig with HTTP filters before the router and
// per-route filter configuration.
func filterConfig(t *testing.T, filters, perRoute string) (*configProxy, *keepAlive) {
	logFile := filepath.Join(t.TempDir(), "log")
	c := lbConfig(logFile, "ROUND_ROBIN", "[]", namedBackends(t, 1))
	c = strings.Replace(c, "          http_filters: [", "          http_filters: ["+filters, 1)
	if perRoute != "" {
		c = strings.Replace(c, `routes: [{match: {prefix: "/"}, route:`, `routes: [{match: {prefix: "/limited"}, typed_per_filter_config: {`+perRoute+`}, route: {cluster: up}}, {match: {prefix: "/"}, route:`, 1)
	}
	cp := startConfig(t, c, nil)
	cp.logFile = logFile
	return cp, cp.keepAlive(t)
}

const (
	faultType     = `"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`
	ratelimitType = `"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`
)

func TestFaultFilter(t *testing.T) {
	cp, k := filterConfig(t, `{name: envoy.filters.http.fault, typed_config: {`+faultType+`,
              delay: {fixed_delay: 0.3s, percentage: {numerator: 100}},
              abort: {http_status: 503, percentage: {numerator: 50}}}}, `, "")
	codes := map[int]int{}
	start := time.Now()
	for range 20 {
		resp, _ := k.do("GET", "/", "")
		codes[resp.StatusCode]++
	}
	if elapsed := time.Since(start); elapsed < 20*300*time.Millisecond {
		t.Errorf("20 requests delayed 0.3 s each took %s", elapsed)
	}
	if codes[503] == 0 || codes[200] == 0 {
		t.Errorf("a 50%% abort: %v", codes)
	}
	cp.waitLog(t, `"GET / HTTP/1.1" 503 DI,FI `)
}

func TestFaultFilterByHeaders(t *testing.T) {
	cp, k := filterConfig(t, `{name: envoy.filters.http.fault, typed_config: {`+faultType+`,
              delay: {header_delay: {}, percentage: {numerator: 100}},
              abort: {header_abort: {}, percentage: {numerator: 100}}}}, `, "")
	if resp, _ := k.do("GET", "/", ""); resp.StatusCode != 200 {
		t.Errorf("no fault headers: %d", resp.StatusCode)
	}
	if resp, body := k.do("GET", "/", "X-Envoy-Fault-Abort-Request: 418\r\n"); resp.StatusCode != 418 || body != "fault filter abort" {
		t.Errorf("abort asked for: %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	if resp, _ := k.do("GET", "/", "X-Envoy-Fault-Delay-Request: 200\r\n"); resp.StatusCode != 200 || time.Since(start) < 200*time.Millisecond {
		t.Errorf("delay asked for: %d after %s", resp.StatusCode, time.Since(start))
	}
	cp.waitLog(t, `"GET / HTTP/1.1" 418 FI `)
}

// TestFaultWithoutPercentage: a delay or abort without a percentage
// never fires, as in Envoy (its FractionalPercent defaults to 0).
func TestFaultWithoutPercentage(t *testing.T) {
	_, k := filterConfig(t, `{name: envoy.filters.http.fault, typed_config: {`+faultType+`,
              delay: {fixed_delay: 5s}, abort: {http_status: 503}}}, `, "")
	start := time.Now()
	for range 5 {
		if resp, _ := k.do("GET", "/", ""); resp.StatusCode != 200 {
			t.Errorf("a fault without a percentage fired: %d", resp.StatusCode)
		}
	}
	if elapsed := time.Since(start); elapsed > 4*time.Second {
		t.Errorf("a delay without a percentage was applied: 5 requests took %s", elapsed)
	}
}

// TestFaultPerRoute: the manager's fault filter is empty (as Istio's
// always is); one route's typed_per_filter_config gives it an abort, the
// other routes pass.
func TestFaultPerRoute(t *testing.T) {
	cp, k := filterConfig(t, `{name: envoy.filters.http.fault, typed_config: {`+faultType+`}}, `,
		`envoy.filters.http.fault: {`+faultType+`, abort: {http_status: 418, percentage: {numerator: 100}}}`)
	if resp, _ := k.do("GET", "/", ""); resp.StatusCode != 200 {
		t.Errorf("a route without a fault: %d", resp.StatusCode)
	}
	if resp, _ := k.do("GET", "/limited", ""); resp.StatusCode != 418 {
		t.Errorf("the route with an abort: %d", resp.StatusCode)
	}
	cp.waitLog(t, `"GET /limited HTTP/1.1" 418 FI `)
}

// TestLocalRateLimit: a bucket for the listener, as Istio's docs write
// one (runtime keys, which have no value here: the default stands; a
// header on the limited responses, with the deprecated append), and a
// route's own bucket.
func TestLocalRateLimit(t *testing.T) {
	bucket := `token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s},
              filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}},
              filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}},
              response_headers_to_add: [{append: false, header: {key: x-local-rate-limit, value: "true"}}]`
	cp, k := filterConfig(t, `{name: envoy.filters.http.local_ratelimit, typed_config: {`+ratelimitType+`, stat_prefix: rl, `+bucket+`}}, `,
		`envoy.filters.http.local_ratelimit: {`+ratelimitType+`, stat_prefix: rl, token_bucket: {max_tokens: 1, fill_interval: 60s},
                filter_enabled: {default_value: {numerator: 100}}, filter_enforced: {default_value: {numerator: 100}}}`)
	codes := map[int]int{}
	for range 5 {
		resp, _ := k.do("GET", "/", "")
		codes[resp.StatusCode]++
		if limited := resp.Header.Get("x-local-rate-limit") == "true"; limited != (resp.StatusCode == 429) {
			t.Errorf("%d with x-local-rate-limit %q", resp.StatusCode, resp.Header.Get("x-local-rate-limit"))
		}
	}
	if codes[200] != 3 || codes[429] != 2 {
		t.Errorf("a bucket of 3: %v", codes)
	}
	// The route's own bucket (typed_per_filter_config): one request.
	codes = map[int]int{}
	for range 3 {
		resp, _ := k.do("GET", "/limited", "")
		codes[resp.StatusCode]++
	}
	if codes[200] != 1 || codes[429] != 2 {
		t.Errorf("the route's bucket of 1: %v", codes)
	}
	cp.waitLog(t, `"GET /limited HTTP/1.1" 429 RL `)
}
