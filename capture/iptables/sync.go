package iptables

import (
	"context"
	"fmt"
	"time"
)

// SyncRequest says what Sync should make the kernel hold.
type SyncRequest struct {
	// Want is the ruleset to hold; nil removes shunt's rules (cleanup).
	Want *Ruleset
	// Binary forces a variant by istio-iptables' name for it; "" detects.
	Binary   string
	Options  ApplyOptions
	LockWait time.Duration
}

// Sync reads the current network namespace's rules once, picks the variant,
// and applies or cleans up in one iptables-restore transaction, or none when
// the kernel already holds what is wanted.
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
	have, err := ParseSave(text)
	if err != nil {
		return Result{}, fmt.Errorf("reading %s: %w", v.Save, err)
	}
	b := &Backend{Runner: r, Variant: v, LockWait: req.LockWait}
	if req.Want == nil {
		return b.Cleanup(ctx, have)
	}
	return b.Apply(ctx, have, req.Want, req.Options)
}
