package proxy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// rbacEngine is Envoy's RBAC rules: ALLOW lets a request or connection
// on only if a policy matches it, DENY stops it if one does, LOG lets
// everything on (shadow). Policies are looked at by name, as Envoy's
// ordered map has them.
type rbacEngine struct {
	action   rbacv3.RBAC_Action
	policies []rbacPolicy
}

// rbacPolicy matches when one of its permissions and one of its
// principals do.
type rbacPolicy struct {
	name        string
	permissions []rbacRule
	principals  []rbacRule
}

// rbacRule is a permission or a principal: a match on the request or the
// connection, or a combination of rules.
type rbacRule struct {
	kind     rbacKind
	children []rbacRule // and, or, not (one)
	header   *headerMatcher
	str      *stringMatcher // url_path; authenticated's principal_name (nil: any authenticated peer)
	port     uint16
	prefix   netip.Prefix
}

type rbacKind uint8

const (
	rbacNone rbacKind = iota // matches nothing: a rule refused, its problem reported
	rbacAny
	rbacAnd
	rbacOr
	rbacNot
	rbacHeader
	rbacPath
	rbacDestinationPort
	rbacDestinationIP
	rbacAuthenticated
	rbacRemoteIP
)

// rbacInput is what rules look at: the connection, and for HTTP the
// request (nil for a connection's own RBAC).
type rbacInput struct {
	d   *downstream
	req requestView
}

func (r *rbacRule) match(in rbacInput) bool {
	switch r.kind {
	case rbacNone:
		return false
	case rbacAny:
		return true
	case rbacAnd:
		for i := range r.children {
			if !r.children[i].match(in) {
				return false
			}
		}
		return true
	case rbacOr:
		for i := range r.children {
			if r.children[i].match(in) {
				return true
			}
		}
		return false
	case rbacNot:
		return !r.children[0].match(in)
	case rbacHeader:
		return in.req != nil && r.header.match(in.req)
	case rbacPath:
		if in.req == nil {
			return false
		}
		p := in.req.target()
		if i := strings.IndexByte(string(p), '?'); i >= 0 {
			p = p[:i]
		}
		return r.str.match(p)
	case rbacDestinationPort:
		return in.d.local.Port() == r.port
	case rbacDestinationIP:
		return r.prefix.Contains(in.d.local.Addr())
	case rbacRemoteIP:
		return r.prefix.Contains(in.d.remote.Addr())
	case rbacAuthenticated:
		if in.d.peerCert == nil {
			return false
		}
		if r.str == nil {
			return true
		}
		for _, n := range peerNames(in.d.peerCert) {
			if r.str.match([]byte(n)) {
				return true
			}
		}
		return r.str.match([]byte(in.d.peerCert.Subject.String()))
	}
	return false
}

// decide says whether in may go on, and the policy that decided ("none"
// when none matched).
func (e *rbacEngine) decide(in rbacInput) (allowed bool, policy string) {
	for i := range e.policies {
		p := &e.policies[i]
		if anyRule(p.permissions, in) && anyRule(p.principals, in) {
			return e.action != rbacv3.RBAC_DENY, p.name
		}
	}
	return e.action != rbacv3.RBAC_ALLOW, "none"
}

func anyRule(rules []rbacRule, in rbacInput) bool {
	for i := range rules {
		if rules[i].match(in) {
			return true
		}
	}
	return false
}

// rbacRefused applies a chain's network RBAC filters (Envoy's
// envoy.filters.network.rbac) to d, whose TLS, if any, is done: a
// connection one stops is reset, and logged with the policy that
// decided. The connection is reset: its client learns at once.
func (p *Proxy) rbacRefused(d *downstream, fc *filterChain) (Result, bool) {
	for _, e := range fc.rbac {
		if ok, policy := e.decide(rbacInput{d: d}); !ok {
			reset(d.c)
			rec := d.record()
			rec.Duration = time.Since(d.start)
			rec.TerminationDetails = "rbac_access_denied_matched_policy[" + policy + "]"
			writeAll(d.lst.logs, &rec)
			return ResultRBACDenied, true
		}
	}
	return ResultOK, false
}

// rbacFilter is envoy.filters.http.rbac: a request its rules stop is
// answered 403 "RBAC: access denied", as Envoy answers it.
type rbacFilter struct{ engine *rbacEngine }

func (f *rbacFilter) idle() bool { return false }

func (f *rbacFilter) decide(r requestView) (time.Duration, localAnswer) {
	if ok, policy := f.engine.decide(rbacInput{d: r.downstream(), req: r}); !ok {
		return 0, localAnswer{code: 403, details: "rbac_access_denied_matched_policy[" + policy + "]", body: "RBAC: access denied"}
	}
	return 0, localAnswer{}
}

// rbacRules reads Envoy's RBAC rules.
func (r *resources) rbacRules(rules *rbacv3.RBAC, path string) *rbacEngine {
	e := &rbacEngine{action: rules.GetAction()}
	for _, name := range slices.Sorted(maps.Keys(rules.GetPolicies())) {
		pol := rules.GetPolicies()[name]
		pp := fmt.Sprintf("%s.policies.%s", path, name)
		p := rbacPolicy{name: name}
		p.permissions = rbacSet(pol.GetPermissions(), pp, "permissions", r.rbacPermission)
		p.principals = rbacSet(pol.GetPrincipals(), pp, "principals", r.rbacPrincipal)
		if len(p.permissions) == 0 || len(p.principals) == 0 {
			r.add(pp, "invalid: a policy needs permissions and principals, as Envoy requires")
		}
		e.policies = append(e.policies, p)
	}
	return e
}

func (r *resources) rbacPermission(p *rbacv3.Permission, path string) rbacRule {
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return rbacRule{kind: rbacAny}
	case *rbacv3.Permission_AndRules:
		return rbacRule{kind: rbacAnd, children: rbacSet(rule.AndRules.GetRules(), path+".and_rules", "rules", r.rbacPermission)}
	case *rbacv3.Permission_OrRules:
		return rbacRule{kind: rbacOr, children: rbacSet(rule.OrRules.GetRules(), path+".or_rules", "rules", r.rbacPermission)}
	case *rbacv3.Permission_NotRule:
		return rbacRule{kind: rbacNot, children: []rbacRule{r.rbacPermission(rule.NotRule, path+".not_rule")}}
	case *rbacv3.Permission_Header:
		return r.rbacHeader(rule.Header, path+".header")
	case *rbacv3.Permission_UrlPath:
		if sm := r.stringMatcher(rule.UrlPath.GetPath(), path+".url_path.path"); sm != nil {
			return rbacRule{kind: rbacPath, str: sm}
		}
	case *rbacv3.Permission_DestinationPort:
		return rbacRule{kind: rbacDestinationPort, port: uint16(rule.DestinationPort)}
	case *rbacv3.Permission_DestinationIp:
		return r.rbacPrefix(rbacDestinationIP, rule.DestinationIp, path+".destination_ip")
	default:
		r.add(path, "invalid: a permission needs a rule")
	}
	return rbacRule{kind: rbacNone}
}

func (r *resources) rbacPrincipal(p *rbacv3.Principal, path string) rbacRule {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return rbacRule{kind: rbacAny}
	case *rbacv3.Principal_AndIds:
		return rbacRule{kind: rbacAnd, children: rbacSet(id.AndIds.GetIds(), path+".and_ids", "ids", r.rbacPrincipal)}
	case *rbacv3.Principal_OrIds:
		return rbacRule{kind: rbacOr, children: rbacSet(id.OrIds.GetIds(), path+".or_ids", "ids", r.rbacPrincipal)}
	case *rbacv3.Principal_NotId:
		return rbacRule{kind: rbacNot, children: []rbacRule{r.rbacPrincipal(id.NotId, path+".not_id")}}
	case *rbacv3.Principal_Header:
		return r.rbacHeader(id.Header, path+".header")
	case *rbacv3.Principal_Authenticated_:
		rule := rbacRule{kind: rbacAuthenticated}
		if m := id.Authenticated.GetPrincipalName(); m != nil {
			if rule.str = r.stringMatcher(m, path+".authenticated.principal_name"); rule.str == nil {
				break
			}
		}
		return rule
	case *rbacv3.Principal_DirectRemoteIp:
		return r.rbacPrefix(rbacRemoteIP, id.DirectRemoteIp, path+".direct_remote_ip")
	case *rbacv3.Principal_RemoteIp:
		// No proxy protocol nor x-forwarded-for trusted: the peer's.
		return r.rbacPrefix(rbacRemoteIP, id.RemoteIp, path+".remote_ip")
	default:
		r.add(path, "invalid: a principal needs an identifier")
	}
	return rbacRule{kind: rbacNone}
}

// rbacSet reads a list of permissions or principals, each by one.
func rbacSet[T any](items []T, path, elem string, one func(T, string) rbacRule) []rbacRule {
	out := make([]rbacRule, 0, len(items))
	for i, it := range items {
		out = append(out, one(it, fmt.Sprintf("%s.%s[%d]", path, elem, i)))
	}
	return out
}

func (r *resources) rbacHeader(h *routev3.HeaderMatcher, path string) rbacRule {
	hm, ok := r.headerMatcher(h, path)
	if !ok {
		return rbacRule{kind: rbacNone}
	}
	return rbacRule{kind: rbacHeader, header: &hm}
}

func (r *resources) rbacPrefix(kind rbacKind, cr *corev3.CidrRange, path string) rbacRule {
	prefix, err := cidrRange(cr)
	if err != nil {
		r.add(path, "invalid: %v", err)
		return rbacRule{kind: rbacNone}
	}
	return rbacRule{kind: kind, prefix: prefix}
}
