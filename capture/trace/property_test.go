package trace_test

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
)

var podIP = netip.MustParseAddr("10.1.0.5")

// TestProperties checks, over thousands of generated configurations and
// packets, what capture must guarantee whatever the configuration:
//   - the proxy's own traffic never reaches the outbound listener (no loop),
//     and reaches the inbound listener only as the hairpin to the pod itself;
//   - the proxy's inbound passthrough (source 127.0.0.6) is never captured;
//   - an app TCP connection that no exclusion covers is captured, and one an
//     exclusion covers is not;
//   - inbound TCP is captured exactly on the configured ports;
//   - only TCP is redirected, and only new connections.
func TestProperties(t *testing.T) {
	const configs, packets = 3000, 30
	r := rand.New(rand.NewPCG(1, 2))
	ifaces := captest.IfacePool
	checked := map[string]int{}
	for i := 0; i < configs; i++ {
		cfg := captest.Config(r, ifaces)
		plan, err := capture.Build(cfg)
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		for j := 0; j < packets; j++ {
			p := captest.Packet(r, podIP, []string{"eth0", "eth1", "veth0"}, []string{"eth0", "eth1", "tap0", "veth0"})
			if j%10 == 0 {
				p.State = capture.StateInvalid
			}
			res, err := trace.Trace(plan, p)
			if err != nil {
				t.Fatalf("config %d packet %s: %v", i, p, err)
			}
			for _, prop := range properties {
				ok, applies := prop.check(cfg, p, res)
				if !applies {
					continue
				}
				checked[prop.name]++
				if !ok {
					t.Fatalf("%s fails for\n  config %+v\n  packet %s\n  got %s (%s)", prop.name, cfg, p, res.Verdict(), res.Reason)
				}
			}
		}
	}
	for _, prop := range properties {
		if checked[prop.name] < 500 {
			t.Errorf("%q was checked only %d times; the generators miss it", prop.name, checked[prop.name])
		}
	}
	t.Logf("checked: %v", checked)
}

type property struct {
	name  string
	check func(capture.Config, trace.Packet, trace.Result) (ok, applies bool)
}

var properties = []property{
	{"proxy traffic never reaches the outbound listener", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !isProxy(c, p) {
			return true, false
		}
		return !(r.Outcome == trace.Redirected && r.Port == c.OutboundPort), true
	}},
	{"proxy traffic reaches the inbound listener only as the hairpin", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !isProxy(c, p) || r.Outcome != trace.Redirected {
			return true, false
		}
		return r.Port == c.InboundPort && p.OutIface == "lo" && !c.LoopbackCIDR.Contains(p.Dst) && p.DstPort != c.TunnelPort, true
	}},
	{"inbound passthrough is never captured", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.Out || p.Src != netip.MustParseAddr("127.0.0.6") || p.OutIface != "lo" || excludedIface(c.ExcludeInterfaces, p.OutIface) {
			return true, false
		}
		return r.Outcome == trace.Passed, true
	}},
	{"app connection is captured exactly when no exclusion covers it", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.Out || p.State != "" || p.Proto != "tcp" || isProxy(c, p) || p.OutIface == "lo" {
			return true, false
		}
		want := !excludedIface(c.ExcludeInterfaces, p.OutIface) &&
			!capture.PortsContain(c.OutboundExcludePorts, p.DstPort) &&
			groupCaptured(c, p.GID) &&
			!c.LoopbackCIDR.Contains(p.Dst) && !anyContains(c.OutboundExcludeCIDRs, p.Dst) &&
			(c.OutboundAll || anyContains(c.OutboundCIDRs, p.Dst) || capture.PortsContain(c.OutboundPorts, p.DstPort))
		return want == (r.Outcome == trace.Redirected && r.Port == c.OutboundPort) && (want || r.Outcome == trace.Passed), true
	}},
	{"inbound is captured exactly on the configured ports", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.In || p.State != "" || p.Proto != "tcp" ||
			excludedIface(c.KubeVirtInterfaces, p.InIface) || excludedIface(c.ExcludeInterfaces, p.InIface) {
			return true, false
		}
		want := p.DstPort != c.TunnelPort && (c.InboundAll && !capture.PortsContain(c.InboundExcludePorts, p.DstPort) ||
			!c.InboundAll && capture.PortsContain(c.InboundPorts, p.DstPort))
		return want == (r.Outcome == trace.Redirected && r.Port == c.InboundPort), true
	}},
	{"VM interface traffic goes to the outbound listener when its range is captured", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.In || p.State != "" || p.Proto != "tcp" || !excludedIface(c.KubeVirtInterfaces, p.InIface) {
			return true, false
		}
		want := c.OutboundAll || anyContains(c.OutboundCIDRs, p.Dst)
		return want == (r.Outcome == trace.Redirected && r.Port == c.OutboundPort), true
	}},
	{"only new TCP connections are redirected", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Proto == "tcp" && p.State == "" {
			return true, false
		}
		return r.Outcome != trace.Redirected, true
	}},
	{"invalid packets are dropped inbound exactly with drop-invalid", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.State != capture.StateInvalid {
			return true, false
		}
		return (r.Outcome == trace.Dropped) == (c.DropInvalid && p.Direction == trace.In), true
	}},
}

func isProxy(c capture.Config, p trace.Packet) bool {
	return p.Direction == trace.Out && (slices.Contains(c.ProxyUIDs, p.UID) || slices.Contains(c.ProxyGIDs, p.GID))
}

func groupCaptured(c capture.Config, gid uint32) bool {
	if c.OwnerGroupsAll {
		return !slices.Contains(c.OwnerGroupsExclude, gid)
	}
	return slices.Contains(c.OwnerGroupsInclude, gid)
}

func excludedIface(patterns []string, name string) bool {
	for _, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "+"); ok && strings.HasPrefix(name, prefix) || pat == name {
			return true
		}
	}
	return false
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
