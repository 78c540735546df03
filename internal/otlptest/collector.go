// Package otlptest is an OTLP trace collector on loopback for tests: it
// takes OpenTelemetry's gRPC Export and HTTP POST /v1/traces and keeps the
// spans.
package otlptest

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Collector is a running collector.
type Collector struct {
	GRPCAddr, HTTPAddr string
	mu                 sync.Mutex
	exports            []*tracepb.TracesData
	spans              int
	keep               bool // keep the exports, else only count their spans
	changed            chan struct{}
	grpc               *grpc.Server
	http               *http.Server
}

// Start starts a collector for t on 127.0.0.1, keeping what it gets; its
// servers stop with the test.
func Start(t testing.TB) *Collector {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := Serve(gl, hl, true)
	t.Cleanup(c.Close)
	return c
}

// Serve serves OTLP/gRPC on gl and OTLP/HTTP on hl, keeping the exports
// or only counting their spans (Spans is then empty, Count is not).
func Serve(gl, hl net.Listener, keep bool) *Collector {
	c := &Collector{changed: make(chan struct{}, 1), keep: keep}
	c.grpc = grpc.NewServer()
	c.grpc.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var td tracepb.TracesData // the wire form of ExportTraceServiceRequest
			if err := dec(&td); err != nil {
				return nil, err
			}
			c.add(&td)
			return &emptypb.Empty{}, nil
		}}},
	}, struct{}{})
	go c.grpc.Serve(gl)
	c.http = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces, application/x-protobuf", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var td tracepb.TracesData
		if err := proto.Unmarshal(b, &td); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(&td)
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go c.http.Serve(hl)
	c.GRPCAddr, c.HTTPAddr = gl.Addr().String(), hl.Addr().String()
	return c
}

// ServeIn serves a collector on grpcAddr and httpAddr, its sockets made by
// in (a network namespace's Do, say), keeping the exports or counting.
func ServeIn(in func(func() error) error, grpcAddr, httpAddr string, keep bool) (*Collector, error) {
	var col *Collector
	err := in(func() error {
		gl, err := net.Listen("tcp", grpcAddr)
		if err != nil {
			return err
		}
		hl, err := net.Listen("tcp", httpAddr)
		if err != nil {
			gl.Close()
			return err
		}
		col = Serve(gl, hl, keep)
		return nil
	})
	return col, err
}

// Close stops both servers.
func (c *Collector) Close() {
	c.grpc.Stop()
	c.http.Close()
}

// Stop stops the gRPC server now (a collector that went away).
func (c *Collector) Stop() { c.grpc.Stop() }

func (c *Collector) add(td *tracepb.TracesData) {
	c.mu.Lock()
	for _, rs := range td.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans += len(ss.Spans)
		}
	}
	if c.keep {
		c.exports = append(c.exports, td)
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Count is how many spans came so far.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans
}

// Exports are the exports received so far.
func (c *Collector) Exports() []*tracepb.TracesData {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.TracesData(nil), c.exports...)
}

// Span is a received span with its resource's attributes.
type Span struct {
	*tracepb.Span
	Resource map[string]string
}

// Attr is one of the span's string attributes, "" if absent.
func (s Span) Attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// Spans are the spans received so far.
func (c *Collector) Spans() []Span {
	var out []Span
	for _, td := range c.Exports() {
		for _, rs := range td.ResourceSpans {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.Key] = kv.Value.GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out = append(out, Span{s, res})
				}
			}
		}
	}
	return out
}

// WaitCount waits, up to timeout or until ctx ends, for at least n spans
// and returns those it has.
func (c *Collector) WaitCount(ctx context.Context, n int, timeout time.Duration) []Span {
	deadline := time.After(timeout)
	for c.Count() < n {
		select {
		case <-c.changed:
		case <-deadline:
			return c.Spans()
		case <-ctx.Done():
			return c.Spans()
		}
	}
	return c.Spans()
}

// WaitSpans waits up to timeout for at least n spans and returns them.
func (c *Collector) WaitSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if s := c.Spans(); len(s) >= n {
			return s
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("the collector got %d spans in %v, want %d", len(c.Spans()), timeout, n)
		}
	}
}
