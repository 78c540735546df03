package proxy

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// poolLimits bound a cluster's HTTP/1 pools.
type poolLimits struct {
	maxIdle     int           // idle connections kept per endpoint
	idleTimeout time.Duration // an idle connection older than this is closed
}

// defaultPoolLimits: Envoy's upstream idle timeout (an hour); idle
// connections per endpoint bounded, as Envoy's are not, so that a burst
// cannot leave thousands open.
var defaultPoolLimits = poolLimits{maxIdle: 128, idleTimeout: time.Hour}

// upstreamConn is one HTTP/1 connection to an endpoint.
type upstreamConn struct {
	c         sock
	src       countingConn // what r reads; counts toward the current client's flow
	r         *http1.Reader
	local     netip.AddrPort
	idleSince time.Time
	reused    bool // it has carried a request before this one
}

// pool holds one endpoint's idle HTTP/1 connections, newest on top.
type pool struct {
	addr     netip.AddrPort
	limits   *poolLimits
	mu       sync.Mutex
	idle     []*upstreamConn
	busy     int // connections handed out and not yet returned
	lastUsed time.Time
	// open counts the cluster's connections (max_connections): every
	// connection the pool closes gives its place back.
	open *atomic.Int64
}

// closeConn closes a pooled connection and gives its place back.
func (pl *pool) closeConn(uc *upstreamConn) {
	uc.c.Close()
	if pl.open != nil {
		pl.open.Add(-1)
	}
}

// get takes the newest idle connection that is still open, or nil.
func (pl *pool) get() *upstreamConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for len(pl.idle) > 0 {
		uc := pl.idle[len(pl.idle)-1]
		pl.idle[len(pl.idle)-1] = nil
		pl.idle = pl.idle[:len(pl.idle)-1]
		if uc.r.Buffered() == 0 && (time.Since(uc.idleSince) < recentlyIdle || open(uc.c)) {
			uc.reused = true
			pl.busy++
			return uc
		}
		pl.closeConn(uc)
	}
	pl.busy++ // the caller dials; put or drop returns it
	return nil
}

// put returns a connection that finished its exchange cleanly.
func (pl *pool) put(uc *upstreamConn, now time.Time) {
	pl.mu.Lock()
	pl.busy--
	pl.lastUsed = now
	if len(pl.idle) >= pl.limits.maxIdle {
		pl.mu.Unlock()
		pl.closeConn(uc)
		return
	}
	uc.idleSince = now
	pl.idle = append(pl.idle, uc)
	pl.mu.Unlock()
}

// drop accounts for a connection that was closed instead of returned (or
// a dial that failed).
func (pl *pool) drop(now time.Time) {
	pl.mu.Lock()
	pl.busy--
	pl.lastUsed = now
	pl.mu.Unlock()
}

// sweep closes connections idle past the timeout; it reports whether the
// pool is now unused (nothing idle, nothing busy, for a while).
func (pl *pool) sweep(now time.Time) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	keep := pl.idle[:0]
	for _, uc := range pl.idle {
		if now.Sub(uc.idleSince) > pl.limits.idleTimeout {
			pl.closeConn(uc)
			continue
		}
		keep = append(keep, uc)
	}
	clear(pl.idle[len(keep):])
	pl.idle = keep
	return pl.unusedLocked(now)
}

const poolForgetAfter = 5 * time.Second // Envoy's original-destination host cleanup interval

func (pl *pool) unusedLocked(now time.Time) bool {
	return len(pl.idle) == 0 && pl.busy == 0 && now.Sub(pl.lastUsed) > poolForgetAfter
}

func (pl *pool) unused() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.unusedLocked(time.Now())
}

// closeIdle closes every idle connection (a drain's end).
func (pl *pool) closeIdle() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, uc := range pl.idle {
		pl.closeConn(uc)
	}
	clear(pl.idle)
	pl.idle = pl.idle[:0]
}

// recentlyIdle: a connection back in the pool for less than this is
// taken without looking whether the upstream closed it. Servers close idle
// keep-alive connections after seconds (Node's 5 s is the shortest
// common default); one that closes sooner costs a safe request a retry.
const recentlyIdle = 500 * time.Millisecond

// open says whether an idle connection is still usable: no FIN, no reset
// and no stray bytes from the upstream, by one non-blocking peek.
func open(c sock) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		for {
			_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
				uintptr(unix.MSG_PEEK|unix.MSG_DONTWAIT), 0, 0)
			if errno == syscall.EINTR {
				continue
			}
			alive = errno == syscall.EAGAIN // nothing to read: neither data nor FIN
			return
		}
	})
	return alive
}
