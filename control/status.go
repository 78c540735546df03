package control

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shunt-dev/shunt/internal/buildinfo"
	"github.com/shunt-dev/shunt/xds"
)

// proxyState is what the server knows of a connected sidecar.
type proxyState struct {
	node      Node
	connected time.Time
	streams   int
	resources *Resources
	// sent, acks and nacks are per type URL: the version last sent, the
	// version last ACKed, the last NACK's message (until an ACK).
	sent, acks, nacks map[string]string
}

// metrics are istiod's, by its names.
type metrics struct {
	registry    *prometheus.Registry
	proxies     prometheus.Gauge
	services    prometheus.Gauge
	pushes      *prometheus.CounterVec
	rejects     *prometheus.CounterVec
	pushTime    prometheus.Histogram
	convergence prometheus.Histogram
	debounce    prometheus.Histogram
}

func newMetrics() *metrics {
	buckets := []float64{.01, .1, .5, 1, 3, 5, 10, 20, 30}
	m := &metrics{registry: prometheus.NewRegistry(),
		proxies:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pilot_xds", Help: "Number of endpoints connected to this pilot using XDS."}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pilot_services", Help: "Total services known to pilot."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_xds_pushes",
			Help: "Pilot build and send errors for lds, rds, cds and eds."}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_total_xds_rejects",
			Help: "Total number of XDS responses from pilot rejected by proxy."}, []string{"type"}),
		pushTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pilot_xds_push_time",
			Help: "Total time in seconds Pilot takes to push lds, rds, cds and eds.", Buckets: buckets}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pilot_proxy_convergence_time",
			Help: "Delay in seconds between config change and a proxy receiving all required configuration.", Buckets: buckets}),
		debounce: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pilot_debounce_time",
			Help: "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.", Buckets: buckets}),
	}
	m.registry.MustRegister(m.proxies, m.services, m.pushes, m.rejects, m.pushTime, m.convergence, m.debounce, buildinfo.Collector("pilot"))
	return m
}

// SyncStatus is a sidecar's sync status, as istiod's /debug/syncz gives
// it (the fields istioctl proxy-status reads), plus what it refused.
type SyncStatus struct {
	ProxyID   string `json:"proxy"`
	Namespace string `json:"namespace"`
	Connected string `json:"connected_at"`
	Streams   int    `json:"streams"`

	ClusterSent   string            `json:"cluster_sent"`
	ClusterAcked  string            `json:"cluster_acked"`
	ListenerSent  string            `json:"listener_sent"`
	ListenerAcked string            `json:"listener_acked"`
	RouteSent     string            `json:"route_sent"`
	RouteAcked    string            `json:"route_acked"`
	EndpointSent  string            `json:"endpoint_sent"`
	EndpointAcked string            `json:"endpoint_acked"`
	Nacks         map[string]string `json:"nacks,omitempty"`
}

// Synced reports whether every type sent has been ACKed at its version.
func (st SyncStatus) Synced() bool {
	return st.ClusterSent == st.ClusterAcked && st.ListenerSent == st.ListenerAcked &&
		st.RouteSent == st.RouteAcked && st.EndpointSent == st.EndpointAcked && len(st.Nacks) == 0
}

// Status are the connected sidecars' sync status, by proxy id.
func (s *Server) Status() []SyncStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SyncStatus{}
	for id, st := range s.nodes {
		ss := SyncStatus{ProxyID: id, Namespace: st.node.Namespace, Connected: st.connected.UTC().Format(time.RFC3339), Streams: st.streams,
			ClusterSent: st.sent[xds.ClusterType], ClusterAcked: st.acks[xds.ClusterType],
			ListenerSent: st.sent[xds.ListenerType], ListenerAcked: st.acks[xds.ListenerType],
			RouteSent: st.sent[xds.RouteType], RouteAcked: st.acks[xds.RouteType],
			EndpointSent: st.sent[xds.EndpointType], EndpointAcked: st.acks[xds.EndpointType]}
		for t, msg := range st.nacks {
			if ss.Nacks == nil {
				ss.Nacks = map[string]string{}
			}
			ss.Nacks[shortName(t)] = msg
		}
		out = append(out, ss)
	}
	slices.SortFunc(out, func(a, b SyncStatus) int { return strings.Compare(a.ProxyID, b.ProxyID) })
	return out
}

// Handler is istiod's monitoring and debug endpoints: /metrics,
// /debug/syncz (every sidecar's sync status, JSON) and
// /debug/config_dump?proxyID=ID (what that sidecar was last sent, YAML),
// /debug/problems (what of the routing rules is not in force, and why),
// /ready.
// RegisterMetrics adds collectors to what /metrics serves (the CA's, say).
func (s *Server) RegisterMetrics(cs ...prometheus.Collector) { s.metrics.registry.MustRegister(cs...) }

func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ready\n")) })
	mux.HandleFunc("/debug/syncz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	mux.HandleFunc("/debug/problems", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.compiler.Problems())
	})
	mux.HandleFunc("/debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxyID")
		s.mu.Lock()
		var res *Resources
		if st := s.nodes[id]; st != nil {
			res = st.resources
		}
		s.mu.Unlock()
		if res == nil {
			http.Error(w, "no connected proxy "+id+" (see /debug/syncz)", http.StatusNotFound)
			return
		}
		out, err := res.YAML()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(out)
	})
	return mux
}

// ProxyAddrs are the connected sidecars' addresses (each one's first IP),
// sorted: where their metrics are read (Istio's port 15090).
func (s *Server) ProxyAddrs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.Addr
	for _, st := range s.nodes {
		if len(st.node.IPs) > 0 {
			out = append(out, st.node.IPs[0])
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
