package proxy

import (
	"fmt"
	"net/netip"
	"testing"
)

func endpoints(n int, weights ...uint32) []*endpoint {
	eps := make([]*endpoint, n)
	for i := range eps {
		w := uint32(1)
		if i < len(weights) {
			w = weights[i]
		}
		eps[i] = &endpoint{addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80), weight: w}
	}
	return eps
}

func counts(c *cluster, s *endpointSet, n int, key func(i int) (uint64, bool)) map[netip.AddrPort]int {
	out := map[netip.AddrPort]int{}
	for i := range n {
		k, ok := key(i)
		out[c.pickFrom(s, k, ok).addr]++
	}
	return out
}

func noKey(int) (uint64, bool) { return 0, false }

func TestWeightedRoundRobin(t *testing.T) {
	eps := endpoints(3, 3, 1, 0) // a weight of 0 counts as 1
	s := newEndpointSet(eps)
	got := counts(&cluster{}, s, 5000, noKey)
	if got[eps[0].addr] != 3000 || got[eps[1].addr] != 1000 || got[eps[2].addr] != 1000 {
		t.Errorf("weights 3:1:1 over 5,000 picks: %v", got)
	}
	// Smooth: the heavy endpoint never takes more than its share in a row.
	run, longest := 0, 0
	c := &cluster{}
	for range 50 {
		if c.pickFrom(s, 0, false) == eps[0] {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if longest > 2 {
		t.Errorf("the weight-3 endpoint was picked %d times in a row", longest)
	}
}

func TestPriorities(t *testing.T) {
	eps := endpoints(4)
	eps[0].priority, eps[1].priority = 1, 1 // eps[2] and eps[3] are priority 0
	got := counts(&cluster{}, newEndpointSet(eps), 100, noKey)
	if got[eps[0].addr]+got[eps[1].addr] != 0 || got[eps[2].addr] != 50 {
		t.Errorf("priority 1 took traffic while priority 0 has endpoints: %v", got)
	}
}

func TestLeastRequest(t *testing.T) {
	eps := endpoints(4)
	eps[0].active.Store(100)
	c := &cluster{lb: lbLeastRequest}
	got := counts(c, newEndpointSet(eps), 16000, noKey)
	// The busy endpoint is taken only when both choices are it: 1/16.
	if n := got[eps[0].addr]; n < 700 || n > 1300 {
		t.Errorf("the busy endpoint took %d of 16,000, want about 1,000: %v", n, got)
	}
}

func TestRandom(t *testing.T) {
	eps := endpoints(4)
	got := counts(&cluster{lb: lbRandom}, newEndpointSet(eps), 40000, noKey)
	for _, e := range eps {
		if n := got[e.addr]; n < 9000 || n > 11000 {
			t.Errorf("%v took %d of 40,000: %v", e.addr, n, got)
		}
	}
}

// TestConsistentHashing: a key stays on its endpoint, and removing an
// endpoint moves only the keys it had (all of them stay put with the
// ring; nearly all with Maglev, whose tables shift a little).
func TestConsistentHashing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lb      lbPolicy
		size    uint64
		minKept float64
	}{{"ring hash", lbRingHash, 1024, 1.0}, {"maglev", lbMaglev, 65537, 0.97}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cluster{lb: tc.lb, hashTableSize: tc.size}
			eps := endpoints(5)
			before := newEndpointSet(eps)
			after := newEndpointSet(append(append([]*endpoint{}, eps[:2]...), eps[3:]...)) // eps[2] removed
			where := map[string]netip.AddrPort{}
			perEndpoint := map[netip.AddrPort]int{}
			for i := range 2000 {
				key := hashString(fmt.Sprint("user-", i))
				ep := c.pickFrom(before, key, true).addr
				if again := c.pickFrom(before, key, true).addr; again != ep {
					t.Fatalf("a key moved between two picks: %v, %v", ep, again)
				}
				where[fmt.Sprint(i)] = ep
				perEndpoint[ep]++
			}
			for _, e := range eps {
				if n := perEndpoint[e.addr]; n < 200 || n > 600 {
					t.Errorf("%v holds %d of 2,000 keys: %v", e.addr, n, perEndpoint)
				}
			}
			kept, movable := 0, 0
			for i := range 2000 {
				ep := where[fmt.Sprint(i)]
				if ep == eps[2].addr {
					continue
				}
				movable++
				if c.pickFrom(after, hashString(fmt.Sprint("user-", i)), true).addr == ep {
					kept++
				}
			}
			if share := float64(kept) / float64(movable); share < tc.minKept {
				t.Errorf("removing one endpoint moved %.1f%% of the keys on the others", (1-share)*100)
			}
		})
	}
}
