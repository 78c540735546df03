package control

import (
	"fmt"
	"maps"
	"strings"
)

// delegated are the routes a root VirtualService's route r (the i-th)
// delegates to: the delegate's, each under r's matches merged with its
// own (a pair that cannot both hold is left out), its short hosts in its
// own namespace. A delegate that is missing, has hosts of its own (it is
// a root), delegates further, or is not exported to the root's namespace
// is reported and r routes nothing.
func (c *compiler) delegated(vs *VirtualService, i int, r RouteRule) []RouteRule {
	path := fmt.Sprintf("spec.http[%d].delegate", i)
	d := c.w.VirtualServices[r.Delegate.Namespace+"/"+r.Delegate.Name]
	switch {
	case d == nil:
		c.report(vs, path, "no VirtualService "+r.Delegate.Namespace+"/"+r.Delegate.Name)
		return nil
	case !c.m.inMesh(c.w, d.Namespace):
		c.report(vs, path, r.Delegate.Namespace+" is outside the mesh's discovery selectors")
		return nil
	case len(d.Hosts) > 0:
		c.report(vs, path, r.Delegate.Namespace+"/"+r.Delegate.Name+" has hosts: a root, not a delegate")
		return nil
	case !(&Service{Namespace: d.Namespace, ExportTo: d.ExportTo}).visibleFrom(vs.Namespace):
		c.report(vs, path, r.Delegate.Namespace+"/"+r.Delegate.Name+" is not exported to "+vs.Namespace)
		return nil
	}
	var out []RouteRule
	for j, dr := range d.HTTP {
		if dr.Delegate != nil {
			c.report(vs, path, fmt.Sprintf("%s/%s's http[%d] delegates again (one level only)", d.Namespace, d.Name, j))
			continue
		}
		merged := dr
		merged.Route = make([]Destination, len(dr.Route))
		for k, dst := range dr.Route {
			dst.Host = c.w.fqdn(dst.Host, d.Namespace)
			merged.Route[k] = dst
		}
		merged.Mirrors = make([]Mirror, len(dr.Mirrors))
		for k, m := range dr.Mirrors {
			m.Host = c.w.fqdn(m.Host, d.Namespace)
			merged.Mirrors[k] = m
		}
		merged.Match = nil
		for _, rm := range orAny(r.Match) {
			for _, dm := range orAny(dr.Match) {
				if m, ok := mergeMatch(rm, dm); ok {
					merged.Match = append(merged.Match, m)
				}
			}
		}
		if len(merged.Match) == 0 {
			continue // no request meets both
		}
		if merged.Name == "" {
			merged.Name = fmt.Sprintf("%s.%s.%d", d.Name, d.Namespace, j)
		}
		out = append(out, merged)
	}
	return out
}

// orAny is matches, or one that matches any request.
func orAny(matches []HTTPMatch) []HTTPMatch {
	if len(matches) == 0 {
		return []HTTPMatch{{}}
	}
	return matches
}

// mergeMatch is a match that holds when both a (the root's) and b (the
// delegate's) do, as Istio merges them: b's path within a's, the other
// conditions of both; ok is false when they cannot both hold.
func mergeMatch(a, b HTTPMatch) (HTTPMatch, bool) {
	out := b
	uri, ok := mergeURI(a.URI, b.URI)
	if !ok {
		return out, false
	}
	out.URI = uri
	for _, f := range []struct{ a, b, into *StringMatch }{{&a.Method, &b.Method, &out.Method}, {&a.Scheme, &b.Scheme, &out.Scheme},
		{&a.Authority, &b.Authority, &out.Authority}} {
		switch {
		case f.a.any():
		case f.b.any():
			*f.into = *f.a
		case *f.a != *f.b:
			return out, false
		}
	}
	for _, f := range []struct {
		a, b map[string]StringMatch
		into *map[string]StringMatch
	}{{a.Headers, b.Headers, &out.Headers}, {a.WithoutHeaders, b.WithoutHeaders, &out.WithoutHeaders}, {a.QueryParams, b.QueryParams, &out.QueryParams}} {
		if len(f.a) == 0 {
			continue
		}
		m := maps.Clone(f.b)
		if m == nil {
			m = map[string]StringMatch{}
		}
		for k, v := range f.a {
			if w, ok := m[k]; ok && w != v {
				return out, false
			}
			m[k] = v
		}
		*f.into = m
	}
	switch {
	case a.Port == 0:
	case b.Port == 0:
		out.Port = a.Port
	case a.Port != b.Port:
		return out, false
	}
	out.IgnoreURICase = a.IgnoreURICase || b.IgnoreURICase
	return out, true
}

// mergeURI is the narrower of two paths, when one lies within the other.
func mergeURI(a, b StringMatch) (StringMatch, bool) {
	switch {
	case a.any():
		return b, true
	case b.any():
		return a, true
	case a.Regex != "" || b.Regex != "":
		return b, a == b // a regex within another cannot be told
	case a.Prefix != "" && b.Prefix != "":
		if strings.HasPrefix(b.Prefix, a.Prefix) {
			return b, true
		}
		if strings.HasPrefix(a.Prefix, b.Prefix) {
			return a, true
		}
	case a.Prefix != "":
		return b, strings.HasPrefix(b.Exact, a.Prefix)
	case b.Prefix != "":
		return a, strings.HasPrefix(a.Exact, b.Prefix)
	default:
		return b, a.Exact == b.Exact
	}
	return b, false
}
