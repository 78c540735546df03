package backend

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/livetrace"
	"github.com/shunt-dev/shunt/capture/nftables"
	"github.com/shunt-dev/shunt/capture/trace"
)

// Nftables is shunt's own nftables table, "inet shunt", which holds both
// families; one nft transaction changes it.
type Nftables struct {
	NetNS  string
	kernel nftKernel
}

// nftKernel is where the nft backend reads and writes shunt's table: the
// namespace's, through nft; or knftables' Fake, in tests without root.
type nftKernel interface {
	read(ctx context.Context) (*nftables.Table, error) // nil: no table
	run(ctx context.Context, fill func(*knftables.Transaction)) (string, error)
	ruleset(ctx context.Context) (string, error) // `nft list ruleset`
	delete(ctx context.Context) (bool, error)    // shunt's table, if there is one
}

// NewNftables is the nft backend in the namespace at netns (the caller's
// when "").
func NewNftables(netns string) *Nftables { return &Nftables{NetNS: netns, kernel: realNFT{netns}} }

// NewNftablesFake is the nft backend over knftables' Fake (made with
// knftables.NewFake(knftables.InetFamily, nftables.TableName)): the
// decisions, without root or a kernel.
func NewNftablesFake(fake *knftables.Fake) *Nftables { return &Nftables{kernel: fakeNFT{fake}} }

// Name implements Backend.
func (b *Nftables) Name() string { return NFT }

type nftRules struct{ t *nftables.Table }

func (r nftRules) String() string {
	if r.t.Empty() {
		return ""
	}
	return r.t.String()
}
func (r nftRules) Empty() bool            { return r.t.Empty() }
func (r nftRules) Equal(o Rules) bool     { return nftables.Equal(r.t, o.(nftRules).t) }
func (r nftRules) Diff(want Rules) string { return nftables.Diff(r.t, want.(nftRules).t) }

// Render implements Backend.
func (b *Nftables) Render(plan *capture.Plan) (Rules, error) {
	if plan == nil {
		return nftRules{&nftables.Table{}}, nil
	}
	t, err := nftables.Render(plan)
	return nftRules{t}, err
}

// Read implements Backend.
func (b *Nftables) Read(ctx context.Context) (Rules, error) {
	t, err := b.kernel.read(ctx)
	if t == nil {
		t = &nftables.Table{}
	}
	return nftRules{t}, err
}

// Write implements Backend: the table is deleted and made anew within one
// transaction, so a connection never sees a state between the old rules
// and the new ones; on any error nothing changed.
func (b *Nftables) Write(ctx context.Context, have, want Rules, _ bool) (Applied, error) {
	h, w := have.(nftRules).t, want.(nftRules).t
	text, err := b.kernel.run(ctx, func(tx *knftables.Transaction) {
		if !h.Empty() {
			tx.Delete(&knftables.Table{})
		}
		if !w.Empty() {
			nftables.Build(tx, w)
		}
	})
	if err != nil {
		return Applied{}, fmt.Errorf("applying shunt's nftables table (nothing was changed): %w", err)
	}
	return Applied{Transaction: text}, nil
}

// clear deletes shunt's table, if there is one, without reading it: one
// nft run.
func (b *Nftables) clear(ctx context.Context) (Applied, error) {
	deleted, err := b.kernel.delete(ctx)
	if err != nil {
		return Applied{}, fmt.Errorf("deleting shunt's nftables table: %w", err)
	}
	if !deleted {
		return Applied{}, nil
	}
	return Applied{Transaction: "delete table " + nftables.Family + " " + nftables.TableName + "\n"}, nil
}

// Census implements Backend: the tables, not iptables-nft's, that hook
// nat (shunt's own among them).
func (b *Nftables) Census(ctx context.Context) (Census, error) {
	out, err := b.kernel.ruleset(ctx)
	if err != nil {
		return Census{}, err
	}
	nat := nftables.NativeNatTables(out)
	return Census{Summary: fmt.Sprintf("%d native nat tables", len(nat)), NatHooks: nat}, nil
}

// Trace implements Backend: a trace rule in a chain of shunt's table that
// runs first, read from nft monitor trace.
func (b *Nftables) Trace(ctx context.Context, pkt trace.Packet) ([]Step, error) {
	steps, err := livetrace.RunNFT(ctx, b.NetNS, pkt)
	return fromLive(steps), err
}

// Model implements Backend: where the table's rendering put each plan
// rule the model matched (a run of ranges shares one set rule).
func (b *Nftables) Model(plan *capture.Plan, res trace.Result) ([]Step, error) {
	t, err := nftables.Render(plan)
	if err != nil {
		return nil, err
	}
	var out []Step
	for _, s := range res.Matched() {
		pos := t.Positions[s.Chain]
		if s.Index < 1 || s.Index > len(pos) {
			return nil, fmt.Errorf("no rule %d in %s", s.Index, s.Chain)
		}
		out = append(out, Step{Table: nftables.Family + " " + nftables.TableName, Chain: s.Chain, Position: pos[s.Index-1]})
	}
	return out, nil
}

// realNFT is a namespace's nftables, through the nft command.
type realNFT struct{ netns string }

func (k realNFT) read(ctx context.Context) (*nftables.Table, error) {
	return nftables.Read(ctx, k.netns)
}
func (k realNFT) run(ctx context.Context, fill func(*knftables.Transaction)) (string, error) {
	return nftables.Run(ctx, k.netns, fill)
}
func (k realNFT) ruleset(ctx context.Context) (string, error) { return nftables.Ruleset(ctx, k.netns) }
func (k realNFT) delete(ctx context.Context) (bool, error)    { return nftables.Delete(ctx, k.netns) }

// fakeNFT is knftables' Fake: its table read back into shunt's form.
type fakeNFT struct{ fake *knftables.Fake }

func (k fakeNFT) run(ctx context.Context, fill func(*knftables.Transaction)) (string, error) {
	tx := k.fake.NewTransaction()
	fill(tx)
	return tx.String(), k.fake.Run(ctx, tx)
}

func (k fakeNFT) ruleset(context.Context) (string, error) { return "", nil }

func (k fakeNFT) delete(ctx context.Context) (bool, error) {
	if k.fake.Table == nil {
		return false, nil
	}
	tx := k.fake.NewTransaction()
	tx.Delete(&knftables.Table{})
	return true, k.fake.Run(ctx, tx)
}

func (k fakeNFT) read(context.Context) (*nftables.Table, error) {
	ft := k.fake.Table
	if ft == nil {
		return nil, nil
	}
	t := &nftables.Table{}
	if ft.Comment != nil {
		t.Comment = *ft.Comment
	}
	for _, name := range slices.Sorted(maps.Keys(ft.Sets)) {
		fs := ft.Sets[name]
		set := &nftables.Set{Name: name, Type: fs.Type}
		if fs.Comment != nil {
			set.Comment = *fs.Comment
		}
		for _, e := range fs.Elements {
			set.Elements = append(set.Elements, strings.Join(e.Key, " . "))
		}
		t.Sets = append(t.Sets, set)
	}
	for _, name := range slices.Sorted(maps.Keys(ft.Chains)) {
		fc := ft.Chains[name]
		c := &nftables.Chain{Name: name}
		if fc.Comment != nil {
			c.Comment = *fc.Comment
		}
		if fc.Type != nil {
			c.Header = fmt.Sprintf("type %s hook %s priority %s; policy accept;", *fc.Type, *fc.Hook, *fc.Priority)
		}
		for _, r := range fc.Rules {
			line := r.Rule
			if r.Comment != nil {
				line += ` comment "` + *r.Comment + `"`
			}
			c.Rules = append(c.Rules, line)
		}
		t.Chains = append(t.Chains, c)
	}
	return t, nil
}
