package control

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
)

// authzFilters are a pod's inbound RBAC filters from the
// AuthorizationPolicies that apply to it, in Istio's order: DENY (with
// CUSTOM, which shunt cannot ask, denying what it would check), then
// ALLOW, then AUDIT (logged, never enforced). For connection managers,
// and for TCP proxies, where a rule's HTTP-only fields (hosts, methods,
// paths, request headers) cannot be seen: an ALLOW rule with them
// matches no connection, a DENY rule without them denies wider, as
// Istio has it.
func (c *compiler) authzFilters(pod *Pod) (http []*hcmv3.HttpFilter, tcp []*listenerv3.Filter) {
	policies := c.w.authzFor(pod, c.m.RootNamespace)
	for _, group := range []struct {
		actions []string
		action  rbacv3.RBAC_Action
	}{{[]string{"CUSTOM", "DENY"}, rbacv3.RBAC_DENY}, {[]string{"ALLOW"}, rbacv3.RBAC_ALLOW}, {[]string{"AUDIT"}, rbacv3.RBAC_LOG}} {
		httpRules := &rbacv3.RBAC{Action: group.action, Policies: map[string]*rbacv3.Policy{}}
		tcpRules := &rbacv3.RBAC{Action: group.action, Policies: map[string]*rbacv3.Policy{}}
		any := false
		for _, ap := range policies {
			if !slices.Contains(group.actions, ap.Action) {
				continue
			}
			any = true
			for i, rule := range ap.Rules {
				if rule.Unrun && group.action != rbacv3.RBAC_DENY {
					continue
				}
				name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)
				httpRules.Policies[name] = authzPolicy(rule, false, false)
				if p := authzPolicy(rule, true, group.action == rbacv3.RBAC_DENY); p != nil {
					tcpRules.Policies[name] = p
				}
			}
		}
		if !any {
			continue
		}
		http = append(http, envoyres.HTTPFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: httpRules}))
		tcp = append(tcp, envoyres.NetworkFilter("envoy.filters.network.rbac", envoyres.Typed(&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: tcpRules})))
	}
	return http, tcp
}

// authzPolicy is one rule as Envoy's policy; for tcp, its HTTP-only
// fields are dropped (deny) or make it match nothing (nil).
func authzPolicy(rule AuthzRule, tcp, deny bool) *rbacv3.Policy {
	var perms []*rbacv3.Permission
	var ids []*rbacv3.Principal
	httpOnly := false
	var ops []*rbacv3.Permission
	for _, op := range rule.To {
		var and []*rbacv3.Permission
		if len(op.Hosts)+len(op.NotHosts)+len(op.Methods)+len(op.NotMethods)+len(op.Paths)+len(op.NotPaths) > 0 {
			httpOnly = true
		}
		if !tcp {
			and = appendPerm(and, op.Hosts, op.NotHosts, func(v string) *rbacv3.Permission { return headerPerm(":authority", istioMatch(v, "", true)) })
			and = appendPerm(and, op.Methods, op.NotMethods, func(v string) *rbacv3.Permission { return headerPerm(":method", istioMatch(v, "", false)) })
			and = appendPerm(and, op.Paths, op.NotPaths, func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: istioMatch(v, "", false)}}}}
			})
		}
		and = appendPerm(and, op.Ports, op.NotPorts, portPerm)
		ops = append(ops, andPerms(and))
	}
	if len(ops) > 0 {
		perms = append(perms, orPerms(ops))
	}
	var sources []*rbacv3.Principal
	for _, src := range rule.From {
		var and []*rbacv3.Principal
		and = appendID(and, src.Principals, src.NotPrincipals, func(v string) *rbacv3.Principal { return authenticated(istioMatch(v, "spiffe://", false)) })
		and = appendID(and, src.Namespaces, src.NotNamespaces, func(v string) *rbacv3.Principal { return namespaceID(v) })
		and = appendID(and, src.IPBlocks, src.NotIPBlocks, func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(v)}}
		})
		and = appendID(and, src.RemoteIPBlocks, src.NotRemoteIPBlocks, func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr(v)}}
		})
		sources = append(sources, andIDs(and))
	}
	if len(sources) > 0 {
		ids = append(ids, orIDs(sources))
	}
	for _, w := range rule.When {
		switch {
		case isHeaderKey(w.Key):
			httpOnly = true
			if !tcp {
				name := w.Key[len("request.headers[") : len(w.Key)-1]
				perms = appendPerm(perms, w.Values, w.NotValues, func(v string) *rbacv3.Permission { return headerPerm(name, istioMatch(v, "", false)) })
			}
		case w.Key == "destination.port":
			perms = appendPerm(perms, w.Values, w.NotValues, portPerm)
		case w.Key == "destination.ip":
			perms = appendPerm(perms, w.Values, w.NotValues, func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr(v)}}
			})
		case w.Key == "source.ip":
			ids = appendID(ids, w.Values, w.NotValues, func(v string) *rbacv3.Principal {
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(v)}}
			})
		case w.Key == "remote.ip":
			ids = appendID(ids, w.Values, w.NotValues, func(v string) *rbacv3.Principal {
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr(v)}}
			})
		case w.Key == "source.principal":
			ids = appendID(ids, w.Values, w.NotValues, func(v string) *rbacv3.Principal { return authenticated(istioMatch(v, "spiffe://", false)) })
		case w.Key == "source.namespace":
			ids = appendID(ids, w.Values, w.NotValues, namespaceID)
		}
	}
	if tcp && httpOnly && !deny {
		return nil // an ALLOW rule that looks at HTTP allows no connection
	}
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{andPerms(perms)}, Principals: []*rbacv3.Principal{andIDs(ids)}}
}

// istioMatch is an AuthorizationPolicy value as Envoy's matcher: exact,
// a prefix ("abc*"), a suffix ("*abc"), or present ("*"), after prefix.
func istioMatch(v, prefix string, ignoreCase bool) *matcherv3.StringMatcher {
	m := &matcherv3.StringMatcher{IgnoreCase: ignoreCase}
	switch {
	case v == "*":
		m.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: regexp.QuoteMeta(prefix) + ".+"}}
	case strings.HasPrefix(v, "*"):
		m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}
	case strings.HasSuffix(v, "*"):
		m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: prefix + v[:len(v)-1]}
	default:
		m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: prefix + v}
	}
	return m
}

func headerPerm(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}}
}

func portPerm(v string) *rbacv3.Permission {
	n, _ := strconv.ParseUint(v, 10, 16)
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// namespaceID is Istio's source namespace: a SPIFFE ID of the namespace.
func namespaceID(ns string) *rbacv3.Principal {
	if ns == "*" {
		return authenticated(istioMatch("*", "spiffe://", false))
	}
	return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: ".*/ns/" + regexp.QuoteMeta(ns) + "/.*"}}})
}

// cidr is an IP or a CIDR block as Envoy's range (a bad one matches
// nothing: the address 0.0.0.0/32).
func cidr(v string) *corev3.CidrRange {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return &corev3.CidrRange{AddressPrefix: "0.0.0.0", PrefixLen: wrapperspb.UInt32(32)}
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// appendPerm adds to and: one of values, and none of notValues.
func appendPerm(and []*rbacv3.Permission, values, notValues []string, one func(string) *rbacv3.Permission) []*rbacv3.Permission {
	each := func(vs []string) *rbacv3.Permission {
		var or []*rbacv3.Permission
		for _, v := range vs {
			or = append(or, one(v))
		}
		return orPerms(or)
	}
	if len(values) > 0 {
		and = append(and, each(values))
	}
	if len(notValues) > 0 {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: each(notValues)}})
	}
	return and
}

// appendID is appendPerm for principals.
func appendID(and []*rbacv3.Principal, values, notValues []string, one func(string) *rbacv3.Principal) []*rbacv3.Principal {
	each := func(vs []string) *rbacv3.Principal {
		var or []*rbacv3.Principal
		for _, v := range vs {
			or = append(or, one(v))
		}
		return orIDs(or)
	}
	if len(values) > 0 {
		and = append(and, each(values))
	}
	if len(notValues) > 0 {
		and = append(and, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: each(notValues)}})
	}
	return and
}

func andPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func orPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func andIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ps) {
	case 0:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	case 1:
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func orIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}
