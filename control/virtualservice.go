package control

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// VirtualService is Istio's networking.istio.io/v1 VirtualService, the
// fields shunt runs for sidecars: HTTP routes by URI, method, scheme,
// authority, header and query parameter; weighted destinations
// (service, subset, port); timeouts, retries, rewrites, header changes,
// faults, mirrors, redirects and direct responses.
type VirtualService struct {
	// Kind is "HTTPRoute" for the routes of HTTPRoutes; "" for a
	// VirtualService.
	Kind            string
	Name, Namespace string
	Hosts           []string
	ExportTo        []string
	HTTP            []RouteRule
	// Gateways are those it is bound to (namespace/name, "mesh" for the
	// sidecars; none: the sidecars alone); GatewayHTTP its rules as the
	// gateways take them, each match with its own gateways, if any (see
	// gatewayRules).
	Gateways    []string
	GatewayHTTP []RouteRule
	// TLS and TCP are its tls and tcp routes (gateways run them).
	TLS, TCP []L4Rule
	// Problems are the fields shunt does not run, by their paths: left
	// out, and reported.
	Problems []string
	// Ports limit it to those of the hosts' ports (an HTTPRoute bound to
	// a Service's port); none: every port.
	Ports []uint16
}

// RouteRule is one of a VirtualService's http routes. It forwards to
// Route, or answers itself with Redirect or DirectResponse.
type RouteRule struct {
	Name    string
	Match   []HTTPMatch // any; none matches every request
	Route   []Destination
	Timeout *time.Duration
	Retries *Retries
	// RewriteURI replaces the matched prefix; RewriteRegex the parts of
	// the path its pattern matches; RewriteAuthority the Host.
	RewriteURI, RewriteAuthority string
	RewriteRegex                 *RegexRewrite
	Redirect                     *Redirect
	DirectResponse               *DirectResponse
	Fault                        *Fault
	Mirrors                      []Mirror
	Headers                      HeaderOps
	CORS                         *CORSPolicy
	// Delegate names the VirtualService (one with no hosts) whose routes
	// take this one's place, under its matches.
	Delegate *Delegate
}

// Delegate is a route's delegate: a VirtualService by name.
type Delegate struct{ Name, Namespace string }

// CORSPolicy is a route's corsPolicy: the origins whose scripts may read
// its responses, and what their preflights are told.
type CORSPolicy struct {
	Origins                  []StringMatch
	Methods, Headers, Expose []string
	MaxAge                   *time.Duration
	Credentials              bool
	// IgnoreUnmatched answers another origin's preflight itself
	// (unmatchedPreflights IGNORE); else it goes to the upstream.
	IgnoreUnmatched bool
}

// HTTPMatch is a request match: every condition it has holds.
type HTTPMatch struct {
	URI                       StringMatch
	Method, Scheme, Authority StringMatch
	Headers, WithoutHeaders   map[string]StringMatch
	QueryParams               map[string]StringMatch
	IgnoreURICase             bool
	// URISegments: URI's prefix matches whole path segments (Gateway
	// API's PathPrefix: /api is /api and /api/…, not /apix).
	URISegments bool
	Port        uint16 // 0: any of the hosts' ports
	// Gateways are the gateways (namespace/name) a match of a gateway's
	// rule is for; none: its VirtualService's.
	Gateways []string
}

// StringMatch is one of exact, prefix or regex (RE2); none set matches
// anything (a header or query parameter: its presence).
type StringMatch struct {
	Exact, Prefix, Regex string
}

func (m StringMatch) any() bool { return m == StringMatch{} }

// Destination is a weighted destination of a route.
type Destination struct {
	Host   string
	Subset string
	Port   uint16 // 0: the service's only port, or the port the request came to
	Weight int32
}

// Retries is a route's retry policy: RetryOn, else Istio's conditions;
// Codes, else 503, the statuses retried; Backoff, else Envoy's 25 ms,
// the first wait.
type Retries struct {
	Attempts      uint32
	PerTryTimeout time.Duration
	RetryOn       string
	Codes         []uint32
	Backoff       time.Duration
}

// RegexRewrite replaces what Match matches in the path with Rewrite.
type RegexRewrite struct{ Match, Rewrite string }

// Redirect answers with a redirect: each field set replaces that part of
// the request's URL. PrefixRewrite replaces the matched prefix (Gateway
// API's ReplacePrefixMatch); FromRequestPort keeps the port asked for.
type Redirect struct {
	URI, PrefixRewrite, Authority, Scheme string
	Port                                  uint16
	FromRequestPort                       bool
	Code                                  uint32
}

// DirectResponse answers with Status and Body.
type DirectResponse struct {
	Status uint32
	Body   string
}

// Fault delays and aborts a share of requests; a nil share is none, as
// in Envoy and Istio.
type Fault struct {
	Delay        *time.Duration
	DelayPercent *float64
	// AbortHTTP is a status; AbortGRPC a gRPC status code (-1: none).
	AbortHTTP    uint32
	AbortGRPC    int
	Abort        bool
	AbortPercent *float64
}

// Mirror copies a share of requests (nil: all) to a destination, whose
// answers are dropped.
type Mirror struct {
	Destination
	Percent *float64
}

// HeaderOps change a route's requests and responses.
type HeaderOps struct{ Request, Response HeaderOp }

// HeaderOp sets (replaces), adds (appends) and removes headers.
type HeaderOp struct {
	Set, Add map[string]string
	Remove   []string
}

func (h HeaderOp) empty() bool { return len(h.Set)+len(h.Add)+len(h.Remove) == 0 }

var (
	headerOpsSchema   = schema{"request": headerOpSchema, "response": headerOpSchema}
	headerOpSchema    = schema{"set": nil, "add": nil, "remove": nil}
	destinationSchema = schema{"host": nil, "subset": nil, "port": schema{"number": nil}}
	percentSchema     = schema{"value": nil}
)

var virtualServiceSchema = schema{
	"hosts": nil, "exportTo": nil, "gateways": nil, "tls": vsTLSSchema, "tcp": vsTCPSchema,
	"http": listOf{schema{
		"name": nil,
		"match": listOf{schema{"name": nil, "uri": stringMatch, "method": stringMatch, "scheme": stringMatch,
			"authority": stringMatch, "headers": mapOf{stringMatch}, "withoutHeaders": mapOf{stringMatch},
			"queryParams": mapOf{stringMatch}, "ignoreUriCase": nil, "port": nil, "gateways": nil,
			"sourceLabels": nil, "sourceNamespace": nil}},
		"route":          listOf{schema{"destination": destinationSchema, "weight": nil, "headers": headerOpsSchema}},
		"timeout":        nil,
		"retries":        schema{"attempts": nil, "perTryTimeout": nil, "retryOn": nil},
		"rewrite":        schema{"uri": nil, "authority": nil, "uriRegexRewrite": schema{"match": nil, "rewrite": nil}},
		"redirect":       schema{"uri": nil, "authority": nil, "port": nil, "derivePort": nil, "scheme": nil, "redirectCode": nil},
		"directResponse": schema{"status": nil, "body": schema{"string": nil, "bytes": nil}},
		"headers":        headerOpsSchema,
		"fault": schema{
			"delay": schema{"fixedDelay": nil, "percentage": percentSchema, "percent": nil},
			"abort": schema{"httpStatus": nil, "grpcStatus": nil, "percentage": percentSchema}},
		"mirror": destinationSchema, "mirrorPercentage": percentSchema, "mirrorPercent": nil,
		"mirrors":  listOf{schema{"destination": destinationSchema, "percentage": percentSchema}},
		"delegate": schema{"name": nil, "namespace": nil},
		"corsPolicy": schema{"allowOrigins": listOf{stringMatch}, "allowOrigin": nil, "allowMethods": nil, "allowHeaders": nil,
			"exposeHeaders": nil, "maxAge": nil, "allowCredentials": nil, "unmatchedPreflights": nil},
	}},
}

type jsonStringMatch struct{ Exact, Prefix, Regex string }

func (m jsonStringMatch) model() StringMatch { return StringMatch{m.Exact, m.Prefix, m.Regex} }

type jsonDestination struct {
	Host, Subset string
	Port         struct{ Number uint16 }
}

func (d jsonDestination) model() Destination {
	return Destination{Host: d.Host, Subset: d.Subset, Port: d.Port.Number}
}

type jsonHeaderOp struct {
	Set, Add map[string]string
	Remove   []string
}

type jsonHeaderOps struct{ Request, Response jsonHeaderOp }

type jsonPercent struct{ Value float64 }

type vsSpec struct {
	Hosts, ExportTo, Gateways []string
	HTTP                      []vsHTTP
	TLS, TCP                  []vsL4
}

type vsHTTP struct {
	Name  string
	Match []struct {
		URI, Method, Scheme, Authority       jsonStringMatch
		Headers, WithoutHeaders, QueryParams map[string]jsonStringMatch
		IgnoreURICase                        bool
		Port                                 uint16
		Gateways                             []string
		SourceLabels                         map[string]string
		SourceNamespace                      string
	}
	Route []struct {
		Destination jsonDestination
		Weight      int32
		Headers     *jsonHeaderOps
	}
	Timeout string
	Retries *struct {
		Attempts      uint32
		PerTryTimeout string
		RetryOn       string
	}
	Rewrite struct {
		URI, Authority  string
		URIRegexRewrite *struct{ Match, Rewrite string }
	}
	Redirect *struct {
		URI, Authority, Scheme, DerivePort string
		Port                               uint16
		RedirectCode                       uint32
	}
	DirectResponse *struct {
		Status uint32
		Body   struct{ String, Bytes string }
	}
	Headers jsonHeaderOps
	Fault   *struct {
		Delay *struct {
			FixedDelay string
			Percentage *jsonPercent
			Percent    *float64
		}
		Abort *struct {
			HTTPStatus uint32
			GRPCStatus string
			Percentage *jsonPercent
		}
	}
	Mirror           *jsonDestination
	MirrorPercentage *jsonPercent
	MirrorPercent    *float64
	Mirrors          []struct {
		Destination jsonDestination
		Percentage  *jsonPercent
	}
	Delegate   *struct{ Name, Namespace string }
	CORSPolicy *struct {
		AllowOrigins                            []jsonStringMatch
		AllowOrigin, AllowMethods, AllowHeaders []string
		ExposeHeaders                           []string
		MaxAge, UnmatchedPreflights             string
		AllowCredentials                        bool
	}
}

// VirtualServiceFrom reads a VirtualService manifest (YAML or JSON). What
// Istio's validation refuses is an error; a field shunt does not run is
// a problem, left out.
func VirtualServiceFrom(doc []byte) (*VirtualService, error) {
	o, problems, err := decodeObject(doc, virtualServiceSchema)
	if err != nil {
		return nil, err
	}
	var spec vsSpec
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("VirtualService %s/%s: %v", o.Metadata.Namespace, o.Metadata.Name, err)
	}
	vs := &VirtualService{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Hosts: spec.Hosts, ExportTo: spec.ExportTo, Problems: problems,
		Gateways: qualifyGateways(spec.Gateways, o.Metadata.Namespace)}
	notMesh := func(g string) bool { return g != "mesh" }
	gatewayBound := slices.ContainsFunc(vs.Gateways, notMesh)
	for _, h := range spec.HTTP {
		for _, m := range h.Match {
			gatewayBound = gatewayBound || slices.ContainsFunc(m.Gateways, notMesh)
		}
	}
	for i, h := range spec.HTTP {
		path := fmt.Sprintf("spec.http[%d]", i)
		for _, forGateway := range []bool{false, true} {
			if !forGateway && !vs.forMesh() || forGateway && !gatewayBound {
				continue
			}
			r, ok, err := vs.rule(h, path, forGateway)
			if err != nil {
				return nil, fmt.Errorf("VirtualService %s/%s: %v", vs.Namespace, vs.Name, err)
			}
			switch {
			case ok && forGateway:
				vs.GatewayHTTP = append(vs.GatewayHTTP, r)
			case ok:
				vs.HTTP = append(vs.HTTP, r)
			}
		}
	}
	if vs.TLS, err = vs.readL4(spec.TLS, "tls"); err == nil {
		vs.TCP, err = vs.readL4(spec.TCP, "tcp")
	}
	if err != nil {
		return nil, fmt.Errorf("VirtualService %s/%s: %v", vs.Namespace, vs.Name, err)
	}
	vs.Problems = compactProblems(vs.Problems)
	return vs, nil
}

// compactProblems drops repeats (a rule read for the sidecars and the
// gateways alike says its problems twice), keeping the order.
func compactProblems(ps []string) []string {
	seen := map[string]bool{}
	return slices.DeleteFunc(ps, func(p string) bool {
		dup := seen[p]
		seen[p] = true
		return dup
	})
}

// rule reads one http route as the sidecars take it, or (forGateway)
// the gateways, each match with its gateways; ok is false for one they
// do not run.
func (vs *VirtualService) rule(h vsHTTP, path string, forGateway bool) (r RouteRule, ok bool, err error) {
	r = RouteRule{Name: h.Name, RewriteURI: h.Rewrite.URI, RewriteAuthority: h.Rewrite.Authority}
	if rr := h.Rewrite.URIRegexRewrite; rr != nil {
		if err := checkRegex(rr.Match, path+".rewrite.uriRegexRewrite.match"); err != nil {
			return r, false, err
		}
		r.RewriteRegex = &RegexRewrite{rr.Match, rr.Rewrite}
	}
	for j, m := range h.Match {
		mpath := fmt.Sprintf("%s.match[%d]", path, j)
		gws := slices.DeleteFunc(qualifyGateways(m.Gateways, vs.Namespace), func(g string) bool { return g == "mesh" })
		switch {
		case !forGateway && len(m.Gateways) > 0 && !slices.Contains(m.Gateways, "mesh"):
			continue // a gateway's match
		case forGateway && len(m.Gateways) > 0 && len(gws) == 0:
			continue // the sidecars' match
		case forGateway && len(m.Gateways) == 0 && !slices.ContainsFunc(vs.Gateways, func(g string) bool { return g != "mesh" }):
			continue // no gateway's
		}
		if len(m.SourceLabels) > 0 || m.SourceNamespace != "" {
			// Without its condition the match would take every client's
			// requests: it is left out whole.
			vs.Problems = append(vs.Problems, mpath+": a match by the client's labels or namespace (left out)")
			continue
		}
		hm := HTTPMatch{URI: m.URI.model(), Method: m.Method.model(), Scheme: m.Scheme.model(), Authority: m.Authority.model(),
			IgnoreURICase: m.IgnoreURICase, Port: m.Port}
		if forGateway {
			hm.Gateways = gws
		}
		for _, f := range []struct {
			in   map[string]jsonStringMatch
			into *map[string]StringMatch
			name string
			fold bool
		}{{m.Headers, &hm.Headers, "headers", true}, {m.WithoutHeaders, &hm.WithoutHeaders, "withoutHeaders", true},
			{m.QueryParams, &hm.QueryParams, "queryParams", false}} {
			for _, k := range slices.Sorted(maps.Keys(f.in)) {
				if *f.into == nil {
					*f.into = map[string]StringMatch{}
				}
				name := k
				if f.fold {
					name = strings.ToLower(k)
				}
				(*f.into)[name] = f.in[k].model()
			}
		}
		if err := hm.checkRegexes(mpath); err != nil {
			return r, false, err
		}
		r.Match = append(r.Match, hm)
	}
	if len(h.Match) > 0 && len(r.Match) == 0 {
		return r, false, nil // every match a gateway's, or left out
	}
	for j, d := range h.Route {
		if d.Destination.Host == "" {
			return r, false, fmt.Errorf("%s.route[%d].destination.host: missing", path, j)
		}
		dst := d.Destination.model()
		dst.Weight = d.Weight
		r.Route = append(r.Route, dst)
		if d.Headers == nil {
			continue
		}
		ops := vs.headerOps(*d.Headers, fmt.Sprintf("%s.route[%d].headers", path, j))
		if len(h.Route) > 1 {
			if !ops.Request.empty() || !ops.Response.empty() {
				vs.Problems = append(vs.Problems, fmt.Sprintf("%s.route[%d].headers (a destination's own, with several destinations)", path, j))
			}
			continue
		}
		r.Headers = ops // the only destination's are the route's
	}
	if r.Timeout, err = parseDuration(h.Timeout, path+".timeout"); err != nil {
		return r, false, err
	}
	if h.Retries != nil {
		per, err := parseDuration(h.Retries.PerTryTimeout, path+".retries.perTryTimeout")
		if err != nil {
			return r, false, err
		}
		r.Retries = &Retries{Attempts: h.Retries.Attempts, RetryOn: h.Retries.RetryOn}
		if per != nil {
			r.Retries.PerTryTimeout = *per
		}
	}
	ops := vs.headerOps(h.Headers, path+".headers")
	r.Headers.Request, r.Headers.Response = mergeOps(r.Headers.Request, ops.Request), mergeOps(r.Headers.Response, ops.Response)
	r.authorityFromHeaders()
	if r.Redirect, err = vsRedirect(h, path); err != nil {
		return r, false, err
	}
	if r.DirectResponse, err = vsDirectResponse(h, path); err != nil {
		return r, false, err
	}
	if r.Fault, err = vsFault(h, path); err != nil {
		return r, false, err
	}
	if r.Mirrors, err = vsMirrors(h, path); err != nil {
		return r, false, err
	}
	if r.CORS, err = vsCORS(h, path); err != nil {
		return r, false, err
	}
	if d := h.Delegate; d != nil {
		if d.Name == "" {
			return r, false, fmt.Errorf("%s.delegate.name: missing", path)
		}
		r.Delegate = &Delegate{d.Name, cmp.Or(d.Namespace, vs.Namespace)}
	}
	answers := 0
	for _, set := range []bool{len(r.Route) > 0, r.Redirect != nil, r.DirectResponse != nil, r.Delegate != nil} {
		if set {
			answers++
		}
	}
	switch {
	case answers > 1:
		return r, false, fmt.Errorf("%s: route, redirect, directResponse and delegate are exclusive", path)
	case answers == 0:
		vs.Problems = append(vs.Problems, path+": no route, redirect, directResponse or delegate")
		return r, false, nil
	}
	return r, true, nil
}

// authorityFromHeaders makes a request header change of the Host (host
// or :authority) the route's authority rewrite, as Istio does.
func (r *RouteRule) authorityFromHeaders() {
	for _, m := range []map[string]string{r.Headers.Request.Set, r.Headers.Request.Add} {
		for _, k := range []string{"host", ":authority"} {
			if v, ok := m[k]; ok {
				if r.RewriteAuthority == "" {
					r.RewriteAuthority = v
				}
				delete(m, k)
			}
		}
	}
}

// checkRegexes refuses a match's pattern RE2 (Go's regexp) does not
// compile: the sidecar would refuse the whole route configuration.
func (m HTTPMatch) checkRegexes(path string) error {
	for name, sm := range map[string]StringMatch{"uri": m.URI, "method": m.Method, "scheme": m.Scheme, "authority": m.Authority} {
		if err := checkRegex(sm.Regex, path+"."+name+".regex"); err != nil {
			return err
		}
	}
	for field, ms := range map[string]map[string]StringMatch{"headers": m.Headers, "withoutHeaders": m.WithoutHeaders, "queryParams": m.QueryParams} {
		for k, sm := range ms {
			if err := checkRegex(sm.Regex, path+"."+field+"."+k+".regex"); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRegex(re, path string) error {
	if re == "" {
		return nil
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s: %q is not an RE2 pattern: %v", path, re, err)
	}
	return nil
}

// headerOps reads header changes; a value with a '%' (an Envoy command
// operator to the sidecar) is a problem, left out.
func (vs *VirtualService) headerOps(in jsonHeaderOps, path string) HeaderOps {
	op := func(o jsonHeaderOp, path string) HeaderOp {
		out := HeaderOp{Remove: o.Remove}
		for _, f := range []struct {
			in   map[string]string
			into *map[string]string
			name string
		}{{o.Set, &out.Set, "set"}, {o.Add, &out.Add, "add"}} {
			for _, k := range slices.Sorted(maps.Keys(f.in)) {
				name := strings.ToLower(k)
				switch {
				case strings.Contains(f.in[k], "%"):
					vs.Problems = append(vs.Problems, fmt.Sprintf("%s.%s.%s: a value with %%", path, f.name, k))
					continue
				case strings.HasPrefix(name, ":") && name != ":authority":
					vs.Problems = append(vs.Problems, fmt.Sprintf("%s.%s.%s: a pseudo-header", path, f.name, k))
					continue
				}
				if *f.into == nil {
					*f.into = map[string]string{}
				}
				(*f.into)[name] = f.in[k]
			}
		}
		return out
	}
	return HeaderOps{op(in.Request, path+".request"), op(in.Response, path+".response")}
}

// mergeOps is a's changes, then b's over them.
func mergeOps(a, b HeaderOp) HeaderOp {
	out := HeaderOp{Remove: slices.Concat(a.Remove, b.Remove)}
	for _, f := range []struct {
		a, b map[string]string
		into *map[string]string
	}{{a.Set, b.Set, &out.Set}, {a.Add, b.Add, &out.Add}} {
		if len(f.a)+len(f.b) > 0 {
			*f.into = maps.Clone(f.a)
			if *f.into == nil {
				*f.into = map[string]string{}
			}
			maps.Copy(*f.into, f.b)
		}
	}
	return out
}

// redirectCodes are the statuses a redirect may answer with.
var redirectCodes = []uint32{301, 302, 303, 307, 308}

func vsRedirect(h vsHTTP, path string) (*Redirect, error) {
	rd := h.Redirect
	if rd == nil {
		return nil, nil
	}
	out := &Redirect{URI: rd.URI, Authority: rd.Authority, Scheme: rd.Scheme, Port: rd.Port, Code: rd.RedirectCode}
	if out.Code == 0 {
		out.Code = 301 // Istio's default
	}
	if !slices.Contains(redirectCodes, out.Code) {
		return nil, fmt.Errorf("%s.redirect.redirectCode: %d is not 301, 302, 303, 307 or 308", path, rd.RedirectCode)
	}
	switch rd.DerivePort {
	case "", "FROM_PROTOCOL_DEFAULT":
	case "FROM_REQUEST_PORT":
		out.FromRequestPort = true
	default:
		return nil, fmt.Errorf("%s.redirect.derivePort: %q is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT", path, rd.DerivePort)
	}
	return out, nil
}

func vsDirectResponse(h vsHTTP, path string) (*DirectResponse, error) {
	d := h.DirectResponse
	if d == nil {
		return nil, nil
	}
	if d.Status < 200 || d.Status > 599 {
		return nil, fmt.Errorf("%s.directResponse.status: %d is not a status from 200 to 599", path, d.Status)
	}
	out := &DirectResponse{Status: d.Status, Body: d.Body.String}
	if d.Body.Bytes != "" {
		b, err := base64.StdEncoding.DecodeString(d.Body.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s.directResponse.body.bytes: not base64: %v", path, err)
		}
		out.Body = string(b)
	}
	return out, nil
}

func vsCORS(h vsHTTP, path string) (*CORSPolicy, error) {
	c := h.CORSPolicy
	if c == nil {
		return nil, nil
	}
	out := &CORSPolicy{Methods: c.AllowMethods, Headers: c.AllowHeaders, Expose: c.ExposeHeaders, Credentials: c.AllowCredentials}
	for i, o := range c.AllowOrigins {
		if err := checkRegex(o.Regex, fmt.Sprintf("%s.corsPolicy.allowOrigins[%d].regex", path, i)); err != nil {
			return nil, err
		}
		out.Origins = append(out.Origins, o.model())
	}
	for _, o := range c.AllowOrigin { // deprecated: exact origins
		out.Origins = append(out.Origins, StringMatch{Exact: o})
	}
	var err error
	if out.MaxAge, err = parseDuration(c.MaxAge, path+".corsPolicy.maxAge"); err != nil {
		return nil, err
	}
	switch c.UnmatchedPreflights {
	case "", "UNSPECIFIED", "FORWARD":
	case "IGNORE":
		out.IgnoreUnmatched = true
	default:
		return nil, fmt.Errorf("%s.corsPolicy.unmatchedPreflights: %q is not FORWARD or IGNORE", path, c.UnmatchedPreflights)
	}
	return out, nil
}

// grpcCodes are gRPC's status codes by name.
var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
	"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func vsFault(h vsHTTP, path string) (*Fault, error) {
	f := h.Fault
	if f == nil || f.Delay == nil && f.Abort == nil {
		return nil, nil
	}
	out := &Fault{AbortGRPC: -1}
	if d := f.Delay; d != nil {
		delay, err := parseDuration(d.FixedDelay, path+".fault.delay.fixedDelay")
		if err != nil {
			return nil, err
		}
		if delay == nil {
			return nil, fmt.Errorf("%s.fault.delay.fixedDelay: missing", path)
		}
		out.Delay = delay
		if out.DelayPercent, err = percent(d.Percentage, d.Percent, path+".fault.delay.percentage"); err != nil {
			return nil, err
		}
	}
	if a := f.Abort; a != nil {
		out.Abort = true
		switch {
		case a.GRPCStatus != "":
			out.AbortGRPC = slices.Index(grpcCodes, a.GRPCStatus)
			if out.AbortGRPC < 0 {
				return nil, fmt.Errorf("%s.fault.abort.grpcStatus: %q is not a gRPC status name", path, a.GRPCStatus)
			}
		case a.HTTPStatus < 200 || a.HTTPStatus > 599:
			return nil, fmt.Errorf("%s.fault.abort.httpStatus: %d is not a status from 200 to 599", path, a.HTTPStatus)
		default:
			out.AbortHTTP = a.HTTPStatus
		}
		var err error
		if out.AbortPercent, err = percent(a.Percentage, nil, path+".fault.abort.percentage"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// percent is a share from Istio's Percent (a double) or a deprecated
// integer percent; nil when neither is set.
func percent(p *jsonPercent, deprecated *float64, path string) (*float64, error) {
	var v *float64
	switch {
	case p != nil:
		v = &p.Value
	case deprecated != nil:
		v = deprecated
	default:
		return nil, nil
	}
	if *v < 0 || *v > 100 {
		return nil, fmt.Errorf("%s: %g is not a percentage from 0 to 100", path, *v)
	}
	return v, nil
}

func vsMirrors(h vsHTTP, path string) ([]Mirror, error) {
	var out []Mirror
	if h.Mirror != nil {
		p, err := percent(h.MirrorPercentage, h.MirrorPercent, path+".mirrorPercentage")
		if err != nil {
			return nil, err
		}
		out = append(out, Mirror{h.Mirror.model(), p})
	}
	for j, m := range h.Mirrors {
		p, err := percent(m.Percentage, nil, fmt.Sprintf("%s.mirrors[%d].percentage", path, j))
		if err != nil {
			return nil, err
		}
		out = append(out, Mirror{m.Destination.model(), p})
	}
	for j, m := range out {
		if m.Host == "" {
			return nil, fmt.Errorf("%s: mirror %d: destination.host: missing", path, j)
		}
	}
	return out, nil
}
