package install_test

import (
	"context"
	"github.com/shunt-dev/shunt/internal/kernelpod"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// TestKernelCapturesBothFamilies: the seed's arguments with --dual-stack
// capture IPv4 and IPv6 alike, leave the proxy's own traffic alone, and
// let the proxy's ::6 passthrough reach the app.
func TestKernelCapturesBothFamilies(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			if res := p.MustSync(t, kernelpod.DualSeed(), false, false); !res.Changed {
				t.Fatal("the first apply changed nothing")
			}
			for _, dst := range []string{"10.96.0.10", "fd00:96::10"} {
				d := kernelpod.AP(dst, 80)
				kernelpod.ExpectReply(t, p.NS, netip.Addr{}, d, 101, 101, "out "+d.String())
				kernelpod.ExpectReply(t, p.NS, netip.Addr{}, d, 1337, 1337, "peer "+d.String())
			}
			for _, self := range []netip.Addr{kernelpod.PodIP, kernelpod.PodIP6} {
				d := netip.AddrPortFrom(self, 8080)
				kernelpod.ExpectReply(t, p.NS, netip.Addr{}, d, 1337, 1337, "in "+d.String())
				kernelpod.ExpectReply(t, p.Peer, netip.Addr{}, d, 0, 0, "in "+d.String())
				kernelpod.ExpectReply(t, p.Peer, netip.Addr{}, netip.AddrPortFrom(self, 15021), 0, 0, "app "+netip.AddrPortFrom(self, 15021).String())
			}
			kernelpod.ExpectReply(t, p.NS, netip.MustParseAddr("::6"), kernelpod.AP("fd00:1::5", 8080), 1337, 1337, "app [fd00:1::5]:8080")
			kernelpod.ExpectReply(t, p.NS, netip.Addr{}, kernelpod.AP("::1", 8080), 101, 101, "app [::1]:8080")
		})
	}
}

// TestKernelIPv6AloneWithoutDualStack: without --dual-stack, IPv6 is not
// captured on any backend (istio-iptables' iptables behaviour).
func TestKernelIPv6AloneWithoutDualStack(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			cfg := kernelpod.DualSeed()
			cfg.DualStack = false
			p.MustSync(t, cfg, false, false)
			kernelpod.ExpectReply(t, p.NS, netip.Addr{}, kernelpod.AP("10.96.0.10", 80), 101, 101, "out 10.96.0.10:80")
			kernelpod.ExpectReply(t, p.NS, netip.Addr{}, kernelpod.AP("fd00:96::10", 80), 101, 101, "peer [fd00:96::10]:80")
			kernelpod.ExpectReply(t, p.Peer, netip.Addr{}, kernelpod.AP("fd00:1::5", 8080), 0, 0, "app [fd00:1::5]:8080")
		})
	}
}

// TestKernelTProxy: in TPROXY mode the proxy's inbound listener accepts
// the connection with the client's own address and the original
// destination, on both families, through the policy route shunt installs;
// cleanup takes the route out again.
func TestKernelTProxy(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			cfg := kernelpod.DualSeed()
			cfg.InboundMode = capture.ModeTProxy
			seen := clientAddrListener(t, p.NS, 15007)
			cfg.InboundPort = 15007
			p.MustSync(t, cfg, false, false)
			if rules := p.NS.Run(t, "ip", "rule"); !strings.Contains(rules, "fwmark 0x539 lookup 133") {
				t.Fatalf("no policy rule for the TPROXY mark:\n%s", rules)
			}
			for _, c := range []struct{ client, dst netip.Addr }{{kernelpod.PeerIP, kernelpod.PodIP}, {kernelpod.PeerIP6, kernelpod.PodIP6}} {
				dst := netip.AddrPortFrom(c.dst, 8080)
				if got, err := p.Peer.Dial(netip.Addr{}, dst, 0, 0); err != nil || !strings.HasPrefix(got, "tproxy "+dst.String()+" from ") {
					t.Fatalf("%s: got %q (%v)", dst, got, err)
				}
				from := <-seen
				if from.Addr() != c.client {
					t.Errorf("the proxy saw the connection from %s, want the client %s", from, c.client)
				}
			}
			kernelpod.ExpectReply(t, p.Peer, netip.Addr{}, kernelpod.AP("10.1.0.5", 15021), 0, 0, "app 10.1.0.5:15021")
			kernelpod.ExpectReply(t, p.NS, netip.Addr{}, kernelpod.AP("10.96.0.10", 80), 101, 101, "out 10.96.0.10:80")
			p.MustSync(t, cfg, true, false)
			if rules := p.NS.Run(t, "ip", "rule") + p.NS.Run(t, "ip", "-6", "rule"); strings.Contains(rules, "0x539") {
				t.Errorf("cleanup left the policy rule:\n%s", rules)
			}
		})
	}
}

// clientAddrListener listens transparently on port (both families) and
// answers "tproxy LOCAL from REMOTE", sending REMOTE on the channel.
func clientAddrListener(t *testing.T, ns *testnet.NS, port int) chan netip.AddrPort {
	seen := make(chan netip.AddrPort, 4)
	for _, network := range []string{"tcp4", "tcp6"} {
		var ln net.Listener
		if err := ns.Do(func() (err error) {
			ln, err = testnet.Transparent.Listen(context.Background(), network, map[string]string{"tcp4": "0.0.0.0", "tcp6": "[::]"}[network]+":"+strconv.Itoa(port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
				local := c.LocalAddr().(*net.TCPAddr).AddrPort()
				local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
				_, _ = c.Write([]byte("tproxy " + local.String() + " from " + remote.String() + "\n"))
				c.Close()
				seen <- remote
			}
		}()
	}
	return seen
}
