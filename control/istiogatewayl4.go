package control

import (
	"fmt"
	"maps"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// istioL4 is an Istio Gateway's server (the Gateway's key and itself)
// that routes connections: TLS passthrough or TCP.
type istioL4 struct {
	key string
	gw  *IstioGateway
	srv IstioServer
}

// istioL4Listener is the listener of a port whose Istio servers route
// connections: a filter chain per match of the VirtualServices' tls
// routes bound there, for its sniHosts the server admits (a TLS
// passthrough server: the connection goes on unopened, and an SNI no
// route takes is refused); or, on a TCP server, the first tcp route
// bound there takes every connection (another is reported). Nil when no
// route is bound; the clusters it sends to are added to clusters.
func (c *compiler) istioL4Listener(port uint16, servers []istioL4, clusters map[string]bool) *listenerv3.Listener {
	lst := l4Listener(port, slices.ContainsFunc(servers, func(s istioL4) bool { return s.srv.Passthrough }))
	sniTaken := map[string]string{} // by the chain that has it
	for _, s := range servers {
		for _, vsKey := range slices.Sorted(maps.Keys(c.w.VirtualServices)) {
			vs := c.w.VirtualServices[vsKey]
			kind, rules := "tcp", vs.TCP
			if s.srv.Passthrough {
				kind, rules = "tls", vs.TLS
			}
			for _, r := range vs.gatewayL4(rules, s.key, port) {
				path := fmt.Sprintf("spec.%s[%d]", kind, r.Index)
				var names []string
				for _, m := range r.Match {
					for _, sni := range m.SNIHosts {
						switch {
						case !s.srv.admitsHost(sni, vs.Namespace, s.gw.Namespace):
						case sniTaken[sni] != "":
							c.report(vs, path, "SNI "+sni+" on port "+fmt.Sprint(port)+" is "+sniTaken[sni]+"'s already: left out")
						default:
							sniTaken[sni] = vsKey
							names = append(names, sni)
						}
					}
				}
				switch {
				case s.srv.Passthrough && len(names) == 0:
					continue // no SNI this server admits
				case !s.srv.Passthrough && len(lst.FilterChains) > 0:
					c.report(vs, path, fmt.Sprintf("port %d takes another tcp route already (the first by name): not run", port))
					continue
				}
				backends := c.l4Backends(vs, r, port, path)
				if slices.Contains(names, "*") {
					names = nil
				}
				lst.FilterChains = append(lst.FilterChains, c.tcpChain(lst.Name, fmt.Sprintf("%s-%s-%s[%d]", lst.Name, vsKey, kind, r.Index), names, backends, clusters))
			}
		}
	}
	if len(lst.FilterChains) == 0 {
		return nil
	}
	return lst
}
