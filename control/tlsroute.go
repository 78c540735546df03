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
// hosts, ports, weights).
type TLSRoute struct {
	Name, Namespace string
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

// TLSRouteFrom reads a TLSRoute manifest; one bound to no Gateway is nil.
func TLSRouteFrom(doc []byte, domain string) (*TLSRoute, error) {
	o, problems, err := decodeObject(doc, tlsRouteSchema)
	if err != nil {
		return nil, err
	}
	var spec gatewayRouteSpec
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("TLSRoute %s: %v", name, err)
	}
	r := &TLSRoute{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Problems: problems}
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
		r.Problems = append(r.Problems, "spec.rules: more than one rule: the first is run (a TLSRoute has one)")
	}
	for i, rule := range spec.Rules[:min(1, len(spec.Rules))] {
		for j, b := range rule.BackendRefs {
			path := fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j)
			switch {
			case b.Kind != nil && *b.Kind != "Service" || b.Group != nil && *b.Group != "" && *b.Group != "core":
				r.Problems = append(r.Problems, fmt.Sprintf("%s: a %s, not a Service", path, deref(b.Kind)))
			case b.Port == 0:
				return nil, fmt.Errorf("TLSRoute %s: %s: a Service's backendRef needs a port", name, path)
			case b.Weight == nil || *b.Weight > 0:
				w := int32(1)
				if b.Weight != nil {
					w = *b.Weight
				}
				ns := cmp.Or(b.Namespace, o.Metadata.Namespace)
				r.Backends = append(r.Backends, Destination{Host: b.Name + "." + ns + ".svc." + domain, Port: b.Port, Weight: w})
			}
		}
	}
	return r, nil
}

// PutTLSRoute adds or replaces a TLSRoute.
func (w *World) PutTLSRoute(r *TLSRoute) { w.TLSRoutes[r.Namespace+"/"+r.Name] = r }
