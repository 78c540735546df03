package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errDownstreamGone cancels a dial whose downstream has closed or reset.
var errDownstreamGone = errors.New("the downstream closed before the upstream accepted")

// errDrainEnded cancels what is still dialling when a drain ends.
var errDrainEnded = errors.New("the drain ended")

// watchAfter is how long a dial runs before the proxy starts watching its
// downstream: a dial to a live upstream is done well before, so the
// common path pays for a timer and nothing else.
const watchAfter = 10 * time.Millisecond

// dialWatch cancels a pending dial when its downstream goes away: a reset,
// or a FIN before any byte (a client that gave up; one that sent a request
// and half-closed is still waiting for the answer, and is kept). Without
// it a blackholed upstream would hold the connection's descriptors, its
// goroutine and its connection slot for the whole connect timeout.
type dialWatch struct {
	down   *net.TCPConn
	cancel func(cause error)
	timer  *time.Timer
	done   chan struct{} // the watcher's end (buffered: it never waits)
	gone   bool          // written by the watcher before it signals done
}

func watchDownstream(down *net.TCPConn, cancel func(cause error)) *dialWatch {
	w := &dialWatch{down: down, cancel: cancel, done: make(chan struct{}, 1)}
	w.timer = time.AfterFunc(watchAfter, w.watch)
	return w
}

// newIdleWatch makes a watch to start later, and again (rearm): an HTTP
// connection keeps one for all its requests.
func newIdleWatch() *dialWatch {
	w := &dialWatch{done: make(chan struct{}, 1)}
	w.timer = time.AfterFunc(time.Hour, w.watch)
	w.timer.Stop()
	return w
}

// rearm starts watching down again, 10 ms from now.
func (w *dialWatch) rearm(down *net.TCPConn, cancel func(cause error)) {
	w.down, w.cancel, w.gone = down, cancel, false
	w.timer.Reset(watchAfter)
}

// watch runs on the timer's goroutine: it peeks at the downstream,
// waiting in the runtime's poller, until it sees the peer go or is
// stopped by a read deadline.
func (w *dialWatch) watch() {
	defer func() { w.done <- struct{}{} }()
	raw, err := w.down.SyscallConn()
	if err != nil {
		return
	}
	var b [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // nothing yet: wait for the next event
			case err != nil || n == 0:
				w.gone = true // reset, or FIN with nothing sent
				w.cancel(errDownstreamGone)
				return true
			}
			// The client has spoken: watch on, but for a reset only (a
			// FIN after bytes is a half-close, not a client leaving).
			return false
		}
	})
}

// stop ends the watching and says whether the downstream went away.
func (w *dialWatch) stop() bool {
	if w.timer.Stop() {
		return false // never started
	}
	// The watcher is running or ran: a read deadline in the past wakes it.
	_ = w.down.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	_ = w.down.SetReadDeadline(time.Time{})
	return w.gone
}

// isCanceled reports a dial that ended because its context did.
func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, syscall.ECANCELED)
}
