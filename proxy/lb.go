package proxy

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
)

// lbPolicy is Envoy's cluster lb_policy.
type lbPolicy uint8

const (
	lbRoundRobin lbPolicy = iota
	lbLeastRequest
	lbRandom
	lbRingHash
	lbMaglev
)

// endpoint is one of a cluster's endpoints.
type endpoint struct {
	addr     netip.AddrPort
	weight   uint32 // load_balancing_weight (1 by default)
	priority uint32
	active   atomic.Int64 // requests in flight (LEAST_REQUEST)
	health   endpointHealth
	tls      *tlsContext // its transport socket's TLS, nil for plaintext
}

// endpointHealth is what active health checking and outlier detection
// know of an endpoint; an endpoint is healthy when neither excludes it.
type endpointHealth struct {
	hcFailed atomic.Bool // the active health check says unhealthy
	ejected  atomic.Bool // outlier detection took it out
	// outlier detection's counters (see outlier.go)
	consec5xx, consecGateway, consecLocal atomic.Int32
	requests, successes                   atomic.Int64 // this interval's, for success-rate ejection
	ejections                             int          // times ejected, for the growing ejection time (detector's lock)
	ejectedAt                             int64        // unix nanoseconds (detector's lock)
	hcSuccesses, hcFailures               int          // consecutive, the checker's own
	hcChecked                             bool         // checked at least once
}

func (e *endpoint) healthy() bool { return !e.health.hcFailed.Load() && !e.health.ejected.Load() }

// endpointSet is a cluster's endpoints at one time, ready to pick from:
// the healthy ones of the lowest priority that has any — or, when fewer
// than the panic threshold (50%) of that level are healthy, all of it,
// as Envoy's panic mode — a weighted round-robin order, and for the hash
// policies a ring or a Maglev table, built on first use. A change of
// health makes a new set (cluster.refresh).
type endpointSet struct {
	all    []*endpoint
	use    []*endpoint
	byAddr map[netip.AddrPort]*endpoint
	order  []int32 // weighted round robin: indexes into use; nil when weights are equal

	hashOnce sync.Once
	ring     []ringEntry // RING_HASH, sorted by hash
	maglev   []int32     // MAGLEV: table entry → index into use
}

type ringEntry struct {
	hash uint64
	ep   int32
}

// newEndpointSet indexes endpoints (weights 0 count as 1) with Envoy's
// default panic threshold.
func newEndpointSet(eps []*endpoint) *endpointSet { return newEndpointSetPanic(eps, 50) }

// newEndpointSetPanic indexes endpoints; panic is healthy_panic_threshold
// in percent (0: never panic: no healthy endpoint, no endpoint).
func newEndpointSetPanic(eps []*endpoint, panic int) *endpointSet {
	s := &endpointSet{all: eps, byAddr: make(map[netip.AddrPort]*endpoint, len(eps))}
	if len(eps) == 0 {
		return s
	}
	levels := map[uint32][]*endpoint{}
	for _, e := range eps {
		if e.weight == 0 {
			e.weight = 1
		}
		s.byAddr[e.addr] = e
		levels[e.priority] = append(levels[e.priority], e)
	}
	priorities := make([]uint32, 0, len(levels))
	for p := range levels {
		priorities = append(priorities, p)
	}
	slices.Sort(priorities)
	for _, p := range priorities {
		var healthy []*endpoint
		for _, e := range levels[p] {
			if e.healthy() {
				healthy = append(healthy, e)
			}
		}
		if len(healthy) == 0 {
			continue // fail over to the next priority
		}
		s.use = healthy
		if len(healthy)*100 < len(levels[p])*panic {
			s.use = levels[p] // panic: all of the level
		}
		break
	}
	if s.use == nil && panic > 0 {
		s.use = levels[priorities[0]] // nothing healthy anywhere: panic
	}
	s.order = weightedOrder(s.use)
	return s
}

// staticSet makes an endpoint set of addresses, all of weight 1.
func staticSet(addrs []netip.AddrPort) *endpointSet {
	eps := make([]*endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = &endpoint{addr: a, weight: 1}
	}
	return newEndpointSet(eps)
}

// weightedOrder is a smooth weighted round-robin sequence over eps (as
// nginx's: no endpoint gets a burst), its length the weights' sum over
// their greatest common divisor, at most 10,000 (weights scaled down to
// fit); nil when the weights are all equal.
func weightedOrder(eps []*endpoint) []int32 {
	equal := true
	g := uint64(0)
	for _, e := range eps {
		equal = equal && e.weight == eps[0].weight
		g = gcd(g, uint64(e.weight))
	}
	if equal {
		return nil
	}
	weights := make([]int64, len(eps))
	total := int64(0)
	for i, e := range eps {
		weights[i] = int64(uint64(e.weight) / g)
		total += weights[i]
	}
	const most = 10000
	if total > most {
		scaled := int64(0)
		for i := range weights {
			weights[i] = max(1, weights[i]*most/total)
			scaled += weights[i]
		}
		total = scaled
	}
	current := make([]int64, len(eps))
	order := make([]int32, 0, total)
	for range total {
		best := 0
		for i := range current {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		order = append(order, int32(best))
	}
	return order
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// pickFrom chooses an endpoint of s by policy; key is the request's hash
// (for RING_HASH and MAGLEV; without one they pick at random, as Envoy
// does).
func (c *cluster) pickFrom(s *endpointSet, key uint64, hasKey bool) *endpoint {
	n := len(s.use)
	if n == 1 {
		return s.use[0]
	}
	switch c.lb {
	case lbRandom:
		return s.use[rand.IntN(n)]
	case lbLeastRequest:
		a, b := s.use[rand.IntN(n)], s.use[rand.IntN(n)] // power of two choices
		if b.active.Load()*int64(a.weight) < a.active.Load()*int64(b.weight) {
			return b
		}
		return a
	case lbRingHash, lbMaglev:
		if !hasKey {
			return s.use[rand.IntN(n)]
		}
		s.hashOnce.Do(func() { s.buildHash(c) })
		if c.lb == lbMaglev {
			return s.use[s.maglev[key%uint64(len(s.maglev))]]
		}
		i := sort.Search(len(s.ring), func(i int) bool { return s.ring[i].hash >= key })
		if i == len(s.ring) {
			i = 0
		}
		return s.use[s.ring[i].ep]
	}
	next := int(c.next.Add(1) - 1)
	if s.order != nil {
		return s.use[s.order[next%len(s.order)]]
	}
	return s.use[next%n]
}

// buildHash makes the ring (or the Maglev table) for s.
func (s *endpointSet) buildHash(c *cluster) {
	if c.lb == lbMaglev {
		s.maglev = maglevTable(s.use, c.hashTableSize)
		return
	}
	total := uint64(0)
	for _, e := range s.use {
		total += uint64(e.weight)
	}
	// Points per unit of weight: enough for the minimum ring size,
	// rounded up to a power of two so that adding or removing an endpoint
	// seldom changes it (which would move keys between the others).
	perWeight := uint64(1)
	for perWeight*total < c.hashTableSize {
		perWeight <<= 1
	}
	for i, e := range s.use {
		replicas := perWeight * uint64(e.weight)
		key := e.addr.String()
		for r := range replicas {
			s.ring = append(s.ring, ringEntry{hash: hashString(key + "_" + strconv.FormatUint(r, 10)), ep: int32(i)})
		}
	}
	slices.SortFunc(s.ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
}

// maglevTable is Maglev's lookup table (Eisenbud et al.): each endpoint
// takes entries in its own permutation's order, in turn, weighted.
func maglevTable(eps []*endpoint, size uint64) []int32 {
	m := size
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	offsets, skips, next := make([]uint64, len(eps)), make([]uint64, len(eps)), make([]uint64, len(eps))
	maxWeight := uint32(1)
	for i, e := range eps {
		key := e.addr.String()
		offsets[i] = hashString(key+"_offset") % m
		skips[i] = hashString(key+"_skip")%(m-1) + 1
		maxWeight = max(maxWeight, e.weight)
	}
	filled := uint64(0)
	for round := uint64(0); filled < m; round++ {
		for i, e := range eps {
			// A weight below the largest takes an entry in some rounds only.
			if uint64(e.weight)*(round+1)/uint64(maxWeight) == uint64(e.weight)*round/uint64(maxWeight) {
				continue
			}
			for {
				slot := (offsets[i] + next[i]*skips[i]) % m
				next[i]++
				if table[slot] < 0 {
					table[slot] = int32(i)
					filled++
					break
				}
			}
			if filled == m {
				break
			}
		}
	}
	return table
}

// hashBytes is the load balancer's hash, of a request's key and of the
// ring's points alike: FNV-1a, then mixed (splitmix64's finaliser) so
// that nearby keys land far apart. It is the same in every process, so
// workers agree on where a key goes.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix(h)
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix(h)
}

func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// hashAddr hashes an IP address (the connection_properties source_ip
// policy).
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	return mix(binary.LittleEndian.Uint64(b[:8]) ^ mix(binary.LittleEndian.Uint64(b[8:])))
}

// hashPolicy is one of a route's hash_policy entries: what of a request
// its key is made of.
type hashPolicy struct {
	kind     hashKind
	name     string // the header (lower case), cookie or query parameter
	terminal bool
}

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

// hashKey is the request's hash for RING_HASH and MAGLEV, as Envoy makes
// it: each policy that yields a value is mixed in, in order, until a
// terminal one does; ok is false when none yields one.
func (rt *route) hashKey(r requestView, source netip.Addr) (key uint64, ok bool) {
	for i := range rt.hashPolicies {
		hp := &rt.hashPolicies[i]
		var h uint64
		found := false
		switch hp.kind {
		case hashHeader:
			if v, has := r.header(hp.name); has {
				h, found = hashBytes(v), true
			}
		case hashCookie:
			if v, has := r.header("cookie"); has {
				if c, has := cookieValue(v, hp.name); has {
					h, found = hashBytes(c), true
				}
			}
		case hashSourceIP:
			if source.IsValid() {
				h, found = hashAddr(source), true
			}
		case hashQuery:
			if v, has := queryValue(r.target(), hp.name); has {
				h, found = hashBytes(v), true
			}
		}
		if !found {
			continue
		}
		if ok {
			key = mix(key<<1 | key>>63 ^ h) // rotate and mix, as Envoy combines keys
		} else {
			key, ok = h, true
		}
		if hp.terminal {
			break
		}
	}
	return key, ok
}

// cookieValue finds a cookie in a Cookie header.
func cookieValue(header []byte, name string) ([]byte, bool) {
	for len(header) > 0 {
		var part []byte
		if i := bytes.IndexByte(header, ';'); i >= 0 {
			part, header = header[:i], header[i+1:]
		} else {
			part, header = header, nil
		}
		for len(part) > 0 && part[0] == ' ' {
			part = part[1:]
		}
		if len(part) > len(name) && part[len(name)] == '=' && string(part[:len(name)]) == name {
			return part[len(name)+1:], true
		}
	}
	return nil, false
}

// queryValue finds a query parameter's raw value in a target.
func queryValue(target []byte, name string) (value []byte, found bool) {
	queryParams(target, func(k, v []byte) bool {
		value, found = v, string(k) == name
		return !found
	})
	return value, found
}

// randPercent is a random number in [0, 100).
func randPercent() uint64 { return rand.Uint64N(100) }
