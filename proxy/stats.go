package proxy

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// rqStats are request counters in Envoy's names, kept by a cluster
// (cluster.<name>.*) and by a route that sets stat_prefix
// (vhost.<virtual host>.route.<stat_prefix>.*). A nil *rqStats counts
// nothing: a route without stat_prefix has none, as in Envoy.
type rqStats struct {
	// Per try: upstream_rq_total, upstream_rq_retry, upstream_rq_timeout,
	// and the upstream's answers by class and by code.
	total, retry, timeout atomic.Uint64
	class                 [6]atomic.Uint64
	codes                 atomic.Pointer[[500]atomic.Uint64] // 100…599, made at the first answer
	// Per request: upstream_rq_retry_success, upstream_rq_retry_limit_exceeded,
	// upstream_rq_retry_overflow, upstream_rq_time.
	retrySuccess, retryLimit, retryOverflow atomic.Uint64
	time                                    msHistogram
}

func (s *rqStats) try() {
	if s != nil {
		s.total.Add(1)
	}
}

func (s *rqStats) retried() {
	if s != nil {
		s.retry.Add(1)
	}
}

func (s *rqStats) timedOut() {
	if s != nil {
		s.timeout.Add(1)
	}
}

func (s *rqStats) overflowed() {
	if s != nil {
		s.retryOverflow.Add(1)
	}
}

// response counts an upstream answer's status.
func (s *rqStats) response(code int) {
	if s == nil || code < 100 || code > 599 {
		return
	}
	s.class[code/100].Add(1)
	c := s.codes.Load()
	if c == nil {
		s.codes.CompareAndSwap(nil, new([500]atomic.Uint64))
		c = s.codes.Load()
	}
	c[code-100].Add(1)
}

// done counts a finished request by its record: how its retries ended
// and, when an upstream answered, its time.
func (s *rqStats) done(rec *accesslog.Record) {
	if s == nil || rec.AttemptCount == 0 {
		return
	}
	if rec.Flags&accesslog.UpstreamRetryLimitExceeded != 0 {
		s.retryLimit.Add(1)
	} else if rec.AttemptCount > 1 && rec.ResponseDuration >= 0 {
		s.retrySuccess.Add(1)
	}
	if rec.ResponseDuration >= 0 {
		s.time.observe(rec.Duration)
	}
}

// msHistogram is a histogram of durations in milliseconds over Envoy's
// buckets, lock-free to observe.
type msHistogram struct {
	counts [20]atomic.Uint64 // envoyBuckets, then +Inf
	sumUS  atomic.Uint64     // microseconds
}

func (h *msHistogram) observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i := 0
	for i < len(envoyBuckets) && ms > envoyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumUS.Add(uint64(d / time.Microsecond))
}

// snapshot gives the count, the sum in milliseconds and the cumulative
// count of each bucket, as Prometheus takes them.
func (h *msHistogram) snapshot() (uint64, float64, map[float64]uint64) {
	buckets := make(map[float64]uint64, len(envoyBuckets))
	var n uint64
	for i, le := range envoyBuckets {
		n += h.counts[i].Load()
		buckets[le] = n
	}
	n += h.counts[len(envoyBuckets)].Load()
	return n, float64(h.sumUS.Load()) / 1000, buckets
}

// hcmStats are an HTTP connection manager's counters under
// http.<stat_prefix>.*: its downstream requests, and its router's.
type hcmStats struct {
	rqTotal                                         atomic.Uint64
	rqClass                                         [6]atomic.Uint64
	rqTimeout, noRoute, noCluster, redirect, direct atomic.Uint64
	routed                                          atomic.Uint64
	rbacDenied                                      atomic.Uint64
	// tracing counts requests by their tracing decision's reason
	// (tracing.Reason).
	tracing [5]atomic.Uint64
}

// traced counts a request's tracing decision.
func (s *hcmStats) traced(r tracing.Reason) { s.tracing[r].Add(1) }

// done counts a finished request by its record.
func (s *hcmStats) done(rec *accesslog.Record) {
	s.rqTotal.Add(1)
	if strings.HasPrefix(rec.ResponseCodeDetails, "rbac_access_denied") {
		s.rbacDenied.Add(1)
	}
	if c := rec.ResponseCode; c >= 100 && c <= 599 {
		s.rqClass[c/100].Add(1)
	}
	switch {
	case rec.Flags&accesslog.NoRouteFound != 0:
		s.noRoute.Add(1)
		return
	case rec.Flags&accesslog.NoClusterFound != 0:
		s.noCluster.Add(1)
	case rec.ResponseCodeDetails == "direct_response":
		s.direct.Add(1)
	case rec.ResponseCodeDetails == "redirect":
		s.redirect.Add(1)
	case rec.ResponseCodeDetails == "request_overall_timeout":
		s.rqTimeout.Add(1)
	}
	s.routed.Add(1)
}

// statStore keeps stats by their Envoy names across reloads, as Envoy's
// store does: a reloaded route or connection manager with the same name
// goes on counting where the old one stopped.
type statStore struct {
	mu       sync.Mutex
	clusters map[string]*clusterCounters // by name
	routes   map[[2]string]*rqStats      // by virtual host and stat_prefix
	hcms     map[string]*hcmStats        // by stat_prefix
}

func newStatStore() *statStore {
	return &statStore{clusters: map[string]*clusterCounters{}, routes: map[[2]string]*rqStats{}, hcms: map[string]*hcmStats{}}
}

func (s *statStore) cluster(name string) *clusterCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clusters[name] == nil {
		s.clusters[name] = &clusterCounters{}
	}
	return s.clusters[name]
}

func (s *statStore) route(vhost, prefix string) *rqStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{vhost, prefix}
	if s.routes[k] == nil {
		s.routes[k] = &rqStats{}
	}
	return s.routes[k]
}

func (s *statStore) hcm(prefix string) *hcmStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hcms[prefix] == nil {
		s.hcms[prefix] = &hcmStats{}
	}
	return s.hcms[prefix]
}

// each calls route and hcm for every stat set it keeps, in no order.
func (s *statStore) each(route func(vhost, prefix string, st *rqStats), hcm func(prefix string, st *hcmStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, st := range s.routes {
		route(k[0], k[1], st)
	}
	for k, st := range s.hcms {
		hcm(k, st)
	}
}
