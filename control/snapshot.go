package control

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/xds"
)

// typeState is one type's resources as a sidecar is served them: by
// name, each with its content hash (its version in delta xDS), and the
// version of the whole (a hash of the names and hashes in order). It is
// never changed once made, so sidecars share it.
type typeState struct {
	id      uint64 // tells states apart without keeping them
	typeURL string
	version string
	names   []string // sorted
	items   map[string]proto.Message
	hashes  map[string]string
	// made lazily, under the cache's lock:
	diffs map[uint64]*typeDiff // from an earlier state, by its id
}

// typeDiff is what changed between two states of a type: names added
// or whose content changed, and names gone.
type typeDiff struct{ updated, removed []string }

var stateIDs atomic.Uint64

// newTypeState makes a state of list, each resource's hash by hashOf;
// like, if not nil, is a state whose names may be list's, in order.
func newTypeState[M proto.Message](typeURL string, list []M, hashOf func(proto.Message) string, like *typeState) *typeState {
	st := &typeState{id: stateIDs.Add(1), typeURL: typeURL, items: make(map[string]proto.Message, len(list)),
		hashes: make(map[string]string, len(list))}
	sameNames := like != nil && len(like.names) == len(list)
	for _, m := range list {
		name := named(m)
		st.items[name], st.hashes[name] = m, hashOf(m)
		if sameNames {
			_, sameNames = like.items[name]
		}
	}
	if sameNames {
		st.names = like.names // never changed: shared
	} else {
		st.names = slices.Sorted(maps.Keys(st.items))
	}
	st.version = versionOf(st.names, st.hashes)
	return st
}

// with is st and more resources (a sidecar's own clusters beside its
// namespace's), a state of its own.
func (st *typeState) with(more []proto.Message, hashOf func(proto.Message) string) *typeState {
	list := make([]proto.Message, 0, len(st.names)+len(more))
	for _, name := range st.names {
		list = append(list, st.items[name])
	}
	own := make(map[proto.Message]bool, len(more))
	for _, m := range more {
		list = append(list, m)
		own[m] = true
	}
	return newTypeState(st.typeURL, list, func(m proto.Message) string {
		if own[m] {
			return hashOf(m)
		}
		return st.hashes[named(m)]
	}, nil)
}

// diff is what changed from an earlier state to st, found once for all
// the sidecars that go from one to the other (cache's lock held).
func (st *typeState) diff(from *typeState) *typeDiff {
	if d := st.diffs[from.id]; d != nil {
		return d
	}
	d := &typeDiff{}
	for _, name := range st.names {
		if h, ok := from.hashes[name]; !ok || h != st.hashes[name] {
			d.updated = append(d.updated, name)
		}
	}
	for _, name := range from.names {
		if _, ok := st.hashes[name]; !ok {
			d.removed = append(d.removed, name)
		}
	}
	if st.diffs == nil {
		st.diffs = map[uint64]*typeDiff{}
	}
	st.diffs[from.id] = d
	return d
}

func versionOf(names []string, hashes map[string]string) string {
	h := sha256.New()
	for _, name := range names {
		writeEntry(h, name, hashes[name])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// named is a resource's name as xDS knows it.
func named(m proto.Message) string { return cache.GetResourceName(m) }

func writeEntry(h hash.Hash, name, sum string) {
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(sum))
	h.Write([]byte{0})
}

// sharedStates are the states a namespace's sidecars share: the
// endpoints and routes whole, the clusters but for each sidecar's own.
type sharedStates struct{ endpoints, routes, clusters, names *typeState }

// sharedStates makes the space's shared states once. A list of the
// same resources as the space it follows keeps that space's state: an
// endpoint change makes a new endpoints state only.
func (sp *space) sharedStates() *sharedStates {
	sp.sharedOnce.Do(func() {
		var prev *sharedStates
		if sp.prev != nil {
			prev = sp.prev.sharedStates()
			sp.prev = nil // not kept: a chain of every space before
		}
		of := func(m proto.Message) string { return sp.hash[m] }
		sp.shared = sharedStates{keptState(prev.get(0), xds.EndpointType, sp.endpoints, of),
			keptState(prev.get(1), xds.RouteType, sp.routes, of), keptState(prev.get(2), xds.ClusterType, sp.clusters, of),
			keptState(prev.get(3), xds.NameTableType, []proto.Message{sp.nameTable}, of)}
	})
	return &sp.shared
}

// get is the i-th of endpoints, routes, clusters and names, or nil.
func (sh *sharedStates) get(i int) *typeState {
	if sh == nil {
		return nil
	}
	return [4]*typeState{sh.endpoints, sh.routes, sh.clusters, sh.names}[i]
}

// keptState is prev when list is its resources (the same messages, so
// the same content), else a new state.
func keptState[M proto.Message](prev *typeState, typeURL string, list []M, hashOf func(proto.Message) string) *typeState {
	if prev != nil && len(prev.names) == len(list) {
		same := true
		for _, m := range list {
			if prev.items[named(m)] != proto.Message(m) {
				same = false
				break
			}
		}
		if same {
			return prev
		}
	}
	return newTypeState(typeURL, list, hashOf, prev)
}

// states are r as the cache serves it, by type URL.
func (r *Resources) states() map[string]*typeState {
	if r.space == nil { // a gateway's: its own throughout
		return map[string]*typeState{xds.EndpointType: newTypeState(xds.EndpointType, r.Endpoints, hashOf, nil),
			xds.RouteType: newTypeState(xds.RouteType, r.Routes, hashOf, nil), xds.ClusterType: newTypeState(xds.ClusterType, r.Clusters, hashOf, nil),
			xds.ListenerType: newTypeState(xds.ListenerType, r.Listeners, hashOf, nil), xds.NameTableType: newTypeState(xds.NameTableType, []proto.Message{}, hashOf, nil)}
	}
	sh := r.space.sharedStates()
	ownHash := func(m proto.Message) string {
		if h, ok := r.own[m]; ok {
			return h
		}
		return r.space.hash[m]
	}
	clusters := sh.clusters
	if len(r.ownClusters) > 0 {
		own := make([]proto.Message, len(r.ownClusters))
		for i, c := range r.ownClusters {
			own[i] = c
		}
		clusters = sh.clusters.with(own, ownHash)
	}
	return map[string]*typeState{xds.EndpointType: sh.endpoints, xds.RouteType: sh.routes, xds.ClusterType: clusters,
		xds.ListenerType: newTypeState(xds.ListenerType, r.Listeners, ownHash, nil), xds.NameTableType: sh.names}
}
