// Package control is shunt's control plane: it keeps a model of the
// cluster's services, endpoints and pods, compiles it for each sidecar
// into Envoy's resources as Istio's istiod does (listeners, routes,
// clusters, endpoints) and serves them over xDS.
package control

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// DefaultDomain is the cluster's DNS domain.
const DefaultDomain = "cluster.local"

// Service is a Kubernetes Service as the mesh sees it.
type Service struct {
	Name, Namespace string
	// Hostname is the service's FQDN (name.namespace.svc.cluster.local).
	Hostname string
	// Addresses are the cluster IPs; none for a headless service.
	Addresses []netip.Addr
	Ports     []Port
	// Selector picks the pods behind the service (nil: none, the
	// endpoints are managed by hand).
	Selector map[string]string
	// ExportTo are the namespaces that see the service (Istio's
	// networking.istio.io/exportTo): "*" every one, "." its own.
	ExportTo []string
	// Resolution is a ServiceEntry's (NONE, STATIC, DNS,
	// DNS_ROUND_ROBIN); "" for a Kubernetes Service.
	Resolution string
	// Entry is the ServiceEntry (namespace/name) the service is a host of.
	Entry string
	// LoadBalancer are the IPs or host names its load balancer has
	// (status.loadBalancer.ingress): a gateway's addresses.
	LoadBalancer []string
}

// Port is one of a service's ports.
type Port struct {
	Name string
	Port uint16
	// Protocol is Istio's name for what the port speaks, from its
	// appProtocol, else its name's prefix; "" when neither says
	// (detected per connection).
	Protocol string
	// TargetPort is the pod's port, by number, or by name when
	// TargetPortName is set; 0 and no name: the same as Port.
	TargetPort     uint16
	TargetPortName string
}

// Endpoint is a pod (or address) behind a service.
type Endpoint struct {
	Addr netip.Addr
	// Host is a DNS ServiceEntry's endpoint name, resolved by the
	// sidecar; Addr is then not set.
	Host string
	// Ports are its port numbers by the service's port names.
	Ports map[string]uint16
	Ready bool
	// Pod is "namespace/name" when the endpoint is a pod.
	Pod string
}

// Pod is what the control plane knows of a pod running a sidecar.
type Pod struct {
	Name, Namespace string
	IPs             []netip.Addr
	Labels          map[string]string
	ServiceAccount  string
	// ContainerPorts are its named ports.
	ContainerPorts map[string]uint16
}

// World is everything the resources are compiled from. It is replaced,
// never changed in place: a compiled snapshot may keep pointers to it.
type World struct {
	Services map[string]*Service // by namespace/name
	// Endpoints are a service's endpoints, by namespace/name of the
	// service, then by the EndpointSlice that holds them.
	Endpoints map[string]map[string][]Endpoint
	Pods      map[string]*Pod // by namespace/name
	// VirtualServices and DestinationRules are Istio's, by namespace/name.
	VirtualServices  map[string]*VirtualService
	DestinationRules map[string]*DestinationRule
	// HTTPRoutes are Gateway API's HTTPRoutes and GRPCRoutes bound to
	// Services, by routeKey.
	HTTPRoutes map[string]*HTTPRoute
	// Sidecars are Istio's Sidecar resources scoping a namespace, by
	// namespace/name; sidecarProblems what of the others is not run.
	Sidecars        map[string]*Sidecar
	sidecarProblems map[string][]string
	// PeerAuthentications and AuthorizationPolicies are Istio's, by
	// namespace/name.
	PeerAuthentications   map[string]*PeerAuthentication
	AuthorizationPolicies map[string]*AuthorizationPolicy
	// Gateways are Gateway API's, by namespace/name; GatewayClasses by
	// name.
	Gateways       map[string]*Gateway
	GatewayClasses map[string]*GatewayClass
	// IstioGateways are Istio's (networking.istio.io) Gateways, by
	// namespace/name.
	IstioGateways map[string]*IstioGateway
	// EnvoyFilters are Istio's EnvoyFilters, by namespace/name.
	EnvoyFilters map[string]*EnvoyFilter
	// TLSRoutes are Gateway API's TLSRoutes, by namespace/name, and
	// TCPRoutes, by "TCPRoute namespace/name".
	TLSRoutes map[string]*TLSRoute
	// ReferenceGrants are Gateway API's, by namespace/name.
	ReferenceGrants map[string]*ReferenceGrant
	// Secrets are the TLS Secrets (a gateway's certificates), by
	// namespace/name.
	Secrets map[string]*TLSSecret
	// Namespaces are the cluster's namespaces' labels, by name, which
	// the mesh's discovery selectors read.
	Namespaces map[string]map[string]string
	// Domain is the cluster's DNS domain (cluster.local).
	Domain string
	// epVersion changes, per service, with its endpoints: a compiler
	// keeps what it built from endpoints that did not change.
	epVersion map[string]uint64
	// podVersion changes with any pod: subsets pick endpoints by their
	// pods' labels.
	podVersion uint64
	// serviceEntries are what each ServiceEntry made, by its
	// namespace/name.
	serviceEntries map[string]serviceEntry
}

// serviceEntry is a ServiceEntry in the world: the services' keys it
// made, and the fields of it shunt does not run.
type serviceEntry struct {
	services []string
	problems []string
}

// NewWorld is an empty world in the cluster domain.
func NewWorld() *World {
	return &World{Services: map[string]*Service{}, Endpoints: map[string]map[string][]Endpoint{},
		Pods: map[string]*Pod{}, Domain: DefaultDomain, epVersion: map[string]uint64{},
		VirtualServices: map[string]*VirtualService{}, DestinationRules: map[string]*DestinationRule{},
		HTTPRoutes: map[string]*HTTPRoute{}, Sidecars: map[string]*Sidecar{}, Namespaces: map[string]map[string]string{},
		PeerAuthentications: map[string]*PeerAuthentication{}, AuthorizationPolicies: map[string]*AuthorizationPolicy{},
		Gateways: map[string]*Gateway{}, GatewayClasses: map[string]*GatewayClass{}, IstioGateways: map[string]*IstioGateway{}, EnvoyFilters: map[string]*EnvoyFilter{},
		TLSRoutes: map[string]*TLSRoute{}, ReferenceGrants: map[string]*ReferenceGrant{}, Secrets: map[string]*TLSSecret{}}
}

// Clone is a copy of w whose maps can be changed without touching w's.
func (w *World) Clone() *World {
	return &World{Services: maps.Clone(w.Services), Endpoints: maps.Clone(w.Endpoints), Pods: maps.Clone(w.Pods), Domain: w.Domain,
		epVersion: maps.Clone(w.epVersion), podVersion: w.podVersion,
		VirtualServices: maps.Clone(w.VirtualServices), DestinationRules: maps.Clone(w.DestinationRules),
		HTTPRoutes: maps.Clone(w.HTTPRoutes), serviceEntries: w.serviceEntries,
		Sidecars: maps.Clone(w.Sidecars), sidecarProblems: maps.Clone(w.sidecarProblems), Namespaces: maps.Clone(w.Namespaces),
		PeerAuthentications: maps.Clone(w.PeerAuthentications), AuthorizationPolicies: maps.Clone(w.AuthorizationPolicies),
		Gateways: maps.Clone(w.Gateways), GatewayClasses: maps.Clone(w.GatewayClasses), IstioGateways: maps.Clone(w.IstioGateways), EnvoyFilters: maps.Clone(w.EnvoyFilters),
		TLSRoutes: maps.Clone(w.TLSRoutes), ReferenceGrants: maps.Clone(w.ReferenceGrants), Secrets: maps.Clone(w.Secrets)}
}

// visibleFrom says whether a proxy in namespace ns sees s.
func (s *Service) visibleFrom(ns string) bool {
	if len(s.ExportTo) == 0 {
		return true
	}
	for _, e := range s.ExportTo {
		if e == "*" || e == ns || (e == "." && s.Namespace == ns) {
			return true
		}
	}
	return false
}

// servicesFor are the services a proxy in namespace ns sees, by hostname.
func (w *World) servicesFor(ns string) []*Service {
	var out []*Service
	for _, s := range w.Services {
		if s.visibleFrom(ns) {
			out = append(out, s)
		}
	}
	// One service per host name, as Istio keeps one: the namespace's own
	// first, then by namespace and name (two ServiceEntries may declare
	// the same host; two clusters of one name would be refused whole).
	own := func(s *Service) int {
		if s.Namespace == ns {
			return 0
		}
		return 1
	}
	slices.SortFunc(out, func(a, b *Service) int {
		return cmp.Or(strings.Compare(a.Hostname, b.Hostname), cmp.Compare(own(a), own(b)),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return slices.CompactFunc(out, func(a, b *Service) bool { return a.Hostname == b.Hostname })
}

// endpoint is a ready endpoint of a service port: its address and
// port, and its pod (namespace/name; "" for none).
type endpoint struct {
	addr netip.AddrPort
	pod  string
}

// readyEndpoints are the ready endpoints of a service's port, in a
// stable order: address, then port.
func (w *World) readyEndpoints(s *Service, port Port) []endpoint {
	var out []endpoint
	for _, eps := range w.Endpoints[s.Namespace+"/"+s.Name] {
		for _, e := range eps {
			p, ok := e.Ports[port.Name]
			if !e.Ready || !ok || !e.Addr.IsValid() {
				continue // not ready, not on this port, or a name (DNS)
			}
			out = append(out, endpoint{netip.AddrPortFrom(e.Addr, p), e.Pod})
		}
	}
	slices.SortFunc(out, func(a, b endpoint) int { return a.addr.Compare(b.addr) })
	return slices.CompactFunc(out, func(a, b endpoint) bool { return a.addr == b.addr })
}

// endpoints are the addresses of a service port's ready endpoints.
func (w *World) endpoints(s *Service, port Port) []netip.AddrPort {
	var out []netip.AddrPort
	for _, e := range w.readyEndpoints(s, port) {
		out = append(out, e.addr)
	}
	return out
}

// podByIP is the pod with ip, if the control plane knows one.
func (w *World) podByIP(ip netip.Addr) *Pod {
	for _, p := range w.Pods {
		if slices.Contains(p.IPs, ip) {
			return p
		}
	}
	return nil
}

// selects says whether a service's selector picks a pod.
func (s *Service) selects(p *Pod) bool {
	if s.Namespace != p.Namespace || len(s.Selector) == 0 {
		return false
	}
	for k, v := range s.Selector {
		if p.Labels[k] != v {
			return false
		}
	}
	return true
}
