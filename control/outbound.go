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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/xds"
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
func (c *compiler) outbound(prev *space) *space {
	sp := &space{hash: map[proto.Message]string{}, portRoutes: map[uint16]*routev3.RouteConfiguration{}}
	vhosts := map[uint16][]*routev3.VirtualHost{}
	httpPorts := map[uint16]bool{}       // ports with the chain 0.0.0.0_P
	byPort := map[uint16]bool{}          // ports whose route configuration "P" a chain names
	claimed := map[netip.AddrPort]bool{} // a port and address one chain has: Envoy refuses two
	var addrChains []*listenerv3.FilterChain
	var names []xds.NameEntry
	sniTargets := map[uint16][]sniTarget{} // hosts without addresses on TLS ports
	sp.clusters = c.builtinClusters()
	inMesh := func(ns string) bool { return c.m.inMesh(c.w, ns) }
	c.rules = c.w.rulesFor(c.n.Namespace, inMesh)
	scope := c.w.sidecarFor(c.n.Namespace, c.m.RootNamespace)
	for _, s := range c.w.servicesFor(c.n.Namespace) {
		if !inMesh(s.Namespace) {
			continue // outside the discovery selectors
		}
		s = c.cc.compiled(s)
		if s.Namespace == c.n.Namespace {
			sp.local = append(sp.local, s)
		}
		if !c.admitted(s, scope, inMesh) {
			continue // not among the namespace's Sidecar's egress hosts
		}
		var podAddrs []netip.Addr // a headless service's
		for _, p := range s.Ports {
			pp := c.cc.parts(c, s, p)
			if pp.headless {
				podAddrs = append(podAddrs, pp.addrs...)
			}
			sp.clusters = append(append(sp.clusters, pp.cluster), pp.subsetClusters...)
			if pp.cla != nil {
				sp.endpoints = append(append(sp.endpoints, pp.cla), pp.subsetCLAs...)
			}
			if pp.own != nil {
				sp.routes = append(sp.routes, pp.own)
			}
			if pp.vhost[0] != nil {
				same := 0
				if s.Namespace == c.n.Namespace {
					same = 1
				}
				vhosts[p.Port] = append(vhosts[p.Port], pp.vhost[same])
			}
			if pp.class == classHTTP {
				httpPorts[p.Port], byPort[p.Port] = true, true
				if pp.headless {
					continue
				}
			}
			if pp.headless && s.Resolution != "" && s.Resolution != ResolutionStatic {
				if tlsPort(p) {
					sniTargets[p.Port] = append(sniTargets[p.Port], sniTarget{s.Hostname, pp.cluster.GetName()})
				} else {
					c.cc.report(Problem{"ServiceEntry", s.Entry, "spec.addresses", fmt.Sprintf("none: %s's port %d, neither HTTP nor TLS, is reached only at an address", s.Hostname, p.Port)})
				}
				continue
			}
			var free []netip.Addr
			for _, a := range pp.addrs {
				if ap := netip.AddrPortFrom(a, p.Port); !claimed[ap] {
					claimed[ap] = true
					free = append(free, a)
				}
			}
			if len(free) > 0 && pp.headless {
				byPort[p.Port] = true
			}
			if len(free) == len(pp.addrs) {
				addrChains = append(addrChains, pp.chains...)
				continue
			}
			rds := strconv.Itoa(int(p.Port))
			if pp.own != nil {
				rds = pp.own.Name
			}
			addrChains = append(addrChains, c.addrChains(pp, p.Port, clusterName("outbound", p.Port, "", s.Hostname), rds, free)...)
		}
		if e, ok := nameEntry(s, podAddrs); ok {
			names = append(names, e)
		}
	}
	sp.setNameTable(prev, names)
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		rc := prev.portRoute(port, vhosts[port])
		if rc == nil {
			rc = &routev3.RouteConfiguration{Name: strconv.Itoa(int(port)), VirtualHosts: append(slices.Clip(vhosts[port]), c.fallbackHost())}
		}
		sp.routes = append(sp.routes, rc)
		sp.portRoutes[port] = rc
		if httpPorts[port] {
			sp.httpPorts = append(sp.httpPorts, port)
		}
	}
	sp.addrChains = append(addrChains, c.sniChains(sniTargets)...)
	addrChains = sp.addrChains
	sp.listener = prev.sameListener(sp)
	if sp.listener == nil {
		l := c.virtualListener("virtualOutbound", OutboundPort, corev3.TrafficDirection_OUTBOUND)
		for _, port := range sp.httpPorts {
			l.FilterChains = append(l.FilterChains, chain(fmt.Sprintf("0.0.0.0_%d", port), port, nil, false,
				c.hcm(outboundStatPrefix(port), strconv.Itoa(int(port)), nil)))
		}
		passthrough := proxy.PassthroughCluster
		if c.m.RegistryOnly {
			passthrough = proxy.BlackHoleCluster
		}
		l.FilterChains = append(l.FilterChains, addrChains...)
		// The catch-all, and on a port with chains by SNI the same for
		// what no SNI takes (past the port, a connection no chain
		// matches is refused).
		ports := []uint16{0}
		for _, fc := range addrChains {
			if port := uint16(fc.GetFilterChainMatch().GetDestinationPort().GetValue()); len(fc.GetFilterChainMatch().GetServerNames()) > 0 &&
				!slices.Contains(ports, port) && !slices.Contains(sp.httpPorts, port) {
				ports = append(ports, port)
			}
		}
		for _, port := range ports {
			name := "virtualOutbound-catchall"
			if port != 0 {
				name = fmt.Sprintf("0.0.0.0_%d-passthrough", port)
			}
			l.FilterChains = append(l.FilterChains, chain(name+"-http", port, nil, true, c.hcm(passthrough, "",
				&routev3.RouteConfiguration{Name: "virtualOutbound-catchall-http", VirtualHosts: []*routev3.VirtualHost{c.fallbackHost()}})),
				chain(name+"-tcp", port, nil, false, c.tcpProxy(passthrough)))
		}
		sp.listener = l
	}
	slices.SortFunc(sp.routes, byName((*routev3.RouteConfiguration).GetName))
	slices.SortFunc(sp.clusters, byName((*clusterv3.Cluster).GetName))
	slices.SortFunc(sp.endpoints, byName((*endpointv3.ClusterLoadAssignment).GetClusterName))
	sp.hashAll(prev)
	return sp
}

// admitted says whether the namespace's sidecars get s: it is exported
// to them, in the mesh, and among their Sidecar's egress hosts.
func (c *compiler) admitted(s *Service, scope *Sidecar, inMesh func(string) bool) bool {
	return s.visibleFrom(c.n.Namespace) && inMesh(s.Namespace) && (scope == nil || scope.admits(s, c.n.Namespace))
}

func outboundStatPrefix(port uint16) string { return fmt.Sprintf("outbound_0.0.0.0_%d", port) }

// serviceCluster is a service port's cluster, Istio's outbound|P||host:
// its endpoints over EDS, least request, no circuit breaking; a headless
// service's goes to the original destination. HTTP/1.1 upstream for
// "http" ports; for the rest of HTTP (http2, grpc) and undeclared ports
// the client's protocol is kept.
func (c *compiler) serviceCluster(s *Service, p Port, name string) *clusterv3.Cluster {
	var cl *clusterv3.Cluster
	switch {
	case s.Resolution == ResolutionDNS || s.Resolution == ResolutionDNSRR:
		cl = c.dnsCluster(s, p, name)
	case s.Resolution == ResolutionNone || s.Resolution == "" && len(s.Addresses) == 0:
		cl = envoyres.OriginalDst(name, c.m.ConnectTimeout)
	default:
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

// dnsCluster is a DNS ServiceEntry's cluster: its endpoints' names (or
// its host's) resolved by the sidecar, every address (STRICT_DNS) or one
// at a time (LOGICAL_DNS, for DNS_ROUND_ROBIN).
func (c *compiler) dnsCluster(s *Service, p Port, name string) *clusterv3.Cluster {
	kind := clusterv3.Cluster_STRICT_DNS
	if s.Resolution == ResolutionDNSRR {
		kind = clusterv3.Cluster_LOGICAL_DNS
	}
	group := &endpointv3.LocalityLbEndpoints{}
	for _, eps := range c.w.Endpoints[s.Namespace+"/"+s.Name] {
		for _, e := range eps {
			port, ok := e.Ports[p.Name]
			if !ok {
				continue
			}
			host := e.Host
			if host == "" {
				host = e.Addr.String()
			}
			group.LbEndpoints = append(group.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}})
			if kind == clusterv3.Cluster_LOGICAL_DNS {
				break // one name: LOGICAL_DNS takes one
			}
		}
	}
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: kind},
		ConnectTimeout: durationpb.New(c.m.ConnectTimeout), LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers: envoyres.UnlimitedBreakers(), TypedExtensionProtocolOptions: envoyres.UseDownstreamProtocol(),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{group}}}
}

// loadAssignment is a service port's ready endpoints.
func (c *compiler) loadAssignment(s *Service, p Port, name string) *endpointv3.ClusterLoadAssignment {
	return assignment(name, c.w.readyEndpoints(s, p), c.meshPod())
}

// assignment is cluster name's load assignment of eps, one locality;
// meshed (nil: none) says which pods' endpoints carry the mesh's
// metadata.
func assignment(name string, eps []endpoint, meshed func(string) bool) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(eps) == 0 {
		return cla
	}
	group := &endpointv3.LocalityLbEndpoints{}
	for _, e := range eps {
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: envoyres.SocketAddress(e.addr)}}}
		markMesh(lbe, e.pod, meshed)
		group.LbEndpoints = append(group.LbEndpoints, lbe)
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
