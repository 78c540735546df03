package capture

import "net/netip"

// outputRules is the outbound entry, in istio-iptables' order: exclusions by
// interface and port, the proxy's own traffic, owner groups, DNS, loopback,
// excluded ranges, and last what to capture.
func outputRules(cfg Config) []Rule {
	rules := outboundExclusions(cfg)
	if len(cfg.OutboundExcludePorts) > 0 {
		for _, proto := range []Proto{tcp, udp} {
			rules = append(rules, Rule{Conds: []Cond{proto, DestPorts{Ports: cfg.OutboundExcludePorts}},
				Verdict: Return{}, Purpose: "outbound port is excluded from capture"})
		}
	}
	rules = append(rules, perFamily(cfg, func(f Family) Rule {
		return Rule{Conds: []Cond{Source{Prefix: passthroughSrc[f]}, lo}, Verdict: Return{},
			Purpose: "the proxy's inbound passthrough to the app is not captured again"}
	})...)
	for _, uid := range cfg.ProxyUIDs {
		rules = append(rules, proxyOwnerRules(cfg, OwnerUID{UID: uid}, OwnerUID{UID: uid, Not: true}, "UID", uid)...)
	}
	for _, gid := range cfg.ProxyGIDs {
		rules = append(rules, proxyOwnerRules(cfg, OwnerGID{GID: gid}, OwnerGID{GID: gid, Not: true}, "GID", gid)...)
	}
	rules = append(rules, ownerGroupRules(cfg)...)
	if cfg.CapturesDNS() {
		rules = append(rules, Rule{Verdict: Jump{ChainOutputDNS}, Purpose: "DNS is considered for capture"})
	}
	rules = append(rules, perFamily(cfg, func(f Family) Rule {
		return Rule{Conds: []Cond{Dest{Prefix: cfg.loopback(f)}}, Verdict: Return{},
			Purpose: "connections to loopback are not captured"}
	})...)
	for _, p := range cfg.OutboundExcludeCIDRs {
		if cfg.captured(p) {
			rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}}, Verdict: Return{},
				Purpose: "destination range is excluded from capture"})
		}
	}
	if len(cfg.OutboundPorts) > 0 {
		rules = append(rules, Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.OutboundPorts}}, Verdict: Jump{ChainRedirect},
			Purpose: "outbound port is captured"})
	}
	if cfg.OutboundAll {
		rules = append(rules, Rule{Verdict: Jump{ChainRedirect}, Purpose: "every other outbound connection is captured"})
	}
	for _, p := range cfg.OutboundCIDRs {
		if cfg.captured(p) {
			rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}}, Verdict: Jump{ChainRedirect},
				Purpose: "destination range is captured"})
		}
	}
	return rules
}

// proxyOwnerRules keeps the proxy's traffic out of capture, except its calls
// to the pod's own addresses over lo: those go to the inbound listener, so
// app -> proxy -> (service VIP resolves here) -> proxy inbound -> app works.
// With DNS capture, TCP port 53 over lo is left to the DNS rules.
func proxyOwnerRules(cfg Config, is, isNot Cond, kind string, id uint32) []Rule {
	who := "proxy " + kind + " " + utoa(id)
	notToSelf := []PortRange{Port(cfg.TunnelPort)}
	if cfg.CapturesDNS() {
		notToSelf = []PortRange{Port(53), Port(cfg.TunnelPort)}
	}
	rules := perFamily(cfg, func(f Family) Rule {
		return Rule{
			Conds:   []Cond{Dest{Prefix: cfg.loopback(f), Not: true}, lo, tcp, DestPorts{Ports: notToSelf, Not: true}, is},
			Verdict: Jump{ChainInRedirect},
			Purpose: who + " calling the pod's own address goes to the inbound listener",
		}
	})
	if !includesLoopback(cfg.OutboundCIDRs) {
		conds := []Cond{lo, isNot}
		if cfg.CapturesDNS() {
			conds = []Cond{lo, tcp, DestPorts{Ports: []PortRange{Port(53)}, Not: true}, isNot}
		}
		rules = append(rules, Rule{Conds: conds, Verdict: Return{},
			Purpose: "app traffic over lo is not captured (not " + who + ")"})
	}
	return append(rules, Rule{Conds: []Cond{is}, Verdict: Return{},
		Purpose: who + "'s own traffic is not captured"})
}

func ownerGroupRules(cfg Config) []Rule {
	if cfg.OwnerGroupsAll {
		var rules []Rule
		for _, g := range cfg.OwnerGroupsExclude {
			rules = append(rules, Rule{Conds: []Cond{OwnerGID{GID: g}}, Verdict: Return{},
				Purpose: "owner group " + utoa(g) + " is excluded from capture"})
		}
		return rules
	}
	var conds []Cond
	for _, g := range cfg.OwnerGroupsInclude {
		conds = append(conds, OwnerGID{GID: g, Not: true})
	}
	return []Rule{{Conds: conds, Verdict: Return{}, Purpose: "only the listed owner groups are captured"}}
}

func includesLoopback(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().IsLoopback() {
			return true
		}
	}
	return false
}
