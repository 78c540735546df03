package proxy_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/proxy"
)

// httpFormat is the access log format the HTTP tests read.
const httpFormat = `"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% ` +
	`%RESPONSE_CODE_DETAILS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% id=%REQ(X-REQUEST-ID)% upstream=%UPSTREAM_HOST% ` +
	`cluster=%UPSTREAM_CLUSTER% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% svc=%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% ` +
	`sni=%REQUESTED_SERVER_NAME% end=%CONNECTION_TERMINATION_DETAILS%`

// backend is a net/http server on loopback that counts the connections
// it accepts.
type backend struct {
	*httptest.Server
	conns atomic.Int64
}

func newBackend(t testing.TB, h http.Handler) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() netip.AddrPort {
	return b.Listener.Addr().(*net.TCPAddr).AddrPort()
}

// startHTTP runs a local proxy with detection on, every connection going
// to b.
func startHTTP(t testing.TB, b *backend, mutate func(*proxy.Config)) *localProxy {
	t.Helper()
	lp := startLocal(t, func(c *proxy.Config) {
		c.ProtocolDetectionTimeout = 200 * time.Millisecond
		c.AccessLogFormat = httpFormat
		if mutate != nil {
			mutate(c)
		}
	})
	if b != nil {
		lp.to(b.addr())
	}
	return lp
}

// exchange writes raw request bytes on c and reads one response.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, raw string, method string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if raw != "" {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

// echoHandler answers with what it saw: method, path, protocol, the
// headers a test asks about, and the body's length and digest.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, _ := io.Copy(h, r.Body)
	fmt.Fprintf(w, "%s %s %s len=%d sha=%s", r.Method, r.URL.RequestURI(), r.Proto, n, hex.EncodeToString(h.Sum(nil))[:12])
	for _, k := range strings.Split(r.URL.Query().Get("show"), ",") {
		if k != "" {
			fmt.Fprintf(w, " %s=%q", k, r.Header.Values(k))
		}
	}
	if tr := r.Trailer.Get("X-Sum"); tr != "" {
		fmt.Fprintf(w, " trailer=%s", tr)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestNginxRequestThroughL7 is the seed scenario's request: nginx's
// HTTP/1.0 with Connection: close, logged as Envoy logs it, with a
// request ID made and passed on, and the upstream connection kept for the
// next one.
func TestNginxRequestThroughL7(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(echoHandler))
	lp := startHTTP(t, b, nil)
	for i := range 20 {
		c := lp.dial(t, proxy.Outbound)
		resp, body := exchange(t, c, bufio.NewReader(c), "GET /test?show=X-Request-Id,X-Forwarded-Proto HTTP/1.0\r\nHost: backend_ups\r\nConnection: close\r\n\r\n", "GET")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /test?show=X-Request-Id,X-Forwarded-Proto HTTP/1.1 len=0") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		id := regexp.MustCompile(`X-Request-Id=\["([^"]+)"\]`).FindStringSubmatch(body)
		if id == nil || !uuidV4.MatchString(id[1]) {
			t.Fatalf("the upstream saw no UUIDv4 request ID: %q", body)
		}
		if !strings.Contains(body, `X-Forwarded-Proto=["http"]`) {
			t.Errorf("x-forwarded-proto: %q", body)
		}
		if resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" || !resp.Close {
			t.Errorf("response headers %v, close %v", resp.Header, resp.Close)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("the proxy did not close the HTTP/1.0 connection: %v", err)
		}
		lp.waitAccess(t, `"GET /test?show=X-Request-Id,X-Forwarded-Proto HTTP/1.0" 200 - via_upstream rx=0`, "id="+id[1],
			"upstream="+b.addr().String(), "cluster=PassthroughCluster")
	}
	if n := b.conns.Load(); n > 1 {
		t.Errorf("20 requests opened %d upstream connections, want 1 (pooled)", n)
	}
}

// TestHTTPShapes runs requests of every shape HTTP/1 has through the
// proxy to a net/http server and checks what each side saw.
func TestHTTPShapes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", echoHandler)
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Checksum", "abc123")
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscanf(r.URL.Path, "/status/%d", &code)
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.Header().Set("X-Public", "end")
		w.WriteHeader(code)
		if code != 204 && code != 304 {
			io.WriteString(w, "status body")
		}
	})
	b := newBackend(t, mux)
	lp := startHTTP(t, b, nil)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	bigSum := sha256.Sum256([]byte(big))

	for _, tc := range []struct {
		name, raw, method string
		code              int
		body              string // a prefix of the body wanted
		check             func(t *testing.T, resp *http.Response, body string)
	}{
		{name: "GET HTTP/1.1", raw: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", code: 200, body: "GET /a HTTP/1.1 len=0"},
		{name: "POST with a length", raw: "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", code: 200,
			body: "POST /p HTTP/1.1 len=5 sha=2cf24dba5fb0"},
		{name: "POST of 1 MiB streams", raw: "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big,
			code: 200, body: "POST /big HTTP/1.1 len=1048576 sha=" + hex.EncodeToString(bigSum[:])[:12]},
		{name: "chunked request with trailers", raw: "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n", code: 200, body: "POST /c HTTP/1.1 len=11 sha=b94d27b9934d trailer=42"},
		{name: "chunked response with trailers to 1.1", raw: "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", code: 200, body: "part0;part1;part2;",
			check: func(t *testing.T, resp *http.Response, _ string) {
				if len(resp.TransferEncoding) == 0 || resp.Trailer.Get("X-Checksum") != "abc123" {
					t.Errorf("transfer encoding %v, trailers %v", resp.TransferEncoding, resp.Trailer)
				}
			}},
		{name: "chunked response to 1.0 ends with the connection", raw: "GET /chunked HTTP/1.0\r\n\r\n", code: 200, body: "part0;part1;part2;",
			check: func(t *testing.T, resp *http.Response, _ string) {
				if len(resp.TransferEncoding) != 0 || !resp.Close {
					t.Errorf("transfer encoding %v, close %v", resp.TransferEncoding, resp.Close)
				}
			}},
		{name: "HEAD has a length and no body", raw: "HEAD /status/200 HTTP/1.1\r\nHost: x\r\n\r\n", method: "HEAD", code: 200, body: "",
			check: func(t *testing.T, resp *http.Response, body string) {
				if resp.ContentLength != int64(len("status body")) || body != "" {
					t.Errorf("length %d, body %q", resp.ContentLength, body)
				}
			}},
		{name: "204", raw: "GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n", code: 204, body: ""},
		{name: "304", raw: "GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n", code: 304, body: ""},
		{name: "hop-by-hop headers stay", raw: "GET /?show=X-Hop,Keep-Alive,Proxy-Connection,Te,X-End HTTP/1.1\r\nHost: x\r\n" +
			"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-End: 2\r\n\r\n",
			code: 200, body: `GET /?show=X-Hop,Keep-Alive,Proxy-Connection,Te,X-End HTTP/1.1 len=0 sha=e3b0c44298fc X-Hop=[] Keep-Alive=[] Proxy-Connection=[] Te=["trailers"] X-End=["2"]`},
		{name: "hop-by-hop response headers stay", raw: "GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n", code: 200, body: "status body",
			check: func(t *testing.T, resp *http.Response, _ string) {
				if resp.Header.Get("X-Private") != "" || resp.Header.Get("X-Public") != "end" {
					t.Errorf("headers %v", resp.Header)
				}
			}},
		{name: "a request ID given is kept", raw: "GET /?show=X-Request-Id HTTP/1.1\r\nHost: x\r\nX-Request-Id: mine\r\n\r\n", code: 200,
			body: `GET /?show=X-Request-Id HTTP/1.1 len=0 sha=e3b0c44298fc X-Request-Id=["mine"]`},
		{name: "absolute-form target", raw: "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", code: 200, body: "GET /abs HTTP/1.1"}, // the Go server reads the path out
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lp.dial(t, proxy.Outbound)
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp, body := exchange(t, c, bufio.NewReader(c), tc.raw, method)
			if resp.StatusCode != tc.code || !strings.HasPrefix(body, tc.body) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tc.code, tc.body)
			}
			if tc.check != nil {
				tc.check(t, resp, body)
			}
		})
	}
}

// TestKeepAlivePipeliningAndExpect: one client connection carries
// requests one after another, pipelined, and with Expect: 100-continue;
// they share one upstream connection.
func TestKeepAlivePipeliningAndExpect(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(echoHandler))
	lp := startHTTP(t, b, nil)
	c := lp.dial(t, proxy.Outbound)
	br := bufio.NewReader(c)
	for i := range 3 {
		resp, body := exchange(t, c, br, fmt.Sprintf("GET /seq%d HTTP/1.1\r\nHost: x\r\n\r\n", i), "GET")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, fmt.Sprintf("GET /seq%d", i)) || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	// Pipelined: three requests in one write, answered in order.
	if _, err := io.WriteString(c, "GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GET /p1", "POST /p2 HTTP/1.1 len=3", "GET /p3"} {
		if _, body := exchange(t, c, br, "", "GET"); !strings.HasPrefix(body, want) {
			t.Fatalf("pipelined: %q, want %q", body, want)
		}
	}
	// Expect: the proxy says 100 Continue before the body is sent.
	if _, err := io.WriteString(c, "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("before the body: %q, %v", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("100 Continue had headers: %q", l)
	}
	if _, body := exchange(t, c, br, "data", "PUT"); !strings.HasPrefix(body, "PUT /e HTTP/1.1 len=4") {
		t.Fatalf("after 100 Continue: %q", body)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

// TestUpgradeAndConnectTunnel: a WebSocket-style Upgrade and a CONNECT
// are passed on, and after the 101 or the 200 the connection is a tunnel
// of bytes both ways.
func TestUpgradeAndConnectTunnel(t *testing.T) {
	hijackEcho := func(w http.ResponseWriter, r *http.Request, status string) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "%s\r\n", status)
		if r.Header.Get("Upgrade") != "" {
			fmt.Fprintf(brw, "Connection: Upgrade\r\nUpgrade: %s\r\n", r.Header.Get("Upgrade"))
		}
		brw.WriteString("\r\n")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				c.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				return
			}
		}
	}
	b := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "CONNECT":
			hijackEcho(w, r, "HTTP/1.1 200 Connection established")
		case r.Header.Get("Upgrade") == "websocket":
			hijackEcho(w, r, "HTTP/1.1 101 Switching Protocols")
		default:
			http.Error(w, "no upgrade", 400)
		}
	}))
	lp := startHTTP(t, b, nil)
	for _, tc := range []struct{ name, raw, method string }{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n", "GET"},
		{"CONNECT", "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n", "CONNECT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lp.dial(t, proxy.Outbound)
			br := bufio.NewReader(c)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
			if err != nil || resp.StatusCode/100 != 1 && resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			for _, msg := range []string{"ping", "tunnelled bytes"} {
				io.WriteString(c, msg)
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
					t.Fatalf("through the tunnel: %q, %v", got, err)
				}
			}
			c.Close()
			lp.waitAccess(t, `"`+tc.method+` `)
		})
	}
}

// TestLocalReplies: what the proxy answers itself, with Envoy's codes,
// flags and details, in the response and the log.
func TestLocalReplies(t *testing.T) {
	refused := func() netip.AddrPort {
		ln, _ := net.Listen("tcp4", "127.0.0.1:0")
		a := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		return a
	}()
	silent := rawServer(t, func(c net.Conn) { // reads the request, closes without a word
		bufio.NewReader(c).ReadString('\n')
		time.Sleep(20 * time.Millisecond)
		c.Close()
	})
	garbage := rawServer(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx")
		c.Close()
	})
	for _, tc := range []struct {
		name string
		to   netip.AddrPort
		raw  string
		code int
		body string
		log  []string
	}{
		{"upstream refuses", refused, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", 503,
			"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: dial",
			[]string{`"GET /r HTTP/1.1" 503 UF upstream_reset_before_response_started{connection_failure}`}},
		{"upstream closes without a response", silent, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n", 503,
			"upstream connect error or disconnect/reset before headers. reset reason: connection termination",
			[]string{`"GET /s HTTP/1.1" 503 UC upstream_reset_before_response_started{connection_termination}`}},
		{"upstream speaks nonsense", garbage, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n", 502,
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error",
			[]string{`"GET /g HTTP/1.1" 502 UPE upstream_reset_before_response_started{protocol_error}`}},
		{"client smuggles", garbage, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "",
			[]string{`"- - HTTP/1.1" 400 DPE http1.codec_error{both_Content-Length_and_Transfer-Encoding}`}},
		{"client sends HTTP/1.1 without Host", garbage, "GET / HTTP/1.1\r\n\r\n", 400, "", []string{`400 DPE http1.codec_error`}},
		{"client head too large", garbage, "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431, "",
			[]string{`431 DPE http1.headers_too_large`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := startHTTP(t, nil, nil)
			lp.to(tc.to)
			c := lp.dial(t, proxy.Outbound)
			resp, body := exchange(t, c, bufio.NewReader(c), tc.raw, "GET")
			if resp.StatusCode != tc.code || !strings.HasPrefix(body, tc.body) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tc.code, tc.body)
			}
			lp.waitAccess(t, tc.log...)
		})
	}
}

// rawServer accepts connections on loopback and hands each to serve.
func rawServer(t testing.TB, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
