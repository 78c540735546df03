package http1

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readers are the ways a head may arrive: at once, a byte at a time.
var readers = map[string]func(string) io.Reader{
	"whole":    func(s string) io.Reader { return strings.NewReader(s) },
	"bytewise": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
}

func TestReadRequest(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(t *testing.T, r *Request)
		status   int // for a refused request: its ProtocolError status
	}{
		{name: "HTTP/1.0 as nginx sends it", in: "GET /test HTTP/1.0\r\nHost: backend-service:10000\r\nConnection: close\r\n\r\n",
			check: func(t *testing.T, r *Request) {
				want(t, "method", string(r.Method), "GET")
				want(t, "target", string(r.Target), "/test")
				want(t, "proto", r.Proto(), "HTTP/1.0")
				want(t, "host", string(r.Host), "backend-service:10000")
				want(t, "close", r.Close, true)
				want(t, "length", r.ContentLength, int64(-1))
				want(t, "framing", RequestFraming(r), NoBody)
			}},
		{name: "HTTP/1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			check: func(t *testing.T, r *Request) {
				want(t, "close", r.Close, false)
				want(t, "keep-alive", r.KeepAlive, true)
			}},
		{name: "HTTP/1.1 persistent by default", in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "close", r.Close, false) }},
		{name: "bare LF line ends", in: "GET / HTTP/1.1\nHost: a\nX: y\n\n",
			check: func(t *testing.T, r *Request) { v, _ := r.Get("x"); want(t, "x", string(v), "y") }},
		{name: "empty lines before the request line", in: "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "method", string(r.Method), "GET") }},
		{name: "value trimmed, inner spaces kept", in: "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: \t curl/8  x \t\r\n\r\n",
			check: func(t *testing.T, r *Request) { v, _ := r.Get("user-agent"); want(t, "ua", string(v), "curl/8  x") }},
		{name: "later 1.x minor is 1.1", in: "GET / HTTP/1.7\r\nHost: a\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "proto", r.Proto(), "HTTP/1.1") }},
		{name: "content length", in: "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n",
			check: func(t *testing.T, r *Request) {
				want(t, "length", r.ContentLength, int64(12))
				want(t, "framing", RequestFraming(r), Length)
			}},
		{name: "repeated equal content lengths", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "length", r.ContentLength, int64(3)) }},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "framing", RequestFraming(r), Chunked) }},
		{name: "expect 100-continue", in: "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "expect", r.Expect100, true) }},
		{name: "expect ignored in 1.0", in: "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "expect", r.Expect100, false) }},
		{name: "upgrade needs Connection: upgrade", in: "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "upgrade", string(r.Upgrade), "") }},
		{name: "websocket upgrade", in: "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "upgrade", string(r.Upgrade), "websocket") }},
		{name: "connection nominates hop-by-hop headers", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nTE: trailers\r\n\r\n",
			check: func(t *testing.T, r *Request) {
				want(t, "x-hop", r.HopByHop([]byte("X-Hop")), true)
				want(t, "te", r.HopByHop([]byte("te")), true)
				want(t, "host", r.HopByHop([]byte("host")), false)
				want(t, "close", r.Close, true)
			}},
		{name: "CONNECT authority", in: "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "target", string(r.Target), "db:5432") }},
		{name: "absolute form", in: "GET http://a/x?q HTTP/1.1\r\nHost: a\r\n\r\n",
			check: func(t *testing.T, r *Request) { want(t, "target", string(r.Target), "http://a/x?q") }},

		{name: "HTTP/1.1 without Host", in: "GET / HTTP/1.1\r\n\r\n", status: 400},
		{name: "two Hosts", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", status: 400},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: 400},
		{name: "no colon", in: "GET / HTTP/1.1\r\nHost a\r\n\r\n", status: 400},
		{name: "empty name", in: "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", status: 400},
		{name: "NUL in a value", in: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", status: 400},
		{name: "CR in a value", in: "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", status: 400},
		{name: "CL and TE both (smuggling)", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "conflicting CLs", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", status: 400},
		{name: "signed CL", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", status: 400},
		{name: "huge CL", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", status: 400},
		{name: "TE in HTTP/1.0", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "TE gzip", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501},
		{name: "TE chunked twice", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "method with a space", in: "GE T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "two spaces", in: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "lower-case version", in: "GET / http/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "HTTP/0.9", in: "GET /\r\n\r\n", status: 400},
		{name: "control in target", in: "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	} {
		for rname, mk := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				var req Request
				err := NewReader(mk(tc.in), 16).ReadRequest(&req)
				if tc.status != 0 {
					var pe *ProtocolError
					if !errors.As(err, &pe) || pe.Status != tc.status {
						t.Fatalf("err = %v, want a ProtocolError with status %d", err, tc.status)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, &req)
			})
		}
	}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestHeadErrors(t *testing.T) {
	var req Request
	if err := NewReader(strings.NewReader(""), 0).ReadRequest(&req); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
	if err := NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n"), 0).ReadRequest(&req); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated head: %v, want io.ErrUnexpectedEOF", err)
	}
	big := "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("x", MaxHeadBytes) + "\r\n\r\n"
	if err := NewReader(strings.NewReader(big), 0).ReadRequest(&req); err != ErrHeadTooLarge {
		t.Errorf("large head: %v, want ErrHeadTooLarge", err)
	}
	many := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", MaxHeaders) + "\r\n"
	if err := NewReader(strings.NewReader(many), 0).ReadRequest(&req); err == nil {
		t.Errorf("%d headers accepted", MaxHeaders+1)
	}
	var ve *VersionError
	if err := NewReader(strings.NewReader("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0).ReadRequest(&req); !errors.As(err, &ve) {
		t.Errorf("HTTP/2 preface: %v, want a VersionError", err)
	}
}

func TestPipelinedRequestsKeepTheirViews(t *testing.T) {
	in := "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n"
	r := NewReader(strings.NewReader(in), 0)
	var first, second Request
	if err := r.ReadRequest(&first); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadRequest(&second); err != nil {
		t.Fatal(err)
	}
	want(t, "first", string(first.Target)+" "+string(first.Host), "/a a")
	want(t, "second", string(second.Target)+" "+string(second.Host), "/b b")
	if err := r.ReadRequest(&first); err != io.EOF {
		t.Errorf("after the last: %v", err)
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, in, method string
		code             int
		framing          Framing
		close            bool
		bad              bool
	}{
		{name: "length", in: "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", code: 200, framing: Length},
		{name: "no reason", in: "HTTP/1.1 204\r\n\r\n", code: 204, framing: NoBody},
		{name: "empty reason", in: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", code: 404, framing: NoBody},
		{name: "until close", in: "HTTP/1.0 200 OK\r\n\r\n", code: 200, framing: UntilClose, close: true},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", code: 200, framing: Chunked},
		{name: "chunked wins over length, then closes", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
			code: 200, framing: Chunked, close: true},
		{name: "HEAD has no body", in: "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", method: "HEAD", code: 200, framing: NoBody},
		{name: "304 has no body", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 40\r\n\r\n", code: 304, framing: NoBody},
		{name: "100 continue", in: "HTTP/1.1 100 Continue\r\n\r\n", code: 100, framing: NoBody},
		{name: "101 switching", in: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", code: 101, framing: NoBody},
		{name: "two-digit code", in: "HTTP/1.1 20 OK\r\n\r\n", bad: true},
		{name: "HTTP/2 status line", in: "HTTP/2 200\r\n\r\n", bad: true},
		{name: "gzip coding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", bad: true},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp Response
			err := NewReader(strings.NewReader(tc.in), 0).ReadResponse(&resp)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			method := tc.method
			if method == "" {
				method = "GET"
			}
			want(t, "code", resp.Code, tc.code)
			want(t, "framing", ResponseFraming(&resp, []byte(method)), tc.framing)
			want(t, "close", resp.Close, tc.close)
		})
	}
}
