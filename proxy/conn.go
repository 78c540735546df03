package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/origdst"
)

// flow is one proxied connection: the downstream peer that connected and
// the upstream the proxy dialled for it.
type flow struct {
	down, up *net.TCPConn
	activity atomic.Int64  // bytes moved either way, as the copy loops report them
	ended    atomic.Int32  // halves that have seen their source's FIN
	aborted  atomic.Uint32 // Result+1 when the sweeper or a drain closed it
	shard    uint32        // its registry shard
	seen     int64         // activity at the sweeper's last look (sweeper only)
	quiet    int           // sweeps in a row with no activity (sweeper only)
}

// abort resets both sides from outside the copy loops, saying why.
func (f *flow) abort(why Result) {
	f.aborted.CompareAndSwap(0, uint32(why)+1)
	reset(f.down)
	reset(f.up)
}

func (p *Proxy) serveConn(down *net.TCPConn, dir Direction) {
	defer p.conns.Done()
	s := &p.metrics.dir[dir]
	s.active.Add(1)
	defer s.active.Add(-1)
	e := Entry{Start: time.Now(), Direction: dir, Downstream: addrPort(down.RemoteAddr())}
	e.Result = p.forward(down, dir, &e)
	e.Duration = time.Since(e.Start)
	p.metrics.record(dir, e.Result, e.BytesReceived, e.BytesSent, e.Duration)
	p.access.write(&e)
}

// forward finds where down was going, connects there and moves bytes both
// ways until both sides are done; it closes down.
func (p *Proxy) forward(down *net.TCPConn, dir Direction, e *Entry) Result {
	dst, err := p.originalDst(down, dir)
	if err != nil {
		reset(down)
		p.log.Warn("cannot read the original destination", "direction", dir, "from", e.Downstream, "err", err)
		return ResultNoOriginalDst
	}
	e.OriginalDst = dst
	if p.isLoop(down, dir, dst) {
		// Not redirected: someone dialled the listener itself. Forwarding
		// would connect the proxy to itself, again and again.
		reset(down)
		p.log.Warn("refused a connection to the proxy's own listener (a loop)", "direction", dir, "from", e.Downstream, "to", dst)
		return ResultLoop
	}
	up, r := p.connect(down, dir, dst, e)
	if up == nil {
		reset(down)
		return r
	}
	e.UpstreamLocal = addrPort(up.LocalAddr())
	f := &flow{down: down, up: up}
	p.flows.add(f)
	defer p.flows.remove(f)
	return p.pump(f, e)
}

// connect dials dst for down, giving up when down goes away or the drain
// ends; on failure it returns nil and the result to log.
func (p *Proxy) connect(down *net.TCPConn, dir Direction, dst netip.AddrPort, e *Entry) (*net.TCPConn, Result) {
	ctx, cancel := context.WithCancelCause(p.stopping)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancelTimeout()
	w := watchDownstream(down, cancel)
	up, err := p.dial(ctx, dir, dst)
	gone := w.stop()
	if err == nil {
		return up, ResultOK
	}
	r := connectResult(err)
	switch cause := context.Cause(ctx); {
	case gone || errors.Is(cause, errDownstreamGone):
		r = ResultDownstreamClosed
	case errors.Is(cause, errDrainEnded):
		r = ResultDrained
	case errors.Is(cause, context.DeadlineExceeded):
		r = ResultConnectTimeout
	}
	e.Detail = err.Error()
	p.log.Debug("upstream connect failed", "direction", dir, "to", dst, "result", r, "err", err)
	return nil, r
}

// originalDst is where down was going: conntrack's record of the address
// REDIRECT rewrote, or, for TPROXY, the socket's own local address.
func (p *Proxy) originalDst(down *net.TCPConn, dir Direction) (netip.AddrPort, error) {
	if p.cfg.OriginalDst != nil {
		return p.cfg.OriginalDst(down, dir)
	}
	if dir == Inbound && p.cfg.TProxy {
		return addrPort(down.LocalAddr()), nil
	}
	return origdst.Get(down)
}

// isLoop reports a connection to the proxy's own listener: not redirected
// (its original destination is the listener itself), or under TPROXY,
// addressed to the inbound port.
func (p *Proxy) isLoop(down *net.TCPConn, dir Direction, dst netip.AddrPort) bool {
	if dir == Inbound && p.cfg.TProxy {
		return dst.Port() == p.cfg.InboundPort
	}
	return dst == addrPort(down.LocalAddr())
}

func (p *Proxy) dial(ctx context.Context, dir Direction, dst netip.AddrPort) (*net.TCPConn, error) {
	if p.cfg.Dial != nil {
		return p.cfg.Dial(ctx, dir, dst)
	}
	network, source := "tcp4", p.cfg.InboundSource
	if dst.Addr().Is6() {
		network, source = "tcp6", p.cfg.InboundSource6
	}
	if dir == Inbound {
		return p.dialer.DialTCP(ctx, network, netip.AddrPortFrom(source, 0), dst)
	}
	// With no source to bind, DialTCP would still bind to port 0, a slower
	// port choice than connect's own.
	c, err := p.dialer.DialContext(ctx, network, dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// pump copies both ways, the upstream-bound half on a second goroutine.
func (p *Proxy) pump(f *flow, e *Entry) Result {
	upDone := make(chan halfResult, 1)
	go func() { upDone <- p.copyHalf(f, f.up, f.down) }()
	dn := p.copyHalf(f, f.down, f.up)
	up := <-upDone
	f.down.Close()
	f.up.Close()
	e.BytesReceived, e.BytesSent = up.n, dn.n
	if why := f.aborted.Load(); why != 0 {
		return Result(why - 1)
	}
	for _, h := range []halfResult{up, dn} {
		if h.r != ResultOK {
			e.Detail = h.detail
			return h.r
		}
	}
	return ResultOK
}

// halfResult is how one direction of a flow ended.
type halfResult struct {
	n      int64
	r      Result
	detail string // why it was reset, for the log
}

// copyHalf moves bytes from src to dst until src ends, then half-closes
// dst (FIN goes on). A reset on either side resets both, so the live peer
// sees the reset too. It sets no deadlines: the registry's sweeper closes
// idle flows, and a drain closes what is left at its end.
func (p *Proxy) copyHalf(f *flow, dst, src *net.TCPConn) halfResult {
	sp, err := newSplicer(src, dst)
	if err != nil {
		reset(src)
		reset(dst)
		p.log.Warn("reset a connection: its socket could not be used", "err", err)
		return halfResult{0, ResultReset, "proxy: " + err.Error()}
	}
	defer sp.release()
	var total int64
	for {
		n, eof, atDst, err := sp.step()
		total += int64(n)
		if n > 0 {
			f.activity.Add(int64(n))
		}
		switch {
		case eof:
			// Pass the FIN on, unless the other half is done too: then
			// closing both sockets, next, sends it.
			if f.ended.Add(1) == 1 {
				_ = dst.CloseWrite()
			}
			return halfResult{total, ResultOK, ""}
		case err == nil:
			continue
		case errors.Is(err, net.ErrClosed):
			// The other half closed both sides, or the sweeper or a drain
			// did; whoever closed them says why.
			return halfResult{total, ResultOK, ""}
		}
		// ECONNRESET, EPIPE and the like: pass the reset on, saying whose.
		reset(src)
		reset(dst)
		detail, own := resetDetail(f, dst, src, atDst, err)
		if own {
			p.log.Warn("reset a connection: the proxy failed to move its bytes", "err", err, "bytes", total)
		}
		return halfResult{total, ResultReset, detail}
	}
}

// resetDetail names the side whose error reset the flow, "upstream" or
// "downstream", and the error; own is true for an error of the proxy's
// own (no descriptors, say), where the peers did nothing wrong.
func resetDetail(f *flow, dst, src *net.TCPConn, atDst bool, err error) (detail string, own bool) {
	side := src
	if atDst {
		side = dst
	}
	who := "downstream"
	if side == f.up {
		who = "upstream"
	}
	if !isPeerError(err) {
		return "proxy: " + err.Error(), true
	}
	return who + ": " + err.Error(), false
}

// isPeerError says whether err is the peer's doing (a reset, a closed
// pipe, a timeout) rather than a failure of the proxy's own.
func isPeerError(err error) bool {
	for _, e := range []error{syscall.ECONNRESET, syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH,
		syscall.ENETUNREACH, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reset closes c with a TCP reset rather than a FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func connectResult(err error) Result {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ResultConnectRefused
	case errors.As(err, &ne) && ne.Timeout():
		return ResultConnectTimeout
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return ResultConnectUnreach
	}
	return ResultConnectError
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
