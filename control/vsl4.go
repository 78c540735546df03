package control

import (
	"fmt"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/shunt-dev/shunt/proxy"
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
// Istio's validation refuses is an error.
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

// l4Backends are a tls or tcp rule's destinations as clusters, by
// weight (a lone destination's unset weight is all), on port; a
// destination the mesh does not have is reported (path: the rule's) and
// left out.
func (c *compiler) l4Backends(vs *VirtualService, r L4Rule, port uint16, path string) []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight {
	var out []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	for j, d := range r.Route {
		cl := c.destinationCluster(vs, d, Port{Port: port}, fmt.Sprintf("%s.route[%d]", path, j))
		if cl == proxy.BlackHoleCluster {
			continue // reported
		}
		w := uint32(d.Weight)
		if len(r.Route) == 1 && w == 0 {
			w = 100
		}
		out = append(out, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: cl, Weight: w})
	}
	return out
}

// meshTCP is the TCP proxy of the first of a VirtualService's tcp rules
// bound to the sidecars that takes port (by its matches' ports, or
// having none); nil when none does.
func (c *compiler) meshTCP(vs *VirtualService, port uint16) *listenerv3.Filter {
	for _, r := range vs.TCP {
		takes := len(r.Match) == 0 && vs.forMesh()
		for _, m := range r.Match {
			takes = takes || vs.l4Bound(m, "mesh") && (m.Port == 0 || m.Port == port)
		}
		if takes {
			return c.tcpProxyTo(outboundStatPrefix(port), c.l4Backends(vs, r, port, fmt.Sprintf("spec.tcp[%d]", r.Index)))
		}
	}
	return nil
}
