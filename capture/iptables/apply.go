package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/netns"
)

// Runner runs one program with the given standard input and returns its
// standard output. It is the only way this package touches the kernel.
type Runner interface {
	Run(ctx context.Context, stdin, name string, args ...string) (string, error)
}

// Exec runs programs for real, inside the network namespace at NetNS (the
// caller's when empty). It is safe for concurrent use: each run enters the
// namespace on its own locked thread, and the program inherits it.
type Exec struct {
	NetNS string
}

// Run implements Runner. Its error carries the program's standard error.
func (e Exec) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := netns.Do(e.NetNS, cmd.Run); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// LegacyTables lists the legacy iptables (or ip6tables) tables the kernel
// holds in the runner's namespace; an empty list means the legacy save
// would print nothing, so it need not run.
func (e Exec) LegacyTables(family capture.Family) (string, error) {
	file := "/proc/thread-self/net/ip_tables_names"
	if family == capture.IPv6 {
		file = "/proc/thread-self/net/ip6_tables_names"
	}
	var names []byte
	err := netns.Do(e.NetNS, func() (err error) {
		names, err = os.ReadFile(file)
		return err
	})
	return strings.TrimSpace(string(names)), err
}

// IPv6Enabled reports whether the kernel has IPv6 in the runner's
// namespace: a kernel booted with ipv6.disable=1 has no if_inet6, and
// ip6tables cannot work there.
func (e Exec) IPv6Enabled() bool {
	err := netns.Do(e.NetNS, func() error {
		_, err := os.Stat("/proc/thread-self/net/if_inet6")
		return err
	})
	return err == nil
}

// Variant is one iptables implementation: the legacy kernel tables or the
// nf_tables-backed compatibility layer. They keep separate rules, so shunt
// must apply, compare and clean up through the one the pod's rules are in.
type Variant struct {
	Name    string // "legacy", "nft", or "iptables" for whatever the system links
	Save    string
	Restore string
}

// The variants shunt drives.
var (
	Legacy = Variant{"legacy", "iptables-legacy-save", "iptables-legacy-restore"}
	NFT    = Variant{"nft", "iptables-nft-save", "iptables-nft-restore"}
	System = Variant{"iptables", "iptables-save", "iptables-restore"}
)

// For is the variant's commands for a family: ip6tables' for IPv6.
func (v Variant) For(family capture.Family) Variant {
	if family == capture.IPv6 {
		v.Save = "ip6" + v.Save[2:]
		v.Restore = "ip6" + v.Restore[2:]
	}
	return v
}

// VariantByBinary maps an istio-iptables --force-iptables-binary value to a
// variant.
func VariantByBinary(name string) (Variant, error) {
	switch name {
	case "iptables":
		return System, nil
	case "iptables-legacy":
		return Legacy, nil
	case "iptables-nft":
		return NFT, nil
	case "ip6tables":
		return System, nil
	case "ip6tables-legacy":
		return Legacy, nil
	case "ip6tables-nft":
		return NFT, nil
	}
	return Variant{}, fmt.Errorf("%q is not iptables, iptables-legacy or iptables-nft", name)
}

// Restorer runs iptables-restore through one variant.
type Restorer struct {
	Runner  Runner
	Variant Variant
	// LockWait is how long iptables-restore waits for the xtables lock that
	// other iptables users (kubelet, kube-proxy, another init step) hold.
	LockWait time.Duration
}

// Detect picks the variant to use in the current network namespace: the one
// already holding shunt's rules; else the one holding any rules (a pod's
// rules must all live in one, or half of them are ignored); else the one the
// system's iptables command is. It returns the variant's current rules too,
// so the caller does not read them twice.
func Detect(ctx context.Context, r Runner) (Variant, string, error) {
	type found struct {
		v     Variant
		save  string
		shunt bool
		rules int
	}
	// Both saves run at once: reading the pod's rules is most of a no-op
	// re-apply's time.
	candidates := []Variant{Legacy, NFT}
	texts := make([]string, len(candidates))
	runErrs := make([]error, len(candidates))
	var wg sync.WaitGroup
	for i, v := range candidates {
		if _, err := exec.LookPath(v.Save); err != nil {
			runErrs[i] = err
			continue
		}
		if lister, ok := r.(legacyLister); ok && v == Legacy {
			if names, err := lister.LegacyTables(capture.IPv4); err == nil && names == "" {
				continue // no legacy table in this namespace: its save is empty
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			texts[i], runErrs[i] = r.Run(ctx, "", v.Save)
		}()
	}
	wg.Wait()
	var seen []found
	for i, v := range candidates {
		if runErrs[i] != nil {
			continue
		}
		rs, err := ParseSave(texts[i])
		if err != nil {
			return Variant{}, "", fmt.Errorf("reading %s: %w", v.Save, err)
		}
		seen = append(seen, found{v, texts[i], !rs.Empty(), CountRules(texts[i])})
	}
	if len(seen) == 0 {
		return Variant{}, "", fmt.Errorf("no usable iptables-legacy-save or iptables-nft-save: %w", errors.Join(runErrs...))
	}
	if len(seen) == 2 && seen[0].shunt && seen[1].shunt {
		return Variant{}, "", errors.New("shunt's rules are in both iptables-legacy and iptables-nft; " +
			"clean up one with --force-iptables-binary and --cleanup-only")
	}
	best := -1
	for i, f := range seen {
		if f.shunt {
			return f.v, f.save, nil
		}
		if f.rules > 0 && (best < 0 || f.rules > seen[best].rules) {
			best = i
		}
	}
	if best >= 0 {
		return seen[best].v, seen[best].save, nil
	}
	for _, f := range seen {
		if f.v == systemDefault() {
			return f.v, f.save, nil
		}
	}
	return seen[0].v, seen[0].save, nil
}

type legacyLister interface {
	LegacyTables(capture.Family) (string, error)
}

// systemDefault is the variant the plain iptables command runs.
func systemDefault() Variant {
	path, err := exec.LookPath("iptables")
	if err == nil {
		if real, err := filepath.EvalSymlinks(path); err == nil && strings.Contains(real, "legacy") {
			return Legacy
		}
	}
	return NFT
}

// Restore runs iptables-restore --noflush with text, waiting for the
// xtables lock; "" runs nothing.
func (b *Restorer) Restore(ctx context.Context, text string) error {
	if text == "" {
		return nil
	}
	args := []string{"--noflush"}
	if b.LockWait > 0 {
		args = append(args, "--wait="+strconv.Itoa(int(b.LockWait.Seconds()+0.999)))
	}
	if _, err := b.Runner.Run(ctx, text, b.Variant.Restore, args...); err != nil {
		return fmt.Errorf("applying shunt's rules (nothing was changed): %w", err)
	}
	return nil
}

// Diff shows, line by line, how have differs from want: "-" for a line only
// the kernel has, "+" for one only the plan has.
func Diff(have, want *Ruleset) string {
	var b strings.Builder
	for _, name := range tableNames(want, have) {
		h, w := lines(have.Table(name)), lines(want.Table(name))
		extra, missing := multisetDiff(h, w)
		for _, l := range extra {
			fmt.Fprintf(&b, "- [%s] %s\n", name, l)
		}
		for _, l := range missing {
			fmt.Fprintf(&b, "+ [%s] %s\n", name, l)
		}
	}
	if b.Len() == 0 && !Equal(have, want) {
		return "  the same rules, in a different order\n"
	}
	return b.String()
}

func lines(t *TableRules) []string {
	if t == nil {
		return nil
	}
	out := append([]string{}, t.Jumps...)
	for _, c := range t.Chains {
		out = append(out, ":"+c)
		out = append(out, t.Rules[c]...)
	}
	return out
}
