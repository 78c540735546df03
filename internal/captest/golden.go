package captest

import (
	"net/netip"

	"github.com/shunt-dev/shunt/capture"
)

// Ports is a list of single ports.
func Ports(ps ...uint16) []capture.PortRange {
	out := make([]capture.PortRange, len(ps))
	for i, p := range ps {
		out[i] = capture.Port(p)
	}
	return out
}

// PortSeq is n consecutive ports from from.
func PortSeq(from, n int) []capture.PortRange {
	var out []capture.PortRange
	for i := 0; i < n; i++ {
		out = append(out, capture.Port(uint16(from+i)))
	}
	return out
}

// Prefixes parses CIDR ranges.
func Prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// GoldenCases are small mutations of the seed configuration, one per axis.
var GoldenCases = []struct {
	Name   string
	Mutate func(*capture.Config)
}{
	{"seed", func(c *capture.Config) {}},
	{"nothing-captured", func(c *capture.Config) { c.InboundAll, c.OutboundAll, c.InboundExcludePorts = false, false, nil }},
	{"inbound-ports", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, Ports(80, 443) }},
	{"inbound-port-range", func(c *capture.Config) {
		c.InboundAll, c.InboundPorts = false, []capture.PortRange{{Lo: 8000, Hi: 8100}, capture.Port(9090)}
	}},
	{"inbound-exclude-ignored-without-wildcard", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, Ports(80) }},
	{"inbound-ports-chunked", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, PortSeq(9000, 20) }},
	{"inbound-exclude-chunked", func(c *capture.Config) { c.InboundExcludePorts = PortSeq(9000, 31) }},
	{"inbound-none", func(c *capture.Config) { c.InboundAll, c.InboundExcludePorts = false, nil }},
	{"outbound-cidrs", func(c *capture.Config) {
		c.OutboundAll, c.OutboundCIDRs = false, Prefixes("10.0.0.0/8", "172.16.0.0/12")
	}},
	{"outbound-exclude-cidrs", func(c *capture.Config) {
		c.OutboundExcludeCIDRs = Prefixes("169.254.169.254/32", "10.96.0.0/12")
	}},
	{"outbound-none", func(c *capture.Config) { c.OutboundAll = false }},
	{"outbound-include-ports", func(c *capture.Config) { c.OutboundAll, c.OutboundPorts = false, Ports(3306, 5432) }},
	{"outbound-exclude-ports", func(c *capture.Config) { c.OutboundExcludePorts = Ports(25, 587) }},
	{"outbound-exclude-ports-chunked", func(c *capture.Config) {
		c.OutboundExcludePorts = append(PortSeq(20000, 14), capture.PortRange{Lo: 30000, Hi: 30100})
	}},
	{"exclude-interfaces", func(c *capture.Config) { c.ExcludeInterfaces = []string{"eth1", "ppp+"} }},
	{"kube-virt-all", func(c *capture.Config) { c.KubeVirtInterfaces = []string{"tap0"} }},
	{"kube-virt-cidrs", func(c *capture.Config) {
		c.KubeVirtInterfaces, c.OutboundAll, c.OutboundCIDRs = []string{"tap0", "tap1"}, false, Prefixes("10.0.0.0/8", "192.168.0.0/16")
	}},
	{"kube-virt-and-excluded", func(c *capture.Config) {
		c.KubeVirtInterfaces, c.ExcludeInterfaces = []string{"tap0"}, []string{"eth1"}
	}},
	{"proxy-uids", func(c *capture.Config) { c.ProxyUIDs, c.ProxyGIDs = []uint32{1337, 1338}, []uint32{1337, 1338} }},
	{"proxy-gid-differs", func(c *capture.Config) { c.ProxyGIDs = []uint32{2000} }},
	{"owner-groups-include", func(c *capture.Config) { c.OwnerGroupsAll, c.OwnerGroupsInclude = false, []uint32{1000, 1001} }},
	{"owner-groups-exclude", func(c *capture.Config) { c.OwnerGroupsExclude = []uint32{3000, 3001} }},
	{"loopback-cidr", func(c *capture.Config) { c.LoopbackCIDR = netip.MustParsePrefix("127.0.0.0/8") }},
	{"loopback-captured", func(c *capture.Config) {
		c.OutboundAll, c.OutboundCIDRs = false, Prefixes("127.0.0.1/32", "10.0.0.0/8")
	}},
	{"drop-invalid", func(c *capture.Config) { c.DropInvalid = true }},
	{"custom-ports", func(c *capture.Config) { c.OutboundPort, c.InboundPort, c.TunnelPort = 16001, 16006, 16008 }},
	{"tunnel-port-excluded-too", func(c *capture.Config) { c.InboundExcludePorts = Ports(15008, 15090) }},
	{"tproxy", func(c *capture.Config) { c.InboundMode = capture.ModeTProxy }},
	{"tproxy-inbound-ports", func(c *capture.Config) {
		c.InboundMode, c.InboundAll, c.InboundPorts = capture.ModeTProxy, false, Ports(80, 443)
	}},
	{"tproxy-interfaces", func(c *capture.Config) {
		c.InboundMode, c.ExcludeInterfaces, c.KubeVirtInterfaces = capture.ModeTProxy, []string{"eth1"}, []string{"tap0"}
		c.DropInvalid = true
	}},
	{"tproxy-mark-table", func(c *capture.Config) {
		c.InboundMode, c.TProxyMark, c.TProxyRouteTable, c.ProxyGIDs = capture.ModeTProxy, 7, 1000, []uint32{1337, 1400}
	}},
	{"dns", func(c *capture.Config) {
		c.RedirectDNS, c.DNSServers = true, []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("169.254.20.10")}
	}},
	{"dns-capture-all", func(c *capture.Config) { c.RedirectDNS, c.CaptureAllDNS = true, true }},
	{"dns-no-servers", func(c *capture.Config) { c.RedirectDNS = true }},
	{"dns-ipv6-server-ignored", func(c *capture.Config) {
		c.RedirectDNS, c.DNSServers = true, []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")}
	}},
	{"dual-stack", func(c *capture.Config) { c.DualStack = true }},
	{"dual-stack-cidrs", func(c *capture.Config) {
		c.DualStack, c.OutboundAll = true, false
		c.OutboundCIDRs = Prefixes("10.0.0.0/8", "fd00:10::/64")
		c.OutboundExcludeCIDRs = Prefixes("10.96.0.1/32", "fd00:10::1/128")
		c.KubeVirtInterfaces = []string{"tap0"}
	}},
	{"ipv6-ranges-ignored-without-dual-stack", func(c *capture.Config) {
		c.OutboundExcludeCIDRs = Prefixes("fd00::/8", "10.96.0.1/32")
	}},
	{"dual-stack-dns", func(c *capture.Config) {
		c.DualStack, c.RedirectDNS = true, true
		c.DNSServers = []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")}
	}},
	{"tproxy-dual-stack-dns", func(c *capture.Config) {
		c.InboundMode, c.DualStack, c.RedirectDNS, c.CaptureAllDNS = capture.ModeTProxy, true, true, true
		c.DropInvalid = true
	}},
	{"everything", func(c *capture.Config) {
		c.OutboundAll, c.OutboundCIDRs = false, Prefixes("10.0.0.0/8")
		c.OutboundExcludeCIDRs = Prefixes("10.96.0.1/32")
		c.OutboundPorts, c.OutboundExcludePorts = Ports(5432), Ports(25)
		c.ExcludeInterfaces, c.KubeVirtInterfaces = []string{"eth9"}, []string{"tap0"}
		c.ProxyUIDs, c.ProxyGIDs = []uint32{1337}, []uint32{1337, 1400}
		c.OwnerGroupsExclude = []uint32{3000}
		c.DropInvalid = true
	}},
}
