package control

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// HTTPRoute is a Gateway API (gateway.networking.k8s.io/v1) HTTPRoute
// bound to a Service, the mesh's use of it (GAMMA): its rules route that
// service's requests. It is kept as the VirtualService it amounts to.
type HTTPRoute struct {
	Name, Namespace string
	Generation      int64
	// Parents are the services (namespace/name) it is bound to, each to
	// a port or (0) all of them.
	Parents []ParentService
	// Gateways are the Gateways' listeners it attaches to, for requests
	// to Hostnames (none: any the listener takes).
	Gateways  []ParentGateway
	Hostnames []string
	Routes    *VirtualService
}

// ParentService is an HTTPRoute's parentRef to a Service.
type ParentService struct {
	Service string // namespace/name
	Port    uint16
}

var (
	gatewayHeaderModifier = schema{"set": listOf{schema{"name": nil, "value": nil}}, "add": listOf{schema{"name": nil, "value": nil}}, "remove": nil}
	gatewayPathModifier   = schema{"type": nil, "replaceFullPath": nil, "replacePrefixMatch": nil}
	gatewayBackendRef     = schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil}
	gatewayMatchValue     = listOf{schema{"type": nil, "name": nil, "value": nil}}
)

var httpRouteSchema = schema{
	"parentRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "sectionName": nil}},
	"hostnames":  nil,
	"rules": listOf{schema{
		"name": nil,
		"matches": listOf{schema{"path": schema{"type": nil, "value": nil}, "headers": gatewayMatchValue,
			"queryParams": gatewayMatchValue, "method": nil}},
		"backendRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "weight": nil}},
		"timeouts":    schema{"request": nil, "backendRequest": nil},
		"retry":       schema{"codes": nil, "attempts": nil, "backoff": nil},
		// A filter of a type shunt does not run is reported by its type.
		"filters": listOf{schema{"type": nil,
			"urlRewrite":             schema{"hostname": nil, "path": gatewayPathModifier},
			"requestHeaderModifier":  gatewayHeaderModifier,
			"responseHeaderModifier": gatewayHeaderModifier,
			"requestRedirect":        schema{"scheme": nil, "hostname": nil, "path": gatewayPathModifier, "port": nil, "statusCode": nil},
			"requestMirror":          schema{"backendRef": gatewayBackendRef, "percent": nil, "fraction": schema{"numerator": nil, "denominator": nil}},
			"extensionRef":           nil}},
	}},
}

type gatewayPath struct{ Type, ReplaceFullPath, ReplacePrefixMatch string }

type gatewayHeaders struct {
	Set, Add []struct{ Name, Value string }
	Remove   []string
}

type gatewayMatch struct {
	Path                 *struct{ Type, Value string }
	Headers, QueryParams []struct{ Type, Name, Value string }
	// Method is an HTTPRoute's method name, a GRPCRoute's method match.
	Method json.RawMessage
}

type gatewayFilter struct {
	Type       string
	URLRewrite *struct {
		Hostname string
		Path     *gatewayPath
	}
	RequestHeaderModifier, ResponseHeaderModifier *gatewayHeaders
	RequestRedirect                               *struct {
		Scheme, Hostname string
		Path             *gatewayPath
		Port             uint16
		StatusCode       uint32
	}
	RequestMirror *struct {
		BackendRef struct {
			Name, Namespace string
			Port            uint16
		}
		Percent  *float64
		Fraction *struct{ Numerator, Denominator float64 }
	}
}

// HTTPRouteFrom reads an HTTPRoute manifest (YAML or JSON); one bound to
// neither a Service nor a Gateway is nil.
func HTTPRouteFrom(doc []byte, domain string) (*HTTPRoute, error) {
	return gatewayRouteFrom(doc, "HTTPRoute", httpRouteSchema, domain, httpMatch)
}

// gatewayRouteSpec is an HTTPRoute's or a GRPCRoute's spec.
type gatewayRouteSpec struct {
	ParentRefs []struct {
		Group, Kind, Name, Namespace, SectionName *string
		Port                                      uint16
	}
	Hostnames []string
	Rules     []struct {
		Name        string
		Matches     []gatewayMatch
		BackendRefs []backendRefSpec
		Timeouts    struct{ Request, BackendRequest string }
		Retry       *gatewayRetry
		Filters     []gatewayFilter
	}
}

// backendRefSpec is a route rule's backendRef as written.
type backendRefSpec struct {
	Group, Kind     *string
	Name, Namespace string
	Port            uint16
	Weight          *int32
}

// destination is the Service a backendRef names, in namespace ns unless
// it says, of weight 1 unless set; share false for a weight of 0; a
// problem (what it is instead) for one that is not a Service.
func (b backendRefSpec) destination(ns, domain string) (d Destination, share bool, problem string) {
	if b.Kind != nil && *b.Kind != "Service" || b.Group != nil && *b.Group != "" && *b.Group != "core" {
		return d, false, "a " + deref(b.Kind) + ", not a Service"
	}
	w := int32(1)
	if b.Weight != nil {
		w = *b.Weight
	}
	ns = cmp.Or(b.Namespace, ns)
	return Destination{Host: b.Name + "." + ns + ".svc." + domain, Port: b.Port, Weight: w}, w != 0, ""
}

// gatewayRouteFrom reads a Gateway API route of kind, its matches by
// match; one bound to no Service is nil.
func gatewayRouteFrom(doc []byte, kind string, s schema, domain string, match func(gatewayMatch, string) (HTTPMatch, error)) (*HTTPRoute, error) {
	o, problems, err := decodeObject(doc, s)
	if err != nil {
		return nil, err
	}
	var spec gatewayRouteSpec
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	fail := func(err error) (*HTTPRoute, error) { return nil, fmt.Errorf("%s %s: %v", kind, name, err) }
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return fail(err)
	}
	hr := &HTTPRoute{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Generation: o.Metadata.Generation}
	vs := &VirtualService{Kind: kind, Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Problems: problems}
	hr.Hostnames = spec.Hostnames
	for _, p := range spec.ParentRefs {
		ns := o.Metadata.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = *p.Namespace
		}
		if (p.Kind == nil || *p.Kind == "Gateway") && (p.Group == nil || *p.Group == "gateway.networking.k8s.io") {
			hr.Gateways = append(hr.Gateways, ParentGateway{Gateway: ns + "/" + deref(p.Name), Section: deref(p.SectionName), Port: p.Port})
			continue
		}
		if p.Kind == nil || *p.Kind != "Service" || (p.Group != nil && *p.Group != "" && *p.Group != "core") {
			continue // neither a Gateway nor a Service
		}
		hr.Parents = append(hr.Parents, ParentService{Service: ns + "/" + deref(p.Name), Port: p.Port})
		vs.Hosts = append(vs.Hosts, deref(p.Name)+"."+ns+".svc."+domain)
	}
	if len(hr.Parents)+len(hr.Gateways) == 0 {
		return nil, nil
	}
	for i, r := range spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		base := RouteRule{Name: r.Name}
		if base.Timeout, err = parseDuration(r.Timeouts.Request, path+".timeouts.request"); err != nil {
			return fail(err)
		}
		if base.Retries, err = gatewayRetries(r.Retry, r.Timeouts.BackendRequest, path); err != nil {
			return fail(err)
		}
		for j, f := range r.Filters {
			if err := vs.gatewayFilter(&base, f, fmt.Sprintf("%s.filters[%d]", path, j), o.Metadata.Namespace, domain); err != nil {
				return fail(err)
			}
		}
		for j, b := range r.BackendRefs {
			d, share, problem := b.destination(o.Metadata.Namespace, domain)
			if problem != "" {
				vs.Problems = append(vs.Problems, fmt.Sprintf("%s.backendRefs[%d]: %s", path, j, problem))
			}
			if share {
				base.Route = append(base.Route, d)
			}
		}
		switch {
		case base.Redirect != nil:
			base.Route = nil // a redirect answers: no backend is asked
		case len(base.Route) == 0:
			vs.Problems = append(vs.Problems, path+": no backend to send to")
			continue
		}
		if len(base.Route) == 1 {
			base.Route[0].Weight = 0
		}
		matches := r.Matches
		if len(matches) == 0 {
			matches = append(matches, gatewayMatch{})
		}
		for j, m := range matches {
			mpath := fmt.Sprintf("%s.matches[%d]", path, j)
			hm, err := match(m, mpath)
			if err == nil {
				err = hm.checkRegexes(mpath)
			}
			if err != nil {
				return fail(err)
			}
			route := base
			route.Match = []HTTPMatch{hm}
			// In the order written: the routes bound to a service are
			// sorted together, by Gateway API's precedence (see routesFor).
			vs.HTTP = append(vs.HTTP, route)
		}
	}
	hr.Routes = vs
	return hr, nil
}

// gatewayRetry is an HTTPRoute rule's retry.
type gatewayRetry struct {
	Codes    []uint32
	Attempts *uint32
	Backoff  string
}

// gatewayRetries is a rule's retry and timeouts.backendRequest (the
// timeout of each try) as a retry policy; nil for neither (Istio's
// default retries).
func gatewayRetries(retry *gatewayRetry, backendRequest, path string) (*Retries, error) {
	perTry, err := parseDuration(backendRequest, path+".timeouts.backendRequest")
	if err != nil || retry == nil && perTry == nil {
		return nil, err
	}
	out := &Retries{Attempts: 2} // Istio's default
	if perTry != nil {
		out.PerTryTimeout = *perTry
	}
	if retry == nil {
		return out, nil
	}
	if retry.Attempts != nil {
		out.Attempts = *retry.Attempts
	}
	for _, c := range retry.Codes {
		if c < 500 || c > 599 {
			return nil, fmt.Errorf("%s.retry.codes: %d is not a 5xx status", path, c)
		}
	}
	out.Codes = retry.Codes
	backoff, err := parseDuration(retry.Backoff, path+".retry.backoff")
	if err != nil {
		return nil, err
	}
	if backoff != nil {
		out.Backoff = *backoff
	}
	return out, nil
}

// httpMatch is an HTTPRoute's match: path, method, headers, query
// parameters.
func httpMatch(m gatewayMatch, path string) (HTTPMatch, error) {
	hm := HTTPMatch{URI: StringMatch{Prefix: "/"}}
	if p := m.Path; p != nil {
		switch p.Type {
		case "Exact":
			hm.URI = StringMatch{Exact: p.Value}
		case "RegularExpression":
			hm.URI = StringMatch{Regex: p.Value}
		case "", "PathPrefix":
			// By path segments; "/" is every path.
			if v := strings.TrimSuffix(p.Value, "/"); v != "" {
				hm.URI, hm.URISegments = StringMatch{Prefix: v}, true
			}
		default:
			return hm, fmt.Errorf("%s.path.type: %q is not Exact, PathPrefix or RegularExpression", path, p.Type)
		}
	}
	if len(m.Method) > 0 {
		var method string
		if err := json.Unmarshal(m.Method, &method); err != nil {
			return hm, fmt.Errorf("%s.method: %v", path, err)
		}
		hm.Method = StringMatch{Exact: method}
	}
	headerMatches(&hm, m)
	return hm, nil
}

// headerMatches puts a match's headers (any case) and query parameters
// into hm, exact or by regular expression.
func headerMatches(hm *HTTPMatch, m gatewayMatch) {
	for _, f := range []struct {
		in   []struct{ Type, Name, Value string }
		into *map[string]StringMatch
		fold bool
	}{{m.Headers, &hm.Headers, true}, {m.QueryParams, &hm.QueryParams, false}} {
		for _, h := range f.in {
			if *f.into == nil {
				*f.into = map[string]StringMatch{}
			}
			key := h.Name
			if f.fold {
				key = strings.ToLower(key)
			}
			if h.Type == "RegularExpression" {
				(*f.into)[key] = StringMatch{Regex: h.Value}
			} else {
				(*f.into)[key] = StringMatch{Exact: h.Value}
			}
		}
	}
}

// gatewayFilter applies a rule's filter to base, the rule's route.
func (vs *VirtualService) gatewayFilter(base *RouteRule, f gatewayFilter, path, namespace, domain string) error {
	headers := func(g *gatewayHeaders, field string) HeaderOp {
		op := jsonHeaderOp{Remove: g.Remove, Set: map[string]string{}, Add: map[string]string{}}
		for _, h := range g.Set {
			op.Set[h.Name] = h.Value
		}
		for _, h := range g.Add {
			op.Add[h.Name] = h.Value
		}
		return vs.headerOps(jsonHeaderOps{Request: op}, path+"."+field).Request
	}
	switch {
	case f.Type == "URLRewrite" && f.URLRewrite != nil:
		base.RewriteAuthority = f.URLRewrite.Hostname
		if p := f.URLRewrite.Path; p != nil {
			switch p.Type {
			case "ReplacePrefixMatch":
				base.RewriteURI = p.ReplacePrefixMatch
			case "ReplaceFullPath":
				base.RewriteRegex = &RegexRewrite{Match: "^/.*$", Rewrite: p.ReplaceFullPath}
			default:
				return fmt.Errorf("%s.urlRewrite.path.type: %q is not ReplaceFullPath or ReplacePrefixMatch", path, p.Type)
			}
		}
	case f.Type == "RequestHeaderModifier" && f.RequestHeaderModifier != nil:
		base.Headers.Request = mergeOps(base.Headers.Request, headers(f.RequestHeaderModifier, "requestHeaderModifier"))
		base.authorityFromHeaders()
	case f.Type == "ResponseHeaderModifier" && f.ResponseHeaderModifier != nil:
		base.Headers.Response = mergeOps(base.Headers.Response, headers(f.ResponseHeaderModifier, "responseHeaderModifier"))
	case f.Type == "RequestRedirect" && f.RequestRedirect != nil:
		rd := f.RequestRedirect
		out := &Redirect{Scheme: rd.Scheme, Authority: rd.Hostname, Port: rd.Port, Code: rd.StatusCode}
		if out.Code == 0 {
			out.Code = 302 // Gateway API's default
		}
		if !slices.Contains(redirectCodes, out.Code) {
			return fmt.Errorf("%s.requestRedirect.statusCode: %d is not 301, 302, 303, 307 or 308", path, rd.StatusCode)
		}
		// No port and no scheme: the port asked for (the listener's).
		out.FromRequestPort = out.Port == 0 && out.Scheme == ""
		if p := rd.Path; p != nil {
			switch p.Type {
			case "ReplaceFullPath":
				out.URI = p.ReplaceFullPath
			case "ReplacePrefixMatch":
				out.PrefixRewrite = p.ReplacePrefixMatch
			default:
				return fmt.Errorf("%s.requestRedirect.path.type: %q is not ReplaceFullPath or ReplacePrefixMatch", path, p.Type)
			}
		}
		base.Redirect = out
	case f.Type == "RequestMirror" && f.RequestMirror != nil:
		m := f.RequestMirror
		ns := cmp.Or(m.BackendRef.Namespace, namespace)
		mirror := Mirror{Destination: Destination{Host: m.BackendRef.Name + "." + ns + ".svc." + domain, Port: m.BackendRef.Port}}
		switch {
		case m.Percent != nil:
			mirror.Percent = m.Percent
		case m.Fraction != nil:
			den := m.Fraction.Denominator
			if den == 0 {
				den = 100
			}
			share := 100 * m.Fraction.Numerator / den
			mirror.Percent = &share
		}
		if p := mirror.Percent; p != nil && (*p < 0 || *p > 100) {
			return fmt.Errorf("%s.requestMirror: %g%% is not a share from 0 to 100", path, *p)
		}
		base.Mirrors = append(base.Mirrors, mirror)
	default:
		vs.Problems = append(vs.Problems, path+": "+f.Type)
	}
	return nil
}

// pathRank orders paths by Gateway API's precedence: exact first, then
// by prefix length.
func pathRank(m StringMatch) int {
	switch {
	case m.Exact != "":
		return 1 << 20
	case m.Prefix != "":
		return len(m.Prefix)
	}
	return 0
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
