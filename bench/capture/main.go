// Command capture measures how long `shunt redirect` takes to apply,
// re-apply and clean up a plan with many excluded CIDRs, on each backend
// (and dual-stack, which doubles iptables' work), side by side and in
// alternating order, each run in a fresh network namespace; and what the
// list costs every new captured connection (connect.go). Run as root:
// go run ./bench/capture
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/capture/backend"
)

// Targets and istio-iptables' times on the same plan on this machine kind.
var (
	target    = map[string]time.Duration{"apply": 40 * time.Millisecond, "re-apply": 20 * time.Millisecond, "cleanup": 50 * time.Millisecond}
	nftTarget = map[string]time.Duration{"apply": 30 * time.Millisecond, "re-apply": 20 * time.Millisecond, "cleanup": 30 * time.Millisecond}
	istio     = map[string]time.Duration{"apply": 45 * time.Millisecond, "cleanup": 2500 * time.Millisecond}
	ops       = []string{"apply", "re-apply", "cleanup"}
)

type contender struct {
	name  string
	flags []string
}

var contenders = []contender{
	{"iptables-legacy", []string{"--force-iptables-binary", "iptables-legacy"}},
	{"iptables-nft", []string{"--force-iptables-binary", "iptables-nft"}},
	{"detected", nil},
	{"native nft", []string{"--native-nftables"}},
	{"nft dual-stack", []string{"--native-nftables", "--dual-stack"}},
	{"iptables-nft dual-stack", []string{"--force-iptables-binary", "iptables-nft", "--dual-stack"}},
}

func main() {
	cidrs := flag.Int("cidrs", 1000, "excluded CIDRs in the plan")
	rounds := flag.Int("rounds", 15, "rounds; each runs every contender once, in rotating order")
	connRounds := flag.Int("connect-rounds", 5, "rounds of the connect-rate measurement (0: skip it)")
	connEach := flag.Duration("connect-for", 2*time.Second, "how long each connect-rate run makes connections")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/capture: run as root (it makes network namespaces)")
		os.Exit(2)
	}
	bin, cleanup := build()
	defer cleanup()
	args := planArgs(*cidrs)
	times := map[string]map[string][]time.Duration{}
	for _, c := range contenders {
		times[c.name] = map[string][]time.Duration{}
	}
	for r := 0; r < *rounds; r++ {
		for i := range contenders {
			c := contenders[(i+r)%len(contenders)]
			for op, d := range runOnce(bin, args, c, r) {
				times[c.name][op] = append(times[c.name][op], d)
			}
		}
	}
	report(*cidrs, *rounds, times)
	if *connRounds > 0 {
		reportConnect(*cidrs, *connRounds, *connEach, connectRates(bin, *cidrs, *connRounds, *connEach))
	}
}

func build() (string, func()) {
	dir, err := os.MkdirTemp("/tmp", "shunt-bench-")
	check(err)
	bin := filepath.Join(dir, "shunt")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/shunt").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	return bin, func() { os.RemoveAll(dir) }
}

// planArgs is the seed's args with n excluded /32 ranges.
func planArgs(n int) []string {
	var list []string
	for i := 0; i < n; i++ {
		list = append(list, fmt.Sprintf("100.%d.%d.%d/32", 64+i/65536%64, i/256%256, i%256))
	}
	return []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*",
		"-d", "15090,15021,15020", "-x", strings.Join(list, ","), "--log_output_level", "warn"}
}

func runOnce(bin string, args []string, c contender, round int) map[string]time.Duration {
	ns := fmt.Sprintf("shunt-bench-%d-%d", os.Getpid(), round)
	check(exec.Command("ip", "netns", "add", ns).Run())
	defer exec.Command("ip", "netns", "del", ns).Run()
	base := append([]string{"redirect", "--network-namespace", "/var/run/netns/" + ns}, c.flags...)
	base = append(base, args...)
	out := map[string]time.Duration{}
	for _, op := range ops {
		cmdArgs := base
		if op == "cleanup" {
			cmdArgs = append(slices.Clone(base), "--cleanup-only")
		}
		start := time.Now()
		o, err := exec.Command(bin, cmdArgs...).CombinedOutput()
		out[op] = time.Since(start)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s %s: %v\n%s", c.name, op, err, o)
			os.Exit(1)
		}
	}
	for _, b := range backend.All("/var/run/netns/" + ns) {
		if rules, err := b.Read(context.Background()); err != nil || !rules.Empty() {
			fmt.Fprintf(os.Stderr, "%s: shunt rules left in %s after cleanup (%v)\n", c.name, b.Name(), err)
			os.Exit(1)
		}
	}
	return out
}

func report(cidrs, rounds int, times map[string]map[string][]time.Duration) {
	fmt.Printf("shunt redirect, seed args + %d excluded CIDRs, %d rounds, whole command (process start included)\n\n", cidrs, rounds)
	fmt.Println("| contender | op | median | p90 | target | median/target | istio-iptables | istio/median |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, c := range contenders {
		for _, op := range ops {
			d := times[c.name][op]
			slices.Sort(d)
			med, p90 := d[len(d)/2], d[len(d)*9/10]
			is, ratio := "-", "-"
			if v, ok := istio[op]; ok {
				is, ratio = ms(v), fmt.Sprintf("%.1f×", float64(v)/float64(med))
			}
			tgt := target[op]
			if strings.HasPrefix(c.name, "native nft") || strings.HasPrefix(c.name, "nft ") {
				tgt = nftTarget[op]
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %.2f | %s | %s |\n", c.name, op, ms(med), ms(p90), ms(tgt),
				float64(med)/float64(tgt), is, ratio)
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
