// Package tracing is the sidecar's distributed tracing: the trace context
// a request carries (W3C Trace Context and Zipkin's B3, in its multi- and
// single-header forms), Envoy's sampling decision, the spans a sidecar
// records, and their export over OTLP.
//
// As with Envoy, the sidecar only joins the spans of one request to its
// caller's: an app that calls on must copy the trace headers of the
// request it serves onto the requests it makes, or each hop starts a
// trace of its own.
package tracing

import (
	"encoding/hex"
)

// TraceID names a trace; SpanID a span in it. The zero value of each is
// invalid, as W3C and B3 both say.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// IsValid says t names a trace.
func (t TraceID) IsValid() bool { return t != TraceID{} }

// IsValid says s names a span.
func (s SpanID) IsValid() bool { return s != SpanID{} }

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// Format is a way of carrying the trace context in headers.
type Format uint8

// The formats, as a set: a request may carry more than one.
const (
	W3C      Format = 1 << iota // traceparent, tracestate
	B3Multi                     // x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled, x-b3-flags
	B3Single                    // b3
)

// Headers gives a request's header by its lower-case name.
type Headers interface {
	Get(lowerName string) ([]byte, bool)
}

// Parent is the trace context a request arrived with: its caller's span.
type Parent struct {
	Trace TraceID
	Span  SpanID
	// Decided says the headers carry a sampling decision, Sampled what it
	// is (B3's debug flag counts as sampled).
	Decided, Sampled bool
	// Formats are the ones the request carried the context in.
	Formats Format
	// State is W3C's tracestate, passed on as it came.
	State []byte
}

// HasTrace says the request carried a trace to join.
func (p *Parent) HasTrace() bool { return p.Trace.IsValid() }

// Extract reads a request's trace context: traceparent (and tracestate)
// first, then B3's single header, then its multiple headers. A malformed
// header is ignored, as if absent; a B3 header with a sampling decision
// and no IDs (b3: 0, or x-b3-sampled alone) still carries the decision.
func Extract(h Headers) Parent {
	var p Parent
	if v, ok := h.Get("traceparent"); ok && parseTraceparent(v, &p) {
		p.Formats |= W3C
		if s, ok := h.Get("tracestate"); ok {
			p.State = s
		}
	}
	if v, ok := h.Get("b3"); ok {
		var b Parent
		if parseB3Single(v, &b) {
			p.join(&b, B3Single)
		}
	}
	var b Parent
	if parseB3Multi(h, &b) {
		p.join(&b, B3Multi)
	}
	return p
}

// join takes from b, read in format f, what p does not have yet: the
// trace, the decision.
func (p *Parent) join(b *Parent, f Format) {
	if !p.HasTrace() {
		p.Trace, p.Span = b.Trace, b.Span
	}
	if !p.Decided {
		p.Decided, p.Sampled = b.Decided, b.Sampled
	}
	p.Formats |= f
}

// parseTraceparent reads W3C's version-traceid-parentid-flags. A later
// version is read as version 00 where it agrees with it, as the
// specification asks.
func parseTraceparent(v []byte, p *Parent) bool {
	const size = 55
	if len(v) < size || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	var ver [1]byte
	if !decodeHex(ver[:], v[0:2]) || ver[0] == 0xff || ver[0] == 0 && len(v) != size || len(v) > size && v[size] != '-' {
		return false
	}
	var flags [1]byte
	var t TraceID
	var s SpanID
	if !decodeHex(t[:], v[3:35]) || !decodeHex(s[:], v[36:52]) || !decodeHex(flags[:], v[53:55]) || !t.IsValid() || !s.IsValid() {
		return false
	}
	p.Trace, p.Span, p.Decided, p.Sampled = t, s, true, flags[0]&1 == 1
	return true
}

// parseB3Single reads b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]],
// or a decision alone (0, 1 or d).
func parseB3Single(v []byte, p *Parent) bool {
	if len(v) == 1 {
		return b3Sampling(v, p)
	}
	i := indexByte(v, '-')
	if i < 0 || !parseB3TraceID(v[:i], &p.Trace) {
		return false
	}
	v = v[i+1:]
	j := indexByte(v, '-')
	spanEnd := j
	if j < 0 {
		spanEnd = len(v)
	}
	if !parseB3SpanID(v[:spanEnd], &p.Span) {
		return false
	}
	if j < 0 {
		return true
	}
	v = v[j+1:]
	if k := indexByte(v, '-'); k >= 0 {
		var parent SpanID
		if !parseB3SpanID(v[k+1:], &parent) {
			return false
		}
		v = v[:k]
	}
	return b3Sampling(v, p)
}

// b3Sampling reads B3's sampling state: 0, 1, or d (debug: sampled).
func b3Sampling(v []byte, p *Parent) bool {
	switch string(v) {
	case "0":
		p.Decided, p.Sampled = true, false
	case "1", "d":
		p.Decided, p.Sampled = true, true
	default:
		return false
	}
	return true
}

// parseB3Multi reads B3's multiple headers: x-b3-traceid and x-b3-spanid
// together, x-b3-sampled (1, 0, or the old true and false), x-b3-flags
// (1 is debug: sampled).
func parseB3Multi(h Headers, p *Parent) bool {
	found := false
	tid, okT := h.Get("x-b3-traceid")
	sid, okS := h.Get("x-b3-spanid")
	if okT && okS && parseB3TraceID(tid, &p.Trace) && parseB3SpanID(sid, &p.Span) {
		found = true
	} else {
		p.Trace, p.Span = TraceID{}, SpanID{}
	}
	if v, ok := h.Get("x-b3-sampled"); ok {
		switch string(v) {
		case "1", "true":
			p.Decided, p.Sampled, found = true, true, true
		case "0", "false":
			p.Decided, p.Sampled, found = true, false, true
		}
	}
	if v, ok := h.Get("x-b3-flags"); ok && string(v) == "1" {
		p.Decided, p.Sampled, found = true, true, true
	}
	return found
}

// parseB3TraceID reads a 64- or 128-bit trace ID in lower-case hex; a
// 64-bit one fills the low half.
func parseB3TraceID(v []byte, t *TraceID) bool {
	var id TraceID
	switch len(v) {
	case 32:
		if !decodeHex(id[:], v) {
			return false
		}
	case 16:
		if !decodeHex(id[8:], v) {
			return false
		}
	default:
		return false
	}
	*t = id
	return id.IsValid()
}

func parseB3SpanID(v []byte, s *SpanID) bool {
	var id SpanID
	if len(v) != 16 || !decodeHex(id[:], v) {
		return false
	}
	*s = id
	return id.IsValid()
}

// decodeHex decodes lower-case hex (the formats allow no other) into dst,
// exactly filling it.
func decodeHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHex(src[2*i])
		lo, ok2 := fromHex(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
