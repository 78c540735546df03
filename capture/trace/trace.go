// Package trace walks a packet through a capture.Plan the way the kernel
// walks it through the rules a backend renders: hook by hook, table by table,
// rule by rule. It says where the packet goes and which rules sent it there.
package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/shunt-dev/shunt/capture"
)

// Direction is which way a packet travels relative to the pod.
type Direction string

// Directions.
const (
	// Out is a packet a process in the pod sends: the OUTPUT hooks.
	Out Direction = "out"
	// In is a packet arriving at the pod: the PREROUTING hooks.
	In Direction = "in"
)

// Packet is the first packet of a connection, or any packet when State is
// set. Owner fields only mean something for Out, InIface only for In.
type Packet struct {
	Direction Direction
	Proto     string // "tcp" or "udp"
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	UID, GID  uint32
	InIface   string
	OutIface  string
	// State is the conntrack state: "" for a new connection, or a state
	// such as capture.StateInvalid. Only new connections meet nat rules.
	State string
	// Mark is the packet's mark as it enters (a socket's SO_MARK, say), and
	// ConnMark its connection's.
	Mark, ConnMark uint32
}

// Family is the packet's address family.
func (p Packet) Family() capture.Family { return capture.FamilyOf(p.Dst) }

func (p Packet) String() string {
	s := fmt.Sprintf("%s %s %s -> %s", p.Direction, p.Proto, p.Src, netip.AddrPortFrom(p.Dst, p.DstPort))
	if p.Direction == Out {
		s += fmt.Sprintf(" uid %d gid %d out %s", p.UID, p.GID, p.OutIface)
	} else {
		s += " in " + p.InIface
	}
	if p.State != "" {
		s += " state " + p.State
	}
	if p.Mark != 0 {
		s += fmt.Sprintf(" mark %d", p.Mark)
	}
	return s
}

// Step is one rule the packet met.
type Step struct {
	Table   capture.Table
	Chain   string
	Index   int // 1-based position in the chain
	Rule    capture.Rule
	Matched bool
}

// Outcome is where a packet ends up.
type Outcome string

// Outcomes.
const (
	Redirected Outcome = "redirected"
	Passed     Outcome = "passed"
	Dropped    Outcome = "dropped"
)

// Result is a packet's whole path.
type Result struct {
	Packet  Packet
	Steps   []Step // every rule evaluated, matched or not, in order
	Outcome Outcome
	Port    uint16 // the local port it was redirected to
	// TProxy says the redirect kept the destination (TPROXY), rather than
	// rewriting it (REDIRECT).
	TProxy bool
	// Mark is the packet's mark at the end, and Zone the conntrack zone
	// its connection was put in (0: the default).
	Mark uint32
	Zone uint16
	// Reason is the purpose of the rule that decided, or why none did.
	Reason string
}

// Verdict is the outcome in one line: "REDIRECT → 15001" or "not captured".
func (r Result) Verdict() string {
	switch {
	case r.Outcome == Redirected && r.TProxy:
		return fmt.Sprintf("TPROXY → %d", r.Port)
	}
	switch r.Outcome {
	case Redirected:
		return fmt.Sprintf("REDIRECT → %d", r.Port)
	case Dropped:
		return "DROP"
	}
	return "not captured"
}

// Matched returns the steps whose rule matched: the path itself.
func (r Result) Matched() []Step {
	var out []Step
	for _, s := range r.Steps {
		if s.Matched {
			out = append(out, s)
		}
	}
	return out
}

// hooks is the order the kernel consults tables in, per direction.
var hooks = map[Direction][]struct {
	table capture.Table
	hook  capture.Hook
}{
	Out: {{capture.TableRaw, capture.HookOutput}, {capture.TableMangle, capture.HookOutput}, {capture.TableNAT, capture.HookOutput}},
	In:  {{capture.TableRaw, capture.HookPrerouting}, {capture.TableMangle, capture.HookPrerouting}, {capture.TableNAT, capture.HookPrerouting}},
}

// maxDepth bounds jumps, as the kernel refuses loops.
const maxDepth = 16

// ErrUnknown is wrapped when the plan holds a condition or verdict the
// tracer does not model; it never guesses.
var ErrUnknown = errors.New("trace: not modelled")

// Trace walks p through the plan.
func Trace(plan *capture.Plan, p Packet) (res Result, err error) {
	res = Result{Packet: p, Outcome: Passed, Reason: "no rule captured it"}
	if p.Direction != Out && p.Direction != In {
		return res, fmt.Errorf("trace: direction %q is not out or in", p.Direction)
	}
	w := walker{plan: plan, pkt: p, res: &res, mark: p.Mark, connMark: p.ConnMark}
	// Conntrack consults nat for a connection's first packet only.
	done, err := w.hooks(p.State == "")
	if err != nil || done {
		return res, err
	}
	if p.Direction == Out && p.OutIface == "lo" && res.Outcome == Passed {
		// Sent over lo and not redirected, the packet comes back in on lo:
		// raw and mangle PREROUTING see it again, with the mark it was
		// given on the way out (TPROXY mode's 1338 makes the proxy's calls
		// to the pod's own address reach the inbound listener this way).
		// Nat does not: the destination was settled on the way out.
		w.pkt.Direction, w.pkt.InIface, w.pkt.OutIface, w.pkt.UID, w.pkt.GID = In, "lo", "", 0, 0
		_, err = w.hooks(false)
	}
	return res, err
}

// hooks walks the packet through each table's entry chain on its
// direction's hook, nat included when nat is set, and reports whether its
// fate was set (dropped or redirected) on the way.
func (w *walker) hooks(nat bool) (bool, error) {
	for _, h := range hooks[w.pkt.Direction] {
		entry := w.plan.Entry(h.table, h.hook)
		if entry == nil || h.table == capture.TableNAT && !nat {
			continue
		}
		end, err := w.chain(entry, 0)
		if err != nil {
			return false, err
		}
		w.res.Mark, w.res.Zone = w.mark, w.zone
		if end == ended {
			return true, nil
		}
	}
	return false, nil
}

type flow int

const (
	fellThrough flow = iota // end of chain or RETURN: go on after the jump
	accepted                // ACCEPT: done with this table
	ended                   // DROP or REDIRECT: the packet's fate is set
)

type walker struct {
	plan           *capture.Plan
	pkt            Packet
	res            *Result
	mark, connMark uint32
	zone           uint16
}

func (w *walker) chain(c *capture.Chain, depth int) (flow, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("trace: jumps nest deeper than %d at %s", maxDepth, c.Name)
	}
	for i, r := range c.Rules {
		ok, err := w.matches(r)
		if err != nil {
			return 0, fmt.Errorf("%s rule %d: %w", c.Name, i+1, err)
		}
		w.res.Steps = append(w.res.Steps, Step{Table: c.Table, Chain: c.Name, Index: i + 1, Rule: r, Matched: ok})
		if !ok {
			continue
		}
		switch v := r.Verdict.(type) {
		case capture.Jump:
			next := w.plan.Chain(v.Chain)
			if next == nil || next.Table != c.Table {
				return 0, fmt.Errorf("trace: %s rule %d jumps to %q, not a chain of table %s", c.Name, i+1, v.Chain, c.Table)
			}
			f, err := w.chain(next, depth+1)
			if err != nil || f != fellThrough {
				return f, err
			}
		case capture.Return:
			w.res.Reason = r.Purpose
			return fellThrough, nil
		case capture.Accept:
			w.res.Reason = r.Purpose
			return accepted, nil
		case capture.Drop:
			w.res.Outcome, w.res.Reason = Dropped, r.Purpose
			return ended, nil
		case capture.Redirect:
			if c.Table != capture.TableNAT {
				return 0, fmt.Errorf("trace: REDIRECT in table %s", c.Table)
			}
			w.res.Outcome, w.res.Port, w.res.Reason = Redirected, v.Port, r.Purpose
			return ended, nil
		case capture.TProxy:
			if c.Table != capture.TableMangle || w.pkt.Direction != In {
				return 0, fmt.Errorf("trace: TPROXY outside mangle PREROUTING")
			}
			// The socket is assigned and the packet accepted; later tables
			// at the hook still see it.
			w.res.Outcome, w.res.Port, w.res.TProxy, w.res.Reason = Redirected, v.Port, true, r.Purpose
			w.mark = v.Mark
			return accepted, nil
		case capture.SetMark:
			w.mark = v.Mark
		case capture.SaveMark:
			w.connMark = w.mark
		case capture.RestoreMark:
			w.mark = w.connMark
		case capture.CTZone:
			if c.Table != capture.TableRaw {
				return 0, fmt.Errorf("trace: CT zone outside the raw table")
			}
			if w.zone == 0 { // the first zone set sticks, in the kernel too
				w.zone = v.Zone
			}
		default:
			return 0, fmt.Errorf("%w: verdict %T", ErrUnknown, v)
		}
	}
	return fellThrough, nil
}

// matches evaluates every condition, even after one fails, so that a kind
// the tracer does not model is reported wherever it stands in the rule.
func (w *walker) matches(r capture.Rule) (bool, error) {
	p := w.pkt
	all := true
	for _, cond := range r.Conds {
		var ok bool
		switch m := cond.(type) {
		case capture.Proto:
			ok = p.Proto == m.Name
		case capture.Source:
			ok = sameFamily(m.Prefix, p) && m.Prefix.Contains(p.Src) != m.Not
		case capture.Dest:
			ok = sameFamily(m.Prefix, p) && m.Prefix.Contains(p.Dst) != m.Not
		case capture.FamilyIs:
			ok = p.Family() == m.Family
		case capture.SourcePorts:
			ok = (p.Proto == "tcp" || p.Proto == "udp") && capture.PortsContain(m.Ports, p.SrcPort) != m.Not
		case capture.Mark:
			ok = (w.mark == m.Value) != m.Not
		case capture.ConnMark:
			ok = w.connMark == m.Value
		case capture.InInterface:
			if p.Direction != In {
				return false, fmt.Errorf("trace: an in-interface match on the output path")
			}
			ok = ifaceMatch(m.Name, p.InIface) != m.Not
		case capture.OutInterface:
			if p.Direction != Out {
				return false, fmt.Errorf("trace: an out-interface match on the prerouting path")
			}
			ok = ifaceMatch(m.Name, p.OutIface) != m.Not
		case capture.DestPorts:
			ok = (p.Proto == "tcp" || p.Proto == "udp") && capture.PortsContain(m.Ports, p.DstPort) != m.Not
		case capture.OwnerUID:
			if p.Direction != Out {
				return false, fmt.Errorf("trace: an owner match on the prerouting path")
			}
			ok = (p.UID == m.UID) != m.Not
		case capture.OwnerGID:
			if p.Direction != Out {
				return false, fmt.Errorf("trace: an owner match on the prerouting path")
			}
			ok = (p.GID == m.GID) != m.Not
		case capture.ConnState:
			ok = slices.Contains(m.States, p.State)
		default:
			return false, fmt.Errorf("%w: condition %T", ErrUnknown, cond)
		}
		all = all && ok
	}
	return all, nil
}

// sameFamily reports whether an address match can apply to the packet at
// all: a rule with an IPv4 address is in iptables, not ip6tables, and in nft
// implies "meta nfproto ipv4", so it never matches an IPv6 packet, negated
// or not.
func sameFamily(p netip.Prefix, pkt Packet) bool {
	return capture.FamilyOf(p.Addr()) == pkt.Family()
}

// ifaceMatch is iptables' interface match: exact, or a prefix before '+'.
func ifaceMatch(pattern, name string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "+"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return pattern == name
}
