package iptables

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/shunt-dev/shunt/capture"
)

// Rules is shunt's iptables rules for both families: V4 for iptables, V6
// for ip6tables (empty without dual-stack).
type Rules struct{ V4, V6 *Ruleset }

// RenderAll renders a Plan for both families.
func RenderAll(p *capture.Plan) (Rules, error) {
	v4, err := Render(p, capture.IPv4)
	if err != nil {
		return Rules{}, err
	}
	v6, err := Render(p, capture.IPv6)
	return Rules{v4, v6}, err
}

// String is the iptables-restore input of both families, each under a
// "# iptables" or "# ip6tables" line when there is IPv6 to show.
func (r Rules) String() string {
	if r.V6 == nil || r.V6.Empty() {
		return r.V4.String()
	}
	return "# iptables-restore\n" + r.V4.String() + "# ip6tables-restore\n" + r.V6.String()
}

// SyncRequest says what Sync should make the kernel hold.
type SyncRequest struct {
	// Want is the rules to hold; Cleanup removes shunt's rules instead.
	Want    Rules
	Cleanup bool
	// Binary forces a variant by istio-iptables' name for it; "" detects.
	Binary   string
	Options  ApplyOptions
	LockWait time.Duration
}

// ipv6Prober is a Runner that can tell whether the kernel has IPv6.
type ipv6Prober interface{ IPv6Enabled() bool }

// Sync reads the current network namespace's rules once per family, picks
// the variant, and applies or cleans up in one iptables-restore transaction
// per family, or none when the kernel already holds what is wanted. If the
// IPv6 transaction fails, the IPv4 one is undone, so the pod never holds
// half of a rule set. On a kernel without IPv6, IPv6 rules are skipped with
// a warning in the result.
func Sync(ctx context.Context, r Runner, req SyncRequest) (Result, error) {
	var v Variant
	var text string
	var err error
	if req.Binary != "" {
		if v, err = VariantByBinary(req.Binary); err != nil {
			return Result{}, err
		}
		text, err = r.Run(ctx, "", v.Save)
	} else {
		v, text, err = Detect(ctx, r)
	}
	if err != nil {
		return Result{}, err
	}
	have4, err := ParseSave(text)
	if err != nil {
		return Result{}, fmt.Errorf("reading %s: %w", v.Save, err)
	}
	res := Result{Variant: v}
	want6 := req.Want.V6
	if want6 == nil {
		want6 = &Ruleset{}
	}
	have6 := &Ruleset{}
	if p, ok := r.(ipv6Prober); ok && !p.IPv6Enabled() {
		if !want6.Empty() && !req.Cleanup {
			res.Warnings = append(res.Warnings, "IPv6 is disabled in this kernel: capturing IPv4 only")
		}
		want6 = &Ruleset{}
	} else if have6, err = readV6(ctx, r, v); err != nil {
		return res, err
	}
	b4 := &Backend{Runner: r, Variant: v, LockWait: req.LockWait}
	b6 := &Backend{Runner: r, Variant: v.For(capture.IPv6), LockWait: req.LockWait}
	if req.Cleanup {
		res.Transaction = Transaction(have4, &Ruleset{}, false)
		res.Transaction6 = Transaction(have6, &Ruleset{}, false)
		return res, errors.Join(b4.restore(ctx, res.Transaction), b6.restore(ctx, res.Transaction6))
	}
	opts := req.Options
	if !opts.Reconcile && !opts.Force {
		for _, d := range []struct {
			name       string
			have, want *Ruleset
		}{{v.Name, have4, req.Want.V4}, {v.Name + " (IPv6)", have6, want6}} {
			if !d.have.Empty() && !Equal(d.have, d.want) {
				return res, &DriftError{Variant: d.name, Diff: Diff(d.have, d.want)}
			}
		}
	}
	res.Transaction = Transaction(have4, req.Want.V4, opts.Force)
	if err := b4.restore(ctx, res.Transaction); err != nil {
		return res, err
	}
	res.Transaction6 = Transaction(have6, want6, opts.Force)
	if err := b6.restore(ctx, res.Transaction6); err != nil {
		if undo := b4.restore(ctx, Transaction(req.Want.V4, have4, false)); undo != nil {
			return res, fmt.Errorf("%w; undoing the IPv4 rules failed too: %v", err, undo)
		}
		return res, err
	}
	return res, nil
}

// readV6 reads shunt's ip6tables rules of the variant; none when its save
// command is missing or, for legacy, when the kernel holds no ip6tables
// table at all.
func readV6(ctx context.Context, r Runner, v Variant) (*Ruleset, error) {
	v6 := v.For(capture.IPv6)
	if _, err := exec.LookPath(v6.Save); err != nil {
		return &Ruleset{}, nil
	}
	if lister, ok := r.(legacyLister); ok && v == Legacy {
		if names, err := lister.legacyTables(capture.IPv6); err == nil && names == "" {
			return &Ruleset{}, nil
		}
	}
	text, err := r.Run(ctx, "", v6.Save)
	if err != nil {
		return nil, err
	}
	rs, err := ParseSave(text)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", v6.Save, err)
	}
	return rs, nil
}
