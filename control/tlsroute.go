package control

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
)

// TLSRoute is a Gateway API TLSRoute: the TLS connections a Gateway's
// Passthrough listener takes for Hostnames (by SNI; none: any the
// listener takes), sent on as they are, unopened, to Backends (FQDN
// hosts, ports, weights); or, of Kind TCPRoute, the connections a TCP
// listener takes.
type TLSRoute struct {
	Kind            string // TLSRoute or TCPRoute
	Name, Namespace string
	Generation      int64
	Gateways        []ParentGateway
	Hostnames       []string
	Backends        []Destination
	// Problems are what of it is not run, with why.
	Problems []string
}

var tlsRouteSchema = schema{
	"parentRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "sectionName": nil}},
	"hostnames":  nil,
	"rules": listOf{schema{"name": nil,
		"backendRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "weight": nil}}}},
}

var tcpRouteSchema = schema{"parentRefs": tlsRouteSchema["parentRefs"], "rules": tlsRouteSchema["rules"]}

// TLSRouteFrom reads a TLSRoute manifest; one bound to no Gateway is nil.
func TLSRouteFrom(doc []byte, domain string) (*TLSRoute, error) {
	return l4RouteFrom(doc, "TLSRoute", tlsRouteSchema, domain)
}

// TCPRouteFrom reads a TCPRoute manifest; one bound to no Gateway is nil.
func TCPRouteFrom(doc []byte, domain string) (*TLSRoute, error) {
	return l4RouteFrom(doc, "TCPRoute", tcpRouteSchema, domain)
}

// l4RouteFrom reads a route of kind (TLSRoute, TCPRoute).
func l4RouteFrom(doc []byte, kind string, s schema, domain string) (*TLSRoute, error) {
	o, problems, err := decodeObject(doc, s)
	if err != nil {
		return nil, err
	}
	var spec gatewayRouteSpec
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("%s %s: %v", kind, name, err)
	}
	r := &TLSRoute{Kind: kind, Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Generation: o.Metadata.Generation, Problems: problems}
	for _, h := range spec.Hostnames {
		r.Hostnames = append(r.Hostnames, strings.ToLower(h))
	}
	for _, p := range spec.ParentRefs {
		if (p.Kind == nil || *p.Kind == "Gateway") && (p.Group == nil || *p.Group == "gateway.networking.k8s.io") {
			ns := cmp.Or(deref(p.Namespace), o.Metadata.Namespace)
			r.Gateways = append(r.Gateways, ParentGateway{Gateway: ns + "/" + deref(p.Name), Section: deref(p.SectionName), Port: p.Port})
		}
	}
	if len(r.Gateways) == 0 {
		return nil, nil
	}
	if len(spec.Rules) > 1 {
		r.Problems = append(r.Problems, "spec.rules: more than one rule: the first is run")
	}
	for i, rule := range spec.Rules[:min(1, len(spec.Rules))] {
		for j, b := range rule.BackendRefs {
			path := fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j)
			d, share, problem := b.destination(o.Metadata.Namespace, domain)
			switch {
			case problem != "":
				r.Problems = append(r.Problems, path+": "+problem)
			case b.Port == 0:
				return nil, fmt.Errorf("%s %s: %s: a Service's backendRef needs a port", kind, name, path)
			case share:
				r.Backends = append(r.Backends, d)
			}
		}
	}
	return r, nil
}

// PutTLSRoute adds or replaces a TLSRoute or TCPRoute.
func (w *World) PutTLSRoute(r *TLSRoute) { w.TLSRoutes[l4RouteKey(r.Kind, r.Namespace+"/"+r.Name)] = r }

// l4RouteKey keys a route in World.TLSRoutes: a TLSRoute's namespace/name,
// a TCPRoute's after its kind.
func l4RouteKey(kind, key string) string {
	if kind == "TCPRoute" {
		return kind + " " + key
	}
	return key
}
