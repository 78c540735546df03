package capture

import "net/netip"

// Conntrack zones that keep the proxy's DNS flows apart from the app's: a
// query the app sends and the one the proxy sends upstream for it can have
// the same addresses and ports, and in one zone conntrack would take one
// for the other's reply.
const (
	ZoneUpstream = 1 // the proxy <-> name servers
	ZoneApp      = 2 // the app <-> the proxy's DNS listener
)

var dnsPort = []PortRange{Port(53)}

// dnsServerRules makes one rule per captured name server, or one for any
// server when every DNS query is captured.
func dnsServerRules(cfg Config, make func(server *netip.Prefix) Rule) []Rule {
	if cfg.CaptureAllDNS {
		return []Rule{make(nil)}
	}
	var rules []Rule
	for _, a := range cfg.dnsServers() {
		p := netip.PrefixFrom(a, a.BitLen())
		rules = append(rules, make(&p))
	}
	return rules
}

// dnsRedirectRules hands the app's DNS to the proxy's DNS port, TCP and
// UDP, but not the proxy's own queries upstream.
func dnsRedirectRules(cfg Config) []Rule {
	if !cfg.CapturesDNS() {
		return nil
	}
	to := Redirect{cfg.DNSPort}
	toServer := func(proto Proto, what string) func(*netip.Prefix) Rule {
		return func(server *netip.Prefix) Rule {
			conds := []Cond{proto, DestPorts{Ports: dnsPort}}
			purpose := what + " DNS is captured"
			if server != nil {
				conds = append(conds, Dest{Prefix: *server})
				purpose = what + " DNS to name server " + server.Addr().String() + " is captured"
			}
			return Rule{Conds: conds, Verdict: to, Purpose: purpose}
		}
	}
	rules := dnsServerRules(cfg, toServer(tcp, "TCP"))
	for _, owner := range proxyOwners(cfg) {
		rules = append(rules, Rule{Conds: []Cond{udp, DestPorts{Ports: dnsPort}, owner}, Verdict: Return{},
			Purpose: "the proxy's own DNS queries are not captured"})
	}
	return append(rules, dnsServerRules(cfg, toServer(udp, "UDP"))...)
}

// dnsQueryZoneRules puts UDP DNS sent from the pod in zones: the proxy's
// queries upstream in one, the app's queries and the proxy's answers to
// them in the other.
func dnsQueryZoneRules(cfg Config) []Rule {
	if !cfg.CapturesDNS() {
		return nil
	}
	var rules []Rule
	for _, owner := range proxyOwners(cfg) {
		rules = append(rules,
			Rule{Conds: []Cond{udp, DestPorts{Ports: dnsPort}, owner}, Verdict: CTZone{ZoneUpstream},
				Purpose: "the proxy's queries to name servers are tracked in zone 1"},
			Rule{Conds: []Cond{udp, SourcePorts{Ports: []PortRange{Port(cfg.DNSPort)}}, owner}, Verdict: CTZone{ZoneApp},
				Purpose: "the proxy's answers to the app are tracked in zone 2"})
	}
	return append(rules, dnsServerRules(cfg, func(server *netip.Prefix) Rule {
		conds := []Cond{udp, DestPorts{Ports: dnsPort}}
		if server != nil {
			conds = append(conds, Dest{Prefix: *server})
		}
		return Rule{Conds: conds, Verdict: CTZone{ZoneApp}, Purpose: "the app's DNS queries are tracked in zone 2"}
	})...)
}

// dnsAnswerZoneRules puts answers from name servers in the proxy's zone.
func dnsAnswerZoneRules(cfg Config) []Rule {
	if !cfg.CapturesDNS() {
		return nil
	}
	return dnsServerRules(cfg, func(server *netip.Prefix) Rule {
		conds := []Cond{udp, SourcePorts{Ports: dnsPort}}
		if server != nil {
			conds = append(conds, Source{Prefix: *server})
		}
		return Rule{Conds: conds, Verdict: CTZone{ZoneUpstream}, Purpose: "answers from name servers are tracked in zone 1"}
	})
}

func proxyOwners(cfg Config) []Cond {
	var owners []Cond
	for _, uid := range cfg.ProxyUIDs {
		owners = append(owners, OwnerUID{UID: uid})
	}
	for _, gid := range cfg.ProxyGIDs {
		owners = append(owners, OwnerGID{GID: gid})
	}
	return owners
}
