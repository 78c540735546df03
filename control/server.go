package control

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/xds"
)

// GCPercent is the Go collector's target the control plane runs with
// (GOGC): its heap is mostly the compiled configuration, long-lived, so
// collecting a little sooner than Go's 100 costs no measurable CPU and
// keeps RSS down (bench/control, 200 sidecars: 208 -> 188 MB).
const GCPercent = 70

// TuneGC sets the collector's target to GCPercent, unless $GOGC says.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
}

// DefaultPushThrottle is how many large answers (a sidecar's whole
// configuration of a type, as at its first sync) may be in flight at
// once; the rest wait for one to be taken. Istio's PILOT_PUSH_THROTTLE
// is 100 pushes; each holds its marshaled bytes until taken.
const DefaultPushThrottle = 32

// Istio's debounce of configuration changes: a push waits for 100ms
// without change (PILOT_DEBOUNCE_AFTER), at most 10s (PILOT_DEBOUNCE_MAX).
const (
	DefaultDebounceAfter = 100 * time.Millisecond
	DefaultDebounceMax   = 10 * time.Second
)

// Server serves each connected sidecar its compiled resources over ADS
// (state of the world and delta), recompiling them, debounced, when the
// world changes; a type is pushed only when its resources changed.
type Server struct {
	compiler *Compiler
	log      *slog.Logger
	after    time.Duration
	max      time.Duration
	cache    *xdsCache
	xds      server.Server
	changed  chan time.Time
	metrics  *metrics
	pushMu   sync.Mutex // one compile and cache update at a time, so the newest world is set last
	mu       sync.Mutex
	world    *World                 // what the sidecars were last pushed
	next     *World                 // world with the changes not pushed yet; nil when none
	nodes    map[string]*proxyState // by node id
	streams  map[int64]string       // stream to node id
	firstSet time.Time              // the oldest change not yet pushed
}

// NewServer is a server of w's resources under mesh, pushing changes
// after, at most max after the first of a burst.
func NewServer(mesh Mesh, w *World, after, max time.Duration, log *slog.Logger) (*Server, error) {
	compiler, err := NewCompiler(mesh)
	if err != nil {
		return nil, err
	}
	compiler.SetLog(log)
	if after <= 0 || max < after {
		return nil, fmt.Errorf("debounce %s, at most %s: want 0 < after <= max", after, max)
	}
	s := &Server{compiler: compiler, log: log, after: after, max: max, world: w, changed: make(chan time.Time, 1),
		nodes: map[string]*proxyState{}, streams: map[int64]string{}, metrics: newMetrics()}
	s.cache = newXDSCache(DefaultPushThrottle)
	s.xds = server.NewServer(context.Background(), s.cache, server.CallbackFuncs{
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { s.closed(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.closed(id) },
		StreamRequestFunc:     s.request,
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			s.sent(id, r.GetTypeUrl(), r.GetVersionInfo())
		},
		StreamDeltaRequestFunc: s.deltaRequest,
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			s.sent(id, r.GetTypeUrl(), r.GetSystemVersionInfo())
		},
	})
	s.metrics.services.Set(float64(len(w.Services)))
	compiler.Survey(w)
	return s, nil
}

// NewGRPCServer is the gRPC server the control plane serves on. Its
// buffers are not pooled: a push's messages are big (a sidecar's whole
// configuration at first) and come in bursts, and a pool would keep a
// burst's buffers, hundreds of MB for 200 sidecars, long after it.
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{experimental.BufferPool(mem.NopBufferPool{}),
		grpc.ForceServerCodecV2(unpooledCodec{})}, opts...)...)
}

// unpooledCodec is gRPC's protobuf codec without its buffer pool: a
// message's bytes are garbage once sent.
type unpooledCodec struct{}

func (unpooledCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (unpooledCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (unpooledCodec) Name() string { return "proto" }

// Register serves ADS on g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Namespaces are the cluster's namespaces as the world has them now
// (changes not pushed yet included), copied under the lock that guards
// the world being changed.
func (s *Server) Namespaces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.world
	if s.next != nil {
		w = s.next
	}
	return slices.Collect(maps.Keys(w.Namespaces))
}

// World is the world the resources are compiled from now (changes made
// by Update and not pushed yet included).
func (s *Server) World() *World {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next != nil {
		return s.next
	}
	return s.world
}

// SetWorld replaces the world; the sidecars get what changed once the
// changes settle.
func (s *Server) SetWorld(w *World) {
	s.Update(func(next *World) { *next = *w })
}

// Update changes the world with change, which must not keep next; the
// sidecars get what changed once the changes settle. Changes between
// two pushes share one copy of the world.
func (s *Server) Update(change func(next *World)) {
	s.mu.Lock()
	if s.next == nil {
		s.next = s.world.Clone()
	}
	change(s.next)
	if s.firstSet.IsZero() {
		s.firstSet = time.Now()
	}
	n := len(s.next.Services)
	s.mu.Unlock()
	s.metrics.services.Set(float64(n))
	select {
	case s.changed <- time.Now():
	default:
	}
}

// Run pushes changes, debounced, until ctx ends.
func (s *Server) Run(ctx context.Context) {
	for {
		var first time.Time
		select {
		case <-ctx.Done():
			return
		case first = <-s.changed:
		}
		quiet := time.NewTimer(s.after)
		deadline := time.NewTimer(s.max - time.Since(first))
	settle:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				deadline.Stop()
				return
			case <-s.changed:
				quiet.Reset(s.after)
			case <-quiet.C:
				break settle
			case <-deadline.C:
				break settle
			}
		}
		quiet.Stop()
		deadline.Stop()
		s.metrics.debounce.Observe(time.Since(first).Seconds())
		s.pushAll()
	}
}

// pushAll recompiles every connected sidecar's resources.
func (s *Server) pushAll() {
	s.mu.Lock()
	since := s.firstSet
	s.firstSet = time.Time{}
	if s.next != nil {
		s.world, s.next = s.next, nil
	}
	world := s.world
	ids := make([]string, 0, len(s.nodes))
	for id := range s.nodes {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	s.compiler.Survey(world)
	for _, id := range ids {
		if err := s.push(id); err != nil {
			s.log.Error("push", "proxy", id, "err", err)
		}
	}
	s.cache.endRound()
	if !since.IsZero() {
		s.metrics.convergence.Observe(time.Since(since).Seconds())
	}
}

// push compiles a sidecar's resources and puts them in the cache, each
// type versioned by its content so that only what changed is sent.
func (s *Server) push(id string) error {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.mu.Lock()
	st := s.nodes[id]
	w := s.world
	s.mu.Unlock()
	if st == nil {
		return nil
	}
	start := time.Now()
	res := s.compiler.Compile(w, st.node)
	states := res.states()
	s.mu.Lock()
	st.resources = res
	s.mu.Unlock()
	s.cache.set(id, states)
	s.metrics.pushTime.Observe(time.Since(start).Seconds())
	return nil
}

// request is a state-of-the-world request: the stream's first names the
// sidecar, whose resources are compiled before its watch is opened; an
// ACK or NACK is recorded.
func (s *Server) request(id int64, r *discoveryv3.DiscoveryRequest) error {
	if err := s.opened(id, r.GetNode()); err != nil {
		return err
	}
	s.acked(id, r.GetTypeUrl(), r.GetVersionInfo(), r.GetErrorDetail().GetMessage())
	return nil
}

func (s *Server) deltaRequest(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
	if err := s.opened(id, r.GetNode()); err != nil {
		return err
	}
	s.acked(id, r.GetTypeUrl(), "", r.GetErrorDetail().GetMessage())
	return nil
}

// opened notes the sidecar behind a stream, at its first request.
func (s *Server) opened(id int64, n *corev3.Node) error {
	s.mu.Lock()
	if _, ok := s.streams[id]; ok {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	node, err := ParseNode(n)
	if err != nil {
		s.log.Warn("xDS stream refused", "err", err)
		return err
	}
	s.mu.Lock()
	s.streams[id] = node.ID
	st := s.nodes[node.ID]
	if st == nil {
		st = &proxyState{node: node, connected: time.Now(), sent: map[string]string{}, acks: map[string]string{}, nacks: map[string]string{}}
		s.nodes[node.ID] = st
	}
	st.streams++
	s.mu.Unlock()
	s.metrics.proxies.Inc()
	s.log.Info("sidecar connected", "proxy", node.ID)
	return s.push(node.ID)
}

// closed forgets a stream, and its sidecar with its last.
func (s *Server) closed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeID, ok := s.streams[id]
	if !ok {
		return
	}
	delete(s.streams, id)
	s.metrics.proxies.Dec()
	if st := s.nodes[nodeID]; st != nil {
		if st.streams--; st.streams == 0 {
			delete(s.nodes, nodeID)
			s.cache.clear(nodeID)
			s.log.Info("sidecar disconnected", "proxy", nodeID)
		}
	}
}

func (s *Server) acked(id int64, typeURL, version, nack string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.nodes[s.streams[id]]
	if st == nil || typeURL == "" {
		return
	}
	if nack != "" {
		st.nacks[typeURL] = nack
		s.metrics.rejects.WithLabelValues(shortName(typeURL)).Inc()
		s.log.Warn("configuration refused", "proxy", st.node.ID, "type", shortName(typeURL), "err", nack)
		return
	}
	delete(st.nacks, typeURL)
	if version != "" {
		st.acks[typeURL] = version
	}
}

func (s *Server) sent(id int64, typeURL, version string) {
	s.metrics.pushes.WithLabelValues(shortName(typeURL)).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.nodes[s.streams[id]]; st != nil {
		st.sent[typeURL] = version
	}
}

// shortName is Istio's name of a type in its metrics: lds, rds, cds, eds.
func shortName(typeURL string) string {
	switch typeURL {
	case xds.ListenerType:
		return "lds"
	case xds.RouteType:
		return "rds"
	case xds.ClusterType:
		return "cds"
	case xds.EndpointType:
		return "eds"
	}
	return typeURL
}
