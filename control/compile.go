package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// The sidecar's ports, Istio's: where the capture sends outbound and
// inbound connections.
const (
	OutboundPort = 15001
	InboundPort  = 15006
)

// Resources are what one sidecar is sent: its listeners, the route
// configurations they name, its clusters and the endpoints of its EDS
// clusters; each kind sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment

	space       *space                   // the namespace's outbound side, shared
	ownClusters []*clusterv3.Cluster     // the sidecar's own: inbound
	own         map[proto.Message]string // the sidecar's own resources' content hashes
}

// Compile is what the sidecar n is sent from w under m, as istiod
// compiles it: virtualOutbound (15001) with a filter chain per service
// port, HTTP routed by host through route configurations named by port,
// TCP by cluster IP; virtualInbound (15006) with a chain per port of the
// services that select the pod; a cluster per service port (EDS) and
// per inbound port, and Istio's PassthroughCluster,
// InboundPassthroughCluster and BlackHoleCluster.
func Compile(w *World, n Node, m Mesh) (*Resources, error) {
	cc, err := NewCompiler(m)
	if err != nil {
		return nil, err
	}
	return cc.Compile(w, n), nil
}

// Compile is what the sidecar (or gateway) n is sent from w.
func (cc *Compiler) Compile(w *World, n Node) *Resources {
	if n.Router {
		return cc.compileGateway(w, n)
	}
	c := &compiler{w: w, n: n, m: cc.mesh, cc: cc}
	for _, a := range n.IPs {
		c.v6 = c.v6 || a.Is6()
	}
	cc.mu.Lock()
	sp := cc.space(c)
	cc.mu.Unlock()
	inL, inClusters := c.inbound(sp)
	out := &Resources{space: sp, own: map[proto.Message]string{inL: hashOf(inL)},
		Listeners: []*listenerv3.Listener{inL, sp.listener}, Routes: sp.routes, Endpoints: sp.endpoints}
	out.ownClusters = inClusters
	for _, cl := range out.ownClusters {
		out.own[cl] = hashOf(cl)
	}
	out.Clusters = append(slices.Clip(sp.clusters), out.ownClusters...)
	slices.SortFunc(out.Clusters, byName((*clusterv3.Cluster).GetName))
	return out
}

func byName[T any](name func(T) string) func(a, b T) int {
	return func(a, b T) int { return strings.Compare(name(a), name(b)) }
}

type compiler struct {
	cc    *Compiler
	rules rules // the namespace's routing rules
	w     *World
	n     Node
	m     Mesh
	v6    bool // the pod has an IPv6 address: listen and bind on IPv6 too
	// envoyFilters are those patching the pod, in order (nil: not yet
	// looked for).
	envoyFilters []*EnvoyFilter
}

// protocolClass is how a port's protocol is handled: HTTP, TCP, or
// detected per connection.
type protocolClass int

const (
	classAuto protocolClass = iota
	classHTTP
	classTCP
)

func classOf(protocol string) protocolClass {
	if protocol == "" {
		return classAuto
	}
	if p, err := proxy.IstioProtocol(protocol); err == nil && p == proxy.ProtocolHTTP1 {
		return classHTTP
	}
	return classTCP
}

// virtualListener is Istio's virtualOutbound or virtualInbound: on all
// addresses (IPv6 too when the pod has it), the original destination
// restored, the protocol sniffed for at most the mesh's detection
// timeout.
func (c *compiler) virtualListener(name string, port uint16, dir corev3.TrafficDirection) *listenerv3.Listener {
	var addr6 netip.AddrPort
	if c.v6 {
		addr6 = netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	}
	return envoyres.CaptureListener(name, dir, netip.AddrPortFrom(netip.IPv4Unspecified(), port), addr6, true,
		c.m.ProtocolDetectionTimeout, c.n.TProxy)
}

// tcpProxyTo is a TCP proxy to backends by weight: its stats under the
// cluster's name for one, under statPrefix for several; none: closed
// (BlackHoleCluster).
func (c *compiler) tcpProxyTo(statPrefix string, backends []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight) *listenerv3.Filter {
	switch len(backends) {
	case 0:
		return c.tcpProxy(proxy.BlackHoleCluster)
	case 1:
		return c.tcpProxy(backends[0].Name)
	}
	return envoyres.NetworkFilter("envoy.filters.network.tcp_proxy", envoyres.Typed(&tcpproxyv3.TcpProxy{
		StatPrefix: statPrefix, ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: backends}},
		IdleTimeout: durationpb.New(c.m.IdleTimeout), AccessLog: c.m.logs}))
}

// tcpProxy is a chain's TCP proxy to cluster, its stats under the
// cluster's name as Istio's are.
func (c *compiler) tcpProxy(cluster string) *listenerv3.Filter {
	return envoyres.NetworkFilter("envoy.filters.network.tcp_proxy", envoyres.Typed(&tcpproxyv3.TcpProxy{
		StatPrefix: cluster, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout: durationpb.New(c.m.IdleTimeout), AccessLog: c.m.logs}))
}

// chain is a filter chain: to port (0: any), to the prefixes (none:
// any), of HTTP only when http.
func chain(name string, port uint16, prefixes []netip.Prefix, http bool, filter *listenerv3.Filter) *listenerv3.FilterChain {
	m := &listenerv3.FilterChainMatch{}
	if port != 0 {
		m.DestinationPort = wrapperspb.UInt32(uint32(port))
	}
	for _, p := range prefixes {
		m.PrefixRanges = append(m.PrefixRanges, &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
	}
	if http {
		m.ApplicationProtocols = []string{"http/1.0", "http/1.1", "h2c"}
	}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{filter}}
}

// hosts are addresses as single-address prefixes.
func hosts(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// builtinClusters are Istio's: PassthroughCluster to the original
// destination, InboundPassthroughCluster to the app from the inbound
// source, BlackHoleCluster with no endpoint; and the trace collector's
// when the mesh traces.
func (c *compiler) builtinClusters() []*clusterv3.Cluster {
	out := []*clusterv3.Cluster{
		envoyres.OriginalDst(proxy.PassthroughCluster, c.m.ConnectTimeout),
		envoyres.OriginalDst(proxy.InboundPassthroughCluster, c.m.ConnectTimeout, c.inboundSource()...),
		{Name: proxy.BlackHoleCluster, ConnectTimeout: durationpb.New(c.m.ConnectTimeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}},
	}
	if c.m.tracingCluster != nil {
		out = append(out, c.m.tracingCluster) // the collector's, for the connection managers' tracing
	}
	return out
}

// inboundSource are the addresses the sidecar binds to reach its app.
func (c *compiler) inboundSource() []netip.Addr {
	out := []netip.Addr{c.m.InboundSource}
	if c.v6 {
		out = append(out, c.m.InboundSource6)
	}
	return out
}

// clusterName is Istio's name of a cluster: direction|port|subset|host.
func clusterName(dir string, port uint16, subset, host string) string {
	return fmt.Sprintf("%s|%d|%s|%s", dir, port, subset, host)
}
