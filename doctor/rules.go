package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
)

// held is what one backend holds in the namespace.
type held struct {
	b      backend.Backend
	census backend.Census
	rules  backend.Rules // shunt's; nil when unreadable
	err    error
}

// readBackends reads every backend once: its census and shunt's rules.
func readBackends(ctx context.Context, o Options) []held {
	var out []held
	for _, b := range o.backends() {
		h := held{b: b}
		h.census, h.err = b.Census(ctx)
		if h.err == nil {
			h.rules, h.err = b.Read(ctx)
		}
		out = append(out, h)
	}
	return out
}

// backendsCheck fails when more than one backend hooks nat: the kernel
// runs both sets, in an order nobody chose.
func backendsCheck(all []held) Check {
	c := Check{Name: "rule backends", Status: Pass}
	var holders, lines []string
	for _, h := range all {
		if h.err != nil {
			lines = append(lines, h.b.Name()+": unreadable")
			continue
		}
		lines = append(lines, h.b.Name()+": "+h.census.Summary)
		if len(h.census.NatHooks) > 0 {
			who := h.b.Name()
			if h.b.Name() == backend.NFT {
				who += " (" + strings.Join(h.census.NatHooks, ", ") + ")"
			}
			holders = append(holders, who)
		}
	}
	c.Detail = strings.Join(lines, "; ")
	if len(holders) > 1 {
		c.Status = Fail
		c.Detail = "nat rules in " + strings.Join(holders, " and ") + "; " + c.Detail
		c.Hint = "the kernel runs both sets, in an order no one chose: keep the pod's rules in one backend " +
			"(shunt redirect --cleanup-only --force-iptables-binary on the other)"
	}
	return c
}

// rulesCheck finds shunt's rules and, given the capture flags, compares
// them with their plan in the same backend, every family.
func rulesCheck(all []held, o Options) Check {
	c := Check{Name: "shunt rules"}
	var found []held
	for _, h := range all {
		if h.err == nil && !h.rules.Empty() {
			found = append(found, h)
		}
	}
	if len(found) == 0 {
		c.Status, c.Detail = Fail, "none of shunt's rules in iptables-legacy, iptables-nft or shunt's nftables table"
		c.Hint = "capture is not installed: run shunt redirect (the init step) in this namespace"
		return c
	}
	h := found[0]
	where := "present in " + h.b.Name()
	if o.Config == nil {
		c.Status, c.Detail = Pass, where+" (give the capture flags to compare them with a plan)"
		return c
	}
	plan, err := capture.Build(*o.Config)
	var want backend.Rules
	if err == nil {
		want, err = h.b.Render(plan)
	}
	switch {
	case err != nil:
		c.Status, c.Detail = Fail, "cannot build the plan: "+err.Error()
	case h.rules.Equal(want):
		c.Status, c.Detail = Pass, where+", equal to the plan of the given configuration"
	default:
		c.Status, c.Detail = Fail, where+", but they differ from the plan of the given configuration"
		c.Diff = h.rules.Diff(want)
		c.Hint = "- lines are in the kernel only, + lines in the plan only; shunt redirect --reconcile replaces them"
		if h.b.Name() == backend.NFT {
			c.Hint = "- lines are in the kernel only, + lines in the plan only; shunt redirect --native-nftables --reconcile replaces them"
		}
	}
	if len(found) > 1 {
		c.Status = Fail
		c.Detail += fmt.Sprintf("; shunt's rules are in %s too", found[1].b.Name())
	}
	return c
}
