package tracing

import (
	"math/rand/v2"
)

// Sampling is Envoy's HTTP connection manager tracing percentages
// (0 to 100): Random for a request with no say of its own (Istio's
// default, meshConfig.defaultConfig.tracing.sampling, is 1), Client for
// one with x-client-trace-id (100 by default), Overall applied to both
// after (100 by default).
type Sampling struct {
	Random, Client, Overall float64
}

// IstioSampling is Istio's default: 1% of requests, every one a client
// asks to trace.
var IstioSampling = Sampling{Random: 1, Client: 100, Overall: 100}

// Reason is why a request was traced, or not: Envoy's tracing stats
// (http.<prefix>.tracing.*) count each.
type Reason uint8

// The reasons, as Envoy's stats name them.
const (
	NotTraceable  Reason = iota // not_traceable
	RandomSampled               // random_sampling
	ClientForced                // client_enabled
	ServiceForced               // service_forced
	HealthCheck                 // health_check (unused: the sidecar has no health-check filter)
)

// Decision is whether a request's span is sampled, and why.
type Decision struct {
	Sampled bool
	Reason  Reason
}

// Decide samples a request as Envoy does: x-envoy-force-trace traces it;
// a parent's decision (traceparent's flag, B3's sampled or debug) is
// followed; x-client-trace-id samples it at the Client rate; anything
// else at the Random rate. The percentages are taken of a value stable
// across the request's hops, its x-request-id (a UUID's first 32 bits),
// so every sidecar on the way decides alike; a request without a UUID
// gets a random one. Overall thins what the rates let through.
func (s *Sampling) Decide(h Headers, p *Parent) Decision {
	if _, ok := h.Get("x-envoy-force-trace"); ok {
		return Decision{true, ServiceForced}
	}
	if p.Decided {
		r := RandomSampled
		if !p.Sampled {
			r = NotTraceable
		}
		return Decision{p.Sampled, r}
	}
	stable := stableValue(h)
	d := Decision{}
	if _, ok := h.Get("x-client-trace-id"); ok {
		d = Decision{enabled(s.Client, stable), ClientForced}
	} else if enabled(s.Random, stable) {
		d = Decision{true, RandomSampled}
	}
	if d.Sampled && !enabled(s.Overall, stable) {
		d = Decision{}
	}
	if !d.Sampled {
		d.Reason = NotTraceable
	}
	return d
}

// enabled says a value falls under a percentage, in ten-thousandths as
// Envoy's fractional percents are.
func enabled(percent float64, value uint64) bool {
	switch {
	case percent >= 100:
		return true
	case percent <= 0:
		return false
	}
	return value%10000 < uint64(percent*100)
}

// stableValue is the x-request-id's first eight hex digits, or a random
// number when it has none.
func stableValue(h Headers) uint64 {
	if id, ok := h.Get("x-request-id"); ok && len(id) >= 8 {
		var v uint64
		for _, c := range id[:8] {
			d, ok := fromHex(lower(c))
			if !ok {
				return rand.Uint64()
			}
			v = v<<4 | uint64(d)
		}
		return v
	}
	return rand.Uint64()
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// NewContext is the span a sidecar makes for a request with parent p and
// decision d: the same trace with a new span ID under the caller's, or a
// new trace.
func NewContext(p *Parent, d Decision) SpanContext {
	c := SpanContext{Trace: p.Trace, Parent: p.Span, Sampled: d.Sampled, Formats: p.Formats, State: p.State}
	if !p.HasTrace() {
		c.Trace = newTraceID()
		c.Parent = SpanID{}
		c.Formats = W3C | B3Multi | p.Formats&B3Single
	}
	c.Span = newSpanID()
	return c
}

func newTraceID() TraceID {
	var t TraceID
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		t[i], t[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
	}
	return t
}

func newSpanID() SpanID {
	var s SpanID
	for s == (SpanID{}) {
		v := rand.Uint64()
		for i := range 8 {
			s[i] = byte(v >> (56 - 8*i))
		}
	}
	return s
}
