// Package install puts a capture.Plan into a network namespace's kernel, or
// takes it out: the rules through one backend (iptables-legacy,
// iptables-nft, or native nftables) and the policy routing TPROXY needs.
package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/route"
)

// Request says what to make the kernel hold.
type Request struct {
	Plan *capture.Plan
	// Cleanup removes shunt's rules, and the Plan's routes, instead.
	Cleanup bool
	// NativeNFT uses shunt's own nftables table; otherwise iptables, the
	// variant forced by IptablesBinary or else detected.
	NativeNFT      bool
	IptablesBinary string
	NetNS          string // the namespace's path; "" for the caller's
	Reconcile      bool
	Force          bool
	LockWait       time.Duration
}

// Result says what was done.
type Result struct {
	Backend string // "nft", "iptables-legacy", "iptables-nft" or "iptables"
	Changed bool
	// Transaction is what ran: iptables-restore input per family, or the
	// nft transaction.
	Transaction string
	Warnings    []string
}

// Sync applies or cleans up. Routes go in before the rules that need
// them, and come out again if the rules fail; on cleanup, rules go first.
// Bad input and drift are refused before anything is touched.
func Sync(ctx context.Context, req Request) (Result, error) {
	b, err := backend.Choose(ctx, backend.Choice{NetNS: req.NetNS, NativeNFT: req.NativeNFT,
		Binary: req.IptablesBinary, LockWait: req.LockWait})
	if err != nil {
		return Result{}, err
	}
	opts := backend.Options{Reconcile: req.Reconcile, Force: req.Force}
	skip6 := !iptables.Exec{NetNS: req.NetNS}.IPv6Enabled()
	if req.Cleanup {
		res, err := syncRules(ctx, b, nil, opts)
		if err != nil {
			return res, err
		}
		return res, route.Remove(req.NetNS)
	}
	added, err := route.Apply(req.NetNS, req.Plan, skip6)
	if err != nil {
		return Result{}, errors.Join(fmt.Errorf("installing policy routing (no rules were changed): %w", err),
			route.Undo(req.NetNS, added))
	}
	res, err := syncRules(ctx, b, req.Plan, opts)
	if err != nil {
		return res, errors.Join(err, route.Undo(req.NetNS, added))
	}
	res.Changed = res.Changed || len(added) > 0
	if skip6 && req.NativeNFT && req.Plan.HasFamily(capture.IPv6) {
		res.Warnings = append(res.Warnings, "IPv6 is disabled in this kernel: the table's IPv6 rules see no traffic, "+
			"and no IPv6 policy route or ::6 was added")
	}
	return res, nil
}

func syncRules(ctx context.Context, b backend.Backend, plan *capture.Plan, opts backend.Options) (Result, error) {
	r, err := backend.Sync(ctx, b, plan, opts)
	return Result{Backend: r.Backend, Changed: r.Changed(), Transaction: r.Transaction, Warnings: r.Warnings}, err
}

// IsDrift reports whether err says shunt's rules differ from the plan and
// were left alone (a usage error: --reconcile replaces them).
func IsDrift(err error) bool { return backend.IsDrift(err) }
