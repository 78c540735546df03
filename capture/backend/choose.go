package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/capture/iptables"
)

// Choice says which backend to act through.
type Choice struct {
	NetNS     string // the namespace's path; "" for the caller's
	NativeNFT bool   // shunt's own nftables table
	// Binary forces an iptables variant by istio-iptables' name for it
	// (iptables, iptables-legacy, iptables-nft); "" detects one.
	Binary   string
	LockWait time.Duration
}

// Choose is the backend to act through: native nftables when asked; the
// forced iptables variant; or the variant detected in the namespace (the
// one holding shunt's rules, else the one holding any rules, else the
// system's; see iptables.Detect).
func Choose(ctx context.Context, c Choice) (Backend, error) {
	if c.NativeNFT {
		return NewNftables(c.NetNS), nil
	}
	if c.Binary != "" {
		v, err := iptables.VariantByBinary(c.Binary)
		if err != nil {
			return nil, err
		}
		return NewIptables(c.NetNS, v, c.LockWait), nil
	}
	v, save, err := iptables.Detect(ctx, iptables.Exec{NetNS: c.NetNS})
	if err != nil {
		return nil, err
	}
	b := NewIptables(c.NetNS, v, c.LockWait)
	b.save4 = save // Detect read it; Read need not again
	return b, nil
}

// All is every backend shunt's rules can be in, for looking at a
// namespace: iptables-legacy, iptables-nft and native nftables.
func All(netns string) []Backend {
	return []Backend{NewIptables(netns, iptables.Legacy, 0), NewIptables(netns, iptables.NFT, 0), NewNftables(netns)}
}

// Printer is the backend whose rendering a format prints: "iptables"
// (iptables-restore input, the same for both variants) or "nft".
func Printer(format string) Backend {
	if format == "nft" {
		return NewNftables("")
	}
	return NewIptables("", iptables.System, 0)
}

// Holding is the backend that holds shunt's rules in the namespace, and
// the rules; an error when none does, or when more than one does.
func Holding(ctx context.Context, netns string) (Backend, Rules, error) {
	var found []Backend
	var rules []Rules
	for _, b := range All(netns) {
		r, err := b.Read(ctx)
		if err != nil || r.Empty() {
			continue
		}
		found, rules = append(found, b), append(rules, r)
	}
	switch len(found) {
	case 0:
		return nil, nil, errors.New("none of shunt's rules are in the namespace (iptables-legacy, iptables-nft or nft)")
	case 1:
		return found[0], rules[0], nil
	}
	names := make([]string, len(found))
	for i, b := range found {
		names[i] = b.Name()
	}
	return nil, nil, fmt.Errorf("shunt's rules are in %s at once: keep one", strings.Join(names, " and "))
}
