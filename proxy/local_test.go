package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/proxy"
)

// localProxy is a proxy run in the test process on loopback, without
// capture rules: every connection's "original destination" is whatever
// the test says, and the dialer can be swapped for one that misbehaves.
type localProxy struct {
	*proxy.Proxy
	access *scenario.Buffer
	logs   *scenario.Buffer
	dst    atomic.Value // netip.AddrPort every connection is "going to"
	stop   context.CancelFunc
	served chan error
}

func startLocal(t testing.TB, mutate func(*proxy.Config)) *localProxy {
	t.Helper()
	lp := &localProxy{access: &scenario.Buffer{}, logs: &scenario.Buffer{}, served: make(chan error, 1)}
	cfg := proxy.DefaultConfig()
	cfg.OutboundPort, cfg.InboundPort = 0, 0
	cfg.ListenAddr, cfg.ListenAddr6 = netip.MustParseAddr("127.0.0.1"), netip.Addr{}
	cfg.InboundSource = netip.MustParseAddr("127.0.0.1")
	cfg.HealthAddr, cfg.PrometheusAddr, cfg.AdminAddr, cfg.StatusAddr = "", "", "", ""
	cfg.AccessLog = lp.access
	cfg.AccessLogFormat = l4Format
	// The L4 tests connect and wait: no protocol detection unless a test
	// turns it on.
	cfg.ProtocolDetectionTimeout = 0
	// Stopping ends the test: stop both listeners and go once idle.
	cfg.DrainListeners, cfg.DrainTimeout = proxy.DrainAll, time.Second
	cfg.OriginalDst = func(*net.TCPConn, proxy.Direction) (netip.AddrPort, error) {
		return lp.dst.Load().(netip.AddrPort), nil
	}
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(lp.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := proxy.New(cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	lp.Proxy = p
	lp.dst.Store(netip.MustParseAddrPort("127.0.0.1:9"))
	ctx, cancel := context.WithCancel(context.Background())
	lp.stop = cancel
	go func() { lp.served <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-lp.served:
		case <-time.After(15 * time.Second):
			t.Error("the proxy did not stop")
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s\naccess log:\n%s", lp.logs, lp.access)
		}
	})
	return lp
}

// to points every new connection at dst.
func (lp *localProxy) to(dst netip.AddrPort) { lp.dst.Store(dst) }

func (lp *localProxy) dial(t *testing.T, dir proxy.Direction) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(lp.Addr(dir)))
	if err != nil {
		t.Fatalf("dial the %s listener: %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitAccess waits for an access log line with every part.
func (lp *localProxy) waitAccess(t *testing.T, parts ...string) string {
	t.Helper()
	return waitLine(t, lp.access, parts...)
}

func waitLine(t *testing.T, b *scenario.Buffer, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	lines:
		for _, line := range strings.Split(b.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return line
		}
	}
	t.Fatalf("no line with %q in:\n%s", parts, b)
	return ""
}

func (lp *localProxy) waitActive(t *testing.T, want int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := lp.Metrics().Active(proxy.Outbound) + lp.Metrics().Active(proxy.Inbound)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open after %s, want %d", got, within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// localEcho is a loopback server that echoes each connection and
// half-closes after its peer does.
func localEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 32<<10)
				for {
					n, err := c.Read(b)
					if n > 0 {
						if _, werr := c.Write(b[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						_ = c.(*net.TCPConn).CloseWrite()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// blackhole is a dialer whose connects never complete: like a SYN sent to
// a dropped port, it waits until its context ends.
func blackhole(dialing *atomic.Int64) func(context.Context, proxy.Direction, netip.AddrPort) (*net.TCPConn, error) {
	return func(ctx context.Context, _ proxy.Direction, _ netip.AddrPort) (*net.TCPConn, error) {
		dialing.Add(1)
		defer dialing.Add(-1)
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
	}
}

func roundTripLocal(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v", buf, err)
	}
}
