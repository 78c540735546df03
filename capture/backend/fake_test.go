package backend_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/nftables"
	"github.com/shunt-dev/shunt/internal/captest"
)

func plan(t *testing.T, mutate func(*capture.Config)) *capture.Plan {
	t.Helper()
	cfg := captest.Seed()
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNftDecisions runs the decisions on knftables' Fake, without root:
// apply, a re-apply that runs nothing, a different plan refused with the
// fake untouched, reconcile in one transaction, cleanup, and a cleanup of
// nothing that runs nothing.
func TestNftDecisions(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, nftables.TableName)
	b := backend.NewNftablesFake(fake)
	a := plan(t, nil)
	other := plan(t, func(c *capture.Config) {
		c.OutboundExcludePorts = []capture.PortRange{capture.Port(25)}
		for i := range 300 {
			c.OutboundExcludeCIDRs = append(c.OutboundExcludeCIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i / 200), byte(i % 200)}), 32))
		}
	})

	res, err := backend.Sync(ctx, b, a, backend.Options{})
	if err != nil || !res.Changed() || !strings.Contains(res.Transaction, "add table inet shunt") {
		t.Fatalf("first apply: %v %q", err, res.Transaction)
	}
	applied := fake.Dump()
	if res, err := backend.Sync(ctx, b, a, backend.Options{}); err != nil || res.Changed() {
		t.Errorf("re-apply ran %q (%v)", res.Transaction, err)
	}
	_, err = backend.Sync(ctx, b, other, backend.Options{})
	if !backend.IsDrift(err) || !strings.Contains(err.Error(), "dport 25") {
		t.Fatalf("another plan without reconcile: %v", err)
	}
	if fake.Dump() != applied {
		t.Error("a refused apply changed the table")
	}
	res, err = backend.Sync(ctx, b, other, backend.Options{Reconcile: true})
	if err != nil || !strings.Contains(res.Transaction, "delete table inet shunt") {
		t.Fatalf("reconcile: %v %q", err, res.Transaction)
	}
	if have, _ := b.Read(ctx); !have.Equal(mustRender(t, b, other)) {
		t.Error("after reconcile the table is not the new plan's")
	}
	if set := fake.Table.Sets["SHUNT_OUTPUT_12_daddr4"]; set == nil || len(set.Elements) != 2 {
		t.Errorf("300 excluded addresses are not one set of 2 merged ranges:\n%s", fake.Dump())
	}
	if res, err := backend.Sync(ctx, b, other, backend.Options{Force: true}); err != nil || !res.Changed() {
		t.Errorf("force rewrote nothing (%v)", err)
	}
	if res, err := backend.Sync(ctx, b, nil, backend.Options{}); err != nil || !res.Changed() {
		t.Fatalf("cleanup: %v", err)
	}
	if fake.Table != nil {
		t.Errorf("cleanup left:\n%s", fake.Dump())
	}
	if res, err := backend.Sync(ctx, b, nil, backend.Options{}); err != nil || res.Changed() {
		t.Errorf("a cleanup of nothing ran %q (%v)", res.Transaction, err)
	}
}

func mustRender(t *testing.T, b backend.Backend, p *capture.Plan) backend.Rules {
	t.Helper()
	r, err := b.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// kernelNoIPv6 is an iptables kernel booted with ipv6.disable=1: iptables
// works, ip6tables does not, /proc has no if_inet6. It keeps the IPv4
// rules iptables-restore is given, and records every command.
type kernelNoIPv6 struct {
	ran  []string
	save string
}

func (k *kernelNoIPv6) IPv6Enabled() bool { return false }

func (k *kernelNoIPv6) Run(_ context.Context, stdin, name string, args ...string) (string, error) {
	k.ran = append(k.ran, name)
	if strings.HasSuffix(name, "-restore") {
		k.save = stdin // a fresh table each time: enough for these decisions
	}
	if strings.HasSuffix(name, "-save") {
		return k.save, nil
	}
	return "", nil
}

// TestIptablesDualStackWithoutIPv6: on a kernel without IPv6, a dual-stack
// plan captures IPv4 alone, touches no ip6tables, and says so.
func TestIptablesDualStackWithoutIPv6(t *testing.T) {
	k := &kernelNoIPv6{}
	b := &backend.Iptables{Runner: k, Variant: iptables.NFT}
	p := plan(t, func(c *capture.Config) {
		c.DualStack = true
		c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00::/8")}
	})
	res, err := backend.Sync(context.Background(), b, p, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Transaction, "# iptables-nft-restore") || strings.Contains(res.Transaction, "ip6tables") {
		t.Errorf("transaction:\n%s", res.Transaction)
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
