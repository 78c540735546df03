package tracing

import "encoding/hex"

// SpanContext is a span the sidecar makes for a request: its IDs, its
// parent's (the caller's span, if the request came with one) and whether
// it is sampled. It is what the next hop gets as its parent.
type SpanContext struct {
	Trace   TraceID
	Span    SpanID
	Parent  SpanID // invalid for a trace's root
	Sampled bool
	// Formats are the ones the context goes on in: those the request came
	// with; W3C and B3's multiple headers for a trace that starts here.
	Formats Format
	State   []byte // W3C's tracestate, as it came
}

// Field is a header the sidecar sets on the request it sends on.
type Field struct{ Name, Value []byte }

// The headers a trace context travels in; Strip lists every one the
// sidecar replaces (tracestate goes on as it came).
var (
	nameTraceparent = []byte("traceparent")
	nameB3          = []byte("b3")
	nameB3TraceID   = []byte("x-b3-traceid")
	nameB3SpanID    = []byte("x-b3-spanid")
	nameB3Parent    = []byte("x-b3-parentspanid")
	nameB3Sampled   = []byte("x-b3-sampled")
	Strip           = []string{"traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}
)

// FieldsSize is room enough in AppendFields' buffer for every format.
const FieldsSize = 55 + 68 + 32 + 16 + 16 + 1

// AppendFields appends the headers that carry c to the next hop, their
// values written in buf (FieldsSize bytes of capacity keep it from
// growing).
func (c *SpanContext) AppendFields(dst []Field, buf []byte) ([]Field, []byte) {
	sampled := byte('0')
	if c.Sampled {
		sampled = '1'
	}
	var v []byte
	if c.Formats&W3C != 0 {
		buf, v = grow(buf, 55)
		copy(v, "00-")
		hex.Encode(v[3:35], c.Trace[:])
		v[35] = '-'
		hex.Encode(v[36:52], c.Span[:])
		copy(v[52:], "-0")
		v[54] = sampled
		dst = append(dst, Field{nameTraceparent, v})
	}
	if c.Formats&B3Single != 0 {
		n := 32 + 1 + 16 + 2
		if c.Parent.IsValid() {
			n += 17
		}
		buf, v = grow(buf, n)
		hex.Encode(v[0:32], c.Trace[:])
		v[32] = '-'
		hex.Encode(v[33:49], c.Span[:])
		v[49], v[50] = '-', sampled
		if c.Parent.IsValid() {
			v[51] = '-'
			hex.Encode(v[52:68], c.Parent[:])
		}
		dst = append(dst, Field{nameB3, v})
	}
	if c.Formats&B3Multi != 0 {
		buf, v = grow(buf, 32)
		hex.Encode(v, c.Trace[:])
		dst = append(dst, Field{nameB3TraceID, v})
		buf, v = grow(buf, 16)
		hex.Encode(v, c.Span[:])
		dst = append(dst, Field{nameB3SpanID, v})
		if c.Parent.IsValid() {
			buf, v = grow(buf, 16)
			hex.Encode(v, c.Parent[:])
			dst = append(dst, Field{nameB3Parent, v})
		}
		buf, v = grow(buf, 1)
		v[0] = sampled
		dst = append(dst, Field{nameB3Sampled, v})
	}
	return dst, buf
}

// grow extends buf by n bytes and returns them.
func grow(buf []byte, n int) ([]byte, []byte) {
	l := len(buf)
	if cap(buf)-l < n {
		nb := make([]byte, l, 2*cap(buf)+n)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:l+n]
	return buf, buf[l : l+n : l+n]
}
