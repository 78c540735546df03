package iptables

import (
	"slices"
	"strings"
)

// String is the iptables-restore --noflush input that installs the ruleset
// where none of shunt's rules are: the dry-run output and the golden form.
func (r *Ruleset) String() string {
	return Transaction(&Ruleset{}, r, false)
}

// Equal reports whether two rulesets hold the same chains, rules and jumps.
func Equal(a, b *Ruleset) bool {
	for _, name := range tableNames(a, b) {
		if !tableEqual(a.Table(name), b.Table(name)) {
			return false
		}
	}
	return true
}

// Transaction returns the iptables-restore --noflush input that turns what
// the kernel has into what is wanted, in one commit per table: shunt's chains
// are declared (which creates or empties them) and refilled, jumps that
// should not be there are deleted, missing ones added, and chains no longer
// wanted removed. A table already as wanted is left out, unless force is set;
// when nothing is left out the result is "".
//
// Within a table the commit is atomic, so a connection never sees a state
// between the old rules and the new ones.
func Transaction(have, want *Ruleset, force bool) string {
	var b strings.Builder
	for _, name := range tableNames(want, have) {
		h, w := have.Table(name), want.Table(name)
		if (!force || w == nil) && tableEqual(h, w) {
			continue
		}
		if h == nil {
			h = &TableRules{Name: name}
		}
		if w == nil {
			w = &TableRules{Name: name}
		}
		writeTable(&b, h, w)
	}
	return b.String()
}

func writeTable(b *strings.Builder, h, w *TableRules) {
	stale := without(h.Chains, w.Chains)
	extra, missing := multisetDiff(h.Jumps, w.Jumps)
	line := func(s string) { b.WriteString(s); b.WriteByte('\n') }
	line("*" + w.Name)
	for _, c := range append(slices.Clone(w.Chains), stale...) {
		line(":" + c + " - [0:0]")
	}
	for _, j := range extra {
		line("-D" + strings.TrimPrefix(j, "-A"))
	}
	for _, c := range w.Chains {
		for _, r := range w.Rules[c] {
			line(r)
		}
	}
	for _, j := range missing {
		line(j)
	}
	for _, c := range stale {
		line("-X " + c)
	}
	line("COMMIT")
}

func tableEqual(a, b *TableRules) bool {
	if a == nil || b == nil {
		return isEmpty(a) && isEmpty(b)
	}
	if len(a.Chains) != len(b.Chains) || len(without(a.Chains, b.Chains)) > 0 {
		return false
	}
	for _, c := range a.Chains {
		if !slices.Equal(a.Rules[c], b.Rules[c]) {
			return false
		}
	}
	extra, missing := multisetDiff(a.Jumps, b.Jumps)
	return len(extra) == 0 && len(missing) == 0
}

func isEmpty(t *TableRules) bool {
	return t == nil || len(t.Chains) == 0 && len(t.Jumps) == 0
}

// tableNames lists the tables of both rulesets, a's first.
func tableNames(a, b *Ruleset) []string {
	var names []string
	for _, rs := range []*Ruleset{a, b} {
		for _, t := range rs.Tables {
			if !slices.Contains(names, t.Name) {
				names = append(names, t.Name)
			}
		}
	}
	return names
}

// without returns the items of a that are not in b.
func without(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// multisetDiff returns what have holds beyond want, and what want holds
// beyond have, counting repeats.
func multisetDiff(have, want []string) (extra, missing []string) {
	count := map[string]int{}
	for _, s := range want {
		count[s]++
	}
	for _, s := range have {
		if count[s] > 0 {
			count[s]--
		} else {
			extra = append(extra, s)
		}
	}
	for _, s := range want {
		if count[s] > 0 {
			count[s]--
			missing = append(missing, s)
		}
	}
	return extra, missing
}
