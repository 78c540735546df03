package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"

	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/proxy"
)

// Faults, in process: the proxy on loopback with scripted upstreams and
// dialers. What needs the kernel's capture, a namespace or a second
// process is in faults_test.go.

// TestAbandonedDialsFreeTheirSlots: clients that give up while the
// upstream does not answer (a blackholed destination) must not hold their
// connection slots until the connect timeout: with a limit of 5, 50
// abandoned dials and then a good connection.
func TestAbandonedDialsFreeTheirSlots(t *testing.T) {
	var dialing atomic.Int64
	var blackholed atomic.Bool
	blackholed.Store(true)
	hole := blackhole(&dialing)
	lp := startLocal(t, func(c *proxy.Config) {
		c.MaxConnections = 5
		c.ConnectTimeout = time.Minute
		c.Dial = func(ctx context.Context, dir proxy.Direction, dst netip.AddrPort) (*net.TCPConn, error) {
			if blackholed.Load() {
				return hole(ctx, dir, dst)
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp4", dst.String())
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}
	})
	// Ten rounds of five clients, each giving up 30ms into its dial (half
	// with a reset, half with a FIN): every round's slots must come back
	// at once for the next to be served.
	for round := range 10 {
		var cs []*net.TCPConn
		for range 5 {
			cs = append(cs, lp.dial(t, proxy.Outbound))
		}
		time.Sleep(30 * time.Millisecond)
		for i, c := range cs {
			if i%2 == round%2 {
				_ = c.SetLinger(0)
			}
			c.Close()
		}
		lp.waitActive(t, 0, 500*time.Millisecond)
	}
	if n := dialing.Load(); n != 0 {
		t.Errorf("%d dials still pending after their clients left", n)
	}
	if n := lp.Metrics().Closed(proxy.Outbound, proxy.ResultDownstreamClosed); n != 50 {
		t.Errorf("downstream_closed = %d, want 50", n)
	}
	blackholed.Store(false)
	lp.to(localEcho(t))
	roundTripLocal(t, lp.dial(t, proxy.Outbound), "after 50 abandoned dials")
	if n := lp.Metrics().Closed(proxy.Outbound, proxy.ResultOverLimit); n != 0 {
		t.Errorf("over_limit = %d, want 0", n)
	}
	lp.waitAccess(t, "result=downstream_closed")
}

// TestHalfClosedRequestKeepsItsDial: a TCP client that sent its request
// and half-closed is waiting for the answer; its dial goes on. (An HTTP
// client that half-closes is gone, as Envoy takes it.)
func TestHalfClosedRequestKeepsItsDial(t *testing.T) {
	var dialing atomic.Int64
	lp := startLocal(t, func(c *proxy.Config) {
		c.ConnectTimeout = 400 * time.Millisecond
		c.Dial = blackhole(&dialing)
	})
	c := lp.dial(t, proxy.Outbound)
	if _, err := c.Write([]byte("QUERY 1\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("the dial was given up after %s (%v), before the 400ms connect timeout", took, err)
	}
	lp.waitAccess(t, "result=connect_timeout")
}

// TestDrainEndCancelsPendingDials: a dial still pending when the drain
// ends gives up at once; the proxy does not wait out the connect timeout.
func TestDrainEndCancelsPendingDials(t *testing.T) {
	var dialing atomic.Int64
	lp := startLocal(t, func(c *proxy.Config) {
		c.ConnectTimeout = time.Minute
		c.DrainTimeout = 200 * time.Millisecond
		c.Dial = blackhole(&dialing)
	})
	c := lp.dial(t, proxy.Outbound)
	_, _ = c.Write([]byte("x")) // a client that has spoken stays while it waits
	for dialing.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	lp.stop()
	select {
	case <-lp.served:
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy waited on its pending dial past the drain")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("stopping took %s with a 200ms drain", took)
	}
	lp.waitAccess(t, "result=drained")
	lp.served <- nil // for the cleanup
}

// TestDrainScopes: Istio's drain stops inbound at once and serves outbound
// until the drain ends; "all" stops both, and ends as soon as nothing is
// open.
func TestDrainScopes(t *testing.T) {
	for _, tc := range []struct {
		scope           proxy.DrainScope
		outboundServed  bool
		endsWhenIdleFor time.Duration // 0: only at the drain timeout
	}{
		{proxy.DrainInbound, true, 0},
		{proxy.DrainAll, false, 50 * time.Millisecond},
	} {
		t.Run(tc.scope.String(), func(t *testing.T) {
			lp := startLocal(t, func(c *proxy.Config) {
				c.DrainTimeout = 800 * time.Millisecond
				c.DrainListeners = tc.scope
			})
			lp.to(localEcho(t))
			out, in := lp.Addr(proxy.Outbound), lp.Addr(proxy.Inbound)
			live := lp.dial(t, proxy.Outbound)
			roundTripLocal(t, live, "before")
			start := time.Now()
			lp.stop()
			waitRefused(t, in)
			c, err := net.DialTimeout("tcp4", out.String(), time.Second)
			if tc.outboundServed {
				if err != nil {
					t.Fatalf("PassthroughCluster during the drain: %v", err)
				}
				roundTripLocal(t, c.(*net.TCPConn), "during the drain")
				c.Close()
			} else {
				waitRefused(t, out)
			}
			roundTripLocal(t, live, "live during the drain")
			live.Close()
			<-lp.served
			took := time.Since(start)
			if tc.endsWhenIdleFor == 0 && took < 700*time.Millisecond {
				t.Errorf("the drain ended after %s, before its 800ms while outbound still served", took)
			}
			if tc.endsWhenIdleFor > 0 && took > 600*time.Millisecond {
				t.Errorf("the drain took %s although nothing was open and nothing could come", took)
			}
			lp.served <- nil
		})
	}
}

// waitRefused checks that a listener address refuses connections (it may
// take a moment for the drain to close it).
func waitRefused(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts during the drain (%v)", addr, err)
		}
	}
}

// TestExitOnZeroActiveConnections: the drain ends once nothing is open,
// but not before the minimum.
func TestExitOnZeroActiveConnections(t *testing.T) {
	lp := startLocal(t, func(c *proxy.Config) {
		c.DrainTimeout = 10 * time.Second
		c.ExitOnZeroActive = true
		c.MinimumDrain = 300 * time.Millisecond
	})
	lp.to(localEcho(t))
	live := lp.dial(t, proxy.Outbound)
	roundTripLocal(t, live, "x")
	start := time.Now()
	lp.stop()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-lp.served:
		t.Fatal("the drain ended with a connection open")
	default:
	}
	live.Close()
	select {
	case <-lp.served:
	case <-time.After(2 * time.Second):
		t.Fatal("the drain did not end once the last connection closed")
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 3*time.Second {
		t.Errorf("the drain took %s", took)
	}
	lp.served <- nil
}

// TestResetsSayWhose: a reset is passed on, and the access log says which
// side reset and why.
func TestResetsSayWhose(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 1))
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	lp := startLocal(t, nil)
	lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
	c := lp.dial(t, proxy.Outbound)
	_, _ = c.Write([]byte("x"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client got %v, want the upstream's reset", err)
	}
	lp.waitAccess(t, "result=reset{upstream:", "connection_reset_by_peer", "flags=UR")
}

// TestResetInEachState: a reset from either side, before or after the
// other side half-closed, reaches the other side as a reset.
func TestResetInEachState(t *testing.T) {
	for _, tc := range []struct {
		name            string
		upstreamResets  bool // else the client resets
		otherHalfClosed bool // the other side has sent FIN first
	}{
		{"upstream resets mid-stream", true, false},
		{"upstream resets after the client's FIN", true, true},
		{"client resets mid-stream", false, false},
		{"client resets after the upstream's FIN", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted := make(chan *net.TCPConn, 1)
			ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.AcceptTCP()
				if err == nil {
					accepted <- c
				}
			}()
			lp := startLocal(t, nil)
			lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
			client := lp.dial(t, proxy.Outbound)
			var up *net.TCPConn
			select {
			case up = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream was never dialled")
			}
			defer up.Close()
			// A byte through first: the proxy's connect has returned, so a
			// reset now is one of the flow, not of the dial.
			if _, err := client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			_ = up.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(up, make([]byte, 1)); err != nil {
				t.Fatalf("the first byte: %v", err)
			}
			_ = up.SetReadDeadline(time.Time{})
			resetter, other := up, client
			if !tc.upstreamResets {
				resetter, other = client, up
			}
			if tc.otherHalfClosed {
				_ = other.CloseWrite()
				_ = resetter.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := resetter.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("the FIN did not come through: %v", err)
				}
			}
			_ = resetter.SetLinger(0)
			resetter.Close()
			_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = other.Read(make([]byte, 1))
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the other side got %v, want a reset", err)
			}
			lp.waitAccess(t, "result=reset")
		})
	}
}

// TestAtTheConnectionLimit: beyond the limit a connection is reset at once
// and counted; the slots come back as connections close.
func TestAtTheConnectionLimit(t *testing.T) {
	lp := startLocal(t, func(c *proxy.Config) { c.MaxConnections = 3 })
	lp.to(localEcho(t))
	var held []*net.TCPConn
	for range 3 {
		c := lp.dial(t, proxy.Outbound)
		roundTripLocal(t, c, "in")
		held = append(held, c)
	}
	// The reset may come before the dial has returned, or after.
	over, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(lp.Addr(proxy.Outbound)))
	if err == nil {
		defer over.Close()
		_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = over.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a fourth connection got %v, want a reset", err)
	}
	if n := lp.Metrics().Closed(proxy.Outbound, proxy.ResultOverLimit); n != 1 {
		t.Errorf("over_limit = %d", n)
	}
	waitLine(t, lp.logs, "connection limit reached")
	held[0].Close()
	lp.waitActive(t, 2, 2*time.Second)
	roundTripLocal(t, lp.dial(t, proxy.Outbound), "a slot came back")
}

// TestBulkBothWaysIntact moves megabytes both ways at once through the
// splice path and checks every byte.
func TestBulkBothWaysIntact(t *testing.T) {
	lp := startLocal(t, nil)
	lp.to(localEcho(t))
	bulkEcho(t, lp.dial(t, proxy.Outbound), 8<<20)
}

// bulkEcho writes n random bytes through an echo and checks they come
// back whole.
func bulkEcho(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = c.Write(data)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	wg.Wait()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echoed %d of %d bytes intact (%v)", len(got), n, err)
	}
}
