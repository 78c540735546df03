package capture

import (
	"net/netip"
)

// Plan is a capture rule set in backend-neutral terms: named chains of rules,
// each rule a list of conditions, one verdict and a purpose. Backends render
// it; the tracer walks it. It holds no backend words: no "-m", no "meta".
type Plan struct {
	// Chains in the order they are rendered. Chain names are unique across
	// tables, so a backend with one namespace for chains can use them as is.
	Chains []*Chain
}

// Table is a netfilter table.
type Table string

// The tables a Plan may use.
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

// ConnState matches the conntrack state of the packet's connection.
type ConnState struct{ State string }

// Conntrack states a ConnState may name.
const (
	StateInvalid = "INVALID"
)

func (Proto) isCond()        {}
func (Source) isCond()       {}
func (Dest) isCond()         {}
func (InInterface) isCond()  {}
func (OutInterface) isCond() {}
func (DestPorts) isCond()    {}
func (OwnerUID) isCond()     {}
func (OwnerGID) isCond()     {}
func (ConnState) isCond()    {}

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

func (Jump) isVerdict()     {}
func (Return) isVerdict()   {}
func (Accept) isVerdict()   {}
func (Drop) isVerdict()     {}
func (Redirect) isVerdict() {}
