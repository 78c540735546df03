package iptables

import (
	"context"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/captest"
)

// noIPv6 is a kernel booted with ipv6.disable=1: iptables works, ip6tables
// does not, and /proc has no if_inet6. It records what ran.
type noIPv6 struct{ ran []string }

func (k *noIPv6) IPv6Enabled() bool { return false }

func (k *noIPv6) Run(_ context.Context, stdin, name string, args ...string) (string, error) {
	k.ran = append(k.ran, name)
	return "", nil
}

// TestDualStackWithoutIPv6 : on a kernel without IPv6, a dual-stack plan
// captures IPv4 alone, touches no ip6tables, and says so.
func TestDualStackWithoutIPv6(t *testing.T) {
	cfg := captest.Seed()
	cfg.DualStack = true
	plan, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := RenderAll(plan)
	if err != nil || want.V6.Empty() {
		t.Fatalf("the plan has no IPv6 rules (%v)", err)
	}
	k := &noIPv6{}
	res, err := Sync(context.Background(), k, SyncRequest{Want: want, Binary: "iptables-nft"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Transaction == "" || res.Transaction6 != "" {
		t.Errorf("IPv4 applied: %v; IPv6 applied: %v", res.Transaction != "", res.Transaction6 != "")
	}
	for _, name := range k.ran {
		if strings.HasPrefix(name, "ip6") {
			t.Errorf("ran %s on a kernel without IPv6", name)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "IPv6 is disabled in this kernel: capturing IPv4 only") {
		t.Errorf("warnings: %q", res.Warnings)
	}
}
