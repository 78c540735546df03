package control

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// rules are the VirtualServices and DestinationRules a namespace's
// sidecars follow, by the FQDN of the host they are for; where several
// name one host, Istio's precedence: the sidecar's namespace first, then
// the host's, then any other, each by name.
type rules struct {
	vs map[string]*VirtualService
	dr map[string]*DestinationRule
}

// fqdn is a rule's host as a service's FQDN: a short name is in the
// rule's namespace.
func (w *World) fqdn(host, namespace string) string {
	switch strings.Count(host, ".") {
	case 0:
		return host + "." + namespace + ".svc." + w.Domain
	case 1:
		return host + ".svc." + w.Domain
	}
	return host
}

func (w *World) rulesFor(ns string, inMesh func(string) bool) rules {
	out := rules{vs: map[string]*VirtualService{}, dr: map[string]*DestinationRule{}}
	rank := func(ruleNS, host string) int {
		switch {
		case ruleNS == ns:
			return 0
		case strings.HasSuffix(host, "."+ruleNS+".svc."+w.Domain):
			return 1
		}
		return 2
	}
	visible := func(exportTo []string, owner string) bool {
		s := Service{Namespace: owner, ExportTo: exportTo}
		return s.visibleFrom(ns)
	}
	best := map[string]int{}
	for _, key := range slices.Sorted(maps.Keys(w.VirtualServices)) {
		vs := w.VirtualServices[key]
		if !vs.forMesh() || !visible(vs.ExportTo, vs.Namespace) || !inMesh(vs.Namespace) {
			continue
		}
		for _, h := range vs.Hosts {
			f := w.fqdn(h, vs.Namespace)
			if r, seen := best["vs "+f]; !seen || rank(vs.Namespace, f) < r {
				best["vs "+f], out.vs[f] = rank(vs.Namespace, f), vs
			}
		}
	}
	w.routesFor(ns, out.vs, inMesh)
	for _, key := range slices.Sorted(maps.Keys(w.DestinationRules)) {
		dr := w.DestinationRules[key]
		if !visible(dr.ExportTo, dr.Namespace) || !inMesh(dr.Namespace) {
			continue
		}
		f := w.fqdn(dr.Host, dr.Namespace)
		if r, seen := best["dr "+f]; !seen || rank(dr.Namespace, f) < r {
			best["dr "+f], out.dr[f] = rank(dr.Namespace, f), dr
		}
	}
	return out
}

// routesFor puts into vs, over any VirtualService, the HTTPRoutes bound
// to each service as the sidecars of ns follow them (GAMMA): a route in
// the sidecar's own namespace (a consumer's) over those in the service's
// (the producer's); the rules of several merged in Gateway API's
// precedence.
func (w *World) routesFor(ns string, vs map[string]*VirtualService, inMesh func(string) bool) {
	type bound struct {
		consumer bool
		routes   []*HTTPRoute
	}
	byHost := map[string]*bound{}
	for _, key := range slices.Sorted(maps.Keys(w.HTTPRoutes)) {
		r := w.HTTPRoutes[key]
		if !inMesh(r.Namespace) {
			continue
		}
		for i, p := range r.Parents {
			svcNS, _, _ := strings.Cut(p.Service, "/")
			consumer := r.Namespace == ns && r.Namespace != svcNS
			if !consumer && r.Namespace != svcNS {
				continue // another namespace's consumer route
			}
			host := r.Routes.Hosts[i]
			b := byHost[host]
			if b == nil || consumer && !b.consumer {
				b = &bound{consumer: consumer}
				byHost[host] = b
			}
			if b.consumer == consumer && !slices.Contains(b.routes, r) {
				b.routes = append(b.routes, r)
			}
		}
	}
	for host, b := range byHost {
		merged := &VirtualService{Kind: b.routes[0].Routes.Kind, Name: b.routes[0].Name, Namespace: b.routes[0].Namespace, Hosts: []string{host}}
		all := false
		for _, r := range b.routes {
			merged.HTTP = append(merged.HTTP, r.Routes.HTTP...)
			for i, p := range r.Parents {
				if r.Routes.Hosts[i] != host {
					continue
				}
				if p.Port == 0 {
					all = true
				} else if !slices.Contains(merged.Ports, p.Port) {
					merged.Ports = append(merged.Ports, p.Port)
				}
			}
		}
		if all {
			merged.Ports = nil
		}
		slices.SortStableFunc(merged.HTTP, func(a, b RouteRule) int {
			ma, mb := a.Match[0], b.Match[0]
			return cmp.Or(cmp.Compare(pathRank(mb.URI), pathRank(ma.URI)), cmp.Compare(hasMethod(mb), hasMethod(ma)),
				cmp.Compare(len(mb.Headers), len(ma.Headers)), cmp.Compare(len(mb.QueryParams), len(ma.QueryParams)))
		})
		vs[host] = merged
	}
}

// routeAction is an http route's destinations (weighted when several),
// timeout (none by default), retries (Istio's default unless said) and
// rewrites.
func (c *compiler) routeAction(vs *VirtualService, r RouteRule, s *Service, p Port, i int) *routev3.RouteAction {
	a := &routev3.RouteAction{Timeout: durationpb.New(0),
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)},
		RetryPolicy:       istioRetry()}
	if r.Timeout != nil {
		a.Timeout = durationpb.New(*r.Timeout)
	}
	if rt := r.Retries; rt != nil {
		if rt.Attempts == 0 {
			a.RetryPolicy = nil
		} else {
			a.RetryPolicy.NumRetries = wrapperspb.UInt32(rt.Attempts)
			if rt.RetryOn != "" {
				a.RetryPolicy.RetryOn = rt.RetryOn
			}
			if rt.PerTryTimeout > 0 {
				a.RetryPolicy.PerTryTimeout = durationpb.New(rt.PerTryTimeout)
			}
			if len(rt.Codes) > 0 {
				a.RetryPolicy.RetriableStatusCodes = rt.Codes
			}
			if rt.Backoff > 0 {
				a.RetryPolicy.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(rt.Backoff)}
			}
		}
	}
	if r.RewriteURI != "" {
		if m := r.Match; len(m) == 1 && m[0].URISegments {
			a.RegexRewrite = segmentRewrite(m[0].URI.Prefix, r.RewriteURI)
		} else {
			a.PrefixRewrite = r.RewriteURI
		}
	}
	if rr := r.RewriteRegex; rr != nil {
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: rr.Match}, Substitution: rr.Rewrite}
	}
	if r.RewriteAuthority != "" {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.RewriteAuthority}
	}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	for j, d := range r.Route {
		cluster := c.destinationCluster(vs, d, p, fmt.Sprintf("spec.http[%d].route[%d]", i, j))
		w := d.Weight
		if len(r.Route) == 1 {
			a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cluster}
			return a
		}
		if w > 0 {
			weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: cluster, Weight: wrapperspb.UInt32(uint32(w))})
		}
	}
	if len(weighted) == 0 { // no weights: equal shares
		for j, d := range r.Route {
			weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{
				Name: c.destinationCluster(vs, d, p, fmt.Sprintf("spec.http[%d].route[%d]", i, j)), Weight: wrapperspb.UInt32(1)})
		}
	}
	a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	return a
}

// segmentRewrite replaces a path-segment prefix (Gateway API's
// ReplacePrefixMatch under PathPrefix) as Gateway API says: /api/x and
// /api become /new/x and /new for /new, /x and / for /.
func segmentRewrite(prefix, with string) *matcherv3.RegexMatchAndSubstitute {
	pattern := "^" + regexp.QuoteMeta(prefix) + "(/|$)"
	if strings.HasSuffix(with, "/") {
		return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: with}
	}
	return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: with + `\1`}
}

// destinationCluster is the cluster of a route's destination, or
// BlackHoleCluster (503) for a host, port or subset the mesh does not
// have, which is reported.
func (c *compiler) destinationCluster(vs *VirtualService, d Destination, p Port, path string) string {
	host := c.w.fqdn(d.Host, vs.Namespace)
	var dst *Service
	for _, s := range c.w.Services {
		if s.Hostname == host {
			dst = s
		}
	}
	if dst == nil {
		c.report(vs, path+".destination.host", "no service "+host)
		return proxy.BlackHoleCluster
	}
	port := d.Port
	if port == 0 {
		switch {
		case slices.ContainsFunc(dst.Ports, func(q Port) bool { return q.Port == p.Port }):
			port = p.Port
		case len(dst.Ports) == 1:
			port = dst.Ports[0].Port
		default:
			c.report(vs, path+".destination.port", fmt.Sprintf("%s has several ports: say which", host))
			return proxy.BlackHoleCluster
		}
	} else if !slices.ContainsFunc(dst.Ports, func(q Port) bool { return q.Port == port }) {
		c.report(vs, path+".destination.port", fmt.Sprintf("%s has no port %d", host, port))
		return proxy.BlackHoleCluster
	}
	if d.Subset != "" {
		dr := c.rules.dr[host]
		if dr == nil || !slices.ContainsFunc(dr.Subsets, func(s Subset) bool { return s.Name == d.Subset }) {
			c.report(vs, path+".destination.subset", fmt.Sprintf("no DestinationRule of %s has a subset %q", host, d.Subset))
			return proxy.BlackHoleCluster
		}
	}
	return clusterName("outbound", port, d.Subset, host)
}

// report notes a field of a route that cannot take effect.
func (c *compiler) report(vs *VirtualService, path, why string) {
	kind := vs.Kind
	if kind == "" {
		kind = "VirtualService"
	}
	c.cc.report(Problem{kind, vs.Namespace + "/" + vs.Name, path, why})
}

// cloneCluster is base under another name, its endpoints under it too.
func cloneCluster(base *clusterv3.Cluster, name string) *clusterv3.Cluster {
	cl := proto.Clone(base).(*clusterv3.Cluster)
	cl.Name = name
	if cl.EdsClusterConfig != nil {
		cl.EdsClusterConfig.ServiceName = name
	}
	return cl
}

// applyPolicy puts a DestinationRule's traffic policy on a cluster of
// port: the policy, then its port's settings over it. Its tls is for
// host, whose identities are sans.
func applyPolicy(cl *clusterv3.Cluster, tp *TrafficPolicy, port uint16, host string, sans []string) {
	if tp == nil {
		return
	}
	applyPortPolicy(cl, tp, host, sans)
	if pp := tp.Ports[port]; pp != nil {
		applyPortPolicy(cl, pp, host, sans)
	}
}

func applyPortPolicy(cl *clusterv3.Cluster, tp *TrafficPolicy, host string, sans []string) {
	if tp.TLS != nil {
		applyTLS(cl, tp.TLS, host, sans)
	}
	if h := tp.Hash; h != nil {
		hashCluster(cl, h)
	}
	if tp.LoadBalancer != "" {
		cl.LbConfig = nil // a hash's ring or table, the rule's
	}
	switch tp.LoadBalancer {
	case "ROUND_ROBIN":
		cl.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case "LEAST_REQUEST", "LEAST_CONN":
		cl.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case "RANDOM":
		cl.LbPolicy = clusterv3.Cluster_RANDOM
	}
	if tp.ConnectTimeout > 0 {
		cl.ConnectTimeout = durationpb.New(tp.ConnectTimeout)
	}
	// A connection pool replaces the rule's (a subset's or a port's over
	// the rule's, as Istio's); none keeps it, or Istio's unlimited.
	if tp.Pool || cl.GetCircuitBreakers() == nil {
		th := envoyres.UnlimitedBreakers().GetThresholds()[0]
		for _, f := range []struct {
			v    uint32
			into **wrapperspb.UInt32Value
		}{{tp.MaxConnections, &th.MaxConnections}, {tp.MaxPending, &th.MaxPendingRequests}, {tp.MaxRequests, &th.MaxRequests}, {tp.MaxRetries, &th.MaxRetries}} {
			if f.v > 0 {
				*f.into = wrapperspb.UInt32(f.v)
			}
		}
		cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if tp.Outlier {
		od := &clusterv3.OutlierDetection{Interval: durationpb.New(tp.Interval), BaseEjectionTime: durationpb.New(tp.BaseEjectionTime),
			MaxEjectionPercent: wrapperspb.UInt32(tp.MaxEjectionPct), EnforcingSuccessRate: wrapperspb.UInt32(0)}
		if tp.Consecutive5xx > 0 {
			od.Consecutive_5Xx, od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(tp.Consecutive5xx), wrapperspb.UInt32(100)
		} else {
			od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
		}
		if tp.ConsecutiveGwErr > 0 {
			od.ConsecutiveGatewayFailure, od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(tp.ConsecutiveGwErr), wrapperspb.UInt32(100)
		}
		cl.OutlierDetection = od
	}
}

// subsetParts are a service port's subset clusters under its
// DestinationRule, each over EDS with the endpoints whose pods carry the
// subset's labels.
func (c *compiler) subsetParts(s *Service, p Port, dr *DestinationRule, base *clusterv3.Cluster, sans []string) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	var clusters []*clusterv3.Cluster
	var clas []*endpointv3.ClusterLoadAssignment
	ready := c.w.readyEndpoints(s, p)
	for _, sub := range dr.Subsets {
		name := clusterName("outbound", p.Port, sub.Name, s.Hostname)
		cl := cloneCluster(base, name)
		applyPolicy(cl, sub.Policy, p.Port, s.Hostname, sans)
		clusters = append(clusters, cl)
		if len(s.Addresses) == 0 {
			continue // headless: the original destination
		}
		var eps []endpoint
		for _, e := range ready {
			if pod := c.w.Pods[e.pod]; pod != nil && labelsMatch(pod.Labels, sub.Labels) {
				eps = append(eps, e)
			}
		}
		clas = append(clas, assignment(name, eps, c.meshPod()))
	}
	return clusters, clas
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// hasMethod is 1 for a match of a method (Gateway API ranks it above
// one of none), else 0.
func hasMethod(m HTTPMatch) int {
	if m.Method.any() {
		return 0
	}
	return 1
}
