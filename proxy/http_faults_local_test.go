package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/proxy"
)

// TestStalePooledConnectionRetried: an upstream that closes a kept-alive
// connection as the next request arrives (the keep-alive race) costs a
// safe request nothing: it goes again on a fresh connection. An unsafe
// one gets a 503, never a second delivery.
func TestStalePooledConnectionRetried(t *testing.T) {
	var served atomic.Int64
	// Answers the first request on a connection, keeping it alive; takes
	// the second and closes without a word.
	up := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || i == 1 {
				return
			}
			io.Copy(io.Discard, req.Body)
			served.Add(1)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.Method), req.Method)
		}
	})
	lp := startHTTP(t, nil, nil)
	lp.to(up)
	c := lp.dial(t, proxy.Outbound)
	br := bufio.NewReader(c)
	for i := range 3 {
		resp, body := exchange(t, c, br, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
		if resp.StatusCode != 200 || body != "GET" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}
	lp.waitAccess(t, `"GET /g HTTP/1.1" 200`, "attempts=2")
	before := served.Load()
	resp, body := exchange(t, c, br, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "POST")
	if resp.StatusCode != 503 || served.Load() != before {
		t.Fatalf("POST on a stale connection: %d %q, served %d more", resp.StatusCode, body, served.Load()-before)
	}
	lp.waitAccess(t, `"POST /p HTTP/1.1" 503 UC`)
}

// TestLengthLies: a client that promises more body than it sends, and an
// upstream that does the same, end their own exchange, cleanly logged,
// and the proxy serves on.
func TestLengthLies(t *testing.T) {
	short := rawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
	})
	var gotBody atomic.Value
	patient := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		gotBody.Store(fmt.Sprintf("%d %v", len(b), err))
	}))

	t.Run("upstream sends less than its Content-Length", func(t *testing.T) {
		lp := startHTTP(t, nil, nil)
		lp.to(short)
		c := lp.dial(t, proxy.Outbound)
		io.WriteString(c, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if string(b) != "only ten.." || err == nil {
			t.Fatalf("the client got %q, %v: want the ten bytes, then an error", b, err)
		}
		lp.waitAccess(t, `"GET /short HTTP/1.1" 200 UC upstream_reset_after_response_started{connection_termination}`)
	})
	t.Run("client sends less than its Content-Length", func(t *testing.T) {
		lp := startHTTP(t, patient, nil)
		c := lp.dial(t, proxy.Outbound)
		io.WriteString(c, "POST /lie HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 5000))
		time.Sleep(100 * time.Millisecond)
		c.Close()
		lp.waitAccess(t, `"POST /lie HTTP/1.1"`, "DC")
		for deadline := time.Now().Add(5 * time.Second); gotBody.Load() == nil; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the upstream never finished reading")
			}
		}
		if s := gotBody.Load().(string); strings.HasSuffix(s, "<nil>") {
			t.Errorf("the upstream took a truncated body as whole: %s", s)
		}
		// And the proxy still serves.
		c2 := lp.dial(t, proxy.Outbound)
		if resp, _ := exchange(t, c2, bufio.NewReader(c2), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); resp.StatusCode != 200 {
			t.Errorf("after the lie: %d", resp.StatusCode)
		}
	})
}

// TestStalledStreams: a request in flight that moves no byte for the
// stream idle timeout is answered 408 (upstream silent, or client
// stalled mid-body), as Envoy's stream_idle_timeout does.
func TestStalledStreams(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	silent := rawServer(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		<-release
	})
	patient := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.ReadAll(r.Body) }))
	for _, tc := range []struct {
		name string
		to   netip.AddrPort
		raw  string
	}{
		{"the upstream never answers", silent, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"the client stalls mid-body", patient.addr(), "POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := startHTTP(t, nil, func(c *proxy.Config) { c.StreamIdleTimeout = 300 * time.Millisecond })
			lp.to(tc.to)
			c := lp.dial(t, proxy.Outbound)
			start := time.Now()
			resp, body := exchange(t, c, bufio.NewReader(c), tc.raw, "GET")
			if resp.StatusCode != 408 || body != "stream timeout" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if took := time.Since(start); took < 250*time.Millisecond {
				t.Errorf("answered after %s, before the stream idle timeout", took)
			}
			lp.waitAccess(t, "408 SI stream_idle_timeout")
		})
	}
}

// TestDetection: what is not HTTP goes through as bytes: a TLS
// ClientHello (its SNI logged), a server-first protocol (after the wait),
// and a client's first bytes that are not a request line.
func TestDetection(t *testing.T) {
	greeting := rawServer(t, func(c net.Conn) {
		io.WriteString(c, "220 smtp.example ESMTP\r\n")
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Write(b[:n])
	})
	lp := startHTTP(t, nil, func(c *proxy.Config) { c.AccessLogFormat = l4Format + " sni=%REQUESTED_SERVER_NAME%" })
	lp.to(greeting)

	t.Run("server first", func(t *testing.T) {
		c := lp.dial(t, proxy.Outbound)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "220 ") {
			t.Fatalf("greeting %q, %v", line, err)
		}
		roundTripLocal(t, c, "EHLO me\r\n")
		c.Close()
		lp.waitAccess(t, "PassthroughCluster", "bytes_received=9 bytes_sent=33")
	})
	t.Run("not a request line", func(t *testing.T) {
		echo := localEcho(t)
		lp.to(echo)
		c := lp.dial(t, proxy.Outbound)
		roundTripLocal(t, c, "HELLO THERE\r\n")
		roundTripLocal(t, c, "GET / HTTP/1.1\r\n\r\n") // bytes now, not a request
	})
	t.Run("TLS", func(t *testing.T) {
		tb := httptest.NewTLSServer(http.HandlerFunc(echoHandler))
		defer tb.Close()
		lp.to(tb.Listener.Addr().(*net.TCPAddr).AddrPort())
		conn, err := tls.Dial("tcp4", lp.Addr(proxy.Outbound).String(), &tls.Config{ServerName: "api.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("through TLS: %v %v", resp, err)
		}
		conn.Close()
		lp.waitAccess(t, "PassthroughCluster", "sni=api.example.com")
	})
}

// TestClientLeavesWhileWaiting: a client that goes away while its request
// waits for a slow upstream takes the upstream request with it (the
// upstream sees its connection end, long before it would have answered),
// logged DC as Envoy logs it.
func TestClientLeavesWhileWaiting(t *testing.T) {
	upstreamSaw := make(chan time.Duration, 1)
	slow := rawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1)) // returns when the proxy drops the request
		upstreamSaw <- time.Since(start)
	})
	lp := startHTTP(t, nil, nil)
	lp.to(slow)
	c := lp.dial(t, proxy.Outbound)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case took := <-upstreamSaw:
		if took > 2*time.Second {
			t.Errorf("the upstream connection lived %s after the client left", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream never saw the request end")
	}
	lp.waitAccess(t, `"GET /slow HTTP/1.1" 0 DC downstream_remote_disconnect`)
}
