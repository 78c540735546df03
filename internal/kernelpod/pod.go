// Package kernelpod is the capture kernel tests' pod: network namespaces
// wired like a pod, its peers and listeners, and a Sync through any of
// shunt's backends. Tests that use it skip, with a message, when not root.
package kernelpod

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

// Backends are the three ways shunt can hold a pod's rules; every capture
// kernel test runs on each.
var Backends = []string{"iptables-legacy", "iptables-nft", "nft"}

// Pod is the capture kernel tests' pod: testnet's Pod, dual-stack, with a
// second interface, eth1, to a second peer. Peer answers for
// 10.96.0.0/12, 172.16.0.0/12, 169.254.0.0/16 and their IPv6 twins
// (captest.V6Of); Peer2 for 192.168.0.0/16, 203.0.113.0/24 and theirs. The pod
// listens on 15001 ("out"), 15006 ("in", transparent for TPROXY) and, as
// the app, on every port of PortPool ("app"), on both families; the peers
// answer "peer". Backend is the backend every Sync goes through.
type Pod struct {
	NS, Peer, Peer2 *testnet.NS
	Backend         string
}

// The pod's and its first peer's addresses.
var (
	PodIP, PodIP6   = netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00:1::5")
	PodIP1          = netip.MustParseAddr("10.2.0.5")
	PeerIP, PeerIP6 = netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd00:1::1")
)

// Tools are the commands a backend needs.
func Tools(backend string) []string {
	if backend == "nft" {
		return []string{"nft"}
	}
	return []string{backend + "-restore", backend + "-save", "ip6" + backend[2:] + "-restore"}
}

// New builds the pod for one backend; everything is removed when the
// test ends. It skips the test when not root.
func New(t *testing.T, backend string) *Pod {
	testnet.RequireRoot(t, Tools(backend)...)
	base := testnet.NewPod(t)
	p := &Pod{NS: base.NS, Peer: base.Peer, Peer2: testnet.NewNS(t, "peer2"), Backend: backend}
	testnet.Link(t, p.NS, "eth1", "10.2.0.5/24", p.Peer2, "eth0", "10.2.0.1/24")
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
		ns := map[string]*testnet.NS{"pod": p.NS, "peer": p.Peer, "peer2": p.Peer2}[cmd[0]]
		ns.Run(t, cmd[1:]...)
	}
	for _, wildcard := range []string{"0.0.0.0", "[::]"} {
		p.NS.Listen(t, wildcard+":15001", "out")
		p.NS.Listen(t, wildcard+":15006", "in")
		for _, port := range captest.PortPool {
			addr := fmt.Sprintf("%s:%d", wildcard, port)
			p.NS.Listen(t, addr, "app")
			p.Peer.Listen(t, addr, "peer")
			p.Peer2.Listen(t, addr, "peer")
		}
	}
	return p
}

// Sync installs cfg's capture (or cleans up) through the pod's backend,
// as `shunt redirect` does.
func (p *Pod) Sync(t *testing.T, cfg capture.Config, cleanup, reconcile bool) (install.Result, error) {
	t.Helper()
	plan, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := install.Request{Plan: plan, Cleanup: cleanup, NetNS: p.NS.Path, Reconcile: reconcile}
	if p.Backend == "nft" {
		req.NativeNFT = true
	} else {
		req.IptablesBinary = p.Backend
	}
	return install.Sync(context.Background(), req)
}

// MustSync is Sync that fails the test on an error.
func (p *Pod) MustSync(t *testing.T, cfg capture.Config, cleanup, reconcile bool) install.Result {
	t.Helper()
	res, err := p.Sync(t, cfg, cleanup, reconcile)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

var counters = regexp.MustCompile(`\[\d+:\d+\]|counter packets \d+ bytes \d+`)

// State is everything in the pod's kernel that a capture backend could
// touch: every nftables table (iptables-nft's included), legacy iptables
// of both families, policy rules, routes and addresses; counters taken
// out, and empty built-in chains (which the kernel makes when a table is
// first used, and which do nothing) too.
func (p *Pod) State(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"nft", "list", "ruleset"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"ip", "rule"}, {"ip", "-6", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "addr"},
	} {
		text := counters.ReplaceAllString(p.NS.Run(t, cmd...), "")
		if cmd[0] == "nft" {
			text = withoutEmptyChains(text)
		}
		for _, line := range strings.Split(text, "\n") {
			// ip says this on stderr when another test's namespace goes
			// while it lists a veth whose peer was there.
			if line == "Error: Peer netns reference is invalid." {
				continue
			}
			// The kernel's own IPv6 link-local address, and the local
			// route it makes once duplicate address detection is done,
			// change on their own while a test runs; no backend
			// touches them.
			if cmd[0] == "ip" && strings.Contains(line, "fe80::") {
				continue
			}
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

// ExpectReply connects from ns as uid:gid (from src, if valid) and checks
// which listener answered.
func ExpectReply(t *testing.T, ns *testnet.NS, src netip.Addr, dst netip.AddrPort, uid, gid uint32, want string) {
	t.Helper()
	got, err := ns.Dial(src, dst, uid, gid)
	if err != nil || got != want {
		t.Errorf("%s as %d:%d: got %q (%v), want %q", dst, uid, gid, got, err, want)
	}
}

// AP is an address and port.
func AP(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}

// DualSeed is the seed configuration with dual-stack on.
func DualSeed() capture.Config {
	c := captest.Seed()
	c.DualStack = true
	return c
}

// LineDiff shows the lines of got that want lacks ("+") and the other way
// ("-"), for a failure message.
func LineDiff(want, got string) string {
	var b strings.Builder
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for _, l := range g {
		if !strings.Contains(want, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	for _, l := range w {
		if !strings.Contains(got, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	return b.String()
}
