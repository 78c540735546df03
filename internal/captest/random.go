// Package captest generates capture configurations and packets for property
// tests and for the tests that check the tracer against the kernel. Values
// come from small pools so that generated packets often hit the edges of
// generated configurations.
package captest

import (
	"math/rand/v2"
	"net/netip"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
)

// Pools the generators draw from. The kernel tests listen on every port and
// route every address here.
var (
	PortPool  = []uint16{80, 443, 8080, 3306, 9000, 15008, 15020, 15021, 15090}
	CIDRPool  = []string{"10.0.0.0/8", "10.96.0.0/12", "172.16.0.0/12", "192.168.1.0/24", "10.96.0.10/32", "169.254.169.254/32", "127.0.0.1/32"}
	DstPool   = []string{"10.96.0.10", "10.97.1.1", "172.16.5.5", "192.168.1.7", "192.168.2.7", "169.254.169.254", "127.0.0.1", "203.0.113.9"}
	UIDPool   = []uint32{0, 1000, 1337, 1338}
	GIDPool   = []uint32{0, 1000, 1337, 3000}
	IfacePool = []string{"eth0", "eth1", "veth+", "tap0"}
)

func pick[T any](r *rand.Rand, pool []T) T { return pool[r.IntN(len(pool))] }

// some picks each item of pool with probability p.
func some[T any](r *rand.Rand, pool []T, p float64) []T {
	var out []T
	for _, x := range pool {
		if r.Float64() < p {
			out = append(out, x)
		}
	}
	return out
}

func portRanges(ps []uint16) []capture.PortRange {
	out := make([]capture.PortRange, len(ps))
	for i, p := range ps {
		out[i] = capture.Port(p)
	}
	return out
}

// Seed is the configuration of the seed's istio-init args:
// -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020.
func Seed() capture.Config {
	c := capture.DefaultConfig()
	c.InboundAll, c.OutboundAll = true, true
	c.InboundExcludePorts = portRanges([]uint16{15090, 15021, 15020})
	return c
}

// Config returns a random valid configuration. Interfaces are drawn from
// ifaces, so a kernel test can name the ones its namespace has.
func Config(r *rand.Rand, ifaces []string) capture.Config {
	c := capture.DefaultConfig()
	if r.IntN(4) > 0 {
		c.InboundAll = true
		c.InboundExcludePorts = portRanges(some(r, PortPool, 0.3))
	} else {
		c.InboundPorts = portRanges(some(r, PortPool, 0.4))
		c.InboundExcludePorts = portRanges(some(r, PortPool, 0.2)) // ignored without '*'
	}
	if r.IntN(3) > 0 {
		c.OutboundAll = true
	} else {
		for _, s := range some(r, CIDRPool, 0.3) {
			c.OutboundCIDRs = append(c.OutboundCIDRs, netip.MustParsePrefix(s))
		}
	}
	for _, s := range some(r, CIDRPool[:6], 0.2) {
		c.OutboundExcludeCIDRs = append(c.OutboundExcludeCIDRs, netip.MustParsePrefix(s))
	}
	c.OutboundPorts = portRanges(some(r, PortPool, 0.15))
	c.OutboundExcludePorts = portRanges(some(r, PortPool, 0.15))
	if r.IntN(3) == 0 {
		c.ExcludeInterfaces = []string{pick(r, ifaces)}
	}
	if r.IntN(4) == 0 {
		c.KubeVirtInterfaces = []string{pick(r, ifaces)}
	}
	c.ProxyUIDs = []uint32{1337}
	if r.IntN(4) == 0 {
		c.ProxyUIDs = append(c.ProxyUIDs, 1338)
	}
	c.ProxyGIDs = []uint32{1337}
	switch r.IntN(5) {
	case 0:
		c.OwnerGroupsAll, c.OwnerGroupsInclude = false, []uint32{pick(r, []uint32{0, 1000, 3000})}
	case 1:
		c.OwnerGroupsExclude = []uint32{3000}
	}
	if r.IntN(5) == 0 {
		c.LoopbackCIDR = netip.MustParsePrefix("127.0.0.0/8")
	}
	c.DropInvalid = r.IntN(3) == 0
	return c
}

// Packet returns a random first packet of a connection. podIP is the pod's
// own address; outIfaces and inIfaces are the interfaces a packet may use.
func Packet(r *rand.Rand, podIP netip.Addr, outIfaces, inIfaces []string) trace.Packet {
	p := trace.Packet{Proto: "tcp", DstPort: pick(r, PortPool), UID: pick(r, UIDPool), GID: pick(r, GIDPool)}
	if r.IntN(8) == 0 {
		p.Proto = "udp"
	}
	if r.IntN(3) == 0 {
		p.Direction = trace.In
		p.Dst = podIP
		p.Src = netip.MustParseAddr(pick(r, DstPool[:6]))
		p.InIface = pick(r, inIfaces)
		p.UID, p.GID = 0, 0
		return p
	}
	p.Direction = trace.Out
	p.Src = podIP
	switch r.IntN(6) {
	case 0: // to the pod's own address, over lo
		p.Dst, p.OutIface = podIP, "lo"
	case 1: // to loopback
		p.Src, p.Dst, p.OutIface = netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), "lo"
	case 2: // the proxy's inbound passthrough
		p.Src, p.Dst, p.OutIface = netip.MustParseAddr("127.0.0.6"), podIP, "lo"
	default:
		p.Dst = netip.MustParseAddr(pick(r, DstPool))
		if p.Dst.IsLoopback() {
			p.Src, p.OutIface = p.Dst, "lo"
		} else {
			p.OutIface = pick(r, outIfaces)
		}
	}
	return p
}

// IPv6 counterparts of the pools: the kernel tests give the pod and its
// peers these addresses too.
var (
	CIDRPool6 = []string{"fd00:96::/64", "fd00:96::10/128", "fd00:172::/64", "::1/128"}
	// V6Of maps an IPv4 destination of DstPool (and the pod's special
	// addresses) to its IPv6 twin in the test topology.
	V6Of = map[string]string{
		"10.96.0.10": "fd00:96::10", "10.97.1.1": "fd00:96::11", "172.16.5.5": "fd00:172::5",
		"192.168.1.7": "fd00:192::7", "192.168.2.7": "fd00:192::8", "169.254.169.254": "fd00:169::254",
		"127.0.0.1": "::1", "127.0.0.6": "::6", "203.0.113.9": "fd00:203::9",
		"10.1.0.5": "fd00:1::5", "10.2.0.5": "fd00:2::5", "10.1.0.1": "fd00:1::1", "10.2.0.1": "fd00:2::1",
	}
)

// WideConfig is Config with the capture breadth on some of the time:
// TPROXY inbound, DNS capture (to DNSServer, or all), and always dual-stack
// with IPv6 ranges drawn too.
func WideConfig(r *rand.Rand, ifaces []string, dnsServer netip.Addr) capture.Config {
	c := Config(r, ifaces)
	c.DualStack = true
	if c.OutboundAll {
		for _, s := range some(r, CIDRPool6[:3], 0.2) {
			c.OutboundExcludeCIDRs = append(c.OutboundExcludeCIDRs, netip.MustParsePrefix(s))
		}
	} else {
		for _, s := range some(r, CIDRPool6, 0.3) {
			c.OutboundCIDRs = append(c.OutboundCIDRs, netip.MustParsePrefix(s))
		}
	}
	if r.IntN(3) == 0 {
		c.InboundMode = capture.ModeTProxy
	}
	if r.IntN(2) == 0 {
		c.RedirectDNS = true
		c.CaptureAllDNS = r.IntN(3) == 0
		c.DNSServers = []netip.Addr{dnsServer}
	}
	return c
}

// ToV6 turns a packet drawn by Packet into its IPv6 twin.
func ToV6(p trace.Packet) trace.Packet {
	p.Src = netip.MustParseAddr(V6Of[p.Src.String()])
	p.Dst = netip.MustParseAddr(V6Of[p.Dst.String()])
	return p
}
