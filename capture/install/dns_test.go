package install_test

import (
	"github.com/shunt-dev/shunt/internal/kernelpod"
	"net/netip"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestKernelDNS: with DNS capture, an app's UDP and TCP queries to the
// resolv.conf name server land on the proxy's DNS port (and the answer
// still comes from the server's address), the proxy's own queries reach
// the real server, and conntrack keeps the two in zones 2 and 1.
func TestKernelDNS(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			testnet.RequireRoot(t, "conntrack")
			cfg := kernelpod.DualSeed()
			cfg.RedirectDNS = true
			cfg.DNSServers = []netip.Addr{kernelpod.PeerIP, kernelpod.PeerIP6}
			// The proxy's DNS listener answers from the address the query
			// came to, which REDIRECT makes loopback's (a socket bound to
			// the wildcard would answer from the pod's address, and conntrack
			// could not undo the redirect on the answer).
			for i, any := range []string{"0.0.0.0", "[::]"} {
				p.Peer.ServeUDP(t, any+":53", "upstream", 0, 0)
				p.NS.ServeUDP(t, []string{"127.0.0.1", "[::1]"}[i]+":15053", "proxy-dns", 1337, 1337)
				p.NS.Listen(t, any+":15053", "dns")
			}
			p.MustSync(t, cfg, false, false)
			for _, server := range []netip.Addr{kernelpod.PeerIP, kernelpod.PeerIP6} {
				dst := netip.AddrPortFrom(server, 53)
				if got, from, err := p.NS.ExchangeUDP(dst, 101, 101, "q"); err != nil || got != "proxy-dns" || from != dst {
					t.Errorf("app's query to %s: got %q from %s (%v), want proxy-dns from the server", dst, got, from, err)
				}
				if got, _, err := p.NS.ExchangeUDP(dst, 1337, 1337, "q"); err != nil || got != "upstream" {
					t.Errorf("the proxy's query to %s: got %q (%v), want upstream", dst, got, err)
				}
				kernelpod.ExpectReply(t, p.NS, netip.Addr{}, dst, 101, 101, "dns "+dst.String())
			}
			// Another server is not captured (only resolv.conf's are).
			if got, _, err := p.NS.ExchangeUDP(netip.MustParseAddrPort("10.96.0.10:53"), 101, 101, "q"); err != nil || got != "upstream" {
				t.Errorf("a query to a server not in resolv.conf: got %q (%v), want it uncaptured", got, err)
			}
			zone2 := p.NS.Run(t, "conntrack", "-L", "-p", "udp", "-w", "2")
			zone1 := p.NS.Run(t, "conntrack", "-L", "-p", "udp", "-w", "1")
			if !strings.Contains(zone2, "dport=53") || !strings.Contains(zone2, "sport=15053") {
				t.Errorf("the app's redirected query is not tracked in zone 2:\n%s", zone2)
			}
			if !strings.Contains(zone1, "dport=53") || strings.Contains(zone1, "15053") {
				t.Errorf("the proxy's upstream query is not tracked (alone) in zone 1:\n%s", zone1)
			}
		})
	}
}
