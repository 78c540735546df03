package livetrace_test

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/livetrace"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// TestLiveTraceAgreesWithTheModel makes real connections in a pod on both
// iptables variants and checks that the rules the kernel reports matching
// are the ones the tracer predicts.
func TestLiveTraceAgreesWithTheModel(t *testing.T) {
	cfg := captest.Seed()
	cfg.OutboundExcludePorts = []capture.PortRange{capture.Port(25), capture.Port(3306)}
	cfg.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.99/32")}
	plan, err := capture.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := iptables.RenderAll(plan)
	pod := netip.MustParseAddr("10.1.0.5")
	out := func(dst string, port uint16, uid, gid uint32) trace.Packet {
		d := netip.MustParseAddr(dst)
		p := trace.Packet{Direction: trace.Out, Proto: "tcp", Src: pod, Dst: d, DstPort: port, UID: uid, GID: gid, OutIface: "eth0"}
		if d == pod || d.IsLoopback() {
			p.OutIface = "lo"
		}
		if d.IsLoopback() {
			p.Src = d
		}
		return p
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
	for _, v := range []iptables.Variant{iptables.Legacy, iptables.NFT} {
		t.Run(v.Name, func(t *testing.T) {
			testnet.RequireRoot(t, v.Save, "nft")
			p := testnet.NewPod(t)
			if _, err := iptables.Sync(context.Background(), iptables.Exec{NetNS: p.NS.Path},
				iptables.SyncRequest{Want: rules, Binary: "iptables-" + v.Name}); err != nil {
				t.Fatal(err)
			}
			for _, pkt := range packets {
				res, err := trace.Trace(plan, pkt)
				if err != nil {
					t.Fatal(err)
				}
				model, err := livetrace.Model(plan, res)
				if err != nil {
					t.Fatal(err)
				}
				kernel, err := livetrace.Run(context.Background(), p.NS.Path, v, pkt)
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
			if out, _ := exec.Command("ip", "netns", "exec", p.NS.Name, v.Save, "-t", "raw").Output(); strings.Contains(string(out), "TRACE") {
				t.Errorf("the TRACE rule was left behind:\n%s", out)
			}
		})
	}
}
