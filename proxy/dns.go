package proxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"google.golang.org/protobuf/types/known/structpb"
)

// hostPort is a DNS cluster's endpoint as configured: a name (or an IP)
// and a port; path is where the configuration says it, for messages.
type hostPort struct {
	host             string
	port             uint16
	weight, priority uint32
	path             string
	tlsMatch         *structpb.Struct // its envoy.transport_socket_match metadata
}

// dnsCluster is how a STRICT_DNS or LOGICAL_DNS cluster finds its
// endpoints: every address of every name (strict), or the first address
// of its one name (logical), looked up again every refresh.
type dnsCluster struct {
	hosts   []hostPort
	logical bool
	family  clusterv3.Cluster_DnsLookupFamily
	refresh time.Duration
}

// resolveFunc looks a name up.
type resolveFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func systemResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// lookupTimeout bounds one round of lookups.
const lookupTimeout = 5 * time.Second

// resolveAll looks up every DNS cluster's endpoints once, in parallel, as
// Envoy warms its clusters before its listeners take connections.
func (p *Proxy) resolveAll(ctx context.Context, clusters map[string]*cluster) {
	var wg sync.WaitGroup
	for _, cl := range clusters {
		if cl.dns != nil {
			wg.Go(func() { p.resolve(ctx, cl) })
		}
	}
	wg.Wait()
}

// refreshDNS looks DNS clusters up again every refresh until their
// background context ends.
func (p *Proxy) refreshDNS(clusters map[string]*cluster) {
	for _, cl := range clusters {
		if cl.dns == nil {
			continue
		}
		go every(cl.bgCtx, cl.dns.refresh, func() { p.resolve(cl.bgCtx, cl) })
	}
}

// resolve updates cl's endpoints. A failed lookup keeps what the name
// resolved to before, as Envoy does; a name that resolves to nothing
// leaves the cluster without its endpoints (UH).
func (p *Proxy) resolve(ctx context.Context, cl *cluster) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	resolve := p.cfg.Resolve
	if resolve == nil {
		resolve = systemResolve
	}
	var eps []*endpoint
	failed := false
	for _, h := range cl.dns.hosts {
		var addrs []netip.Addr
		if ip, err := netip.ParseAddr(h.host); err == nil {
			addrs = []netip.Addr{ip}
		} else if addrs, err = resolve(ctx, h.host); err != nil {
			p.log.Warn("DNS lookup failed", "cluster", cl.name, "host", h.host, "err", err)
			failed = true
			continue
		}
		addrs = byFamily(addrs, cl.dns.family)
		if cl.dns.logical && len(addrs) > 1 {
			addrs = addrs[:1]
		}
		for _, a := range addrs {
			eps = append(eps, &endpoint{addr: netip.AddrPortFrom(a.Unmap(), h.port), weight: h.weight, priority: h.priority})
		}
	}
	if failed && len(eps) == 0 {
		return
	}
	slices.SortFunc(eps, func(a, b *endpoint) int { return a.addr.Compare(b.addr) })
	if old := cl.endpoints.Load(); old == nil || !sameEndpoints(old.all, eps) {
		cl.mu.Lock()
		cl.setEndpoints(eps)
		cl.mu.Unlock()
		p.log.Debug("cluster endpoints", "cluster", cl.name, "endpoints", len(eps))
	}
}

// byFamily keeps the addresses dns_lookup_family asks for: V4_ONLY and
// V6_ONLY one family; AUTO IPv6 if there is any, else IPv4;
// V4_PREFERRED the reverse; ALL both.
func byFamily(addrs []netip.Addr, family clusterv3.Cluster_DnsLookupFamily) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Unmap().Is4() {
			v4 = append(v4, a.Unmap())
		} else {
			v6 = append(v6, a)
		}
	}
	switch family {
	case clusterv3.Cluster_V4_ONLY:
		return v4
	case clusterv3.Cluster_V6_ONLY:
		return v6
	case clusterv3.Cluster_V4_PREFERRED:
		if len(v4) > 0 {
			return v4
		}
		return v6
	case clusterv3.Cluster_ALL:
		return append(v4, v6...)
	}
	if len(v6) > 0 {
		return v6
	}
	return v4
}

// sameEndpoints says two sorted endpoint lists name the same endpoints
// with the same weights and priorities (a lookup that changed nothing
// keeps the set, its counters and its ring).
func sameEndpoints(a, b []*endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y *endpoint) bool {
		return x.addr == y.addr && x.weight == y.weight && x.priority == y.priority
	})
}

// every runs fn every period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
