package proxy

import (
	"errors"
	"io"
	"sync"
)

// keptBody is a request body read once from the client and kept, up to
// a bound, so that each try of the request can send it from its start:
// a retry sends what was kept, then goes on with what the client sends
// next, as Envoy's router does. A body that outgrows the bound is no
// longer kept (over): the try that has it is the request's last.
//
// The client is read on a goroutine of the body's own, when a try wants
// more, so that a try given up stops at once: its transport may wait for
// the try's body to end before it returns.
type keptBody struct {
	mu      sync.Mutex
	cond    sync.Cond
	src     io.Reader
	buf     []byte // the body's bytes [base, n)
	base, n int64
	limit   int64
	over    bool  // the body outgrew limit: only what cur still needs is kept
	want    bool  // a try waits for more of the client's body
	pumping bool  // the goroutine reading the client runs
	reading bool  // it is in a read of the client
	err     error // how the client's body ended (io.EOF: whole)
	stopped bool  // the request is over: no try will want more
	cur     *bodyTry
	whole   func() bool // called once the body is whole
}

// errTryOver ends the body of a try given up.
var errTryOver = errors.New("request body: the try was given up")

// newKeptBody keeps src up to limit; size is its length if known (else
// -1), whole a callback for its end.
func newKeptBody(src io.Reader, limit, size int64, whole func() bool) *keptBody {
	b := &keptBody{src: src, limit: limit, whole: whole}
	if size > 0 && size <= limit {
		b.buf = make([]byte, 0, size)
	}
	b.cond.L = &b.mu
	return b
}

// bodyTry is one try's reading of a keptBody.
type bodyTry struct {
	b     *keptBody
	pos   int64
	ended bool // given up
}

// restart starts the body over for a new try, which becomes the current
// one (ending the one before); false when the body outgrew its bound. A
// request without a body (nil) restarts as it is.
func (b *keptBody) restart() (*bodyTry, bool) {
	if b == nil {
		return nil, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return nil, false
	}
	if b.cur != nil {
		b.cur.ended = true
	}
	b.cur = &bodyTry{b: b}
	b.cond.Broadcast()
	return b.cur, true
}

// takeRetry takes a retry of a request whose body is kept (nil: none to
// keep): one of the circuit breakers' retries, then the body started over
// for it; neither, when either cannot be had.
func takeRetry(cl *cluster, rs *rqStats, kept *keptBody) (*bodyTry, bool) {
	if !acquireRetry(cl, rs) {
		return nil, false
	}
	t, ok := kept.restart()
	if !ok {
		cl.cb.retries.Add(-1) // the body outgrew its bound: the try before was the last
	}
	return t, ok
}

// received is how much of the body the client has sent.
func (b *keptBody) received() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// end gives the try up: its reading ends now, with errTryOver.
func (t *bodyTry) end() {
	t.b.mu.Lock()
	t.ended = true
	t.b.cond.Broadcast()
	t.b.mu.Unlock()
}

func (t *bodyTry) Read(p []byte) (int, error) {
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		switch {
		case t.ended:
			return 0, errTryOver
		case t.pos < b.n:
			m := copy(p, b.buf[t.pos-b.base:])
			t.pos += int64(m)
			b.trim()
			return m, nil
		case b.err != nil:
			return 0, b.err
		}
		if !b.want {
			b.want = true
			b.cond.Broadcast()
		}
		if !b.pumping && !b.stopped {
			b.pumping = true
			go b.pump()
		}
		b.cond.Wait()
	}
}

// pump reads the client's body as tries want it, until it ends.
func (b *keptBody) pump() {
	buf := getBuf()
	defer putBuf(buf)
	p := buf.b[:cap(buf.b)]
	b.mu.Lock()
	defer func() {
		b.pumping = false
		b.cond.Broadcast()
		b.mu.Unlock()
	}()
	for b.err == nil {
		for !b.want && !b.stopped {
			b.cond.Wait()
		}
		if b.stopped {
			return
		}
		b.want, b.reading = false, true
		b.mu.Unlock()
		m, err := b.src.Read(p)
		b.mu.Lock()
		b.reading = false
		b.buf = append(b.buf, p[:m]...)
		b.n += int64(m)
		if b.n > b.limit {
			b.over = true
		}
		if err != nil {
			b.err = err
			if err == io.EOF && b.whole != nil {
				b.whole()
			}
		}
		b.cond.Broadcast()
	}
}

// stop ends the body's use: its goroutine, if waiting, returns. A
// request without a body (nil) has nothing to stop.
func (b *keptBody) stop() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.stopped = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// finish stops the body's goroutine and waits for it to return;
// interrupt, called if it is reading the client, makes that read return.
// It says whether the client's body was read whole.
func (b *keptBody) finish(interrupt func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.cond.Broadcast()
	if b.reading {
		b.mu.Unlock()
		interrupt()
		b.mu.Lock()
	}
	for b.pumping {
		b.cond.Wait()
	}
	return b.err == io.EOF
}

// trim drops, once the body is over its bound, what the current try has
// sent.
func (b *keptBody) trim() {
	if !b.over || b.cur == nil || b.cur.pos == b.base {
		return
	}
	drop := b.cur.pos - b.base
	b.buf = b.buf[:copy(b.buf, b.buf[drop:])]
	b.base = b.cur.pos
	if cap(b.buf) > 64<<10 && len(b.buf) < 16<<10 {
		b.buf = append([]byte(nil), b.buf...) // let the kept bytes go
	}
}

// Close ends the try's reading; the client's body stays open for the next
// try (the stream closes it).
func (t *bodyTry) Close() error { return nil }
