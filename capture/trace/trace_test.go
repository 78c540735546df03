package trace

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/shunt-dev/shunt/capture"
)

var podIP = netip.MustParseAddr("10.1.0.5")

// seed is the seed's istio-init args: -p 15001 -z 15006 -u 1337 -m REDIRECT
// -i '*' -b '*' -d 15090,15021,15020.
func seed() capture.Config {
	c := capture.DefaultConfig()
	c.InboundAll, c.OutboundAll = true, true
	c.InboundExcludePorts = []capture.PortRange{capture.Port(15090), capture.Port(15021), capture.Port(15020)}
	return c
}

func out(dst string, port uint16, uid, gid uint32, iface string) Packet {
	src := podIP
	if iface == "lo" && netip.MustParseAddr(dst).IsLoopback() {
		src = netip.MustParseAddr("127.0.0.1")
	}
	return Packet{Direction: Out, Proto: "tcp", Src: src, Dst: netip.MustParseAddr(dst), DstPort: port, UID: uid, GID: gid, OutIface: iface}
}

func in(port uint16, iface string) Packet {
	return Packet{Direction: In, Proto: "tcp", Src: netip.MustParseAddr("10.2.0.9"), Dst: podIP, DstPort: port, InIface: iface}
}

func TestTraceIntent(t *testing.T) {
	udp := out("10.96.0.10", 53, 0, 0, "eth0")
	udp.Proto = "udp"
	passthrough := out("10.1.0.5", 8080, 1337, 1337, "lo")
	passthrough.Src = netip.MustParseAddr("127.0.0.6")
	invalid := in(8080, "eth0")
	invalid.State = capture.StateInvalid

	cases := []struct {
		name   string
		mutate func(*capture.Config)
		pkt    Packet
		want   string
	}{
		{"nginx calls backend-service:10000", nil, out("10.96.0.10", 10000, 101, 101, "eth0"), "REDIRECT → 15001"},
		{"the proxy's own upstream connection", nil, out("10.96.0.10", 10000, 1337, 1337, "eth0"), "not captured"},
		{"an app sharing the proxy's UID escapes capture", nil, out("10.96.0.10", 10000, 1337, 101, "eth0"), "not captured"},
		{"an app sharing only the proxy's GID escapes too", nil, out("10.96.0.10", 10000, 101, 1337, "eth0"), "not captured"},
		{"proxy calls the pod's own address: inbound listener", nil, out("10.1.0.5", 8080, 1337, 1337, "lo"), "REDIRECT → 15006"},
		{"proxy calls the pod's own address on the tunnel port", nil, out("10.1.0.5", 15008, 1337, 1337, "lo"), "not captured"},
		{"proxy calls localhost", nil, out("127.0.0.1", 15000, 1337, 1337, "lo"), "not captured"},
		{"app calls localhost", nil, out("127.0.0.1", 8080, 101, 101, "lo"), "not captured"},
		{"app calls the pod's own address", nil, out("10.1.0.5", 8080, 101, 101, "lo"), "not captured"},
		{"inbound passthrough from 127.0.0.6", nil, passthrough, "not captured"},
		{"outbound UDP", nil, udp, "not captured"},
		{"inbound to the app", nil, in(80, "eth0"), "REDIRECT → 15006"},
		{"inbound to Prometheus 15090", nil, in(15090, "eth0"), "not captured"},
		{"inbound to health 15021", nil, in(15021, "eth0"), "not captured"},
		{"inbound to the tunnel 15008", nil, in(15008, "eth0"), "not captured"},
		{"invalid packet without drop-invalid", nil, invalid, "not captured"},
		{"invalid packet with drop-invalid", func(c *capture.Config) { c.DropInvalid = true }, invalid, "DROP"},
		{"excluded range", func(c *capture.Config) {
			c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		},
			out("10.96.0.10", 80, 101, 101, "eth0"), "not captured"},
		{"excluded outbound port", func(c *capture.Config) { c.OutboundExcludePorts = []capture.PortRange{capture.Port(3306)} },
			out("10.96.0.10", 3306, 101, 101, "eth0"), "not captured"},
		{"only listed ranges: listed", func(c *capture.Config) {
			c.OutboundAll, c.OutboundCIDRs = false, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		}, out("10.96.0.10", 80, 101, 101, "eth0"), "REDIRECT → 15001"},
		{"only listed ranges: other", func(c *capture.Config) {
			c.OutboundAll, c.OutboundCIDRs = false, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		}, out("8.8.8.8", 80, 101, 101, "eth0"), "not captured"},
		{"included port outside the ranges", func(c *capture.Config) {
			c.OutboundAll, c.OutboundPorts = false, []capture.PortRange{capture.Port(5432)}
		}, out("8.8.8.8", 5432, 101, 101, "eth0"), "REDIRECT → 15001"},
		{"excluded interface outbound", func(c *capture.Config) { c.ExcludeInterfaces = []string{"eth+"} },
			out("10.96.0.10", 80, 101, 101, "eth1"), "not captured"},
		{"excluded interface inbound", func(c *capture.Config) { c.ExcludeInterfaces = []string{"eth1"} },
			in(80, "eth1"), "not captured"},
		{"VM interface traffic is outbound", func(c *capture.Config) { c.KubeVirtInterfaces = []string{"tap0"} },
			in(80, "tap0"), "REDIRECT → 15001"},
		{"inbound port list: listed", func(c *capture.Config) {
			c.InboundAll, c.InboundPorts = false, []capture.PortRange{{Lo: 8000, Hi: 8100}}
		}, in(8080, "eth0"), "REDIRECT → 15006"},
		{"inbound port list: -d ignored without '*'", func(c *capture.Config) {
			c.InboundAll, c.InboundPorts = false, []capture.PortRange{capture.Port(15090)}
		}, in(15090, "eth0"), "REDIRECT → 15006"},
		{"owner group not listed", func(c *capture.Config) { c.OwnerGroupsAll, c.OwnerGroupsInclude = false, []uint32{1000} },
			out("10.96.0.10", 80, 101, 2000, "eth0"), "not captured"},
		{"owner group listed", func(c *capture.Config) { c.OwnerGroupsAll, c.OwnerGroupsInclude = false, []uint32{1000} },
			out("10.96.0.10", 80, 101, 1000, "eth0"), "REDIRECT → 15001"},
		{"owner group excluded", func(c *capture.Config) { c.OwnerGroupsExclude = []uint32{3000} },
			out("10.96.0.10", 80, 101, 3000, "eth0"), "not captured"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := seed()
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			plan, err := capture.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Trace(plan, tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict() != tc.want {
				t.Errorf("%s: got %s (%s), want %s\npath: %+v", tc.pkt, res.Verdict(), res.Reason, tc.want, res.Matched())
			}
		})
	}
}

func TestTraceFailsOnWhatItDoesNotModel(t *testing.T) {
	plan, _ := capture.Build(seed())
	// The condition and verdict sets are closed at compile time; a nil one
	// stands for a kind the tracer has never heard of.
	plan.Chain(capture.ChainOutput).Rules[0].Conds = append(plan.Chain(capture.ChainOutput).Rules[0].Conds, nil)
	_, err := Trace(plan, out("10.96.0.10", 80, 0, 0, "eth0"))
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("got %v, want ErrUnknown", err)
	}
	plan, _ = capture.Build(seed())
	plan.Chain(capture.ChainRedirect).Rules[0].Verdict = nil
	if _, err := Trace(plan, out("10.96.0.10", 80, 0, 0, "eth0")); !errors.Is(err, ErrUnknown) {
		t.Fatalf("got %v, want ErrUnknown for a nil verdict", err)
	}
}

func TestTraceRejectsMatchesTheKernelRejects(t *testing.T) {
	plan, _ := capture.Build(seed())
	c := plan.Chain(capture.ChainOutput)
	c.Rules[0].Conds = []capture.Cond{capture.InInterface{Name: "eth0"}}
	if _, err := Trace(plan, out("10.96.0.10", 80, 0, 0, "eth0")); err == nil {
		t.Fatal("an in-interface match on the output path was accepted")
	}
}
