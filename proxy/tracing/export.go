package tracing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
)

// ExportMethod is OTLP's gRPC method. Its request,
// ExportTraceServiceRequest, has the wire form of TracesData (both are
// repeated ResourceSpans, field 1), which the exporter sends.
const ExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// Protocol is how spans go to the collector.
type Protocol string

// OTLP's transports.
const (
	OTLPGRPC Protocol = "grpc" // opentelemetry.proto.collector.trace.v1.TraceService/Export
	OTLPHTTP Protocol = "http" // POST /v1/traces, application/x-protobuf
)

// ExporterConfig configures an Exporter.
type ExporterConfig struct {
	Protocol Protocol
	// Address is the collector's host:port; for OTLP/HTTP it may be a URL
	// (http://host:port/path), else the path is /v1/traces. With Dial set,
	// a gRPC address is only the name the collector is asked by.
	Address string
	// Resource is the sidecar's resource attributes (service.name first).
	Resource []Attr
	// FlushInterval sends what is queued at least this often (Envoy's
	// OpenTelemetry tracer: 5s); MaxBatch spans make a batch go at once.
	FlushInterval time.Duration
	MaxBatch      int
	// QueueSize bounds the spans waiting: past it, spans are dropped and
	// counted, never waited for.
	QueueSize int
	// Timeout bounds one export.
	Timeout time.Duration
	// Dial, if set, makes the exporter's connections (tests).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Defaults: Envoy's OpenTelemetry tracer flushes every 5 s; the batch and
// queue sizes are the OpenTelemetry SDKs' batch span processor's.
const (
	DefaultFlushInterval = 5 * time.Second
	DefaultMaxBatch      = 512
	DefaultQueueSize     = 2048
	DefaultTimeout       = 10 * time.Second
)

// Exporter sends finished spans to an OTLP collector in batches, from its
// own goroutine: a request only queues its span, and a full queue (a slow
// or dead collector) drops it and counts the drop.
type Exporter struct {
	cfg   ExporterConfig
	q     chan *Span
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	send  func(ctx context.Context, body []byte) error
	buf   []byte // the batch's encoding, reused
	conn  *grpc.ClientConn
	close sync.Once
	// Sent, Dropped and Failed count spans: delivered, turned away by a
	// full queue, lost to a failed export.
	Sent, Dropped, Failed atomic.Uint64
	// Exports and ExportFailures count export calls.
	Exports, ExportFailures atomic.Uint64
	lastErr                 atomic.Pointer[string]
}

// Check says what is wrong with cfg, if anything.
func (cfg *ExporterConfig) Check() error {
	if cfg.Address == "" {
		return errors.New("tracing: no collector address")
	}
	switch cfg.Protocol {
	case OTLPGRPC, "":
		if strings.Contains(cfg.Address, "://") {
			return fmt.Errorf("tracing: OTLP/gRPC collector address %q: want host:port", cfg.Address)
		}
		if _, _, err := net.SplitHostPort(cfg.Address); err != nil && cfg.Dial == nil {
			return fmt.Errorf("tracing: collector address %q: %v", cfg.Address, err)
		}
	case OTLPHTTP:
		_, err := tracesURL(cfg.Address)
		return err
	default:
		return fmt.Errorf("tracing: protocol %q: want grpc or http", cfg.Protocol)
	}
	return nil
}

// NewExporter checks cfg and starts the exporter; Close stops it.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	e := &Exporter{cfg: cfg, q: make(chan *Span, cfg.QueueSize), flush: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Protocol == OTLPHTTP {
		url, _ := tracesURL(cfg.Address)
		tr := &http.Transport{MaxIdleConns: 2, IdleConnTimeout: time.Minute}
		if cfg.Dial != nil {
			tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return cfg.Dial(ctx, addr) }
		}
		client := &http.Client{Transport: tr}
		e.send = func(ctx context.Context, body []byte) error {
			return postOTLP(ctx, client, url, body)
		}
	} else {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if cfg.Dial != nil {
			opts = append(opts, grpc.WithContextDialer(cfg.Dial))
		}
		conn, err := grpc.NewClient("passthrough:///"+cfg.Address, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: collector %s: %v", cfg.Address, err)
		}
		e.conn = conn
		e.send = func(ctx context.Context, body []byte) error {
			// The response's partial_success is not read: a collector
			// that rejects some spans still took the export.
			return conn.Invoke(ctx, ExportMethod, body, nil, grpc.ForceCodecV2(rawCodec{}))
		}
	}
	go e.run()
	return e, nil
}

// tracesURL is the OTLP/HTTP endpoint for an address: a host:port gets
// http:// and /v1/traces, a URL without a path gets /v1/traces.
func tracesURL(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", fmt.Errorf("tracing: collector address %q: %v", addr, err)
		}
		return "http://" + addr + "/v1/traces", nil
	}
	scheme, rest, _ := strings.Cut(addr, "://")
	if scheme != "http" {
		return "", fmt.Errorf("tracing: collector URL %q: only http:// (the sidecar's mTLS does not cover its own collector)", addr)
	}
	if !strings.Contains(rest, "/") {
		return addr + "/v1/traces", nil
	}
	return addr, nil
}

func postOTLP(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("collector answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Export queues a finished span; it never waits.
func (e *Exporter) Export(s *Span) {
	select {
	case e.q <- s:
	default:
		e.Dropped.Add(1)
	}
}

// Flush sends what is queued now and returns when that export has ended.
func (e *Exporter) Flush() {
	ack := make(chan struct{})
	select {
	case e.flush <- ack:
		<-ack
	case <-e.done:
	}
}

// LastError is the last failed export's error, "" if none failed.
func (e *Exporter) LastError() string {
	if p := e.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Close sends what is queued, within the export timeout, and stops.
func (e *Exporter) Close() {
	e.close.Do(func() {
		close(e.stop)
		<-e.done
		if e.conn != nil {
			e.conn.Close()
		}
	})
}

func (e *Exporter) run() {
	defer close(e.done)
	t := time.NewTicker(e.cfg.FlushInterval)
	defer t.Stop()
	batch := make([]*Span, 0, e.cfg.MaxBatch)
	for {
		select {
		case s := <-e.q:
			batch = e.add(batch, s)
		case <-t.C:
			batch = e.send1(batch)
		case ack := <-e.flush:
			batch = e.drain(batch)
			close(ack)
		case <-e.stop:
			e.drain(batch)
			return
		}
	}
}

// add puts s in the batch, which goes once full.
func (e *Exporter) add(batch []*Span, s *Span) []*Span {
	batch = append(batch, s)
	if len(batch) >= e.cfg.MaxBatch {
		batch = e.send1(batch)
	}
	return batch
}

// drain sends the batch and everything queued.
func (e *Exporter) drain(batch []*Span) []*Span {
	for {
		select {
		case s := <-e.q:
			batch = e.add(batch, s)
		default:
			return e.send1(batch)
		}
	}
}

// send1 exports a batch and returns it emptied.
func (e *Exporter) send1(batch []*Span) []*Span {
	if len(batch) == 0 {
		return batch
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Timeout)
	e.buf = appendTracesData(e.buf[:0], e.cfg.Resource, batch)
	err := e.send(ctx, e.buf)
	cancel()
	e.Exports.Add(1)
	if err != nil {
		e.ExportFailures.Add(1)
		e.Failed.Add(uint64(len(batch)))
		msg := err.Error()
		e.lastErr.Store(&msg)
	} else {
		e.Sent.Add(uint64(len(batch)))
	}
	clear(batch)
	return batch[:0]
}

// rawCodec sends a request already in its wire form ([]byte) and reads
// nothing of the answer: the exporter encodes OTLP itself.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }

// Name is the content subtype, proto's: the collector reads protobuf.
func (rawCodec) Name() string { return "proto" }
