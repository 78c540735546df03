package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
)

// Istio's standard metrics, with its names, labels and (Envoy's default)
// histogram buckets, so that existing dashboards and alerts work.
var (
	peerLabels = []string{"reporter",
		"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
		"source_principal", "source_app", "source_version", "source_cluster",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
		"destination_version", "destination_service", "destination_canonical_service", "destination_canonical_revision",
		"destination_service_name", "destination_service_namespace", "destination_cluster"}
	requestLabels = append(append([]string(nil), peerLabels...),
		"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy")
	tcpLabels = append(append([]string(nil), peerLabels...),
		"request_protocol", "response_flags", "connection_security_policy")
	envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
)

// maxSeries bounds the label sets kept: past it, destination_service
// (the Host a client sent) is "unknown", so hostile Host headers cannot
// grow the metrics without end.
const maxSeries = 10000

type istioMetrics struct {
	self Workload
	// services are the services a cluster's metadata names (Istio's
	// istio.services), by cluster name.
	services  func(cluster string) []envoyres.ServiceRef
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reqBytes  *prometheus.HistogramVec
	respBytes *prometheus.HistogramVec
	tcpSent   *prometheus.CounterVec
	tcpRecv   *prometheus.CounterVec
	tcpOpened *prometheus.CounterVec
	tcpClosed *prometheus.CounterVec

	mu       sync.Mutex
	requestS atomic.Pointer[map[requestKey]*requestSeries] // copied on write
	tcpS     atomic.Pointer[map[tcpKey]*tcpSeries]
}

// requestKey is what varies between a request's label sets.
type requestKey struct {
	dir                 Direction
	code                int
	flags               accesslog.Flags
	grpc                bool
	grpcStatus, service string
	serviceName         string
	principals
	// peer is the workload at the other end when the metadata exchange
	// named it (one pointer per peer), else nil.
	peer *Workload
}

// principals are an inbound mutual TLS connection's: the client's SPIFFE
// ID (source_principal) and the proxy's own (destination_principal);
// empty for plaintext, and outbound.
type principals struct{ peer, local string }

type requestSeries struct {
	count                        prometheus.Counter
	duration, reqBytes, rspBytes prometheus.Observer
}

type tcpKey struct {
	dir         Direction
	flags       accesslog.Flags
	serviceName string
	principals
}

type tcpSeries struct {
	sent, received, opened, closed prometheus.Counter
}

func newIstioMetrics(self Workload) *istioMetrics {
	m := &istioMetrics{
		self: self,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "Requests handled, by source, destination, protocol, response code and flags."}, requestLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help: "Request durations, first byte in to last byte out.", Buckets: envoyBuckets}, requestLabels),
		reqBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_bytes",
			Help: "Request body sizes.", Buckets: envoyBuckets}, requestLabels),
		respBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_response_bytes",
			Help: "Response body sizes.", Buckets: envoyBuckets}, requestLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total",
			Help: "Bytes sent back to the client on TCP connections, reported every 5 s while open."}, tcpLabels),
		tcpRecv: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total",
			Help: "Bytes received from the client on TCP connections, reported every 5 s while open."}, tcpLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total",
			Help: "TCP connections opened."}, tcpLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total",
			Help: "TCP connections closed."}, tcpLabels),
	}
	m.requestS.Store(&map[requestKey]*requestSeries{})
	m.tcpS.Store(&map[tcpKey]*tcpSeries{})
	return m
}

func (m *istioMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.respBytes, m.tcpSent, m.tcpRecv, m.tcpOpened, m.tcpClosed}
}

// peers are the source and destination of traffic in dir: this pod is the
// source of outbound traffic (reporter "source") and the destination of
// inbound (reporter "destination"); the other side is peer, the workload
// the metadata exchange named, else unknown.
func (m *istioMetrics) peers(dir Direction, peer *Workload) (reporter string, src, dst Workload) {
	other := unknownWorkload
	if peer != nil {
		other = *peer
	}
	if dir == Outbound {
		return "source", m.self, other
	}
	return "destination", other, m.self
}

// peerValues are the label values peerLabels name.
func (m *istioMetrics) peerValues(dir Direction, service, serviceName string, pr principals, peer *Workload) []string {
	reporter, s, d := m.peers(dir, peer)
	if pr.peer != "" {
		s.Principal = pr.peer
	}
	if pr.local != "" {
		d.Principal = pr.local
	}
	namespace := d.Namespace // the destination workload's, unless the cluster names the service's
	if svc, ok := m.clusterService(serviceName, service); ok {
		service, serviceName, namespace = svc.Host, svc.Name, svc.Namespace
	} else if host, name, ns, ok := istioClusterService(serviceName); ok {
		service, serviceName = host, name
		if ns != "" {
			namespace = ns
		}
	}
	return []string{reporter,
		s.Name, s.CanonicalService, s.CanonicalRevision, s.Namespace, s.Principal, s.App, s.Version, s.Cluster,
		d.Name, d.Namespace, d.Principal, d.App, d.Version, service, d.CanonicalService, d.CanonicalRevision,
		serviceName, namespace, d.Cluster}
}

// clusterService is the service a request to cluster went to, as the
// cluster's metadata names it: of several (a port that more than one
// service selects the pod on), the one the request's host names, else
// the first.
func (m *istioMetrics) clusterService(cluster, host string) (envoyres.ServiceRef, bool) {
	if m.services == nil {
		return envoyres.ServiceRef{}, false
	}
	svcs := m.services(cluster)
	if len(svcs) == 0 {
		return envoyres.ServiceRef{}, false
	}
	for _, s := range svcs {
		if host == s.Host || host == s.Name || host == s.Name+"."+s.Namespace || strings.HasPrefix(s.Host, host+".svc.") {
			return s, true
		}
	}
	return svcs[0], true
}

// securityPolicy is Istio's connection_security_policy: what the
// destination saw (mutual_tls, or none for plaintext); the source does
// not know.
func securityPolicy(dir Direction, pr principals) string {
	switch {
	case dir != Inbound:
		return "unknown"
	case pr.peer != "":
		return "mutual_tls"
	}
	return "none"
}

// request counts one request, peer the workload at the other end when
// known.
func (m *istioMetrics) request(dir Direction, rec *accesslog.Record, grpcStatus []byte, isGRPC bool, peer *Workload) {
	k := requestKey{dir: dir, code: rec.ResponseCode, flags: rec.Flags, grpc: isGRPC,
		grpcStatus: http1.View(grpcStatus), service: serviceOf(rec.Authority), serviceName: rec.UpstreamCluster,
		principals: principals{rec.DownstreamPeerURISAN, rec.DownstreamLocalURISAN}, peer: peer}
	s := (*m.requestS.Load())[k]
	if s == nil {
		s = m.newRequestSeries(k)
	}
	s.count.Inc()
	s.duration.Observe(float64(rec.Duration) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(rec.BytesReceived))
	s.rspBytes.Observe(float64(rec.BytesSent))
}

func (m *istioMetrics) newRequestSeries(k requestKey) *requestSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.requestS.Load()
	if s := cur[k]; s != nil {
		return s
	}
	// The key's strings may be views of a request's buffer: keep copies.
	k.grpcStatus, k.service = string([]byte(k.grpcStatus)), string([]byte(k.service))
	if len(cur) >= maxSeries {
		k.service, k.peer = "unknown", nil
		if s := cur[k]; s != nil {
			return s
		}
	}
	service, name := k.service, k.serviceName
	if service == "" {
		service = "unknown"
	}
	if name == "" {
		name = "unknown"
	}
	proto := "http"
	if k.grpc {
		proto = "grpc"
	}
	values := append(m.peerValues(k.dir, service, name, k.principals, k.peer), proto, strconv.Itoa(k.code), k.grpcStatus, k.flags.String(),
		securityPolicy(k.dir, k.principals))
	s := &requestSeries{count: m.requests.WithLabelValues(values...), duration: m.duration.WithLabelValues(values...),
		reqBytes: m.reqBytes.WithLabelValues(values...), rspBytes: m.respBytes.WithLabelValues(values...)}
	next := withEntry(cur, k, s)
	m.requestS.Store(&next)
	return s
}

// tcp is the series of a TCP flow in dir to a cluster, ending with flags.
func (m *istioMetrics) tcp(dir Direction, serviceName string, flags accesslog.Flags, pr principals) *tcpSeries {
	k := tcpKey{dir: dir, flags: flags, serviceName: serviceName, principals: pr}
	if s := (*m.tcpS.Load())[k]; s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.tcpS.Load()
	if s := cur[k]; s != nil {
		return s
	}
	name := serviceName
	if name == "" {
		name = "unknown"
	}
	values := append(m.peerValues(dir, "unknown", name, pr, nil), "tcp", flags.String(), securityPolicy(dir, pr))
	s := &tcpSeries{sent: m.tcpSent.WithLabelValues(values...), received: m.tcpRecv.WithLabelValues(values...),
		opened: m.tcpOpened.WithLabelValues(values...), closed: m.tcpClosed.WithLabelValues(values...)}
	next := withEntry(cur, k, s)
	m.tcpS.Store(&next)
	return s
}

// istioClusterService reads the service of a cluster Istio's control
// plane named, outbound|PORT|SUBSET|HOST or inbound|PORT|SUBSET|HOST, as
// Istio's stats do: destination_service is the host, its name and
// namespace the first two labels of a Kubernetes service's name
// (NAME.NAMESPACE.svc.DOMAIN); another host (a ServiceEntry's) is its own
// name, in no namespace the cluster says.
func istioClusterService(cluster string) (host, name, namespace string, ok bool) {
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 || parts[0] != "outbound" && parts[0] != "inbound" || parts[3] == "" {
		return "", "", "", false
	}
	host = parts[3]
	labels := strings.Split(host, ".")
	if len(labels) >= 3 && labels[2] == "svc" {
		return host, labels[0], labels[1], true
	}
	return host, host, "", true
}

// serviceOf is destination_service from a request's authority: the host,
// without the port.
func serviceOf(authority string) string {
	if authority == "" {
		return ""
	}
	if authority[0] == '[' {
		if i := strings.IndexByte(authority, ']'); i > 0 {
			return authority[:i+1]
		}
		return authority
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		return authority[:i]
	}
	return authority
}

// withEntry is a copy of m with k set to v: the series maps are read
// without a lock and replaced whole.
func withEntry[K comparable, V any](m map[K]V, k K, v V) map[K]V {
	next := make(map[K]V, len(m)+1)
	for kk, vv := range m {
		next[kk] = vv
	}
	next[k] = v
	return next
}
