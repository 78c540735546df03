// Command mtls compares two sidecars in a mesh's places, a caller's and a
// callee's (shunt proxy processes on loopback, with Envoy configurations
// as shunt-control compiles them), plaintext against mutual TLS between
// them: requests per second (wrk through the caller, keep-alive), each
// sidecar's CPU time per request, p50 and p99, and the TLS handshakes
// (connections the caller opened to the callee) per 1,000 requests. The
// certificates come from a CA in this process, over its gRPC, as a
// sidecar gets them. The two alternate within every round.
// Run: go run ./bench/mtls (needs wrk: .ci/deps bench)
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/internal/wrk"
)

var (
	rounds   = flag.Int("rounds", 3, "rounds; each runs both variants")
	duration = flag.Duration("duration", 5*time.Second, "wrk's run per variant and round")
	conns    = flag.Int("connections", 16, "wrk's connections")
)

type sample struct{ rps, p50, p99, callerCPU, calleeCPU, handshakesPerK float64 }

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "shunt-bench-mtls-")
	check(err)
	defer os.RemoveAll(dir)
	shunt := filepath.Join(dir, "shunt")
	out, err := exec.Command("go", "build", "-o", shunt, "./cmd/shunt").CombinedOutput()
	if err != nil {
		fail(fmt.Sprintf("go build: %v\n%s", err, out))
	}
	caAddr, roots := startCA(dir)
	app := listen()
	go http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))

	results := map[string][]sample{}
	variants := []string{"plaintext", "mutual TLS"}
	for r := 0; r < *rounds; r++ {
		for _, v := range variants {
			s := run(shunt, dir, caAddr, roots, app.Addr().String(), v == "mutual TLS")
			fmt.Fprintf(os.Stderr, "round %d %-10s %8.0f req/s  caller %5.1f µs/req  callee %5.1f µs/req  p50 %6.0f µs  p99 %6.0f µs  handshakes/1k %.2f\n",
				r+1, v, s.rps, s.callerCPU, s.calleeCPU, s.p50, s.p99, s.handshakesPerK)
			results[v] = append(results[v], s)
		}
	}
	fmt.Printf("two sidecars (caller → callee) on loopback, %d rounds × %s, wrk -c%d through the caller; medians\n\n", *rounds, *duration, *conns)
	fmt.Println("| | req/s | ×plaintext | p50 µs | p99 µs | caller CPU µs/req | callee CPU µs/req | both µs/req | ×plaintext | TLS handshakes /1k req |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	base := med(results["plaintext"])
	for _, v := range variants {
		m := med(results[v])
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", v, m.rps, m.rps/base.rps, m.p50, m.p99,
			m.callerCPU, m.calleeCPU, m.callerCPU+m.calleeCPU, (m.callerCPU+m.calleeCPU)/(base.callerCPU+base.calleeCPU), m.handshakesPerK)
	}
	m := med(results["mutual TLS"])
	fmt.Printf("\nmutual TLS: CPU per request %+.0f%% (both sidecars), p99 %+.0f µs, p50 %+.0f µs over plaintext\n",
		100*((m.callerCPU+m.calleeCPU)/(base.callerCPU+base.calleeCPU)-1), m.p99-base.p99, m.p50-base.p50)
}

// run starts the callee and the caller, drives the caller, and stops them.
func run(shunt, dir, caAddr, roots, app string, mtls bool) sample {
	calleePort, callerPort := freePort(), freePort()
	calleeAdmin, callerAdmin := freePort(), freePort()
	callee := start(shunt, dir, "callee", calleeConfig(calleePort, app, mtls), calleeAdmin, caAddr, roots)
	defer stop(callee)
	caller := start(shunt, dir, "caller", callerConfig(callerPort, calleePort, mtls), callerAdmin, caAddr, roots)
	defer stop(caller)
	url := fmt.Sprintf("http://127.0.0.1:%d/", callerPort)
	waitFor(url)
	runWrk(url, time.Second) // warm up
	cx0 := upstreamConnections(callerAdmin)
	c0, e0 := cpu(caller.Process.Pid), cpu(callee.Process.Pid)
	rps, p50, p99, total := runWrk(url, *duration)
	c1, e1 := cpu(caller.Process.Pid), cpu(callee.Process.Pid)
	cx1 := upstreamConnections(callerAdmin)
	return sample{rps: rps, p50: p50, p99: p99, callerCPU: (c1 - c0) / total, calleeCPU: (e1 - e0) / total,
		handshakesPerK: 1000 * (cx1 - cx0) / total}
}

const router = `http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`

func calleeConfig(port int, app string, mtls bool) string {
	host, appPort, _ := net.SplitHostPort(app)
	chain := ""
	if mtls {
		chain = "\n      filter_chain_match: " + envoytest.MeshChainMatch + "\n      transport_socket: " + envoytest.MeshServerSocket
	}
	return fmt.Sprintf(`static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    traffic_direction: INBOUND
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {subject: true, uri: true, dns: true}
          %s
          route_config: {virtual_hosts: [{name: app, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]}%s
  clusters:
  - name: app
    connect_timeout: 1s
    type: STATIC
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, port, router, chain, host, appPort)
}

func callerConfig(port, callee int, mtls bool) string {
	ts, md := "", ""
	if mtls {
		ts = "\n    transport_socket_matches: " + envoytest.MeshClientMatches("spiffe://cluster.local/ns/default/sa/callee")
		md = ", metadata: " + envoytest.MeshEndpointMetadata
	}
	return fmt.Sprintf(`static_resources:
  listeners:
  - name: outbound
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          %s
          route_config: {virtual_hosts: [{name: callee, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: callee}}]}]}
  clusters:
  - name: callee
    connect_timeout: 1s
    type: STATIC%s
    load_assignment: {cluster_name: callee, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}%s}]}]}
`, port, router, ts, callee, md)
}

// start runs a sidecar of service account sa with config.
func start(shunt, dir, sa, config string, admin int, caAddr, roots string) *exec.Cmd {
	file := filepath.Join(dir, sa+".yaml")
	check(os.WriteFile(file, []byte(config), 0o644))
	token := filepath.Join(dir, sa+"-token")
	check(os.WriteFile(token, []byte(sa), 0o644))
	cmd := exec.Command(shunt, "proxy", "--config", file, "--allow-root", "--capture-uid", strconv.Itoa(os.Getuid()), "--capture-gid", strconv.Itoa(os.Getgid()),
		"--health-addr", "", "--status-addr", "", "--prometheus-addr", "", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-timeout", "1s",
		"--ca-address", caAddr, "--ca-root-cert", roots, "--token-file", token)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=default", "SERVICE_ACCOUNT="+sa)
	cmd.Stderr = io.Discard
	check(cmd.Start())
	return cmd
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// startCA serves a CA on loopback that takes a token for the service
// account it names; it returns its address and the file of its roots.
func startCA(dir string) (string, string) {
	b, err := ca.SelfSigned(ca.DefaultTrustDomain, 24*time.Hour, time.Now())
	check(err)
	a, err := ca.New(b)
	check(err)
	serving, err := a.ServingCertificate([]string{"127.0.0.1"}, time.Hour)
	check(err)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}})))
	ca.NewService(a, ca.DefaultTrustDomain, namedToken{}, slog.New(slog.NewTextHandler(io.Discard, nil))).Register(g)
	ln := listen()
	go g.Serve(ln)
	roots := filepath.Join(dir, "root-cert.pem")
	check(os.WriteFile(roots, []byte(a.Roots()), 0o644))
	return ln.Addr().String(), roots
}

type namedToken struct{}

func (namedToken) Authenticate(_ context.Context, token string) (string, string, error) {
	return "default", token, nil
}

func runWrk(url string, d time.Duration) (rps, p50, p99, total float64) {
	out, err := exec.Command("wrk", "-t", "2", "-c", strconv.Itoa(*conns), "-d", d.String(), "--latency", url).CombinedOutput()
	if err != nil {
		fail(fmt.Sprintf("wrk: %v\n%s", err, out))
	}
	r, err := wrk.Parse(string(out))
	if err != nil {
		fail(err.Error() + ":\n" + string(out))
	}
	return r.RPS, r.P50, r.P99, r.Total
}

// cpu is a process's CPU time so far, in µs.
func cpu(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) * 1e6 / 100 // clock ticks of 10 ms
}

// upstreamConnections is cluster.callee.upstream_cx_total from the
// caller's admin API.
func upstreamConnections(admin int) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=cluster.callee.upstream_cx_total", admin))
	check(err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "cluster.callee.upstream_cx_total: "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	fail("the caller's /stats has no cluster.callee.upstream_cx_total")
	return 0
}

func waitFor(url string) {
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			fail("the sidecars never answered " + url)
		}
	}
}

func med(ss []sample) sample {
	pick := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return sample{rps: pick(func(s sample) float64 { return s.rps }), p50: pick(func(s sample) float64 { return s.p50 }),
		p99: pick(func(s sample) float64 { return s.p99 }), callerCPU: pick(func(s sample) float64 { return s.callerCPU }),
		calleeCPU: pick(func(s sample) float64 { return s.calleeCPU }), handshakesPerK: pick(func(s sample) float64 { return s.handshakesPerK })}
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	return ln
}

func freePort() int {
	ln := listen()
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/mtls:", msg)
	os.Exit(1)
}
