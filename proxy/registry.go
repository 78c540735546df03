package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// registry holds the live flows, for what acts on all of them: the idle
// sweeper and the end of a drain. It is sharded so that connections
// starting and ending at once rarely meet on a lock.
type registry struct {
	next   atomic.Uint32
	shards [64]struct {
		mu    sync.Mutex
		flows map[*flow]struct{}
	}
}

func (r *registry) add(f *flow) {
	f.shard = r.next.Add(1) % uint32(len(r.shards))
	s := &r.shards[f.shard]
	s.mu.Lock()
	if s.flows == nil {
		s.flows = make(map[*flow]struct{})
	}
	s.flows[f] = struct{}{}
	s.mu.Unlock()
}

func (r *registry) remove(f *flow) {
	s := &r.shards[f.shard]
	s.mu.Lock()
	delete(s.flows, f)
	s.mu.Unlock()
}

// each calls fn for every live flow, one shard locked at a time.
func (r *registry) each(fn func(*flow)) {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for f := range s.flows {
			fn(f)
		}
		s.mu.Unlock()
	}
}

// closeAll resets every live flow, recording why.
func (r *registry) closeAll(why Result) (n int) {
	r.each(func(f *flow) {
		f.abort(why)
		n++
	})
	return n
}

// sweep closes flows that moved no byte for their idle timeout: idle for
// TCP flows and HTTP connections between requests, stream for HTTP ones
// with a request in flight. It looks every quarter of the shorter
// timeout, so a flow goes between one and one and a quarter timeouts
// after its last byte. The copy loops need no timers of their own.
func (r *registry) sweep(shortest time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(max(shortest/4, 5*time.Millisecond))
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-stop:
			return
		case now = <-t.C:
		}
		r.each(func(f *flow) {
			if a := f.activity.Load(); a != f.seen || f.quietAt.IsZero() {
				f.seen, f.quietAt = a, now
				return
			}
			limit := f.idle
			if f.http && f.stage.Load() != stageIdle {
				limit = f.stream
			}
			if limit > 0 && now.Sub(f.quietAt) >= limit {
				f.abort(ResultIdleTimeout)
			}
		})
	}
}
