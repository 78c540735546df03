package control

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/shunt-dev/shunt/internal/envoyres"
)

// compileGateway is what a gateway's proxy (a router node) is sent: a
// listener per HTTP listener of its Gateway, on all addresses, whose
// connection manager routes by the route configuration http.PORT: a
// virtual host per hostname of the HTTPRoutes attached to the listener,
// their rules in Gateway API's precedence; the clusters and endpoints of
// the services the routes send to. Nothing for a node whose Gateway is
// not there or not shunt's (why is logged); what of the Gateway shunt
// does not run is reported with the other rules' (Survey).
func (cc *Compiler) compileGateway(w *World, n Node) *Resources {
	c := &compiler{w: w, n: n, m: cc.mesh, cc: cc}
	c.rules = w.rulesFor(n.Namespace, func(string) bool { return true })
	out := &Resources{}
	g, why := w.gatewayOf(n)
	if g == nil {
		if cc.log != nil {
			cc.log.Warn("a gateway has nothing to serve", "proxy", n.ID, "why", why)
		}
		return out
	}
	clusters := map[string]bool{}
	for _, l := range g.Listeners {
		name := fmt.Sprintf("0.0.0.0_%d", l.Port)
		rds := "http." + strconv.Itoa(int(l.Port))
		lst := &listenerv3.Listener{Name: name, Address: envoyres.SocketAddress(netip.AddrPortFrom(netip.IPv4Unspecified(), l.Port)),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains: []*listenerv3.FilterChain{{Name: name,
				Filters: []*listenerv3.Filter{c.hcm(outboundStatPrefix(l.Port), rds, nil)}}}}
		out.Listeners = append(out.Listeners, lst)
		rc := c.gatewayRoutes(g, l, rds)
		out.Routes = append(out.Routes, rc)
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if cl := a.GetCluster(); cl != "" {
					clusters[cl] = true
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					clusters[wc.GetName()] = true
				}
				for _, m := range a.GetRequestMirrorPolicies() {
					clusters[m.GetCluster()] = true
				}
			}
		}
	}
	out.Clusters = c.builtinClusters()
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		cl, cla := c.gatewayCluster(name)
		if cl != nil {
			out.Clusters = append(out.Clusters, cl)
		}
		if cla != nil {
			out.Endpoints = append(out.Endpoints, cla)
		}
	}
	slices.SortFunc(out.Listeners, byName((*listenerv3.Listener).GetName))
	slices.SortFunc(out.Clusters, byName((*clusterv3.Cluster).GetName))
	slices.SortFunc(out.Endpoints, byName((*endpointv3.ClusterLoadAssignment).GetClusterName))
	return out
}

// gatewayRoutes is a listener's route configuration: per hostname the
// rules of the routes attached to it, in Gateway API's precedence; a
// request for another host gets 404 (no virtual host).
func (c *compiler) gatewayRoutes(g *Gateway, l GatewayListener, name string) *routev3.RouteConfiguration {
	byHost := map[string]*VirtualService{}
	for _, key := range slices.Sorted(maps.Keys(c.w.HTTPRoutes)) {
		r := c.w.HTTPRoutes[key]
		if !slices.ContainsFunc(r.Gateways, func(p ParentGateway) bool { return g.admits(l, r.Namespace, p) }) {
			continue
		}
		rules := c.sameNamespaceBackends(r)
		for _, h := range l.hostnames(r.Hostnames) {
			vs := byHost[h]
			if vs == nil {
				vs = &VirtualService{Kind: r.Routes.Kind, Name: r.Name, Namespace: r.Namespace}
				byHost[h] = vs
			}
			vs.HTTP = append(vs.HTTP, rules...)
		}
	}
	rc := &routev3.RouteConfiguration{Name: name}
	port := Port{Port: l.Port, Protocol: "http"}
	for _, h := range slices.Sorted(maps.Keys(byHost)) {
		vs := byHost[h]
		slices.SortStableFunc(vs.HTTP, byPrecedence)
		domains := []string{h}
		if h != "*" {
			domains = append(domains, h+":"+strconv.Itoa(int(l.Port)))
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: h + ":" + strconv.Itoa(int(l.Port)), Domains: domains,
			Routes: c.vsRoutes(vs, nil, port), IncludeRequestAttemptCount: true})
	}
	return rc
}

// sameNamespaceBackends are a route's rules with only the backends of
// its own namespace: one in another needs that namespace's ReferenceGrant,
// which shunt does not read yet, so it is refused (reported); a rule left
// with none answers 500, as Gateway API says of a backend not permitted.
func (c *compiler) sameNamespaceBackends(r *HTTPRoute) []RouteRule {
	suffix := "." + r.Namespace + ".svc." + c.w.Domain
	out := make([]RouteRule, 0, len(r.Routes.HTTP))
	for _, rule := range r.Routes.HTTP {
		kept := slices.DeleteFunc(slices.Clone(rule.Route), func(d Destination) bool { return !strings.HasSuffix(d.Host, suffix) })
		if len(kept) < len(rule.Route) {
			c.cc.report(Problem{r.Routes.Kind, r.Namespace + "/" + r.Name, "spec.rules.backendRefs",
				"a backend in another namespace needs a ReferenceGrant, which shunt does not read yet: refused"})
			rule.Route = kept
			if len(kept) == 0 {
				rule.DirectResponse = &DirectResponse{Status: 500}
			}
		}
		out = append(out, rule)
	}
	return out
}

// byPrecedence orders two rules of one match each as Gateway API ranks
// them: an exact path, then the longest prefix, a method, more headers,
// more query parameters.
func byPrecedence(a, b RouteRule) int {
	ma, mb := a.Match[0], b.Match[0]
	return cmp.Or(cmp.Compare(pathRank(mb.URI), pathRank(ma.URI)), cmp.Compare(hasMethod(mb), hasMethod(ma)),
		cmp.Compare(len(mb.Headers), len(ma.Headers)), cmp.Compare(len(mb.QueryParams), len(ma.QueryParams)))
}

// gatewayCluster is the cluster a gateway's route names
// (outbound|PORT||HOST, as the sidecars' are), with its endpoints when
// over EDS.
func (c *compiler) gatewayCluster(name string) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	for _, s := range c.w.Services {
		for _, p := range s.Ports {
			if clusterName("outbound", p.Port, "", s.Hostname) != name {
				continue
			}
			cl := c.serviceCluster(s, p, name)
			if cl.GetType() == clusterv3.Cluster_EDS {
				return cl, c.loadAssignment(s, p, name)
			}
			return cl, nil
		}
	}
	return nil, nil // BlackHoleCluster, which the gateway has
}
