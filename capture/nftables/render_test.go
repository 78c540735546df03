package nftables_test

import (
	"sigs.k8s.io/knftables"

	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/nftables"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

func goldenTable(t *testing.T, mutate func(*capture.Config)) *nftables.Table {
	t.Helper()
	cfg := captest.Seed()
	mutate(&cfg)
	plan, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	table, err := nftables.Render(plan)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// TestRenderGolden renders every golden configuration (the iptables
// backend's, one per axis) as shunt's nft table.
func TestRenderGolden(t *testing.T) {
	for _, tc := range captest.GoldenCases {
		t.Run(tc.Name, func(t *testing.T) {
			got := goldenTable(t, tc.Mutate).String()
			captest.Golden(t, filepath.Join("testdata", tc.Name+".golden"), got, *update)
			parsed, err := nftables.Parse(got)
			if err != nil || !nftables.Equal(parsed, goldenTable(t, tc.Mutate)) {
				t.Errorf("the rendering does not parse back to itself (%v)", err)
			}
		})
	}
}

// TestKernelListsWhatRenderMakes applies every golden table to a real
// kernel, one after the other, and checks that `nft list table` prints
// exactly the rendering, so that re-applying is a no-op.
func TestKernelListsWhatRenderMakes(t *testing.T) {
	testnet.RequireRoot(t, "nft")
	ns := testnet.NewNS(t, "nftgold")
	ctx := context.Background()
	write := func(want *nftables.Table) {
		t.Helper()
		have, err := nftables.Read(ctx, ns.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nftables.Run(ctx, ns.Path, func(tx *knftables.Transaction) {
			if have != nil {
				tx.Delete(&knftables.Table{})
			}
			if want != nil {
				nftables.Build(tx, want)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range captest.GoldenCases {
		want := goldenTable(t, tc.Mutate)
		write(want)
		have, err := nftables.Read(ctx, ns.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !nftables.Equal(have, want) || have.String() != want.String() {
			t.Errorf("%s: the kernel lists something else:\n%s", tc.Name, nftables.Diff(have, want))
		}
	}
	write(nil)
	if have, err := nftables.Read(ctx, ns.Path); have != nil || err != nil {
		t.Errorf("cleanup left %v (%v)", have, err)
	}
}

func TestRenderRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		rule capture.Rule
		want string
	}{
		"ports without protocol": {capture.Rule{Conds: []capture.Cond{capture.DestPorts{Ports: captest.Ports(80)}}, Verdict: capture.Return{}}, "without a protocol"},
		"unknown verdict":        {capture.Rule{Verdict: nil}, "no nft form"},
		"quote in purpose":       {capture.Rule{Verdict: capture.Return{}, Purpose: `a "b"`}, "cannot be an nft comment"},
		"TPROXY without family":  {capture.Rule{Conds: []capture.Cond{capture.Proto{Name: "tcp"}}, Verdict: capture.TProxy{Port: 1, Mark: 1}}, "needs an address"},
		"mixed families": {capture.Rule{Conds: []capture.Cond{capture.FamilyIs{Family: capture.IPv6},
			capture.Dest{Prefix: captest.Prefixes("10.0.0.0/8")[0]}}, Verdict: capture.Return{}}, "mixes IPv4 and IPv6"},
	} {
		if _, err := nftables.RenderRule(c.rule); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}
