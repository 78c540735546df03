package control

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// vsRoutes are a service port's routes under its VirtualService, in
// order, one per match (a match for another port has none), as Istio
// makes them; a request no route takes gets 404 (Envoy's NR).
func (c *compiler) vsRoutes(vs *VirtualService, s *Service, p Port) []*routev3.Route {
	var out []*routev3.Route
	for i, root := range vs.HTTP {
		rules := []RouteRule{root}
		if root.Delegate != nil {
			rules = c.delegated(vs, i, root)
		}
		for _, r := range rules {
			out = append(out, c.ruleRoutes(vs, r, s, p, i)...)
		}
	}
	return out
}

// ruleRoutes are a rule's routes, one per match (a match for another
// port has none).
func (c *compiler) ruleRoutes(vs *VirtualService, r RouteRule, s *Service, p Port, i int) []*routev3.Route {
	var out []*routev3.Route
	var rule *routev3.Route
	for _, m := range orAny(r.Match) {
		if m.Port != 0 && m.Port != p.Port {
			continue
		}
		if rule == nil {
			rule = c.vsRoute(vs, r, s, p, i)
		}
		rt := proto.Clone(rule).(*routev3.Route)
		rt.Match = routeMatch(m)
		rt.Decorator = &routev3.Decorator{Operation: routeOperation(rt, vs.Name, p.Port)}
		out = append(out, rt)
	}
	return out
}

// routeOperation is the name Istio's routes give their spans (their
// decorator): the destination's host and port and the route's path
// (a prefix ending in *), as host:port/path; a route to several
// destinations, or to none, says its rule's name and port instead.
func routeOperation(rt *routev3.Route, rule string, port uint16) string {
	path := "/*"
	switch m := rt.GetMatch(); m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		path = m.GetPrefix() + "*"
	case *routev3.RouteMatch_PathSeparatedPrefix:
		path = m.GetPathSeparatedPrefix() + "*"
	case *routev3.RouteMatch_Path:
		path = m.GetPath()
	case *routev3.RouteMatch_SafeRegex:
		path = m.GetSafeRegex().GetRegex()
	}
	if parts := strings.Split(rt.GetRoute().GetCluster(), "|"); len(parts) == 4 {
		return parts[3] + ":" + parts[1] + path
	}
	return rule + ":" + strconv.Itoa(int(port)) + path
}

// vsRoute is what an http route does, but its match: forward (with
// mirrors), redirect or answer; change headers; inject faults.
func (c *compiler) vsRoute(vs *VirtualService, r RouteRule, s *Service, p Port, i int) *routev3.Route {
	name := r.Name
	if name == "" {
		name = fmt.Sprintf("%s.%s.%d", vs.Name, vs.Namespace, i)
	}
	rt := &routev3.Route{Name: name,
		RequestHeadersToAdd: headerValues(r.Headers.Request), RequestHeadersToRemove: r.Headers.Request.Remove,
		ResponseHeadersToAdd: headerValues(r.Headers.Response), ResponseHeadersToRemove: r.Headers.Response.Remove}
	switch {
	case r.Redirect != nil:
		rt.Action = &routev3.Route_Redirect{Redirect: redirectAction(r.Redirect, p)}
	case r.DirectResponse != nil:
		d := &routev3.DirectResponseAction{Status: r.DirectResponse.Status}
		if r.DirectResponse.Body != "" {
			d.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.DirectResponse.Body}}
		}
		rt.Action = &routev3.Route_DirectResponse{DirectResponse: d}
	default:
		a := c.routeAction(vs, r, s, p, i)
		a.RequestMirrorPolicies = c.mirrorPolicies(vs, r, p, i)
		rt.Action = &routev3.Route_Route{Route: a}
	}
	if r.Fault != nil || r.CORS != nil {
		rt.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	if r.Fault != nil {
		rt.TypedPerFilterConfig[envoyres.FaultFilter] = envoyres.Typed(faultConfig(r.Fault))
	}
	if r.CORS != nil {
		rt.TypedPerFilterConfig[envoyres.CORSFilter] = envoyres.Typed(corsConfig(r.CORS))
	}
	return rt
}

// headerValues are a header operation's sets (replacing) and adds
// (appending), each in name order.
func headerValues(op HeaderOp) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, f := range []struct {
		m      map[string]string
		action corev3.HeaderValueOption_HeaderAppendAction
	}{{op.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}, {op.Add, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}} {
		for _, k := range slices.Sorted(maps.Keys(f.m)) {
			out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: f.m[k]}, AppendAction: f.action})
		}
	}
	return out
}

var redirectCode = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY, 302: routev3.RedirectAction_FOUND, 303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT, 308: routev3.RedirectAction_PERMANENT_REDIRECT}

// redirectAction is a redirect on port p: the port asked for is p (the
// routes are made per port, so Istio's FROM_REQUEST_PORT is p).
func redirectAction(rd *Redirect, p Port) *routev3.RedirectAction {
	a := &routev3.RedirectAction{HostRedirect: rd.Authority, ResponseCode: redirectCode[rd.Code]}
	switch {
	case rd.URI != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.URI}
	case rd.PrefixRewrite != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixRewrite}
	}
	if rd.Scheme != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	switch {
	case rd.Port != 0:
		a.PortRedirect = uint32(rd.Port)
	case rd.FromRequestPort:
		a.PortRedirect = uint32(p.Port)
	}
	return a
}

// faultConfig is a fault as Envoy's fault filter's per-route config.
func faultConfig(f *Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if f.Delay != nil {
		out.Delay = &commonfaultv3.FaultDelay{Percentage: fractional(f.DelayPercent),
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(*f.Delay)}}
	}
	if f.Abort {
		a := &faultv3.FaultAbort{Percentage: fractional(f.AbortPercent), ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: f.AbortHTTP}}
		if f.AbortGRPC >= 0 {
			a.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(f.AbortGRPC)}
		}
		out.Abort = a
	}
	return out
}

// corsConfig is a CORS policy as Envoy's CORS filter's per-route config.
func corsConfig(c *CORSPolicy) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{AllowMethods: strings.Join(c.Methods, ","), AllowHeaders: strings.Join(c.Headers, ","),
		ExposeHeaders: strings.Join(c.Expose, ","), ForwardNotMatchingPreflights: wrapperspb.Bool(!c.IgnoreUnmatched)}
	for _, o := range c.Origins {
		if sm := stringMatcher(o); sm != nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	}
	if c.MaxAge != nil {
		out.MaxAge = strconv.FormatInt(int64(c.MaxAge.Seconds()), 10)
	}
	if c.Credentials {
		out.AllowCredentials = wrapperspb.Bool(true)
	}
	return out
}

// fractional is a percentage as Istio gives it to Envoy: parts per
// million; nil stays unset.
func fractional(p *float64) *typev3.FractionalPercent {
	if p == nil {
		return nil
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(*p * 10000)), Denominator: typev3.FractionalPercent_MILLION}
}

// mirrorPolicies are a route's mirrors; one to a destination the mesh
// does not have is reported and left out.
func (c *compiler) mirrorPolicies(vs *VirtualService, r RouteRule, p Port, i int) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	for j, m := range r.Mirrors {
		cl := c.destinationCluster(vs, m.Destination, p, fmt.Sprintf("spec.http[%d].mirrors[%d]", i, j))
		if cl == proxy.BlackHoleCluster {
			continue
		}
		mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: cl}
		if m.Percent != nil {
			mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fractional(m.Percent)}
		}
		out = append(out, mp)
	}
	return out
}

// routeMatch is a match as Envoy's: the path; the method, scheme and
// authority as pseudo-headers; headers present or absent; query
// parameters.
func routeMatch(m HTTPMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	switch u := m.URI; {
	case u.Exact != "":
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case u.Prefix != "" && m.URISegments:
		rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: u.Prefix}
	case u.Prefix != "":
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
	case u.Regex != "":
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.IgnoreURICase {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, h := range []struct {
		name string
		sm   StringMatch
	}{{":authority", m.Authority}, {":method", m.Method}, {":scheme", m.Scheme}} {
		if !h.sm.any() {
			rm.Headers = append(rm.Headers, headerMatcher(h.name, h.sm, false))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.Headers)) {
		rm.Headers = append(rm.Headers, headerMatcher(name, m.Headers[name], false))
	}
	for _, name := range slices.Sorted(maps.Keys(m.WithoutHeaders)) {
		rm.Headers = append(rm.Headers, headerMatcher(name, m.WithoutHeaders[name], true))
	}
	for _, name := range slices.Sorted(maps.Keys(m.QueryParams)) {
		q := &routev3.QueryParameterMatcher{Name: name}
		if sm := stringMatcher(m.QueryParams[name]); sm != nil {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		} else {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		rm.QueryParameters = append(rm.QueryParameters, q)
	}
	return rm
}

// headerMatcher matches a header's value, or (any) its presence; invert
// turns it into a match of its absence.
func headerMatcher(name string, m StringMatch, invert bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	if sm := stringMatcher(m); sm != nil {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	} else {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return h
}

// stringMatcher is m as Envoy's, or nil for any value.
func stringMatcher(m StringMatch) *matcherv3.StringMatcher {
	switch {
	case m.Exact != "":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Exact}}
	case m.Prefix != "":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: m.Prefix}}
	case m.Regex != "":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Regex}}}
	}
	return nil
}
