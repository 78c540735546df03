package control

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// inbound is the sidecar's inbound side: virtualInbound with chains per
// port the pod serves for a service that selects it (HTTP through a
// connection manager, TCP proxied, undeclared both, by the first bytes),
// each to its cluster inbound|PORT|| (the original destination, reached
// from the inbound source; its metadata names the services, as Istio's
// does for its stats' destination_service); the rest to InboundPassthroughCluster. With
// auto mTLS, each port's chains are as its PeerAuthentication mode says:
// mutual TLS (the mesh's ALPNs) and plaintext (PERMISSIVE), mutual TLS
// only (STRICT), plaintext only (DISABLE).
func (c *compiler) inbound(sp *space) (*listenerv3.Listener, []*clusterv3.Cluster) {
	l := c.virtualListener("virtualInbound", InboundPort, corev3.TrafficDirection_INBOUND)
	ports, services := c.servedPorts(sp.local)
	pod := c.pod()
	authzHTTP, authzTCP := c.authzFilters(pod)
	var clusters []*clusterv3.Cluster
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		name := clusterName("inbound", port, "", "")
		cl := envoyres.OriginalDst(name, c.m.ConnectTimeout, c.inboundSource()...)
		var refs []envoyres.ServiceRef
		for _, s := range services[port] {
			refs = append(refs, envoyres.ServiceRef{Host: s.Hostname, Name: s.Name, Namespace: s.Namespace})
		}
		cl.Metadata = envoyres.IstioServices(refs)
		clusters = append(clusters, cl)
		hcm := func() *listenerv3.Filter {
			return c.inboundHCM(port, fmt.Sprintf("inbound_0.0.0.0_%d", port), name, fmt.Sprintf("inbound|http|%d", port), authzHTTP,
				fmt.Sprintf("%s:%d/*", services[port][0].Hostname, port))
		}
		l.FilterChains = append(l.FilterChains, c.inboundChains(fmt.Sprintf("0.0.0.0_%d", port), port, ports[port],
			c.peerMode(pod, port), hcm, func() *listenerv3.Filter { return c.tcpProxy(name) })...)
	}
	l.FilterChains = append(l.FilterChains, c.inboundChains("virtualInbound", 0, classAuto, c.peerMode(pod, 0),
		func() *listenerv3.Filter {
			return c.inboundHCM(0, proxy.InboundPassthroughCluster, proxy.InboundPassthroughCluster, "inbound|http|0", authzHTTP, "")
		},
		func() *listenerv3.Filter { return c.tcpProxy(proxy.InboundPassthroughCluster) })...)
	// AuthorizationPolicies' network RBAC before every TCP proxy but
	// those that refuse already.
	for _, fc := range l.FilterChains {
		if len(authzTCP) > 0 && fc.Filters[0].GetName() == "envoy.filters.network.tcp_proxy" && !strings.Contains(fc.GetName(), "-refused-") {
			fc.Filters = append(slices.Clone(authzTCP), fc.Filters...)
		}
	}
	return l, clusters
}

// peerMode is the mutual TLS mode of the pod's inbound traffic to port
// (0: to a port no service declares); DISABLE without auto mTLS.
func (c *compiler) peerMode(pod *Pod, port uint16) MTLSMode {
	if !c.m.AutoMTLS {
		return MTLSDisable
	}
	return c.w.inboundMTLS(pod, port, c.m.RootNamespace)
}

// inboundChains are one port's chains (0: the catch-all's), in Istio's
// shape: mutual TLS chains by the mesh's ALPNs (HTTP for istio-http/*
// and istio-h2, TCP for istio and istio-peer-exchange, as the port's
// class says); in PERMISSIVE, also TLS of the app's own passed through
// and plaintext; in STRICT, anything else to a declared port goes to
// BlackHoleCluster (not on to the catch-all).
func (c *compiler) inboundChains(name string, port uint16, class protocolClass, mode MTLSMode, hcm, tcp func() *listenerv3.Filter) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	if mode != MTLSDisable {
		meshChain := func(suffix string, alpns []string, f *listenerv3.Filter) {
			fc := chain(name+suffix, port, nil, false, f)
			fc.FilterChainMatch.TransportProtocol, fc.FilterChainMatch.ApplicationProtocols = "tls", alpns
			fc.TransportSocket = envoyres.MutualTLSDownstream()
			out = append(out, fc)
		}
		switch class {
		case classHTTP:
			meshChain("-mtls", envoyres.MeshALPNs, hcm())
		case classTCP:
			meshChain("-mtls", envoyres.MeshALPNs, tcp())
		default:
			meshChain("-mtls-http", []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}, hcm())
			meshChain("-mtls", []string{"istio-peer-exchange", "istio"}, tcp())
		}
	}
	switch {
	case mode == MTLSStrict && port != 0:
		for _, transport := range []string{"tls", "raw_buffer"} {
			fc := chain(name+"-refused-"+transport, port, nil, false, c.tcpProxy(proxy.BlackHoleCluster))
			fc.FilterChainMatch.TransportProtocol = transport
			out = append(out, fc)
		}
		return out
	case mode == MTLSStrict:
		return out
	case mode == MTLSPermissive:
		appTLS := chain(name+"-tls", port, nil, false, tcp())
		appTLS.FilterChainMatch.TransportProtocol = "tls"
		out = append(out, appTLS)
	}
	var plain []*listenerv3.FilterChain
	switch class {
	case classHTTP:
		plain = append(plain, chain(name, port, nil, false, hcm()))
	case classTCP:
		plain = append(plain, chain(name, port, nil, false, tcp()))
	default:
		httpName := name + "-http"
		if port == 0 {
			httpName = "virtualInbound-catchall-http"
		}
		plain = append(plain, chain(httpName, port, nil, true, hcm()), chain(name, port, nil, false, tcp()))
	}
	if mode == MTLSPermissive {
		for _, fc := range plain {
			fc.FilterChainMatch.TransportProtocol = "raw_buffer"
		}
	}
	return append(out, plain...)
}

// inboundHCM routes every request to port (0: any other) to cluster,
// through the pod's AuthorizationPolicies' RBAC filters (authz) and its
// EnvoyFilters' patches, its spans named operation (Envoy's default for
// ""); with auto mTLS it tells the app who called
// (x-forwarded-client-cert), as Istio's inbound does.
func (c *compiler) inboundHCM(port uint16, statPrefix, cluster, vhost string, authz []*hcmv3.HttpFilter, operation string) *listenerv3.Filter {
	first, beforeRouter := c.patchedFilters("SIDECAR_INBOUND", port)
	rt := routeTo("default", cluster, false)
	if operation != "" {
		rt.Decorator = &routev3.Decorator{Operation: operation} // Istio's span name: the service's host:port/*
	}
	return c.hcmWith(statPrefix, "", &routev3.RouteConfiguration{Name: cluster, VirtualHosts: []*routev3.VirtualHost{
		{Name: vhost, Domains: []string{"*"}, Routes: []*routev3.Route{rt}}}}, proxy.Inbound, c.m.AutoMTLS, hcmFilters{authz, first, beforeRouter})
}

// servedPorts are the pod's ports behind the services that select it,
// with how each is handled: the first service (by hostname) to name a
// port decides.
func (c *compiler) servedPorts(local []*Service) (map[uint16]protocolClass, map[uint16][]*Service) {
	pod := c.pod()
	out, services := map[uint16]protocolClass{}, map[uint16][]*Service{}
	for _, s := range local {
		if !s.selects(pod) {
			continue
		}
		for _, p := range s.Ports {
			target := p.TargetPort
			if p.TargetPortName != "" {
				target = pod.ContainerPorts[p.TargetPortName]
				if target == 0 {
					continue // a name the pod does not declare: Kubernetes sends it nothing either
				}
			}
			if target == 0 {
				target = p.Port
			}
			if _, ok := out[target]; !ok {
				out[target] = classOf(p.Protocol)
			}
			if !slices.Contains(services[target], s) {
				services[target] = append(services[target], s)
			}
		}
	}
	return out, services
}

// pod is the sidecar's pod as the cluster knows it, else as its node
// metadata says.
func (c *compiler) pod() *Pod {
	for _, ip := range c.n.IPs {
		if p := c.w.podByIP(ip); p != nil && p.Namespace == c.n.Namespace {
			return p
		}
	}
	return &Pod{Name: c.n.Name, Namespace: c.n.Namespace, IPs: c.n.IPs, Labels: c.n.Labels, ServiceAccount: c.n.ServiceAccount}
}
