package control

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/shunt-dev/shunt/proxy"
)

// Resolutions of a ServiceEntry, Istio's: how its hosts' endpoints are
// found.
const (
	ResolutionNone   = "NONE"            // the original destination
	ResolutionStatic = "STATIC"          // the entry's endpoints, by address
	ResolutionDNS    = "DNS"             // the endpoints' (or the host's) names, every address (STRICT_DNS)
	ResolutionDNSRR  = "DNS_ROUND_ROBIN" // one address at a time (LOGICAL_DNS)
)

// serviceEntrySchema are the fields shunt runs.
var serviceEntrySchema = schema{
	"hosts": nil, "addresses": nil, "exportTo": nil, "location": nil, "resolution": nil,
	"ports":     listOf{schema{"number": nil, "protocol": nil, "name": nil, "targetPort": nil}},
	"endpoints": listOf{schema{"address": nil, "ports": nil, "labels": nil}},
}

// ServiceEntry is an Istio ServiceEntry as the mesh sees it: a service
// per host, in the entry's namespace, with its endpoints.
type ServiceEntry struct {
	Name, Namespace string
	Services        []*Service
	// Endpoints are those of a STATIC or DNS entry, by namespace/host.
	Endpoints map[string][]Endpoint
	Problems  []string
}

// ServiceEntryFrom reads an Istio ServiceEntry (YAML or JSON).
func ServiceEntryFrom(doc []byte) (*ServiceEntry, error) {
	o, problems, err := decodeObject(doc, serviceEntrySchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		Hosts, Addresses, ExportTo []string
		Location, Resolution       string
		Ports                      []struct {
			Number, TargetPort uint16
			Protocol, Name     string
		}
		Endpoints []struct {
			Address string
			Ports   map[string]uint16
			Labels  map[string]string
		}
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	fail := func(format string, args ...any) (*ServiceEntry, error) {
		return nil, fmt.Errorf("ServiceEntry %s: "+format, append([]any{name}, args...)...)
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return fail("%v", err)
	}
	if spec.Resolution == "" {
		spec.Resolution = ResolutionNone
	}
	switch spec.Resolution {
	case ResolutionNone, ResolutionStatic, ResolutionDNS, ResolutionDNSRR:
	default:
		return fail("spec.resolution: %q is not NONE, STATIC, DNS or DNS_ROUND_ROBIN", spec.Resolution)
	}
	if len(spec.Hosts) == 0 {
		return fail("spec.hosts: none")
	}
	var addrs []netip.Addr
	for i, a := range spec.Addresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			if p, perr := netip.ParsePrefix(a); perr == nil && p.IsSingleIP() {
				ip = p.Addr()
			} else {
				problems = append(problems, fmt.Sprintf("spec.addresses[%d]: %s (a range; single addresses are run)", i, a))
				continue
			}
		}
		addrs = append(addrs, ip)
	}
	var ports []Port
	for i, p := range spec.Ports {
		if p.Number == 0 {
			return fail("spec.ports[%d].number: missing", i)
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if _, err := proxy.IstioProtocol(proto); err != nil {
			return fail("spec.ports[%d].protocol: %v", i, err)
		}
		name := p.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", proto, p.Number)
		}
		ports = append(ports, Port{Name: name, Port: p.Number, Protocol: proto, TargetPort: p.TargetPort})
	}
	var services []*Service
	endpoints := map[string][]Endpoint{}
	for _, h := range spec.Hosts {
		if strings.HasPrefix(h, "*") {
			problems = append(problems, "spec.hosts: "+h+" (wildcard hosts are not run)")
			continue
		}
		s := &Service{Name: h, Namespace: o.Metadata.Namespace, Hostname: h, Addresses: addrs, Ports: ports,
			ExportTo: spec.ExportTo, Resolution: spec.Resolution, Entry: name}
		services = append(services, s)
		var eps []Endpoint
		for _, e := range spec.Endpoints {
			ep := Endpoint{Ports: map[string]uint16{}, Ready: true, Host: e.Address}
			if a, err := netip.ParseAddr(e.Address); err == nil {
				ep.Addr, ep.Host = a, ""
			} else if spec.Resolution == ResolutionStatic {
				return fail("spec.endpoints: %q is not an address (a STATIC entry's are)", e.Address)
			}
			for _, p := range ports {
				ep.Ports[p.Name] = p.Port
				if p.TargetPort != 0 {
					ep.Ports[p.Name] = p.TargetPort
				}
				if n, ok := e.Ports[p.Name]; ok {
					ep.Ports[p.Name] = n
				}
			}
			eps = append(eps, ep)
		}
		if len(eps) == 0 && (spec.Resolution == ResolutionDNS || spec.Resolution == ResolutionDNSRR) {
			ep := Endpoint{Ports: map[string]uint16{}, Ready: true, Host: h}
			for _, p := range ports {
				ep.Ports[p.Name] = p.Port
			}
			eps = append(eps, ep)
		}
		endpoints[s.Namespace+"/"+h] = eps
	}
	return &ServiceEntry{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Services: services, Endpoints: endpoints,
		Problems: problems}, nil
}
