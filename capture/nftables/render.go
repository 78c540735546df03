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
	Sets    []*Set
	Chains  []*Chain
	// Positions maps each chain's plan rules, by index, to the position
	// of the table rule that holds them (runs of rules share a set rule);
	// only a rendered table has them.
	Positions map[string][]int
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
	t := &Table{Comment: TableComment, Positions: map[string][]int{}}
	for _, c := range p.Chains {
		ch := &Chain{Name: c.Name, Comment: iptables.CommentPrefix + c.Purpose}
		if c.Hook != "" {
			typ, hook, prio := baseChain(c.Table, c.Hook)
			ch.Header = fmt.Sprintf("type %s hook %s priority %s; policy accept;", typ, hook, prio)
		}
		for i := 0; i < len(c.Rules); {
			run := runOf(c.Rules, i)
			if err := t.renderRun(ch, c.Rules[i:i+run]); err != nil {
				return nil, fmt.Errorf("chain %s rule %d (%s): %w", c.Name, i+1, c.Rules[i].Purpose, err)
			}
			i += run
		}
		t.Chains = append(t.Chains, ch)
	}
	return t, nil
}

// runOf is how many rules from i on can be one set rule: 1, or the length
// of a run of neighbours that differ only in one address range.
func runOf(rules []capture.Rule, i int) int {
	g, ok := groupKey(rules[i])
	if !ok {
		return 1
	}
	n := 1
	for i+n < len(rules) {
		h, ok := groupKey(rules[i+n])
		if !ok || h.shape != g.shape {
			break
		}
		n++
	}
	return n
}

// renderRun renders a run of rules: one rule each, or, for a run of
// neighbours that differ only in an address range, one rule per family
// matching its ranges in a named set. It records the plan rules'
// positions.
func (t *Table) renderRun(ch *Chain, run []capture.Rule) error {
	if len(run) == 1 {
		line, err := t.renderOne(ch, run[0], -1, nil)
		t.place(ch, line, 1)
		return err
	}
	g, _ := groupKey(run[0])
	byFamily := map[bool][]int{} // IPv4? -> indexes into run
	for i, r := range run {
		is4 := prefixOf(r.Conds[g.index]).Addr().Is4()
		byFamily[is4] = append(byFamily[is4], i)
	}
	pos := make([]int, len(run))
	for _, is4 := range []bool{true, false} {
		idx := byFamily[is4]
		if len(idx) == 0 {
			continue
		}
		var ps []netip.Prefix
		for _, i := range idx {
			ps = append(ps, prefixOf(run[i].Conds[g.index]))
		}
		setAt := g.index
		if len(idx) == 1 {
			setAt, ps = -1, nil
		}
		line, err := t.renderOne(ch, run[idx[0]], setAt, ps)
		if err != nil {
			return err
		}
		ch.Rules = append(ch.Rules, line)
		for _, i := range idx {
			pos[i] = len(ch.Rules)
		}
	}
	t.Positions[ch.Name] = append(t.Positions[ch.Name], pos...)
	return nil
}

// place adds a rendered rule standing for n plan rules.
func (t *Table) place(ch *Chain, line string, n int) {
	ch.Rules = append(ch.Rules, line)
	for range n {
		t.Positions[ch.Name] = append(t.Positions[ch.Name], len(ch.Rules))
	}
}

// renderOne renders r, matching the condition at setAt against a named
// set of ps (setAt -1: none), and any port list of more than one range
// against a named set; the sets are added to the table.
func (t *Table) renderOne(ch *Chain, r capture.Rule, setAt int, ps []netip.Prefix) (string, error) {
	overrides := map[int]string{}
	pos := len(ch.Rules) + 1
	if setAt >= 0 {
		field := "daddr"
		if _, ok := r.Conds[setAt].(capture.Source); ok {
			field = "saddr"
		}
		typ, fam := "ipv4_addr", "4"
		if ps[0].Addr().Is6() {
			typ, fam = "ipv6_addr", "6"
		}
		name := fmt.Sprintf("%s_%d_%s%s", ch.Name, pos, field, fam)
		t.Sets = append(t.Sets, &Set{Name: name, Type: typ, Comment: iptables.CommentPrefix + r.Purpose, Elements: addrElements(ps)})
		overrides[setAt] = addr(ps[0], field) + "@" + name
	}
	for i, c := range r.Conds {
		var list []capture.PortRange
		var not bool
		field := ""
		switch c := c.(type) {
		case capture.DestPorts:
			list, not, field = c.Ports, c.Not, "dport"
		case capture.SourcePorts:
			list, not, field = c.Ports, c.Not, "sport"
		}
		if len(mergePorts(list)) < 2 {
			continue
		}
		name := fmt.Sprintf("%s_%d_%s", ch.Name, pos, field)
		t.Sets = append(t.Sets, &Set{Name: name, Type: "inet_service", Comment: iptables.CommentPrefix + r.Purpose, Elements: portElements(list)})
		overrides[i] = protoOf(r) + " " + field + " " + neq(not) + "@" + name
	}
	return renderRule(r, overrides)
}

func protoOf(r capture.Rule) string {
	for _, c := range r.Conds {
		if p, ok := c.(capture.Proto); ok {
			return p.Name
		}
	}
	return ""
}

// RenderRule renders one rule as nft prints it: conditions in the rule's
// order, a protocol only where no port match implies it, the verdict, and
// the purpose as a comment.
func RenderRule(r capture.Rule) (string, error) { return renderRule(r, nil) }

// renderRule is RenderRule with some conditions' text given.
func renderRule(r capture.Rule, overrides map[int]string) (string, error) {
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
	for i, c := range r.Conds {
		s, ok := overrides[i]
		if !ok {
			if s, err = renderCond(c, proto, hasPorts); err != nil {
				return "", err
			}
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

// ports is one port or range (a list of several is a named set, see
// renderRun), merged as nft holds it.
func ports(list []capture.PortRange) string {
	return strings.Join(portElements(list), ", ")
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

// String is the table as `nft list table inet shunt` prints it (but for
// nft's wrapping of long element lists): sets, then chains.
func (t *Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", Family, TableName)
	if t.Comment != "" {
		fmt.Fprintf(&b, "\tcomment %q\n", t.Comment)
	}
	blocks := 0
	for _, s := range t.Sets {
		if blocks++; blocks > 1 {
			b.WriteString("\n")
		}
		b.WriteString(s.String())
	}
	for _, c := range t.Chains {
		if blocks++; blocks > 1 {
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
