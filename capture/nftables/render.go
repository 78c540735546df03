// Package nftables renders a capture.Plan as one nftables table of shunt's
// own, "inet shunt", and applies it as a single transaction through
// sigs.k8s.io/knftables. The rendering is exactly what `nft list table`
// prints, so a live table compares line for line with the plan.
package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
)

// The table shunt owns; nothing outside it is ever touched.
const (
	Family       = "inet"
	TableName    = "shunt"
	TableComment = "shunt: capture into the sidecar proxy"
)

// Table is shunt's table as nft lists it.
type Table struct {
	Comment string
	Chains  []*Chain
}

// Chain is one chain: a base chain has a Header ("type nat hook output
// priority -100; policy accept;").
type Chain struct {
	Name    string
	Comment string
	Header  string
	Rules   []string
}

// baseChain is the nft type, hook and priority of each table's hook, at
// the priorities of the iptables tables, so shunt's rules run where
// istio-iptables' would.
func baseChain(t capture.Table, h capture.Hook) (typ, hook, prio string) {
	hook = strings.ToLower(string(h))
	switch t {
	case capture.TableRaw:
		return "filter", hook, "raw"
	case capture.TableMangle:
		if h == capture.HookOutput {
			return "route", hook, "mangle" // a mark set here re-routes the packet
		}
		return "filter", hook, "mangle"
	}
	if h == capture.HookOutput {
		return "nat", hook, "-100" // nft names no dstnat priority on output
	}
	return "nat", hook, "dstnat"
}

// Render turns a Plan into shunt's table. It fails on a condition or
// verdict it does not know.
func Render(p *capture.Plan) (*Table, error) {
	t := &Table{Comment: TableComment}
	for _, c := range p.Chains {
		ch := &Chain{Name: c.Name, Comment: iptables.CommentPrefix + c.Purpose}
		if c.Hook != "" {
			typ, hook, prio := baseChain(c.Table, c.Hook)
			ch.Header = fmt.Sprintf("type %s hook %s priority %s; policy accept;", typ, hook, prio)
		}
		for i, r := range c.Rules {
			line, err := RenderRule(r)
			if err != nil {
				return nil, fmt.Errorf("chain %s rule %d (%s): %w", c.Name, i+1, r.Purpose, err)
			}
			ch.Rules = append(ch.Rules, line)
		}
		t.Chains = append(t.Chains, ch)
	}
	return t, nil
}

// RenderRule renders one rule as nft prints it: conditions in the rule's
// order, a protocol only where no port match implies it, the verdict, and
// the purpose as a comment.
func RenderRule(r capture.Rule) (string, error) {
	fam, err := capture.RuleFamily(r)
	if err != nil {
		return "", err
	}
	var proto string
	hasPorts := false
	for _, c := range r.Conds {
		switch c := c.(type) {
		case capture.Proto:
			proto = c.Name
		case capture.DestPorts, capture.SourcePorts:
			hasPorts = true
		}
	}
	if hasPorts && proto == "" {
		return "", fmt.Errorf("ports without a protocol")
	}
	var parts []string
	for _, c := range r.Conds {
		s, err := renderCond(c, proto, hasPorts)
		if err != nil {
			return "", err
		}
		if s != "" {
			parts = append(parts, s)
		}
	}
	v, err := renderVerdict(r.Verdict, fam)
	if err != nil {
		return "", err
	}
	comment := iptables.CommentPrefix + r.Purpose
	if strings.ContainsRune(comment, '"') || len(comment) > 128 {
		return "", fmt.Errorf("purpose %q cannot be an nft comment (no quotes, at most 128 bytes)", r.Purpose)
	}
	parts = append(parts, v, `comment "`+comment+`"`)
	return strings.Join(parts, " "), nil
}

func neq(not bool) string {
	if not {
		return "!= "
	}
	return ""
}

func renderCond(c capture.Cond, proto string, hasPorts bool) (string, error) {
	switch c := c.(type) {
	case capture.Proto:
		if hasPorts {
			return "", nil // "tcp dport" implies it, and nft prints it so
		}
		return "meta l4proto " + c.Name, nil
	case capture.Source:
		return addr(c.Prefix, "saddr") + neq(c.Not) + prefix(c.Prefix), nil
	case capture.Dest:
		return addr(c.Prefix, "daddr") + neq(c.Not) + prefix(c.Prefix), nil
	case capture.InInterface:
		return "iifname " + neq(c.Not) + iface(c.Name), nil
	case capture.OutInterface:
		return "oifname " + neq(c.Not) + iface(c.Name), nil
	case capture.DestPorts:
		return proto + " dport " + neq(c.Not) + ports(c.Ports), nil
	case capture.SourcePorts:
		return proto + " sport " + neq(c.Not) + ports(c.Ports), nil
	case capture.OwnerUID:
		return "meta skuid " + neq(c.Not) + strconv.FormatUint(uint64(c.UID), 10), nil
	case capture.OwnerGID:
		return "meta skgid " + neq(c.Not) + strconv.FormatUint(uint64(c.GID), 10), nil
	case capture.Mark:
		return "meta mark " + neq(c.Not) + mark(c.Value), nil
	case capture.ConnMark:
		return "ct mark " + mark(c.Value), nil
	case capture.ConnState:
		return "ct state " + states(c.States), nil
	case capture.FamilyIs:
		return "meta nfproto " + string(c.Family), nil
	}
	return "", fmt.Errorf("condition %T has no nft form", c)
}

func renderVerdict(v capture.Verdict, fam capture.Family) (string, error) {
	switch v := v.(type) {
	case capture.Jump:
		return "jump " + v.Chain, nil
	case capture.Return:
		return "return", nil
	case capture.Accept:
		return "accept", nil
	case capture.Drop:
		return "drop", nil
	case capture.Redirect:
		return "redirect to :" + strconv.Itoa(int(v.Port)), nil
	case capture.TProxy:
		l3 := map[capture.Family]string{capture.IPv4: "ip", capture.IPv6: "ip6"}[fam]
		if l3 == "" {
			return "", fmt.Errorf("TPROXY needs an address condition naming its family")
		}
		return fmt.Sprintf("tproxy %s to :%d meta mark set %s accept", l3, v.Port, mark(v.Mark)), nil
	case capture.SetMark:
		return "meta mark set " + mark(v.Mark), nil
	case capture.SaveMark:
		return "ct mark set meta mark", nil
	case capture.RestoreMark:
		return "meta mark set ct mark", nil
	case capture.CTZone:
		return "ct zone set " + strconv.Itoa(int(v.Zone)), nil
	}
	return "", fmt.Errorf("verdict %T has no nft form", v)
}

func addr(p netip.Prefix, field string) string {
	if p.Addr().Is4() {
		return "ip " + field + " "
	}
	return "ip6 " + field + " "
}

// prefix is printed bare for a single address, as nft prints it.
func prefix(p netip.Prefix) string {
	p = p.Masked()
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// iface quotes a name, iptables' trailing '+' becoming nft's '*'.
func iface(name string) string {
	if base, ok := strings.CutSuffix(name, "+"); ok {
		name = base + "*"
	}
	return `"` + name + `"`
}

// ports is one port or range, or an anonymous set, which nft keeps sorted
// with touching ranges joined, and refuses overlaps in: so the list is
// sorted and overlapping or adjacent ranges merged, as nft prints it.
func ports(list []capture.PortRange) string {
	sorted := slices.Clone(list)
	slices.SortFunc(sorted, func(a, b capture.PortRange) int { return int(a.Lo) - int(b.Lo) })
	var merged []capture.PortRange
	for _, p := range sorted {
		if n := len(merged); n > 0 && int(p.Lo) <= int(merged[n-1].Hi)+1 {
			merged[n-1].Hi = max(merged[n-1].Hi, p.Hi)
			continue
		}
		merged = append(merged, p)
	}
	s := make([]string, len(merged))
	for i, p := range merged {
		s[i] = strings.Replace(p.String(), ":", "-", 1)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

func mark(v uint32) string { return fmt.Sprintf("0x%08x", v) }

// stateOrder is the order nft prints conntrack states in.
var stateOrder = []string{capture.StateInvalid, capture.StateEstablished, capture.StateRelated}

func states(list []string) string {
	var out []string
	for _, s := range stateOrder {
		if slices.Contains(list, s) {
			out = append(out, strings.ToLower(s))
		}
	}
	return strings.Join(out, ",")
}

// String is the table exactly as `nft list table inet shunt` prints it.
func (t *Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", Family, TableName)
	if t.Comment != "" {
		fmt.Fprintf(&b, "\tcomment %q\n", t.Comment)
	}
	for i, c := range t.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment \"%s\"\n", c.Comment)
		}
		if c.Header != "" {
			fmt.Fprintf(&b, "\t\t%s\n", c.Header)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
