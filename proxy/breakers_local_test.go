package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// breakerConfig is retryConfig's listener with circuit breakers on its
// cluster.
func breakerConfig(logFile, policy, thresholds string, port uint16) string {
	c := retryConfig(logFile, policy, port)
	return strings.Replace(c, "    type: STATIC\n", "    type: STATIC\n    circuit_breakers: {thresholds: ["+thresholds+"]}\n", 1)
}

// concurrently sends n requests at once, each on its own connection,
// and counts the responses by status.
func concurrently(t *testing.T, addr string, n int, path string) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
			b, _ := io.ReadAll(c)
			var code int
			fmt.Sscanf(string(b), "HTTP/1.1 %d", &code)
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

func TestCircuitBreakers(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "slow")
	}
	for _, tc := range []struct{ name, thresholds string }{
		{"max_requests", "{max_requests: 1}"},
		{"max_connections", "{max_connections: 1}"},
		{"max_pending_requests", "{max_pending_requests: 0}"}, // no request may wait for a connection: none is opened
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, port := backendPort(t, slow)
			logFile := filepath.Join(t.TempDir(), "access.log")
			cp := startConfig(t, breakerConfig(logFile, "{retry_on: connect-failure, num_retries: 0}", tc.thresholds, port), nil)
			cp.logFile = logFile
			codes := concurrently(t, cp.ListenerAddr("listener_0").String(), 8, "/slow")
			switch {
			case tc.name == "max_pending_requests" && codes[503] != 8:
				t.Fatalf("8 requests, none allowed to wait for a connection: %v, want 8 503s", codes)
			case tc.name != "max_pending_requests" && (codes[200] < 1 || codes[503] < 1 || codes[200]+codes[503] != 8):
				t.Fatalf("8 concurrent requests: %v, want some 200 and the rest 503", codes)
			}
			cp.waitLog(t, "/slow 503 UO ")
			mfs, err := cp.Gather()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, mf := range mfs {
				if strings.HasPrefix(mf.GetName(), "envoy_cluster_upstream_") && strings.HasSuffix(mf.GetName(), "_overflow") {
					for _, m := range mf.Metric {
						found = found || m.GetCounter().GetValue() > 0
					}
				}
			}
			if !found {
				t.Error("no overflow counted in envoy_cluster_upstream_*_overflow")
			}
		})
	}
	t.Run("max_retries", func(t *testing.T) {
		f := &flaky{fail: 1}
		_, port := backendPort(t, f.ServeHTTP)
		logFile := filepath.Join(t.TempDir(), "access.log")
		cp := startConfig(t, breakerConfig(logFile, "{retry_on: 5xx, num_retries: 3}", "{max_retries: 0}", port), nil)
		cp.logFile = logFile
		resp, _ := cp.keepAlive(t).do("GET", "/503", "")
		if resp.StatusCode != 503 {
			t.Fatalf("%d: the retry was made past max_retries 0", resp.StatusCode)
		}
		cp.waitLog(t, "/503 503 URX attempts=1")
	})
}
