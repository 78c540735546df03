// Package backend is the one seam between a capture.Plan and a network
// namespace's kernel: iptables-legacy, iptables-nft and native nftables
// each render a plan in their own form, read shunt's rules back, and write
// a change in one transaction; what to do with them — nothing, refuse a
// drift, reconcile, clean up — is decided once, here, for all three.
// Installing, checking (doctor), printing (explain, redirect -n), live
// tracing and the capture benchmark all go through it.
package backend

import (
	"context"
	"errors"
	"fmt"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
)

// Names of the backends.
const (
	IptablesLegacy = "iptables-legacy"
	IptablesNFT    = "iptables-nft"
	NFT            = "nft"
)

// Backend holds shunt's capture rules in one network namespace, in one
// form.
type Backend interface {
	// Name is the backend's name (IptablesLegacy, IptablesNFT, NFT, or
	// "iptables" for whatever the system's iptables command is).
	Name() string
	// Render is the rules a plan makes in this backend's form; a nil plan
	// makes none. It touches nothing.
	Render(plan *capture.Plan) (Rules, error)
	// Read is shunt's rules in the kernel now (Empty when there are none).
	Read(ctx context.Context) (Rules, error)
	// Write turns have (what Read returned) into want in one transaction
	// per address family; if a later family fails, the earlier ones are put
	// back. force rewrites what is already as wanted.
	Write(ctx context.Context, have, want Rules, force bool) (Applied, error)
	// Census says what the namespace holds in this backend, shunt's or
	// not: which tables hook nat, and how many rules there are.
	Census(ctx context.Context) (Census, error)
	// Trace makes the connection pkt describes, with the kernel's own
	// tracing on for it, and returns the rules of shunt's chains it
	// matched; Model is where the model's result puts the same connection.
	Trace(ctx context.Context, pkt trace.Packet) ([]Step, error)
	Model(plan *capture.Plan, res trace.Result) ([]Step, error)
}

// Rules is shunt's rules in one backend's form.
type Rules interface {
	// String is the rules as the backend's own tools print them: the
	// iptables-restore input that installs them, or the nft table.
	String() string
	Empty() bool
	Equal(other Rules) bool
	// Diff shows how these rules (the kernel's) differ from want: "-"
	// lines only the kernel has, "+" lines only the plan has.
	Diff(want Rules) string
}

// Applied is what a Write ran: the transactions' text ("" for none), and
// what was wanted but could not be done.
type Applied struct {
	Transaction string
	Warnings    []string
}

// Census is what a namespace holds in one backend, shunt's or not.
type Census struct {
	Summary  string   // "17 nat rules, 19 rules in all", "2 tables with a nat hook"
	NatHooks []string // what hooks nat here: tables or "nat rules"; empty for none
}

// Step is a rule of one of shunt's chains that a connection matched;
// Position counts the chain's rules in the backend's form from 1.
type Step struct {
	Table, Chain string
	Position     int
}

// Options say what to do when shunt's rules are already there.
type Options struct {
	Reconcile bool // replace rules that differ from the plan's
	Force     bool // rewrite them even when they look as wanted
}

// Result is what Sync did.
type Result struct {
	Backend string
	Applied
}

// Changed reports whether anything ran.
func (r Result) Changed() bool { return r.Transaction != "" }

// DriftError says shunt's rules differ from the plan's and were left alone.
type DriftError struct {
	Backend string
	Diff    string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("shunt's rules in %s differ from this configuration (pass --reconcile to replace them):\n%s", e.Backend, e.Diff)
}

// clearer is a backend that removes all of shunt's rules in one step,
// without reading them first.
type clearer interface {
	clear(ctx context.Context) (Applied, error)
}

// IsDrift reports whether err is a DriftError.
func IsDrift(err error) bool {
	var d *DriftError
	return errors.As(err, &d)
}

// Sync makes the backend hold plan's rules (nil plan: none of shunt's). It
// writes nothing when the kernel already holds them, and refuses rules
// that differ from the plan's unless told to reconcile, touching nothing.
func Sync(ctx context.Context, b Backend, plan *capture.Plan, opts Options) (Result, error) {
	res := Result{Backend: b.Name()}
	if c, ok := b.(clearer); ok && plan == nil {
		// Cleanup need not read what it removes.
		var err error
		res.Applied, err = c.clear(ctx)
		return res, err
	}
	want, err := b.Render(plan)
	if err != nil {
		return res, err
	}
	have, err := b.Read(ctx)
	if err != nil {
		return res, err
	}
	switch {
	case have.Empty() && want.Empty():
		return res, nil
	case !opts.Force && have.Equal(want):
		return res, nil
	case !opts.Reconcile && !opts.Force && !have.Empty() && !want.Empty():
		return res, &DriftError{Backend: b.Name(), Diff: have.Diff(want)}
	}
	res.Applied, err = b.Write(ctx, have, want, opts.Force)
	return res, err
}
