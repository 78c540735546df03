package proxy

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// breakers are a cluster's circuit breakers (Envoy's thresholds at the
// DEFAULT priority): beyond a limit, a request is answered 503 with the
// flag UO instead of adding to the load, and a retry is not made.
type breakers struct {
	maxConnections, maxPending, maxRequests, maxRetries int64
	// retryBudget, when set, replaces maxRetries: retries in flight may
	// be budgetPercent of the requests in flight, at least minRetries.
	retryBudget   bool
	budgetPercent float64
	minRetries    int64
	// connections open to the cluster's endpoints (HTTP/1 pools, the
	// HTTP/2 side's pools and TCP flows), requests waiting for a new
	// connection, requests in flight, retries in flight.
	connections, pending, requests, retries atomic.Int64
	// overflows by kind, for the metrics: cx, rq_pending, rq_retry.
	cxOverflow, rqOverflow, retryOverflow atomic.Uint64
}

// clusterCounters are a cluster's request and connection counters, as
// Envoy's cluster stats name them.
type clusterCounters struct {
	rqTotal, rqRetry, rqTimeout atomic.Uint64
	rqClass                     [6]atomic.Uint64 // by status class: 1xx … 5xx
	cxTotal, cxConnectFail      atomic.Uint64
}

// response counts an upstream response's status.
func (c *clusterCounters) response(code int) {
	if code >= 100 && code < 600 {
		c.rqClass[code/100].Add(1)
	}
}

// Envoy's defaults, where a cluster sets no circuit_breakers; Istio's
// passthrough clusters lift them (unlimited).
const (
	defaultMaxConnections = 1024
	defaultMaxPending     = 1024
	defaultMaxRequests    = 1024
	defaultMaxRetries     = 3
	unlimited             = 1<<32 - 1
)

func defaultBreakers() breakers {
	return breakers{maxConnections: defaultMaxConnections, maxPending: defaultMaxPending,
		maxRequests: defaultMaxRequests, maxRetries: defaultMaxRetries}
}

// acquire takes one of counter's limit, or says there is none left.
func acquire(counter *atomic.Int64, limit int64) bool {
	if counter.Add(1) > limit {
		counter.Add(-1)
		return false
	}
	return true
}

// errOverflow is a connection the max_connections breaker refused.
var errOverflow = errors.New("upstream overflow (circuit breaker)")

// newConnection takes a connection from max_connections.
func (b *breakers) newConnection() bool {
	if acquire(&b.connections, b.maxConnections) {
		return true
	}
	b.cxOverflow.Add(1)
	return false
}

// countedUpstream is a net.Conn of the HTTP/2 side's pools that gives its
// max_connections place back when closed.
type countedUpstream struct {
	net.Conn
	once sync.Once
	b    *breakers
}

func (c *countedUpstream) Close() error {
	c.once.Do(func() { c.b.connections.Add(-1) })
	return c.Conn.Close()
}

// clusterStats are the circuit breakers' overflow counters in Envoy's
// stat names (envoy_cluster_upstream_cx_overflow, …), per cluster.
type clusterStats struct{ p *Proxy }

var (
	cxOverflowDesc = prometheus.NewDesc("envoy_cluster_upstream_cx_overflow",
		"Connections refused by the cluster's max_connections circuit breaker.", []string{"cluster_name"}, nil)
	rqOverflowDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_pending_overflow",
		"Requests refused by the cluster's max_requests or max_pending_requests circuit breaker (503 UO).", []string{"cluster_name"}, nil)
	retryOverflowDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_retry_overflow",
		"Retries not made because of the cluster's max_retries circuit breaker.", []string{"cluster_name"}, nil)
	ejectedDesc = prometheus.NewDesc("envoy_cluster_outlier_detection_ejections_active",
		"Endpoints outlier detection has ejected now.", []string{"cluster_name"}, nil)
	ejectionsDesc = prometheus.NewDesc("envoy_cluster_outlier_detection_ejections_enforced_total",
		"Ejections outlier detection has made.", []string{"cluster_name"}, nil)
	healthyDesc = prometheus.NewDesc("envoy_cluster_membership_healthy",
		"Endpoints neither a health check nor outlier detection excludes.", []string{"cluster_name"}, nil)
	membersDesc = prometheus.NewDesc("envoy_cluster_membership_total",
		"Endpoints of the cluster.", []string{"cluster_name"}, nil)
	rqTotalDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_total",
		"Requests sent upstream (each try).", []string{"cluster_name"}, nil)
	rqRetryDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_retry",
		"Retries made.", []string{"cluster_name"}, nil)
	rqTimeoutDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_timeout",
		"Requests whose route timeout passed (504 UT).", []string{"cluster_name"}, nil)
	rqClassDesc = prometheus.NewDesc("envoy_cluster_upstream_rq_xx",
		"Upstream responses by status class.", []string{"cluster_name", "envoy_response_code_class"}, nil)
	cxTotalDesc = prometheus.NewDesc("envoy_cluster_upstream_cx_total",
		"Connections opened to the cluster's endpoints.", []string{"cluster_name"}, nil)
	cxFailDesc = prometheus.NewDesc("envoy_cluster_upstream_cx_connect_fail",
		"Connections that could not be opened.", []string{"cluster_name"}, nil)
)

func (cs clusterStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- cxOverflowDesc
	ch <- rqOverflowDesc
	ch <- retryOverflowDesc
	ch <- ejectedDesc
	ch <- ejectionsDesc
	ch <- healthyDesc
	ch <- membersDesc
	for _, d := range []*prometheus.Desc{rqTotalDesc, rqRetryDesc, rqTimeoutDesc, rqClassDesc, cxTotalDesc, cxFailDesc} {
		ch <- d
	}
}

func (cs clusterStats) Collect(ch chan<- prometheus.Metric) {
	for _, cl := range cs.p.gen.Load().clusters {
		ch <- prometheus.MustNewConstMetric(cxOverflowDesc, prometheus.CounterValue, float64(cl.cb.cxOverflow.Load()), cl.name)
		ch <- prometheus.MustNewConstMetric(rqOverflowDesc, prometheus.CounterValue, float64(cl.cb.rqOverflow.Load()), cl.name)
		ch <- prometheus.MustNewConstMetric(retryOverflowDesc, prometheus.CounterValue, float64(cl.cb.retryOverflow.Load()), cl.name)
		ch <- prometheus.MustNewConstMetric(ejectionsDesc, prometheus.CounterValue, float64(cl.ejectionsTotal.Load()), cl.name)
		st := &cl.stats
		for _, m := range []struct {
			d *prometheus.Desc
			v uint64
		}{{rqTotalDesc, st.rqTotal.Load()}, {rqRetryDesc, st.rqRetry.Load()}, {rqTimeoutDesc, st.rqTimeout.Load()},
			{cxTotalDesc, st.cxTotal.Load()}, {cxFailDesc, st.cxConnectFail.Load()}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), cl.name)
		}
		for class := 1; class <= 5; class++ {
			ch <- prometheus.MustNewConstMetric(rqClassDesc, prometheus.CounterValue, float64(st.rqClass[class].Load()), cl.name, strconv.Itoa(class))
		}
		s := cl.endpoints.Load()
		if s == nil {
			continue
		}
		ejected, healthy := 0, 0
		for _, e := range s.all {
			if e.health.ejected.Load() {
				ejected++
			}
			if e.healthy() {
				healthy++
			}
		}
		ch <- prometheus.MustNewConstMetric(ejectedDesc, prometheus.GaugeValue, float64(ejected), cl.name)
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, float64(healthy), cl.name)
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(len(s.all)), cl.name)
	}
}
