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
	var set *Set
	elements := "" // a set's elements, gathered over nft's wrapped lines
	for n, raw := range strings.Split(listing, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case elements != "":
			elements += " " + line
			if strings.HasSuffix(line, "}") {
				set.Elements, elements = splitElements(elements), ""
			}
		case line == "" || line == "}" && c == nil && set == nil:
		case strings.HasPrefix(line, "table "):
			if line != "table "+Family+" "+TableName+" {" {
				return nil, fmt.Errorf("line %d: %q is not shunt's table", n+1, line)
			}
		case line == "}":
			c, set = nil, nil
		case strings.HasPrefix(line, "set ") && strings.HasSuffix(line, " {"):
			set = &Set{Name: strings.TrimSuffix(strings.TrimPrefix(line, "set "), " {")}
			t.Sets = append(t.Sets, set)
		case set != nil:
			switch {
			case strings.HasPrefix(line, "type "):
				set.Type = strings.TrimPrefix(line, "type ")
			case strings.HasPrefix(line, "comment \""):
				set.Comment = strings.TrimSuffix(strings.TrimPrefix(line, "comment \""), "\"")
			case strings.HasPrefix(line, "elements = {"):
				elements = line
				if strings.HasSuffix(line, "}") {
					set.Elements, elements = splitElements(elements), ""
				}
			case line == "flags interval":
			default:
				return nil, fmt.Errorf("line %d: %q is not what shunt's sets hold", n+1, line)
			}
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

// splitElements reads "elements = { a, b, c }".
func splitElements(text string) []string {
	text = strings.TrimSuffix(strings.TrimPrefix(text, "elements = {"), "}")
	var out []string
	for _, e := range strings.Split(text, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// Equal reports whether two tables hold the same sets, chains and rules;
// the order of the sets and chains does not matter (nft lists them as they
// were made), the order of a chain's rules does.
func Equal(a, b *Table) bool {
	return a.Comment == b.Comment && slices.Equal(a.lines(true), b.lines(true))
}

// lines are the table's contents as comparable lines, sorted by set and
// chain name; numbered gives each rule its position, for Equal (Diff
// leaves them out, so that one inserted rule shows as one line).
func (t *Table) lines(numbered bool) []string {
	var out []string
	sets := slices.Clone(t.Sets)
	slices.SortFunc(sets, func(x, y *Set) int { return strings.Compare(x.Name, y.Name) })
	for _, s := range sets {
		out = append(out, fmt.Sprintf("set %s type %s comment %q", s.Name, s.Type, s.Comment))
		for _, e := range s.Elements {
			out = append(out, fmt.Sprintf("set %s element %s", s.Name, e))
		}
	}
	chains := slices.Clone(t.Chains)
	slices.SortFunc(chains, func(x, y *Chain) int { return strings.Compare(x.Name, y.Name) })
	for _, c := range chains {
		out = append(out, fmt.Sprintf("chain %s comment %q", c.Name, c.Comment))
		if c.Header != "" {
			out = append(out, fmt.Sprintf("chain %s %s", c.Name, c.Header))
		}
		for i, r := range c.Rules {
			if numbered {
				out = append(out, fmt.Sprintf("chain %s rule %d: %s", c.Name, i+1, r))
			} else {
				out = append(out, fmt.Sprintf("chain %s: %s", c.Name, r))
			}
		}
	}
	return out
}

// Chain is the table's chain of that name, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Empty reports whether the table holds nothing: shunt's table is absent.
func (t *Table) Empty() bool {
	return t == nil || t.Comment == "" && len(t.Chains) == 0 && len(t.Sets) == 0
}

// Diff shows how have differs from want: "-" for what only the kernel
// has, "+" for what only the plan has.
func Diff(have, want *Table) string {
	var b strings.Builder
	extra, missing := multisetDiff(have.lines(false), want.lines(false))
	for _, l := range extra {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	for _, l := range missing {
		fmt.Fprintf(&b, "+ %s\n", l)
	}
	switch {
	case b.Len() == 0 && have.Comment != want.Comment:
		fmt.Fprintf(&b, "- table comment %q\n+ table comment %q\n", have.Comment, want.Comment)
	case b.Len() == 0 && !Equal(have, want):
		b.WriteString("  the same rules, in a different order\n")
	}
	return b.String()
}

// multisetDiff returns what have holds beyond want, and what want holds
// beyond have, counting repeats.
func multisetDiff(have, want []string) (extra, missing []string) {
	count := map[string]int{}
	for _, s := range want {
		count[s]++
	}
	for _, s := range have {
		if count[s] > 0 {
			count[s]--
		} else {
			extra = append(extra, s)
		}
	}
	for _, s := range want {
		if count[s] > 0 {
			count[s]--
			missing = append(missing, s)
		}
	}
	return extra, missing
}

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
	return nftStdin(ctx, path, "", args...)
}

// nftStdin is nft with stdin.
func nftStdin(ctx context.Context, path, stdin string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := netns.Do(path, func() error {
		cmd := exec.CommandContext(ctx, "nft", args...)
		cmd.Stdin = strings.NewReader(stdin)
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

// Run makes one nft transaction in the namespace at path (the caller's
// when empty) from what fill adds to a knftables transaction, and returns
// its text. It runs `nft -f -` once: knftables.New would first run
// `nft --version` and an `nft --check` (a whole transaction, aborted),
// which triple a one-shot command's time in a fresh namespace.
func Run(ctx context.Context, path string, fill func(*knftables.Transaction)) (string, error) {
	tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
	fill(tx)
	text := tx.String()
	if i := strings.Index(text, "# ERROR: "); i >= 0 {
		return text, errors.New(strings.TrimSpace(text[i+len("# ERROR: "):]))
	}
	_, err := nftStdin(ctx, path, text, "-f", "-")
	return text, err
}

// Delete deletes shunt's table in the namespace at path, in one nft run;
// it reports whether there was one.
func Delete(ctx context.Context, path string) (bool, error) {
	_, err := nft(ctx, path, "delete", "table", Family, TableName)
	if errors.Is(err, errNoTable) {
		return false, nil
	}
	return err == nil, err
}

// Build adds the table, its sets, chains and rules to a transaction.
func Build(tx *knftables.Transaction, t *Table) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(t.Comment)})
	for _, s := range t.Sets {
		tx.Add(&knftables.Set{Name: s.Name, Type: s.Type, Flags: []knftables.SetFlag{knftables.IntervalFlag},
			Comment: knftables.PtrTo(s.Comment)})
		for _, e := range s.Elements {
			tx.Add(&knftables.Element{Set: s.Name, Key: []string{e}})
		}
	}
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

// Ruleset is `nft list ruleset` in the namespace at path: every table,
// shunt's or not.
func Ruleset(ctx context.Context, path string) (string, error) {
	return nft(ctx, path, "list", "ruleset")
}

// NativeNatTables finds the tables of an `nft list ruleset` listing, not
// made by iptables-nft, with a chain on a nat hook (shunt's own among
// them). iptables-nft's tables are the xtables names in the ip and ip6
// families.
func NativeNatTables(ruleset string) []string {
	var out []string
	table := ""
	for _, line := range strings.Split(ruleset, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table = f[1] + " " + f[2]
			if (f[1] == "ip" || f[1] == "ip6") && isXtablesName(f[2]) {
				table = ""
			}
		case table != "" && strings.Contains(line, "type nat hook"):
			if len(out) == 0 || out[len(out)-1] != table {
				out = append(out, table)
			}
		}
	}
	return out
}

func isXtablesName(name string) bool {
	switch name {
	case "filter", "nat", "mangle", "raw", "security":
		return true
	}
	return false
}
