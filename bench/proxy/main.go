// Command proxy compares, in the seed scenario and side by side, no capture
// ("direct"), capture into shunt's proxy, and capture into HAProxy: request
// rate and latency through the unmodified nginx (wrk), bulk throughput
// (iperf3), new connections per second, and the sidecar's CPU time per
// proxied request. Contenders alternate within every round, each run in a
// fresh scenario. Run as root: go run ./bench/proxy
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/internal/scenario"
)

// contender is one way to run the scenario.
type contender struct {
	name    string
	sidecar scenario.Sidecar
	args    []string // extra shunt proxy flags
}

var contenders = []contender{
	{"direct", scenario.Direct, nil},
	{"shunt", scenario.Shunt, nil},
	{"shunt --concurrency 1", scenario.Shunt, []string{"--concurrency", "1"}},
	{"haproxy", scenario.HAProxy, nil},
}

// sample is one contender's numbers from one round.
type sample struct {
	rps, p50, p99 float64 // wrk: requests/s, latency in µs
	cpuPerReq     float64 // sidecar CPU µs per proxied request
	gbps          float64 // iperf3
	cps           float64 // new connections per second
}

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each runs every contender once, in rotating order")
	dur := flag.Duration("duration", 5*time.Second, "length of each load run")
	conns := flag.Int("connections", 16, "wrk connections")
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: it makes network namespaces")
	}
	for _, tool := range []string{"wrk", "iperf3", "nginx", "haproxy", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail(tool + " is not installed: apt-get install wrk iperf3 nginx-light haproxy curl")
		}
	}
	bin := build()
	defer os.RemoveAll(filepath.Dir(bin))
	results := map[string][]sample{}
	for r := 0; r < *rounds; r++ {
		for i := range contenders {
			c := contenders[(i+r)%len(contenders)]
			s := measure(bin, c, r, *dur, *conns)
			fmt.Fprintf(os.Stderr, "round %d %-22s %8.0f req/s p50 %6.0fµs p99 %6.0fµs %6.2f Gbit/s %7.0f conn/s cpu %5.0fµs/req\n",
				r+1, c.name, s.rps, s.p50, s.p99, s.gbps, s.cps, s.cpuPerReq)
			results[c.name] = append(results[c.name], s)
		}
	}
	report(results, *rounds, *dur, *conns)
}

func build() string {
	dir, err := os.MkdirTemp("/tmp", "shunt-bench-")
	check(err)
	check(os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "shunt")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/shunt").CombinedOutput(); err != nil {
		fail(fmt.Sprintf("go build: %v\n%s", err, out))
	}
	return bin
}

// current is the scenario running now, torn down on Ctrl-C.
var current atomic.Pointer[scenario.Scenario]

func init() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		if s := current.Load(); s != nil {
			s.Close()
		}
		os.Exit(130)
	}()
}

func measure(bin string, c contender, round int, dur time.Duration, conns int) sample {
	s, err := scenario.Start(context.Background(), scenario.Options{
		Name: fmt.Sprintf("shunt-bench-%d-%d", os.Getpid(), round), Sidecar: c.sidecar, ShuntBin: bin,
		// No access log: the HAProxy configuration logs nothing either
		// (and Istio leaves Envoy's off by default).
		ProxyArgs: append([]string{"--log-level", "warn", "--access-log", "off"}, c.args...),
	})
	check(err)
	current.Store(s)
	defer s.Close()
	if body, err := s.Outbound(); err != nil {
		fail(fmt.Sprintf("%s: the scenario does not answer: %v %s", c.name, err, body))
	}
	var out sample
	cpu0 := cpuTime(s.ProxyPID())
	var requests float64
	out.rps, out.p50, out.p99, requests = runWrk(s, dur, conns)
	if pid := s.ProxyPID(); pid != 0 && requests > 0 {
		out.cpuPerReq = float64((cpuTime(pid) - cpu0).Microseconds()) / requests
	}
	out.gbps = runIperf(s, dur)
	out.cps = connectionsPerSecond(s, dur)
	return out
}

// cpuTime is a process's user plus system time, all threads.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	check(err)
	// Fields after the command name, which is in parentheses.
	i := slices.Index(data, ')')
	fields := splitFields(string(data[i+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func report(results map[string][]sample, rounds int, dur time.Duration, conns int) {
	med := func(c string, f func(sample) float64) float64 {
		var v []float64
		for _, s := range results[c] {
			v = append(v, f(s))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	d := func(f func(sample) float64) float64 { return med("direct", f) }
	fmt.Printf("seed scenario, %d rounds × %s per run, wrk -c%d through the pod's nginx; medians; ratios are to direct\n\n", rounds, dur, conns)
	fmt.Println("| | req/s | ×direct | p50 µs | p99 µs | p99 added µs | bulk Gbit/s | ×direct | new conn/s | ×direct | sidecar CPU µs/req |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, ct := range contenders {
		c := ct.name
		rps := med(c, func(s sample) float64 { return s.rps })
		p99 := med(c, func(s sample) float64 { return s.p99 })
		gbps := med(c, func(s sample) float64 { return s.gbps })
		cps := med(c, func(s sample) float64 { return s.cps })
		cpu := "-"
		if ct.sidecar != scenario.Direct {
			cpu = fmt.Sprintf("%.0f", med(c, func(s sample) float64 { return s.cpuPerReq }))
		}
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f | %s |\n", c,
			rps, rps/d(func(s sample) float64 { return s.rps }),
			med(c, func(s sample) float64 { return s.p50 }), p99, p99-d(func(s sample) float64 { return s.p99 }),
			gbps, gbps/d(func(s sample) float64 { return s.gbps }), cps, cps/d(func(s sample) float64 { return s.cps }), cpu)
	}
	haCPU := med("haproxy", func(s sample) float64 { return s.cpuPerReq })
	fmt.Println()
	for _, c := range []string{"shunt", "shunt --concurrency 1"} {
		fmt.Printf("%s: CPU per proxied request / HAProxy's: %.2f\n", c, med(c, func(s sample) float64 { return s.cpuPerReq })/haCPU)
	}
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/proxy:", msg)
	if s := current.Load(); s != nil {
		s.Close()
	}
	os.Exit(1)
}
