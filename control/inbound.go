package control

import (
	"fmt"
	"maps"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// inbound is the sidecar's inbound side: virtualInbound with a chain per
// port the pod serves for a service that selects it (HTTP through a
// connection manager, TCP proxied, undeclared both, by the first bytes),
// each to its cluster inbound|PORT|| (the original destination, reached
// from the inbound source); the rest to InboundPassthroughCluster.
func (c *compiler) inbound(sp *space) (*listenerv3.Listener, []*clusterv3.Cluster) {
	l := c.virtualListener("virtualInbound", InboundPort, corev3.TrafficDirection_INBOUND)
	ports := c.servedPorts(sp.local)
	var clusters []*clusterv3.Cluster
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		name := clusterName("inbound", port, "", "")
		clusters = append(clusters, envoyres.OriginalDst(name, c.m.ConnectTimeout, c.inboundSource()...))
		chainName := fmt.Sprintf("0.0.0.0_%d", port)
		class := ports[port]
		if class != classTCP {
			hcm := c.inboundHCM(fmt.Sprintf("inbound_0.0.0.0_%d", port), name, fmt.Sprintf("inbound|http|%d", port))
			if class == classHTTP {
				l.FilterChains = append(l.FilterChains, chain(chainName, port, nil, false, hcm))
				continue
			}
			l.FilterChains = append(l.FilterChains, chain(chainName+"-http", port, nil, true, hcm))
		}
		l.FilterChains = append(l.FilterChains, chain(chainName, port, nil, false, c.tcpProxy(name)))
	}
	l.FilterChains = append(l.FilterChains,
		chain("virtualInbound-catchall-http", 0, nil, true,
			c.inboundHCM(proxy.InboundPassthroughCluster, proxy.InboundPassthroughCluster, "inbound|http|0")),
		chain("virtualInbound", 0, nil, false, c.tcpProxy(proxy.InboundPassthroughCluster)))
	return l, clusters
}

// inboundHCM routes every request to cluster.
func (c *compiler) inboundHCM(statPrefix, cluster, vhost string) *listenerv3.Filter {
	return c.hcm(statPrefix, "", &routev3.RouteConfiguration{Name: cluster, VirtualHosts: []*routev3.VirtualHost{
		{Name: vhost, Domains: []string{"*"}, Routes: []*routev3.Route{routeTo("default", cluster, false)}}}})
}

// servedPorts are the pod's ports behind the services that select it,
// with how each is handled: the first service (by hostname) to name a
// port decides.
func (c *compiler) servedPorts(local []*Service) map[uint16]protocolClass {
	pod := c.pod()
	out := map[uint16]protocolClass{}
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
		}
	}
	return out
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
