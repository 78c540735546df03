// Package iptables renders a capture.Plan as iptables-restore text and
// applies it through iptables-legacy or iptables-nft as one transaction.
package iptables

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/capture"
)

// multiportLimit is how many ports (a range counts twice) one multiport
// match takes; longer lists are split over several rules.
const multiportLimit = 15

// commentLimit is the longest comment the kernel stores.
const commentLimit = 255

// CommentPrefix starts every comment shunt puts in the kernel.
const CommentPrefix = "shunt: "

// Ruleset is the iptables form of shunt's rules: per table, shunt's chains
// with their rules and the jumps into them from built-in chains, each line
// exactly as iptables-save prints it. It is both what Render makes of a Plan
// and what ParseSave finds in a live network namespace, so the two compare
// line for line.
type Ruleset struct {
	Tables []*TableRules
}

// TableRules is shunt's part of one table.
type TableRules struct {
	Name   string
	Chains []string            // shunt's chains, in order
	Rules  map[string][]string // chain -> its "-A" lines
	Jumps  []string            // "-A PREROUTING ... -j SHUNT_..." lines in built-in chains
}

// Table returns the named table's rules, or nil.
func (r *Ruleset) Table(name string) *TableRules {
	for _, t := range r.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func (r *Ruleset) table(name string) *TableRules {
	if t := r.Table(name); t != nil {
		return t
	}
	t := &TableRules{Name: name, Rules: map[string][]string{}}
	r.Tables = append(r.Tables, t)
	return t
}

// Empty reports whether the ruleset holds nothing of shunt's.
func (r *Ruleset) Empty() bool {
	for _, t := range r.Tables {
		if len(t.Chains) > 0 || len(t.Jumps) > 0 {
			return false
		}
	}
	return true
}

// Render turns a Plan into iptables rules for one family: IPv4's for
// iptables, IPv6's for ip6tables, empty when the plan does not capture the
// family. Rules whose addresses are of the other family are left out. It
// fails on a condition or verdict it does not know, so a new kind in the
// model cannot be silently dropped.
func Render(p *capture.Plan, family capture.Family) (*Ruleset, error) {
	rs := &Ruleset{}
	if !p.HasFamily(family) {
		return rs, nil
	}
	for _, c := range p.Chains {
		t := rs.table(string(c.Table))
		t.Chains = append(t.Chains, c.Name)
		if c.Hook != "" {
			t.Jumps = append(t.Jumps, fmt.Sprintf("-A %s -m comment --comment %s -j %s",
				c.Hook, quote(CommentPrefix+c.Purpose), c.Name))
		}
		for i, r := range c.Rules {
			f, err := capture.RuleFamily(r)
			if err != nil {
				return nil, fmt.Errorf("chain %s rule %d: %w", c.Name, i+1, err)
			}
			if f != "" && f != family {
				continue
			}
			lines, err := RenderRule(c.Name, r, family)
			if err != nil {
				return nil, fmt.Errorf("chain %s rule %d (%s): %w", c.Name, i+1, r.Purpose, err)
			}
			t.Rules[c.Name] = append(t.Rules[c.Name], lines...)
		}
	}
	return rs, nil
}

// RenderRule renders one rule for a family's rule set; a port list longer
// than a multiport match takes becomes several rules with the same verdict.
func RenderRule(chain string, r capture.Rule, family capture.Family) ([]string, error) {
	// The header fields come out in iptables-save's fixed order, whatever
	// order the rule lists them in; matches keep the rule's order.
	var src, dst, in, out, proto string
	var ports *capture.DestPorts
	portFlag := "dport"
	var matches []string
	for _, c := range r.Conds {
		switch c := c.(type) {
		case capture.Source:
			src = not(c.Not) + "-s " + c.Prefix.Masked().String()
		case capture.Dest:
			dst = not(c.Not) + "-d " + c.Prefix.Masked().String()
		case capture.InInterface:
			in = not(c.Not) + "-i " + c.Name
		case capture.OutInterface:
			out = not(c.Not) + "-o " + c.Name
		case capture.Proto:
			proto = c.Name
		case capture.DestPorts:
			if ports != nil {
				return nil, fmt.Errorf("more than one port condition")
			}
			ports = &c
		case capture.SourcePorts:
			if ports != nil {
				return nil, fmt.Errorf("more than one port condition")
			}
			ports, portFlag = &capture.DestPorts{Ports: c.Ports, Not: c.Not}, "sport"
		case capture.Mark:
			matches = append(matches, "-m mark "+not(c.Not)+"--mark "+hex(c.Value))
		case capture.ConnMark:
			matches = append(matches, "-m connmark --mark "+hex(c.Value))
		case capture.FamilyIs:
			// The rule set is one family's: Render left out the other's.
		case capture.OwnerUID:
			matches = append(matches, "-m owner "+not(c.Not)+"--uid-owner "+strconv.FormatUint(uint64(c.UID), 10))
		case capture.OwnerGID:
			matches = append(matches, "-m owner "+not(c.Not)+"--gid-owner "+strconv.FormatUint(uint64(c.GID), 10))
		case capture.ConnState:
			matches = append(matches, "-m conntrack --ctstate "+strings.Join(c.States, ","))
		default:
			return nil, fmt.Errorf("condition %T has no iptables form", c)
		}
	}
	// One line per chunk of ports: a negated list cannot be split, since
	// "not in A or B" is not "not in A, then not in B".
	chunks := [][]string{nil}
	if ports != nil {
		if proto == "" {
			return nil, fmt.Errorf("destination ports without a protocol")
		}
		split := ChunkPorts(ports.Ports)
		if ports.Not && len(split) > 1 {
			return nil, fmt.Errorf("a negated list of more than %d ports cannot be split", multiportLimit)
		}
		chunks = chunks[:0]
		for _, part := range split {
			chunks = append(chunks, portMatch(proto, portFlag, capture.DestPorts{Ports: part, Not: ports.Not}))
		}
	}
	var header []string
	for _, f := range []string{src, dst, in, out} {
		if f != "" {
			header = append(header, f)
		}
	}
	if proto != "" {
		header = append(header, "-p "+proto)
	}
	target, err := renderVerdict(r.Verdict, family)
	if err != nil {
		return nil, err
	}
	comment := CommentPrefix + r.Purpose
	if len(comment) > commentLimit {
		return nil, fmt.Errorf("purpose is %d bytes, longer than the kernel keeps (%d)", len(comment), commentLimit)
	}
	tail := append(matches, "-m comment --comment "+quote(comment), target)
	lines := make([]string, len(chunks))
	for i, portMatch := range chunks {
		lines[i] = join(chain, header, portMatch, tail)
	}
	return lines, nil
}

func not(negate bool) string {
	if negate {
		return "! "
	}
	return ""
}

func join(chain string, parts ...[]string) string {
	var b strings.Builder
	b.Grow(160)
	b.WriteString("-A ")
	b.WriteString(chain)
	for _, p := range parts {
		for _, f := range p {
			b.WriteByte(' ')
			b.WriteString(f)
		}
	}
	return b.String()
}

// portMatch is "-m tcp --dport 80" for one port or range, and a multiport
// match for more; flag is "dport" or "sport".
func portMatch(proto, flag string, d capture.DestPorts) []string {
	if len(d.Ports) == 1 {
		return []string{"-m " + proto + " " + not(d.Not) + "--" + flag + " " + d.Ports[0].String()}
	}
	list := make([]string, len(d.Ports))
	for i, p := range d.Ports {
		list[i] = p.String()
	}
	return []string{"-m multiport " + not(d.Not) + "--" + flag + "s " + strings.Join(list, ",")}
}

// hex spells a mark as iptables-save does.
func hex(n uint32) string { return "0x" + strconv.FormatUint(uint64(n), 16) }

// ChunkPorts splits a port list into lists a multiport match takes: one
// rendered rule each.
func ChunkPorts(ports []capture.PortRange) [][]capture.PortRange {
	var out [][]capture.PortRange
	var cur []capture.PortRange
	weight := 0
	for _, p := range ports {
		w := 1
		if p.Lo != p.Hi {
			w = 2
		}
		if weight+w > multiportLimit {
			out, cur, weight = append(out, cur), nil, 0
		}
		cur, weight = append(cur, p), weight+w
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// renderVerdict spells a target; TPROXY's listening address is the
// family's any-address.
func renderVerdict(v capture.Verdict, family capture.Family) (string, error) {
	switch v := v.(type) {
	case capture.Jump:
		return "-j " + v.Chain, nil
	case capture.Return:
		return "-j RETURN", nil
	case capture.Accept:
		return "-j ACCEPT", nil
	case capture.Drop:
		return "-j DROP", nil
	case capture.Redirect:
		return "-j REDIRECT --to-ports " + strconv.Itoa(int(v.Port)), nil
	case capture.TProxy:
		onIP := "0.0.0.0"
		if family == capture.IPv6 {
			onIP = "::"
		}
		return fmt.Sprintf("-j TPROXY --on-port %d --on-ip %s --tproxy-mark %s/0xffffffff", v.Port, onIP, hex(v.Mark)), nil
	case capture.SetMark:
		return "-j MARK --set-xmark " + hex(v.Mark) + "/0xffffffff", nil
	case capture.SaveMark:
		return "-j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff", nil
	case capture.RestoreMark:
		return "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff", nil
	case capture.CTZone:
		return "-j CT --zone " + strconv.Itoa(int(v.Zone)), nil
	}
	return "", fmt.Errorf("verdict %T has no iptables form", v)
}

// quote spells a string as iptables-save does: bare when it is only letters,
// digits, '-' and '_', otherwise in double quotes with '"', '\' and '\”
// escaped.
func quote(s string) string {
	bare := s != ""
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	if !strings.ContainsAny(s, "\"\\'") {
		return `"` + s + `"`
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' || r == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
