package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shunt-dev/shunt/internal/buildinfo"
	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/sidecar"
)

// Proxy is the sidecar. Listen binds its sockets (do it before dropping
// privileges); Serve runs it until its context ends, then drains.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	level    *slog.LevelVar
	metrics  Metrics
	istio    *istioMetrics
	peers    *peerExchange        // the metadata exchange's identity and peers
	registry *prometheus.Registry // what /stats/prometheus serves
	// gen is the configuration it runs (a reload swaps it).
	gen      atomic.Pointer[generation]
	reloadMu sync.Mutex
	// started: Serve has started the configuration's access log sinks
	// and clusters; a reload before it leaves its own to Serve
	// (reloadMu).
	started bool
	stats   *statStore // Envoy's stats by name, across reloads
	// exporters send the connection managers' spans, across reloads.
	exporters *exporterSet
	// bg is the context of the clusters' background work (DNS, health
	// checks, outlier detection) while serving.
	bg      context.Context
	connIDs atomic.Uint64

	// capture are the listeners' sockets (the sidecar's: outbound and
	// inbound, IPv4 and IPv6); a reload adds and removes some. capMu
	// guards the slice, serving says acceptors run (new sockets get one).
	capture   []*capture
	capMu     sync.Mutex
	serving   bool
	acceptors sync.WaitGroup
	adopted   bool // the sockets came from a supervisor
	http      []*http.Server
	adminAddr netip.AddrPort
	h2mu      sync.Mutex
	h2        map[time.Duration]*h2Server
	httpLn    []net.Listener
	dialer    net.Dialer
	limits    Limits
	active    atomic.Int64 // connections open, both directions
	conns     sync.WaitGroup
	flows     registry
	ready     atomic.Bool
	awaiting  atomic.Bool  // not ready until a reload: see AwaitConfig
	listened  bool         // Listen was called
	xdsStatus atomic.Value // func() any: see SetXDSStatus
	certs     atomic.Value // func() *ca.Credentials: see SetCertificates
	draining  atomic.Bool
	// stopping ends when the drain does: dials still pending give up.
	stopping context.Context
	stop     context.CancelCauseFunc
	sup      *supervisor // when this process supervises workers
	quit     context.CancelFunc
	quitNow  atomic.Bool // POST /quitquitquit: stop without draining

	lastLimitWarn atomic.Int64 // unix nanoseconds of the last over-limit warning
}

type capture struct {
	ln  *net.TCPListener
	lst atomic.Pointer[listener] // the configuration its new connections get (a reload swaps it)
	// name is its listener's, which a reload keeps.
	name   string
	closed bool // by the drain
}

// New makes a proxy; level, if not nil, is the log level the admin API
// changes.
func New(cfg Config, log *slog.Logger, level *slog.LevelVar) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if level == nil {
		level = new(slog.LevelVar)
	}
	p := &Proxy{cfg: cfg, log: log, level: level, stats: newStatStore(), exporters: newExporterSet(cfg.TracingFlushInterval)}
	if p.cfg.Workload == nil {
		w := WorkloadFromEnv(os.Getenv, LabelsFile)
		p.cfg.Workload = &w
	}
	b, builtin := cfg.Bootstrap, cfg.Bootstrap == nil
	if builtin {
		var err error
		if b, err = sidecarBootstrap(&p.cfg); err != nil {
			return nil, err
		}
	}
	res, err := build(b, buildOptions{open: p.openLog, builtin: builtin, idle: cfg.IdleTimeout, store: p.stats, exporters: p.exporters, workload: p.cfg.Workload})
	if err != nil {
		return nil, err
	}
	p.gen.Store(&generation{bootstrap: b, listeners: res.listeners, clusters: res.clusters, sinks: res.sinks})
	p.istio = newIstioMetrics(*p.cfg.Workload)
	p.istio.services = func(name string) []envoyres.ServiceRef {
		if cl := p.gen.Load().clusters[name]; cl != nil {
			return cl.services
		}
		return nil
	}
	id := cfg.NodeID
	if pod := os.Getenv(sidecar.PodNameEnv); id == "" && pod != "" {
		id = sidecar.NodeID(os.Getenv(sidecar.InstanceIPEnv), pod, os.Getenv(sidecar.PodNamespaceEnv))
	}
	p.peers = newPeerExchange(*p.cfg.Workload, os.Getenv(sidecar.PodNameEnv), id)
	p.registry = prometheus.NewRegistry()
	p.registry.MustRegister(&p.metrics)
	p.registry.MustRegister(p.istio.collectors()...)
	p.registry.MustRegister(envoyStats{p})
	p.registry.MustRegister(buildinfo.Collector("proxy"))
	p.stopping, p.stop = context.WithCancelCause(context.Background())
	p.bg = p.stopping
	// No TCP keepalive from the proxy: the app and the upstream keep their
	// own, which pass through; Go's default would cost four setsockopt
	// calls on every socket. The connect timeout is the dial's context's.
	p.dialer = net.Dialer{KeepAlive: -1}
	p.limits = limitsFor(descriptorLimit(), cfg.MaxConnections)
	pipeCap.Store(int64(p.limits.Pipes))
	return p, nil
}

// Limits are the bounds the proxy runs with, sized to its descriptors.
func (p *Proxy) Limits() Limits { return p.limits }

// Metrics are the proxy's live counters.
func (p *Proxy) Metrics() *Metrics { return &p.metrics }

// Listen binds the listeners (the sidecar's: outbound and inbound, IPv4,
// and IPv6 where the namespace has it) and the health, Prometheus and
// admin endpoints.
func (p *Proxy) Listen() error {
	p.listened = true // none at all is right for a sidecar awaiting its control plane's listeners
	for _, l := range p.gen.Load().listeners {
		lns, err := p.bind(l)
		if err != nil {
			p.Close()
			return err
		}
		for _, ln := range lns {
			p.adopt(ln, l)
		}
	}
	for _, h := range []struct {
		addr    string
		handler http.Handler
	}{{p.cfg.HealthAddr, p.healthHandler()}, {p.cfg.PrometheusAddr, p.prometheusHandler()}, {p.cfg.AdminAddr, p.adminHandler()},
		{p.cfg.StatusAddr, p.statusHandler()}} {
		if h.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			p.Close()
			return fmt.Errorf("listening on %s: %w", h.addr, err)
		}
		if h.addr == p.cfg.AdminAddr {
			p.adminAddr = addrPort(ln.Addr())
		}
		p.httpLn = append(p.httpLn, ln)
		p.http = append(p.http, &http.Server{Handler: h.handler, ReadHeaderTimeout: 5 * time.Second})
	}
	return nil
}

// bind opens l's sockets, one per address; an additional address that
// may fail (the sidecar's IPv6) is left out when it does.
func (p *Proxy) bind(l *listener) ([]*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	if l.transparent {
		lc.Control = transparent
	}
	var out []*net.TCPListener
	for i, a := range l.addrs {
		network := "tcp4"
		if a.Addr().Is6() {
			network = "tcp6"
		}
		ln, err := lc.Listen(context.Background(), network, a.String())
		if err != nil && i > 0 && l.optionalExtra {
			p.log.Debug("no listener on an additional address", "listener", l.name, "address", a, "err", err)
			continue
		}
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("listener %s: %w", l.name, err)
		}
		out = append(out, ln.(*net.TCPListener))
	}
	return out, nil
}

// AdminAddr is where the admin API listens, once Listen has bound it.
func (p *Proxy) AdminAddr() netip.AddrPort { return p.adminAddr }

// adopt serves ln as one of l's sockets: at once when the proxy is
// serving (a reload's new listener), else from Serve.
func (p *Proxy) adopt(ln *net.TCPListener, l *listener) {
	if l.port == 0 {
		l.port = addrPort(ln.Addr()).Port()
	}
	c := &capture{ln: ln, name: l.name}
	c.lst.Store(l)
	p.capMu.Lock()
	defer p.capMu.Unlock()
	p.capture = append(p.capture, c)
	if p.serving {
		p.startAccepting(c)
	}
}

// startAccepting runs c's acceptor; capMu is held.
func (p *Proxy) startAccepting(c *capture) {
	p.acceptors.Add(1)
	go func() {
		defer p.acceptors.Done()
		p.accept(c)
	}()
}

// captures are the listeners' sockets now.
func (p *Proxy) captures() []*capture {
	p.capMu.Lock()
	defer p.capMu.Unlock()
	return slices.Clone(p.capture)
}

// Addr is the address the first listener of a traffic direction is bound
// to (the sidecar's: outbound, inbound).
func (p *Proxy) Addr(dir Direction) netip.AddrPort {
	for _, c := range p.captures() {
		if c.lst.Load().dir == dir {
			return addrPort(c.ln.Addr())
		}
	}
	return netip.AddrPort{}
}

// ListenerAddr is the address the named listener is bound to.
func (p *Proxy) ListenerAddr(name string) netip.AddrPort {
	for _, c := range p.captures() {
		if c.name == name {
			return addrPort(c.ln.Addr())
		}
	}
	return netip.AddrPort{}
}

// Close releases every socket Listen bound; Serve does it itself.
func (p *Proxy) Close() {
	for _, c := range p.captures() {
		c.ln.Close()
	}
	for _, ln := range p.httpLn {
		ln.Close()
	}
}

// Serve accepts connections until ctx ends, then drains (see Config):
// reports not ready, stops the listeners the drain scope names, lets the
// rest serve and live connections finish until the drain ends, and resets
// what is left.
func (p *Proxy) Serve(ctx context.Context) error {
	ctx, p.quit = context.WithCancel(ctx)
	defer p.quit()
	if p.sup != nil {
		return p.sup.serve(ctx)
	}
	if !p.listened {
		return errors.New("proxy: Serve before Listen")
	}
	// A reload that came first left its sinks and clusters to start
	// here; one that comes now waits for them to start.
	p.reloadMu.Lock()
	g := p.gen.Load()
	for _, s := range g.sinks {
		s.start()
	}
	defer func() {
		for _, s := range p.gen.Load().sinks {
			s.Close()
			s.closeFile()
		}
		p.exporters.close() // the spans of the drain's last requests go too
	}()
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	p.bg, p.started = bgCtx, true
	p.startClusters(bgCtx, g.clusters)
	p.reloadMu.Unlock()
	p.capMu.Lock()
	p.serving = true
	for _, c := range p.capture {
		p.startAccepting(c)
	}
	p.capMu.Unlock()
	p.serveAdmin()
	stopSweep := make(chan struct{})
	defer close(stopSweep)
	go p.flows.sweep(p.shortestIdle(), stopSweep)
	go p.housekeeping(stopSweep)
	p.ready.Store(true)
	p.warnDifferences()
	if p.cfg.Bootstrap == nil {
		p.log.Info("proxy listening", "outbound", p.Addr(Outbound), "inbound", p.Addr(Inbound),
			"max_connections", p.limits.Connections, "descriptors", p.limits.Descriptors)
	} else {
		for _, c := range p.captures() {
			p.log.Info("listener listening", "listener", c.name, "address", addrPort(c.ln.Addr()))
		}
		p.log.Info("proxy running its configuration", "listeners", len(g.listeners), "clusters", len(g.clusters),
			"max_connections", p.limits.Connections, "descriptors", p.limits.Descriptors)
	}
	if p.cfg.MaxConnections == 0 || p.limits.Connections < p.cfg.MaxConnections {
		p.log.Info("the descriptor limit bounds the connections", "max_connections", p.limits.Connections,
			"descriptors", p.limits.Descriptors, "reserved", p.limits.Reserve, "pipes", p.limits.Pipes)
	}
	<-ctx.Done()

	p.drain()
	for _, c := range p.captures() {
		p.closeCapture(c)
	}
	p.acceptors.Wait()
	p.stop(errDrainEnded) // dials still pending give up
	if n := p.flows.closeAll(ResultDrained); n > 0 {
		p.log.Warn("drain ended: reset the connections left", "connections", n)
	}
	p.conns.Wait()
	for _, cl := range p.gen.Load().clusters {
		cl.closeIdle()
	}
	p.closeAdmin()
	p.log.Info("proxy stopped")
	return nil
}

// drain runs a drain up to its end: it stops the listeners the scope
// names and waits (see Config for when it ends).
func (p *Proxy) drain() {
	p.draining.Store(true)
	p.ready.Store(false)
	p.goAway()
	start := time.Now()
	serving := false
	for _, c := range p.captures() {
		if p.cfg.DrainListeners.stops(c.lst.Load().dir) {
			p.closeCapture(c)
		} else {
			serving = true
		}
	}
	if p.quitNow.Load() {
		p.log.Info("stopping without a drain (/quitquitquit)", "connections", p.active.Load())
		return
	}
	p.log.Info("draining", "connections", p.active.Load(), "timeout", p.cfg.DrainTimeout,
		"stopped", p.cfg.DrainListeners, "exit_on_zero_active_connections", p.cfg.ExitOnZeroActive)
	deadline := time.NewTimer(p.cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		idle := p.active.Load() == 0
		switch {
		case idle && !serving:
			return // nothing open, nothing new can come
		case idle && p.cfg.ExitOnZeroActive && time.Since(start) >= p.cfg.MinimumDrain:
			return
		}
		select {
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// closeCapture closes a capture listener once.
func (p *Proxy) closeCapture(c *capture) {
	p.capMu.Lock()
	defer p.capMu.Unlock()
	if !c.closed {
		c.closed = true
		c.ln.Close()
	}
}

func (p *Proxy) serveAdmin() {
	for i, srv := range p.http {
		go func() { _ = srv.Serve(p.httpLn[i]) }()
	}
}

func (p *Proxy) closeAdmin() {
	for _, srv := range p.http {
		_ = srv.Close()
	}
}

func (p *Proxy) accept(cp *capture) {
	ln := cp.ln
	dir := cp.lst.Load().dir
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, most likely: wait, as net/http does.
			p.log.Warn("accept failed; retrying", "direction", dir, "err", err, "in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		lst := cp.lst.Load() // the configuration in force as it arrived
		p.metrics.dir[dir].accepted.Add(1)
		if n := p.active.Add(1); n > int64(p.limits.Connections) {
			p.active.Add(-1)
			p.warnOverLimit(dir)
			// Counted and logged before the reset, so that a client that
			// sees the reset finds it counted.
			p.metrics.record(dir, ResultOverLimit, 0, 0, 0)
			d := downstream{lst: cp.lst.Load(), remote: addrPort(c.RemoteAddr()), id: p.connIDs.Add(1), start: time.Now()}
			p.refuse(&d, ResultOverLimit, "")
			reset(c)
			continue
		}
		p.conns.Add(1)
		go func() {
			defer p.active.Add(-1)
			p.serveConn(c, cp, lst)
		}()
	}
}

// warnOverLimit logs that the connection limit turned connections away,
// at most once every ten seconds.
func (p *Proxy) warnOverLimit(dir Direction) {
	now := time.Now().UnixNano()
	last := p.lastLimitWarn.Load()
	if now-last < int64(10*time.Second) || !p.lastLimitWarn.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("connection limit reached: resetting new connections until some close", "direction", dir,
		"max_connections", p.limits.Connections, "descriptor_limit", p.limits.Descriptors)
}

// transparent lets a listener accept connections addressed to any address,
// as TPROXY delivers them (it needs CAP_NET_ADMIN, so bind before dropping
// privileges).
func transparent(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("IP_TRANSPARENT for TPROXY: %w", err)
	}
	return nil
}

// warnDifferences says, once at start, where this configuration behaves
// unlike Istio's sidecar.
func (p *Proxy) warnDifferences() {
	if p.cfg.Bootstrap != nil {
		return // the file says what runs
	}
	var attrs []any
	if t := p.cfg.ProtocolDetectionTimeout; t > 0 {
		attrs = append(attrs, "protocol_detection", fmt.Sprintf("a client silent for %s is passed through as TCP (Istio waits for it; --protocol-detection-timeout 0 turns detection off)", t))
	}
	attrs = append(attrs, "http_1_0", "accepted (Envoy answers 426 unless Istio's PILOT_HTTP10 is set)",
		"stale_pooled_connection", "a safe request (GET, HEAD, OPTIONS, TRACE) is sent again once on a fresh connection (Envoy needs a retry policy)")
	p.log.Warn("where this sidecar differs from Istio's", attrs...)
}

// housekeeping runs every 5 s: it adds what open TCP flows moved to
// Istio's byte counters (Istio's tcpReportingDuration), closes upstream
// connections idle past their timeout, and forgets original-destination
// endpoints unused for a while.
func (p *Proxy) housekeeping(stop <-chan struct{}) {
	t := time.NewTicker(poolForgetAfter)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.flows.each(func(f *flow) {
				if f.tcp != nil {
					f.reportTCP(f.tcp)
				}
			})
			for _, cl := range p.gen.Load().clusters {
				cl.sweepPools(now)
			}
		}
	}
}

// shortestIdle is the shortest idle timeout any handler has, which paces
// the sweeper.
func (p *Proxy) shortestIdle() time.Duration {
	shortest := time.Hour
	consider := func(d time.Duration) {
		if d > 0 && d < shortest {
			shortest = d
		}
	}
	for _, l := range p.gen.Load().listeners {
		for _, fc := range l.chains {
			if fc.http != nil {
				consider(fc.http.idle)
				consider(fc.http.streamIdle)
			}
			if fc.tcp != nil {
				consider(fc.tcp.idle)
			}
		}
	}
	return shortest
}

// openLog is where a file access log at path writes: for the sidecar's
// own configuration, Config.AccessLog; for a file's, the path (standard
// output and error by their /dev names).
func (p *Proxy) openLog(path string) (io.Writer, error) {
	switch {
	case p.cfg.Bootstrap == nil:
		return p.cfg.AccessLog, nil
	case path == "/dev/stdout":
		return os.Stdout, nil
	case path == "/dev/stderr":
		return os.Stderr, nil
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}
