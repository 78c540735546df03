package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// retryConfig routes everything to cluster "up" (the endpoints given)
// with the retry policy given, logging flags and attempts.
func retryConfig(logFile string, policy string, endpoints ...uint16) string {
	eps := ""
	for _, p := range endpoints {
		eps += fmt.Sprintf("\n        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}", p)
	}
	return hcmYAML(logFile, "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%\n", "", `
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: up
                  retry_policy: `+policy, `
  - name: up
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:`+eps)
}

// flaky is a backend whose first fail requests on a path fail as the
// path says: /503 answers 503, /slow waits a second, /reset resets.
type flaky struct {
	calls  atomic.Int64
	fail   int64
	bodies atomic.Value // the last request body seen
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	f.bodies.Store(string(body))
	if n <= f.fail {
		switch {
		case strings.HasPrefix(r.URL.Path, "/slow"):
			time.Sleep(time.Second)
		case strings.HasPrefix(r.URL.Path, "/header"):
			w.Header().Set("X-Try-Again", "1")
			io.WriteString(w, "not this one")
			return
		case strings.HasPrefix(r.URL.Path, "/reset"):
			c, _, _ := http.NewResponseController(w).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		default:
			w.WriteHeader(503)
			io.WriteString(w, "try again")
			return
		}
	}
	fmt.Fprintf(w, "ok after %d", n)
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name, policy, path, body string
		fail                     int64
		code                     int
		log                      string
	}{
		{"5xx turned into a 200", "{retry_on: 5xx, num_retries: 2}", "/503", "", 2, 200, "/503 200 - attempts=3"},
		{"stops at num_retries, URX", "{retry_on: 5xx, num_retries: 2}", "/503", "", 5, 503, "/503 503 URX attempts=3"},
		{"retriable-status-codes", "{retry_on: retriable-status-codes, retriable_status_codes: [503]}", "/503", "", 1, 200, "/503 200 - attempts=2"},
		{"not a condition the policy names", "{retry_on: connect-failure, num_retries: 3}", "/503", "", 1, 503, "/503 503 - attempts=1"},
		{"a reset before the response", "{retry_on: reset, num_retries: 1}", "/reset", "", 1, 200, "/reset 200 - attempts=2"},
		{"per_try_timeout", "{retry_on: 5xx, num_retries: 1, per_try_timeout: 0.2s}", "/slow", "", 1, 200, "/slow 200 - attempts=2"},
		{"a body sent again whole", "{retry_on: 5xx, num_retries: 1}", "/503", "the request body", 1, 200, "/503 200 - attempts=2"},
		{"retriable-headers", "{retry_on: retriable-headers, retriable_headers: [{name: x-try-again, present_match: true}]}", "/header", "", 1, 200, "/header 200 - attempts=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{fail: tc.fail}
			_, port := backendPort(t, f.ServeHTTP)
			logFile := filepath.Join(t.TempDir(), "access.log")
			cp := startConfig(t, retryConfig(logFile, tc.policy, port), nil)
			cp.logFile = logFile
			k := cp.keepAlive(t)
			headers := ""
			method := "GET"
			if tc.body != "" {
				method, headers = "POST", fmt.Sprintf("Content-Length: %d\r\n", len(tc.body))
			}
			_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(k.c, "%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n%s", method, tc.path, headers, tc.body)
			resp, err := http.ReadResponse(k.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Errorf("%d, want %d", resp.StatusCode, tc.code)
			}
			if tc.body != "" && f.bodies.Load() != tc.body {
				t.Errorf("the retried request's body: %q", f.bodies.Load())
			}
			cp.waitLog(t, tc.log)
			attempts := tc.log[strings.LastIndex(tc.log, "=")+1:]
			if total, retries := gauge(t, cp, "envoy_cluster_upstream_rq_total"), gauge(t, cp, "envoy_cluster_upstream_rq_retry"); fmt.Sprint(total) != attempts || total != retries+1 {
				t.Errorf("upstream_rq_total %v, upstream_rq_retry %v, for %s tries", total, retries, attempts)
			}
		})
	}
}

// TestRetryToAnotherHost: a connect failure is retried on another
// endpoint, previous_hosts keeping it off the dead one.
func TestRetryToAnotherHost(t *testing.T) {
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	dead := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	f := &flaky{}
	_, alive := backendPort(t, f.ServeHTTP)
	logFile := filepath.Join(t.TempDir(), "access.log")
	policy := `{retry_on: connect-failure, num_retries: 2, host_selection_retry_max_attempts: 5,
                    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]}`
	cp := startConfig(t, retryConfig(logFile, policy, dead, alive), nil)
	cp.logFile = logFile
	k := cp.keepAlive(t)
	for range 10 {
		if resp, body := k.do("GET", "/x", ""); resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	b, _ := os.ReadFile(logFile)
	if strings.Contains(string(b), "attempts=3") {
		t.Errorf("a retry went back to the dead endpoint:\n%s", b)
	}
}

// TestRetriesOverHTTP2: an HTTP/2 stream is retried as an HTTP/1 request
// is.
func TestRetriesOverHTTP2(t *testing.T) {
	f := &flaky{fail: 1}
	_, port := backendPort(t, f.ServeHTTP)
	logFile := filepath.Join(t.TempDir(), "access.log")
	cp := startConfig(t, retryConfig(logFile, "{retry_on: gateway-error, num_retries: 1}", port), nil)
	cp.logFile = logFile
	client := h2cClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + cp.ListenerAddr("listener_0").String() + "/503")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(body) != "ok after 2" {
		t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, body)
	}
	cp.waitLog(t, "/503 200 - attempts=2")
}

// TestGRPCTimeoutHonoured: where the route says so (max_stream_duration's
// grpc_timeout_header_max), a request's grpc-timeout is its timeout.
func TestGRPCTimeoutHonoured(t *testing.T) {
	f := &flaky{fail: 100}
	_, port := backendPort(t, f.ServeHTTP)
	logFile := filepath.Join(t.TempDir(), "access.log")
	c := retryConfig(logFile, "{retry_on: connect-failure, num_retries: 0}", port)
	c = strings.Replace(c, "                  cluster: up\n", "                  cluster: up\n                  timeout: 0s\n                  max_stream_duration: {grpc_timeout_header_max: 0s}\n", 1)
	cp := startConfig(t, c, nil)
	cp.logFile = logFile
	k := cp.keepAlive(t)
	start := time.Now()
	resp, _ := k.do("GET", "/slow", "Grpc-Timeout: 200m\r\n")
	if elapsed := time.Since(start); resp.StatusCode != 504 || elapsed > 900*time.Millisecond {
		t.Fatalf("%d after %s, want 504 at about 200 ms (the backend takes a second)", resp.StatusCode, elapsed)
	}
	cp.waitLog(t, "/slow 504 UT attempts=1")
	if v := gauge(t, cp, "envoy_cluster_upstream_rq_timeout"); v != 1 {
		t.Errorf("upstream_rq_timeout %v", v)
	}
}

// TestRetryBudget: a cluster's retry_budget bounds retries in flight as
// a share of requests in flight; at 0% with no minimum, none is made.
func TestRetryBudget(t *testing.T) {
	f := &flaky{fail: 1}
	_, port := backendPort(t, f.ServeHTTP)
	logFile := filepath.Join(t.TempDir(), "access.log")
	cp := startConfig(t, breakerConfig(logFile, "{retry_on: 5xx, num_retries: 3}",
		"{retry_budget: {budget_percent: {value: 0}, min_retry_concurrency: 0}}", port), nil)
	cp.logFile = logFile
	if resp, _ := cp.keepAlive(t).do("GET", "/503", ""); resp.StatusCode != 503 {
		t.Fatalf("%d: a retry was made past a budget of none", resp.StatusCode)
	}
	cp.waitLog(t, "/503 503 URX attempts=1")
	if v := gauge(t, cp, "envoy_cluster_upstream_rq_retry_overflow"); v != 1 {
		t.Errorf("upstream_rq_retry_overflow %v", v)
	}
}

// TestAttemptCountHeader: with include_request_attempt_count, each try
// tells the upstream which it is.
func TestAttemptCountHeader(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Envoy-Attempt-Count"))
		n := len(seen)
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(503)
		}
	})
	c := retryConfig(filepath.Join(t.TempDir(), "log"), "{retry_on: 5xx, num_retries: 2}", port)
	c = strings.Replace(c, "            - name: all\n", "            - name: all\n              include_request_attempt_count: true\n", 1)
	cp := startConfig(t, c, nil)
	if resp, _ := cp.keepAlive(t).do("GET", "/x", ""); resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "1,2,3" {
		t.Errorf("x-envoy-attempt-count per try: %v", seen)
	}
}

// TestRequestTimeout: the connection manager's request_timeout bounds
// the arrival of a request's body: a client that stalls mid-body gets
// 408, over HTTP/1 and HTTP/2; a body that arrives in time is answered
// however long the upstream then takes.
func TestRequestTimeout(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		if r.URL.Path == "/slow" {
			time.Sleep(500 * time.Millisecond)
		}
	})
	logFile := filepath.Join(t.TempDir(), "log")
	c := strings.Replace(retryConfig(logFile, "{retry_on: 5xx}", port), "          stat_prefix: test\n", "          stat_prefix: test\n          request_timeout: 0.3s\n", 1)
	cp := startConfig(t, c, nil)
	cp.logFile = logFile
	k := cp.keepAlive(t)
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(k.c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly the start")
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("%v %v, want 408", resp, err)
	}
	cp.waitLog(t, "/upload 408 ")

	// HTTP/2: a stream whose body stalls; one whose body is whole at
	// once, answered after the timeout.
	url := "http://" + cp.ListenerAddr("listener_0").String()
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "only the start")
	resp, err = h2cClient().Post(url+"/upload-h2", "text/plain", pr)
	if err != nil || resp.StatusCode != 408 || resp.Proto != "HTTP/2.0" {
		t.Fatalf("a stalled HTTP/2 body: %v %v, want 408 over HTTP/2", resp, err)
	}
	cp.waitLog(t, "/upload-h2 408 ")
	if resp, err := h2cClient().Post(url+"/slow", "text/plain", strings.NewReader("whole")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a whole body, a slow answer: %v %v, want 200", resp, err)
	}
}

// TestRouteTimeoutStalledH2Body: the route timeout answers 504 a stream
// whose client stops sending its body; the upstream's writer, waiting on
// that body, does not hold the answer back.
func TestRouteTimeoutStalledH2Body(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) { io.ReadAll(r.Body) })
	logFile := filepath.Join(t.TempDir(), "log")
	c := strings.Replace(retryConfig(logFile, "{retry_on: 5xx}", port), "                  cluster: up\n", "                  cluster: up\n                  timeout: 0.3s\n", 1)
	cp := startConfig(t, c, nil)
	cp.logFile = logFile
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "only the start")
	resp, err := h2cClient().Post("http://"+cp.ListenerAddr("listener_0").String()+"/upload", "text/plain", pr)
	if err != nil || resp.StatusCode != 504 {
		t.Fatalf("%v %v, want 504", resp, err)
	}
	cp.waitLog(t, "/upload 504 UT")
}
