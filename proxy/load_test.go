package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// holdServerEnv makes the test binary, started again with it set, a server
// that accepts on the given address, answers every byte with the same byte
// and holds connections until the peer closes. It runs as its own process
// so that its descriptors do not count against the test's.
const holdServerEnv = "SHUNT_TEST_HOLD_SERVER"

func init() {
	addr := os.Getenv(holdServerEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "hold server:", err)
			os.Exit(1)
		}
		go func() {
			// Not io.Copy: between two TCP connections it splices, and a
			// blocked splice holds a pipe, two more descriptors each.
			defer c.Close()
			b := make([]byte, 512)
			for {
				n, err := c.Read(b)
				if err != nil {
					return
				}
				if _, err := c.Write(b[:n]); err != nil {
					return
				}
			}
		}()
	}
}

// startHoldServer runs the hold server inside ns.
func startHoldServer(t *testing.T, ns *testnet.NS, addr string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, self)
	cmd.Env = append(os.Environ(), holdServerEnv+"="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 10)
	if _, err := io.ReadAtLeast(out, buf, 9); err != nil || !strings.HasPrefix(string(buf), "listening") {
		t.Fatalf("hold server: %q %v", buf, err)
	}
}

func (s *sidecarPod) fds(t *testing.T) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.proc.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestHoldsManyConcurrentConnections opens connections through the proxy
// and holds them all open at once, each proven to carry bytes both ways.
func TestHoldsManyConcurrentConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newSidecarPod(t, concurrentArgs...)
	startHoldServer(t, s.Peer, "0.0.0.0:7100")
	testnet.RaiseFileLimit(t, 20000)
	conns := make([]*net.TCPConn, 0, concurrent)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, concurrent)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for i := w; i < concurrent; i += 8 {
				c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7100"), 101, 101)
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					if _, err = c.Write([]byte{byte(i)}); err == nil {
						_, err = io.ReadFull(c, b)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		_, body, _ := s.NS.HTTPGet("http://127.0.0.1:15090/stats/prometheus")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "shunt_proxy_connections_closed_total") && !strings.HasSuffix(line, " 0") {
				t.Log(line)
			}
		}
		t.Fatal(err)
	}
	if v := s.metric(t, `shunt_proxy_connections_active{direction="outbound"}`); v != concurrent {
		t.Errorf("the proxy holds %v connections, want %d", v, concurrent)
	}
	t.Logf("%d connections open through the proxy at once, opened in %s", len(conns), time.Since(start).Round(time.Millisecond))
}

// TestManySequentialConnectionsLeakNothing makes connections one after
// another (on four workers) and checks that afterwards the proxy holds no
// more descriptors or goroutines than before.
func TestManySequentialConnectionsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newSidecarPod(t, "--access-log", "off")
	startHoldServer(t, s.Peer, "0.0.0.0:7101")
	warm := func(n int) {
		for i := 0; i < n; i++ {
			c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7101"), 101, 101)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, "w")
			c.Close()
		}
	}
	warm(100)
	settle(t, s)
	fds0, gor0 := s.fds(t), s.metric(t, "shunt_proxy_goroutines")
	const total, workers = 200000, 4
	start := time.Now()
	var wg sync.WaitGroup
	var failed sync.Once
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for i := 0; i < total/workers; i++ {
				c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7101"), 101, 101)
				if err == nil {
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.Close()
				}
				if err != nil {
					failed.Do(func() { t.Errorf("connection %d of worker %d: %v", i, w, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	settle(t, s)
	// A leak stays; a goroutine still finishing a closed connection does not.
	fds1, gor1 := s.fds(t), s.metric(t, "shunt_proxy_goroutines")
	for deadline := time.Now().Add(5 * time.Second); (fds1 > fds0+2 || gor1 > gor0+2) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		fds1, gor1 = s.fds(t), s.metric(t, "shunt_proxy_goroutines")
	}
	closed := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="ok"}`)
	t.Logf("%.0f connections in %s (%.0f/s); descriptors %d -> %d, goroutines %.0f -> %.0f",
		closed, took.Round(time.Millisecond), float64(total)/took.Seconds(), fds0, fds1, gor0, gor1)
	if closed < total {
		t.Errorf("only %.0f connections completed through the proxy", closed)
	}
	if fds1 > fds0+2 || gor1 > gor0+2 {
		_, dump, _ := s.NS.HTTPGet("http://127.0.0.1:15000/debug/pprof/goroutine?debug=1")
		t.Errorf("growth after %d connections: descriptors %d -> %d, goroutines %.0f -> %.0f; goroutines:\n%s", total, fds0, fds1, gor0, gor1, dump)
	}
}

// settle waits until the proxy has no open connection.
func settle(t *testing.T, s *sidecarPod) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s.metric(t, `shunt_proxy_connections_active{direction="outbound"}`) == 0 {
			return
		}
	}
	t.Fatal("connections still open 10s after the load ended")
}
