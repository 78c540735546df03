package iptables_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// variants are the two iptables implementations every kernel test runs on.
var variants = []string{"iptables-legacy", "iptables-nft"}

// pod is testnet's Pod with a second interface, eth1, to a second peer that
// answers for 192.168.0.0/16 and 203.0.113.0/24. The pod listens on 15001 ("out"), 15006 ("in") and, as the
// app, on every port of captest.PortPool ("app"); the peers answer "peer".
type pod struct {
	ns, peer, peer2 *testnet.NS
	binary          string
}

var (
	podIP  = netip.MustParseAddr("10.1.0.5")
	podIP1 = netip.MustParseAddr("10.2.0.5")
)

func newPod(t *testing.T, binary string) *pod {
	testnet.RequireRoot(t, binary+"-restore", binary+"-save")
	base := testnet.NewPod(t)
	p := &pod{ns: base.NS, peer: base.Peer, peer2: testnet.NewNS(t, "peer2"), binary: binary}
	testnet.Link(t, p.ns, "eth1", "10.2.0.5/24", p.peer2, "eth0", "10.2.0.1/24")
	for _, r := range []string{"192.168.0.0/16", "203.0.113.0/24"} {
		p.ns.Run(t, "ip", "route", "add", r, "via", "10.2.0.1")
		p.peer2.Run(t, "ip", "route", "add", "local", r, "dev", "lo")
	}
	p.ns.Listen(t, "0.0.0.0:15001", "out")
	p.ns.Listen(t, "0.0.0.0:15006", "in")
	for _, port := range captest.PortPool {
		addr := fmt.Sprintf("0.0.0.0:%d", port)
		p.ns.Listen(t, addr, "app")
		p.peer.Listen(t, addr, "peer")
		p.peer2.Listen(t, addr, "peer")
	}
	return p
}

func (p *pod) sync(t *testing.T, cfg *capture.Config, opts iptables.ApplyOptions) (iptables.Result, error) {
	t.Helper()
	req := iptables.SyncRequest{Binary: p.binary, Options: opts, Cleanup: cfg == nil}
	if cfg != nil {
		plan, err := capture.Build(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		if req.Want, err = iptables.RenderAll(plan); err != nil {
			t.Fatal(err)
		}
	}
	return iptables.Sync(context.Background(), iptables.Exec{NetNS: p.ns.Path}, req)
}

func (p *pod) mustSync(t *testing.T, cfg *capture.Config, opts iptables.ApplyOptions) iptables.Result {
	t.Helper()
	res, err := p.sync(t, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// save is the namespace's rules with comments and counters taken out, so two
// saves compare equal when the rules are.
func (p *pod) save(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(p.ns.Run(t, p.binary+"-save"), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(counters.ReplaceAllString(line, "[0:0]") + "\n")
		}
	}
	return b.String()
}

var seed = captest.Seed

func addr(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}

func expectReply(t *testing.T, ns *testnet.NS, src netip.Addr, dst netip.AddrPort, uid, gid uint32, want string) {
	t.Helper()
	got, err := ns.Dial(src, dst, uid, gid)
	if err != nil || got != want {
		t.Errorf("%s as %d:%d: got %q (%v), want %q", dst, uid, gid, got, err, want)
	}
}

func TestKernelSeedCaptures(t *testing.T) {
	for _, bin := range variants {
		t.Run(bin, func(t *testing.T) {
			p := newPod(t, bin)
			expectReply(t, p.ns, netip.Addr{}, addr("10.96.0.10", 80), 101, 101, "peer 10.96.0.10:80")
			cfg := seed()
			p.mustSync(t, &cfg, iptables.ApplyOptions{})
			expectReply(t, p.ns, netip.Addr{}, addr("10.96.0.10", 80), 101, 101, "out 10.96.0.10:80")
			expectReply(t, p.ns, netip.Addr{}, addr("192.168.1.7", 443), 101, 101, "out 192.168.1.7:443")
			expectReply(t, p.ns, netip.Addr{}, addr("10.96.0.10", 80), 1337, 1337, "peer 10.96.0.10:80")
			expectReply(t, p.ns, netip.Addr{}, addr("10.1.0.5", 8080), 1337, 1337, "in 10.1.0.5:8080")
			expectReply(t, p.ns, netip.Addr{}, addr("127.0.0.1", 8080), 101, 101, "app 127.0.0.1:8080")
			expectReply(t, p.peer, netip.Addr{}, addr("10.1.0.5", 8080), 0, 0, "in 10.1.0.5:8080")
			expectReply(t, p.peer, netip.Addr{}, addr("10.1.0.5", 15021), 0, 0, "app 10.1.0.5:15021")
		})
	}
}

func TestKernelReapplyIsNoop(t *testing.T) {
	for _, bin := range variants {
		t.Run(bin, func(t *testing.T) {
			p := newPod(t, bin)
			cfg := seed()
			cfg.DropInvalid = true
			if res := p.mustSync(t, &cfg, iptables.ApplyOptions{}); res.Transaction == "" {
				t.Fatal("first apply did nothing")
			}
			before := p.save(t)
			if res := p.mustSync(t, &cfg, iptables.ApplyOptions{}); res.Transaction != "" {
				t.Errorf("re-apply was not a no-op; it ran:\n%s", res.Transaction)
			}
			if res := p.mustSync(t, &cfg, iptables.ApplyOptions{Force: true}); res.Transaction == "" {
				t.Error("--force-apply did not rewrite the rules")
			}
			if after := p.save(t); after != before {
				t.Errorf("rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// foreign is what a user and kube-proxy might have put in the pod's tables
// before shunt runs.
const foreign = `*nat
:KUBE-SERVICES - [0:0]
:USER-CHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -d 198.51.100.0/24 -j USER-CHAIN
-A POSTROUTING -o eth1 -j MASQUERADE
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.1.0.1:6443
-A USER-CHAIN -j RETURN
COMMIT
*mangle
-A PREROUTING -i eth1 -j MARK --set-xmark 0x7/0xffffffff
COMMIT
*filter
-A INPUT -p tcp -m tcp --dport 9 -j DROP
COMMIT
`

func TestKernelCleanupLeavesForeignRules(t *testing.T) {
	for _, bin := range variants {
		t.Run(bin, func(t *testing.T) {
			p := newPod(t, bin)
			p.ns.Run(t, "sh", "-c", bin+"-restore --noflush <<'EOF'\n"+foreign+"EOF")
			before := p.save(t)
			cfg := seed()
			cfg.DropInvalid = true
			cfg.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32")}
			p.mustSync(t, &cfg, iptables.ApplyOptions{})
			// A user adds a rule after shunt's jump; it must survive too.
			p.ns.Run(t, bin, "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.7/32", "-j", "RETURN")
			applied := p.save(t)
			if !strings.Contains(applied, capture.ChainOutput) {
				t.Fatalf("shunt's rules are not there:\n%s", applied)
			}
			var want strings.Builder
			for _, line := range strings.SplitAfter(applied, "\n") {
				if !strings.Contains(line, capture.ChainPrefix) {
					want.WriteString(line)
				}
			}
			res := p.mustSync(t, nil, iptables.ApplyOptions{})
			if res.Transaction == "" {
				t.Fatal("cleanup did nothing")
			}
			after := p.save(t)
			if after != want.String() {
				t.Errorf("cleanup changed foreign rules:\nwant:\n%s\ngot:\n%s", want.String(), after)
			}
			if !strings.Contains(after, "-A OUTPUT -d 198.51.100.7/32 -j RETURN") || !strings.Contains(before, "KUBE-SERVICES") {
				t.Errorf("foreign rules lost:\n%s", after)
			}
			if res := p.mustSync(t, nil, iptables.ApplyOptions{}); res.Transaction != "" {
				t.Errorf("a second cleanup was not a no-op:\n%s", res.Transaction)
			}
		})
	}
}

func TestKernelReconcile(t *testing.T) {
	for _, bin := range variants {
		t.Run(bin, func(t *testing.T) {
			p := newPod(t, bin)
			a := seed()
			b := seed()
			b.OutboundAll, b.OutboundCIDRs = false, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
			b.DropInvalid = true
			p.mustSync(t, &a, iptables.ApplyOptions{})
			before := p.save(t)
			_, err := p.sync(t, &b, iptables.ApplyOptions{})
			var drift *iptables.DriftError
			if !errors.As(err, &drift) || !strings.Contains(drift.Diff, "10.96.0.0/12") {
				t.Fatalf("a different config without --reconcile: got %v, want a DriftError showing the change", err)
			}
			if after := p.save(t); after != before {
				t.Fatalf("a refused apply changed the rules:\n%s", after)
			}
			// Switch configurations back and forth while an app keeps
			// connecting to a destination both capture: not one connection
			// may slip past the proxy during a switch.
			var dials, escaped atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					got, err := p.ns.Dial(netip.Addr{}, addr("10.96.0.10", 80), 101, 101)
					dials.Add(1)
					if err != nil || got != "out 10.96.0.10:80" {
						escaped.Add(1)
						t.Errorf("during reconcile: got %q (%v)", got, err)
					}
				}
			}()
			for i := 0; i < 20; i++ {
				next := &b
				if i%2 == 1 {
					next = &a
				}
				p.mustSync(t, next, iptables.ApplyOptions{Reconcile: true})
			}
			close(stop)
			wg.Wait()
			if dials.Load() < 20 {
				t.Errorf("only %d connections were made during the switches", dials.Load())
			}
			t.Logf("%d connections during 20 reconciles, %d escaped", dials.Load(), escaped.Load())
			want, _ := capture.Build(a)
			wantRules, _ := iptables.Render(want, capture.IPv4)
			var have *iptables.Ruleset
			have, err = iptables.ParseSave(p.ns.Run(t, bin+"-save"))
			if err != nil || !iptables.Equal(have, wantRules) {
				t.Errorf("after reconciling back, the rules are not the plan's (%v):\n%s", err, iptables.Diff(have, wantRules))
			}
		})
	}
}

// TestKernelMatchesTracer checks the model against the kernel: for random
// configurations and connections, the listener that answers is the one the
// tracer says the connection goes to.
func TestKernelMatchesTracer(t *testing.T) {
	const configs, perConfig = 50, 12
	for vi, bin := range variants {
		t.Run(bin, func(t *testing.T) {
			p := newPod(t, bin)
			r := rand.New(rand.NewPCG(7, uint64(vi)))
			probes := 0
			outcomes := map[string]int{}
			for i := 0; i < configs; i++ {
				cfg := captest.Config(r, []string{"eth0", "eth1", "eth+", "tap0"})
				p.mustSync(t, &cfg, iptables.ApplyOptions{Reconcile: true})
				plan, _ := capture.Build(cfg)
				for j := 0; j < perConfig; j++ {
					pkt, from := kernelPacket(r, p)
					want, err := trace.Trace(plan, pkt)
					if err != nil {
						t.Fatal(err)
					}
					src := netip.Addr{}
					if pkt.Src == netip.MustParseAddr("127.0.0.6") {
						src = pkt.Src
					}
					got, err := from.Dial(src, netip.AddrPortFrom(pkt.Dst, pkt.DstPort), pkt.UID, pkt.GID)
					if exp := expected(pkt, want); got != exp {
						t.Fatalf("config %d: %s\n  kernel: %q (%v)\n  tracer: %q (%s)\n  config: %+v", i, pkt, got, err, exp, want.Reason, cfg)
					}
					probes++
					outcomes[strings.Fields(got + " none")[0]]++
				}
			}
			t.Logf("%d probes agreed with the tracer: %v", probes, outcomes)
			for _, kind := range []string{"out", "in", "app", "peer"} {
				if outcomes[kind] < 20 {
					t.Errorf("only %d probes ended at %q; the generators do not exercise it", outcomes[kind], kind)
				}
			}
		})
	}
}

// kernelPacket draws a TCP connection the pod's topology can make, and the
// namespace it starts from.
func kernelPacket(r *rand.Rand, p *pod) (trace.Packet, *testnet.NS) {
	pkt := captest.Packet(r, podIP, []string{"eth0"}, []string{"eth0", "eth1"})
	pkt.Proto = "tcp"
	if pkt.Direction == trace.In {
		if pkt.InIface == "eth1" {
			pkt.Src, pkt.Dst = netip.MustParseAddr("10.2.0.1"), podIP1
			return pkt, p.peer2
		}
		pkt.Src = netip.MustParseAddr("10.1.0.1")
		return pkt, p.peer
	}
	switch {
	case pkt.Dst == podIP || pkt.Dst.IsLoopback():
		pkt.OutIface = "lo"
	case netip.MustParsePrefix("192.168.0.0/16").Contains(pkt.Dst) || netip.MustParsePrefix("203.0.113.0/24").Contains(pkt.Dst):
		pkt.OutIface = "eth1"
	default:
		pkt.OutIface = "eth0"
	}
	return pkt, p.ns
}

// expected is the line the listener that the tracer predicts would answer.
func expected(pkt trace.Packet, res trace.Result) string {
	return captest.ExpectedReply(pkt, res, pkt.Direction == trace.In || pkt.Dst == podIP || pkt.Dst.IsLoopback())
}

// TestKernelDetect: the variant holding rules wins; an empty namespace
// gets the one the system's iptables command is.
func TestKernelDetect(t *testing.T) {
	testnet.RequireRoot(t, "iptables-legacy-save", "iptables-nft-save")
	ctx := context.Background()
	detect := func(ns *testnet.NS) string {
		v, _, err := iptables.Detect(ctx, iptables.Exec{NetNS: ns.Path})
		if err != nil {
			t.Fatal(err)
		}
		return v.Name
	}
	empty := testnet.NewNS(t, "detect")
	if got, want := detect(empty), systemVariant(t); got != want {
		t.Errorf("empty namespace: %s, want the system's %s", got, want)
	}
	for _, v := range []string{"legacy", "nft"} {
		ns := testnet.NewNS(t, "detect")
		ns.Run(t, "iptables-"+v, "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.1/32", "-j", "RETURN")
		if got := detect(ns); got != v {
			t.Errorf("rules in iptables-%s: detected %s", v, got)
		}
	}
}

func systemVariant(t *testing.T) string {
	out, _ := exec.Command("iptables", "--version").Output()
	if strings.Contains(string(out), "legacy") {
		return "legacy"
	}
	return "nft"
}
