package tracing_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// headers is a request's headers by lower-case name.
type headers map[string]string

func (h headers) Get(name string) ([]byte, bool) {
	v, ok := h[name]
	return []byte(v), ok
}

const (
	traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
	spanHex  = "00f067aa0ba902b7"
)

func TestExtract(t *testing.T) {
	cases := []struct {
		name    string
		h       headers
		trace   string // "" for none
		span    string
		decided bool
		sampled bool
		formats tracing.Format
	}{
		{"none", headers{}, "", "", false, false, 0},
		{"traceparent sampled", headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-01"}, traceHex, spanHex, true, true, tracing.W3C},
		{"traceparent not sampled", headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-00"}, traceHex, spanHex, true, false, tracing.W3C},
		{"traceparent later version with more", headers{"traceparent": "cc-" + traceHex + "-" + spanHex + "-01-what-comes-next"}, traceHex, spanHex, true, true, tracing.W3C},
		{"traceparent version 00 with more", headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-01-x"}, "", "", false, false, 0},
		{"traceparent version ff", headers{"traceparent": "ff-" + traceHex + "-" + spanHex + "-01"}, "", "", false, false, 0},
		{"traceparent zero trace", headers{"traceparent": "00-" + strings.Repeat("0", 32) + "-" + spanHex + "-01"}, "", "", false, false, 0},
		{"traceparent upper case", headers{"traceparent": "00-" + strings.ToUpper(traceHex) + "-" + spanHex + "-01"}, "", "", false, false, 0},
		{"traceparent short", headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-1"}, "", "", false, false, 0},
		{"b3 multi", headers{"x-b3-traceid": traceHex, "x-b3-spanid": spanHex, "x-b3-sampled": "1"}, traceHex, spanHex, true, true, tracing.B3Multi},
		{"b3 multi 64-bit", headers{"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": spanHex}, "0000000000000000a3ce929d0e0e4736", spanHex, false, false, tracing.B3Multi},
		{"b3 multi debug", headers{"x-b3-traceid": traceHex, "x-b3-spanid": spanHex, "x-b3-flags": "1"}, traceHex, spanHex, true, true, tracing.B3Multi},
		{"b3 multi old true", headers{"x-b3-traceid": traceHex, "x-b3-spanid": spanHex, "x-b3-sampled": "false"}, traceHex, spanHex, true, false, tracing.B3Multi},
		{"b3 sampled alone", headers{"x-b3-sampled": "0"}, "", "", true, false, tracing.B3Multi},
		{"b3 multi bad span", headers{"x-b3-traceid": traceHex, "x-b3-spanid": "xyz"}, "", "", false, false, 0},
		{"b3 single", headers{"b3": traceHex + "-" + spanHex + "-1-" + "b7ad6b7169203331"}, traceHex, spanHex, true, true, tracing.B3Single},
		{"b3 single no sampling", headers{"b3": traceHex + "-" + spanHex}, traceHex, spanHex, false, false, tracing.B3Single},
		{"b3 single debug", headers{"b3": traceHex + "-" + spanHex + "-d"}, traceHex, spanHex, true, true, tracing.B3Single},
		{"b3 single deny only", headers{"b3": "0"}, "", "", true, false, tracing.B3Single},
		{"b3 single bad", headers{"b3": traceHex + "-" + spanHex + "-7"}, "", "", false, false, 0},
		{"w3c wins, b3 joins", headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-00", "x-b3-traceid": "1111111111111111", "x-b3-spanid": "2222222222222222", "x-b3-sampled": "1"},
			traceHex, spanHex, true, false, tracing.W3C | tracing.B3Multi},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := tracing.Extract(c.h)
			gotTrace, gotSpan := "", ""
			if p.HasTrace() {
				gotTrace, gotSpan = p.Trace.String(), p.Span.String()
			}
			if gotTrace != c.trace || gotSpan != c.span || p.Decided != c.decided || p.Sampled != c.sampled || p.Formats != c.formats {
				t.Errorf("Extract = trace %q span %q decided %v sampled %v formats %b; want %q %q %v %v %b",
					gotTrace, gotSpan, p.Decided, p.Sampled, p.Formats, c.trace, c.span, c.decided, c.sampled, c.formats)
			}
		})
	}
}

// TestInjectRoundTrip: what a sidecar sends on reads back, in every
// format, as a child of the span it made.
func TestInjectRoundTrip(t *testing.T) {
	in := headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-01", "tracestate": "vendor=x",
		"b3": traceHex + "-" + spanHex + "-1", "x-b3-traceid": traceHex, "x-b3-spanid": spanHex, "x-b3-sampled": "1"}
	p := tracing.Extract(in)
	c := tracing.NewContext(&p, tracing.Decision{Sampled: true})
	if c.Trace != p.Trace || c.Parent != p.Span || c.Span == p.Span || !c.Span.IsValid() {
		t.Fatalf("child context %+v of %+v", c, p)
	}
	fields, _ := c.AppendFields(nil, make([]byte, 0, tracing.FieldsSize))
	out := headers{}
	for _, f := range fields {
		out[string(f.Name)] = string(f.Value)
	}
	want := headers{
		"traceparent":  "00-" + traceHex + "-" + c.Span.String() + "-01",
		"b3":           traceHex + "-" + c.Span.String() + "-1-" + spanHex,
		"x-b3-traceid": traceHex, "x-b3-spanid": c.Span.String(), "x-b3-parentspanid": spanHex, "x-b3-sampled": "1",
	}
	if fmt.Sprint(out) != fmt.Sprint(want) {
		t.Fatalf("sent on\n%v\nwant\n%v", out, want)
	}
	for _, only := range []string{"traceparent", "b3"} {
		next := tracing.Extract(headers{only: out[only]})
		if next.Trace != c.Trace || next.Span != c.Span || !next.Sampled {
			t.Errorf("%s read back as %+v, want trace %s span %s sampled", only, next, c.Trace, c.Span)
		}
	}
	// A trace starting here goes on in W3C and B3's headers.
	root := tracing.NewContext(&tracing.Parent{}, tracing.Decision{})
	fields, _ = root.AppendFields(nil, nil)
	var names []string
	for _, f := range fields {
		names = append(names, string(f.Name))
	}
	if got := strings.Join(names, " "); got != "traceparent x-b3-traceid x-b3-spanid x-b3-sampled" || root.Parent.IsValid() || !root.Trace.IsValid() {
		t.Errorf("a new trace sends %s (parent %v)", got, root.Parent)
	}
}

func TestDecide(t *testing.T) {
	s := tracing.IstioSampling
	sampledParent := "00-" + traceHex + "-" + spanHex + "-01"
	unsampledParent := "00-" + traceHex + "-" + spanHex + "-00"
	cases := []struct {
		name   string
		s      tracing.Sampling
		h      headers
		want   bool
		reason tracing.Reason
	}{
		{"force", s, headers{"x-envoy-force-trace": "1", "traceparent": unsampledParent}, true, tracing.ServiceForced},
		{"parent sampled", tracing.Sampling{Overall: 100}, headers{"traceparent": sampledParent}, true, tracing.RandomSampled},
		{"parent not sampled", tracing.Sampling{Random: 100, Client: 100, Overall: 100}, headers{"traceparent": unsampledParent}, false, tracing.NotTraceable},
		{"client trace id", s, headers{"x-client-trace-id": "abc", "x-request-id": "ffffffff-0000-4000-8000-000000000000"}, true, tracing.ClientForced},
		{"client trace id, client 0", tracing.Sampling{Random: 100, Client: 0, Overall: 100}, headers{"x-client-trace-id": "abc"}, false, tracing.NotTraceable},
		{"random under 1%", s, headers{"x-request-id": "00000063-0000-4000-8000-000000000000"}, true, tracing.RandomSampled}, // 99 % 10000 < 100
		{"random over 1%", s, headers{"x-request-id": "00000064-0000-4000-8000-000000000000"}, false, tracing.NotTraceable},  // 100
		{"overall 0", tracing.Sampling{Random: 100, Client: 100, Overall: 0}, headers{}, false, tracing.NotTraceable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := tracing.Extract(c.h)
			d := c.s.Decide(c.h, &p)
			if d.Sampled != c.want || d.Reason != c.reason {
				t.Errorf("Decide = %+v, want sampled %v reason %v", d, c.want, c.reason)
			}
		})
	}
}

// TestSamplingRate: over 20,000 requests with random request IDs the
// share sampled is the rate, within a percentage point; and the same
// request ID gets the same decision at every hop.
func TestSamplingRate(t *testing.T) {
	const n = 20000
	for _, rate := range []float64{1, 10, 50} {
		s := tracing.Sampling{Random: rate, Client: 100, Overall: 100}
		sampled := 0
		for range n {
			id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", rand.Uint32())
			h := headers{"x-request-id": id}
			p := tracing.Extract(h)
			d := s.Decide(h, &p)
			if d.Sampled {
				sampled++
			}
			if again := s.Decide(h, &p); again != d {
				t.Fatalf("request %s decided %v then %v", id, d, again)
			}
		}
		got := 100 * float64(sampled) / n
		if got < rate-1 || got > rate+1 {
			t.Errorf("rate %v%%: sampled %.2f%% of %d", rate, got, n)
		}
	}
}

func TestExportBothProtocols(t *testing.T) {
	col := otlptest.Start(t)
	for _, c := range []struct {
		proto tracing.Protocol
		addr  string
	}{{tracing.OTLPGRPC, col.GRPCAddr}, {tracing.OTLPHTTP, col.HTTPAddr}, {tracing.OTLPHTTP, "http://" + col.HTTPAddr}} {
		e, err := tracing.NewExporter(tracing.ExporterConfig{Protocol: c.proto, Address: c.addr, FlushInterval: time.Hour,
			Resource: []tracing.Attr{{"service.name", "productpage.default"}}})
		if err != nil {
			t.Fatal(err)
		}
		before := len(col.Spans())
		tr := tracing.Tracer{Sampling: tracing.Sampling{Random: 100, Client: 100, Overall: 100},
			Node: tracing.Node{ID: "sidecar~10.0.0.1~p.default~default.svc.cluster.local", Istio: []tracing.Attr{{"istio.namespace", "default"}}}, Exporter: e}
		h := headers{"traceparent": "00-" + traceHex + "-" + spanHex + "-01", "x-request-id": "r1"}
		ctx, _ := tr.Start(h)
		start := time.Now()
		tr.Finish(&ctx, tracing.KindClient, "egress backend:10000", start, start.Add(3*time.Millisecond), &tracing.Request{
			Method: "GET", Scheme: "http", Authority: "backend:10000", Path: "/test", Protocol: "HTTP/1.1", RequestID: "r1",
			Status: 503, Flags: "UF", UpstreamCluster: "outbound|10000||backend.default.svc.cluster.local", PeerAddress: "10.0.0.1:5555"})
		e.Flush()
		if e.Sent.Load() != 1 || e.Failed.Load() != 0 {
			t.Fatalf("%s %s: sent %d failed %d (%s)", c.proto, c.addr, e.Sent.Load(), e.Failed.Load(), e.LastError())
		}
		spans := col.Spans()[before:]
		if len(spans) != 1 {
			t.Fatalf("%s: collector got %d spans", c.proto, len(spans))
		}
		s := spans[0]
		checks := map[string][2]string{
			"trace":         {fmt.Sprintf("%x", s.TraceId), traceHex},
			"parent":        {fmt.Sprintf("%x", s.ParentSpanId), spanHex},
			"span":          {fmt.Sprintf("%x", s.SpanId), ctx.Span.String()},
			"name":          {s.Name, "egress backend:10000"},
			"kind":          {s.Kind.String(), "SPAN_KIND_CLIENT"},
			"status":        {s.GetStatus().GetCode().String(), "STATUS_CODE_ERROR"},
			"duration":      {fmt.Sprint(time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano)), "3ms"},
			"service.name":  {s.Resource["service.name"], "productpage.default"},
			"http.url":      {s.Attr("http.url"), "http://backend:10000/test"},
			"status_code":   {s.Attr("http.status_code"), "503"},
			"flags":         {s.Attr("response_flags"), "UF"},
			"error":         {s.Attr("error"), "true"},
			"upstream":      {s.Attr("upstream_cluster"), "outbound|10000||backend.default.svc.cluster.local"},
			"node":          {s.Attr("node_id"), "sidecar~10.0.0.1~p.default~default.svc.cluster.local"},
			"istio":         {s.Attr("istio.namespace"), "default"},
			"guid":          {s.Attr("guid:x-request-id"), "r1"},
			"component":     {s.Attr("component"), "proxy"},
			"peer.address":  {s.Attr("peer.address"), "10.0.0.1:5555"},
			"response_size": {s.Attr("response_size"), "0"},
		}
		for what, v := range checks {
			if v[0] != v[1] {
				t.Errorf("%s: %s = %q, want %q", c.proto, what, v[0], v[1])
			}
		}
		e.Close()
	}
}

// TestExportNeverBlocks: a collector that hangs, or is not there, costs a
// bounded queue and counters: Export returns at once, every span is
// either sent, dropped (counted) or lost to a failed export (counted).
func TestExportNeverBlocks(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		var held []net.Conn
		for {
			c, err := hung.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, proto := range []tracing.Protocol{tracing.OTLPGRPC, tracing.OTLPHTTP} {
		for _, addr := range []string{hung.Addr().String(), refused} {
			// One span a batch: the first export hangs (or fails) while the
			// rest fill the queue of ten.
			e, err := tracing.NewExporter(tracing.ExporterConfig{Protocol: proto, Address: addr, QueueSize: 10, MaxBatch: 1,
				FlushInterval: time.Hour, Timeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			for range 1000 {
				e.Export(&tracing.Span{})
			}
			if addr == hung.Addr().String() && e.Dropped.Load() < 1000-12 {
				t.Errorf("%s, hung collector: dropped %d of 1000 with a queue of 10", proto, e.Dropped.Load())
			}
			e.Close()
			sent, dropped, failed := e.Sent.Load(), e.Dropped.Load(), e.Failed.Load()
			if sent != 0 || dropped+failed != 1000 || failed == 0 || e.LastError() == "" {
				t.Errorf("%s to %s: sent %d dropped %d failed %d (%q): want none sent, all dropped or failed",
					proto, addr, sent, dropped, failed, e.LastError())
			}
		}
	}
}

func TestExporterConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  tracing.ExporterConfig
		want string
	}{
		{tracing.ExporterConfig{}, "no collector address"},
		{tracing.ExporterConfig{Address: "collector"}, "collector"},
		{tracing.ExporterConfig{Address: "http://c:4317"}, "want host:port"},
		{tracing.ExporterConfig{Protocol: "http", Address: "https://c:4318"}, "only http://"},
		{tracing.ExporterConfig{Protocol: "zipkin", Address: "c:9411"}, `protocol "zipkin"`},
	} {
		_, err := tracing.NewExporter(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.cfg, err, c.want)
		}
	}
}
