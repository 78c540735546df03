package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// tracer compiles a connection manager's tracing: Envoy's sampling
// percentages (random 100, client 100, overall 100 when unset, as in
// Envoy), max_path_tag_length, literal and environment custom tags, and
// the OpenTelemetry provider, whose spans go over OTLP/gRPC to an
// envoy_grpc cluster or over OTLP/HTTP to an http_service. Nil when the
// manager has no tracing.
func (r *resources) tracer(t *hcmv3.HttpConnectionManager_Tracing, path string) *tracing.Tracer {
	if t == nil {
		return nil
	}
	// A percentage unset is 100; one out of range is refused.
	pct := func(p *typev3.Percent, name string) float64 {
		if p == nil {
			return 100
		}
		if v := p.GetValue(); v < 0 || v > 100 {
			r.add(path+"."+name, "invalid: %v is not a percentage", v)
		}
		return p.GetValue()
	}
	tr := &tracing.Tracer{
		Sampling: tracing.Sampling{Random: pct(t.GetRandomSampling(), "random_sampling"),
			Client: pct(t.GetClientSampling(), "client_sampling"), Overall: pct(t.GetOverallSampling(), "overall_sampling")},
		Node:             tracing.Node{ID: r.node},
		MaxPathTagLength: int(t.GetMaxPathTagLength().GetValue()),
	}
	for i, ct := range t.GetCustomTags() {
		switch {
		case ct.GetLiteral() != nil:
			tr.Node.Istio = append(tr.Node.Istio, tracing.Attr{Key: ct.GetTag(), Value: ct.GetLiteral().GetValue()})
		case ct.GetEnvironment() != nil:
			v, ok := os.LookupEnv(ct.GetEnvironment().GetName())
			if !ok {
				v = ct.GetEnvironment().GetDefaultValue()
			}
			tr.Node.Istio = append(tr.Node.Istio, tracing.Attr{Key: ct.GetTag(), Value: v})
		default:
			r.add(fmt.Sprintf("%s.custom_tags[%d]", path, i), "not implemented by shunt: only literal and environment custom tags")
		}
	}
	r.identityTags(tr)
	p := t.GetProvider()
	if p == nil {
		r.add(path+".provider", "invalid: shunt needs a provider (envoy.tracers.opentelemetry) to send spans to")
		return nil
	}
	msg, err := p.GetTypedConfig().UnmarshalNew()
	if err != nil {
		r.add(path+".provider.typed_config", "invalid: %v", err)
		return nil
	}
	otel, ok := msg.(*tracev3.OpenTelemetryConfig)
	if !ok {
		r.add(path+".provider.typed_config", "not implemented by shunt: %s (shunt sends spans over OTLP: envoy.tracers.opentelemetry)", p.GetTypedConfig().MessageName())
		return nil
	}
	if otel.GetServiceName() == "" && r.opt.workload.known() {
		otel.ServiceName = r.opt.workload.CanonicalService + "." + r.opt.workload.Namespace
	}
	cfg, cl := r.otlpExporter(otel, path+".provider.typed_config")
	if cl == nil {
		return nil
	}
	var key string
	tr.Exporter, key = r.opt.exporters.get(cfg, cl)
	r.exporterKeys = append(r.exporterKeys, key)
	return tr
}

// identityTags adds Istio's tags of the sidecar's own workload
// (istio.canonical_service, istio.canonical_revision, istio.namespace,
// istio.cluster_id) that the configuration does not set itself, when the
// sidecar knows its workload (a pod's environment).
func (r *resources) identityTags(tr *tracing.Tracer) {
	w := r.opt.workload
	if !w.known() {
		return
	}
	for _, kv := range []tracing.Attr{{Key: "istio.canonical_revision", Value: w.CanonicalRevision}, {Key: "istio.canonical_service", Value: w.CanonicalService},
		{Key: "istio.cluster_id", Value: w.Cluster}, {Key: "istio.namespace", Value: w.Namespace}} {
		if !slices.ContainsFunc(tr.Node.Istio, func(a tracing.Attr) bool { return a.Key == kv.Key }) {
			tr.Node.Istio = append(tr.Node.Istio, kv)
		}
	}
	slices.SortFunc(tr.Node.Istio, func(a, b tracing.Attr) int { return strings.Compare(a.Key, b.Key) })
}

// otlpExporter is where an OpenTelemetry provider's spans go: the
// cluster of its envoy_grpc service, or its http_service's URI through
// the URI's cluster.
func (r *resources) otlpExporter(o *tracev3.OpenTelemetryConfig, path string) (tracing.ExporterConfig, *cluster) {
	service := o.GetServiceName()
	if service == "" {
		service = "unknown_service:shunt"
	}
	cfg := tracing.ExporterConfig{Resource: []tracing.Attr{{Key: "service.name", Value: service}}}
	var clusterName, cpath string
	switch {
	case o.GetGrpcService() != nil:
		clusterName, cpath = o.GetGrpcService().GetEnvoyGrpc().GetClusterName(), path+".grpc_service.envoy_grpc.cluster_name"
		cfg.Protocol, cfg.Address = tracing.OTLPGRPC, clusterName
	case o.GetHttpService() != nil:
		u := o.GetHttpService().GetHttpUri()
		clusterName, cpath = u.GetCluster(), path+".http_service.http_uri.cluster"
		cfg.Protocol, cfg.Address = tracing.OTLPHTTP, u.GetUri()
		if t := u.GetTimeout(); t != nil {
			cfg.Timeout = t.AsDuration()
		}
	default:
		r.add(path, "invalid: a grpc_service or an http_service is needed")
		return cfg, nil
	}
	cl := r.clusters[clusterName]
	if cl == nil {
		r.add(cpath, "invalid: no cluster named %q", clusterName)
		return cfg, nil
	}
	if cl.kind == originalDst {
		r.add(cpath, "invalid: cluster %q has no endpoints of its own (ORIGINAL_DST)", clusterName)
		return cfg, nil
	}
	cfg.Dial = func(ctx context.Context, _ string) (net.Conn, error) {
		ep, err := cl.pickKey(netip.AddrPort{}, 0, false)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %v", cl.name, err)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ep.String())
	}
	if err := cfg.Check(); err != nil {
		r.add(path, "invalid: %v", err)
		return cfg, nil
	}
	return cfg, cl
}

// exporterSet keeps the proxy's span exporters across reloads: one per
// collector and service name, closed when the proxy stops.
type exporterSet struct {
	mu    sync.Mutex
	all   map[string]*tracing.Exporter
	flush time.Duration // ExporterConfig.FlushInterval
}

func newExporterSet(flush time.Duration) *exporterSet {
	return &exporterSet{all: map[string]*tracing.Exporter{}, flush: flush}
}

// get is the exporter for cfg through cl, started on first use; cfg was
// checked. A reload that keeps the cluster keeps the exporter; one that
// changes it gets a new exporter (the old one idles until the proxy
// stops).
func (s *exporterSet) get(cfg tracing.ExporterConfig, cl *cluster) (*tracing.Exporter, string) {
	key := fmt.Sprintf("%s %p %s %s", cfg.Protocol, cl, cfg.Address, cfg.Resource[0].Value)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.all[key]; e != nil {
		return e, ""
	}
	cfg.FlushInterval = s.flush
	e, err := tracing.NewExporter(cfg)
	if err != nil {
		panic("tracing: a checked exporter configuration failed: " + err.Error())
	}
	s.all[key] = e
	return e, key
}

// drop stops the exporters of keys, which a configuration that was not
// taken started.
func (s *exporterSet) drop(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if e := s.all[k]; e != nil {
			e.Close()
			delete(s.all, k)
		}
	}
}

// each calls f for every exporter, for the stats.
func (s *exporterSet) each(f func(*tracing.Exporter)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.all {
		f(e)
	}
}

// close sends what the exporters hold and stops them.
func (s *exporterSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.all {
		e.Close()
	}
}

// finishSpan exports a request's span if it is sampled: a SERVER span for
// a request coming in (dir Inbound), CLIENT going out, named by its
// route's decorator (rt, nil when none was chosen), else as Envoy names
// it, timed and tagged from the request's record.
func (m *httpManager) finishSpan(c *tracing.SpanContext, dir Direction, rt *route, rec *accesslog.Record, r *tracing.Request) {
	if !c.Sampled {
		return
	}
	kind := tracing.KindClient
	if dir == Inbound {
		kind = tracing.KindServer
	}
	name := tracing.OperationName(kind, rec.Authority)
	if rt != nil && rt.decorator != "" {
		name = rt.decorator
	}
	m.tracer.Finish(c, kind, name, rec.Start, rec.Start.Add(rec.Duration), r)
}
