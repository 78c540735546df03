// Command gateway compares, side by side, shunt's proxy, HAProxy and Caddy
// terminating TLS at the edge: each serves HTTPS on 127.0.0.1:8443 with
// the same certificate (ECDSA P-256) in a network namespace of its own
// run, and proxies to the same nginx; wrk and h2load load it over TLS.
// Reported per contender (medians of the rounds, contenders alternating
// within each): keep-alive HTTP/1.1 req/s and latency, the proxy's CPU
// time per request; new TLS connections (a full handshake per request):
// handshakes/s and CPU per handshake; h2 req/s and CPU per request; and
// shunt's ratios to HAProxy's.
// Run as root: go run ./bench/gateway
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/internal/procstat"
	"github.com/shunt-dev/shunt/internal/wrk"
)

var (
	rounds      = flag.Int("rounds", 3, "rounds; each runs every contender once")
	duration    = flag.Duration("duration", 5*time.Second, "each load's length")
	conns       = flag.Int("c", 16, "client connections")
	profile     = flag.String("profile", "", "write a CPU profile of shunt under a load (-profile-load) to this file")
	profileLoad = flag.String("profile-load", "keep-alive", "the load -profile profiles: keep-alive, new (a TLS connection per request) or h2")
)

// contender is a TLS-terminating proxy: its configuration file's name and
// text, and its command line (DIR is the run's directory).
type contender struct {
	name, file, config string
	argv               []string
}

// sample is one contender's numbers from one round.
type sample struct {
	rps, p50, p99, cpu float64 // keep-alive: req/s, latency µs, CPU µs per request
	hps, hcpu          float64 // a new connection per request: handshakes/s, CPU µs per handshake
	h2rps, h2cpu       float64 // h2load: req/s, CPU µs per request
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root (it makes a network namespace)")
	}
	dir, err := os.MkdirTemp("/tmp", "shunt-bench-gateway-")
	check(err)
	defer os.RemoveAll(dir)
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	writeCert(dir)
	shunt := filepath.Join(dir, "shunt")
	if out, err := exec.Command("go", "build", "-o", shunt, "./cmd/shunt").CombinedOutput(); err != nil {
		fail("go build: " + string(out))
	}
	contenders := []contender{
		{"shunt", "envoy.yaml", shuntConfig, []string{shunt, "proxy", "--config", "DIR/envoy.yaml", "--uid", "1337", "--gid", "1337"}},
		{"haproxy", "haproxy.cfg", haproxyConfig, []string{"haproxy", "-db", "-f", "DIR/haproxy.cfg"}},
		{"caddy", "Caddyfile", caddyConfig, []string{"caddy", "run", "--adapter", "caddyfile", "--config", "DIR/Caddyfile"}},
	}
	results := map[string][]sample{}
	for r := 0; r < *rounds; r++ {
		for _, c := range contenders {
			s := run(c, dir, r)
			fmt.Fprintf(os.Stderr, "round %d %s: %.0f req/s %.0f µs/req, %.0f handshakes/s %.0f µs each, h2 %.0f req/s %.0f µs/req\n",
				r+1, c.name, s.rps, s.cpu, s.hps, s.hcpu, s.h2rps, s.h2cpu)
			results[c.name] = append(results[c.name], s)
		}
	}
	report(contenders, results)
}

// run starts nginx and the contender in a fresh namespace, loads it, and
// tears both down.
func run(c contender, dir string, round int) sample {
	ns := fmt.Sprintf("bench-gw-%d-%d", os.Getpid(), round)
	sh("ip", "netns", "add", ns)
	cleanups = []func(){func() { exec.Command("ip", "netns", "del", ns).Run() }}
	defer func() { cleanups[0](); cleanups = nil }()
	sh("ip", "-n", ns, "link", "set", "lo", "up")
	sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000")
	check(os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(strings.ReplaceAll(nginxConfig, "DIR", dir)), 0o644))
	backend := start(ns, "nginx", "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	defer stop(backend)
	waitTCP(ns, 8081)
	check(os.WriteFile(filepath.Join(dir, c.file), []byte(strings.ReplaceAll(c.config, "DIR", dir)), 0o644))
	argv := slices.Clone(c.argv)
	for i := range argv {
		argv[i] = strings.ReplaceAll(argv[i], "DIR", dir)
	}
	p := start(ns, argv...)
	defer stop(p)
	waitTCP(ns, 8443)
	url := "https://127.0.0.1:8443/"
	wrkRun(ns, c.name, url, time.Second) // warm up
	var s sample
	load := func(f func() float64) (rate, cpuPer float64) {
		before := cpu(p.Process.Pid)
		n := f()
		return n / duration.Seconds(), float64((cpu(p.Process.Pid) - before).Microseconds()) / n
	}
	var keep wrk.Result
	profiling := func(load string) {
		if *profile == "" || c.name != "shunt" || *profileLoad != load {
			return
		}
		prof := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-o", *profile,
			fmt.Sprintf("http://127.0.0.1:15000/debug/pprof/profile?seconds=%d", int(duration.Seconds())-1))
		check(prof.Start())
		cleanups = append(cleanups, func() { prof.Wait() })
	}
	profiling("keep-alive")
	s.rps, s.cpu = load(func() float64 { keep = wrkRun(ns, c.name, url, *duration); return keep.Total })
	s.p50, s.p99 = keep.P50, keep.P99
	profiling("new")
	s.hps, s.hcpu = load(func() float64 { return wrkRun(ns, c.name, url, *duration, "-H", "Connection: close").Total })
	profiling("h2")
	s.h2rps, s.h2cpu = load(func() float64 { return h2load(ns, c.name, url) })
	return s
}

// wrkRun loads url for d from the namespace, HTTP/1.1 over TLS.
func wrkRun(ns, name, url string, d time.Duration, extra ...string) wrk.Result {
	args := append([]string{"netns", "exec", ns, "wrk", "-t2", "-c" + strconv.Itoa(*conns), "-d" + d.String(), "--latency"}, extra...)
	out, err := exec.Command("ip", append(args, url)...).CombinedOutput()
	if err != nil {
		fail(name + ": wrk: " + err.Error() + "\n" + string(out))
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") && !strings.Contains(strings.Join(extra, " "), "close") {
		fail(name + ": wrk saw failures:\n" + string(out))
	}
	r, err := wrk.Parse(string(out))
	if err != nil {
		fail(name + ": " + err.Error() + "\n" + string(out))
	}
	return r
}

var (
	h2loadDone = regexp.MustCompile(`requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded`)
	h2loadALPN = regexp.MustCompile(`Application protocol: h2`)
)

// h2load loads url over TLS with h2 (ALPN), 10 streams per connection,
// and returns the requests that succeeded.
func h2load(ns, name, url string) float64 {
	out, err := exec.Command("ip", "netns", "exec", ns, "h2load", "-t2", "-c"+strconv.Itoa(*conns), "-m10",
		"-D", strconv.Itoa(int(duration.Seconds())), url).CombinedOutput()
	d := h2loadDone.FindStringSubmatch(string(out))
	if err != nil || d == nil || d[1] != d[2] || !h2loadALPN.Match(out) {
		fail(name + ": h2load:\n" + string(out))
	}
	n, _ := strconv.ParseFloat(d[2], 64)
	return n
}

// report prints the medians and shunt's ratios to HAProxy's.
func report(contenders []contender, results map[string][]sample) {
	fmt.Printf("TLS termination at the edge, %d rounds × %s per load, %d connections, ECDSA P-256, medians\n\n", *rounds, *duration, *conns)
	fmt.Println("| | keep-alive req/s | p50 µs | p99 µs | CPU µs/req | new TLS conn/s | CPU µs/handshake | h2 req/s | CPU µs/h2 req |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	med := map[string]sample{}
	for _, c := range contenders {
		ss := results[c.name]
		m := sample{
			rps: median(ss, func(s sample) float64 { return s.rps }), p50: median(ss, func(s sample) float64 { return s.p50 }),
			p99: median(ss, func(s sample) float64 { return s.p99 }), cpu: median(ss, func(s sample) float64 { return s.cpu }),
			hps: median(ss, func(s sample) float64 { return s.hps }), hcpu: median(ss, func(s sample) float64 { return s.hcpu }),
			h2rps: median(ss, func(s sample) float64 { return s.h2rps }), h2cpu: median(ss, func(s sample) float64 { return s.h2cpu }),
		}
		med[c.name] = m
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.0f | %.1f |\n", c.name, m.rps, m.p50, m.p99, m.cpu, m.hps, m.hcpu, m.h2rps, m.h2cpu)
	}
	s, h := med["shunt"], med["haproxy"]
	fmt.Printf("\nshunt / haproxy: keep-alive req/s %.2f, CPU per request %.2f; new connections/s %.2f, CPU per handshake %.2f; h2 req/s %.2f, CPU per request %.2f\n",
		s.rps/h.rps, s.cpu/h.cpu, s.hps/h.hps, s.hcpu/h.hcpu, s.h2rps/h.h2rps, s.h2cpu/h.h2cpu)
}

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// start runs argv in the namespace, in a process group of its own.
func start(ns string, argv ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	cleanups = append(cleanups, func() { stop(cmd) })
	return cmd
}

// stop kills a process's group and waits for it.
func stop(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
}

// waitTCP waits until something listens on 127.0.0.1:port in the
// namespace.
func waitTCP(ns string, port int) {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if exec.Command("ip", "netns", "exec", ns, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)).Run() == nil {
			return
		}
	}
	fail(fmt.Sprintf("nothing listens on port %d", port))
}

// cpu is a process's CPU time (ip netns exec has become the process).
func cpu(pid int) time.Duration {
	t, err := procstat.CPU(pid)
	check(err)
	return t
}

// writeCert writes a self-signed ECDSA P-256 certificate for localhost
// and 127.0.0.1: cert.pem, key.pem and both in combined.pem (HAProxy's).
func writeCert(dir string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: nil, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	kder, err := x509.MarshalECPrivateKey(key)
	check(err)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kp := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	check(os.WriteFile(filepath.Join(dir, "cert.pem"), cert, 0o644))
	check(os.WriteFile(filepath.Join(dir, "key.pem"), kp, 0o644))
	check(os.WriteFile(filepath.Join(dir, "combined.pem"), append(cert, kp...), 0o644))
}

func sh(argv ...string) {
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		fail(strings.Join(argv, " ") + ": " + err.Error() + "\n" + string(out))
	}
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

// cleanups undo what a run made, last first, should it fail.
var cleanups []func()

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/gateway:", msg)
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(1)
}
