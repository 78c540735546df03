package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bodyRecorder is a backend that keeps each try's request body; the
// first fail tries answer 503 once they have read readFirst bytes of the
// body (all of it for -1), the others 200.
type bodyRecorder struct {
	mu        sync.Mutex
	bodies    [][]byte
	fail      int
	readFirst int
	failed    chan struct{} // closed when the first failure is answered
}

func newBodyRecorder(fail, readFirst int) *bodyRecorder {
	return &bodyRecorder{fail: fail, readFirst: readFirst, failed: make(chan struct{})}
}

func (b *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	n := len(b.bodies)
	b.bodies = append(b.bodies, nil)
	b.mu.Unlock()
	var body []byte
	if n < b.fail && b.readFirst >= 0 {
		body = make([]byte, b.readFirst)
		io.ReadFull(r.Body, body)
	} else {
		body, _ = io.ReadAll(r.Body)
	}
	b.mu.Lock()
	b.bodies[n] = body
	b.mu.Unlock()
	if n < b.fail {
		w.Header().Set("Connection", "close") // answered before the rest of the body, which is not read
		w.WriteHeader(503)
		if n == 0 {
			http.NewResponseController(w).Flush()
			close(b.failed)
		}
		return
	}
	fmt.Fprintf(w, "%d bytes", len(body))
}

func (b *bodyRecorder) tries() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.bodies...)
}

// patterned is n bytes in which every offset's byte differs from its
// neighbours', so that a part sent twice or missed shows.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// streaming hides a body's length: the request goes without a
// content-length, as a stream (chunked over HTTP/1.1).
type streaming struct{ io.Reader }

// bodyClients are the ways a request body reaches the proxy.
var bodyClients = []struct {
	name   string
	client func() *http.Client
	stream bool // the body's length is not told
}{
	{"HTTP/2", h2cClient, true},
	{"HTTP/1.1 content-length", http1Client, false},
	{"HTTP/1.1 chunked", http1Client, true},
}

func http1Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
}

// post sends body to path through the proxy's listener_0.
func post(t *testing.T, cp *configProxy, client *http.Client, path string, body io.Reader) (int, string) {
	t.Helper()
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+cp.ListenerAddr("listener_0").String()+path, "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(answer)
}

// TestRetryKeepsBody: under a retry policy a request's body is kept, up
// to Envoy's buffer limits, and sent whole again by the retry; a body
// over the limit goes once and its failure is the client's (URX).
func TestRetryKeepsBody(t *testing.T) {
	body := patterned(300 << 10)
	for _, tc := range []struct {
		name            string
		listener, route string // per_connection_buffer_limit_bytes; the route's fields
		code, tries     int
		log             string
	}{
		{"within the default 1 MiB", "", "", 200, 2, "/503 200 - attempts=2"},
		{"over the route's per_request_buffer_limit_bytes", "", "per_request_buffer_limit_bytes: 100000", 503, 1, "/503 503 URX attempts=1"},
		{"over the listener's per_connection_buffer_limit_bytes", "100000", "", 503, 1, "/503 503 URX attempts=1"},
		{"request_body_buffer_limit over the listener's", "100000", "request_body_buffer_limit: 1000000", 200, 2, "/503 200 - attempts=2"},
		{"per_request_buffer_limit_bytes within the listener's", "100000", "per_request_buffer_limit_bytes: 1000000", 503, 1, "/503 503 URX attempts=1"},
	} {
		for _, bc := range bodyClients {
			t.Run(tc.name+"/"+bc.name, func(t *testing.T) {
				rec := newBodyRecorder(1, -1)
				_, port := backendPort(t, rec.ServeHTTP)
				logFile := filepath.Join(t.TempDir(), "access.log")
				c := retryConfig(logFile, "{retry_on: 5xx, num_retries: 1}", port)
				if tc.listener != "" {
					c = strings.Replace(c, "  - name: listener_0\n", "  - name: listener_0\n    per_connection_buffer_limit_bytes: "+tc.listener+"\n", 1)
				}
				if tc.route != "" {
					c = strings.Replace(c, "              - match: {prefix: \"/\"}\n", "              - match: {prefix: \"/\"}\n                "+tc.route+"\n", 1)
				}
				cp := startConfig(t, c, nil)
				cp.logFile = logFile
				var r io.Reader = bytes.NewReader(body)
				if bc.stream {
					r = streaming{r}
				}
				if code, answer := post(t, cp, bc.client(), "/503", r); code != tc.code {
					t.Fatalf("%d %q, want %d", code, answer, tc.code)
				}
				tries := rec.tries()
				for i, got := range tries {
					if !bytes.Equal(got, body) {
						t.Errorf("try %d: the upstream got %d bytes (sha256 %x), want the %d sent", i+1, len(got), sha256.Sum256(got), len(body))
					}
				}
				if len(tries) != tc.tries {
					t.Errorf("%d tries, want %d", len(tries), tc.tries)
				}
				cp.waitLog(t, tc.log)
			})
		}
	}
}

// TestRetryBodyStillArriving: a request whose upstream fails before the
// client has sent all of its body is retried: the retry sends what was
// kept, then what the client sends next.
func TestRetryBodyStillArriving(t *testing.T) {
	for _, bc := range bodyClients {
		if !bc.stream {
			continue
		}
		t.Run(bc.name, func(t *testing.T) {
			rec := newBodyRecorder(1, 5)
			_, port := backendPort(t, rec.ServeHTTP)
			logFile := filepath.Join(t.TempDir(), "access.log")
			cp := startConfig(t, retryConfig(logFile, "{retry_on: 5xx, num_retries: 1}", port), nil)
			cp.logFile = logFile
			// The first part is big enough for the HTTP/1 writers on the
			// way to send it before the rest exists.
			first, rest := patterned(64<<10), []byte("and the rest")
			pr, pw := io.Pipe()
			go func() {
				pw.Write(first)
				select {
				case <-rec.failed:
				case <-time.After(10 * time.Second):
				}
				pw.Write(rest)
				pw.Close()
			}()
			code, answer := post(t, cp, bc.client(), "/stream", pr)
			whole := append(first, rest...)
			if want := fmt.Sprintf("%d bytes", len(whole)); code != 200 || answer != want {
				t.Fatalf("%d %q, want 200 %q", code, answer, want)
			}
			if tries := rec.tries(); len(tries) != 2 || !bytes.Equal(tries[0], first[:5]) || !bytes.Equal(tries[1], whole) {
				t.Errorf("%d tries; the second's body right: %v", len(tries), len(tries) == 2 && bytes.Equal(tries[1], whole))
			}
			cp.waitLog(t, "/stream 200 - attempts=2")
		})
	}
}

// TestPerTryTimeoutStalledBody: tries whose client stops sending the body
// time out one after the other; the last ends the request with 504.
func TestPerTryTimeoutStalledBody(t *testing.T) {
	for _, proto := range []string{"HTTP/2", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			rec := newBodyRecorder(0, -1)
			_, port := backendPort(t, rec.ServeHTTP)
			logFile := filepath.Join(t.TempDir(), "access.log")
			cp := startConfig(t, retryConfig(logFile, "{retry_on: 5xx, num_retries: 1, per_try_timeout: 0.2s}", port), nil)
			cp.logFile = logFile
			code := 0
			if proto == "HTTP/2" {
				pr, pw := io.Pipe()
				defer pw.Close()
				go io.WriteString(pw, "only the start")
				code, _ = post(t, cp, h2cClient(), "/stalled", pr)
			} else {
				k := cp.keepAlive(t)
				_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(k.c, "POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly the start")
				resp, err := http.ReadResponse(k.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				code = resp.StatusCode
			}
			if code != 504 {
				b, _ := os.ReadFile(logFile)
				t.Fatalf("%d, want 504; log %s", code, b)
			}
			cp.waitLog(t, "/stalled 504 URX,UT attempts=2")
			if tries := rec.tries(); len(tries) != 2 || string(tries[0]) != "only the start" || string(tries[1]) != "only the start" {
				t.Errorf("the tries' bodies: %q", tries)
			}
		})
	}
}
