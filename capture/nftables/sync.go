package nftables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/shunt-dev/shunt/netns"
)

// Parse reads `nft list table inet shunt` output.
func Parse(listing string) (*Table, error) {
	t := &Table{}
	var c *Chain
	for n, raw := range strings.Split(listing, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || line == "}" && c == nil:
		case strings.HasPrefix(line, "table "):
			if line != "table "+Family+" "+TableName+" {" {
				return nil, fmt.Errorf("line %d: %q is not shunt's table", n+1, line)
			}
		case line == "}":
			c = nil
		case strings.HasPrefix(line, "chain ") && strings.HasSuffix(line, " {"):
			c = &Chain{Name: strings.TrimSuffix(strings.TrimPrefix(line, "chain "), " {")}
			t.Chains = append(t.Chains, c)
		case strings.HasPrefix(line, "comment \""):
			comment := strings.TrimSuffix(strings.TrimPrefix(line, "comment \""), "\"")
			if c == nil {
				t.Comment = comment
			} else {
				c.Comment = comment
			}
		case c == nil:
			return nil, fmt.Errorf("line %d: %q is outside a chain", n+1, line)
		case strings.HasPrefix(line, "type "):
			c.Header = line
		default:
			c.Rules = append(c.Rules, line)
		}
	}
	return t, nil
}

// Equal reports whether two tables hold the same chains and rules.
func Equal(a, b *Table) bool { return a.String() == b.String() }

// Diff shows, line by line, how have differs from want: "-" for a line
// only the kernel has, "+" for one only the plan has.
func Diff(have, want *Table) string {
	h, w := strings.Split(have.String(), "\n"), strings.Split(want.String(), "\n")
	var b strings.Builder
	for _, l := range h {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "- %s\n", strings.TrimSpace(l))
		}
	}
	for _, l := range w {
		if !slices.Contains(h, l) {
			fmt.Fprintf(&b, "+ %s\n", strings.TrimSpace(l))
		}
	}
	if b.Len() == 0 {
		return "  the same rules, in a different order\n"
	}
	return b.String()
}

// DriftError says shunt's table differs from the wanted one and the caller
// did not ask to replace it.
type DriftError struct{ Diff string }

func (e *DriftError) Error() string {
	return "shunt's nftables table differs from this configuration (pass --reconcile to replace it):\n" + e.Diff
}

// Options say what to do when shunt's table is already there.
type Options struct {
	Reconcile bool // replace a table that differs
	Force     bool // rewrite it even when it looks as wanted
}

// Result says what Sync did: Transaction is the nft input that ran, ""
// when the kernel already held what was wanted.
type Result struct{ Transaction string }

// Changed reports whether anything was run.
func (r Result) Changed() bool { return r.Transaction != "" }

// Read returns shunt's table in the network namespace at path (the
// caller's when empty), or nil when there is none.
func Read(ctx context.Context, path string) (*Table, error) {
	out, err := nft(ctx, path, "list", "table", Family, TableName)
	if errors.Is(err, errNoTable) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return Parse(out)
}

var errNoTable = errors.New("no such table")

// nft runs the nft command in the namespace at path and returns its output.
func nft(ctx context.Context, path string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := netns.Do(path, func() error {
		cmd := exec.CommandContext(ctx, "nft", args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		return cmd.Run()
	})
	if err != nil {
		if strings.Contains(errb.String(), "No such file or directory") {
			err = errors.Join(err, errNoTable)
		}
		return "", fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// exists returns an empty Table when shunt's table is there, else nil.
func exists(ctx context.Context, path string) (*Table, error) {
	out, err := nft(ctx, path, "list", "tables", Family)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "table "+Family+" "+TableName {
			return &Table{}, nil
		}
	}
	return nil, nil
}

// Sync makes the namespace at path hold want (nil: no shunt table) in one
// nft transaction: the table is deleted and made anew within it, so a
// connection never sees a state between the old rules and the new ones.
func Sync(ctx context.Context, path string, want *Table, opts Options) (Result, error) {
	var have *Table
	var err error
	if want == nil {
		have, err = exists(ctx, path) // cleanup need not read a big table
	} else {
		have, err = Read(ctx, path)
	}
	if err != nil {
		return Result{}, err
	}
	switch {
	case want == nil && have == nil:
		return Result{}, nil
	case want != nil && have != nil && Equal(have, want) && !opts.Force:
		return Result{}, nil
	case want != nil && have != nil && !opts.Reconcile && !opts.Force:
		return Result{}, &DriftError{Diff: Diff(have, want)}
	}
	var res Result
	err = netns.Do(path, func() error {
		nft, err := knftables.New(knftables.InetFamily, TableName)
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		if have != nil {
			tx.Delete(&knftables.Table{})
		}
		if want != nil {
			build(tx, want)
		}
		res.Transaction = tx.String()
		return nft.Run(ctx, tx)
	})
	if err != nil {
		return Result{}, fmt.Errorf("applying shunt's nftables table (nothing was changed): %w", err)
	}
	return res, nil
}

// build adds the table, its chains and rules to a transaction.
func build(tx *knftables.Transaction, t *Table) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(t.Comment)})
	for _, c := range t.Chains {
		ch := &knftables.Chain{Name: c.Name, Comment: knftables.PtrTo(c.Comment)}
		if c.Header != "" {
			// "type nat hook output priority -100; policy accept;"
			f := strings.Fields(c.Header)
			typ, hook, prio := f[1], f[3], strings.TrimSuffix(f[5], ";")
			ch.Type = knftables.PtrTo(knftables.BaseChainType(typ))
			ch.Hook = knftables.PtrTo(knftables.BaseChainHook(hook))
			ch.Priority = knftables.PtrTo(knftables.BaseChainPriority(prio))
		}
		tx.Add(ch)
	}
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			body, comment, _ := strings.Cut(r, ` comment "`)
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: body, Comment: knftables.PtrTo(strings.TrimSuffix(comment, `"`))})
		}
	}
}
