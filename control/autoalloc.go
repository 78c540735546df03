package control

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// autoAllocRange is where addresses are allocated for ServiceEntry hosts
// that have none: Istio's, 240.240.0.0/16 (class E, never routed).
var autoAllocRange = netip.MustParsePrefix("240.240.0.0/16")

// allocate gives each host one of autoAllocRange's addresses: by a hash
// of its name, the next free one on a collision, the hosts taken in name
// order. The same hosts get the same addresses whatever order they came
// in, and across restarts; a host added can move another only when they
// collide and it sorts first.
func allocate(hosts []string) map[string]netip.Addr {
	hosts = slices.Sorted(slices.Values(hosts))
	const slots = 1<<16 - 2 // not .0.0 nor .255.255
	used := map[uint32]bool{}
	out := make(map[string]netip.Addr, len(hosts))
	for _, host := range hosts {
		h := fnv.New32a()
		h.Write([]byte(host))
		n := h.Sum32()%slots + 1
		for used[n] {
			n = n%slots + 1
		}
		used[n] = true
		base := autoAllocRange.Addr().As4()
		out[host] = netip.AddrFrom4([4]byte{base[0], base[1], byte(n >> 8), byte(n)})
	}
	return out
}

// allocateAddresses gives the ServiceEntry hosts of w with no address
// one (Istio's DNS auto-allocation), but those of resolution NONE, which
// go where the app was going anyway: the services as compiled are
// copies with it, by original (cc.mu held). Their sidecars get chains
// for it and their DNS proxies answer it.
func (cc *Compiler) allocateAddresses(w *World) {
	cc.allocated = nil
	if !cc.mesh.DNSAutoAllocate {
		return
	}
	var hosts []string
	for _, s := range w.Services {
		if allocates(s) {
			hosts = append(hosts, s.Hostname)
		}
	}
	addrs := allocate(hosts)
	cc.allocated = make(map[*Service]*Service, len(hosts))
	for _, s := range w.Services {
		if a, ok := addrs[s.Hostname]; ok && allocates(s) {
			c := *s
			c.Addresses = []netip.Addr{a}
			cc.allocated[s] = &c
		}
	}
}

// allocates says whether s is a ServiceEntry host an address is
// allocated for: one with none, not a wildcard, not of resolution NONE.
func allocates(s *Service) bool {
	return s.Resolution != "" && s.Resolution != ResolutionNone && len(s.Addresses) == 0 && !strings.HasPrefix(s.Hostname, "*")
}

// compiled is s as compiled: with its allocated address, if it has one.
func (cc *Compiler) compiled(s *Service) *Service {
	if c := cc.allocated[s]; c != nil {
		return c
	}
	return s
}
