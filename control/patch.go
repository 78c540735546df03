package control

import (
	"maps"
	"reflect"
	"slices"
	"sort"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// endpointChanges are the services (namespace/name) whose endpoints
// changed from world a to b, when nothing else did; nil when something
// else did (a service, a rule, a pod, a namespace), and a space must be
// compiled whole.
func endpointChanges(a, b *World) map[string]bool {
	if a == nil || a.Domain != b.Domain || a.podVersion != b.podVersion ||
		!samePointers(a.Services, b.Services) || !samePointers(a.VirtualServices, b.VirtualServices) ||
		!samePointers(a.DestinationRules, b.DestinationRules) || !samePointers(a.HTTPRoutes, b.HTTPRoutes) ||
		!samePointers(a.Sidecars, b.Sidecars) || !samePointers(a.Namespaces, b.Namespaces) ||
		!samePointers(a.PeerAuthentications, b.PeerAuthentications) || !samePointers(a.AuthorizationPolicies, b.AuthorizationPolicies) ||
		reflect.ValueOf(a.serviceEntries).Pointer() != reflect.ValueOf(b.serviceEntries).Pointer() {
		return nil
	}
	changed := map[string]bool{}
	for svc, v := range b.epVersion {
		if a.epVersion[svc] != v {
			changed[svc] = true
		}
	}
	for svc := range a.epVersion {
		if _, ok := b.epVersion[svc]; !ok {
			changed[svc] = true
		}
	}
	return changed
}

// samePointers says whether two maps of pointers (or maps) hold the
// same ones under the same keys.
func samePointers[V any](a, b map[string]V) bool {
	return maps.EqualFunc(a, b, func(x, y V) bool { return reflect.ValueOf(x).Pointer() == reflect.ValueOf(y).Pointer() })
}

// patched is prev with the load assignments of the services whose
// endpoints alone changed since its world made anew (cc.mu held): the
// rest of a space does not follow endpoints, but for a headless
// service's chains and names, which take a whole compile (nil).
func (cc *Compiler) patched(c *compiler, prev *space) *space {
	if prev == nil || prev.world != cc.lastWorld || cc.epChanged == nil {
		return nil
	}
	inMesh := func(ns string) bool { return c.m.inMesh(c.w, ns) }
	c.rules = c.w.rulesFor(c.n.Namespace, inMesh)
	scope := c.w.sidecarFor(c.n.Namespace, c.m.RootNamespace)
	var fresh []*endpointv3.ClusterLoadAssignment
	for svc := range cc.epChanged {
		s := c.w.Services[svc]
		if s == nil || !c.admitted(s, scope, inMesh) {
			continue // not this namespace's sidecars'
		}
		s = cc.compiled(s)
		if s.Resolution != "" || len(s.Addresses) == 0 {
			return nil // a headless service's or an entry's endpoints shape its chains
		}
		for _, p := range s.Ports {
			old := cc.ports[portKey{svc, p.Port}]
			pp := cc.parts(c, s, p)
			if old == nil || old.cluster != pp.cluster {
				return nil // its cluster changed too (the identities behind it, say)
			}
			if pp.cla != nil {
				fresh = append(append(fresh, pp.cla), pp.subsetCLAs...)
			}
		}
	}
	prev.prev = nil // at most one space back is kept
	sp := &space{world: c.w, prev: prev, local: prev.local, listener: prev.listener, routes: prev.routes, clusters: prev.clusters,
		addrChains: prev.addrChains, httpPorts: prev.httpPorts, portRoutes: prev.portRoutes, nameTable: prev.nameTable, names: prev.names,
		endpoints: slices.Clone(prev.endpoints), hash: maps.Clone(prev.hash)}
	for _, cla := range fresh {
		i := sort.Search(len(sp.endpoints), func(i int) bool { return sp.endpoints[i].GetClusterName() >= cla.GetClusterName() })
		if i == len(sp.endpoints) || sp.endpoints[i].GetClusterName() != cla.GetClusterName() {
			return nil // a load assignment the space did not have: compiled whole
		}
		delete(sp.hash, proto.Message(sp.endpoints[i]))
		sp.endpoints[i] = cla
		sp.hash[cla] = hashOf(cla)
	}
	return sp
}
