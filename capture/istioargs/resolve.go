package istioargs

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/netns"
)

// Options are how `shunt redirect` applies a Config.
type Options struct {
	DryRun         bool
	NetworkNS      string // namespace file; "" for the current one
	Reconcile      bool
	CleanupOnly    bool
	ForceApply     bool
	NativeNftables bool
	IptablesBinary string // "" to detect
	RunValidation  bool
	SkipRuleApply  bool
	ProbePort      uint16
	ProbeTimeout   time.Duration
}

// value is one setting as given, and where it came from, for messages.
type value struct {
	text, from string
	given      bool
}

func (s *Set) get(long string) value {
	var sp spec
	for _, x := range s.specs {
		if x.long == long {
			sp = x
		}
	}
	names := append([]string{sp.long}, sp.aliases...)
	for _, n := range names {
		if f := s.fs.Lookup(n); f != nil && f.Changed {
			from := "--" + n
			if sp.short != "" && n == sp.long {
				from += " (-" + sp.short + ")"
			}
			return value{*s.values[long], from, true}
		}
	}
	for _, e := range sp.envNames() {
		if v, ok := s.getenv(e); ok && v != "" {
			return value{v, "$" + e, true}
		}
	}
	return value{sp.def, "--" + sp.long + " default", false}
}

// errs collects every problem, so one run reports them all; a setting
// that is wrong many times over (a list of 200 bad ranges) is reported for
// its first few and counted for the rest.
type errs struct {
	list []error
	per  map[string]int
}

// mostPerSetting is how many of one setting's problems are spelled out.
const mostPerSetting = 3

func (e *errs) add(v value, err error) {
	if err == nil {
		return
	}
	if e.per == nil {
		e.per = map[string]int{}
	}
	if e.per[v.from]++; e.per[v.from] <= mostPerSetting {
		e.list = append(e.list, fmt.Errorf("%s: %w", v.from, err))
	}
}

func (e *errs) err() error {
	list := e.list
	for from, n := range e.per {
		if n > mostPerSetting {
			list = append(list, fmt.Errorf("%s: and %d more problems like these", from, n-mostPerSetting))
		}
	}
	return errors.Join(list...)
}

// Config checks the capture settings and returns the Config they describe.
func (s *Set) Config() (capture.Config, error) {
	cfg := capture.DefaultConfig()
	var e errs
	port := func(name string, dst *uint16) {
		v := s.get(name)
		p, err := capture.ParsePort(v.text)
		e.add(v, err)
		*dst = p
	}
	port(fOutboundPort, &cfg.OutboundPort)
	port(fInboundPort, &cfg.InboundPort)
	port(fTunnelPort, &cfg.TunnelPort)
	if cfg.OutboundPort == cfg.InboundPort && cfg.OutboundPort != 0 {
		out, in := s.get(fOutboundPort), s.get(fInboundPort)
		e.add(in, fmt.Errorf("%d is also the outbound port (%s): one listener cannot tell captured outbound "+
			"connections from inbound ones, and no proxy serves both on one port", cfg.InboundPort, out.from))
	}
	ports := func(name string, all *bool, dst *[]capture.PortRange) {
		v := s.get(name)
		if all != nil && strings.TrimSpace(v.text) == "*" {
			*all = true
			return
		}
		list, err := capture.ParsePortList(v.text)
		e.add(v, err)
		*dst = list
	}
	ports(fInboundPorts, &cfg.InboundAll, &cfg.InboundPorts)
	ports(fInboundExclude, nil, &cfg.InboundExcludePorts)
	ports(fOutboundPorts, nil, &cfg.OutboundPorts)
	ports(fOutboundExclude, nil, &cfg.OutboundExcludePorts)

	v := s.get(fServiceCIDR)
	if strings.TrimSpace(v.text) == "*" {
		cfg.OutboundAll = true
	} else {
		cfg.OutboundCIDRs = s.prefixes(v, &e)
	}
	if v = s.get(fServiceExclude); strings.TrimSpace(v.text) == "*" {
		e.add(v, errors.New(`"*" would exclude every destination; list ranges instead`))
	} else {
		cfg.OutboundExcludeCIDRs = s.prefixes(v, &e)
	}
	cfg.ExcludeInterfaces = interfaces(s.get(fExcludeInterfaces), &e)
	cfg.KubeVirtInterfaces = interfaces(s.get(fKubeVirt), &e)

	v = s.get(fMode)
	switch m := capture.Mode(strings.ToUpper(strings.TrimSpace(v.text))); m {
	case capture.ModeRedirect, capture.ModeTProxy:
		cfg.InboundMode = m
	case "":
	default:
		e.add(v, fmt.Errorf("%s is not an interception mode (REDIRECT or TPROXY)", clip.Quote(v.text)))
	}
	s.identities(&cfg, &e)
	s.tproxy(&cfg, &e)
	cfg.RedirectDNS = s.boolean(fRedirectDNS, &e)
	cfg.CaptureAllDNS = s.boolean(fCaptureAllDNS, &e)
	if cfg.RedirectDNS && !cfg.CaptureAllDNS {
		cfg.DNSServers = s.dnsServers(&e)
	}
	cfg.DropInvalid = s.boolean(fDropInvalid, &e)
	cfg.DualStack = s.boolean(fDualStack, &e)
	s.envOnly(&cfg, &e)
	if len(e.list) == 0 {
		if err := cfg.Validate(); err != nil {
			e.list = append(e.list, err)
		}
	}
	return cfg, e.err()
}

func (s *Set) prefixes(v value, e *errs) []netip.Prefix {
	var out []netip.Prefix
	for _, item := range capture.SplitList(v.text) {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			// A bare address is a range of one.
			a, aerr := netip.ParseAddr(item)
			if aerr != nil {
				e.add(v, fmt.Errorf("%s is not a CIDR range", clip.Quote(item)))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

// dnsServers are --dns-servers, or the nameserver lines of --resolv-conf.
func (s *Set) dnsServers(e *errs) []netip.Addr {
	v := s.get(fDNSServers)
	var list []string
	if strings.TrimSpace(v.text) != "" {
		list = capture.SplitList(v.text)
	} else {
		v = s.get(fResolvConf)
		data, err := os.ReadFile(v.text)
		if err != nil {
			e.add(v, fmt.Errorf("reading the name servers: %w", err))
			return nil
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
				list = append(list, f[1])
			}
		}
	}
	var out []netip.Addr
	for _, item := range list {
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			e.add(v, fmt.Errorf("%s is not a name server address", clip.Quote(item)))
			continue
		}
		out = append(out, a.Unmap())
	}
	return out
}

func interfaces(v value, e *errs) []string {
	list := capture.SplitList(v.text)
	for _, name := range list {
		e.add(v, capture.ValidInterfaceName(name))
	}
	return list
}

func (s *Set) boolean(name string, e *errs) bool {
	v := s.get(name)
	if v.text == "" {
		return false
	}
	b, err := strconv.ParseBool(v.text)
	if err != nil {
		e.add(v, fmt.Errorf("%s is not true or false", clip.Quote(v.text)))
	}
	return b
}

// identities resolves the proxy's UIDs and GIDs: numbers, or names looked up
// in this system's user and group databases, as iptables itself would.
func (s *Set) identities(cfg *capture.Config, e *errs) {
	v := s.get(fProxyUID)
	if v.text == "" {
		cfg.ProxyUIDs = []uint32{defaultProxyUID(s.getenv)}
	} else if cfg.ProxyUIDs = ids(v, e, lookupUser, "user"); len(cfg.ProxyUIDs) == 0 {
		e.add(v, errors.New("names no UID: the proxy's own traffic would loop back into it"))
	}
	if v = s.get(fProxyGID); v.text == "" {
		cfg.ProxyGIDs = cfg.ProxyUIDs
	} else if cfg.ProxyGIDs = ids(v, e, lookupGroup, "group"); len(cfg.ProxyGIDs) == 0 {
		e.add(v, errors.New("names no GID"))
	}
}

func defaultProxyUID(getenv func(string) (string, bool)) uint32 {
	name, ok := getenv(envEnvoyUser)
	if !ok || name == "" {
		name = defaultEnvoyUser
	}
	if id, err := lookupUser(name); err == nil {
		return id
	}
	return capture.DefaultConfig().ProxyUIDs[0]
}

func ids(v value, e *errs, lookup func(string) (uint32, error), kind string) []uint32 {
	var out []uint32
	for _, item := range capture.SplitList(v.text) {
		if n, err := strconv.ParseUint(item, 10, 32); err == nil {
			out = append(out, uint32(n))
			continue
		}
		id, err := lookup(item)
		if err != nil {
			e.add(v, fmt.Errorf("%s is not a number and not a %s here", clip.Quote(item), kind))
			continue
		}
		out = append(out, id)
	}
	return out
}

func lookupUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}

func lookupGroup(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), err
}

func (s *Set) tproxy(cfg *capture.Config, e *errs) {
	v := s.get(fTProxyMark)
	mark, err := strconv.ParseUint(strings.TrimSpace(v.text), 0, 32)
	if err != nil || mark == 0 {
		e.add(v, fmt.Errorf("%s is not a packet mark (1 to 0xffffffff)", clip.Quote(v.text)))
	}
	cfg.TProxyMark = uint32(mark)
	v = s.get(fTProxyRouteTable)
	table, err := strconv.ParseUint(strings.TrimSpace(v.text), 10, 32)
	if err != nil || table == 0 || table >= 253 && table <= 255 {
		e.add(v, fmt.Errorf("%s is not a routing table shunt may use (1 to 2^32-1, not 253-255)", clip.Quote(v.text)))
	}
	cfg.TProxyRouteTable = uint32(table)
}

// envOnly reads the settings istio-iptables takes only from the environment.
func (s *Set) envOnly(cfg *capture.Config, e *errs) {
	if text, ok := s.getenv(envLoopbackCIDR); ok && text != "" {
		v := value{text, "$" + envLoopbackCIDR, true}
		p, err := netip.ParsePrefix(strings.TrimSpace(text))
		if err != nil {
			e.add(v, fmt.Errorf("%s is not a CIDR range", clip.Quote(text)))
		}
		cfg.LoopbackCIDR = p.Masked()
	}
	include, _ := s.getenv(envOwnerGroups)
	exclude, _ := s.getenv(envOwnerGroupsExcl)
	inc := value{include, "$" + envOwnerGroups, true}
	exc := value{exclude, "$" + envOwnerGroupsExcl, true}
	switch {
	case strings.TrimSpace(include) == "" || strings.TrimSpace(include) == "*":
		cfg.OwnerGroupsAll = true
		cfg.OwnerGroupsExclude = ids(exc, e, lookupGroup, "group")
	case strings.TrimSpace(exclude) != "":
		e.add(exc, fmt.Errorf("only applies when %s is '*' (it is %s)", envOwnerGroups, clip.Quote(include)))
	default:
		cfg.OwnerGroupsAll = false
		cfg.OwnerGroupsInclude = ids(inc, e, lookupGroup, "group")
	}
}

// Options checks the settings of how to apply.
func (s *Set) Options() (Options, error) {
	var o Options
	var e errs
	o.DryRun = s.boolean(fDryRun, &e)
	o.Reconcile = s.boolean(fReconcile, &e)
	o.CleanupOnly = s.boolean(fCleanupOnly, &e)
	o.ForceApply = s.boolean(fForceApply, &e)
	o.NativeNftables = s.boolean(fNativeNftables, &e)
	o.RunValidation = s.boolean(fRunValidation, &e)
	o.SkipRuleApply = s.boolean(fSkipRuleApply, &e)
	v := s.get(fProbePort)
	var err error
	o.ProbePort, err = capture.ParsePort(v.text)
	e.add(v, err)
	v = s.get(fProbeTimeout)
	if o.ProbeTimeout, err = time.ParseDuration(v.text); err != nil || o.ProbeTimeout <= 0 {
		e.add(v, fmt.Errorf("%s is not a positive duration such as 5s", clip.Quote(v.text)))
	}
	v = s.get(fForceBinary)
	switch v.text {
	case "", "iptables", "iptables-legacy", "iptables-nft":
		o.IptablesBinary = v.text
	default:
		e.add(v, fmt.Errorf("%s is not iptables, iptables-legacy or iptables-nft", clip.Quote(v.text)))
	}
	o.NetworkNS = s.get(fNetworkNamespace).text
	if v = s.get(fPID); v.given {
		pid, err := strconv.Atoi(v.text)
		switch {
		case err != nil || pid <= 0:
			e.add(v, fmt.Errorf("%s is not a process ID", clip.Quote(v.text)))
		case o.NetworkNS != "":
			e.add(v, errors.New("give --pid or --network-namespace, not both"))
		default:
			o.NetworkNS = netns.PathForPID(pid)
		}
	}
	if o.NativeNftables && o.IptablesBinary != "" {
		e.add(s.get(fForceBinary), errors.New("cannot be combined with --native-nftables"))
	}
	if o.CleanupOnly && o.SkipRuleApply {
		e.add(s.get(fCleanupOnly), errors.New("cannot be combined with --skip-rule-apply"))
	}
	return o, e.err()
}
