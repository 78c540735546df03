package http1

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unsafe"
)

// FuzzReadRequest feeds arbitrary bytes to the request parser and body
// decoder. Whatever it accepts must be self-consistent: every view lies in
// the head's own copy, the head written back out parses to the same
// message, and a decoded chunked body re-encoded decodes to itself.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET /test HTTP/1.0\r\nHost: backend-service:10000\r\nConnection: close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade, x\r\nUpgrade: websocket\r\nX: 1\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: a\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 16)
		for range 3 { // pipelined messages
			var req Request
			if err := r.ReadRequest(&req); err != nil {
				return
			}
			checkViews(t, &req)
			checkRoundTrip(t, &req)
			var b Body
			b.Reset(r, RequestFraming(&req), req.ContentLength)
			body, err := io.ReadAll(&b)
			if len(body) > len(in) {
				t.Fatalf("decoded %d body bytes from %d input bytes", len(body), len(in))
			}
			if err != nil {
				return
			}
			if b.Framing() == Chunked {
				checkChunkedRoundTrip(t, body, b.Trailers())
			}
		}
	})
}

func within(t *testing.T, what string, v, raw []byte) {
	if len(v) == 0 {
		return
	}
	lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(raw))), uintptr(unsafe.Pointer(unsafe.SliceData(raw)))+uintptr(len(raw))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	if p < lo || p+uintptr(len(v)) > hi {
		t.Fatalf("%s %q is not a view of the head", what, v)
	}
}

func checkViews(t *testing.T, req *Request) {
	within(t, "method", req.Method, req.raw)
	within(t, "target", req.Target, req.raw)
	within(t, "host", req.Host, req.raw)
	for _, h := range req.Headers {
		within(t, "name", h.Name, req.raw)
		within(t, "value", h.Value, req.raw)
	}
}

func writeRequest(req *Request) []byte {
	b := append([]byte(nil), req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	b = append(b, ' ')
	b = append(b, req.Proto()...)
	b = append(b, "\r\n"...)
	for _, h := range req.Headers {
		b = AppendHeader(b, h.Name, h.Value)
	}
	return append(b, "\r\n"...)
}

func checkRoundTrip(t *testing.T, req *Request) {
	out := writeRequest(req)
	var again Request
	if err := NewReader(bytes.NewReader(out), 0).ReadRequest(&again); err != nil {
		t.Fatalf("%q written back does not parse: %v", out, err)
	}
	if got := writeRequest(&again); !bytes.Equal(got, out) {
		t.Fatalf("round trip changed the head:\n%q\n%q", out, got)
	}
	same := again.ContentLength == req.ContentLength && again.Chunked == req.Chunked && again.Close == req.Close &&
		bytes.Equal(again.Upgrade, req.Upgrade) && again.Expect100 == req.Expect100
	if !same {
		t.Fatalf("round trip changed the framing of %q", out)
	}
}

func checkChunkedRoundTrip(t *testing.T, body []byte, trailers []Header) {
	var enc []byte
	if len(body) > 0 {
		buf := make([]byte, ChunkHeadroom+len(body)+ChunkTailroom)
		copy(buf[ChunkHeadroom:], body)
		enc = append(enc, FrameChunk(buf, len(body))...)
	}
	enc = AppendLastChunk(enc, trailers)
	r := NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+string(enc)), 0)
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	var b Body
	b.Reset(r, Chunked, -1)
	again, err := io.ReadAll(&b)
	if err != nil || !bytes.Equal(again, body) || len(b.Trailers()) != len(trailers) {
		t.Fatalf("chunked round trip: %q (%v), want %q", again, err, body)
	}
}
