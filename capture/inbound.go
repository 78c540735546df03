package capture

// preroutingRules is the nat inbound entry: kube-virt interfaces first
// (their traffic is outbound traffic of a VM), excluded interfaces, then
// inbound, which in TPROXY mode the mangle table takes instead.
func preroutingRules(cfg Config) []Rule {
	var rules []Rule
	for _, ifc := range cfg.KubeVirtInterfaces {
		in := InInterface{Name: ifc}
		if cfg.OutboundAll {
			rules = append(rules, Rule{Conds: []Cond{in}, Verdict: Jump{ChainRedirect},
				Purpose: "traffic from VM interface " + ifc + " is outbound traffic"})
		}
		for _, p := range cfg.OutboundCIDRs {
			if cfg.captured(p) {
				rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}, in}, Verdict: Jump{ChainRedirect},
					Purpose: "traffic from VM interface " + ifc + " to a captured range is outbound traffic"})
			}
		}
	}
	rules = append(rules, inboundExclusions(cfg)...)
	if cfg.InboundMode == ModeRedirect && capturesInbound(cfg) {
		rules = append(rules, Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainInbound},
			Purpose: "inbound TCP is considered for capture"})
	}
	return rules
}

// inboundExclusions accepts, on the inbound path, traffic from kube-virt
// interfaces and from excluded interfaces.
func inboundExclusions(cfg Config) []Rule {
	var rules []Rule
	for _, ifc := range cfg.KubeVirtInterfaces {
		rules = append(rules, Rule{Conds: []Cond{InInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "other traffic from VM interface " + ifc + " is not captured"})
	}
	for _, ifc := range cfg.ExcludeInterfaces {
		rules = append(rules, Rule{Conds: []Cond{InInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "interface " + ifc + " is excluded from capture"})
	}
	return rules
}

// outboundExclusions accepts, on the outbound path, traffic leaving by an
// excluded interface.
func outboundExclusions(cfg Config) []Rule {
	var rules []Rule
	for _, ifc := range cfg.ExcludeInterfaces {
		rules = append(rules, Rule{Conds: []Cond{OutInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "interface " + ifc + " is excluded from capture"})
	}
	return rules
}

func capturesInbound(cfg Config) bool { return cfg.InboundAll || len(cfg.InboundPorts) > 0 }

// inboundRules picks the inbound ports to capture, in REDIRECT mode.
func inboundRules(cfg Config) []Rule {
	rules := []Rule{tunnelPortRule(cfg)}
	if !cfg.InboundAll {
		if len(cfg.InboundPorts) > 0 {
			rules = append(rules, Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.InboundPorts}},
				Verdict: Jump{ChainInRedirect}, Purpose: "inbound port is captured"})
		}
		return rules
	}
	if len(cfg.InboundExcludePorts) > 0 {
		rules = append(rules, inboundExcludeRule(cfg))
	}
	return append(rules, Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainInRedirect},
		Purpose: "every other inbound port is captured"})
}

func tunnelPortRule(cfg Config) Rule {
	return Rule{Conds: []Cond{tcp, DestPorts{Ports: []PortRange{Port(cfg.TunnelPort)}}}, Verdict: Return{},
		Purpose: "the inbound tunnel port " + itoa(cfg.TunnelPort) + " is never captured"}
}

func inboundExcludeRule(cfg Config) Rule {
	return Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.InboundExcludePorts}},
		Verdict: Return{}, Purpose: "inbound port is excluded from capture"}
}

// manglePreroutingRules drops invalid packets and, in TPROXY mode, hands
// inbound connections to the proxy and remembers the mark of the proxy's
// connections to the app, so that the app's replies route back to it.
func manglePreroutingRules(cfg Config) []Rule {
	if cfg.InboundMode != ModeTProxy {
		return dropInvalidRules(cfg)
	}
	// Unlike istio-iptables, kube-virt interfaces are exempt here too: a
	// VM's traffic is outbound traffic, which TPROXY must not take inbound.
	rules := append(inboundExclusions(cfg), dropInvalidRules(cfg)...)
	if capturesInbound(cfg) {
		rules = append(rules, Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainMangleInbound},
			Purpose: "inbound TCP is considered for capture"})
	}
	return append(rules, Rule{Conds: []Cond{tcp, Mark{Value: cfg.TProxyMark}}, Verdict: SaveMark{},
		Purpose: "remember the mark on the proxy's connections to the app"})
}

// tproxyInboundRules picks the inbound connections TPROXY takes. Unlike
// istio-iptables, the tunnel port is exempt here as in REDIRECT mode.
func tproxyInboundRules(cfg Config) []Rule {
	rules := []Rule{{Conds: []Cond{tcp, Mark{Value: cfg.TProxyMark}}, Verdict: Return{},
		Purpose: "packets the proxy marked are not diverted again"}}
	rules = append(rules, perFamily(cfg, func(f Family) Rule {
		return Rule{Conds: []Cond{Source{Prefix: passthroughSrc[f]}, InInterface{Name: "lo"}, tcp}, Verdict: Return{},
			Purpose: "the proxy's inbound passthrough to the app is not captured again"}
	})...)
	rules = append(rules,
		Rule{Conds: []Cond{InInterface{Name: "lo"}, tcp, Mark{Value: OutboundMark, Not: true}}, Verdict: Return{},
			Purpose: "app traffic over lo is not captured (only the proxy's, marked " + utoa(OutboundMark) + ")"},
		tunnelPortRule(cfg))
	established := ConnState{[]string{StateRelated, StateEstablished}}
	if !cfg.InboundAll {
		ports := DestPorts{Ports: cfg.InboundPorts}
		return append(rules,
			Rule{Conds: []Cond{tcp, ports, established}, Verdict: Jump{ChainDivert},
				Purpose: "packets of captured connections go to the proxy's socket"},
			Rule{Conds: []Cond{tcp, ports}, Verdict: Jump{ChainTProxy}, Purpose: "inbound port is captured"})
	}
	if len(cfg.InboundExcludePorts) > 0 {
		rules = append(rules, inboundExcludeRule(cfg))
	}
	return append(rules,
		Rule{Conds: []Cond{tcp, established}, Verdict: Jump{ChainDivert},
			Purpose: "packets of captured connections go to the proxy's socket"},
		Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainTProxy}, Purpose: "every other inbound port is captured"})
}

func divertRules(cfg Config) []Rule {
	return []Rule{
		{Verdict: SetMark{cfg.TProxyMark}, Purpose: "mark for local delivery by the TPROXY route"},
		{Verdict: Accept{}, Purpose: "delivered locally"},
	}
}

func tproxyRules(cfg Config) []Rule {
	return perFamily(cfg, func(f Family) Rule {
		return Rule{Conds: []Cond{Dest{Prefix: cfg.loopback(f), Not: true}, tcp},
			Verdict: TProxy{Port: cfg.InboundPort, Mark: cfg.TProxyMark},
			Purpose: "hand to the proxy's inbound port " + itoa(cfg.InboundPort) + " keeping the client's address"}
	})
}

// mangleOutputRules marks the proxy's calls to the pod's own address over
// lo (so inbound capture takes them) and gives the app's replies on the
// proxy's connections the mark that routes them back to the proxy.
func mangleOutputRules(cfg Config) []Rule {
	rules := append(outboundExclusions(cfg), Rule{Conds: []Cond{lo, tcp, Mark{Value: cfg.TProxyMark}}, Verdict: Return{},
		Purpose: "packets the proxy marked keep their mark"})
	for _, owner := range proxyOwners(cfg) {
		rules = append(rules, perFamily(cfg, func(f Family) Rule {
			return Rule{Conds: []Cond{Dest{Prefix: cfg.loopback(f), Not: true}, lo, tcp, owner},
				Verdict: SetMark{OutboundMark}, Purpose: "the proxy calling the pod's own address is captured inbound"}
		})...)
	}
	return append(rules, Rule{Conds: []Cond{tcp, ConnMark{cfg.TProxyMark}}, Verdict: RestoreMark{},
		Purpose: "replies on the proxy's connections to the app route back to the proxy"})
}
