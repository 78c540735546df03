package capture

import (
	"fmt"
	"net/netip"
)

// Plan is a capture rule set in backend-neutral terms: named chains of rules,
// each rule a list of conditions, one verdict and a purpose. Backends render
// it; the tracer walks it. It holds no backend words: no "-m", no "meta".
type Plan struct {
	// Chains in the order they are rendered. Chain names are unique across
	// tables, so a backend with one namespace for chains can use them as is.
	Chains []*Chain
	// Families are the address families captured: IPv4, and IPv6 too with
	// dual-stack. A backend with one rule set per family (iptables and
	// ip6tables) renders one per family listed; a rule whose addresses are of
	// one family exists only in that family's set.
	Families []Family
	// Routes is the policy routing the rules rely on (TPROXY's marked
	// packets delivered locally); LoopbackAddrs are addresses the proxy
	// binds on lo (IPv6's ::6 passthrough source, which lo lacks).
	Routes        []Route
	LoopbackAddrs []netip.Prefix
}

// Family is an address family.
type Family string

// The families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// FamilyOf is the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// Route sends packets carrying Mark to routing table Table, where every
// destination is local: how TPROXY'd packets reach the proxy's socket.
type Route struct {
	Family Family
	Mark   uint32
	Table  uint32
	// Purpose says why the route exists.
	Purpose string
}

// HasFamily reports whether the plan captures family f.
func (p *Plan) HasFamily(f Family) bool {
	for _, g := range p.Families {
		if g == f {
			return true
		}
	}
	return false
}

// Table is a netfilter table.
type Table string

// The tables a Plan may use, in the order the kernel consults them.
const (
	TableRaw    Table = "raw"
	TableMangle Table = "mangle"
	TableNAT    Table = "nat"
)

// Hook is a netfilter hook, named as the built-in iptables chain on it.
type Hook string

// The hooks a Plan may attach to.
const (
	HookPrerouting Hook = "PREROUTING"
	HookOutput     Hook = "OUTPUT"
)

// Chain is a named list of rules in one table. A chain with a Hook is entered
// from that hook by one unconditional jump; others are reached only by Jump
// verdicts.
type Chain struct {
	Name  string
	Table Table
	Hook  Hook
	// Purpose says why the chain exists; it is the comment on the jump into it.
	Purpose string
	Rules   []Rule
}

// Rule matches when every condition holds, and then applies its verdict.
type Rule struct {
	Conds   []Cond
	Verdict Verdict
	// Purpose is one line saying why the rule exists; it reaches the kernel.
	Purpose string
}

// Chain returns the chain with that name, or nil.
func (p *Plan) Chain(name string) *Chain {
	for _, c := range p.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Entry returns the chain attached to a table's hook, or nil.
func (p *Plan) Entry(t Table, h Hook) *Chain {
	for _, c := range p.Chains {
		if c.Table == t && c.Hook == h {
			return c
		}
	}
	return nil
}

// Tables lists the tables the plan uses, in a fixed order.
func (p *Plan) Tables() []Table {
	var out []Table
	for _, t := range []Table{TableRaw, TableMangle, TableNAT} {
		for _, c := range p.Chains {
			if c.Table == t {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

// Cond is one condition of a rule. The set of kinds is closed: every backend
// and the tracer handle each kind below and reject any other.
type Cond interface{ isCond() }

// Proto matches the transport protocol: "tcp" or "udp".
type Proto struct{ Name string }

// Source matches the source address against a prefix.
type Source struct {
	Prefix netip.Prefix
	Not    bool
}

// Dest matches the destination address against a prefix.
type Dest struct {
	Prefix netip.Prefix
	Not    bool
}

// InInterface matches the interface a packet arrived on. A trailing "+"
// matches every name with that prefix, as in iptables.
type InInterface struct {
	Name string
	Not  bool
}

// OutInterface matches the interface a packet leaves by ("+" as above).
type OutInterface struct {
	Name string
	Not  bool
}

// DestPorts matches the destination port against ranges. It needs a Proto
// condition in the same rule.
type DestPorts struct {
	Ports []PortRange
	Not   bool
}

// OwnerUID matches the UID that owns the sending socket (locally generated
// packets only).
type OwnerUID struct {
	UID uint32
	Not bool
}

// OwnerGID matches the GID that owns the sending socket.
type OwnerGID struct {
	GID uint32
	Not bool
}

// SourcePorts matches the source port against ranges. It needs a Proto
// condition in the same rule.
type SourcePorts struct {
	Ports []PortRange
	Not   bool
}

// Mark matches the packet's mark (all 32 bits).
type Mark struct {
	Value uint32
	Not   bool
}

// ConnMark matches the mark conntrack keeps for the packet's connection.
type ConnMark struct{ Value uint32 }

// ConnState matches when the conntrack state of the packet's connection is
// one of States.
type ConnState struct{ States []string }

// Conntrack states a ConnState may name, in the order iptables prints them.
const (
	StateInvalid     = "INVALID"
	StateRelated     = "RELATED"
	StateEstablished = "ESTABLISHED"
)

// FamilyIs matches packets of one address family. Address conditions imply
// their own family; this is for rules that have none.
type FamilyIs struct{ Family Family }

func (Proto) isCond()        {}
func (Source) isCond()       {}
func (Dest) isCond()         {}
func (InInterface) isCond()  {}
func (OutInterface) isCond() {}
func (DestPorts) isCond()    {}
func (OwnerUID) isCond()     {}
func (OwnerGID) isCond()     {}
func (ConnState) isCond()    {}
func (SourcePorts) isCond()  {}
func (Mark) isCond()         {}
func (ConnMark) isCond()     {}
func (FamilyIs) isCond()     {}

// Verdict is what a matching rule does. Like Cond, the set is closed.
type Verdict interface{ isVerdict() }

// Jump continues in another chain, and comes back on Return or at its end.
type Jump struct{ Chain string }

// Return leaves the current chain; in an entry chain, it ends the table's
// processing for the hook without a decision, as the end of a chain does.
type Return struct{}

// Accept ends the table's processing for this hook: nothing later in the
// table applies to the packet.
type Accept struct{}

// Drop discards the packet.
type Drop struct{}

// Redirect rewrites the destination to a local port: the capture itself.
type Redirect struct{ Port uint16 }

// TProxy hands a new inbound connection to the local socket listening on
// Port without rewriting its destination, and marks the packet with Mark so
// that policy routing delivers it locally (mangle PREROUTING only).
type TProxy struct {
	Port uint16
	Mark uint32
}

// The verdicts below change the packet or its connection and go on to the
// next rule; they decide nothing.

// SetMark sets the packet's mark.
type SetMark struct{ Mark uint32 }

// SaveMark copies the packet's mark to its connection.
type SaveMark struct{}

// RestoreMark copies the connection's mark to the packet.
type RestoreMark struct{}

// CTZone puts the connection in a conntrack zone, so that two flows with
// the same addresses and ports are tracked apart (raw table only).
type CTZone struct{ Zone uint16 }

func (TProxy) isVerdict()      {}
func (SetMark) isVerdict()     {}
func (SaveMark) isVerdict()    {}
func (RestoreMark) isVerdict() {}
func (CTZone) isVerdict()      {}
func (Jump) isVerdict()        {}
func (Return) isVerdict()      {}
func (Accept) isVerdict()      {}
func (Drop) isVerdict()        {}
func (Redirect) isVerdict()    {}

// RuleFamily is the one family a rule can match, from its address and
// family conditions, or "" when it matches both. A rule that names both
// families can match nothing, and is an error.
func RuleFamily(r Rule) (Family, error) {
	var fam Family
	see := func(f Family) error {
		if fam != "" && fam != f {
			return fmt.Errorf("rule %q mixes IPv4 and IPv6 conditions", r.Purpose)
		}
		fam = f
		return nil
	}
	for _, c := range r.Conds {
		var err error
		switch c := c.(type) {
		case Source:
			err = see(FamilyOf(c.Prefix.Addr()))
		case Dest:
			err = see(FamilyOf(c.Prefix.Addr()))
		case FamilyIs:
			err = see(c.Family)
		}
		if err != nil {
			return "", err
		}
	}
	return fam, nil
}
