// Command capture measures how long `shunt redirect` takes to apply,
// re-apply and clean up a plan with many excluded CIDRs, on each iptables
// backend (and dual-stack, which doubles iptables' work), side by side and in alternating order, each run in a fresh
// network namespace. Run as root: go run ./bench/capture
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Targets and istio-iptables' times on the same plan on this machine kind.
var (
	target = map[string]time.Duration{"apply": 40 * time.Millisecond, "re-apply": 20 * time.Millisecond, "cleanup": 50 * time.Millisecond}
	istio  = map[string]time.Duration{"apply": 45 * time.Millisecond, "cleanup": 2500 * time.Millisecond}
	ops    = []string{"apply", "re-apply", "cleanup"}
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
	save, _ := exec.Command("ip", "netns", "exec", ns, "sh", "-c",
		"iptables-legacy-save; iptables-nft-save; ip6tables-legacy-save; ip6tables-nft-save; nft list tables").Output()
	if strings.Contains(string(save), "SHUNT_") || strings.Contains(string(save), "inet shunt") {
		fmt.Fprintf(os.Stderr, "%s: shunt rules left after cleanup\n", c.name)
		os.Exit(1)
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
			fmt.Printf("| %s | %s | %s | %s | %s | %.2f | %s | %s |\n", c.name, op, ms(med), ms(p90), ms(target[op]),
				float64(med)/float64(target[op]), is, ratio)
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
