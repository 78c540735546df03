package tracing

import (
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// ScopeName is the instrumentation scope of the sidecar's spans.
const ScopeName = "shunt"

// request is the OTLP export of a batch of spans from one sidecar.
func request(resource []Attr, batch []*Span) *tracepb.TracesData {
	spans := make([]*tracepb.Span, len(batch))
	for i, s := range batch {
		spans[i] = otlpSpan(s)
	}
	return &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: keyValues(resource)},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: ScopeName}, Spans: spans}},
	}}}
}

func otlpSpan(s *Span) *tracepb.Span {
	out := &tracepb.Span{
		TraceId:           s.Trace[:],
		SpanId:            s.Span[:],
		Name:              s.Name,
		Kind:              tracepb.Span_SpanKind(s.Kind),
		StartTimeUnixNano: uint64(s.Start.UnixNano()),
		EndTimeUnixNano:   uint64(s.End.UnixNano()),
		Attributes:        keyValues(s.Attrs),
	}
	if s.Parent.IsValid() {
		out.ParentSpanId = s.Parent[:]
	}
	if len(s.State) > 0 {
		out.TraceState = string(s.State)
	}
	if s.Error {
		out.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	}
	return out
}

func keyValues(attrs []Attr) []*commonpb.KeyValue {
	kv := make([]*commonpb.KeyValue, len(attrs))
	for i, a := range attrs {
		kv[i] = &commonpb.KeyValue{Key: a.Key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: a.Value}}}
	}
	return kv
}
