package tracing

import (
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// TestAppendTracesData: the exporter's own encoding reads back, with
// OpenTelemetry's generated types, as the message it stands for, for
// lengths of every varint size (a long tag value, a batch past 16 KiB).
func TestAppendTracesData(t *testing.T) {
	start := time.Unix(1700000000, 123456789)
	long := strings.Repeat("x", 300)
	var batch []*Span
	for i := range 200 {
		s := &Span{SpanContext: SpanContext{Trace: TraceID{1, 2, 3, byte(i)}, Span: SpanID{9, byte(i)}}, Kind: KindServer,
			Name: "ingress", Start: start, End: start.Add(time.Duration(i) * time.Millisecond),
			Attrs: []Attr{{"http.url", "http://a/" + long}, {"http.status_code", "200"}}}
		if i%2 == 1 {
			s.Parent, s.State, s.Kind, s.Error = SpanID{7}, []byte("k=v"), KindClient, true
		}
		batch = append(batch, s)
	}
	resource := []Attr{{"service.name", "reviews.shop"}}
	var got tracepb.TracesData
	if err := proto.Unmarshal(appendTracesData(nil, resource, batch), &got); err != nil {
		t.Fatal(err)
	}
	kv := func(attrs []Attr) []*commonpb.KeyValue {
		var out []*commonpb.KeyValue
		for _, a := range attrs {
			out = append(out, &commonpb.KeyValue{Key: a.Key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: a.Value}}})
		}
		return out
	}
	var spans []*tracepb.Span
	for _, s := range batch {
		ps := &tracepb.Span{TraceId: s.Trace[:], SpanId: s.Span[:], Name: s.Name, Kind: tracepb.Span_SpanKind(s.Kind),
			StartTimeUnixNano: uint64(s.Start.UnixNano()), EndTimeUnixNano: uint64(s.End.UnixNano()), Attributes: kv(s.Attrs)}
		if s.Parent.IsValid() {
			ps.ParentSpanId, ps.TraceState = s.Parent[:], string(s.State)
		}
		if s.Error {
			ps.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
		}
		spans = append(spans, ps)
	}
	want := &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: kv(resource)},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: ScopeName}, Spans: spans}},
	}}}
	if !proto.Equal(want, &got) {
		t.Errorf("decoded as\n%s\nwant\n%s", prototext.Format(&got), prototext.Format(want))
	}
}
