package tracing

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// ScopeName is the instrumentation scope of the sidecar's spans.
const ScopeName = "shunt"

// The field numbers of OTLP's messages (opentelemetry/proto/trace/v1,
// common/v1, resource/v1) the exporter writes. TracesData has the wire
// form of ExportTraceServiceRequest: both are repeated ResourceSpans,
// field 1.
const (
	fTracesResourceSpans = 1 // TracesData.resource_spans
	fResourceSpansRes    = 1 // ResourceSpans.resource
	fResourceSpansScope  = 2 // ResourceSpans.scope_spans
	fResourceAttributes  = 1 // Resource.attributes
	fScopeSpansScope     = 1 // ScopeSpans.scope
	fScopeSpansSpans     = 2 // ScopeSpans.spans
	fScopeName           = 1 // InstrumentationScope.name
	fSpanTraceID         = 1
	fSpanSpanID          = 2
	fSpanTraceState      = 3
	fSpanParentSpanID    = 4
	fSpanName            = 5
	fSpanKind            = 6
	fSpanStart           = 7 // fixed64
	fSpanEnd             = 8 // fixed64
	fSpanAttributes      = 9
	fSpanStatus          = 15
	fStatusCode          = 3
	fKeyValueKey         = 1
	fKeyValueValue       = 2
	fAnyValueString      = 1
	statusCodeError      = 2 // Status.STATUS_CODE_ERROR
	nestedLengthReserve  = 5 // bytes a message's length may take (below 2^35)
)

// appendTracesData appends the OTLP encoding of a batch of spans from one
// sidecar: one ResourceSpans of one ScopeSpans. It writes the wire form
// directly, so a batch costs its buffer and no message objects.
func appendTracesData(b []byte, resource []Attr, batch []*Span) []byte {
	b, rs := openMessage(b, fTracesResourceSpans)
	b, res := openMessage(b, fResourceSpansRes)
	for _, a := range resource {
		b = appendKeyValue(b, fResourceAttributes, a)
	}
	b = closeMessage(b, res)
	b, ss := openMessage(b, fResourceSpansScope)
	b, scope := openMessage(b, fScopeSpansScope)
	b = appendString(b, fScopeName, ScopeName)
	b = closeMessage(b, scope)
	for _, s := range batch {
		b = appendSpan(b, s)
	}
	b = closeMessage(b, ss)
	return closeMessage(b, rs)
}

func appendSpan(b []byte, s *Span) []byte {
	b, span := openMessage(b, fScopeSpansSpans)
	b = appendBytes(b, fSpanTraceID, s.Trace[:])
	b = appendBytes(b, fSpanSpanID, s.Span[:])
	if len(s.State) > 0 {
		b = appendBytes(b, fSpanTraceState, s.State)
	}
	if s.Parent.IsValid() {
		b = appendBytes(b, fSpanParentSpanID, s.Parent[:])
	}
	b = appendString(b, fSpanName, s.Name)
	b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.Kind))
	b = protowire.AppendTag(b, fSpanStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.Start.UnixNano()))
	b = protowire.AppendTag(b, fSpanEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.End.UnixNano()))
	for _, a := range s.Attrs {
		b = appendKeyValue(b, fSpanAttributes, a)
	}
	if s.Error {
		var st int
		b, st = openMessage(b, fSpanStatus)
		b = protowire.AppendTag(b, fStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, statusCodeError)
		b = closeMessage(b, st)
	}
	return closeMessage(b, span)
}

// appendKeyValue appends a KeyValue of a string value as field num.
func appendKeyValue(b []byte, num protowire.Number, a Attr) []byte {
	b, kv := openMessage(b, num)
	b = appendString(b, fKeyValueKey, a.Key)
	b, v := openMessage(b, fKeyValueValue)
	b = appendString(b, fAnyValueString, a.Value)
	b = closeMessage(b, v)
	return closeMessage(b, kv)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// openMessage starts an embedded message as field num: its tag, and room
// for its length, which closeMessage fills in once the message is
// written (start is where the message begins).
func openMessage(b []byte, num protowire.Number) (out []byte, start int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, make([]byte, nestedLengthReserve)...)
	return b, len(b)
}

// closeMessage writes the length of the message begun at start, in the
// room openMessage left, and closes the gap the length did not need.
func closeMessage(b []byte, start int) []byte {
	n := len(b) - start
	size := protowire.SizeVarint(uint64(n))
	lenAt := start - nestedLengthReserve
	protowire.AppendVarint(b[lenAt:lenAt], uint64(n))
	if size < nestedLengthReserve {
		copy(b[lenAt+size:], b[start:])
		b = b[:len(b)-(nestedLengthReserve-size)]
	}
	return b
}
