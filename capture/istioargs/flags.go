// Package istioargs reads istio-iptables' command line and environment into
// a capture.Config, so that an istio-init container's args and env work
// unchanged with `shunt redirect`. Every value is checked here, at the edge;
// an error names the flag (or variable) and the value.
package istioargs

import (
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// spec is one istio-iptables setting: its flag spellings, the environment
// variables that set it when the flag is absent, and its default.
type spec struct {
	long, short string
	aliases     []string // shunt's own clearer spellings
	env         []string // first the upper-snake of long, then Istio's aliases
	def         string
	isBool      bool
	usage       string
}

// Names of the settings, as istio-iptables spells them.
const (
	fOutboundPort       = "envoy-port"
	fInboundPort        = "inbound-capture-port"
	fTunnelPort         = "inbound-tunnel-port"
	fProxyUID           = "proxy-uid"
	fProxyGID           = "proxy-gid"
	fMode               = "istio-inbound-interception-mode"
	fInboundPorts       = "istio-inbound-ports"
	fInboundExclude     = "istio-local-exclude-ports"
	fExcludeInterfaces  = "istio-exclude-interfaces"
	fServiceCIDR        = "istio-service-cidr"
	fServiceExclude     = "istio-service-exclude-cidr"
	fOutboundPorts      = "istio-outbound-ports"
	fOutboundExclude    = "istio-local-outbound-ports-exclude"
	fKubeVirt           = "kube-virt-interfaces"
	fTProxyMark         = "istio-inbound-tproxy-mark"
	fTProxyRouteTable   = "istio-inbound-tproxy-route-table"
	fDryRun             = "dry-run"
	fRedirectDNS        = "redirect-dns"
	fCaptureAllDNS      = "capture-all-dns"
	fDropInvalid        = "drop-invalid"
	fDualStack          = "dual-stack"
	fDNSServers         = "dns-servers"
	fResolvConf         = "resolv-conf"
	fNetworkNamespace   = "network-namespace"
	fReconcile          = "reconcile"
	fCleanupOnly        = "cleanup-only"
	fForceApply         = "force-apply"
	fNativeNftables     = "native-nftables"
	fForceBinary        = "force-iptables-binary"
	fRunValidation      = "run-validation"
	fSkipRuleApply      = "skip-rule-apply"
	fProbePort          = "iptables-probe-port"
	fProbeTimeout       = "probe-timeout"
	fPID                = "pid"
	envOwnerGroups      = "ISTIO_OUTBOUND_OWNER_GROUPS"
	envOwnerGroupsExcl  = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"
	envEnvoyUser        = "ENVOY_USER"
	envLoopbackCIDR     = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"
	defaultEnvoyUser    = "istio-proxy"
	defaultLoopbackCIDR = "127.0.0.1/32"
)

// CaptureSpecs are the settings that decide which rules are built; the
// commands that only print or trace a plan take just these.
var captureSpecs = []spec{
	{long: fOutboundPort, short: "p", aliases: []string{"outbound-port"}, def: "15001",
		usage: "port the proxy takes captured OUTBOUND connections on"},
	{long: fInboundPort, short: "z", aliases: []string{"inbound-port"}, def: "15006",
		usage: "port the proxy takes captured INBOUND connections on"},
	{long: fTunnelPort, short: "e", aliases: []string{"tunnel-port"}, def: "15008",
		usage: "inbound tunnel port, never captured"},
	{long: fProxyUID, short: "u", usage: "UIDs (numbers or user names, comma-separated) whose traffic is the proxy's and never captured (default: $ENVOY_USER's, else 1337)"},
	{long: fProxyGID, short: "g", usage: "GIDs (numbers or group names) whose traffic is the proxy's (default: the proxy UIDs)"},
	{long: fMode, short: "m", aliases: []string{"inbound-mode"}, env: []string{"INBOUND_INTERCEPTION_MODE"}, def: "REDIRECT",
		usage: "how inbound connections reach the proxy: REDIRECT or TPROXY"},
	{long: fInboundPorts, short: "b", aliases: []string{"inbound-ports"},
		usage: "inbound ports to capture, comma-separated; '*' for all; empty for none"},
	{long: fInboundExclude, short: "d", aliases: []string{"inbound-exclude-ports"},
		usage: "inbound ports never captured; only applies when -b is '*'"},
	{long: fExcludeInterfaces, short: "c", aliases: []string{"exclude-interfaces"},
		usage: "interfaces whose traffic is never captured, either way"},
	{long: fServiceCIDR, short: "i", aliases: []string{"outbound-cidrs"},
		usage: "destination ranges to capture outbound, comma-separated; '*' for all; empty for none"},
	{long: fServiceExclude, short: "x", aliases: []string{"outbound-exclude-cidrs"},
		usage: "destination ranges never captured"},
	{long: fOutboundPorts, short: "q", aliases: []string{"outbound-include-ports"},
		usage: "outbound ports captured whatever the destination"},
	{long: fOutboundExclude, short: "o", aliases: []string{"outbound-exclude-ports"},
		usage: "outbound ports never captured"},
	{long: fKubeVirt, short: "k", usage: "interfaces whose inbound traffic (from a VM) is treated as outbound"},
	{long: fTProxyMark, short: "t", env: []string{"INBOUND_TPROXY_MARK"}, def: "1337", usage: "packet mark for TPROXY mode"},
	{long: fTProxyRouteTable, short: "r", def: "133", usage: "routing table for TPROXY mode"},
	{long: fRedirectDNS, env: []string{"ISTIO_META_DNS_CAPTURE"}, isBool: true, usage: "capture DNS to the resolv.conf name servers"},
	{long: fCaptureAllDNS, isBool: true, usage: "capture all DNS on port 53, whatever the server"},
	{long: fDNSServers, usage: "name servers whose DNS is captured (default: the nameserver lines of --resolv-conf)"},
	{long: fResolvConf, def: "/etc/resolv.conf", usage: "file to read the name servers from when --dns-servers is not given"},
	{long: fDropInvalid, env: []string{"INVALID_DROP"}, isBool: true, usage: "drop packets conntrack finds invalid instead of letting them reset connections"},
	{long: fDualStack, env: []string{"ISTIO_DUAL_STACK"}, isBool: true, usage: "capture IPv6 as well as IPv4"},
}

// runSpecs are the settings of `shunt redirect` that say how to apply.
var runSpecs = []spec{
	{long: fDryRun, short: "n", isBool: true, usage: "print the rules and the transaction; change nothing"},
	{long: fNetworkNamespace, usage: "network namespace file to act in (e.g. /proc/PID/ns/net or /var/run/netns/NAME)"},
	{long: fPID, usage: "act in this process's network namespace"},
	{long: fReconcile, isBool: true, usage: "replace shunt's rules if they differ from this configuration (one atomic commit)"},
	{long: fCleanupOnly, isBool: true, usage: "remove shunt's rules and nothing else"},
	{long: fForceApply, isBool: true, usage: "rewrite shunt's rules even if they are already as configured"},
	{long: fNativeNftables, aliases: []string{"nftables"}, isBool: true, usage: "use shunt's own nftables table (inet shunt) instead of iptables"},
	{long: fForceBinary, usage: "iptables binary to use: iptables, iptables-legacy or iptables-nft (default: detected)"},
	{long: fRunValidation, isBool: true, usage: "check that capture works after applying"},
	{long: fSkipRuleApply, isBool: true, usage: "apply no rules (with --run-validation: check rules someone else applied)"},
	{long: fProbePort, def: "15002", usage: "port the validation probe listens on"},
	{long: fProbeTimeout, def: "5s", usage: "how long the validation probe waits"},
}

// envNames is every variable that sets s: the upper-snake of its long name
// first, then its aliases.
func (s spec) envNames() []string {
	if s.long == fPID {
		return nil
	}
	return append([]string{strings.ToUpper(strings.ReplaceAll(s.long, "-", "_"))}, s.env...)
}

// Set holds a command's settings as given, before they are checked.
type Set struct {
	fs     *pflag.FlagSet
	specs  []spec
	values map[string]*string
	getenv func(string) (string, bool)
	log    *LogFlags
}

// RegisterCapture adds the capture settings' flags to fs.
func RegisterCapture(fs *pflag.FlagSet) *Set {
	return register(fs, captureSpecs)
}

// RegisterRedirect adds every istio-iptables flag to fs, the log flags too.
func RegisterRedirect(fs *pflag.FlagSet) *Set {
	s := register(fs, append(append([]spec{}, captureSpecs...), runSpecs...))
	s.log = registerLog(fs)
	return s
}

func register(fs *pflag.FlagSet, specs []spec) *Set {
	s := &Set{fs: fs, specs: specs, values: map[string]*string{}, getenv: os.LookupEnv}
	for _, sp := range specs {
		v := &stringValue{isBool: sp.isBool}
		v.s = new(string)
		s.values[sp.long] = v.s
		usage := sp.usage
		if names := sp.envNames(); len(names) > 0 {
			usage += " [$" + strings.Join(names, ", $") + "]"
		}
		if sp.def != "" {
			usage += " (default " + sp.def + ")"
		}
		f := fs.VarPF(v, sp.long, sp.short, usage)
		for _, a := range sp.aliases {
			af := fs.VarPF(v, a, "", "same as --"+sp.long)
			if sp.isBool {
				af.NoOptDefVal = "true"
			}
		}
		if sp.isBool {
			f.NoOptDefVal = "true"
		}
	}
	return s
}

// stringValue keeps a flag's text for later checking, so that a bad value is
// reported with every other bad value and before anything runs.
type stringValue struct {
	s      *string
	isBool bool
}

func (v *stringValue) String() string { return *v.s }
func (v *stringValue) Set(s string) error {
	*v.s = s
	return nil
}
func (v *stringValue) Type() string {
	if v.isBool {
		return "bool"
	}
	return "string"
}

// Given reports whether any of the set's settings was given as a flag.
func (s *Set) Given() bool {
	for _, sp := range s.specs {
		for _, n := range append([]string{sp.long}, sp.aliases...) {
			if f := s.fs.Lookup(n); f != nil && f.Changed {
				return true
			}
		}
	}
	return false
}

// EnvNames lists every environment variable the set reads, in flag order.
func (s *Set) EnvNames() []string {
	var names []string
	for _, sp := range s.specs {
		names = append(names, sp.envNames()...)
	}
	return append(names, envOwnerGroups, envOwnerGroupsExcl, envEnvoyUser, envLoopbackCIDR)
}
