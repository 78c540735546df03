package control

import (
	"encoding/json"
	"fmt"
	"strings"
)

// HTTPRoute is a Gateway API (gateway.networking.k8s.io/v1) HTTPRoute
// bound to a Service, the mesh's use of it (GAMMA): its rules route that
// service's requests. It is kept as the VirtualService it amounts to.
type HTTPRoute struct {
	Name, Namespace string
	// Parents are the services (namespace/name) it is bound to, each to
	// a port or (0) all of them.
	Parents []ParentService
	Routes  *VirtualService
}

// ParentService is an HTTPRoute's parentRef to a Service.
type ParentService struct {
	Service string // namespace/name
	Port    uint16
}

var httpRouteSchema = schema{
	"parentRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil}},
	"hostnames":  nil,
	"rules": listOf{schema{
		"name":        nil,
		"matches":     listOf{schema{"path": schema{"type": nil, "value": nil}, "headers": listOf{schema{"type": nil, "name": nil, "value": nil}}}},
		"backendRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "weight": nil}},
		"timeouts":    schema{"request": nil},
		// A filter of a type shunt does not run is reported by its type.
		"filters": listOf{schema{"type": nil, "urlRewrite": schema{"hostname": nil,
			"path": schema{"type": nil, "replacePrefixMatch": nil}},
			"requestMirror": nil, "requestHeaderModifier": nil, "responseHeaderModifier": nil, "requestRedirect": nil, "extensionRef": nil}},
	}},
}

// HTTPRouteFrom reads an HTTPRoute manifest (YAML or JSON); one bound to
// no Service (a Gateway's) is nil.
func HTTPRouteFrom(doc []byte, domain string) (*HTTPRoute, error) {
	o, problems, err := decodeObject(doc, httpRouteSchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		ParentRefs []struct {
			Group, Kind, Name, Namespace *string
			Port                         uint16
		}
		Rules []struct {
			Name    string
			Matches []struct {
				Path    *struct{ Type, Value string }
				Headers []struct{ Type, Name, Value string }
			}
			BackendRefs []struct {
				Group, Kind     *string
				Name, Namespace string
				Port            uint16
				Weight          *int32
			}
			Timeouts struct{ Request string }
			Filters  []struct {
				Type       string
				URLRewrite *struct {
					Hostname string
					Path     *struct{ Type, ReplacePrefixMatch string }
				}
			}
		}
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("HTTPRoute %s: %v", name, err)
	}
	hr := &HTTPRoute{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace}
	vs := &VirtualService{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Problems: problems}
	for _, p := range spec.ParentRefs {
		if p.Kind == nil || *p.Kind != "Service" || (p.Group != nil && *p.Group != "" && *p.Group != "core") {
			continue // a Gateway's: not the mesh's
		}
		ns := o.Metadata.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = *p.Namespace
		}
		hr.Parents = append(hr.Parents, ParentService{Service: ns + "/" + deref(p.Name), Port: p.Port})
		vs.Hosts = append(vs.Hosts, deref(p.Name)+"."+ns+".svc."+domain)
	}
	if len(hr.Parents) == 0 {
		return nil, nil
	}
	for i, r := range spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		base := RouteRule{Name: r.Name}
		if base.Timeout, err = parseDuration(r.Timeouts.Request, path+".timeouts.request"); err != nil {
			return nil, fmt.Errorf("HTTPRoute %s: %v", name, err)
		}
		for j, f := range r.Filters {
			fpath := fmt.Sprintf("%s.filters[%d]", path, j)
			switch {
			case f.Type == "URLRewrite" && f.URLRewrite != nil:
				base.RewriteAuthority = f.URLRewrite.Hostname
				if p := f.URLRewrite.Path; p != nil {
					if p.Type != "ReplacePrefixMatch" {
						vs.Problems = append(vs.Problems, fpath+".urlRewrite.path.type: "+p.Type)
						continue
					}
					base.RewriteURI = p.ReplacePrefixMatch
				}
			default:
				vs.Problems = append(vs.Problems, fpath+": "+f.Type)
			}
		}
		for j, b := range r.BackendRefs {
			if b.Kind != nil && *b.Kind != "Service" || b.Group != nil && *b.Group != "" && *b.Group != "core" {
				vs.Problems = append(vs.Problems, fmt.Sprintf("%s.backendRefs[%d]: a %s, not a Service", path, j, deref(b.Kind)))
				continue
			}
			w := int32(1)
			if b.Weight != nil {
				w = *b.Weight
			}
			if w == 0 {
				continue // no share
			}
			ns := b.Namespace
			if ns == "" {
				ns = o.Metadata.Namespace
			}
			base.Route = append(base.Route, Destination{Host: b.Name + "." + ns + ".svc." + domain, Port: b.Port, Weight: w})
		}
		if len(base.Route) == 0 {
			vs.Problems = append(vs.Problems, path+": no backend to send to")
			continue
		}
		if len(base.Route) == 1 {
			base.Route[0].Weight = 0
		}
		matches := r.Matches
		if len(matches) == 0 {
			matches = append(matches, struct {
				Path    *struct{ Type, Value string }
				Headers []struct{ Type, Name, Value string }
			}{})
		}
		for j, m := range matches {
			route := base
			hm := HTTPMatch{URI: StringMatch{Prefix: "/"}}
			if p := m.Path; p != nil {
				switch p.Type {
				case "Exact":
					hm.URI = StringMatch{Exact: p.Value}
				case "RegularExpression":
					hm.URI = StringMatch{Regex: p.Value}
				case "", "PathPrefix":
					hm.URI = StringMatch{Prefix: p.Value}
				default:
					return nil, fmt.Errorf("HTTPRoute %s: %s.matches[%d].path.type: %q is not Exact, PathPrefix or RegularExpression", name, path, j, p.Type)
				}
			}
			for _, h := range m.Headers {
				if hm.Headers == nil {
					hm.Headers = map[string]StringMatch{}
				}
				if h.Type == "RegularExpression" {
					hm.Headers[strings.ToLower(h.Name)] = StringMatch{Regex: h.Value}
				} else {
					hm.Headers[strings.ToLower(h.Name)] = StringMatch{Exact: h.Value}
				}
			}
			route.Match = []HTTPMatch{hm}
			// In the order written: the routes bound to a service are
			// sorted together, by Gateway API's precedence (see routesFor).
			vs.HTTP = append(vs.HTTP, route)
		}
	}
	hr.Routes = vs
	return hr, nil
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
