package capture

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Chain names. They are shunt's own, so shunt never touches a chain that
// istio-init, kube-proxy or a user made.
const (
	ChainPrefix           = "SHUNT_"
	ChainPrerouting       = "SHUNT_PREROUTING"
	ChainOutput           = "SHUNT_OUTPUT"
	ChainInbound          = "SHUNT_INBOUND"
	ChainInRedirect       = "SHUNT_IN_REDIRECT"
	ChainRedirect         = "SHUNT_REDIRECT"
	ChainManglePrerouting = "SHUNT_MANGLE_PREROUTING"
)

// chainLayout is every chain a Plan can hold, in render order.
var chainLayout = []struct {
	name, purpose string
	table         Table
	hook          Hook
}{
	{ChainManglePrerouting, "drop packets conntrack finds invalid", TableMangle, HookPrerouting},
	{ChainPrerouting, "capture inbound connections", TableNAT, HookPrerouting},
	{ChainOutput, "capture outbound connections", TableNAT, HookOutput},
	{ChainInbound, "inbound ports to capture", TableNAT, ""},
	{ChainInRedirect, "hand to the proxy's inbound listener", TableNAT, ""},
	{ChainRedirect, "hand to the proxy's outbound listener", TableNAT, ""},
}

var (
	lo             = OutInterface{Name: "lo"}
	tcp            = Proto{"tcp"}
	udp            = Proto{"udp"}
	passthroughSrc = netip.MustParsePrefix("127.0.0.6/32")
)

// Build turns a validated Config into a Plan. It is pure: it reads nothing
// and touches nothing, so a Plan can be printed, traced and compared freely.
func Build(cfg Config) (*Plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rules := map[string][]Rule{
		ChainManglePrerouting: dropInvalidRules(cfg),
		ChainPrerouting:       preroutingRules(cfg),
		ChainOutput:           outputRules(cfg),
		ChainInbound:          inboundRules(cfg),
		ChainInRedirect: {{Conds: []Cond{tcp}, Verdict: Redirect{cfg.InboundPort},
			Purpose: "redirect to the proxy's inbound port " + itoa(cfg.InboundPort)}},
		ChainRedirect: {{Conds: []Cond{tcp}, Verdict: Redirect{cfg.OutboundPort},
			Purpose: "redirect to the proxy's outbound port " + itoa(cfg.OutboundPort)}},
	}
	plan := &Plan{}
	for _, l := range chainLayout {
		plan.Chains = append(plan.Chains, &Chain{Name: l.name, Table: l.table, Hook: l.hook,
			Purpose: l.purpose, Rules: rules[l.name]})
	}
	return prune(plan), nil
}

// prune drops entry chains with no rules and chains nothing jumps to, so the
// kernel holds only what does something.
func prune(p *Plan) *Plan {
	reached := map[string]bool{}
	var visit func(c *Chain)
	visit = func(c *Chain) {
		if c == nil || reached[c.Name] {
			return
		}
		reached[c.Name] = true
		for _, r := range c.Rules {
			if j, ok := r.Verdict.(Jump); ok {
				visit(p.Chain(j.Chain))
			}
		}
	}
	for _, c := range p.Chains {
		if c.Hook != "" && len(c.Rules) > 0 {
			visit(c)
		}
	}
	out := &Plan{}
	for _, c := range p.Chains {
		if reached[c.Name] {
			out.Chains = append(out.Chains, c)
		}
	}
	return out
}

func dropInvalidRules(cfg Config) []Rule {
	if !cfg.DropInvalid {
		return nil
	}
	return []Rule{{Conds: []Cond{ConnState{StateInvalid}}, Verdict: Drop{},
		Purpose: "drop out-of-window packets instead of letting them reset connections"}}
}

// preroutingRules is the inbound entry: kube-virt interfaces first (their
// traffic is outbound traffic of a VM), excluded interfaces, then inbound.
func preroutingRules(cfg Config) []Rule {
	var rules []Rule
	for _, ifc := range cfg.KubeVirtInterfaces {
		in := InInterface{Name: ifc}
		if cfg.OutboundAll {
			rules = append(rules, Rule{Conds: []Cond{in}, Verdict: Jump{ChainRedirect},
				Purpose: "traffic from VM interface " + ifc + " is outbound traffic"})
		}
		for _, p := range cfg.OutboundCIDRs {
			rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}, in}, Verdict: Jump{ChainRedirect},
				Purpose: "traffic from VM interface " + ifc + " to a captured range is outbound traffic"})
		}
	}
	for _, ifc := range cfg.KubeVirtInterfaces {
		rules = append(rules, Rule{Conds: []Cond{InInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "other traffic from VM interface " + ifc + " is not captured"})
	}
	for _, ifc := range cfg.ExcludeInterfaces {
		rules = append(rules, Rule{Conds: []Cond{InInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "interface " + ifc + " is excluded from capture"})
	}
	if cfg.InboundAll || len(cfg.InboundPorts) > 0 {
		rules = append(rules, Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainInbound},
			Purpose: "inbound TCP is considered for capture"})
	}
	return rules
}

func inboundRules(cfg Config) []Rule {
	rules := []Rule{{Conds: []Cond{tcp, DestPorts{Ports: []PortRange{Port(cfg.TunnelPort)}}}, Verdict: Return{},
		Purpose: "the inbound tunnel port " + itoa(cfg.TunnelPort) + " is never captured"}}
	if !cfg.InboundAll {
		if len(cfg.InboundPorts) > 0 {
			rules = append(rules, Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.InboundPorts}},
				Verdict: Jump{ChainInRedirect}, Purpose: "inbound port is captured"})
		}
		return rules
	}
	if len(cfg.InboundExcludePorts) > 0 {
		rules = append(rules, Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.InboundExcludePorts}},
			Verdict: Return{}, Purpose: "inbound port is excluded from capture"})
	}
	return append(rules, Rule{Conds: []Cond{tcp}, Verdict: Jump{ChainInRedirect},
		Purpose: "every other inbound port is captured"})
}

// outputRules is the outbound entry, in istio-iptables' order: exclusions by
// interface and port, the proxy's own traffic, owner groups, loopback,
// excluded ranges, and last what to capture.
func outputRules(cfg Config) []Rule {
	var rules []Rule
	for _, ifc := range cfg.ExcludeInterfaces {
		rules = append(rules, Rule{Conds: []Cond{OutInterface{Name: ifc}}, Verdict: Accept{},
			Purpose: "interface " + ifc + " is excluded from capture"})
	}
	if len(cfg.OutboundExcludePorts) > 0 {
		for _, proto := range []Proto{tcp, udp} {
			rules = append(rules, Rule{Conds: []Cond{proto, DestPorts{Ports: cfg.OutboundExcludePorts}},
				Verdict: Return{}, Purpose: "outbound port is excluded from capture"})
		}
	}
	rules = append(rules, Rule{Conds: []Cond{Source{Prefix: passthroughSrc}, lo}, Verdict: Return{},
		Purpose: "the proxy's inbound passthrough to the app is not captured again"})
	for _, uid := range cfg.ProxyUIDs {
		rules = append(rules, proxyOwnerRules(cfg, OwnerUID{UID: uid}, OwnerUID{UID: uid, Not: true}, "UID", uid)...)
	}
	for _, gid := range cfg.ProxyGIDs {
		rules = append(rules, proxyOwnerRules(cfg, OwnerGID{GID: gid}, OwnerGID{GID: gid, Not: true}, "GID", gid)...)
	}
	rules = append(rules, ownerGroupRules(cfg)...)
	rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: cfg.LoopbackCIDR}}, Verdict: Return{},
		Purpose: "connections to loopback are not captured"})
	for _, p := range cfg.OutboundExcludeCIDRs {
		rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}}, Verdict: Return{},
			Purpose: "destination range is excluded from capture"})
	}
	if len(cfg.OutboundPorts) > 0 {
		rules = append(rules, Rule{Conds: []Cond{tcp, DestPorts{Ports: cfg.OutboundPorts}}, Verdict: Jump{ChainRedirect},
			Purpose: "outbound port is captured"})
	}
	if cfg.OutboundAll {
		rules = append(rules, Rule{Verdict: Jump{ChainRedirect}, Purpose: "every other outbound connection is captured"})
	}
	for _, p := range cfg.OutboundCIDRs {
		rules = append(rules, Rule{Conds: []Cond{Dest{Prefix: p}}, Verdict: Jump{ChainRedirect},
			Purpose: "destination range is captured"})
	}
	return rules
}

// proxyOwnerRules keeps the proxy's traffic out of capture, except its calls
// to the pod's own addresses over lo: those go to the inbound listener, so
// app -> proxy -> (service VIP resolves here) -> proxy inbound -> app works.
func proxyOwnerRules(cfg Config, is, isNot Cond, kind string, id uint32) []Rule {
	who := "proxy " + kind + " " + strconv.FormatUint(uint64(id), 10)
	rules := []Rule{{
		Conds:   []Cond{Dest{Prefix: cfg.LoopbackCIDR, Not: true}, lo, tcp, DestPorts{Ports: []PortRange{Port(cfg.TunnelPort)}, Not: true}, is},
		Verdict: Jump{ChainInRedirect},
		Purpose: who + " calling the pod's own address goes to the inbound listener",
	}}
	if !includesLoopback(cfg.OutboundCIDRs) {
		rules = append(rules, Rule{Conds: []Cond{lo, isNot}, Verdict: Return{},
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
				Purpose: "owner group " + strconv.FormatUint(uint64(g), 10) + " is excluded from capture"})
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

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// String names a verdict the way a person reads it.
func VerdictString(v Verdict) string {
	switch v := v.(type) {
	case Jump:
		return "jump " + v.Chain
	case Return:
		return "RETURN"
	case Accept:
		return "ACCEPT"
	case Drop:
		return "DROP"
	case Redirect:
		return fmt.Sprintf("REDIRECT → %d", v.Port)
	}
	return fmt.Sprintf("unknown verdict %T", v)
}
