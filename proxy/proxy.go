package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proxy is the sidecar. Listen binds its sockets (do it before dropping
// privileges); Serve runs it until its context ends, then drains.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	level   *slog.LevelVar
	metrics Metrics
	access  *accessLog

	capture  []capture // the outbound and inbound listeners, IPv4 and IPv6
	http     []*http.Server
	httpLn   []net.Listener
	dialer   net.Dialer
	active   atomic.Int64 // connections open, both directions
	conns    sync.WaitGroup
	flows    registry
	ready    atomic.Bool
	draining atomic.Bool
	workers  []*worker // when this process supervises workers
}

type capture struct {
	ln  *net.TCPListener
	dir Direction
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
	p := &Proxy{cfg: cfg, log: log, level: level}
	// No TCP keepalive from the proxy: the app and the upstream keep their
	// own, which pass through; Go's default would cost four setsockopt
	// calls on every socket.
	p.dialer = net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: -1}
	return p, nil
}

// Metrics are the proxy's live counters.
func (p *Proxy) Metrics() *Metrics { return &p.metrics }

// Listen binds the capture listeners (IPv4, and IPv6 where the namespace
// has it) and the health, Prometheus and admin endpoints.
func (p *Proxy) Listen() error {
	for _, l := range []struct {
		port uint16
		dir  Direction
	}{{p.cfg.OutboundPort, Outbound}, {p.cfg.InboundPort, Inbound}} {
		lc := net.ListenConfig{KeepAlive: -1}
		if l.dir == Inbound && p.cfg.TProxy {
			lc.Control = transparent
		}
		ln, err := lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(p.cfg.ListenAddr, l.port).String())
		if err != nil {
			p.Close()
			return fmt.Errorf("%s listener: %w", l.dir, err)
		}
		p.capture = append(p.capture, capture{ln.(*net.TCPListener), l.dir})
		ln6, err := lc.Listen(context.Background(), "tcp6", fmt.Sprintf("[::]:%d", l.port))
		if err != nil {
			p.log.Debug("no IPv6 listener", "direction", l.dir, "err", err)
			continue
		}
		p.capture = append(p.capture, capture{ln6.(*net.TCPListener), l.dir})
	}
	for _, h := range []struct {
		addr    string
		handler http.Handler
	}{{p.cfg.HealthAddr, p.healthHandler()}, {p.cfg.PrometheusAddr, p.prometheusHandler()}, {p.cfg.AdminAddr, p.adminHandler()}} {
		if h.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			p.Close()
			return fmt.Errorf("listening on %s: %w", h.addr, err)
		}
		p.httpLn = append(p.httpLn, ln)
		p.http = append(p.http, &http.Server{Handler: h.handler, ReadHeaderTimeout: 5 * time.Second})
	}
	return nil
}

// Addr is the address a capture listener is bound to.
func (p *Proxy) Addr(dir Direction) netip.AddrPort {
	for _, c := range p.capture {
		if c.dir == dir {
			return addrPort(c.ln.Addr())
		}
	}
	return netip.AddrPort{}
}

// Close releases every socket Listen bound; Serve does it itself.
func (p *Proxy) Close() {
	for _, c := range p.capture {
		c.ln.Close()
	}
	for _, ln := range p.httpLn {
		ln.Close()
	}
}

// Serve accepts connections until ctx ends, then drains: it stops
// accepting, reports not ready, lets live connections finish for up to the
// drain timeout, and resets what is left.
func (p *Proxy) Serve(ctx context.Context) error {
	if len(p.workers) > 0 {
		return p.superviseServe(ctx)
	}
	if len(p.capture) == 0 {
		return errors.New("proxy: Serve before Listen")
	}
	p.access = newAccessLog(p.cfg.AccessLog, p.cfg.AccessLogFormat)
	defer p.access.Close()
	var acceptors sync.WaitGroup
	for _, c := range p.capture {
		acceptors.Add(1)
		go func() {
			defer acceptors.Done()
			p.accept(c.ln, c.dir)
		}()
	}
	for i, srv := range p.http {
		go func() { _ = srv.Serve(p.httpLn[i]) }()
	}
	stopSweep := make(chan struct{})
	defer close(stopSweep)
	go p.flows.sweep(p.cfg.IdleTimeout, stopSweep)
	p.ready.Store(true)
	p.log.Info("proxy listening", "outbound", p.Addr(Outbound), "inbound", p.Addr(Inbound))
	<-ctx.Done()

	p.draining.Store(true)
	p.ready.Store(false)
	for _, c := range p.capture {
		c.ln.Close()
	}
	acceptors.Wait()
	p.log.Info("draining", "connections", p.active.Load(), "timeout", p.cfg.DrainTimeout)
	if !p.waitConns(p.cfg.DrainTimeout) {
		n := p.flows.closeAll(ResultDrained)
		p.log.Warn("drain timeout: reset the connections left", "connections", n)
		p.conns.Wait()
	}
	for _, srv := range p.http {
		_ = srv.Close()
	}
	p.log.Info("proxy stopped")
	return nil
}

func (p *Proxy) waitConns(d time.Duration) bool {
	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *Proxy) accept(ln *net.TCPListener, dir Direction) {
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
		p.metrics.dir[dir].accepted.Add(1)
		if n := p.active.Add(1); p.cfg.MaxConnections > 0 && n > int64(p.cfg.MaxConnections) {
			p.active.Add(-1)
			reset(c)
			p.metrics.record(dir, ResultOverLimit, 0, 0, 0)
			p.access.write(&Entry{Start: time.Now(), Direction: dir, Downstream: addrPort(c.RemoteAddr()), Result: ResultOverLimit})
			continue
		}
		p.conns.Add(1)
		go func() {
			defer p.active.Add(-1)
			p.serveConn(c, dir)
		}()
	}
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
