package install_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/kernelpod"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestKernelMatchesTracer checks the model against each backend: for
// random wide configurations (TPROXY, DNS, dual-stack; applied by
// reconciling one into the next) and random connections, a third of them
// IPv6, the listener that answers is the one the tracer says.
func TestKernelMatchesTracer(t *testing.T) {
	const configs, perConfig = 45, 12 // 540 probes per backend
	for bi, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			r := rand.New(rand.NewPCG(11, uint64(bi)))
			probes, v6 := 0, 0
			outcomes := map[string]int{}
			for i := 0; i < configs; i++ {
				cfg := captest.WideConfig(r, []string{"eth0", "eth1", "eth+", "tap0"}, kernelpod.PeerIP)
				p.MustSync(t, cfg, false, true)
				plan, _ := capture.Build(cfg)
				for j := 0; j < perConfig; j++ {
					pkt, from := kernelPacket(r, p, j%3 == 0)
					want, err := trace.Trace(plan, pkt)
					if err != nil {
						t.Fatal(err)
					}
					src := netip.Addr{}
					if pkt.Src == netip.MustParseAddr("127.0.0.6") || pkt.Src == netip.MustParseAddr("::6") {
						src = pkt.Src
					}
					got, err := from.Dial(src, netip.AddrPortFrom(pkt.Dst, pkt.DstPort), pkt.UID, pkt.GID)
					if exp := expected(pkt, want); got != exp {
						t.Fatalf("config %d: %s\n  kernel: %q (%v)\n  tracer: %q (%s)\n  config: %+v", i, pkt, got, err, exp, want.Reason, cfg)
					}
					probes++
					if pkt.Dst.Is6() {
						v6++
					}
					kind := strings.Fields(got + " none")[0]
					if want.TProxy {
						kind = "tproxy"
					}
					outcomes[kind]++
				}
			}
			t.Logf("%d probes (%d IPv6) agreed with the tracer: %v", probes, v6, outcomes)
			for _, kind := range []string{"out", "in", "tproxy", "app", "peer"} {
				if outcomes[kind] < 10 {
					t.Errorf("only %d probes ended at %q; the generators do not exercise it", outcomes[kind], kind)
				}
			}
		})
	}
}

// kernelPacket draws a TCP connection the pod's topology can make, in IPv6
// when v6, and the namespace it starts from.
func kernelPacket(r *rand.Rand, p *kernelpod.Pod, v6 bool) (trace.Packet, *testnet.NS) {
	pkt := captest.Packet(r, kernelpod.PodIP, []string{"eth0"}, []string{"eth0", "eth1"})
	pkt.Proto = "tcp"
	from := p.NS
	if pkt.Direction == trace.In {
		pkt.Src, from = kernelpod.PeerIP, p.Peer
		if pkt.InIface == "eth1" {
			pkt.Src, pkt.Dst, from = netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("10.2.0.5"), p.Peer2
		}
	}
	if v6 {
		pkt = captest.ToV6(pkt)
	}
	if pkt.Direction == trace.Out {
		switch d := pkt.Dst; {
		case d == kernelpod.PodIP || d == kernelpod.PodIP6 || d.IsLoopback():
			pkt.OutIface = "lo"
		case strings.HasPrefix(d.String(), "192.168.") || strings.HasPrefix(d.String(), "203.0.113.") ||
			strings.HasPrefix(d.String(), "fd00:192:") || strings.HasPrefix(d.String(), "fd00:203:"):
			pkt.OutIface = "eth1"
		default:
			pkt.OutIface = "eth0"
		}
	}
	return pkt, from
}

// expected is the line the listener that the tracer predicts would answer.
func expected(pkt trace.Packet, res trace.Result) string {
	return captest.ExpectedReply(pkt, res, pkt.Dst == kernelpod.PodIP || pkt.Dst == kernelpod.PodIP6 || pkt.Dst.IsLoopback() || pkt.Direction == trace.In)
}
