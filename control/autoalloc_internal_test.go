package control

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestAllocate: a thousand hosts get a thousand addresses of the range,
// the same whatever order they came in.
func TestAllocate(t *testing.T) {
	var hosts []string
	for i := range 1000 {
		hosts = append(hosts, fmt.Sprintf("svc-%d.example.com", i))
	}
	a := allocate(hosts)
	slices.Reverse(hosts)
	b := allocate(hosts)
	if !maps.Equal(a, b) {
		t.Error("another order of the hosts, other addresses")
	}
	seen := map[string]bool{}
	for h, addr := range a {
		if !autoAllocRange.Contains(addr) || seen[addr.String()] {
			t.Fatalf("%s: %s, out of the range or given twice", h, addr)
		}
		seen[addr.String()] = true
	}
}
