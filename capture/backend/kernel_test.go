package backend_test

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/kernelpod"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// choose is the pod's backend, as `shunt redirect` would pick it.
func choose(t *testing.T, p *kernelpod.Pod) backend.Backend {
	t.Helper()
	b, err := backend.Choose(context.Background(), backend.Choice{NetNS: p.NS.Path,
		NativeNFT: p.Backend == backend.NFT, Binary: map[bool]string{true: "", false: p.Backend}[p.Backend == backend.NFT]})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKernelReconcileUnderTraffic switches between two configurations
// twenty times while an app keeps connecting to a destination both
// capture: not one connection may slip past the proxy during a switch.
func TestKernelReconcileUnderTraffic(t *testing.T) {
	for _, name := range kernelpod.Backends {
		t.Run(name, func(t *testing.T) {
			p := kernelpod.New(t, name)
			a, b := captest.Seed(), captest.Seed()
			b.OutboundAll, b.OutboundCIDRs = false, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
			b.DropInvalid = true
			p.MustSync(t, a, false, false)
			before := p.State(t)
			_, err := p.Sync(t, b, false, false)
			if !backend.IsDrift(err) || !strings.Contains(err.Error(), "10.96.0.0/12") {
				t.Fatalf("a different config without reconcile: got %v, want a drift error showing the change", err)
			}
			if after := p.State(t); after != before {
				t.Fatalf("a refused apply changed the kernel:\n%s", kernelpod.LineDiff(before, after))
			}
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
					got, err := p.NS.Dial(netip.Addr{}, kernelpod.AP("10.96.0.10", 80), 101, 101)
					dials.Add(1)
					if err != nil || got != "out 10.96.0.10:80" {
						escaped.Add(1)
						t.Errorf("during reconcile: got %q (%v)", got, err)
					}
				}
			}()
			for i := 0; i < 20; i++ {
				next := b
				if i%2 == 1 {
					next = a
				}
				p.MustSync(t, next, false, true)
			}
			close(stop)
			wg.Wait()
			if dials.Load() < 20 {
				t.Errorf("only %d connections were made during the switches", dials.Load())
			}
			t.Logf("%d connections during 20 reconciles, %d escaped", dials.Load(), escaped.Load())
			be := choose(t, p)
			want, _ := capture.Build(a)
			have, err := be.Read(context.Background())
			if err != nil || !have.Equal(mustRender(t, be, want)) {
				t.Errorf("after reconciling back, the rules are not the plan's (%v)", err)
			}
		})
	}
}

// TestKernelChooseDetects: the iptables variant holding rules wins; an
// empty namespace gets the one the system's iptables command is.
func TestKernelChooseDetects(t *testing.T) {
	testnet.RequireRoot(t, "iptables-legacy-save", "iptables-nft-save")
	detect := func(ns *testnet.NS) string {
		b, err := backend.Choose(context.Background(), backend.Choice{NetNS: ns.Path})
		if err != nil {
			t.Fatal(err)
		}
		return b.Name()
	}
	system := "iptables-nft"
	if out, _ := exec.Command("iptables", "--version").Output(); strings.Contains(string(out), "legacy") {
		system = "iptables-legacy"
	}
	if got := detect(testnet.NewNS(t, "detect")); got != system {
		t.Errorf("empty namespace: %s, want the system's %s", got, system)
	}
	for _, v := range []string{"iptables-legacy", "iptables-nft"} {
		ns := testnet.NewNS(t, "detect")
		ns.Run(t, v, "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.1/32", "-j", "RETURN")
		if got := detect(ns); got != v {
			t.Errorf("rules in %s: detected %s", v, got)
		}
	}
}

// TestKernelLiveTraceAgreesWithTheModel makes real connections in a pod on
// every backend and checks that the rules the kernel reports matching are
// the ones the tracer predicts, through the backend holding the rules.
func TestKernelLiveTraceAgreesWithTheModel(t *testing.T) {
	cfg := captest.Seed()
	cfg.OutboundExcludePorts = []capture.PortRange{capture.Port(25), capture.Port(3306)}
	cfg.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.99/32"), netip.MustParsePrefix("10.96.0.98/32")}
	p, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod := kernelpod.PodIP
	out := func(dst string, port uint16, uid, gid uint32) trace.Packet {
		d := netip.MustParseAddr(dst)
		pkt := trace.Packet{Direction: trace.Out, Proto: "tcp", Src: pod, Dst: d, DstPort: port, UID: uid, GID: gid, OutIface: "eth0"}
		if d == pod || d.IsLoopback() {
			pkt.OutIface = "lo"
		}
		if d.IsLoopback() {
			pkt.Src = d
		}
		return pkt
	}
	passthrough := out("10.1.0.5", 8080, 1337, 1337)
	passthrough.Src = netip.MustParseAddr("127.0.0.6")
	packets := []trace.Packet{
		out("10.96.0.10", 80, 101, 101),   // the app: captured
		out("10.96.0.10", 80, 1337, 1337), // the proxy: not
		out("10.96.0.10", 443, 101, 1337), // the proxy's GID: not
		out("127.0.0.1", 8080, 101, 101),  // loopback: not
		out("10.1.0.5", 8080, 1337, 1337), // the proxy to the pod itself: inbound listener
		passthrough,                       // inbound passthrough: not
		out("10.96.0.10", 3306, 101, 101), // excluded port
		out("10.96.0.99", 80, 101, 101),   // excluded range
	}
	for _, name := range kernelpod.Backends {
		t.Run(name, func(t *testing.T) {
			testnet.RequireRoot(t, append(kernelpod.Tools(name), "nft")...)
			pd := kernelpod.New(t, name)
			pd.MustSync(t, cfg, false, false)
			b, _, err := backend.Holding(context.Background(), pd.NS.Path)
			if err != nil || b.Name() != name {
				t.Fatalf("the backend holding the rules: %v (%v)", b, err)
			}
			for _, pkt := range packets {
				res, err := trace.Trace(p, pkt)
				if err != nil {
					t.Fatal(err)
				}
				model, err := b.Model(p, res)
				if err != nil {
					t.Fatal(err)
				}
				kernel, err := b.Trace(context.Background(), pkt)
				if err != nil {
					t.Fatalf("%s: %v", pkt, err)
				}
				if len(kernel) == 0 {
					t.Fatalf("%s: the kernel reported no step", pkt)
				}
				t.Logf("%s → %s: %v", pkt, res.Verdict(), kernel)
				if !slices.Equal(kernel, model) {
					t.Errorf("%s:\n  kernel %v\n  model  %v (%s)", pkt, kernel, model, res.Verdict())
				}
			}
			if out, _ := exec.Command("ip", "netns", "exec", pd.NS.Name, "nft", "list", "ruleset").Output(); strings.Contains(string(out), "shunt: live trace") {
				t.Errorf("the trace rule was left behind:\n%s", out)
			}
		})
	}
}
