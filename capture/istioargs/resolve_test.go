package istioargs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/capture"
)

// parse runs the redirect flag set over args with env as the environment.
func parse(t *testing.T, args []string, env map[string]string) (*Set, error) {
	t.Helper()
	fs := pflag.NewFlagSet("redirect", pflag.ContinueOnError)
	s := RegisterRedirect(fs)
	s.getenv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return s, fs.Parse(args)
}

func TestSeedArgsVerbatim(t *testing.T) {
	s, err := parse(t, strings.Fields("-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -b * -d 15090,15021,15020"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := capture.DefaultConfig()
	want.InboundAll, want.OutboundAll = true, true
	want.InboundExcludePorts = []capture.PortRange{capture.Port(15090), capture.Port(15021), capture.Port(15020)}
	if !equalConfig(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
}

func equalConfig(a, b capture.Config) bool {
	ap, _ := capture.Build(a)
	bp, _ := capture.Build(b)
	return ap != nil && bp != nil && describe(ap) == describe(bp)
}

func describe(p *capture.Plan) string {
	var b strings.Builder
	for _, c := range p.Chains {
		for _, r := range c.Rules {
			b.WriteString(c.Name + " " + r.Describe() + " " + capture.VerdictString(r.Verdict) + "\n")
		}
	}
	return b.String()
}

func TestSpellingsAndEnvironment(t *testing.T) {
	cases := []struct {
		name  string
		args  string
		env   map[string]string
		check func(capture.Config) bool
	}{
		{"long flag", "--envoy-port 16001", nil, func(c capture.Config) bool { return c.OutboundPort == 16001 }},
		{"shunt spelling", "--outbound-port 16001", nil, func(c capture.Config) bool { return c.OutboundPort == 16001 }},
		{"env var", "", map[string]string{"ENVOY_PORT": "16001"}, func(c capture.Config) bool { return c.OutboundPort == 16001 }},
		{"flag beats env", "-p 16002", map[string]string{"ENVOY_PORT": "16001"}, func(c capture.Config) bool { return c.OutboundPort == 16002 }},
		{"inbound ports env", "", map[string]string{"ISTIO_INBOUND_PORTS": "*", "ISTIO_LOCAL_EXCLUDE_PORTS": "15020"},
			func(c capture.Config) bool { return c.InboundAll && len(c.InboundExcludePorts) == 1 }},
		{"service cidr env", "", map[string]string{"ISTIO_SERVICE_CIDR": "10.0.0.0/8,10.96.0.1"},
			func(c capture.Config) bool {
				return slices.Equal(c.OutboundCIDRs, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.96.0.1/32")})
			}},
		{"host bits masked like iptables", "-i 10.1.2.3/8", nil,
			func(c capture.Config) bool { return c.OutboundCIDRs[0] == netip.MustParsePrefix("10.0.0.0/8") }},
		{"DNS alias env", "", map[string]string{"ISTIO_META_DNS_CAPTURE": "false"}, func(c capture.Config) bool { return !c.RedirectDNS }},
		{"drop-invalid alias env", "", map[string]string{"INVALID_DROP": "true"}, func(c capture.Config) bool { return c.DropInvalid }},
		{"drop-invalid flag", "--drop-invalid", nil, func(c capture.Config) bool { return c.DropInvalid }},
		{"mode env-only alias", "", map[string]string{"INBOUND_INTERCEPTION_MODE": "redirect"}, func(c capture.Config) bool { return c.InboundMode == capture.ModeRedirect }},
		{"gid defaults to uid", "-u 1400", nil, func(c capture.Config) bool { return slices.Equal(c.ProxyGIDs, []uint32{1400}) }},
		{"uid list", "-u 1337,1338 -g 1337", nil, func(c capture.Config) bool { return slices.Equal(c.ProxyUIDs, []uint32{1337, 1338}) }},
		{"uid by user name", "-u root", nil, func(c capture.Config) bool { return slices.Equal(c.ProxyUIDs, []uint32{0}) }},
		{"ENVOY_USER default", "", map[string]string{"ENVOY_USER": "root"}, func(c capture.Config) bool { return slices.Equal(c.ProxyUIDs, []uint32{0}) }},
		{"unknown ENVOY_USER falls back to 1337", "", map[string]string{"ENVOY_USER": "no-such-user-here"}, func(c capture.Config) bool { return c.ProxyUIDs[0] == 1337 }},
		{"owner groups include", "", map[string]string{"ISTIO_OUTBOUND_OWNER_GROUPS": "1000,root"},
			func(c capture.Config) bool {
				return !c.OwnerGroupsAll && slices.Equal(c.OwnerGroupsInclude, []uint32{1000, 0})
			}},
		{"owner groups exclude", "", map[string]string{"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "3000"},
			func(c capture.Config) bool {
				return c.OwnerGroupsAll && slices.Equal(c.OwnerGroupsExclude, []uint32{3000})
			}},
		{"loopback cidr env", "", map[string]string{"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.0/8"},
			func(c capture.Config) bool { return c.LoopbackCIDR == netip.MustParsePrefix("127.0.0.0/8") }},
		{"tproxy mark hex", "-t 0x539", nil, func(c capture.Config) bool { return c.TProxyMark == 1337 }},
		{"port range", "-b 8000:8100,9000-9001", nil, func(c capture.Config) bool {
			return slices.Equal(c.InboundPorts, []capture.PortRange{{Lo: 8000, Hi: 8100}, {Lo: 9000, Hi: 9001}})
		}},
		{"empty items skipped", "-d 15090,,15021,", nil, func(c capture.Config) bool { return len(c.InboundExcludePorts) == 2 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parse(t, strings.Fields(tc.args), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := s.Config()
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Errorf("got %+v", cfg)
			}
		})
	}
}

// TestBadInput: every bad value is refused with a message that names where
// it came from and what it was.
func TestBadInput(t *testing.T) {
	cases := []struct {
		args string
		env  map[string]string
		want []string
	}{
		{"-p 70000", nil, []string{"--envoy-port (-p)", `"70000"`}},
		{"-z 0", nil, []string{"--inbound-capture-port (-z)", `"0"`}},
		{"-z http", nil, []string{"--inbound-capture-port (-z)", `"http"`}},
		{"", map[string]string{"INBOUND_CAPTURE_PORT": "99999"}, []string{"$INBOUND_CAPTURE_PORT", "99999"}},
		{"-i 10.0.0.0/33", nil, []string{"--istio-service-cidr (-i)", "10.0.0.0/33"}},
		{"-i 10.0.0.0/8,bogus", nil, []string{"--istio-service-cidr (-i)", `"bogus"`}},
		{"-x *", nil, []string{"--istio-service-exclude-cidr (-x)", "every destination"}},
		{"-x 300.1.1.1/32", nil, []string{"--istio-service-exclude-cidr (-x)", "300.1.1.1"}},
		{"-m PROXY", nil, []string{"--istio-inbound-interception-mode (-m)", `"PROXY"`}},
		{"-u nosuchuser", nil, []string{"--proxy-uid (-u)", `"nosuchuser" is not a number and not a user`}},
		{"-g nosuchgroup", nil, []string{"--proxy-gid (-g)", `"nosuchgroup"`}},
		{"-b 80,443x", nil, []string{"--istio-inbound-ports (-b)", `"443x"`}},
		{"-d 9000:8000", nil, []string{"--istio-local-exclude-ports (-d)", "9000 is above 8000"}},
		{"-q 1:2:3", nil, []string{"--istio-outbound-ports (-q)", "1:2:3"}},
		{"-c eth0/1", nil, []string{"--istio-exclude-interfaces (-c)", "eth0/1"}},
		{"-k waytoolonginterfacename", nil, []string{"--kube-virt-interfaces (-k)", "1 to 15 characters"}},
		{"-t nope", nil, []string{"--istio-inbound-tproxy-mark (-t)", `"nope"`}},
		{"-r 255", nil, []string{"--istio-inbound-tproxy-route-table (-r)", `"255"`}},
		{"--drop-invalid=maybe", nil, []string{"--drop-invalid", `"maybe"`}},
		{"", map[string]string{"INVALID_DROP": "yes please"}, []string{"$INVALID_DROP", "yes please"}},
		{"", map[string]string{"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "10.0.0.0/8"}, []string{"loopback CIDR 10.0.0.0/8"}},
		{"", map[string]string{"ISTIO_OUTBOUND_OWNER_GROUPS": "1000", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "2000"}, []string{"$ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"}},
		{"-m TPROXY -t 1338", nil, []string{"TPROXY mark 1338 must be neither 0 nor 1338"}},
		{"-m TPROXY -r 254", nil, []string{"-r", "is not a routing table shunt may use"}},
		{"--redirect-dns --dns-servers 10.0.0.300", nil, []string{"--dns-servers", `"10.0.0.300" is not a name server address`}},
		{"--redirect-dns --resolv-conf /nonexistent", nil, []string{"--resolv-conf", "reading the name servers"}},
	}
	for _, tc := range cases {
		t.Run(tc.args+mapString(tc.env), func(t *testing.T) {
			s, err := parse(t, strings.Fields(tc.args), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Config()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	cases := []struct {
		args string
		want string
	}{
		{"--pid 12 --network-namespace /var/run/netns/x", "not both"},
		{"--pid zero", `"zero" is not a process ID`},
		{"--force-iptables-binary iptables-foo", `"iptables-foo"`},
		{"--probe-timeout soon", `"soon"`},
		{"--iptables-probe-port 0", "--iptables-probe-port"},
		{"--native-nftables --force-iptables-binary iptables-nft", "cannot be combined with --native-nftables"},
		{"--cleanup-only --skip-rule-apply", "cannot be combined"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			s, err := parse(t, strings.Fields(tc.args), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Options(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestEveryIstioFlagIsAccepted(t *testing.T) {
	args := strings.Fields(`-p 15001 -z 15006 -e 15008 -u 1337 -g 1337 -m REDIRECT -b * -d 15090 -c eth9 -i * -x 10.0.0.1/32
		-q 5432 -o 25 -k tap0 -t 1337 -r 133 -n --redirect-dns=false --capture-all-dns=false --drop-invalid --dual-stack=false
		--network-namespace /proc/1/ns/net --reconcile --cleanup-only=false --force-apply --native-nftables=false
		--force-iptables-binary iptables-nft --run-validation=false --skip-rule-apply=false --iptables-probe-port 15002
		--probe-timeout 5s --log_output_level default:debug --log_as_json --log_caller default --log_target stderr
		--log_stacktrace_level none --log_rotate_max_age 1 --log_rotate_max_backups 1 --log_rotate_max_size 1`)
	s, err := parse(t, args, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Config(); err != nil {
		t.Fatal(err)
	}
	o, err := s.Options()
	if err != nil {
		t.Fatal(err)
	}
	if !o.DryRun || !o.Reconcile || !o.ForceApply || o.IptablesBinary != "iptables-nft" || o.NetworkNS != "/proc/1/ns/net" {
		t.Errorf("options not read: %+v", o)
	}
	if _, err := s.Logger(); err != nil {
		t.Fatal(err)
	}
}

func mapString(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
