package backend

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/livetrace"
	"github.com/shunt-dev/shunt/capture/trace"
)

// Iptables is shunt's rules through one iptables variant, IPv4 with
// iptables and IPv6 with ip6tables.
type Iptables struct {
	Runner  iptables.Runner
	Variant iptables.Variant
	NetNS   string // for tracing; the Runner acts there already
	// LockWait is how long iptables-restore waits for the xtables lock that
	// other iptables users (kubelet, kube-proxy, another init step) hold.
	LockWait time.Duration
	// save4 is a save already read (by Detect), used once by Read.
	save4 string
}

// NewIptables is the variant's backend in the namespace at netns (the
// caller's when "").
func NewIptables(netns string, v iptables.Variant, lockWait time.Duration) *Iptables {
	return &Iptables{Runner: iptables.Exec{NetNS: netns}, Variant: v, NetNS: netns, LockWait: lockWait}
}

// Name implements Backend.
func (b *Iptables) Name() string {
	if b.Variant == iptables.System {
		return "iptables"
	}
	return "iptables-" + b.Variant.Name
}

// ipv6 reports whether the kernel has IPv6 (a kernel booted with
// ipv6.disable=1 does not, and ip6tables cannot work there).
func (b *Iptables) ipv6() bool {
	p, ok := b.Runner.(interface{ IPv6Enabled() bool })
	return !ok || p.IPv6Enabled()
}

// iptablesRules is iptables.Rules as a Rules.
type iptablesRules struct{ iptables.Rules }

func (r iptablesRules) v6() *iptables.Ruleset {
	if r.V6 == nil {
		return &iptables.Ruleset{}
	}
	return r.V6
}

func (r iptablesRules) Empty() bool { return r.V4.Empty() && r.v6().Empty() }

func (r iptablesRules) Equal(o Rules) bool {
	other := o.(iptablesRules)
	return iptables.Equal(r.V4, other.V4) && iptables.Equal(r.v6(), other.v6())
}

func (r iptablesRules) Diff(o Rules) string {
	want := o.(iptablesRules)
	d := iptables.Diff(r.V4, want.V4)
	if !iptables.Equal(r.v6(), want.v6()) {
		for _, line := range strings.SplitAfter(strings.TrimSuffix(iptables.Diff(r.v6(), want.v6()), "\n"), "\n") {
			d += strings.Replace(line, "[", "[ip6tables ", 1)
		}
		if !strings.HasSuffix(d, "\n") {
			d += "\n"
		}
	}
	return d
}

// Render implements Backend.
func (b *Iptables) Render(plan *capture.Plan) (Rules, error) {
	if plan == nil {
		return iptablesRules{iptables.Rules{V4: &iptables.Ruleset{}, V6: &iptables.Ruleset{}}}, nil
	}
	r, err := iptables.RenderAll(plan)
	return iptablesRules{r}, err
}

// Read implements Backend.
func (b *Iptables) Read(ctx context.Context) (Rules, error) {
	text := b.save4
	b.save4 = ""
	if text == "" {
		var err error
		if text, err = b.Runner.Run(ctx, "", b.Variant.Save); err != nil {
			return nil, err
		}
	}
	v4, err := iptables.ParseSave(text)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", b.Variant.Save, err)
	}
	v6 := &iptables.Ruleset{}
	if b.ipv6() {
		if v6, err = b.read6(ctx); err != nil {
			return nil, err
		}
	}
	return iptablesRules{iptables.Rules{V4: v4, V6: v6}}, nil
}

// read6 reads shunt's ip6tables rules; none when the variant's ip6tables
// save is missing or, for legacy, when the kernel holds no ip6tables table.
func (b *Iptables) read6(ctx context.Context) (*iptables.Ruleset, error) {
	v6 := b.Variant.For(capture.IPv6)
	if _, err := exec.LookPath(v6.Save); err != nil {
		return &iptables.Ruleset{}, nil
	}
	if e, ok := b.Runner.(iptables.Exec); ok && b.Variant == iptables.Legacy {
		if names, err := e.LegacyTables(capture.IPv6); err == nil && names == "" {
			return &iptables.Ruleset{}, nil
		}
	}
	text, err := b.Runner.Run(ctx, "", v6.Save)
	if err != nil {
		return nil, err
	}
	rs, err := iptables.ParseSave(text)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", v6.Save, err)
	}
	return rs, nil
}

// Write implements Backend: one iptables-restore per family; if the IPv6
// one fails, the IPv4 one is undone.
func (b *Iptables) Write(ctx context.Context, have, want Rules, force bool) (Applied, error) {
	h, w := have.(iptablesRules), want.(iptablesRules)
	var a Applied
	want6 := w.v6()
	if !b.ipv6() {
		if !want6.Empty() {
			a.Warnings = append(a.Warnings, "IPv6 is disabled in this kernel: capturing IPv4 only")
		}
		want6 = &iptables.Ruleset{}
	}
	r4 := &iptables.Restorer{Runner: b.Runner, Variant: b.Variant, LockWait: b.LockWait}
	r6 := &iptables.Restorer{Runner: b.Runner, Variant: b.Variant.For(capture.IPv6), LockWait: b.LockWait}
	tx4 := iptables.Transaction(h.V4, w.V4, force)
	if err := r4.Restore(ctx, tx4); err != nil {
		return a, err
	}
	tx6 := iptables.Transaction(h.v6(), want6, force)
	if err := r6.Restore(ctx, tx6); err != nil {
		if undo := r4.Restore(ctx, iptables.Transaction(w.V4, h.V4, false)); undo != nil {
			return a, fmt.Errorf("%w; undoing the IPv4 rules failed too: %v", err, undo)
		}
		return a, err
	}
	if tx4 != "" {
		a.Transaction += "# " + b.Variant.Restore + "\n" + tx4
	}
	if tx6 != "" {
		a.Transaction += "# " + b.Variant.For(capture.IPv6).Restore + "\n" + tx6
	}
	return a, nil
}

// Census implements Backend: the nat rules of both families, anyone's.
func (b *Iptables) Census(ctx context.Context) (Census, error) {
	var c Census
	nat, all := 0, 0
	for _, v := range []iptables.Variant{b.Variant, b.Variant.For(capture.IPv6)} {
		if _, err := exec.LookPath(v.Save); err != nil {
			continue
		}
		text, err := b.Runner.Run(ctx, "", v.Save)
		if err != nil {
			return c, err
		}
		nat += iptables.CountNatRules(text)
		all += iptables.CountRules(text)
	}
	c.Summary = fmt.Sprintf("%d nat rules, %d rules in all", nat, all)
	if nat > 0 {
		c.NatHooks = []string{"nat rules"}
	}
	return c, nil
}

// Trace implements Backend: the TRACE target, read from nftables' trace
// events (iptables-nft) or the kernel log (legacy).
func (b *Iptables) Trace(ctx context.Context, pkt trace.Packet) ([]Step, error) {
	steps, err := livetrace.Run(ctx, b.NetNS, b.Variant, pkt)
	return fromLive(steps), err
}

// Model implements Backend: iptables positions, a rule split over several
// iptables rules (ports in chunks of 15) taking the one that can match.
func (b *Iptables) Model(plan *capture.Plan, res trace.Result) ([]Step, error) {
	steps, err := livetrace.Model(plan, res)
	return fromLive(steps), err
}

func fromLive(steps []livetrace.Step) []Step {
	out := make([]Step, len(steps))
	for i, s := range steps {
		out[i] = Step(s)
	}
	return out
}
