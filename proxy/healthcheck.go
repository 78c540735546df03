package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// healthCheck is a cluster's active health check (Envoy's health_checks,
// one of them): every interval each endpoint is checked, by an HTTP GET
// or a TCP connect, within timeout; unhealthyThreshold failures in a row
// take it out, healthyThreshold successes bring it back (a new endpoint
// is out until its first success).
type healthCheck struct {
	interval, timeout                    time.Duration
	unhealthyThreshold, healthyThreshold int
	// HTTP: the path, the Host (the cluster's name by default, as
	// Envoy's), the statuses that count as healthy ([start, end) ranges;
	// 200 alone by default). TCP when path is "".
	path, host string
	expected   [][2]int
}

// runHealthChecks checks cl's endpoints until ctx ends; the first round
// is done before it returns (Envoy warms a cluster with it).
func (p *Proxy) runHealthChecks(ctx context.Context, cl *cluster) {
	p.healthRound(ctx, cl)
	go every(ctx, cl.hc.interval, func() { p.healthRound(ctx, cl) })
}

// healthRound checks every endpoint once, in parallel, and rebuilds the
// cluster's set if any changed state.
func (p *Proxy) healthRound(ctx context.Context, cl *cluster) {
	s := cl.endpoints.Load()
	if s == nil {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	changed := false
	for _, e := range s.all {
		wg.Go(func() {
			ok := p.check(ctx, cl, e)
			h := &e.health
			mu.Lock()
			defer mu.Unlock()
			first := !h.hcChecked
			h.hcChecked = true
			if ok {
				h.hcSuccesses++
				h.hcFailures = 0
				if h.hcFailed.Load() && (h.hcSuccesses >= cl.hc.healthyThreshold || first) {
					h.hcFailed.Store(false)
					changed = true
				}
				return
			}
			h.hcFailures++
			h.hcSuccesses = 0
			if !h.hcFailed.Load() && h.hcFailures >= cl.hc.unhealthyThreshold {
				h.hcFailed.Store(true)
				changed = true
			}
		})
	}
	wg.Wait()
	if changed {
		cl.refresh()
		p.log.Debug("health check changed endpoints' health", "cluster", cl.name)
	}
}

// check runs one health check against e.
func (p *Proxy) check(ctx context.Context, cl *cluster, e *endpoint) bool {
	ctx, cancel := context.WithTimeout(ctx, cl.hc.timeout)
	defer cancel()
	c, err := p.dial(ctx, Outbound, cl, e.addr)
	if err != nil {
		return false
	}
	defer c.Close()
	if cl.hc.path == "" {
		return true // TCP: the connect is the check
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	host := cl.hc.host
	if host == "" {
		host = cl.name
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Envoy/HC\r\nConnection: close\r\n\r\n", cl.hc.path, host); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	for _, r := range cl.hc.expected {
		if resp.StatusCode >= r[0] && resp.StatusCode < r[1] {
			return true
		}
	}
	return false
}
