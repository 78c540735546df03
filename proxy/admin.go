package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/shunt-dev/shunt/internal/envoyres"
)

// healthHandler serves /healthz/ready: 200 once the listeners accept (and,
// under a control plane, its first configuration is in force), 503 before
// that and while draining.
func (p *Proxy) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", p.serveReady)
	return mux
}

func (p *Proxy) serveReady(w http.ResponseWriter, _ *http.Request) {
	if !p.ready.Load() || p.awaiting.Load() || (p.sup != nil && !p.sup.ready()) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// statusHandler is Istio's agent port: the app probes, readiness,
// metrics, and /quitquitquit for a Job's last container to end the proxy.
func (p *Proxy) statusHandler() http.Handler {
	mux := http.NewServeMux()
	source, target := p.cfg.InboundSource, p.cfg.AppProbeTarget
	if !target.IsValid() {
		target = podAddr()
	}
	if target.Is6() {
		source = p.cfg.InboundSource6
	}
	_, port, _ := net.SplitHostPort(p.cfg.StatusAddr)
	mux.Handle("GET /app-health/", &appProber{probes: p.cfg.AppProbes, target: target, source: source, statusPort: port})
	mux.HandleFunc("GET /healthz/ready", p.serveReady)
	mux.HandleFunc("GET /stats/prometheus", p.servePrometheus)
	mux.HandleFunc("POST /quitquitquit", p.serveQuit)
	return mux
}

// podAddr is the pod's own address, where app probes go when none is
// given: the first global unicast address of an interface that is up,
// IPv4 before IPv6; loopback when there is none.
func podAddr() netip.Addr {
	var v6 netip.Addr
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil || !pfx.Addr().IsGlobalUnicast() {
				continue
			}
			if ip := pfx.Addr().Unmap(); ip.Is4() {
				return ip
			} else if !v6.IsValid() {
				v6 = ip
			}
		}
	}
	if v6.IsValid() {
		return v6
	}
	return netip.MustParseAddr("127.0.0.1")
}

// serveQuit stops the proxy at once, without a drain, when asked from
// inside the pod: how a Job's app ends a classic sidecar (Istio's
// /quitquitquit).
func (p *Proxy) serveQuit(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
		http.Error(w, "only from loopback", http.StatusForbidden)
		return
	}
	p.log.Info("asked to stop (/quitquitquit)", "from", r.RemoteAddr)
	p.quitNow.Store(true)
	if p.quit != nil {
		p.quit()
	}
	fmt.Fprintln(w, "OK")
}

func (p *Proxy) prometheusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats/prometheus", p.servePrometheus)
	return mux
}

func (p *Proxy) servePrometheus(w http.ResponseWriter, r *http.Request) {
	var g prometheus.Gatherer = p.registry
	if p.sup != nil {
		g = gathererFunc(p.sup.gather)
	}
	promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogPrinter{p.log}}).ServeHTTP(w, r)
}

// slogPrinter passes the Prometheus handler's errors to the proxy's log.
type slogPrinter struct{ log *slog.Logger }

func (s slogPrinter) Println(v ...any) { s.log.Warn("metrics", "err", fmt.Sprint(v...)) }

// SetXDSStatus has the admin API's /xds_status report status(): the
// proxy's view of its control plane.
func (p *Proxy) SetXDSStatus(status func() any) { p.xdsStatus.Store(status) }

// adminHandler is the loopback admin API, named after Envoy's endpoints.
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "/config_dump  the configuration it runs, as Envoy's resources (Envoy's JSON)\n"+
			"/certs        the workload certificate and the roots it trusts (Envoy's JSON)\n"+
			"/server_info  its settings beyond them: limits, workers, threads, drain (JSON)\n"+
			"/stats        Envoy's stats by Envoy's names (?filter=RE, ?usedonly, ?format=json|prometheus)\n"+
			"/stats/prometheus  all metrics, Istio's and shunt's too (Prometheus text)\n"+
			"/ready        readiness, as /healthz/ready\n"+
			"/xds_status   the control plane: connected, versions in force per type, refusals (JSON)\n"+
			"/logging      the log level; POST /logging?level=debug|info|warn|error changes it\n"+
			"/debug/pprof/ Go profiles of the running proxy\n")
	})
	mux.HandleFunc("GET /config_dump", p.serveConfigDump)
	mux.HandleFunc("GET /certs", p.serveCerts)
	mux.HandleFunc("GET /server_info", p.serveConfig)
	mux.HandleFunc("GET /stats", p.serveStats)
	mux.HandleFunc("GET /stats/prometheus", p.servePrometheus)
	mux.HandleFunc("GET /ready", p.serveReady)
	mux.HandleFunc("GET /xds_status", func(w http.ResponseWriter, _ *http.Request) {
		status, _ := p.xdsStatus.Load().(func() any)
		if status == nil {
			http.Error(w, "no control plane: the configuration is the proxy's own", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	mux.HandleFunc("GET /logging", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "level: %s\n", strings.ToLower(p.level.Level().String()))
	})
	mux.HandleFunc("POST /logging", p.serveSetLevel)
	// Profiles of the live proxy: go tool pprof http://127.0.0.1:15000/debug/pprof/profile
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (p *Proxy) serveConfig(w http.ResponseWriter, _ *http.Request) {
	c := p.cfg
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{
		"outbound_port": c.OutboundPort, "inbound_port": c.InboundPort, "listen_address": c.ListenAddr,
		"inbound_source": c.InboundSource, "inbound_source_ipv6": c.InboundSource6,
		"connect_timeout": c.ConnectTimeout.String(), "idle_timeout": c.IdleTimeout.String(),
		"drain_timeout": c.DrainTimeout.String(), "max_connections": c.MaxConnections,
		"health_address": c.HealthAddr, "prometheus_address": c.PrometheusAddr, "admin_address": c.AdminAddr,
		"access_log_format": c.AccessLogFormat, "access_log": c.AccessLog != nil,
		"inbound_tproxy": c.TProxy, "gomaxprocs": runtime.GOMAXPROCS(0), "workers": p.workerCount(),
		"drain_listeners": c.DrainListeners.String(), "exit_on_zero_active_connections": c.ExitOnZeroActive,
		"minimum_drain_duration": c.MinimumDrain.String(), "effective_max_connections": p.limits.Connections,
		"descriptor_limit": p.limits.Descriptors, "max_pipes": p.limits.Pipes,
	})
}

// serveConfigDump prints the configuration as Envoy's /config_dump does:
// the bootstrap, then its static listeners and clusters.
func (p *Proxy) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	dump := &adminv3.ConfigDump{}
	var listeners []*adminv3.ListenersConfigDump_StaticListener
	b := p.gen.Load().bootstrap
	if ls := b.GetStaticResources().GetListeners(); slices.ContainsFunc(ls, func(l *listenerv3.Listener) bool { return envoyres.Redacted(l) != l }) {
		// A listener's inline private keys are not shown.
		b = proto.Clone(b).(*bootstrapv3.Bootstrap)
		for i, l := range b.GetStaticResources().GetListeners() {
			b.GetStaticResources().Listeners[i] = envoyres.Redacted(l)
		}
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		listeners = append(listeners, &adminv3.ListenersConfigDump_StaticListener{Listener: envoyres.Typed(l)})
	}
	var clusters []*adminv3.ClustersConfigDump_StaticCluster
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters = append(clusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: envoyres.Typed(c)})
	}
	dump.Configs = []*anypb.Any{
		envoyres.Typed(&adminv3.BootstrapConfigDump{Bootstrap: b}),
		envoyres.Typed(&adminv3.ListenersConfigDump{StaticListeners: listeners}),
		envoyres.Typed(&adminv3.ClustersConfigDump{StaticClusters: clusters}),
	}
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(dump)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	// protojson varies its spacing on purpose; print it one stable way.
	var compact, out bytes.Buffer
	_ = json.Compact(&compact, raw)
	_ = json.Indent(&out, compact.Bytes(), "", "  ")
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out.Bytes())
}

func (p *Proxy) workerCount() int {
	if p.sup == nil {
		return 1
	}
	return len(p.sup.workers)
}

func (p *Proxy) serveSetLevel(w http.ResponseWriter, r *http.Request) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(r.URL.Query().Get("level"))); err != nil {
		http.Error(w, fmt.Sprintf("level %q is not debug, info, warn or error", r.URL.Query().Get("level")), http.StatusBadRequest)
		return
	}
	p.level.Set(l)
	if p.sup != nil {
		p.sup.each(func(wk *worker) {
			if _, err := wk.request("level " + l.String()); err != nil {
				p.log.Warn("worker log level", "worker", wk.slot, "err", err)
			}
		})
	}
	p.log.Info("log level changed", "level", l)
	fmt.Fprintf(w, "level: %s\n", strings.ToLower(l.String()))
}

// Gather is what /stats/prometheus serves, as metric families.
func (p *Proxy) Gather() ([]*dto.MetricFamily, error) {
	if p.sup != nil {
		return p.sup.gather()
	}
	return p.registry.Gather()
}
