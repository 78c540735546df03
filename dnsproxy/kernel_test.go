package dnsproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/internal/kernelpod"
	"github.com/shunt-dev/shunt/internal/testnet"
	"github.com/shunt-dev/shunt/sidecar"
)

// in runs fn inside ns, its sockets made as uid and gid (what netfilter's
// owner match reads).
func in(ns *testnet.NS, uid, gid uint32, fn func() error) error {
	return ns.Do(func() error {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		return fn()
	})
}

// TestKernelDNSProxy: with the capture's DNS redirect, an app's queries
// to its resolv.conf server, over UDP and TCP, IPv4 and IPv6, are
// answered by the DNS proxy: mesh names from its table, other names from
// the real server, which the proxy's own queries (as 1337) reach
// uncaptured; the answers come from the server's address.
func TestKernelDNSProxy(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			// The pod's name server, in the peer's namespace.
			zone := map[string][]dns.RR{"www.example.org.": {rr(t, "www.example.org. 300 IN A 198.51.100.1")}}
			up := &upstream{}
			for _, a := range []string{"10.1.0.1:53", "[fd00:1::1]:53"} {
				var pc net.PacketConn
				var ln net.Listener
				if err := in(p.Peer, 0, 0, func() (err error) {
					pc, ln, err = ListenPair(a)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				serveZone(t, up, zone, pc, ln)
			}
			// The DNS proxy, as the sidecar's identity, on loopback.
			dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
				err = in(p.NS, sidecar.ProxyUID, sidecar.ProxyGID, func() error {
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			}
			s, err := New(Config{Upstreams: []string{"10.1.0.1:53"}, Dial: dial},
				NewTable(meshHosts, "default", "cluster.local"), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []string{"127.0.0.1:15053", "[::1]:15053"} {
				var pc net.PacketConn
				var ln net.Listener
				if err := in(p.NS, sidecar.ProxyUID, sidecar.ProxyGID, func() (err error) {
					pc, ln, err = ListenPair(a)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				s.Attach(pc, ln)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			defer func() { cancel(); <-done }()

			cfg := kernelpod.DualSeed()
			cfg.RedirectDNS = true
			cfg.DNSServers = []netip.Addr{kernelpod.PeerIP, kernelpod.PeerIP6}
			p.MustSync(t, cfg, false, false)
			for _, server := range []string{"10.1.0.1:53", "[fd00:1::1]:53"} {
				for _, network := range []string{"udp", "tcp"} {
					for name, want := range map[string]string{
						"backend-service.default.svc.cluster.local": "10.96.0.20",
						"www.example.org": "198.51.100.1",
					} {
						resp, err := p.NS.ExchangeDNS(network, server, 101, 101, name, dns.TypeA)
						if err != nil || answers(resp) != want {
							t.Errorf("the app asks %s for %s over %s: %v %v, want %s", server, name, network, resp, err, want)
						}
					}
				}
			}
			if n := up.queries.Load(); n != 1 {
				t.Errorf("the name server was asked %d times, want once (www.example.org, then cached)", n)
			}
			if s.Stats.Queries.Load() != 8 {
				t.Errorf("the DNS proxy answered %d queries, want all 8 the app made", s.Stats.Queries.Load())
			}
		})
	}
}
