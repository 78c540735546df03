package control

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// outbound is the sidecar's outbound side: virtualOutbound, the route
// configurations its HTTP chains name, the service clusters and their
// endpoints.
//
// Per service port P: HTTP services share the chain 0.0.0.0_P (port P,
// any address) and the route configuration "P", a virtual host each,
// chosen by the request's Host; to a service's own cluster IPs its chain
// ADDR_P routes by the route configuration "HOST:P" to the service
// whatever the Host (Istio's would pass a Host it does not know, as
// nginx's upstream name, through to the original destination). A TCP
// service has the chain ADDR_P (its cluster IPs, or a headless service's
// endpoint addresses) to its cluster; a service whose protocol is not
// declared has both, the HTTP one taken when the client's first bytes
// are HTTP. Catch-all chains take the rest: passed through, or refused
// under REGISTRY_ONLY.
func (c *compiler) outbound() (*listenerv3.Listener, []*routev3.RouteConfiguration, []*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	l := c.virtualListener("virtualOutbound", OutboundPort, corev3.TrafficDirection_OUTBOUND)
	var clusters []*clusterv3.Cluster
	var cla []*endpointv3.ClusterLoadAssignment
	vhosts := map[uint16][]*routev3.VirtualHost{}
	httpPorts := map[uint16]bool{}       // ports with the chain 0.0.0.0_P
	byPort := map[uint16]bool{}          // ports whose route configuration "P" a chain names
	claimed := map[netip.AddrPort]bool{} // a port and address one chain has: Envoy refuses two
	var addrChains []*listenerv3.FilterChain
	var routes []*routev3.RouteConfiguration
	for _, s := range c.w.servicesFor(c.n.Namespace) {
		for _, p := range s.Ports {
			name := clusterName("outbound", p.Port, s.Hostname)
			class := classOf(p.Protocol)
			clusters = append(clusters, c.serviceCluster(s, p, name))
			headless := len(s.Addresses) == 0
			addrs := s.Addresses
			if headless {
				addrs = c.endpointAddrs(s, p)
			} else {
				cla = append(cla, c.loadAssignment(s, p, name))
			}
			rds := strconv.Itoa(int(p.Port))
			if class != classTCP {
				vhost := c.serviceHost(s, p, name)
				vhosts[p.Port] = append(vhosts[p.Port], vhost)
				if !headless {
					// To its own addresses a request reaches the service
					// whatever its Host says (nginx's upstream name, say).
					rds = vhost.Name
					routes = append(routes, &routev3.RouteConfiguration{Name: rds, VirtualHosts: []*routev3.VirtualHost{
						{Name: vhost.Name, Domains: []string{"*"}, Routes: vhost.Routes, IncludeRequestAttemptCount: true}}})
				}
			}
			if class == classHTTP {
				httpPorts[p.Port], byPort[p.Port] = true, true
				if headless {
					continue
				}
			}
			var free []netip.Addr
			for _, a := range addrs {
				if ap := netip.AddrPortFrom(a, p.Port); !claimed[ap] {
					claimed[ap] = true
					free = append(free, a)
				}
			}
			if len(free) == 0 {
				continue // no chain: one with no prefix would take every address
			}
			if headless {
				byPort[p.Port] = true
			}
			chainName := fmt.Sprintf("%s_%d", free[0], p.Port)
			hcm := c.hcm(outboundStatPrefix(p.Port), rds, nil)
			switch class {
			case classHTTP:
				addrChains = append(addrChains, chain(chainName, p.Port, hosts(free), false, hcm))
			case classAuto:
				addrChains = append(addrChains, chain(chainName+"-http", p.Port, hosts(free), true, hcm),
					chain(chainName, p.Port, hosts(free), false, c.tcpProxy(name)))
			default:
				addrChains = append(addrChains, chain(chainName, p.Port, hosts(free), false, c.tcpProxy(name)))
			}
		}
	}
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		name := strconv.Itoa(int(port))
		routes = append(routes, &routev3.RouteConfiguration{Name: name, VirtualHosts: append(vhosts[port], c.fallbackHost())})
		if httpPorts[port] {
			l.FilterChains = append(l.FilterChains, chain(fmt.Sprintf("0.0.0.0_%d", port), port, nil, false,
				c.hcm(outboundStatPrefix(port), name, nil)))
		}
	}
	l.FilterChains = append(l.FilterChains, addrChains...)
	passthrough := proxy.PassthroughCluster
	if c.m.RegistryOnly {
		passthrough = proxy.BlackHoleCluster
	}
	l.FilterChains = append(l.FilterChains,
		chain("virtualOutbound-catchall-http", 0, nil, true, c.hcm(passthrough, "",
			&routev3.RouteConfiguration{Name: "virtualOutbound-catchall-http", VirtualHosts: []*routev3.VirtualHost{c.fallbackHost()}})),
		chain("virtualOutbound-catchall-tcp", 0, nil, false, c.tcpProxy(passthrough)))
	return l, routes, clusters, cla
}

func outboundStatPrefix(port uint16) string { return fmt.Sprintf("outbound_0.0.0.0_%d", port) }

// serviceCluster is a service port's cluster, Istio's outbound|P||host:
// its endpoints over EDS, least request, no circuit breaking; a headless
// service's goes to the original destination. HTTP/1.1 upstream for
// "http" ports; for the rest of HTTP (http2, grpc) and undeclared ports
// the client's protocol is kept.
func (c *compiler) serviceCluster(s *Service, p Port, name string) *clusterv3.Cluster {
	var cl *clusterv3.Cluster
	if len(s.Addresses) == 0 {
		cl = envoyres.OriginalDst(name, c.m.ConnectTimeout)
	} else {
		cl = &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
			ConnectTimeout:   durationpb.New(c.m.ConnectTimeout), LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
			CircuitBreakers: envoyres.UnlimitedBreakers(), TypedExtensionProtocolOptions: envoyres.UseDownstreamProtocol()}
	}
	if p.Protocol == "http" || classOf(p.Protocol) == classTCP {
		cl.TypedExtensionProtocolOptions = nil
	}
	return cl
}

// loadAssignment is a service port's ready endpoints.
func (c *compiler) loadAssignment(s *Service, p Port, name string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	eps := c.w.endpoints(s, p)
	if len(eps) == 0 {
		return cla
	}
	group := &endpointv3.LocalityLbEndpoints{}
	for _, ap := range eps {
		group.LbEndpoints = append(group.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: envoyres.SocketAddress(ap)}}})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{group}
	return cla
}

// endpointAddrs are the addresses of a headless service port's ready
// endpoints.
func (c *compiler) endpointAddrs(s *Service, p Port) []netip.Addr {
	var out []netip.Addr
	for _, ap := range c.w.endpoints(s, p) {
		out = append(out, ap.Addr())
	}
	return slices.Compact(out)
}
