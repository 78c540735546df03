package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// Mode is how inbound connections are handed to the proxy.
type Mode string

// Inbound interception modes, spelled as istio-iptables spells them.
const (
	ModeRedirect Mode = "REDIRECT"
	ModeTProxy   Mode = "TPROXY"
)

// Config says what to capture. It is typed and validated once; everything
// inward of the command line works with these values, never with strings.
type Config struct {
	OutboundPort uint16 // where outbound connections are redirected (-p)
	InboundPort  uint16 // where inbound connections are redirected (-z)
	TunnelPort   uint16 // inbound port never captured (-e)

	// ProxyUIDs and ProxyGIDs identify the proxy's own traffic, which is
	// never captured outbound (-u, -g).
	ProxyUIDs []uint32
	ProxyGIDs []uint32

	InboundMode Mode // -m

	// InboundAll captures every inbound port but InboundExcludePorts (-b '*');
	// otherwise only InboundPorts are captured, and none when it is empty.
	InboundAll          bool
	InboundPorts        []PortRange // -b
	InboundExcludePorts []PortRange // -d, honoured only with InboundAll

	// OutboundAll captures every destination (-i '*'); otherwise only
	// OutboundCIDRs are, and nothing when it is empty.
	OutboundAll          bool
	OutboundCIDRs        []netip.Prefix // -i
	OutboundExcludeCIDRs []netip.Prefix // -x
	OutboundPorts        []PortRange    // -q: captured whatever the destination
	OutboundExcludePorts []PortRange    // -o: never captured

	ExcludeInterfaces  []string // -c: neither direction captured
	KubeVirtInterfaces []string // -k: inbound treated as outbound

	// OwnerGroupsAll captures every group but OwnerGroupsExclude; otherwise
	// only the groups in OwnerGroupsInclude are captured.
	OwnerGroupsAll     bool
	OwnerGroupsInclude []uint32
	OwnerGroupsExclude []uint32

	// LoopbackCIDR is the loopback range that app traffic is never captured
	// to (ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR); IPv6's is always ::1/128.
	LoopbackCIDR netip.Prefix

	DropInvalid bool // drop packets conntrack finds invalid

	// TPROXY mode: inbound packets are marked TProxyMark (-t), and marked
	// packets are routed by table TProxyRouteTable (-r) to the proxy.
	TProxyMark       uint32
	TProxyRouteTable uint32

	// RedirectDNS captures UDP and TCP port 53 to DNSPort: to DNSServers
	// only, or to any server with CaptureAllDNS.
	RedirectDNS   bool
	CaptureAllDNS bool
	DNSServers    []netip.Addr
	DNSPort       uint16

	// DualStack captures IPv6 as well as IPv4; without it IPv6 ranges and
	// name servers are ignored and IPv6 traffic is left alone.
	DualStack bool
}

// OutboundMark marks the proxy's TPROXY-mode connections to the pod's own
// address over lo, so inbound capture takes them (Istio's 1338).
const OutboundMark = 1338

// CapturesDNS reports whether DNS rules are built: DNS capture is on and
// there is a server to capture, or every server is.
func (c *Config) CapturesDNS() bool {
	return c.RedirectDNS && (c.CaptureAllDNS || len(c.dnsServers()) > 0)
}

// dnsServers are the name servers of the captured families.
func (c *Config) dnsServers() []netip.Addr {
	var out []netip.Addr
	for _, a := range c.DNSServers {
		if a.Is4() || c.DualStack {
			out = append(out, a)
		}
	}
	return out
}

// DefaultConfig is istio-iptables' defaults: outbound 15001, inbound 15006,
// tunnel 15008, proxy 1337, REDIRECT, nothing captured until asked for.
func DefaultConfig() Config {
	return Config{
		OutboundPort:     sidecar.OutboundPort,
		InboundPort:      sidecar.InboundPort,
		TunnelPort:       sidecar.TunnelPort,
		ProxyUIDs:        []uint32{sidecar.ProxyUID},
		ProxyGIDs:        []uint32{sidecar.ProxyGID},
		InboundMode:      ModeRedirect,
		OwnerGroupsAll:   true,
		LoopbackCIDR:     netip.MustParsePrefix("127.0.0.1/32"),
		TProxyMark:       1337,
		TProxyRouteTable: 133,
		DNSPort:          sidecar.DNSPort,
	}
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid capture configuration")

// maxOwnerGroups bounds OwnerGroupsInclude: they become one rule with a
// match per group, and the kernel limits a rule's size.
const maxOwnerGroups = 64

// Validate checks the Config as a whole; the command line has already checked
// each value's form.
func (c *Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	ports := []struct {
		name string
		port uint16
	}{{"outbound port", c.OutboundPort}, {"inbound port", c.InboundPort}, {"tunnel port", c.TunnelPort},
		{"DNS port", c.DNSPort}}
	for _, p := range ports {
		if p.port == 0 {
			bad("%s must be set (1-65535)", p.name)
		}
	}
	if c.OutboundPort == c.InboundPort && c.OutboundPort != 0 {
		bad("outbound and inbound port are both %d: no proxy can serve both on one port", c.OutboundPort)
	}
	if len(c.ProxyUIDs) == 0 {
		bad("at least one proxy UID is needed, or the proxy's own traffic would loop back into it")
	}
	if len(c.ProxyGIDs) == 0 {
		bad("at least one proxy GID is needed")
	}
	switch c.InboundMode {
	case ModeRedirect:
	case ModeTProxy:
		if c.TProxyMark == 0 || c.TProxyMark == OutboundMark {
			bad("TPROXY mark %d must be neither 0 nor %d (the mark of the proxy's own calls over lo)", c.TProxyMark, OutboundMark)
		}
		switch c.TProxyRouteTable {
		case 0, 253, 254, 255:
			bad("TPROXY route table %d is reserved (0 unspec, 253 default, 254 main, 255 local); pick another", c.TProxyRouteTable)
		}
	default:
		bad("inbound interception mode %q is not REDIRECT or TPROXY", c.InboundMode)
	}
	if !c.LoopbackCIDR.IsValid() || !c.LoopbackCIDR.Addr().Is4() || !c.LoopbackCIDR.Addr().IsLoopback() ||
		c.LoopbackCIDR.Bits() < 8 {
		bad("loopback CIDR %s must be an IPv4 loopback range with a mask of 8 to 32 bits", c.LoopbackCIDR)
	}
	for _, p := range append(append([]netip.Prefix{}, c.OutboundCIDRs...), c.OutboundExcludeCIDRs...) {
		if !p.IsValid() || p.Addr().Zone() != "" {
			bad("%s is not an address range", p)
		}
	}
	for _, a := range c.DNSServers {
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			bad("DNS server %s is not a unicast address", a)
		}
	}
	for _, name := range append(append([]string{}, c.ExcludeInterfaces...), c.KubeVirtInterfaces...) {
		if err := ValidInterfaceName(name); err != nil {
			bad("%v", err)
		}
	}
	if !c.OwnerGroupsAll && len(c.OwnerGroupsInclude) > maxOwnerGroups {
		bad("at most %d owner groups can be captured, got %d", maxOwnerGroups, len(c.OwnerGroupsInclude))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// ValidInterfaceName checks a name as iptables would take it: 1 to 15
// bytes, no space, '/' or quote, and '+' only as the last byte (a wildcard).
func ValidInterfaceName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("interface name %s must be 1 to 15 characters", clip.Quote(name))
	}
	for i, r := range name {
		switch {
		case r == '+' && i == len(name)-1:
		case r <= ' ' || r > '~' || strings.ContainsRune("/+\"'!", r):
			return fmt.Errorf("interface name %s has a character an interface name cannot have: %q", clip.Quote(name), r)
		}
	}
	return nil
}
