package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/nftables"
)

// ruleState is what each backend holds in the namespace.
type ruleState struct {
	saves    map[string]string // variant -> iptables-save output
	errs     map[string]error
	nftNat   []string // native nftables tables with a nat hook
	nftShunt *nftables.Table
	nftError error
}

func readRules(ctx context.Context, o Options) *ruleState {
	st := &ruleState{saves: map[string]string{}, errs: map[string]error{}}
	for _, v := range []iptables.Variant{iptables.Legacy, iptables.NFT} {
		text, err := o.Runner.Run(ctx, "", v.Save)
		st.saves[v.Name], st.errs[v.Name] = text, err
	}
	out, err := o.Runner.Run(ctx, "", "nft", "list", "ruleset")
	st.nftError = err
	st.nftNat = nativeNatTables(out)
	if block := shuntTable(out); block != "" {
		st.nftShunt, _ = nftables.Parse(block)
	}
	return st
}

// shuntTable is shunt's own table's block in an nft ruleset listing.
func shuntTable(ruleset string) string {
	head := "table " + nftables.Family + " " + nftables.TableName + " {"
	start := strings.Index(ruleset, head)
	if start < 0 {
		return ""
	}
	end := strings.Index(ruleset[start:], "\n}")
	if end < 0 {
		return ""
	}
	return ruleset[start : start+end+2]
}

// nativeNatTables finds nftables tables, not made by iptables-nft, with a
// chain on a nat hook. iptables-nft's tables are the xtables names in the
// ip and ip6 families.
func nativeNatTables(ruleset string) []string {
	var out []string
	table := ""
	for _, line := range strings.Split(ruleset, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table = f[1] + " " + f[2]
			if (f[1] == "ip" || f[1] == "ip6") && isXtablesName(f[2]) {
				table = ""
			}
		case table != "" && strings.Contains(line, "type nat hook"):
			if len(out) == 0 || out[len(out)-1] != table {
				out = append(out, table)
			}
		}
	}
	return out
}

func isXtablesName(name string) bool {
	switch name {
	case "filter", "nat", "mangle", "raw", "security":
		return true
	}
	return false
}

func natRules(save string) int {
	n, inNat := 0, false
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case inNat && strings.HasPrefix(line, "-A "):
			n++
		}
	}
	return n
}

func (st *ruleState) backendsCheck() Check {
	c := Check{Name: "rule backends", Status: Pass}
	var holders, all []string
	for _, v := range []string{"legacy", "nft"} {
		if st.errs[v] != nil {
			all = append(all, fmt.Sprintf("iptables-%s: unreadable", v))
			continue
		}
		n := natRules(st.saves[v])
		all = append(all, fmt.Sprintf("iptables-%s: %d nat rules, %d rules in all", v, n, iptables.CountRules(st.saves[v])))
		if n > 0 {
			holders = append(holders, "iptables-"+v)
		}
	}
	if st.nftError == nil {
		all = append(all, fmt.Sprintf("nft: %d native nat tables", len(st.nftNat)))
		if len(st.nftNat) > 0 {
			holders = append(holders, "nft ("+strings.Join(st.nftNat, ", ")+")")
		}
	}
	c.Detail = strings.Join(all, "; ")
	if len(holders) > 1 {
		c.Status = Fail
		c.Detail = "nat rules in " + strings.Join(holders, " and ") + "; " + c.Detail
		c.Hint = "the kernel runs both sets, in an order no one chose: keep the pod's rules in one backend " +
			"(shunt redirect --cleanup-only --force-iptables-binary on the other)"
	}
	return c
}

func (st *ruleState) rulesCheck(o Options) Check {
	c := Check{Name: "shunt rules"}
	var have *iptables.Ruleset
	variant := ""
	for _, v := range []string{"nft", "legacy"} {
		rs, err := iptables.ParseSave(st.saves[v])
		if err == nil && !rs.Empty() {
			have, variant = rs, v
			break
		}
	}
	if have == nil && st.nftShunt != nil {
		return st.nftRulesCheck(o)
	}
	if have == nil {
		c.Status, c.Detail = Fail, "none of shunt's chains in iptables-legacy or iptables-nft, nor shunt's nftables table"
		c.Hint = "capture is not installed: run shunt redirect (the init step) in this namespace"
		return c
	}
	if o.Config == nil {
		c.Status, c.Detail = Pass, "present in iptables-"+variant+" (give the capture flags to compare them with a plan)"
		return c
	}
	plan, err := capture.Build(*o.Config)
	if err == nil {
		var want *iptables.Ruleset
		if want, err = iptables.Render(plan, capture.IPv4); err == nil && iptables.Equal(have, want) {
			c.Status, c.Detail = Pass, "present in iptables-"+variant+", equal to the plan of the given configuration"
			return c
		} else if err == nil {
			c.Status, c.Detail = Fail, "present in iptables-"+variant+", but they differ from the plan of the given configuration"
			c.Diff = iptables.Diff(have, want)
			c.Hint = "- lines are in the kernel only, + lines in the plan only; shunt redirect --reconcile replaces them"
			return c
		}
	}
	c.Status, c.Detail = Fail, "cannot build the plan: "+err.Error()
	return c
}

// nftRulesCheck compares shunt's native nftables table with the plan.
func (st *ruleState) nftRulesCheck(o Options) Check {
	c := Check{Name: "shunt rules", Status: Pass}
	where := "present in nftables table " + nftables.Family + " " + nftables.TableName
	if o.Config == nil {
		c.Detail = where + " (give the capture flags to compare them with a plan)"
		return c
	}
	plan, err := capture.Build(*o.Config)
	var want *nftables.Table
	if err == nil {
		want, err = nftables.Render(plan)
	}
	switch {
	case err != nil:
		c.Status, c.Detail = Fail, "cannot build the plan: "+err.Error()
	case nftables.Equal(st.nftShunt, want):
		c.Detail = where + ", equal to the plan of the given configuration"
	default:
		c.Status, c.Detail = Fail, where+", but it differs from the plan of the given configuration"
		c.Diff = nftables.Diff(st.nftShunt, want)
		c.Hint = "- lines are in the kernel only, + lines in the plan only; shunt redirect --native-nftables --reconcile replaces them"
	}
	return c
}
