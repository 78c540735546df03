package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/origdst"
)

// flow is one proxied connection: the downstream peer that connected and
// the upstream the proxy dialled for it.
type flow struct {
	down, up *net.TCPConn
	activity atomic.Int64 // bytes moved either way, as the copy loops report them
	drained  atomic.Bool  // closed by the end of a drain
	ended    atomic.Int32 // halves that have seen their source's FIN
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
	dst, err := origdst.Get(down)
	if err != nil {
		reset(down)
		p.log.Warn("cannot read the original destination", "direction", dir, "from", e.Downstream, "err", err)
		return ResultNoOriginalDst
	}
	e.OriginalDst = dst
	if dst == addrPort(down.LocalAddr()) {
		// Not redirected: someone dialled the listener itself. Forwarding
		// would connect the proxy to itself, again and again.
		reset(down)
		p.log.Warn("refused a connection to the proxy's own listener (a loop)", "direction", dir, "from", e.Downstream, "to", dst)
		return ResultLoop
	}
	up, err := p.dial(dir, dst)
	if err != nil {
		reset(down)
		r := connectResult(err)
		p.log.Debug("upstream connect failed", "direction", dir, "to", dst, "result", r, "err", err)
		return r
	}
	e.UpstreamLocal = addrPort(up.LocalAddr())
	f := &flow{down: down, up: up}
	p.flows.Store(f, struct{}{})
	defer p.flows.Delete(f)
	return p.pump(f, e)
}

func (p *Proxy) dial(dir Direction, dst netip.AddrPort) (*net.TCPConn, error) {
	d := &p.dialOut
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	if dir == Inbound {
		d = &p.dialIn4
		if dst.Addr().Is6() {
			d = &p.dialIn6
		}
	}
	c, err := d.Dial(network, dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// pump copies both ways, the upstream-bound half on a second goroutine.
func (p *Proxy) pump(f *flow, e *Entry) Result {
	type half struct {
		n int64
		r Result
	}
	upDone := make(chan half, 1)
	go func() {
		n, r := p.copyHalf(f, f.up, f.down)
		upDone <- half{n, r}
	}()
	nDown, rDown := p.copyHalf(f, f.down, f.up)
	h := <-upDone
	f.down.Close()
	f.up.Close()
	e.BytesReceived, e.BytesSent = h.n, nDown
	if f.drained.Load() {
		return ResultDrained
	}
	if h.r != ResultOK {
		return h.r
	}
	return rDown
}

// copyHalf moves bytes from src to dst with splice until src ends, then
// half-closes dst (FIN goes on). A reset on either side resets both, so the
// live peer sees the reset too. Deadlines tick every half idle timeout;
// after the idle timeout with no byte moved either way, both sides close.
func (p *Proxy) copyHalf(f *flow, dst, src *net.TCPConn) (int64, Result) {
	sp, err := newSplicer(src, dst)
	if err != nil {
		reset(src)
		reset(dst)
		return 0, ResultReset
	}
	tick := p.cfg.IdleTimeout / 2
	var total int64
	seen, quiet := f.activity.Load(), time.Duration(0)
	deadline := time.Time{}
	for {
		// Moving the deadline costs a timer update: do it at most once a
		// second, or once a tick when the tick is shorter.
		if now := time.Now(); deadline.Sub(now) < tick-min(tick/2, time.Second) {
			deadline = now.Add(tick)
			_ = src.SetReadDeadline(deadline)
			_ = dst.SetWriteDeadline(deadline)
		}
		n, eof, err := sp.step()
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
			return total, ResultOK
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			deadline = time.Time{}
			if now := f.activity.Load(); now != seen {
				seen, quiet = now, 0
				continue
			}
			if quiet += tick; quiet < p.cfg.IdleTimeout+tick {
				continue
			}
			reset(src)
			reset(dst)
			return total, ResultIdleTimeout
		case errors.Is(err, net.ErrClosed):
			// The other half closed both sides, or a drain did; whoever
			// closed them says why.
			return total, ResultOK
		default: // ECONNRESET, EPIPE and the like: pass the reset on
			reset(src)
			reset(dst)
			return total, ResultReset
		}
	}
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
