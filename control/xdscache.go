package control

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// xdsCache serves each sidecar's compiled resources to the watches
// go-control-plane's server opens for its streams (state of the world
// and delta). It knows what changed: a resource is marshaled once
// whatever number of sidecars get it, and a delta client that holds
// what the cache last sent it gets only the resources that differ,
// found once for all the sidecars going from one state to the same
// next, without a pass over every resource of the type.
type xdsCache struct {
	mu    sync.Mutex
	nodes map[string]*cacheNode
	// marshaled resources by message, this round's and the last's: a
	// message a compile keeps is not marshaled again.
	wire, lastWire map[proto.Message]*discoveryv3.Resource
	// throttle bounds the large answers in flight (a sidecar's whole
	// configuration, as at its first sync, each held marshaled until it
	// is taken): heavy are the places taken, by sidecar and type, when,
	// until the answer is acknowledged (or heavyTimeout passed: a
	// sidecar that never says does not hold one for ever); held the ones
	// that wait for a place.
	throttle int
	heavy    map[heavyKey]time.Time
	held     []heavyKey
}

// heavyTimeout is how long a large answer holds its place at most.
var heavyTimeout = 5 * time.Second

// heavyKey is a sidecar's type URL.
type heavyKey struct{ node, typeURL string }

// heavyMin is how many resources make an answer large.
const heavyMin = 64

type cacheNode struct {
	id     string
	states map[string]*typeState // by type URL
	sotw   map[*sotwWatch]bool
	delta  map[*deltaWatch]bool
	// sent is, by type URL, the state a delta client was last brought
	// to and the version map (its identity) its subscription holds.
	sent map[string]deltaSent
}

type deltaSent struct {
	state *typeState
	known uintptr
}

type sotwWatch struct {
	req *cache.Request
	sub cache.Subscription
	ch  chan cache.Response
}

type deltaWatch struct {
	req *cache.DeltaRequest
	sub cache.Subscription
	ch  chan cache.DeltaResponse
}

var _ cache.Cache = (*xdsCache)(nil)

// newXDSCache is a cache with at most throttle large answers in flight.
func newXDSCache(throttle int) *xdsCache {
	return &xdsCache{nodes: map[string]*cacheNode{}, wire: map[proto.Message]*discoveryv3.Resource{},
		throttle: throttle, heavy: map[heavyKey]time.Time{}}
}

// admit says whether an answer of n resources for k may go now, taking
// a place for a large one (c.mu held); one that may not is held until a
// place is given back.
func (c *xdsCache) admit(k heavyKey, n int) bool {
	if _, own := c.heavy[k]; n < heavyMin || own {
		return true // small, or the sidecar's place for the type not given back yet
	}
	c.expire()
	if len(c.heavy) >= c.throttle {
		if !slices.Contains(c.held, k) {
			c.held = append(c.held, k)
		}
		return false
	}
	c.heavy[k] = time.Now()
	return true
}

// expire gives back the places of answers never acknowledged in
// heavyTimeout: taken as lost (c.mu held).
func (c *xdsCache) expire() {
	if len(c.heavy) < c.throttle {
		return
	}
	for k, at := range c.heavy {
		if time.Since(at) > heavyTimeout {
			delete(c.heavy, k)
		}
	}
}

// release gives back k's place, and answers the watches held for one.
func (c *xdsCache) release(k heavyKey) {
	if _, ok := c.heavy[k]; !ok {
		return
	}
	delete(c.heavy, k)
	c.drain()
}

// drain answers the watches held for a place while there are places,
// in the order they came (c.mu held).
func (c *xdsCache) drain() {
	c.expire()
	for len(c.held) > 0 && len(c.heavy) < c.throttle {
		k := c.held[0]
		c.held = c.held[1:]
		n := c.nodes[k.node]
		if n == nil {
			continue
		}
		for w := range n.sotw {
			if w.req.GetTypeUrl() == k.typeURL && c.respondSotw(n, w) {
				delete(n.sotw, w)
			}
		}
		for w := range n.delta {
			if w.req.GetTypeUrl() == k.typeURL && c.respondDelta(n, w) {
				delete(n.delta, w)
			}
		}
	}
}

func (c *xdsCache) node(id string) *cacheNode {
	n := c.nodes[id]
	if n == nil {
		n = &cacheNode{id: id, sotw: map[*sotwWatch]bool{}, delta: map[*deltaWatch]bool{}, sent: map[string]deltaSent{}}
		c.nodes[id] = n
	}
	return n
}

// set makes states what the sidecar id is served, answering its open
// watches with what changed. A type whose content is unchanged keeps
// its state.
func (c *xdsCache) set(id string, states map[string]*typeState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	if n.states == nil {
		n.states = map[string]*typeState{}
	}
	for t, st := range states {
		if old := n.states[t]; old == nil || old.version != st.version {
			n.states[t] = st
		}
	}
	for w := range n.sotw {
		if c.respondSotw(n, w) {
			delete(n.sotw, w)
		}
	}
	for w := range n.delta {
		if c.respondDelta(n, w) {
			delete(n.delta, w)
		}
	}
	c.drain() // places given up on since
}

// clear forgets a sidecar, giving back its places.
func (c *xdsCache) clear(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, id)
	for k := range c.heavy {
		if k.node == id {
			c.release(k)
		}
	}
}

// endRound drops the marshaled resources no response of the last two
// rounds of pushes used.
func (c *xdsCache) endRound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastWire, c.wire = c.wire, make(map[proto.Message]*discoveryv3.Resource, len(c.wire))
}

// resource is st's resource name on the wire, marshaled once.
func (c *xdsCache) resource(st *typeState, name string) (*discoveryv3.Resource, error) {
	m := st.items[name]
	if r := c.wire[m]; r != nil {
		return r, nil
	}
	if r := c.lastWire[m]; r != nil {
		c.wire[m] = r
		return r, nil
	}
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	r := &discoveryv3.Resource{Name: name, Version: st.hashes[name], Resource: a}
	c.wire[m] = r
	return r, nil
}

// CreateWatch answers a state-of-the-world request now if the sidecar's
// version of the type is not the one it has, or it asks for a resource
// it was not sent; else when that changes.
func (c *xdsCache) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(req.GetNode().GetId())
	if req.GetResponseNonce() != "" {
		c.release(heavyKey{n.id, req.GetTypeUrl()}) // the last answer taken
	}
	w := &sotwWatch{req, sub, ch}
	return keep(c, n.sotw, w, c.respondSotw(n, w))
}

// keep is a watch's cancel: nothing to do for one answered already;
// else it is kept open, until answered or cancelled (c.mu held).
func keep[W comparable](c *xdsCache, open map[W]bool, w W, answered bool) (func(), error) {
	if answered {
		return func() {}, nil
	}
	open[w] = true
	return func() {
		c.mu.Lock()
		delete(open, w)
		c.mu.Unlock()
	}, nil
}

// respondSotw answers w if there is something to say (c.mu held).
func (c *xdsCache) respondSotw(n *cacheNode, w *sotwWatch) bool {
	st := n.states[w.req.GetTypeUrl()]
	if st == nil {
		return false
	}
	if w.req.GetVersionInfo() == st.version && !c.unsent(st, w.sub) {
		return false
	}
	names := st.names
	if asked := w.req.GetResourceNames(); len(asked) > 0 {
		names = make([]string, 0, len(asked))
		for _, name := range asked {
			if _, ok := st.items[name]; !ok {
				return false // asked for what the sidecar does not have yet: answered once it does
			}
			names = append(names, name)
		}
	}
	if !c.admit(heavyKey{n.id, st.typeURL}, len(names)) {
		return false
	}
	out := &discoveryv3.DiscoveryResponse{VersionInfo: st.version, TypeUrl: st.typeURL, Resources: make([]*anypb.Any, 0, len(names))}
	returned := make(map[string]string, len(names))
	for _, name := range names {
		r, err := c.resource(st, name)
		if err != nil {
			return false
		}
		out.Resources = append(out.Resources, r.GetResource())
		returned[name] = st.version
	}
	w.ch <- &cache.PassthroughResponse{Request: w.req, DiscoveryResponse: out, ReturnedResources: returned}
	return true
}

// unsent says whether sub asks for a resource st has and it was not
// sent.
func (c *xdsCache) unsent(st *typeState, sub cache.Subscription) bool {
	known := sub.ReturnedResources()
	if sub.IsWildcard() {
		for _, name := range st.names {
			if _, ok := known[name]; !ok {
				return true
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if _, ok := known[name]; !ok {
			if _, ok := st.items[name]; ok {
				return true
			}
		}
	}
	return false
}

// CreateDeltaWatch answers a delta request now with the resources that
// differ from what the sidecar holds, if any; else when some do.
func (c *xdsCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(req.GetNode().GetId())
	if req.GetResponseNonce() != "" {
		c.release(heavyKey{n.id, req.GetTypeUrl()}) // the last answer taken
	}
	w := &deltaWatch{req, sub, ch}
	return keep(c, n.delta, w, c.respondDelta(n, w))
}

// respondDelta answers w if something differs (c.mu held). When the
// subscription holds the version map of the cache's last answer and the
// request changed no subscription, the answer is what changed between
// the two states, and that map is brought up to date in place; else
// every resource is compared.
func (c *xdsCache) respondDelta(n *cacheNode, w *deltaWatch) bool {
	t := w.req.GetTypeUrl()
	st := n.states[t]
	if st == nil {
		return false
	}
	known := w.sub.ReturnedResources()
	sent, ok := n.sent[t]
	if ok && sent.known == mapID(known) && w.req.GetResponseNonce() != "" &&
		len(w.req.GetResourceNamesSubscribe()) == 0 && len(w.req.GetResourceNamesUnsubscribe()) == 0 {
		if sent.state == st {
			return false
		}
		d := st.diff(sent.state)
		updated, removed := d.updated, d.removed
		if !w.sub.IsWildcard() {
			updated, removed = subscribed(updated, w.sub), subscribed(removed, w.sub)
		}
		if len(updated)+len(removed) == 0 {
			n.sent[t] = deltaSent{st, sent.known}
			return false
		}
		if !c.sendDelta(n, w, st, updated, removed, known) {
			return false // held back: the client is still at sent.state
		}
		n.sent[t] = deltaSent{st, sent.known}
		for _, name := range updated {
			known[name] = st.hashes[name]
		}
		for _, name := range removed {
			delete(known, name)
		}
		return true
	}
	// Every resource compared, the client's version map made anew.
	var updated, removed []string
	next := make(map[string]string, len(st.names))
	if w.sub.IsWildcard() {
		for _, name := range st.names {
			next[name] = st.hashes[name]
			if v, ok := known[name]; !ok || v != st.hashes[name] {
				updated = append(updated, name)
			}
		}
		for name := range known {
			if _, ok := st.items[name]; !ok {
				removed = append(removed, name)
			}
		}
	} else {
		for name := range w.sub.SubscribedResources() {
			v, had := known[name]
			if h, ok := st.hashes[name]; ok {
				next[name] = h
				if v != h || !had {
					updated = append(updated, name)
				}
			} else if had {
				removed = append(removed, name)
			}
		}
	}
	// The first answer on a stream to a wildcard request goes out even
	// if empty: the sidecar waits for it.
	first := w.sub.IsWildcard() && w.req.GetResponseNonce() == ""
	if len(updated)+len(removed) == 0 && !first {
		n.sent[t] = deltaSent{st, mapID(known)}
		return false
	}
	if !c.sendDelta(n, w, st, updated, removed, next) {
		return false
	}
	n.sent[t] = deltaSent{st, mapID(next)}
	return true
}

// sendDelta sends w a delta response of st's updated resources and the
// removed names, after which the client holds next.
func (c *xdsCache) sendDelta(n *cacheNode, w *deltaWatch, st *typeState, updated, removed []string, next map[string]string) bool {
	if !c.admit(heavyKey{n.id, st.typeURL}, len(updated)+len(removed)) {
		return false
	}
	out := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: st.version, TypeUrl: st.typeURL,
		Resources: make([]*discoveryv3.Resource, 0, len(updated)), RemovedResources: removed}
	for _, name := range updated {
		r, err := c.resource(st, name)
		if err != nil {
			return false
		}
		out.Resources = append(out.Resources, r)
	}
	w.ch <- &cache.DeltaPassthroughResponse{DeltaRequest: w.req, DeltaDiscoveryResponse: out, NextVersionMap: next}
	return true
}

// subscribed are the names sub subscribes to.
func subscribed(names []string, sub cache.Subscription) []string {
	var out []string
	for _, name := range names {
		if _, ok := sub.SubscribedResources()[name]; ok {
			out = append(out, name)
		}
	}
	return out
}

// mapID is a map's identity.
func mapID(m map[string]string) uintptr { return reflect.ValueOf(m).Pointer() }

// Fetch is xDS over REST, which shunt does not serve.
func (c *xdsCache) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errors.New("xDS over REST is not served: use ADS")
}
