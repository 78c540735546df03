package install_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/install"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// backends are the three ways shunt can hold a pod's rules; every kernel
// test runs on each.
var backends = []string{"iptables-legacy", "iptables-nft", "nft"}

// pod is testnet's Pod, dual-stack, with a second interface, eth1, to a
// second peer. Peer answers for 10.96.0.0/12, 172.16.0.0/12,
// 169.254.0.0/16 and their IPv6 twins (captest.V6Of); peer2 for
// 192.168.0.0/16, 203.0.113.0/24 and theirs. The pod listens on 15001
// ("out"), 15006 ("in", transparent for TPROXY) and, as the app, on every
// port of captest.PortPool ("app"), on both families; the peers answer
// "peer".
type pod struct {
	ns, peer, peer2 *testnet.NS
	backend         string
}

var (
	podIP, podIP6 = netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00:1::5")
	peerIP        = netip.MustParseAddr("10.1.0.1")
	peerIP6       = netip.MustParseAddr("fd00:1::1")
)

func tools(backend string) []string {
	if backend == "nft" {
		return []string{"nft"}
	}
	return []string{backend + "-restore", backend + "-save", "ip6" + backend[2:] + "-restore"}
}

func newPod(t *testing.T, backend string) *pod {
	testnet.RequireRoot(t, tools(backend)...)
	base := testnet.NewPod(t)
	p := &pod{ns: base.NS, peer: base.Peer, peer2: testnet.NewNS(t, "peer2"), backend: backend}
	testnet.Link(t, p.ns, "eth1", "10.2.0.5/24", p.peer2, "eth0", "10.2.0.1/24")
	for _, cmd := range [][]string{
		{"pod", "ip", "-6", "addr", "add", "fd00:1::5/64", "dev", "eth0", "nodad"},
		{"peer", "ip", "-6", "addr", "add", "fd00:1::1/64", "dev", "eth0", "nodad"},
		{"pod", "ip", "-6", "addr", "add", "fd00:2::5/64", "dev", "eth1", "nodad"},
		{"peer2", "ip", "-6", "addr", "add", "fd00:2::1/64", "dev", "eth0", "nodad"},
		{"pod", "ip", "-6", "route", "add", "default", "via", "fd00:1::1"},
		{"pod", "ip", "-6", "route", "add", "fd00:192::/32", "via", "fd00:2::1"},
		{"pod", "ip", "-6", "route", "add", "fd00:203::/32", "via", "fd00:2::1"},
		{"pod", "ip", "route", "add", "192.168.0.0/16", "via", "10.2.0.1"},
		{"pod", "ip", "route", "add", "203.0.113.0/24", "via", "10.2.0.1"},
		{"peer", "ip", "-6", "route", "add", "local", "fd00:96::/32", "dev", "lo"},
		{"peer", "ip", "-6", "route", "add", "local", "fd00:172::/32", "dev", "lo"},
		{"peer", "ip", "-6", "route", "add", "local", "fd00:169::/32", "dev", "lo"},
		{"peer2", "ip", "route", "add", "local", "192.168.0.0/16", "dev", "lo"},
		{"peer2", "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo"},
		{"peer2", "ip", "-6", "route", "add", "local", "fd00:192::/32", "dev", "lo"},
		{"peer2", "ip", "-6", "route", "add", "local", "fd00:203::/32", "dev", "lo"},
	} {
		ns := map[string]*testnet.NS{"pod": p.ns, "peer": p.peer, "peer2": p.peer2}[cmd[0]]
		ns.Run(t, cmd[1:]...)
	}
	for _, any := range []string{"0.0.0.0", "[::]"} {
		p.ns.Listen(t, any+":15001", "out")
		p.ns.Listen(t, any+":15006", "in")
		for _, port := range captest.PortPool {
			addr := fmt.Sprintf("%s:%d", any, port)
			p.ns.Listen(t, addr, "app")
			p.peer.Listen(t, addr, "peer")
			p.peer2.Listen(t, addr, "peer")
		}
	}
	return p
}

func (p *pod) sync(t *testing.T, cfg capture.Config, cleanup, reconcile bool) (install.Result, error) {
	t.Helper()
	plan, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := install.Request{Plan: plan, Cleanup: cleanup, NetNS: p.ns.Path, Reconcile: reconcile}
	if p.backend == "nft" {
		req.NativeNFT = true
	} else {
		req.IptablesBinary = p.backend
	}
	return install.Sync(context.Background(), req)
}

func (p *pod) mustSync(t *testing.T, cfg capture.Config, cleanup, reconcile bool) install.Result {
	t.Helper()
	res, err := p.sync(t, cfg, cleanup, reconcile)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

var counters = regexp.MustCompile(`\[\d+:\d+\]|counter packets \d+ bytes \d+`)

// state is everything in the pod's kernel that a capture backend could
// touch: every nftables table (iptables-nft's included), legacy iptables
// of both families, policy rules, routes and addresses; counters taken
// out, and empty built-in chains (which the kernel makes when a table is
// first used, and which do nothing) too.
func (p *pod) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"nft", "list", "ruleset"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"ip", "rule"}, {"ip", "-6", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "addr"},
	} {
		text := counters.ReplaceAllString(p.ns.Run(t, cmd...), "")
		if cmd[0] == "nft" {
			text = withoutEmptyChains(text)
		}
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasPrefix(line, "#") && !emptyBuiltin.MatchString(line) && !strings.HasPrefix(line, "*") && line != "COMMIT" {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// emptyBuiltin is a built-in chain's declaration in iptables-save.
var emptyBuiltin = regexp.MustCompile(`^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT`)

// withoutEmptyChains drops chains with no rules from an nft listing, and
// tables left with no chains.
func withoutEmptyChains(listing string) string {
	var out, table, chain []string
	rules := 0
	for _, line := range strings.Split(listing, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
		case strings.HasPrefix(trimmed, "table "):
			table = []string{line}
		case strings.HasPrefix(trimmed, "chain "):
			chain, rules = []string{line}, 0
		case trimmed == "}" && chain != nil:
			if rules > 0 {
				table = append(append(table, chain...), line)
			}
			chain = nil
		case trimmed == "}":
			if len(table) > 1 {
				out = append(append(out, table...), line)
			}
			table = nil
		case chain != nil:
			chain = append(chain, line)
			if !strings.HasPrefix(trimmed, "type ") && !strings.HasPrefix(trimmed, "comment ") {
				rules++
			}
		default:
			table = append(table, line)
		}
	}
	return strings.Join(out, "\n")
}

func expectReply(t *testing.T, ns *testnet.NS, src netip.Addr, dst netip.AddrPort, uid, gid uint32, want string) {
	t.Helper()
	got, err := ns.Dial(src, dst, uid, gid)
	if err != nil || got != want {
		t.Errorf("%s as %d:%d: got %q (%v), want %q", dst, uid, gid, got, err, want)
	}
}

func ap(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}

// dualSeed is the seed configuration with dual-stack on.
func dualSeed() capture.Config {
	c := captest.Seed()
	c.DualStack = true
	return c
}
