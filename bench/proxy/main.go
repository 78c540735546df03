// Command proxy compares, in the seed scenario and side by side, no capture
// ("direct"), capture into shunt's proxy at L4 and at L7, into HAProxy in
// tcp and in http mode, and into Caddy: request rate and latency through
// the unmodified nginx (wrk), the sidecar's and the backend's CPU time per
// request, upstream connections opened per 1,000 requests, the sidecar's
// memory, bulk throughput (iperf3) and new connections per second.
// Contenders alternate within every round, each run in a fresh scenario.
// Run as root: go run ./bench/proxy
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/internal/procstat"
	"github.com/shunt-dev/shunt/internal/scenario"
)

// contender is one way to run the scenario.
type contender struct {
	name    string
	sidecar scenario.Sidecar
	args    []string // extra shunt proxy flags
	// httpOnly: it passes HTTP and nothing else (no bulk TCP run).
	httpOnly bool
	// envoyConfig, if set, is run with --config (nginx's outbound
	// captured to its listener): only the HTTP load applies.
	envoyConfig string
}

var contenders = []contender{
	{"direct", scenario.Direct, nil, false, ""},
	{"shunt L4", scenario.Shunt, []string{"--protocol-detection", "off"}, false, ""},
	{"shunt L7", scenario.Shunt, nil, false, ""},
	{"shunt L7 --concurrency 1", scenario.Shunt, []string{"--concurrency", "1"}, false, ""},
	{"haproxy tcp", scenario.HAProxy, nil, false, ""},
	{"haproxy http", scenario.HAProxyHTTP, nil, true, ""},
	{"caddy", scenario.Caddy, nil, true, ""},
	{"shunt L7 tracing 1%", scenario.Shunt, tracingArgs("1"), true, ""},
	{"shunt L7 tracing 100%", scenario.Shunt, tracingArgs("100"), true, ""},
	{"shunt L7 --config, 1 route", scenario.Shunt, nil, true, routeTable(0)},
	{"shunt L7 --config, 500 routes", scenario.Shunt, nil, true, routeTable(50)},
}

// sample is one contender's numbers from one round.
type sample struct {
	rps, p50, p99 float64 // wrk: requests/s, latency in µs
	cpuPerReq     float64 // sidecar CPU µs per proxied request
	backendCPU    float64 // the backend nginx's CPU µs per request
	spansPerK     float64 // spans the collector got per 1,000 requests
	upstreamPerK  float64 // connections the backend accepted per 1,000 requests
	rssMB, hwmMB  float64 // the sidecar's resident memory after the load, and its peak
	gbps          float64 // iperf3
	cps           float64 // new connections per second
	// HTTP/2 and gRPC (direct and shunt only: the other sidecars'
	// configurations here speak HTTP/1)
	h2rps, h2cpu     float64 // h2load to an h2c backend: requests/s, sidecar CPU µs per request
	grpcRps, grpcCPU float64 // unary gRPC calls/s, sidecar CPU µs per call
}

// speaksH2 says the contender is run with the HTTP/2 and gRPC loads.
func (c contender) speaksH2() bool {
	return c.envoyConfig == "" && !c.traced() && (c.sidecar == scenario.Direct || c.sidecar == scenario.Shunt)
}

// tracingArgs trace a percentage of requests to the collector the bench
// runs in the pod (collectorAddr).
func tracingArgs(pct string) []string {
	return []string{"--tracing-collector", collectorAddr, "--tracing-sampling", pct}
}

// collectorAddr is where the traced contenders' OpenTelemetry collector
// listens, in the pod's namespace (the sidecar's own traffic is not
// captured).
const collectorAddr = "127.0.0.1:4317"

// traced says the contender sends spans.
func (c contender) traced() bool { return slices.Contains(c.args, "--tracing-collector") }

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each runs every contender once, in rotating order")
	dur := flag.Duration("duration", 5*time.Second, "length of each load run")
	conns := flag.Int("connections", 16, "wrk connections")
	flag.StringVar(&profileDir, "profile", "", "write a CPU profile of each shunt contender's wrk run into this directory")
	only := flag.String("only", "", "run only the contenders whose names match this regular expression (direct always runs: the ratios need it), e.g. '^shunt L7( tracing|$)'")
	flag.Parse()
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fail("-only: " + err.Error())
		}
		contenders = slices.DeleteFunc(contenders, func(c contender) bool {
			return c.sidecar != scenario.Direct && !re.MatchString(c.name)
		})
	}
	if os.Geteuid() != 0 {
		fail("run as root: it makes network namespaces")
	}
	for _, tool := range []string{"wrk", "iperf3", "nginx", "haproxy", "caddy", "curl", "h2load"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail(tool + " is not installed: .ci/deps bench")
		}
	}
	bin := build()
	defer os.RemoveAll(filepath.Dir(bin))
	results := map[string][]sample{}
	for r := 0; r < *rounds; r++ {
		for i := range contenders {
			c := contenders[(i+r)%len(contenders)]
			s := measure(bin, c, r, *dur, *conns)
			fmt.Fprintf(os.Stderr, "round %d %-24s %6.0f req/s p50 %5.0fµs p99 %6.0fµs cpu %4.0fµs/req backend %4.0fµs/req up %4.0f/1k rss %3.0f MB %5.2f Gbit/s %5.0f conn/s h2 %6.0f req/s %4.0fµs grpc %6.0f/s %4.0fµs\n",
				r+1, c.name, s.rps, s.p50, s.p99, s.cpuPerReq, s.backendCPU, s.upstreamPerK, s.rssMB, s.gbps, s.cps, s.h2rps, s.h2cpu, s.grpcRps, s.grpcCPU)
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

// profileDir, when set, receives a CPU profile of each shunt run under wrk.
var profileDir string

// profile fetches a CPU profile of the sidecar from its admin API while
// the load runs; wait for it with the returned function.
func profile(s *scenario.Scenario, c contender, round int, dur time.Duration) func() {
	if profileDir == "" || c.sidecar != scenario.Shunt {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		secs := max(1, int(dur.Seconds())-1)
		client := *s.Client()
		client.Timeout = dur + 10*time.Second
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:15000/debug/pprof/profile?seconds=%d", secs))
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer resp.Body.Close()
		name := filepath.Join(profileDir, fmt.Sprintf("%s-round%d.pprof", strings.ReplaceAll(c.name, " ", "_"), round+1))
		f, err := os.Create(name)
		check(err)
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

func measure(bin string, c contender, round int, dur time.Duration, conns int) sample {
	s, err := scenario.Start(context.Background(), scenario.Options{
		Name: fmt.Sprintf("shunt-bench-%d-%d", os.Getpid(), round), Sidecar: c.sidecar, ShuntBin: bin,
		// No access log: the HAProxy configuration logs nothing either
		// (and Istio leaves Envoy's off by default).
		ProxyArgs: proxyArgs(c), EnvoyConfig: c.envoyConfig,
	})
	check(err)
	current.Store(s)
	defer s.Close()
	if body, err := s.Outbound(); err != nil {
		fail(fmt.Sprintf("%s: the scenario does not answer: %v %s", c.name, err, body))
	}
	var out sample
	var col *otlptest.Collector
	if c.traced() {
		col = startCollector(s)
		defer col.Close()
	}
	cpu0, backend0, accepts0 := cpuTime(s.ProxyPID()), cpuTimes(s.BackendPIDs()), passiveOpens(s)
	var requests float64
	profiled := profile(s, c, round, dur)
	out.rps, out.p50, out.p99, requests = runWrk(s, dur, conns)
	profiled()
	if requests > 0 {
		if pid := s.ProxyPID(); pid != 0 {
			out.cpuPerReq = float64((cpuTime(pid) - cpu0).Microseconds()) / requests
			out.rssMB, out.hwmMB = memory(pid)
		}
		out.backendCPU = float64((cpuTimes(s.BackendPIDs()) - backend0).Microseconds()) / requests
		out.upstreamPerK = float64(passiveOpens(s)-accepts0) / requests * 1000
		if col != nil {
			time.Sleep(6 * time.Second) // the sidecar sends what it holds every 5 s
			out.spansPerK = float64(col.Count()) / requests * 1000
		}
	}
	if !c.httpOnly {
		out.gbps = runIperf(s, dur)
	}
	if c.envoyConfig != "" {
		return out // everything the pod sends goes to the configuration's HTTP listener
	}
	out.cps = connectionsPerSecond(s, dur)
	if c.speaksH2() {
		stop := startH2Backends(s)
		defer stop()
		var n float64
		cpu0 := cpuTime(s.ProxyPID())
		out.h2rps, n = runH2load(s, dur)
		out.h2cpu = perRequest(cpuTime(s.ProxyPID())-cpu0, n)
		cpu0 = cpuTime(s.ProxyPID())
		out.grpcRps, n = runGRPC(s, dur)
		out.grpcCPU = perRequest(cpuTime(s.ProxyPID())-cpu0, n)
	}
	return out
}

func perRequest(cpu time.Duration, n float64) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / n
}

// cpuTime is a process's user plus system time, all threads.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	t, err := procstat.CPU(pid)
	check(err)
	return t
}

// cpuTimes sums the CPU time of processes.
func cpuTimes(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		total += cpuTime(pid)
	}
	return total
}

// memory is a process's resident set and its peak, in MB.
func memory(pid int) (rss, hwm float64) {
	rss, hwm, err := procstat.Memory(pid)
	check(err)
	return rss, hwm
}

// passiveOpens is how many connections the backend host has accepted
// (its namespace's TCP PassiveOpens).
func passiveOpens(s *scenario.Scenario) int64 {
	out, err := s.Pod.Peer.Run("cat", "/proc/net/snmp")
	check(err)
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "Tcp:") {
			continue
		}
		f := strings.Fields(line)[1:]
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "PassiveOpens" {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	fail("no PassiveOpens in the backend's /proc/net/snmp")
	return 0
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
	fmt.Println("| | req/s | ×direct | p50 µs | p50 added | p99 µs | p99 added | sidecar CPU µs/req | backend CPU µs/req | upstream conns /1k req | sidecar RSS MB (peak) | bulk Gbit/s | ×direct | new conn/s | ×direct |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, ct := range contenders {
		c := ct.name
		m := func(f func(sample) float64) float64 { return med(c, f) }
		rps, p50, p99 := m(func(s sample) float64 { return s.rps }), m(func(s sample) float64 { return s.p50 }), m(func(s sample) float64 { return s.p99 })
		gbps, cps := m(func(s sample) float64 { return s.gbps }), m(func(s sample) float64 { return s.cps })
		cpu, rss := "-", "-"
		if ct.sidecar != scenario.Direct {
			cpu = fmt.Sprintf("%.0f", m(func(s sample) float64 { return s.cpuPerReq }))
			rss = fmt.Sprintf("%.0f (%.0f)", m(func(s sample) float64 { return s.rssMB }), m(func(s sample) float64 { return s.hwmMB }))
		}
		bulk := "n/a (HTTP only) | -"
		if !ct.httpOnly {
			bulk = fmt.Sprintf("%.2f | %.2f", gbps, gbps/d(func(s sample) float64 { return s.gbps }))
		}
		conns := fmt.Sprintf("%.0f | %.2f", cps, cps/d(func(s sample) float64 { return s.cps }))
		if ct.envoyConfig != "" {
			conns = "n/a (its HTTP listener takes everything) | -"
		}
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.1f | %s | %s | %s |\n", c,
			rps, rps/d(func(s sample) float64 { return s.rps }), p50, p50-d(func(s sample) float64 { return s.p50 }),
			p99, p99-d(func(s sample) float64 { return s.p99 }), cpu, m(func(s sample) float64 { return s.backendCPU }),
			m(func(s sample) float64 { return s.upstreamPerK }), rss, bulk, conns)
	}
	fmt.Println()
	fmt.Printf("HTTP/2 and gRPC to the backend host at the service address, from the pod: h2load -c16 -m10 (h2c), and unary gRPC calls, 32 concurrent on one connection\n\n")
	fmt.Println("| | h2 req/s | ×direct | sidecar CPU µs/req | gRPC calls/s | ×direct | sidecar CPU µs/call |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, ct := range contenders {
		if !ct.speaksH2() {
			continue
		}
		c := ct.name
		m := func(f func(sample) float64) float64 { return med(c, f) }
		h2, g := m(func(s sample) float64 { return s.h2rps }), m(func(s sample) float64 { return s.grpcRps })
		cpu := func(f func(sample) float64) string {
			if ct.sidecar == scenario.Direct {
				return "-"
			}
			return fmt.Sprintf("%.0f", m(f))
		}
		fmt.Printf("| %s | %.0f | %.2f | %s | %.0f | %.2f | %s |\n", c, h2, h2/d(func(s sample) float64 { return s.h2rps }),
			cpu(func(s sample) float64 { return s.h2cpu }), g, g/d(func(s sample) float64 { return s.grpcRps }),
			cpu(func(s sample) float64 { return s.grpcCPU }))
	}
	fmt.Println()
	if results["shunt L7 --config, 500 routes"] != nil && results["shunt L7 --config, 1 route"] != nil {
		big, one := "shunt L7 --config, 500 routes", "shunt L7 --config, 1 route"
		rps := med(big, func(s sample) float64 { return s.rps }) / med(one, func(s sample) float64 { return s.rps })
		cpu := med(big, func(s sample) float64 { return s.cpuPerReq }) / med(one, func(s sample) float64 { return s.cpuPerReq })
		fmt.Printf("500 routes (51 virtual hosts; the request's found by domain, its route the 4th, after a prefix, a regex and a header miss) / 1 route: req/s %.2f, CPU per request %.2f\n", rps, cpu)
	}
	if base := results["shunt L7"]; base != nil {
		// Each round's ratio to the same round's untraced run, then their
		// median: the machine's drift between rounds cancels out.
		paired := func(c string, f func(sample) float64) float64 {
			var v []float64
			for i, s := range results[c] {
				v = append(v, f(s)/f(base[i]))
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		p990 := med("shunt L7", func(s sample) float64 { return s.p99 })
		for _, ct := range contenders {
			if !ct.traced() || results[ct.name] == nil {
				continue
			}
			cpu := paired(ct.name, func(s sample) float64 { return s.cpuPerReq })
			fmt.Printf("%s (OTLP/gRPC to a collector in the pod): CPU per request / shunt L7's, median of the rounds' ratios: %.3f (%+.1f%%), p99 added %+.0f µs, spans per 1,000 requests %.1f\n",
				ct.name, cpu, 100*(cpu-1), med(ct.name, func(s sample) float64 { return s.p99 })-p990, med(ct.name, func(s sample) float64 { return s.spansPerK }))
		}
	}
	for _, pair := range [][2]string{{"shunt L4", "haproxy tcp"}, {"shunt L7", "haproxy http"}, {"shunt L7 --concurrency 1", "haproxy http"}, {"shunt L7", "caddy"}} {
		if results[pair[0]] == nil || results[pair[1]] == nil {
			continue
		}
		a := med(pair[0], func(s sample) float64 { return s.cpuPerReq })
		b := med(pair[1], func(s sample) float64 { return s.cpuPerReq })
		fmt.Printf("%s: CPU per request / %s's: %.2f\n", pair[0], pair[1], a/b)
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
