package nftables

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"github.com/shunt-dev/shunt/capture"
)

// Lists become named interval sets: a run of rules that differ only in one
// address range (1,000 excluded CIDRs, say) is one rule matching a set,
// and a port list of more than one range is a set too. A set lookup costs
// the same however many elements it holds, so neither the rule count nor a
// new connection's walk through them grows with the lists; and the lists
// are printed once, as objects of their own.

// Set is a named set of shunt's table.
type Set struct {
	Name     string
	Type     string // ipv4_addr, ipv6_addr or inet_service
	Comment  string
	Elements []string // as nft prints them: merged intervals, sorted
}

// groupable is the one address condition in which a rule may differ from
// its neighbours in a set: which condition it is and the rest of the rule
// (whatever the address's family: IPv4 and IPv6 rules never meet the same
// packet, so a run's two families can be two set rules).
type groupable struct {
	index int    // of the condition in the rule's Conds
	shape string // everything else about the rule, to compare neighbours
}

// groupKey says whether a rule can join a set of its neighbours: it has
// exactly one address condition, not negated.
func groupKey(r capture.Rule) (groupable, bool) {
	idx := -1
	for i, c := range r.Conds {
		switch c := c.(type) {
		case capture.Dest:
			if c.Not || idx >= 0 {
				return groupable{}, false
			}
			idx = i
		case capture.Source:
			if c.Not || idx >= 0 {
				return groupable{}, false
			}
			idx = i
		}
	}
	if idx < 0 {
		return groupable{}, false
	}
	rest := slices.Clone(r.Conds)
	field := "daddr"
	p := prefixOf(rest[idx])
	if _, ok := rest[idx].(capture.Source); ok {
		field = "saddr"
	}
	rest[idx] = nil
	_ = p
	return groupable{idx, fmt.Sprintf("%s|%d|%s|%#v|%s", field, idx, condsKey(rest), r.Verdict, r.Purpose)}, true
}

func condsKey(cs []capture.Cond) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%#v;", c)
	}
	return b.String()
}

func prefixOf(c capture.Cond) netip.Prefix {
	switch c := c.(type) {
	case capture.Dest:
		return c.Prefix
	case capture.Source:
		return c.Prefix
	}
	return netip.Prefix{}
}

// addrElements are prefixes as the elements of an interval set, as nft
// prints them: overlapping and touching ranges merged, sorted, each a bare
// address, a prefix, or a from-to range.
func addrElements(ps []netip.Prefix) []string {
	type span struct{ lo, hi *big.Int }
	bits := ps[0].Addr().BitLen()
	var spans []span
	for _, p := range ps {
		p = p.Masked()
		lo := new(big.Int).SetBytes(p.Addr().AsSlice())
		size := new(big.Int).Lsh(big.NewInt(1), uint(bits-p.Bits()))
		spans = append(spans, span{lo, new(big.Int).Sub(new(big.Int).Add(lo, size), big.NewInt(1))})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Cmp(b.lo) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.lo.Cmp(new(big.Int).Add(merged[n-1].hi, big.NewInt(1))) <= 0 {
			if s.hi.Cmp(merged[n-1].hi) > 0 {
				merged[n-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	out := make([]string, len(merged))
	for i, s := range merged {
		out[i] = spanString(s.lo, s.hi, bits)
	}
	return out
}

// spanString prints an interval the way nft does.
func spanString(lo, hi *big.Int, bits int) string {
	addr := func(n *big.Int) netip.Addr {
		b := make([]byte, bits/8)
		n.FillBytes(b)
		a, _ := netip.AddrFromSlice(b)
		return a
	}
	if lo.Cmp(hi) == 0 {
		return addr(lo).String()
	}
	size := new(big.Int).Add(new(big.Int).Sub(hi, lo), big.NewInt(1))
	if size.BitLen() > 0 && new(big.Int).And(size, new(big.Int).Sub(size, big.NewInt(1))).Sign() == 0 {
		k := size.BitLen() - 1 // size is 2^k
		if new(big.Int).Mod(lo, size).Sign() == 0 {
			return netip.PrefixFrom(addr(lo), bits-k).String()
		}
	}
	return addr(lo).String() + "-" + addr(hi).String()
}

// portElements are port ranges as the elements of an interval set.
func portElements(list []capture.PortRange) []string {
	merged := mergePorts(list)
	out := make([]string, len(merged))
	for i, p := range merged {
		out[i] = strings.Replace(p.String(), ":", "-", 1)
	}
	return out
}

// mergePorts sorts ranges and joins overlapping and adjacent ones, as an
// interval set holds them.
func mergePorts(list []capture.PortRange) []capture.PortRange {
	sorted := slices.Clone(list)
	slices.SortFunc(sorted, func(a, b capture.PortRange) int { return cmp.Compare(a.Lo, b.Lo) })
	var merged []capture.PortRange
	for _, p := range sorted {
		if n := len(merged); n > 0 && int(p.Lo) <= int(merged[n-1].Hi)+1 {
			merged[n-1].Hi = max(merged[n-1].Hi, p.Hi)
			continue
		}
		merged = append(merged, p)
	}
	return merged
}

// String is the set as nft lists it, its elements on one line (nft wraps
// long lists; Parse joins them back).
func (s *Set) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", s.Name, s.Type)
	if s.Comment != "" {
		fmt.Fprintf(&b, "\t\tcomment \"%s\"\n", s.Comment)
	}
	fmt.Fprintf(&b, "\t\telements = { %s }\n\t}\n", strings.Join(s.Elements, ", "))
	return b.String()
}
