package http1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestBody(t *testing.T) {
	for _, tc := range []struct {
		name, head, body string
		want             string
		trailers         string // "name=value;..."
		err              error  // wanted at the end of the body
		rest             string // what the connection holds after the body
	}{
		{name: "length", head: "Content-Length: 5", body: "hello", want: "hello"},
		{name: "length, next request after", head: "Content-Length: 5", body: "helloGET", want: "hello", rest: "GET"},
		{name: "length truncated", head: "Content-Length: 9", body: "hello", want: "hello", err: ErrBodyTruncated},
		{name: "chunked", head: "Transfer-Encoding: chunked", body: "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
			want: "hello world", rest: "NEXT"},
		{name: "chunked hex sizes", head: "Transfer-Encoding: chunked", body: "A\r\n0123456789\r\n0\r\n\r\n", want: "0123456789"},
		{name: "chunked trailers", head: "Transfer-Encoding: chunked",
			body: "3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n", want: "abc", trailers: "grpc-status=0;grpc-message=ok;"},
		{name: "chunk longer than its size", head: "Transfer-Encoding: chunked", body: "3\r\nabcd\r\n0\r\n\r\n", want: "abc", err: errProto},
		{name: "chunk size not hex", head: "Transfer-Encoding: chunked", body: "x\r\n", err: errProto},
		{name: "chunk size with junk", head: "Transfer-Encoding: chunked", body: "3 x\r\nabc\r\n", err: errProto},
		{name: "chunk size overflows", head: "Transfer-Encoding: chunked", body: "10000000000000000\r\n", err: errProto},
		{name: "chunk line with bare LF", head: "Transfer-Encoding: chunked", body: "3\nabc\r\n0\r\n\r\n", err: errProto},
		{name: "chunked truncated in data", head: "Transfer-Encoding: chunked", body: "5\r\nhel", want: "hel", err: ErrBodyTruncated},
		{name: "chunked truncated before last chunk", head: "Transfer-Encoding: chunked", body: "3\r\nabc\r\n", want: "abc", err: ErrBodyTruncated},
		{name: "chunked truncated in trailers", head: "Transfer-Encoding: chunked", body: "0\r\nx: y\r\n", err: ErrBodyTruncated},
		{name: "no body", head: "X: y", body: "GET", rest: "GET"},
	} {
		for rname, mk := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				in := "POST / HTTP/1.1\r\nHost: a\r\n" + tc.head + "\r\n\r\n" + tc.body
				r := NewReader(mk(in), 16)
				var req Request
				if err := r.ReadRequest(&req); err != nil {
					t.Fatal(err)
				}
				var b Body
				b.Reset(r, RequestFraming(&req), req.ContentLength)
				got, err := readAll(&b)
				want(t, "body", got, tc.want)
				switch {
				case tc.err == errProto:
					var pe *ProtocolError
					if !errors.As(err, &pe) {
						t.Fatalf("err = %v, want a ProtocolError", err)
					}
					return
				case tc.err != nil:
					if err != tc.err {
						t.Fatalf("err = %v, want %v", err, tc.err)
					}
					return
				case err != nil:
					t.Fatal(err)
				}
				var tr strings.Builder
				for _, h := range b.Trailers() {
					tr.WriteString(string(h.Name) + "=" + string(h.Value) + ";")
				}
				want(t, "trailers", tr.String(), tc.trailers)
				rest, _ := io.ReadAll(r)
				want(t, "rest", string(rest), tc.rest)
			})
		}
	}
}

// errProto stands for any ProtocolError in a table.
var errProto = errors.New("a protocol error")

func readAll(b *Body) (string, error) {
	var out bytes.Buffer
	p := make([]byte, 4)
	for {
		n, err := b.Read(p)
		out.Write(p[:n])
		if err == io.EOF {
			return out.String(), nil
		}
		if err != nil {
			return out.String(), err
		}
	}
}

func TestFrameChunk(t *testing.T) {
	for _, data := range []string{"a", "hello world", strings.Repeat("z", 300)} {
		buf := make([]byte, ChunkHeadroom+len(data)+ChunkTailroom)
		copy(buf[ChunkHeadroom:], data)
		framed := FrameChunk(buf, len(data))
		// Read it back through the decoder.
		in := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + string(framed) +
			string(AppendLastChunk(nil, []Header{{Name: []byte("t"), Value: []byte("v")}}))
		r := NewReader(strings.NewReader(in), 0)
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		var b Body
		b.Reset(r, Chunked, -1)
		got, err := readAll(&b)
		if err != nil || got != data {
			t.Fatalf("round trip of %d bytes: %q, %v", len(data), got, err)
		}
		if tr := b.Trailers(); len(tr) != 1 || string(tr[0].Value) != "v" {
			t.Errorf("trailers %v", tr)
		}
	}
}
