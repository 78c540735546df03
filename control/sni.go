package control

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// sniTarget is a host the sidecars reach by the SNI of the app's TLS,
// not by an address: a ServiceEntry's host with no address, on a TLS or
// HTTPS port, and its cluster.
type sniTarget struct{ host, cluster string }

// tlsPort says a port carries TLS the app speaks itself (Istio's TLS and
// HTTPS protocols): the sidecar can tell its host by SNI.
func tlsPort(p Port) bool { return p.Protocol == "tls" || p.Protocol == "https" }

// sniChains are the outbound chains chosen by the SNI of the app's TLS,
// as Istio's: on each port, a chain per match of the VirtualServices'
// tls routes bound to the sidecars (its sniHosts, sent on unopened to
// the route's destinations by weight), then one per host of targets
// no route took, to its own cluster. The chains match no address: an
// address chain of the port takes its own addresses first.
func (c *compiler) sniChains(targets map[uint16][]sniTarget) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	taken := map[uint16]map[string]string{} // port → SNI → the VirtualService that has it
	take := func(port uint16, sni, by string) bool {
		if taken[port] == nil {
			taken[port] = map[string]string{}
		}
		if taken[port][sni] != "" {
			return false
		}
		taken[port][sni] = by
		return true
	}
	add := func(name string, port uint16, names []string, backends []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight) {
		fc := c.tcpChain(fmt.Sprintf("0.0.0.0_%d", port), name, names, backends, map[string]bool{})
		fc.FilterChainMatch.DestinationPort, fc.FilterChainMatch.TransportProtocol = wrapperspb.UInt32(uint32(port)), "tls"
		out = append(out, fc)
	}
	seen := map[*VirtualService]bool{}
	for _, host := range slices.Sorted(maps.Keys(c.rules.vs)) {
		vs := c.rules.vs[host]
		if seen[vs] {
			continue
		}
		seen[vs] = true
		key := vs.Namespace + "/" + vs.Name
		for _, r := range vs.TLS {
			path := fmt.Sprintf("spec.tls[%d]", r.Index)
			for _, m := range r.Match {
				if !vs.l4Bound(m, "mesh") {
					continue
				}
				if m.Port == 0 {
					c.report(vs, path+".match.port", "none: the sidecars take a tls match on the port it names")
					continue
				}
				var names []string
				for _, sni := range m.SNIHosts {
					if take(m.Port, sni, key) {
						names = append(names, sni)
					} else if taken[m.Port][sni] != key {
						c.report(vs, path, fmt.Sprintf("SNI %s on port %d is %s's already: left out", sni, m.Port, taken[m.Port][sni]))
					}
				}
				if len(names) == 0 {
					continue
				}
				backends := c.l4Backends(vs, r, m.Port, path)
				add(fmt.Sprintf("%s-%s-tls[%d]", strings.Join(names, ","), key, r.Index), m.Port, names, backends)
			}
		}
	}
	for _, port := range slices.Sorted(maps.Keys(targets)) {
		for _, t := range targets[port] {
			if take(port, t.host, t.cluster) {
				add(fmt.Sprintf("%s_%d", t.host, port), port, []string{t.host},
					[]*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: t.cluster, Weight: 1}})
			}
		}
	}
	return out
}
