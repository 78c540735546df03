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

var (
	podIP     = netip.MustParseAddr("10.1.0.5")
	dnsServer = netip.MustParseAddr("10.1.0.1")
)

// TestProperties checks, over thousands of generated configurations and
// packets, what capture must guarantee whatever the configuration:
//   - the proxy's own traffic never reaches the outbound listener (no loop),
//     and reaches the inbound listener only as the hairpin to the pod itself;
//   - the proxy's inbound passthrough (source 127.0.0.6) is never captured;
//   - an app TCP connection that no exclusion covers is captured, and one an
//     exclusion covers is not;
//   - inbound TCP is captured exactly on the configured ports;
//   - only new TCP connections and DNS are redirected;
//   - an app's DNS query to a captured name server goes to the DNS
//     listener, in conntrack zone 2, and the proxy's own, in zone 1, do not.
//
// Half the configurations are the original REDIRECT/IPv4 kind, half are
// wide (TPROXY, DNS capture, dual-stack), and a third of the packets are
// IPv6.
func TestProperties(t *testing.T) {
	const configs, packets = 3000, 30
	r := rand.New(rand.NewPCG(1, 2))
	ifaces := captest.IfacePool
	checked := map[string]int{}
	for i := 0; i < configs; i++ {
		cfg := captest.Config(r, ifaces)
		if i%2 == 1 {
			server := dnsServer
			if r.IntN(2) == 0 {
				server = netip.MustParseAddr(captest.V6Of[server.String()])
			}
			cfg = captest.WideConfig(r, ifaces, server)
		}
		plan, err := capture.Build(cfg)
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		for j := 0; j < packets; j++ {
			p := captest.Packet(r, podIP, []string{"eth0", "eth1", "veth0"}, []string{"eth0", "eth1", "tap0", "veth0"})
			if j%4 == 0 {
				p = dnsQuery(r)
			}
			if j%3 == 0 {
				p = captest.ToV6(p)
			}
			if j%10 == 0 {
				p.State = capture.StateInvalid
			}
			res, err := trace.Trace(plan, p)
			if err != nil {
				t.Fatalf("config %d packet %s: %v", i, p, err)
			}
			props := properties
			if p.Family() == capture.IPv6 && !cfg.DualStack {
				props = ipv6Alone
			}
			for _, prop := range props {
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
	for _, prop := range append(properties, ipv6Alone...) {
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
	{"proxy traffic never reaches the outbound or DNS listener", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !isProxy(c, p) {
			return true, false
		}
		return !(r.Outcome == trace.Redirected && (r.Port == c.OutboundPort || r.Port == c.DNSPort)), true
	}},
	{"proxy traffic reaches the inbound listener only as the hairpin", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !isProxy(c, p) || r.Outcome != trace.Redirected {
			return true, false
		}
		return r.Port == c.InboundPort && p.OutIface == "lo" && !isLoopback(c, p.Dst) && p.DstPort != c.TunnelPort &&
			!(c.CapturesDNS() && p.DstPort == 53), true
	}},
	{"inbound passthrough is never captured", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.Out || !p.Src.IsLoopback() || p.Src.IsLoopback() && p.Src == p.Dst ||
			p.OutIface != "lo" || excludedIface(c.ExcludeInterfaces, p.OutIface) {
			return true, false
		}
		return r.Outcome != trace.Redirected, true
	}},
	{"app connection is captured exactly when no exclusion covers it", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Direction != trace.Out || p.State != "" || p.Proto != "tcp" || isProxy(c, p) || p.OutIface == "lo" || toDNSServer(c, p) {
			return true, false
		}
		want := !excludedIface(c.ExcludeInterfaces, p.OutIface) &&
			!capture.PortsContain(c.OutboundExcludePorts, p.DstPort) &&
			groupCaptured(c, p.GID) &&
			!isLoopback(c, p.Dst) && !anyContains(c.OutboundExcludeCIDRs, p.Dst) &&
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
	// TPROXY is left out: like the kernel's TPROXY target, it takes every
	// packet that no established connection claims.
	{"only new TCP connections and DNS are redirected", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.Proto == "tcp" && p.State == "" || r.TProxy {
			return true, false
		}
		return r.Outcome != trace.Redirected || p.State == "" && r.Port == c.DNSPort && p.DstPort == 53 && c.CapturesDNS(), true
	}},
	// A packet sent over lo comes back in by lo, and is checked then.
	{"invalid packets are dropped inbound exactly with drop-invalid", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if p.State != capture.StateInvalid {
			return true, false
		}
		in := p.InIface
		if p.Direction == trace.Out {
			in = p.OutIface
		}
		exempt := c.InboundMode == capture.ModeTProxy &&
			(excludedIface(c.ExcludeInterfaces, in) || excludedIface(c.KubeVirtInterfaces, in))
		return (r.Outcome == trace.Dropped) == (c.DropInvalid && (p.Direction == trace.In || in == "lo") && !exempt), true
	}},
	{"an app's DNS query to a captured server goes to the DNS listener, in zone 2", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !toDNSServer(c, p) || p.Direction != trace.Out || p.State != "" || isProxy(c, p) ||
			excludedIface(c.ExcludeInterfaces, p.OutIface) || capture.PortsContain(c.OutboundExcludePorts, 53) || !groupCaptured(c, p.GID) {
			return true, false
		}
		return r.Outcome == trace.Redirected && r.Port == c.DNSPort && (p.Proto == "tcp" || r.Zone == capture.ZoneApp), true
	}},
	{"the proxy's UDP DNS queries stay out, in zone 1", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
		if !c.CapturesDNS() || !isProxy(c, p) || p.Proto != "udp" || p.DstPort != 53 || p.State != "" {
			return true, false
		}
		return r.Outcome == trace.Passed && r.Zone == capture.ZoneUpstream, true
	}},
}

// ipv6Alone is the one property of IPv6 packets without dual-stack.
var ipv6Alone = []property{{"IPv6 is left alone without dual-stack", func(c capture.Config, p trace.Packet, r trace.Result) (bool, bool) {
	return r.Outcome == trace.Passed && r.Zone == 0 && r.Mark == 0, true
}}}

// dnsQuery is an app's or the proxy's DNS query, UDP or TCP, to the name
// server or elsewhere.
func dnsQuery(r *rand.Rand) trace.Packet {
	p := trace.Packet{Direction: trace.Out, Proto: "udp", Src: podIP, Dst: dnsServer, DstPort: 53, OutIface: "eth0",
		UID: captest.UIDPool[r.IntN(len(captest.UIDPool))], GID: captest.GIDPool[r.IntN(len(captest.GIDPool))]}
	if r.IntN(3) == 0 {
		p.Proto = "tcp"
	}
	if r.IntN(4) == 0 {
		p.Dst = netip.MustParseAddr("10.96.0.10")
	}
	return p
}

// toDNSServer reports a packet DNS capture covers.
func toDNSServer(c capture.Config, p trace.Packet) bool {
	return c.CapturesDNS() && p.DstPort == 53 && (c.CaptureAllDNS || slices.Contains(c.DNSServers, p.Dst))
}

func isLoopback(c capture.Config, a netip.Addr) bool {
	return c.LoopbackCIDR.Contains(a) || a == netip.IPv6Loopback()
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
