package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/shunt-dev/shunt/internal/envoyres"
)

// Istio's names for the sidecar's built-in clusters.
const (
	PassthroughCluster        = "PassthroughCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
)

// clusterKind is Envoy's cluster discovery type.
type clusterKind uint8

const (
	originalDst     clusterKind = iota // the connection's original destination
	staticEndpoints                    // a fixed list (STATIC, and DNS clusters once resolved)
)

// cluster is where a route or a TCP proxy sends traffic: Envoy's cluster,
// a set of endpoints, how to pick one, and an HTTP/1 connection pool per
// endpoint.
type cluster struct {
	name string
	kind clusterKind
	// services are the services its metadata names for Istio's stats
	// (filter_metadata istio.services), if any.
	services []envoyres.ServiceRef
	// source is the address upstream connections are made from
	// (upstream_bind_config): 127.0.0.6 for the inbound passthrough, so
	// the capture rules let them through; invalid for the kernel's choice.
	source, source6 netip.Addr
	connectTimeout  time.Duration

	endpoints atomic.Pointer[endpointSet] // staticEndpoints
	dns       *dnsCluster                 // STRICT_DNS, LOGICAL_DNS: how endpoints are found
	next      atomic.Uint32               // round robin
	lb        lbPolicy
	// panicThreshold is healthy_panic_threshold (50%); outlier and hc are
	// the cluster's outlier detection and active health checks, if any.
	panicThreshold int
	outlier        *outlierDetector
	hc             *healthCheck
	ejectionsTotal atomic.Uint64
	// config is the cluster's configuration (a reload keeps a cluster
	// whose configuration is the same); bgCtx and stopBG its background
	// work's context.
	config *clusterv3.Cluster
	bgCtx  context.Context
	stopBG context.CancelFunc
	// hashTableSize is RING_HASH's minimum ring size (1024) or MAGLEV's
	// table size (65537).
	hashTableSize uint64

	poolLimits poolLimits
	cb         breakers
	stats      *clusterCounters // kept across reloads, by name
	mu         sync.Mutex
	pools      map[netip.AddrPort]*pool
	// upstreamProtocol and transports: requests that came over HTTP/2
	// go upstream through net/http's pools (HTTP/1.1, HTTP/2).
	upstreamProtocol upstreamProtocol
	transports       [2]atomic.Pointer[http.Transport]
	// tls is its transport sockets.
	tls clusterTLS
}

// tlsFor is the TLS to originate to an endpoint, nil for plaintext.
func (c *cluster) tlsFor(addr netip.AddrPort) *tlsContext {
	if len(c.tls.matches) == 0 {
		return c.tls.def
	}
	if s := c.endpoints.Load(); s != nil {
		if e := s.byAddr[addr]; e != nil {
			return e.tls
		}
	}
	return c.tls.forEndpoint(nil)
}

// errNoHealthyUpstream is a cluster with no endpoint to send to.
var errNoHealthyUpstream = errors.New("no healthy upstream")

// pick chooses the endpoint for a connection whose original destination
// is dst, by the cluster's policy (the hash policies at random: no key).
func (c *cluster) pick(dst netip.AddrPort) (netip.AddrPort, error) {
	return c.pickKey(dst, 0, false)
}

// pickKey is pick with a request's hash key, for RING_HASH and MAGLEV.
func (c *cluster) pickKey(dst netip.AddrPort, key uint64, hasKey bool) (netip.AddrPort, error) {
	if c.kind == originalDst {
		return dst, nil
	}
	s := c.endpoints.Load()
	if s == nil || len(s.use) == 0 {
		return netip.AddrPort{}, errNoHealthyUpstream
	}
	return c.pickFrom(s, key, hasKey).addr, nil
}

// begin counts a request in flight to ep (LEAST_REQUEST weighs by it);
// call the returned function when it ends.
func (c *cluster) begin(ep netip.AddrPort) func() {
	if c.lb != lbLeastRequest {
		return func() {}
	}
	s := c.endpoints.Load()
	if s == nil {
		return func() {}
	}
	e := s.byAddr[ep]
	if e == nil {
		return func() {}
	}
	e.active.Add(1)
	return func() { e.active.Add(-1) }
}

// sourceFor is the address to dial dst from, if the cluster binds one.
func (c *cluster) sourceFor(dst netip.AddrPort) netip.Addr {
	if dst.Addr().Is6() {
		return c.source6
	}
	return c.source
}

// pool is the endpoint's HTTP/1 pool, made on first use.
func (c *cluster) pool(ep netip.AddrPort) *pool {
	c.mu.Lock()
	defer c.mu.Unlock()
	pl := c.pools[ep]
	if pl == nil {
		if c.pools == nil {
			c.pools = make(map[netip.AddrPort]*pool)
		}
		pl = &pool{addr: ep, limits: &c.poolLimits, open: &c.cb.connections}
		c.pools[ep] = pl
	}
	return pl
}

// sweepPools closes connections idle past the idle timeout and forgets
// pools that are empty and unused (an original-destination cluster makes
// one per address it has seen, as Envoy makes hosts).
func (c *cluster) sweepPools(now time.Time) {
	c.mu.Lock()
	pools := make([]*pool, 0, len(c.pools))
	for _, pl := range c.pools {
		pools = append(pools, pl)
	}
	c.mu.Unlock()
	for _, pl := range pools {
		if pl.sweep(now) {
			c.mu.Lock()
			if pl.unused() {
				delete(c.pools, pl.addr)
			}
			c.mu.Unlock()
		}
	}
}

// dialContext bounds a dial by the cluster's connect timeout.
func (c *cluster) dialContext(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.connectTimeout)
}

// closeIdle closes every idle pooled connection (the proxy is stopping).
func (c *cluster) closeIdle() {
	c.closeTransports()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pl := range c.pools {
		pl.closeIdle()
	}
}
