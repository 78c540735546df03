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
	ChainRawPrerouting    = "SHUNT_RAW_PREROUTING"
	ChainRawOutput        = "SHUNT_RAW_OUTPUT"
	ChainManglePrerouting = "SHUNT_MANGLE_PREROUTING"
	ChainMangleInbound    = "SHUNT_MANGLE_INBOUND"
	ChainDivert           = "SHUNT_DIVERT"
	ChainTProxy           = "SHUNT_TPROXY"
	ChainMangleOutput     = "SHUNT_MANGLE_OUTPUT"
	ChainPrerouting       = "SHUNT_PREROUTING"
	ChainOutput           = "SHUNT_OUTPUT"
	ChainInbound          = "SHUNT_INBOUND"
	ChainInRedirect       = "SHUNT_IN_REDIRECT"
	ChainRedirect         = "SHUNT_REDIRECT"
	ChainOutputDNS        = "SHUNT_OUTPUT_DNS"
)

// chainLayout is every chain a Plan can hold, in render order.
var chainLayout = []struct {
	name, purpose string
	table         Table
	hook          Hook
}{
	{ChainRawPrerouting, "track DNS answers apart from the proxy's", TableRaw, HookPrerouting},
	{ChainRawOutput, "track DNS queries apart from the proxy's", TableRaw, HookOutput},
	{ChainManglePrerouting, "", TableMangle, HookPrerouting}, // purpose depends on the mode
	{ChainMangleInbound, "inbound ports to hand to the proxy by TPROXY", TableMangle, ""},
	{ChainDivert, "deliver packets of connections the proxy holds to it", TableMangle, ""},
	{ChainTProxy, "hand to the proxy's inbound listener by TPROXY", TableMangle, ""},
	{ChainMangleOutput, "route replies on the proxy's connections back to it", TableMangle, HookOutput},
	{ChainPrerouting, "capture inbound connections", TableNAT, HookPrerouting},
	{ChainOutput, "capture outbound connections", TableNAT, HookOutput},
	{ChainInbound, "inbound ports to capture", TableNAT, ""},
	{ChainInRedirect, "hand to the proxy's inbound listener", TableNAT, ""},
	{ChainRedirect, "hand to the proxy's outbound listener", TableNAT, ""},
	{ChainOutputDNS, "hand DNS to the proxy's DNS listener", TableNAT, ""},
}

var (
	lo  = OutInterface{Name: "lo"}
	tcp = Proto{"tcp"}
	udp = Proto{"udp"}
)

// Per-family addresses: the proxy's inbound passthrough source and IPv6's
// loopback (IPv4's is configurable).
var (
	passthroughSrc = map[Family]netip.Prefix{
		IPv4: netip.MustParsePrefix("127.0.0.6/32"),
		IPv6: netip.MustParsePrefix("::6/128"),
	}
	loopback6 = netip.MustParsePrefix("::1/128")
)

// families lists the families a Config captures.
func (cfg *Config) families() []Family {
	if cfg.DualStack {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

func (cfg *Config) loopback(f Family) netip.Prefix {
	if f == IPv6 {
		return loopback6
	}
	return cfg.LoopbackCIDR
}

// captured reports whether a range's family is captured: IPv6 ranges are
// ignored without dual-stack, as istio-iptables ignores them.
func (cfg *Config) captured(p netip.Prefix) bool {
	return p.Addr().Is4() || cfg.DualStack
}

// Build turns a validated Config into a Plan. It is pure: it reads nothing
// and touches nothing, so a Plan can be printed, traced and compared freely.
func Build(cfg Config) (*Plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tproxy := cfg.InboundMode == ModeTProxy
	rules := map[string][]Rule{
		ChainRawPrerouting:    dnsAnswerZoneRules(cfg),
		ChainRawOutput:        dnsQueryZoneRules(cfg),
		ChainManglePrerouting: manglePreroutingRules(cfg),
		ChainPrerouting:       preroutingRules(cfg),
		ChainOutput:           outputRules(cfg),
		ChainInbound:          inboundRules(cfg),
		ChainInRedirect: {{Conds: []Cond{tcp}, Verdict: Redirect{cfg.InboundPort},
			Purpose: "redirect to the proxy's inbound port " + itoa(cfg.InboundPort)}},
		ChainRedirect: {{Conds: []Cond{tcp}, Verdict: Redirect{cfg.OutboundPort},
			Purpose: "redirect to the proxy's outbound port " + itoa(cfg.OutboundPort)}},
		ChainOutputDNS: dnsRedirectRules(cfg),
	}
	if tproxy {
		rules[ChainMangleInbound] = tproxyInboundRules(cfg)
		rules[ChainDivert] = divertRules(cfg)
		rules[ChainTProxy] = tproxyRules(cfg)
		rules[ChainMangleOutput] = mangleOutputRules(cfg)
	}
	plan := &Plan{Families: cfg.families()}
	for _, l := range chainLayout {
		c := &Chain{Name: l.name, Table: l.table, Hook: l.hook, Purpose: l.purpose, Rules: rules[l.name]}
		if l.name == ChainManglePrerouting {
			c.Purpose = "drop packets conntrack finds invalid"
			if tproxy {
				c.Purpose = "hand inbound connections to the proxy by TPROXY"
			}
		}
		if c.Hook != "" && len(c.Rules) > 0 && !cfg.DualStack {
			c.Rules = append([]Rule{{Conds: []Cond{FamilyIs{IPv6}}, Verdict: Accept{},
				Purpose: "IPv6 is not captured without dual-stack"}}, c.Rules...)
		}
		plan.Chains = append(plan.Chains, c)
	}
	plan = prune(plan)
	if tproxy && plan.Chain(ChainTProxy) != nil {
		for _, f := range plan.Families {
			plan.Routes = append(plan.Routes, Route{Family: f, Mark: cfg.TProxyMark, Table: cfg.TProxyRouteTable,
				Purpose: "packets marked " + strconv.FormatUint(uint64(cfg.TProxyMark), 10) + " are delivered locally, to the proxy"})
		}
	}
	if cfg.DualStack {
		plan.LoopbackAddrs = []netip.Prefix{passthroughSrc[IPv6]}
	}
	return plan, nil
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
	out := &Plan{Families: p.Families}
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
	return []Rule{{Conds: []Cond{ConnState{[]string{StateInvalid}}}, Verdict: Drop{},
		Purpose: "drop out-of-window packets instead of letting them reset connections"}}
}

// perFamily makes one rule per captured family from a rule that needs a
// family's address.
func perFamily(cfg Config, make func(f Family) Rule) []Rule {
	var rules []Rule
	for _, f := range cfg.families() {
		rules = append(rules, make(f))
	}
	return rules
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func utoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// VerdictString names a verdict the way a person reads it.
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
	case TProxy:
		return fmt.Sprintf("TPROXY → %d mark %d", v.Port, v.Mark)
	case SetMark:
		return fmt.Sprintf("MARK %d", v.Mark)
	case SaveMark:
		return "CONNMARK save"
	case RestoreMark:
		return "CONNMARK restore"
	case CTZone:
		return fmt.Sprintf("CT zone %d", v.Zone)
	}
	return fmt.Sprintf("unknown verdict %T", v)
}
