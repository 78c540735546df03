package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Faults with the kernel in the loop: the proxy as a process in a pod
// namespace with capture rules, against upstreams in the peer namespace
// that drop, refuse or hold. The in-process half is faults_local_test.go.

// TestBlackholedUpstreamAbandonedDials is the platform team's finding: 500
// clients giving up on a destination whose SYNs are dropped must not
// leave the proxy unable to take the next good connection.
func TestBlackholedUpstreamAbandonedDials(t *testing.T) {
	s := newSidecarPod(t, "--max-connections", "100", "--connect-timeout", "30s")
	s.Peer.Run(t, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "7990", "-j", "DROP")
	echo(t, s.Peer, "0.0.0.0:7991")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7990"), 101, 101)
				if err != nil {
					failed.Add(1)
					continue
				}
				time.Sleep(20 * time.Millisecond) // the client's own patience
				if (w+i)%2 == 0 {
					_ = c.SetLinger(0)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	s.waitMetric(t, `shunt_proxy_connections_active{direction="outbound"}`, 0, 2*time.Second)
	c := s.app(t, "10.96.0.10:7991")
	roundTrip(t, c, "the next good connection")
	if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="downstream_closed"}`); v+float64(failed.Load()) < 500 {
		t.Errorf("downstream_closed = %v (and %d dials failed), want 500", v, failed.Load())
	}
	if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="over_limit"}`); v != 0 {
		t.Errorf("over_limit = %v: abandoned dials held their slots", v)
	}
}

// TestDescriptorExhaustion runs the proxy with 400 descriptors: it sizes
// its connection limit to them, resets what is beyond it, keeps health and
// metrics answering, and copies bulk transfers it cannot get a pipe for.
func TestDescriptorExhaustion(t *testing.T) {
	s := newSidecarPodLimited(t, 400, "--access-log", "off")
	startHoldServer(t, s.Peer, "0.0.0.0:7992")
	// 400 descriptors: 40 kept free, 20 pipes, so 160 connections.
	var held []*net.TCPConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	resets := 0
	for range 200 {
		c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7992"), 101, 101)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err = c.Write([]byte{1}); err == nil {
				_, err = io.ReadFull(c, make([]byte, 1))
			}
		}
		if err != nil {
			resets++
			if c != nil {
				c.Close()
			}
			continue
		}
		held = append(held, c)
	}
	if len(held) != 160 || resets != 40 {
		t.Errorf("%d connections served and %d refused, want 160 and 40", len(held), resets)
	}
	for _, url := range []string{"http://127.0.0.1:15021/healthz/ready", "http://127.0.0.1:15090/stats/prometheus"} {
		if code, _, err := s.NS.HTTPGet(url); code != 200 {
			t.Errorf("%s at the connection limit: %d %v", url, code, err)
		}
	}
	if v := s.metric(t, `shunt_proxy_connections_closed_total{direction="outbound",result="over_limit"}`); v != 40 {
		t.Errorf("over_limit = %v, want 40", v)
	}
	// Bulk both ways on 40 of the held connections at once, through an echo
	// that reads slowly: more transfers in flight than the 20 pipes.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for _, c := range held[:40] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- bulkThroughEcho(c, 1<<20)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if v := s.metric(t, "shunt_proxy_pipes"); v > 20 {
		t.Errorf("%v pipes open, over the cap of 20", v)
	}
	t.Logf("splice fallbacks: %v", s.metric(t, "shunt_proxy_splice_fallbacks_total"))
}

// bulkThroughEcho sends n bytes (after the one already echoed) and reads
// them back, checking every one.
func bulkThroughEcho(c *net.TCPConn, n int) error {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := c.Write(data); werr <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("bulk read: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("bulk write: %w", err)
	}
	for i := range got {
		if got[i] != data[i] {
			return fmt.Errorf("byte %d differs", i)
		}
	}
	return nil
}

// TestWorkerKilled: kill -9 of one worker leaves the other's connections
// and new connections working; the supervisor restarts it.
func TestWorkerKilled(t *testing.T) {
	s := newSidecarPod(t, "--workers", "2", "--access-log", "off")
	echo(t, s.Peer, "0.0.0.0:7993")
	var conns []*net.TCPConn
	for range 40 {
		c := s.app(t, "10.96.0.10:7993")
		roundTrip(t, c, "x")
		conns = append(conns, c)
	}
	workers := childPIDs(t, s.proc.Process.Pid)
	if len(workers) != 2 {
		t.Fatalf("worker processes %v, want 2", workers)
	}
	if err := syscall.Kill(workers[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	survived, lost := 0, 0
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("y")); err == nil {
			if _, err = io.ReadFull(c, make([]byte, 1)); err == nil {
				survived++
				continue
			}
		}
		lost++
	}
	if survived == 0 {
		t.Errorf("no connection survived the other worker's death (%d lost)", lost)
	}
	for range 20 {
		c := s.app(t, "10.96.0.10:7993")
		roundTrip(t, c, "new")
		c.Close()
	}
	s.waitMetric(t, "shunt_proxy_workers_running", 2, 5*time.Second)
	if v := s.metric(t, "shunt_proxy_worker_restarts_total"); v != 1 {
		t.Errorf("restarts = %v, want 1", v)
	}
	if ws := childPIDs(t, s.proc.Process.Pid); len(ws) != 2 || slices.Contains(ws, workers[0]) {
		t.Errorf("workers after the restart: %v (killed %d)", ws, workers[0])
	}
	if !strings.Contains(s.stderr.String(), "a worker exited; restarting it") {
		t.Errorf("no log line for the restart:\n%s", s.stderr)
	}
	t.Logf("%d connections survived on the other worker, %d were the killed one's", survived, lost)
}

// TestSupervisorKilledWorkersDrain: workers whose supervisor is gone
// drain and exit rather than serve unsupervised.
func TestSupervisorKilledWorkersDrain(t *testing.T) {
	s := newSidecarPod(t, "--workers", "2", "--drain-timeout", "500ms")
	workers := childPIDs(t, s.proc.Process.Pid)
	_ = s.proc.Process.Kill()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		alive := 0
		for _, pid := range workers {
			if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still running 5s after their supervisor died", alive)
		}
	}
}

// TestSIGTERMUnderLoad: outbound connections made without pause keep being
// served through the drain (Istio's: the app may call out while it shuts
// down); inbound is refused at once; at the drain's end the proxy exits.
// With workers too: the supervisor must not hold a listener nobody accepts
// on.
func TestSIGTERMUnderLoad(t *testing.T) {
	for _, workers := range []string{"1", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			s := newSidecarPod(t, "--workers", workers, "--drain-timeout", "2s", "--access-log", "off")
			echo(t, s.Peer, "0.0.0.0:7994")
			app := s.NS.Listener(t, "0.0.0.0:8080")
			go func() {
				for {
					c, err := app.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			var stop atomic.Bool
			var ok, failed atomic.Int64
			var firstFailure atomic.Value
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						c, err := s.NS.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.96.0.10:7994"), 101, 101)
						if err == nil {
							_ = c.SetDeadline(time.Now().Add(2 * time.Second))
							if _, err = c.Write([]byte("z")); err == nil {
								_, err = io.ReadFull(c, make([]byte, 1))
							}
							c.Close()
						}
						if err != nil {
							failed.Add(1)
							firstFailure.CompareAndSwap(nil, err.Error())
							continue
						}
						ok.Add(1)
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			_ = s.proc.Process.Signal(syscall.SIGTERM)
			// Inbound: refused at once (not queued for nobody).
			var inErr error
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				var c *net.TCPConn
				c, inErr = s.Peer.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.1.0.5:8080"), 0, 0)
				if inErr != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				_, inErr = c.Read(make([]byte, 1))
				c.Close()
				if inErr != nil && inErr != io.EOF {
					break
				}
				inErr = nil
			}
			// Refused, or reset if it was queued as the listener closed.
			refusedAfter := time.Since(start)
			if !errors.Is(inErr, syscall.ECONNREFUSED) && !errors.Is(inErr, syscall.ECONNRESET) || refusedAfter > 500*time.Millisecond {
				t.Errorf("inbound after SIGTERM: %v after %s, want refused at once", inErr, refusedAfter)
			}
			time.Sleep(1500*time.Millisecond - time.Since(start))
			okBefore, failedBefore := ok.Load(), failed.Load()
			stop.Store(true)
			wg.Wait()
			if failedBefore > 0 {
				t.Errorf("%d outbound connections failed during the drain (first: %v); %d served", failedBefore, firstFailure.Load(), okBefore)
			}
			s.waitExit(t, 5*time.Second, "the proxy did not exit at the end of its drain")
			if took := time.Since(start); took < 1900*time.Millisecond {
				t.Errorf("exited %s after SIGTERM, before its 2s drain", took)
			}
			t.Logf("%d outbound connections served through the drain, inbound refused %s after SIGTERM", okBefore, refusedAfter.Round(time.Millisecond))
		})
	}
}

// TestRunsAsItsIdentity: after binding, the proxy (and each worker) holds
// UID and GID 1337 in all three slots and no capability.
func TestRunsAsItsIdentity(t *testing.T) {
	s := newSidecarPod(t, "--workers", "2")
	for _, pid := range append([]int{s.proc.Process.Pid}, childPIDs(t, s.proc.Process.Pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		status := string(b)
		for _, want := range []string{"Uid:\t1337\t1337\t1337\t1337", "Gid:\t1337\t1337\t1337\t1337", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "Groups:\t \n"} {
			if !strings.Contains(status, want) {
				t.Errorf("pid %d: no %q in its status:\n%s", pid, want, status)
			}
		}
	}
	// The admin API listens on loopback only: from outside the pod the
	// inbound capture takes the request and finds nothing to hand it to.
	if code, body, _ := s.Peer.HTTPGet("http://10.1.0.5:15000/config_dump"); code != 503 || !strings.Contains(body, "connection failure") {
		t.Errorf("from outside the pod: %d %q, want the proxy's 503 (nothing listens for it)", code, body)
	}
	if code, _, err := s.NS.HTTPGet("http://127.0.0.1:15000/config_dump"); code != 200 {
		t.Errorf("the admin API on loopback: %d %v", code, err)
	}
}

// childPIDs lists a process's children, sorted.
func childPIDs(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	// Children of other threads of a Go process are not in the main
	// thread's list: read them all.
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		if task.Name() == strconv.Itoa(pid) {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && (f[2] == "Z" || f[2] == "X")
}
