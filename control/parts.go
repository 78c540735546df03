package control

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/xds"
)

// A Compiler compiles sidecars' resources under one mesh configuration,
// keeping what did not change: a service port's resources while neither
// the service nor its endpoints change, a namespace's outbound side for
// the world it was compiled from. Safe for concurrent use.
type Compiler struct {
	mesh Mesh

	mu     sync.Mutex // held while a space is compiled
	ports  map[portKey]*portParts
	spaces map[spaceKey]*space // the latest of each
	world  *World              // the world ports were last swept for

	log       *slog.Logger
	onProblem func(Problem)
	problems  map[string]Problem    // the world's last compiled, by Problem.key
	allocated map[*Service]*Service // ServiceEntries' with an address allocated, by original
	// lastWorld is the world before cc.world; epChanged the services
	// whose endpoints alone changed from it (nil: more changed).
	lastWorld *World
	epChanged map[string]bool
	reported  map[string]string // what was logged (and told onProblem), by key: once each
}

// Problem is what of a routing rule cannot take effect: a field shunt
// does not run, or a destination the mesh does not have.
type Problem struct {
	Kind   string // VirtualService, DestinationRule, ServiceEntry, HTTPRoute
	Object string // namespace/name
	Field  string // its path in the object
	Why    string
}

func (p Problem) key() string { return p.Kind + " " + p.Object + " " + p.Field }

// SetLog has the compiler log what of the routing rules cannot take
// effect, once each.
func (cc *Compiler) SetLog(log *slog.Logger) { cc.log = log }

// OnProblem has the compiler tell f, once each and without waiting for
// it, what of the routing rules cannot take effect.
func (cc *Compiler) OnProblem(f func(Problem)) { cc.onProblem = f }

// report notes what cannot take effect (cc.mu held).
func (cc *Compiler) report(p Problem) {
	key := p.key()
	cc.problems[key] = p
	if cc.reported[key] == p.Why {
		return
	}
	cc.reported[key] = p.Why
	if cc.log != nil {
		cc.log.Warn("routing rule not in force", "kind", p.Kind, "object", p.Object, "field", p.Field, "problem", p.Why)
	}
	if cc.onProblem != nil {
		go cc.onProblem(p)
	}
}

// Problems are what of the routing rules is not in force in the world
// last compiled, by "Kind namespace/name field".
func (cc *Compiler) Problems() map[string]string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := make(map[string]string, len(cc.problems))
	for k, p := range cc.problems {
		out[k] = p.Why
	}
	return out
}

// NewCompiler is a compiler under m.
func NewCompiler(m Mesh) (*Compiler, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	return &Compiler{mesh: m, ports: map[portKey]*portParts{}, spaces: map[spaceKey]*space{}, problems: map[string]Problem{}, reported: map[string]string{}}, nil
}

type portKey struct {
	svc  string // namespace/name
	port uint16
}

type spaceKey struct {
	namespace string
	v6        bool
}

// portParts are a service port's resources, the same for every sidecar
// but for its virtual host's domains (the bare name only from its own
// namespace).
type portParts struct {
	svc        *Service
	vs         *VirtualService
	dr         *DestinationRule
	epVersion  uint64
	podVersion uint64
	class      protocolClass
	headless   bool
	serviceClusters
	vhost  [2]*routev3.VirtualHost     // from another namespace, from its own; nil for TCP
	own    *routev3.RouteConfiguration // HOST:P, for its cluster IPs' chain; nil when headless or TCP
	addrs  []netip.Addr                // its cluster IPs, or a headless service's endpoints
	chains []*listenerv3.FilterChain   // on all of addrs
	// tcp is its VirtualService's tcp route for the port, if it has
	// one: its TCP chains' proxy.
	tcp *listenerv3.Filter
}

// serviceClusters are a service port's cluster and its load assignment
// (nil when not over EDS), its DestinationRule's subsets' clusters and
// theirs, and the identities its mutual TLS expects (with auto mTLS or
// ISTIO_MUTUAL).
type serviceClusters struct {
	cluster        *clusterv3.Cluster
	cla            *endpointv3.ClusterLoadAssignment
	subsetClusters []*clusterv3.Cluster
	subsetCLAs     []*endpointv3.ClusterLoadAssignment
	sans           []string
}

// serviceClusters builds a service port's clusters: Istio's
// outbound|P||host, auto mTLS to its endpoints with sidecars, its
// DestinationRule's policy (tls over auto mTLS) and subsets.
func (c *compiler) serviceClusters(s *Service, p Port, dr *DestinationRule) serviceClusters {
	name := clusterName("outbound", p.Port, "", s.Hostname)
	sc := serviceClusters{cluster: c.serviceCluster(s, p, name)}
	if c.m.AutoMTLS || dr.istioMutual() {
		sc.sans = c.meshIdentities(s, p)
	}
	if c.m.AutoMTLS && sc.cluster.GetType() == clusterv3.Cluster_EDS {
		autoMTLS(sc.cluster, sc.sans)
	}
	// Over EDS: a Service's with cluster IPs, a STATIC ServiceEntry's.
	if s.Resolution == "" && len(s.Addresses) > 0 || s.Resolution == ResolutionStatic {
		sc.cla = c.loadAssignment(s, p, name)
	}
	if dr != nil {
		applyPolicy(sc.cluster, dr.Policy, p.Port, s.Hostname, sc.sans)
		sc.subsetClusters, sc.subsetCLAs = c.subsetParts(s, p, dr, sc.cluster, sc.sans)
	}
	return sc
}

// space is a namespace's outbound side, shared by its sidecars.
type space struct {
	world     *World     // compiled from
	local     []*Service // the namespace's own, which may select its pods
	listener  *listenerv3.Listener
	routes    []*routev3.RouteConfiguration
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	// nameTable is the names the namespace's sidecars' DNS proxies
	// answer (NDS), made of names.
	nameTable proto.Message
	names     []xds.NameEntry
	// hash is every resource's content hash, by resource.
	hash map[proto.Message]string
	// What the listener and the route configurations by port were made
	// of, for the next space to keep them when it would make the same.
	addrChains []*listenerv3.FilterChain
	httpPorts  []uint16
	portRoutes map[uint16]*routev3.RouteConfiguration
	// shared are the states its sidecars share, made once; prev is the
	// space it follows, whose states it keeps where its lists are the
	// same (until then).
	sharedOnce sync.Once
	shared     sharedStates
	prev       *space
}

// space is c's namespace's outbound side, compiled when its world is
// not the one of the last (cc.mu held).
func (cc *Compiler) space(c *compiler) *space {
	cc.survey(c.w)
	key := spaceKey{c.n.Namespace, c.v6}
	prev := cc.spaces[key]
	if prev != nil && prev.world == c.w {
		return prev
	}
	if sp := cc.patched(c, prev); sp != nil {
		cc.spaces[key] = sp
		return sp
	}
	sp := c.outbound(prev)
	if prev != nil {
		prev.prev = nil // at most one space back is kept
	}
	sp.world, sp.prev = c.w, prev
	cc.spaces[key] = sp
	return sp
}

// Survey notes what of w's routing rules shunt does not run, as a
// compile of w would (the server calls it on each world, whether
// sidecars are connected or not).
func (cc *Compiler) Survey(w *World) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.survey(w)
}

// survey forgets the parts of services w changed or lacks, and notes the
// fields of its rules shunt does not run (cc.mu held).
func (cc *Compiler) survey(w *World) {
	if cc.world == w {
		return
	}
	cc.lastWorld, cc.epChanged = cc.world, endpointChanges(cc.world, w)
	cc.world = w
	cc.allocateAddresses(w)
	for k, pp := range cc.ports {
		if w.Services[k.svc] != pp.svc {
			delete(cc.ports, k) // changed or gone
		}
	}
	cc.problems = map[string]Problem{}
	unrun := func(kind, key string, fields []string) {
		for _, f := range fields {
			cc.report(Problem{kind, key, f, "not run by shunt"})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.VirtualServices)) {
		unrun("VirtualService", key, w.VirtualServices[key].Problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.DestinationRules)) {
		unrun("DestinationRule", key, w.DestinationRules[key].Problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.EnvoyFilters)) {
		for _, p := range w.EnvoyFilters[key].Problems {
			field, why, ok := strings.Cut(p, ": ")
			if !ok {
				why = "not run by shunt"
			}
			cc.report(Problem{"EnvoyFilter", key, field, why})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.serviceEntries)) {
		unrun("ServiceEntry", key, w.serviceEntries[key].problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.HTTPRoutes)) {
		r := w.HTTPRoutes[key]
		unrun(r.Routes.Kind, r.Namespace+"/"+r.Name, r.Routes.Problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.sidecarProblems)) {
		unrun("Sidecar", key, w.sidecarProblems[key])
	}
	for _, key := range slices.Sorted(maps.Keys(w.PeerAuthentications)) {
		unrun("PeerAuthentication", key, w.PeerAuthentications[key].Problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.Gateways)) {
		for _, p := range w.Gateways[key].Problems {
			field, why, _ := strings.Cut(p, ": ")
			cc.report(Problem{"Gateway", key, field, why})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.IstioGateways)) {
		for _, p := range w.IstioGateways[key].Problems {
			field, why, _ := strings.Cut(p, ": ")
			cc.report(Problem{"Gateway", key, field, why})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.TLSRoutes)) {
		r := w.TLSRoutes[key]
		unrun(r.Kind, r.Namespace+"/"+r.Name, r.Problems)
	}
	for _, key := range slices.Sorted(maps.Keys(w.AuthorizationPolicies)) {
		ap := w.AuthorizationPolicies[key]
		for _, p := range ap.Problems {
			field, why, ok := strings.Cut(p, ": ")
			if !ok {
				field, why = p, "not run by shunt"
			}
			cc.report(Problem{"AuthorizationPolicy", key, field, why})
		}
	}
}

// parts returns a service port's resources, built when the service or
// its endpoints changed since (cc.mu held).
func (cc *Compiler) parts(c *compiler, s *Service, p Port) *portParts {
	key := portKey{s.Namespace + "/" + s.Name, p.Port}
	epv := c.w.epVersion[key.svc]
	vs, dr := c.rules.vs[s.Hostname], c.rules.dr[s.Hostname]
	if vs != nil && len(vs.Ports) > 0 && !slices.Contains(vs.Ports, p.Port) {
		vs = nil // bound to another of the service's ports
	}
	subsets := dr != nil && len(dr.Subsets) > 0
	// Routes may name any service: a VirtualService's are made anew.
	// Pods shape subsets' endpoints, and with auto mTLS which endpoints
	// have sidecars, and whose identities the cluster expects.
	podsMatter := subsets || c.m.AutoMTLS || dr.istioMutual()
	if pp := cc.ports[key]; pp != nil && pp.svc == s && vs == nil && pp.vs == nil && pp.dr == dr {
		if pp.epVersion == epv && (!podsMatter || pp.podVersion == c.w.podVersion) {
			return pp
		}
		// Only its load assignments follow the endpoints, as long as the
		// identities behind them stay.
		if !pp.headless && (!c.m.AutoMTLS && !dr.istioMutual() || slices.Equal(pp.sans, c.meshIdentities(s, p))) {
			next := *pp
			next.cla, next.epVersion, next.podVersion = c.loadAssignment(s, p, pp.cluster.GetName()), epv, c.w.podVersion
			if subsets {
				_, next.subsetCLAs = c.subsetParts(s, p, dr, pp.cluster, pp.sans)
			}
			cc.ports[key] = &next
			return &next
		}
	}
	pp := c.buildParts(s, p, vs, dr)
	pp.epVersion, pp.podVersion = epv, c.w.podVersion
	cc.ports[key] = pp
	return pp
}

// buildParts builds a service port's resources.
func (c *compiler) buildParts(s *Service, p Port, vs *VirtualService, dr *DestinationRule) *portParts {
	name := clusterName("outbound", p.Port, "", s.Hostname)
	pp := &portParts{svc: s, vs: vs, dr: dr, class: classOf(p.Protocol), headless: len(s.Addresses) == 0, addrs: s.Addresses,
		serviceClusters: c.serviceClusters(s, p, dr)}
	if pp.headless {
		pp.addrs = c.endpointAddrs(s, p)
	}
	rds := strconv.Itoa(int(p.Port))
	if pp.class != classTCP {
		pp.vhost = [2]*routev3.VirtualHost{c.serviceHost(s, p, name, false), c.serviceHost(s, p, name, true)}
		if vs != nil {
			routes := c.vsRoutes(vs, s, p)
			pp.vhost[0].Routes, pp.vhost[1].Routes = routes, routes
		}
		c.hashRoutes(pp.vhost[0].Routes)
		if vs == nil {
			c.hashRoutes(pp.vhost[1].Routes)
		}
		if !pp.headless {
			// To its own addresses a request reaches the service
			// whatever its Host says (nginx's upstream name, say).
			rds = pp.vhost[0].Name
			pp.own = &routev3.RouteConfiguration{Name: rds, VirtualHosts: []*routev3.VirtualHost{
				{Name: rds, Domains: []string{"*"}, Routes: pp.vhost[0].Routes, IncludeRequestAttemptCount: true}}}
		}
	}
	if vs != nil && pp.class != classHTTP {
		pp.tcp = c.meshTCP(vs, p.Port)
	}
	if pp.class != classHTTP || !pp.headless {
		pp.chains = c.addrChains(pp, p.Port, name, rds, pp.addrs)
	}
	return pp
}

// addrChains are a service port's chains on addrs: HTTP through the
// route configuration rds, TCP to the cluster (or where its
// VirtualService's tcp route says), or both when its protocol is not
// declared.
func (c *compiler) addrChains(pp *portParts, port uint16, cluster, rds string, addrs []netip.Addr) []*listenerv3.FilterChain {
	if len(addrs) == 0 {
		return nil // no chain: one with no prefix would take every address
	}
	chainName := fmt.Sprintf("%s_%d", addrs[0], port)
	prefixes := hosts(addrs)
	tcp := pp.tcp
	if tcp == nil {
		tcp = c.tcpProxy(cluster)
	}
	switch pp.class {
	case classHTTP:
		return []*listenerv3.FilterChain{chain(chainName, port, prefixes, false, c.hcm(outboundStatPrefix(port), rds, nil))}
	case classAuto:
		return []*listenerv3.FilterChain{chain(chainName+"-http", port, prefixes, true, c.hcm(outboundStatPrefix(port), rds, nil)),
			chain(chainName, port, prefixes, false, tcp)}
	}
	return []*listenerv3.FilterChain{chain(chainName, port, prefixes, false, tcp)}
}

// portRoute is sp's route configuration for port if its virtual hosts
// were vhosts (then the fallback).
func (sp *space) portRoute(port uint16, vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	if sp == nil || sp.portRoutes[port] == nil {
		return nil
	}
	rc := sp.portRoutes[port]
	if hs := rc.GetVirtualHosts(); slices.Equal(hs[:len(hs)-1], vhosts) {
		return rc
	}
	return nil
}

// sameListener is sp's listener if next's would have the same chains.
func (sp *space) sameListener(next *space) *listenerv3.Listener {
	if sp == nil || !slices.Equal(sp.addrChains, next.addrChains) || !slices.Equal(sp.httpPorts, next.httpPorts) {
		return nil
	}
	return sp.listener
}

// hashAll hashes sp's resources, keeping prev's hash of a resource it
// shares.
func (sp *space) hashAll(prev *space) {
	add := func(m proto.Message) {
		if h, ok := prev.hashFor(m); ok {
			sp.hash[m] = h
		} else {
			sp.hash[m] = hashOf(m)
		}
	}
	add(sp.listener)
	for _, m := range sp.routes {
		add(m)
	}
	for _, m := range sp.clusters {
		add(m)
	}
	for _, m := range sp.endpoints {
		add(m)
	}
}

func (sp *space) hashFor(m proto.Message) (string, bool) {
	if sp == nil {
		return "", false
	}
	h, ok := sp.hash[m]
	return h, ok
}

// hashOf is m's content hash.
func hashOf(m proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err) // a message this package built always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
