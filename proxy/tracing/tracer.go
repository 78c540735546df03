package tracing

import (
	"time"
)

// Tracer is a connection manager's tracing: how it samples, who it is in
// its spans' tags, and where its spans go.
type Tracer struct {
	Sampling Sampling
	Node     Node
	// MaxPathTagLength bounds http.url (0: MaxPathTagLength).
	MaxPathTagLength int
	Exporter         *Exporter
}

// Start reads a request's trace context and decides its sampling: the
// span the sidecar makes for it, to pass on to the next hop.
func (t *Tracer) Start(h Headers) (SpanContext, Decision) {
	p := Extract(h)
	d := t.Sampling.Decide(h, &p)
	return NewContext(&p, d), d
}

// Finish exports c's span if it is sampled: name it, time it, tag it with
// what r says of the request.
func (t *Tracer) Finish(c *SpanContext, kind Kind, name string, start, end time.Time, r *Request) {
	if !c.Sampled || t.Exporter == nil {
		return
	}
	s := &Span{SpanContext: *c, Kind: kind, Name: name, Start: start, End: end}
	s.State = append([]byte(nil), c.State...)
	s.Attrs, s.Error = Tags(r, &t.Node, t.MaxPathTagLength)
	t.Exporter.Export(s)
}
