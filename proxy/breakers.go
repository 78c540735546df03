package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
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
	rqStats
	cxTotal, cxConnectFail atomic.Uint64
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
