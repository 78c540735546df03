package proxy

import (
	"fmt"
	"strings"
	"time"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
)

// corsFilter is Envoy's envoy.filters.http.cors under a route's
// CorsPolicy: a preflight (OPTIONS with an Origin it allows and
// Access-Control-Request-Method) is answered 200 with what the policy
// allows; another request from an allowed Origin goes on, its response
// told the origin may read it. A request from another origin is left
// alone, a preflight included (forward_not_matching_preflights, true).
type corsFilter struct {
	origins                   []*stringMatcher // none: the filter does nothing
	methods, headers, expose  string
	maxAge                    string
	credentials               bool
	enabled                   fraction
	answerUnmatchedPreflights bool
}

func (f *corsFilter) idle() bool { return len(f.origins) == 0 }

func (f *corsFilter) decide(r requestView) (time.Duration, localAnswer) {
	origin, ok := r.header("origin")
	if !ok || len(origin) == 0 || !f.enabled.hit() {
		return 0, localAnswer{}
	}
	allowed := false
	for _, m := range f.origins {
		if m.match(origin) {
			allowed = true
			break
		}
	}
	method, _ := r.header(":method")
	_, asks := r.header("access-control-request-method")
	preflight := string(method) == "OPTIONS" && asks
	switch {
	case preflight && allowed:
		h := []headerAdd{newHeaderAdd("access-control-allow-origin", string(origin), overwriteIfExistsOrAdd)}
		for _, kv := range [][2]string{{"access-control-allow-methods", f.methods}, {"access-control-allow-headers", f.headers},
			{"access-control-max-age", f.maxAge}} {
			if kv[1] != "" {
				h = append(h, newHeaderAdd(kv[0], kv[1], overwriteIfExistsOrAdd))
			}
		}
		if f.credentials {
			h = append(h, newHeaderAdd("access-control-allow-credentials", "true", overwriteIfExistsOrAdd))
		}
		return 0, localAnswer{code: 200, details: "cors_response", headers: h}
	case preflight && f.answerUnmatchedPreflights:
		return 0, localAnswer{code: 200, details: "cors_response"}
	case !allowed || preflight:
		return 0, localAnswer{}
	}
	h := []headerAdd{newHeaderAdd("access-control-allow-origin", string(origin), overwriteIfExistsOrAdd)}
	if f.credentials {
		h = append(h, newHeaderAdd("access-control-allow-credentials", "true", overwriteIfExistsOrAdd))
	}
	if f.expose != "" {
		h = append(h, newHeaderAdd("access-control-expose-headers", f.expose, overwriteIfExistsOrAdd))
	}
	return 0, localAnswer{headers: h}
}

// corsFilter makes a route's CORS filter of its policy (none: idle).
func (r *resources) corsFilter(p *corsv3.CorsPolicy, path string) httpFilter {
	f := &corsFilter{methods: p.GetAllowMethods(), headers: p.GetAllowHeaders(), expose: p.GetExposeHeaders(), maxAge: p.GetMaxAge(),
		credentials: p.GetAllowCredentials().GetValue(), enabled: fraction{1, 1},
		answerUnmatchedPreflights: p.GetForwardNotMatchingPreflights() != nil && !p.GetForwardNotMatchingPreflights().GetValue()}
	if e := p.GetFilterEnabled(); e != nil {
		f.enabled = fractionOf(e.GetDefaultValue())
	}
	for i, m := range p.GetAllowOriginStringMatch() {
		sm := r.stringMatcher(m, fmt.Sprintf("%s.allow_origin_string_match[%d]", path, i))
		if sm == nil {
			return nil
		}
		f.origins = append(f.origins, sm)
	}
	for _, v := range []struct{ name, value string }{{"allow_methods", f.methods}, {"allow_headers", f.headers}, {"expose_headers", f.expose}, {"max_age", f.maxAge}} {
		if strings.ContainsAny(v.value, "\r\n") {
			r.add(path+"."+v.name, "invalid: a line break in a header value")
			return nil
		}
	}
	return f
}
