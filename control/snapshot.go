package control

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"maps"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// sharedItems are the snapshot pieces a namespace's sidecars share: the
// endpoints and routes whole, the clusters but for each sidecar's own.
type sharedItems struct {
	endpoints, routes, clusters                cache.Resources
	endpointHashes, routeHashes, clusterHashes map[string]string // by name, for delta xDS
}

// named is a resource's name as the cache keys it.
func named(m proto.Message) string { return cache.GetResourceName(m) }

// items are list by name, with their content hashes, and the version of
// the whole: a hash of the names and hashes in order.
func items[M types.Resource](list []M, hashOf func(proto.Message) string) (cache.Resources, map[string]string) {
	res := cache.Resources{Items: make(map[string]types.ResourceWithTTL, len(list))}
	hashes := make(map[string]string, len(list))
	h := sha256.New()
	for _, m := range list {
		name, sum := named(m), hashOf(m)
		res.Items[name] = types.ResourceWithTTL{Resource: m}
		hashes[name] = sum
		writeEntry(h, name, sum)
	}
	res.Version = hex.EncodeToString(h.Sum(nil)[:8])
	return res, hashes
}

func writeEntry(h hash.Hash, name, sum string) {
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(sum))
	h.Write([]byte{0})
}

// shared makes the space's shared pieces once.
func (sp *space) sharedItems() *sharedItems {
	sp.sharedOnce.Do(func() {
		of := func(m proto.Message) string { return sp.hash[m] }
		sp.shared.endpoints, sp.shared.endpointHashes = items(sp.endpoints, of)
		sp.shared.routes, sp.shared.routeHashes = items(sp.routes, of)
		sp.shared.clusters, sp.shared.clusterHashes = items(sp.clusters, of)
	})
	return &sp.shared
}

// snapshot is r as the snapshot cache serves it: each type's resources
// by name, versioned by their content (so a type is pushed only when it
// changed), and every resource's own version for delta xDS.
func (r *Resources) snapshot() *cache.Snapshot {
	sh := r.space.sharedItems()
	ownHash := func(m proto.Message) string {
		if h, ok := r.own[m]; ok {
			return h
		}
		return r.space.hash[m]
	}
	listeners, listenerHashes := items(r.Listeners, ownHash)
	clusters, clusterHashes := sh.clusters, sh.clusterHashes
	if len(r.ownClusters) > 0 {
		clusters, clusterHashes = r.withOwnClusters(sh)
	}
	snap := &cache.Snapshot{VersionMap: map[string]map[string]string{
		resource.EndpointType: sh.endpointHashes, resource.RouteType: sh.routeHashes,
		resource.ClusterType: clusterHashes, resource.ListenerType: listenerHashes}}
	snap.Resources[types.Endpoint] = sh.endpoints
	snap.Resources[types.Route] = sh.routes
	snap.Resources[types.Cluster] = clusters
	snap.Resources[types.Listener] = listeners
	return snap
}

// withOwnClusters are the space's clusters and the sidecar's own.
func (r *Resources) withOwnClusters(sh *sharedItems) (cache.Resources, map[string]string) {
	clusters := cache.Resources{Items: maps.Clone(sh.clusters.Items)}
	clusterHashes := maps.Clone(sh.clusterHashes)
	h := sha256.New()
	h.Write([]byte(sh.clusters.Version))
	for _, c := range r.ownClusters {
		name := named(c)
		clusters.Items[name] = types.ResourceWithTTL{Resource: c}
		clusterHashes[name] = r.own[c]
		writeEntry(h, name, r.own[c])
	}
	clusters.Version = hex.EncodeToString(h.Sum(nil)[:8])
	return clusters, clusterHashes
}
