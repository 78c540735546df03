package iptables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/captest"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// seedConfig is the seed's istio-init args.
var seedConfig = captest.Seed

func ports(ps ...uint16) []capture.PortRange {
	out := make([]capture.PortRange, len(ps))
	for i, p := range ps {
		out[i] = capture.Port(p)
	}
	return out
}

func portSeq(from, n int) []capture.PortRange {
	var out []capture.PortRange
	for i := 0; i < n; i++ {
		out = append(out, capture.Port(uint16(from+i)))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// goldenCases are small mutations of the seed configuration, one per axis.
var goldenCases = []struct {
	name   string
	mutate func(*capture.Config)
}{
	{"seed", func(c *capture.Config) {}},
	{"nothing-captured", func(c *capture.Config) { c.InboundAll, c.OutboundAll, c.InboundExcludePorts = false, false, nil }},
	{"inbound-ports", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, ports(80, 443) }},
	{"inbound-port-range", func(c *capture.Config) {
		c.InboundAll, c.InboundPorts = false, []capture.PortRange{{Lo: 8000, Hi: 8100}, capture.Port(9090)}
	}},
	{"inbound-exclude-ignored-without-wildcard", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, ports(80) }},
	{"inbound-ports-chunked", func(c *capture.Config) { c.InboundAll, c.InboundPorts = false, portSeq(9000, 20) }},
	{"inbound-exclude-chunked", func(c *capture.Config) { c.InboundExcludePorts = portSeq(9000, 31) }},
	{"inbound-none", func(c *capture.Config) { c.InboundAll, c.InboundExcludePorts = false, nil }},
	{"outbound-cidrs", func(c *capture.Config) {
		c.OutboundAll, c.OutboundCIDRs = false, prefixes("10.0.0.0/8", "172.16.0.0/12")
	}},
	{"outbound-exclude-cidrs", func(c *capture.Config) {
		c.OutboundExcludeCIDRs = prefixes("169.254.169.254/32", "10.96.0.0/12")
	}},
	{"outbound-none", func(c *capture.Config) { c.OutboundAll = false }},
	{"outbound-include-ports", func(c *capture.Config) { c.OutboundAll, c.OutboundPorts = false, ports(3306, 5432) }},
	{"outbound-exclude-ports", func(c *capture.Config) { c.OutboundExcludePorts = ports(25, 587) }},
	{"outbound-exclude-ports-chunked", func(c *capture.Config) {
		c.OutboundExcludePorts = append(portSeq(20000, 14), capture.PortRange{Lo: 30000, Hi: 30100})
	}},
	{"exclude-interfaces", func(c *capture.Config) { c.ExcludeInterfaces = []string{"eth1", "ppp+"} }},
	{"kube-virt-all", func(c *capture.Config) { c.KubeVirtInterfaces = []string{"tap0"} }},
	{"kube-virt-cidrs", func(c *capture.Config) {
		c.KubeVirtInterfaces, c.OutboundAll, c.OutboundCIDRs = []string{"tap0", "tap1"}, false, prefixes("10.0.0.0/8", "192.168.0.0/16")
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
		c.OutboundAll, c.OutboundCIDRs = false, prefixes("127.0.0.1/32", "10.0.0.0/8")
	}},
	{"drop-invalid", func(c *capture.Config) { c.DropInvalid = true }},
	{"custom-ports", func(c *capture.Config) { c.OutboundPort, c.InboundPort, c.TunnelPort = 16001, 16006, 16008 }},
	{"tunnel-port-excluded-too", func(c *capture.Config) { c.InboundExcludePorts = ports(15008, 15090) }},
	{"everything", func(c *capture.Config) {
		c.OutboundAll, c.OutboundCIDRs = false, prefixes("10.0.0.0/8")
		c.OutboundExcludeCIDRs = prefixes("10.96.0.1/32")
		c.OutboundPorts, c.OutboundExcludePorts = ports(5432), ports(25)
		c.ExcludeInterfaces, c.KubeVirtInterfaces = []string{"eth9"}, []string{"tap0"}
		c.ProxyUIDs, c.ProxyGIDs = []uint32{1337}, []uint32{1337, 1400}
		c.OwnerGroupsExclude = []uint32{3000}
		c.DropInvalid = true
	}},
}

func TestRenderGolden(t *testing.T) {
	if len(goldenCases) < 25 {
		t.Fatalf("only %d golden cases; every axis needs one", len(goldenCases))
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := seedConfig()
			tc.mutate(&cfg)
			plan, err := capture.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := RenderAll(plan)
			if err != nil {
				t.Fatal(err)
			}
			got := rs.String()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendering differs from %s (run with -update after review):\n%s", path, got)
			}
			assertParsesBack(t, rs.V4)
			assertParsesBack(t, rs.V6)
		})
	}
}

// assertParsesBack checks that what Render makes is what ParseSave reads, so
// a live namespace holding these rules compares equal to the plan.
func assertParsesBack(t *testing.T, rs *Ruleset) {
	t.Helper()
	var save strings.Builder
	for _, tab := range rs.Tables {
		save.WriteString("*" + tab.Name + "\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
		for _, c := range tab.Chains {
			save.WriteString(":" + c + " - [0:0]\n")
		}
		for _, j := range tab.Jumps {
			save.WriteString(j + "\n")
		}
		for _, c := range tab.Chains {
			for _, r := range tab.Rules[c] {
				save.WriteString(r + "\n")
			}
		}
		save.WriteString("COMMIT\n")
	}
	back, err := ParseSave(save.String())
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(back, rs) {
		t.Errorf("rendered rules do not read back equal:\n%s", Diff(back, rs))
	}
	if tx := Transaction(back, rs, false); tx != "" {
		t.Errorf("re-applying the same rules is not a no-op:\n%s", tx)
	}
}

func TestRenderRejectsWhatIptablesCannotSay(t *testing.T) {
	cases := []struct {
		name string
		rule capture.Rule
		want string
	}{
		{"ports without protocol", capture.Rule{Conds: []capture.Cond{capture.DestPorts{Ports: ports(80)}}, Verdict: capture.Return{}}, "without a protocol"},
		{"negated long port list", capture.Rule{Conds: []capture.Cond{capture.Proto{Name: "tcp"}, capture.DestPorts{Ports: portSeq(1, 16), Not: true}}, Verdict: capture.Return{}}, "cannot be split"},
		{"long purpose", capture.Rule{Verdict: capture.Return{}, Purpose: strings.Repeat("x", 300)}, "longer than the kernel keeps"},
		{"unknown verdict", capture.Rule{Verdict: nil}, "no iptables form"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderRule("SHUNT_OUTPUT", tc.rule, capture.IPv4)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestQuoteMatchesIptablesSave(t *testing.T) {
	for in, want := range map[string]string{
		"plain_word-1": "plain_word-1",
		"two words":    `"two words"`,
		`it's "x"`:     `"it\'s \"x\""`,
		"":             `""`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
