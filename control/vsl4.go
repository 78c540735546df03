package control

import (
	"fmt"
	"slices"
)

// L4Rule is one of a VirtualService's tls or tcp routes: connections
// that one of Match takes (none: every connection) go to Route, by
// weight, unopened.
type L4Rule struct {
	Index int // in spec.tls or spec.tcp
	Match []L4Match
	Route []Destination
}

// L4Match is a tls or tcp route's match: the port, the SNIs (tls) and
// the gateways (namespace/name, "mesh"; none: the VirtualService's) it
// takes.
type L4Match struct {
	Port     uint16
	SNIHosts []string
	Gateways []string
}

var (
	l4RouteSchema = listOf{schema{"destination": destinationSchema, "weight": nil}}
	vsTLSSchema   = listOf{schema{"match": listOf{schema{"port": nil, "sniHosts": nil, "gateways": nil}}, "route": l4RouteSchema}}
	vsTCPSchema   = listOf{schema{"match": listOf{schema{"port": nil, "gateways": nil}}, "route": l4RouteSchema}}
)

type vsL4 struct {
	Match []struct {
		Port     uint16
		SNIHosts []string `json:"sniHosts"`
		Gateways []string
	}
	Route []struct {
		Destination jsonDestination
		Weight      int32
	}
}

// readL4 takes a VirtualService's tls or tcp routes (kind): what
// Istio's validation refuses is an error; a tcp rule for the sidecars is
// reported (they do not route TCP by these yet: gateways do).
func (vs *VirtualService) readL4(rules []vsL4, kind string) ([]L4Rule, error) {
	var out []L4Rule
	for i, r := range rules {
		path := fmt.Sprintf("spec.%s[%d]", kind, i)
		rule := L4Rule{Index: i}
		for j, m := range r.Match {
			if kind == "tls" && len(m.SNIHosts) == 0 {
				return nil, fmt.Errorf("%s.match[%d].sniHosts: a tls match needs at least one", path, j)
			}
			rule.Match = append(rule.Match, L4Match{Port: m.Port, SNIHosts: m.SNIHosts, Gateways: qualifyGateways(m.Gateways, vs.Namespace)})
		}
		if kind == "tls" && len(rule.Match) == 0 {
			return nil, fmt.Errorf("%s.match: a tls route needs a match", path)
		}
		if len(r.Route) == 0 {
			return nil, fmt.Errorf("%s.route: missing", path)
		}
		for j, d := range r.Route {
			if d.Destination.Host == "" {
				return nil, fmt.Errorf("%s.route[%d].destination.host: missing", path, j)
			}
			dst := d.Destination.model()
			dst.Weight = d.Weight
			rule.Route = append(rule.Route, dst)
		}
		if kind == "tcp" && (slices.ContainsFunc(rule.Match, func(m L4Match) bool { return vs.l4Bound(m, "mesh") }) || len(rule.Match) == 0 && vs.forMesh()) {
			vs.Problems = append(vs.Problems, path+" for the sidecars (gateways run it)")
		}
		out = append(out, rule)
	}
	return out, nil
}

// l4Bound says a match is bound to gateway gw: by its own gateways, or
// the VirtualService's.
func (vs *VirtualService) l4Bound(m L4Match, gw string) bool {
	if len(m.Gateways) > 0 {
		return slices.Contains(m.Gateways, gw)
	}
	if gw == "mesh" {
		return vs.forMesh()
	}
	return slices.Contains(vs.Gateways, gw)
}

// gatewayL4 are a VirtualService's tls or tcp rules as gateway gw takes
// them on port: each with its matches bound there; a rule with none is
// left out (a rule without matches takes every connection of the
// VirtualService's gateways).
func (vs *VirtualService) gatewayL4(rules []L4Rule, gw string, port uint16) []L4Rule {
	var out []L4Rule
	for _, r := range rules {
		if len(r.Match) == 0 {
			if slices.Contains(vs.Gateways, gw) {
				out = append(out, r)
			}
			continue
		}
		var ms []L4Match
		for _, m := range r.Match {
			if vs.l4Bound(m, gw) && (m.Port == 0 || m.Port == port) {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			r.Match = ms
			out = append(out, r)
		}
	}
	return out
}
