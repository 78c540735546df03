package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// flow is one proxied connection: the downstream peer that connected and
// the upstream the proxy dialled for it, or, for HTTP, the upstream of
// the request in flight.
type flow struct {
	down, up sock
	http     bool
	httpUp   atomic.Pointer[upstreamConn] // HTTP: the request's upstream, nil between requests
	stage    atomic.Uint32                // HTTP: idle, awaiting a response, or responding
	activity atomic.Int64                 // bytes moved either way, as the copy loops report them
	rx, tx   atomic.Int64                 // L4: bytes from the client, and back to it
	tcp      *tcpSeries                   // L4: its Istio series while open (reporter only after the start)
	reported [2]int64                     // rx and tx already added to tcp (reporter only)
	ended    atomic.Int32                 // halves that have seen their source's FIN
	aborted  atomic.Uint32                // Result+1 when the sweeper or a drain closed it
	shard    uint32                       // its registry shard
	seen     int64                        // activity at the sweeper's last look (sweeper only)
	quietAt  time.Time                    // when the sweeper first saw it quiet (sweeper only)
	// idle and stream are its handler's idle timeouts (see sweep); 0
	// for none.
	idle, stream time.Duration
}

// An HTTP connection's stages, for the sweeper and the drain.
const (
	stageIdle       = iota // between requests
	stageAwaiting          // a request is in flight, no response yet
	stageResponding        // the response has started
)

// abort closes a flow from outside its goroutines, saying why. An L4
// flow, or an HTTP one at the drain's end, is reset both ways. An HTTP
// connection between requests is closed (FIN); one awaiting a response
// loses its upstream, and answers the client itself (408 for an idle
// stream); one whose response has started is reset.
func (f *flow) abort(why Result) {
	f.aborted.CompareAndSwap(0, uint32(why)+1)
	if !f.http {
		reset(f.down)
		reset(f.up)
		return
	}
	up := f.httpUp.Load()
	switch {
	case why == ResultDrained || f.stage.Load() == stageResponding:
		reset(f.down)
		if up != nil {
			reset(up.c)
		}
	case f.stage.Load() == stageIdle:
		f.down.Close()
	case up != nil:
		reset(up.c)
	default:
		reset(f.down)
	}
}

// pump copies both ways, the upstream-bound half on a second goroutine.
func (p *Proxy) pump(f *flow, rec *accesslog.Record) Result {
	upDone := make(chan halfResult, 1)
	go func() { upDone <- p.copyHalf(f, f.up, f.down) }()
	dn := p.copyHalf(f, f.down, f.up)
	up := <-upDone
	f.down.Close()
	f.up.Close()
	rec.BytesReceived, rec.BytesSent = up.n, dn.n
	if why := f.aborted.Load(); why != 0 {
		return Result(why - 1)
	}
	for _, h := range []halfResult{up, dn} {
		if h.r != ResultOK {
			rec.Flags = h.r.flags(h.upstream)
			rec.TerminationDetails = terminationDetails(h.r, h.detail)
			return h.r
		}
	}
	return ResultOK
}

// halfResult is how one direction of a flow ended.
type halfResult struct {
	n        int64
	r        Result
	detail   string // why it was reset, for the log
	upstream bool   // the reset came from the upstream
}

// copyHalf moves bytes from src to dst until src ends, then half-closes
// dst (FIN goes on). A reset on either side resets both, so the live peer
// sees the reset too. It sets no deadlines: the registry's sweeper closes
// idle flows, and a drain closes what is left at its end.
func (p *Proxy) copyHalf(f *flow, dst, src sock) halfResult {
	sp, err := newMover(src, dst)
	if err != nil {
		reset(src)
		reset(dst)
		p.log.Warn("reset a connection: its socket could not be used", "err", err)
		return halfResult{0, ResultReset, "proxy: " + err.Error(), false}
	}
	defer sp.release()
	var total int64
	for {
		n, eof, atDst, err := sp.step()
		total += int64(n)
		if n > 0 {
			f.activity.Add(int64(n))
			if dst == f.up {
				f.rx.Add(int64(n))
			} else {
				f.tx.Add(int64(n))
			}
		}
		switch {
		case eof:
			// Pass the FIN on, unless the other half is done too: then
			// closing both sockets, next, sends it.
			if f.ended.Add(1) == 1 {
				_ = dst.CloseWrite()
			}
			return halfResult{total, ResultOK, "", false}
		case err == nil:
			continue
		case errors.Is(err, net.ErrClosed):
			// The other half closed both sides, or the sweeper or a drain
			// did; whoever closed them says why.
			return halfResult{total, ResultOK, "", false}
		}
		// ECONNRESET, EPIPE and the like: pass the reset on, saying whose.
		reset(src)
		reset(dst)
		detail, own, upstream := resetDetail(f, dst, src, atDst, err)
		if own {
			p.log.Warn("reset a connection: the proxy failed to move its bytes", "err", err, "bytes", total)
		}
		return halfResult{total, ResultReset, detail, upstream}
	}
}

// resetDetail names the side whose error reset the flow, "upstream" or
// "downstream", and the error; own is true for an error of the proxy's
// own (no descriptors, say), where the peers did nothing wrong.
func resetDetail(f *flow, dst, src sock, atDst bool, err error) (detail string, own, upstream bool) {
	side := src
	if atDst {
		side = dst
	}
	who := "downstream"
	if side == f.up {
		who = "upstream"
	}
	if !isPeerError(err) {
		return "proxy: " + err.Error(), true, false
	}
	return who + ": " + err.Error(), false, side == f.up
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
func reset(c sock) {
	if c == nil {
		return // an HTTP/2 connection's flow has no one upstream
	}
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

// reportTCP adds what f moved since its last report to series.
func (f *flow) reportTCP(series *tcpSeries) {
	rx, tx := f.rx.Load(), f.tx.Load()
	if d := rx - f.reported[0]; d > 0 {
		series.received.Add(float64(d))
	}
	if d := tx - f.reported[1]; d > 0 {
		series.sent.Add(float64(d))
	}
	f.reported = [2]int64{rx, tx}
}
