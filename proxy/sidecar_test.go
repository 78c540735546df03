package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// seedArgs are the seed's istio-init args.
var seedArgs = scenario.CaptureArgs

// sidecarPod is testnet's Pod with capture installed by `shunt redirect`
// and `shunt proxy` running in it as UID 1337, as a sidecar would.
type sidecarPod struct {
	*testnet.Pod
	proc           *exec.Cmd
	access, stderr *scenario.Buffer
	exited         chan struct{} // closed when the proxy process has exited
}

func newSidecarPod(t *testing.T, proxyArgs ...string) *sidecarPod {
	t.Helper()
	return newSidecarPodWith(t, sidecarOptions{}, proxyArgs...)
}

// newSidecarPodLimited is newSidecarPod with the proxy's descriptor limit
// set to nofile.
func newSidecarPodLimited(t *testing.T, nofile int, proxyArgs ...string) *sidecarPod {
	t.Helper()
	return newSidecarPodWith(t, sidecarOptions{nofile: nofile}, proxyArgs...)
}

// sidecarOptions are how a test's proxy process differs from the default.
type sidecarOptions struct {
	nofile int      // its descriptor limit; 0 leaves it
	env    []string // added to its environment
}

func newSidecarPodWith(t *testing.T, o sidecarOptions, proxyArgs ...string) *sidecarPod {
	t.Helper()
	nofile := o.nofile
	testnet.RequireRoot(t, "iptables-nft-save")
	bin := testnet.ShuntBinary(t)
	s := &sidecarPod{Pod: testnet.NewPod(t), access: &scenario.Buffer{}, stderr: &scenario.Buffer{}, exited: make(chan struct{})}
	args := append([]string{"redirect", "--network-namespace", s.NS.Path, "--log_output_level", "warn"}, seedArgs...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("shunt redirect: %v: %s", err, out)
	}
	s.NS.Run(t, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000")
	line := "exec " + bin + " proxy --uid 1337 --gid 1337 --access-log stdout --access-log-format '" + l4Format + "' " + strings.Join(proxyArgs, " ")
	if nofile > 0 {
		line = fmt.Sprintf("ulimit -n %d && %s", nofile, line)
	}
	s.proc = exec.Command("ip", "netns", "exec", s.NS.Name, "sh", "-c", line)
	s.proc.Env = append(os.Environ(), o.env...)
	s.proc.Stdout, s.proc.Stderr = s.access, s.stderr
	if err := s.proc.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.proc.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		_ = s.proc.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("proxy stderr:\n%s\naccess log:\n%s", s.stderr, s.access)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _, _ := s.NS.HTTPGet("http://127.0.0.1:15021/healthz/ready"); code == 200 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy never became ready:\n%s", s.stderr)
		}
	}
}

// metric reads one sample from /stats/prometheus; series is its name with
// labels, as printed.
func (s *sidecarPod) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body, err := s.NS.HTTPGet("http://127.0.0.1:15090/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, body)
	return 0
}

// metricSum adds up the samples of a metric whose labels contain every
// part given (label="value", as printed).
func (s *sidecarPod) metricSum(t *testing.T, name string, parts ...string) float64 {
	t.Helper()
	return metricSumIn(t, s.NS, name, parts...)
}

// metricSumIn is metricSum of the sidecar in ns; a metric without labels
// counts too.
func metricSumIn(t *testing.T, ns *testnet.NS, name string, parts ...string) float64 {
	t.Helper()
	_, body, err := ns.HTTPGet("http://127.0.0.1:15090/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
lines:
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += f
	}
	return sum
}

// waitExit waits for the proxy process to exit, failing the test with why
// if it does not within d.
func (s *sidecarPod) waitExit(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(d):
		t.Fatal(why)
	}
}

// waitMetric waits until a series reads want.
func (s *sidecarPod) waitMetric(t *testing.T, series string, want float64, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		v := s.metric(t, series)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %s, want %v", series, v, within, want)
		}
	}
}

// waitAccess waits for an access log line containing every part.
func (s *sidecarPod) waitAccess(t *testing.T, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	lines:
		for _, line := range strings.Split(s.access.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return line
		}
	}
	t.Fatalf("no access log line with %q in:\n%s", parts, s.access)
	return ""
}

// echo serves addr in ns: it copies what it reads back, and half-closes
// when the peer does.
func echo(t *testing.T, ns *testnet.NS, addr string) {
	ln := ns.Listener(t, addr)
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.CloseWrite()
			}()
		}
	}()
}

func (s *sidecarPod) app(t *testing.T, dst string) *net.TCPConn {
	t.Helper()
	c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort(dst), 101, 101)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v", buf, err)
	}
}

func TestOutboundAndInboundWithOriginalDestination(t *testing.T) {
	s := newSidecarPod(t)
	echo(t, s.Peer, "0.0.0.0:7000")
	c := s.app(t, "10.96.0.10:7000")
	roundTrip(t, c, "hello")
	c.Close()
	s.waitAccess(t, "PassthroughCluster 10.96.0.10:7000 result=- bytes_received=5 bytes_sent=5", "upstream_local=10.1.0.5:")

	// Inbound: the app sees the connection come from 127.0.0.6.
	inboundToApp(t, s.Pod)
	s.waitAccess(t, "InboundPassthroughCluster 10.1.0.5:8080 result=-", "downstream_remote=10.1.0.1:")
	if v := s.metric(t, `shunt_proxy_connections_total{direction="inbound"}`); v != 1 {
		t.Errorf("inbound connections_total = %v", v)
	}
}

func TestHalfCloseIsPassedOn(t *testing.T) {
	s := newSidecarPod(t)
	// The server reads until the client's FIN, answers, then closes.
	ln := s.Peer.Listener(t, "0.0.0.0:7001")
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d bytes", n)
		c.Close()
	}()
	c := s.app(t, "10.96.0.10:7001")
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(bytes.Repeat([]byte("x"), 300000)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c) // returns at the server's FIN
	if err != nil || string(reply) != "got 300000 bytes" {
		t.Fatalf("got %q, %v", reply, err)
	}
	s.waitAccess(t, "10.96.0.10:7001 result=- bytes_received=300000 bytes_sent=16")
}

func TestResetIsPassedOn(t *testing.T) {
	s := newSidecarPod(t)
	// The upstream resets: the app must see a reset, not a clean close.
	ln := s.Peer.Listener(t, "0.0.0.0:7002")
	serverSaw := make(chan error, 1)
	accepted := make(chan struct{})
	go func() {
		for i := 0; i < 2; i++ {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			if i == 0 {
				_ = c.SetLinger(0)
				c.Close()
				continue
			}
			close(accepted)
			_, err = c.Read(make([]byte, 10))
			serverSaw <- err
		}
	}()
	if err := s.dialExpectingReset(t, "10.96.0.10:7002"); err != nil {
		t.Errorf("after the upstream reset: %v", err)
	}
	// The app resets once the proxy has connected upstream (a silent
	// client is first given the protocol detection wait): the upstream must
	// see a reset.
	c2 := s.app(t, "10.96.0.10:7002")
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy never connected upstream for a silent client")
	}
	_ = c2.SetLinger(0)
	c2.Close()
	select {
	case err := <-serverSaw:
		if !isReset(err) {
			t.Errorf("upstream read after the app reset: %v, want ECONNRESET", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the app's reset")
	}
	s.waitAccess(t, "10.96.0.10:7002 result=reset")
}

// dialExpectingReset connects as the app and reads; the proxy resets such
// connections at once, and since the kernel completes the handshake before
// the proxy sees them, the reset reaches the app during or after its dial.
func (s *sidecarPod) dialExpectingReset(t *testing.T, dst string) error {
	t.Helper()
	c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort(dst), 101, 101)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if !isReset(err) {
		return fmt.Errorf("%s: got %v, want a reset", dst, err)
	}
	return nil
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), syscall.ECONNRESET.Error())
}

func TestLoopIsRefused(t *testing.T) {
	s := newSidecarPod(t)
	// 127.0.0.1 is never captured, so this reaches the listener itself.
	if err := s.dialExpectingReset(t, "127.0.0.1:15001"); err != nil {
		t.Fatalf("a connection to the proxy's own listener: %v", err)
	}
	s.waitAccess(t, "BlackHoleCluster 127.0.0.1:15001 result=loop_refused")
	if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="loop_refused"}`); v != 1 {
		t.Errorf("loops refused = %v", v)
	}
	if !strings.Contains(s.stderr.String(), "a loop") {
		t.Errorf("no log line for the loop:\n%s", s.stderr)
	}
}

func TestConnectFailures(t *testing.T) {
	s := newSidecarPod(t, "--connect-timeout", "300ms")
	s.Peer.Run(t, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "7998", "-j", "DROP")
	for _, tc := range []struct{ dst, result string }{{"10.96.0.10:7999", "connect_refused"}, {"10.96.0.10:7998", "connect_timeout"}} {
		start := time.Now()
		if err := s.dialExpectingReset(t, tc.dst); err != nil {
			t.Error(err)
		}
		if tc.result == "connect_timeout" && time.Since(start) < 250*time.Millisecond {
			t.Errorf("timed out after %s, before the 300ms connect timeout", time.Since(start))
		}
		s.waitAccess(t, tc.dst+" result="+tc.result)
		if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="`+tc.result+`"}`); v != 1 {
			t.Errorf("%s = %v", tc.result, v)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	s := newSidecarPod(t, "--idle-timeout", "400ms")
	got := make(chan int, 1)
	ln := s.Peer.Listener(t, "0.0.0.0:7003")
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() { n, _ := io.Copy(io.Discard, c); got <- int(n); c.Close() }()
		}
	}()
	// Silent: closed after about the idle timeout.
	silent := s.app(t, "10.96.0.10:7003")
	_ = silent.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent connection got data")
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 2*time.Second {
		t.Errorf("silent connection closed after %s, want 400ms to 600ms or so", d)
	}
	<-got
	s.waitAccess(t, "10.96.0.10:7003 result=idle_timeout")
	// A trickle in one direction keeps the connection open, even though
	// nothing comes back.
	busy := s.app(t, "10.96.0.10:7003")
	for i := 0; i < 10; i++ {
		if _, err := busy.Write([]byte("x")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	busy.CloseWrite()
	if n := <-got; n != 10 {
		t.Errorf("the upstream got %d bytes of the trickle, want 10", n)
	}
}

// TestDrainAll: with --drain-listeners all, SIGTERM stops both listeners,
// live connections finish, and the proxy exits when the last one ends.
func TestDrainAll(t *testing.T) {
	s := newSidecarPod(t, "--drain-timeout", "3s", "--drain-listeners", "all")
	echo(t, s.Peer, "0.0.0.0:7004")
	live := s.app(t, "10.96.0.10:7004")
	roundTrip(t, live, "before")
	_ = s.proc.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if code, _, err := s.NS.HTTPGet("http://127.0.0.1:15021/healthz/ready"); code == 503 || err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still ready while draining")
		}
	}
	if c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7004"), 101, 101); err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("x")); err == nil {
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("a new connection was served while draining")
			}
		}
		c.Close()
	}
	roundTrip(t, live, "during the drain") // live connections keep working
	live.CloseWrite()
	_, _ = io.ReadAll(live)
	s.waitExit(t, 2*time.Second, "the proxy did not exit when its last connection ended")
	s.waitAccess(t, "10.96.0.10:7004 result=-")
}

func TestDrainTimeoutResetsWhatIsLeft(t *testing.T) {
	s := newSidecarPod(t, "--drain-timeout", "300ms")
	echo(t, s.Peer, "0.0.0.0:7005")
	held := s.app(t, "10.96.0.10:7005")
	roundTrip(t, held, "x")
	start := time.Now()
	_ = s.proc.Process.Signal(syscall.SIGTERM)
	_ = held.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("held connection at the drain deadline: %v, want a reset", err)
	}
	s.waitExit(t, 3*time.Second, "the proxy did not exit after its drain timeout")
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("reset after %s, before the 300ms drain timeout", d)
	}
	s.waitAccess(t, "10.96.0.10:7005 result=drained")
}

func TestConnectionLimit(t *testing.T) {
	s := newSidecarPod(t, "--max-connections", "2")
	echo(t, s.Peer, "0.0.0.0:7006")
	for i := 0; i < 2; i++ {
		roundTrip(t, s.app(t, "10.96.0.10:7006"), "ok")
	}
	if err := s.dialExpectingReset(t, "10.96.0.10:7006"); err != nil {
		t.Errorf("third connection: %v", err)
	}
	if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="over_limit"}`); v != 1 {
		t.Errorf("over_limit = %v", v)
	}
}

func TestAdminAPI(t *testing.T) {
	s := newSidecarPod(t, "--concurrency", "1")
	code, body, err := s.NS.HTTPGet("http://127.0.0.1:15000/config_dump")
	if err != nil || code != 200 || !strings.Contains(body, `"name": "virtualOutbound"`) || !strings.Contains(body, `"port_value": 15001`) ||
		!strings.Contains(body, `"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"`) {
		t.Errorf("config_dump: %d %v\n%s", code, err, body)
	}
	code, body, err = s.NS.HTTPGet("http://127.0.0.1:15000/server_info")
	if err != nil || code != 200 || !strings.Contains(body, `"outbound_port": 15001`) || !strings.Contains(body, `"gomaxprocs": 1`) {
		t.Errorf("server_info: %d %v\n%s", code, err, body)
	}
	var out string
	if err := s.NS.Do(func() error {
		o, err := exec.Command("curl", "-s", "-X", "POST", "http://127.0.0.1:15000/logging?level=debug").Output()
		out = string(o)
		return err
	}); err != nil || !strings.Contains(out, "level: debug") {
		t.Errorf("POST /logging: %q %v", out, err)
	}
	if _, body, _ := s.NS.HTTPGet("http://127.0.0.1:15000/logging"); !strings.Contains(body, "debug") {
		t.Errorf("GET /logging after the change: %s", body)
	}
	if _, body, _ := s.NS.HTTPGet("http://127.0.0.1:15090/stats/prometheus"); !strings.Contains(body, "# TYPE shunt_proxy_connection_duration_seconds histogram") {
		t.Errorf("prometheus:\n%s", body)
	}
}

func TestRefusesACapturedIdentity(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t, "ident")
	bin := testnet.ShuntBinary(t)
	out, err := exec.Command("ip", "netns", "exec", ns.Name, bin, "proxy", "--uid", "101", "--gid", "101").CombinedOutput()
	var exit *exec.ExitError
	if !errorsAs(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "would be captured back into it") {
		t.Errorf("exit %v, output:\n%s", err, out)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*target = e
	return ok
}

// TestIPv6OriginalDestination: an IPv6 connection redirected by ip6tables
// reaches the proxy's IPv6 listener, which reads IP6T_SO_ORIGINAL_DST and
// forwards to the real destination.
func TestIPv6OriginalDestination(t *testing.T) {
	s := newSidecarPod(t)
	s.NS.Run(t, "ip", "addr", "add", "fd00:1::5/64", "dev", "eth0", "nodad")
	s.Peer.Run(t, "ip", "addr", "add", "fd00:1::1/64", "dev", "eth0", "nodad")
	s.NS.Run(t, "ip", "-6", "route", "add", "default", "via", "fd00:1::1")
	s.Peer.Run(t, "ip", "-6", "route", "add", "local", "fd00:96::/64", "dev", "lo")
	s.NS.Run(t, "ip6tables-nft", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00:96::/64",
		"-m", "owner", "!", "--uid-owner", "1337", "-j", "REDIRECT", "--to-ports", "15001")
	echo(t, s.Peer, "[::]:7010")
	c := s.app(t, "[fd00:96::10]:7010")
	roundTrip(t, c, "over IPv6")
	c.Close()
	s.waitAccess(t, "PassthroughCluster [fd00:96::10]:7010 result=- bytes_received=9 bytes_sent=9", "upstream_local=[fd00:1::5]:")
}

// TestWorkers: with --workers, connections are spread over worker
// processes, the supervisor's metrics add theirs up, and SIGTERM drains
// them all.
func TestWorkers(t *testing.T) {
	s := newSidecarPod(t, "--workers", "3", "--drain-timeout", "1s")
	echo(t, s.Peer, "0.0.0.0:7020")
	for i := 0; i < 30; i++ {
		c := s.app(t, "10.96.0.10:7020")
		roundTrip(t, c, "w")
		c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="ok"}`) == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the supervisor's metrics do not add up to 30 connections")
		}
	}
	// Istio's series, from three processes, merged as metric families.
	if v := s.metricSum(t, "istio_tcp_connections_closed_total", `reporter="source"`, `request_protocol="tcp"`); v != 30 {
		t.Errorf("istio_tcp_connections_closed_total summed over the workers: %v, want 30", v)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := strings.Count(s.access.String(), "10.96.0.10:7020 result=-")
		if n == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log lines, want 30", n)
		}
	}
	out, _ := exec.Command("pgrep", "-f", "-c", "shunt proxy --uid 1337").Output()
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n < 4 {
		t.Errorf("%d proxy processes, want a supervisor and 3 workers", n)
	}
	_ = s.proc.Process.Signal(syscall.SIGTERM)
	s.waitExit(t, 10*time.Second, "the supervisor did not exit after SIGTERM")
}

// inboundToApp connects from the peer to the app's port 8080 in the pod
// and checks that the app answered and saw the connection come from
// 127.0.0.6, the proxy's inbound passthrough address.
func inboundToApp(t *testing.T, pod *testnet.Pod) {
	t.Helper()
	app := pod.NS.Listener(t, "0.0.0.0:8080")
	from := make(chan string, 1)
	go func() {
		c, err := app.Accept()
		if err == nil {
			from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			_, _ = c.Write([]byte("hi\n"))
			c.Close()
		}
	}()
	got, err := pod.Peer.Dial(netip.Addr{}, netip.MustParseAddrPort("10.1.0.5:8080"), 0, 0)
	if err != nil || got != "hi" {
		t.Fatalf("inbound: %q, %v", got, err)
	}
	if src := <-from; src != "127.0.0.6" {
		t.Errorf("the app saw the connection from %s, want 127.0.0.6", src)
	}
}
