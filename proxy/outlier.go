package proxy

import (
	"context"
	"math"
	"net/netip"
	"sync"
	"time"
)

// setEndpoints makes eps the cluster's endpoints, keeping what health
// checking and outlier detection knew of those it had already.
func (c *cluster) setEndpoints(eps []*endpoint) {
	old := c.endpoints.Load()
	for _, e := range eps {
		var o *endpoint
		if old != nil {
			o = old.byAddr[e.addr]
		}
		switch {
		case o != nil && o != e:
			e.health.hcFailed.Store(o.health.hcFailed.Load())
			e.health.ejected.Store(o.health.ejected.Load())
			e.health.ejections, e.health.ejectedAt = o.health.ejections, o.health.ejectedAt
		case o == nil && c.hc != nil:
			e.health.hcFailed.Store(true) // out until its first health check passes
		}
	}
	c.endpoints.Store(newEndpointSetPanic(eps, c.panicThreshold))
}

// refresh rebuilds the set after an endpoint's health changed.
func (c *cluster) refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.endpoints.Load(); s != nil {
		c.endpoints.Store(newEndpointSetPanic(s.all, c.panicThreshold))
	}
}

// outlierDetector is Envoy's outlier_detection: endpoints that fail in a
// row, or succeed much less often than the others, are ejected for a
// time that grows with each ejection.
type outlierDetector struct {
	consec5xx, consecGateway, consecLocal    int32 // thresholds (0: off)
	enforce5xx, enforceGateway, enforceLocal int   // enforcing_* percentages
	splitLocal                               bool  // split_external_local_origin_errors
	interval, baseEjection, maxEjection      time.Duration
	maxEjectionPercent                       int
	successRateMinHosts, successRateVolume   int64
	successRateStdevFactor                   float64
	enforceSuccessRate                       int
	mu                                       sync.Mutex
}

// outcome kinds an attempt reports to the detector.
const (
	outcomeSuccess = iota
	outcome5xx     // an upstream 5xx (502, 503, 504 also a gateway failure)
	outcomeLocal   // no response: connect failure, timeout, reset
)

// report counts an attempt's outcome against ep, and ejects it when a
// threshold is reached.
func (c *cluster) report(ep *endpoint, code int, local bool) {
	d := c.outlier
	if d == nil || ep == nil {
		return
	}
	h := &ep.health
	h.requests.Add(1)
	gateway := code == 502 || code == 503 || code == 504
	switch {
	case local && d.splitLocal:
		if n := h.consecLocal.Add(1); d.consecLocal > 0 && n >= d.consecLocal {
			c.eject(ep, d.enforceLocal)
		}
		return
	case local || code >= 500:
		if local {
			gateway = true // a connect failure or timeout is a gateway failure too
		}
		n5 := h.consec5xx.Add(1)
		ng := h.consecGateway.Load()
		if gateway {
			ng = h.consecGateway.Add(1)
		}
		if d.consec5xx > 0 && n5 >= d.consec5xx {
			c.eject(ep, d.enforce5xx)
		} else if d.consecGateway > 0 && ng >= d.consecGateway {
			c.eject(ep, d.enforceGateway)
		}
		return
	}
	h.successes.Add(1)
	h.consec5xx.Store(0)
	h.consecGateway.Store(0)
	h.consecLocal.Store(0)
}

// eject takes ep out, with probability enforce%, unless that would put
// more than max_ejection_percent of the cluster out (one endpoint may
// always go).
func (c *cluster) eject(ep *endpoint, enforce int) {
	d := c.outlier
	d.mu.Lock()
	defer d.mu.Unlock()
	h := &ep.health
	h.consec5xx.Store(0)
	h.consecGateway.Store(0)
	h.consecLocal.Store(0)
	if h.ejected.Load() || enforce < 100 && int(randPercent()) >= enforce {
		return
	}
	s := c.endpoints.Load()
	ejected := 0
	for _, e := range s.all {
		if e.health.ejected.Load() {
			ejected++
		}
	}
	if ejected > 0 && (ejected+1)*100 > len(s.all)*d.maxEjectionPercent {
		return
	}
	h.ejections++
	h.ejectedAt = time.Now().UnixNano()
	h.ejected.Store(true)
	c.ejectionsTotal.Add(1)
	c.refresh()
}

// detectOutliers runs the detector's interval: it returns endpoints
// whose ejection time is over (base_ejection_time × times ejected, at
// most max_ejection_time) and judges success rates.
func (c *cluster) detectOutliers(ctx context.Context) {
	every(ctx, c.outlier.interval, func() { c.outlierInterval(time.Now()) })
}

func (c *cluster) outlierInterval(now time.Time) {
	d := c.outlier
	s := c.endpoints.Load()
	if s == nil {
		return
	}
	changed := false
	d.mu.Lock()
	for _, e := range s.all {
		h := &e.health
		if !h.ejected.Load() {
			continue
		}
		ejectedFor := min(d.baseEjection*time.Duration(h.ejections), max(d.maxEjection, d.baseEjection))
		if now.UnixNano()-h.ejectedAt >= int64(ejectedFor) {
			h.ejected.Store(false)
			changed = true
		}
	}
	d.mu.Unlock()
	if changed {
		c.refresh()
	}
	c.successRateEjections(s)
}

// successRateEjections ejects the endpoints whose success rate over the
// interval falls below the mean by more than stdev_factor/1000 standard
// deviations, when enough endpoints saw enough requests.
func (c *cluster) successRateEjections(s *endpointSet) {
	d := c.outlier
	type sample struct {
		e    *endpoint
		rate float64
	}
	var samples []sample
	for _, e := range s.all {
		n := e.health.requests.Swap(0)
		ok := e.health.successes.Swap(0)
		if n >= d.successRateVolume && d.successRateVolume > 0 {
			samples = append(samples, sample{e, float64(ok) / float64(n) * 100})
		}
	}
	if int64(len(samples)) < d.successRateMinHosts || d.enforceSuccessRate == 0 {
		return
	}
	mean := 0.0
	for _, x := range samples {
		mean += x.rate
	}
	mean /= float64(len(samples))
	variance := 0.0
	for _, x := range samples {
		variance += (x.rate - mean) * (x.rate - mean)
	}
	limit := mean - d.successRateStdevFactor*math.Sqrt(variance/float64(len(samples)))
	for _, x := range samples {
		if x.rate < limit {
			c.eject(x.e, d.enforceSuccessRate)
		}
	}
}

// reportAddr reports an attempt's outcome against the endpoint at addr
// (code 0 with local: no response).
func (c *cluster) reportAddr(addr netip.AddrPort, code int, local bool) {
	if c.outlier == nil {
		return
	}
	if s := c.endpoints.Load(); s != nil {
		if e := s.byAddr[addr]; e != nil {
			if code == 0 && !local {
				return // the client left: nothing to say of the endpoint
			}
			c.report(e, code, local)
		}
	}
}
