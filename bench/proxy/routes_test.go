package main

import (
	"testing"

	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// TestRouteTables: the benchmark's configurations are ones shunt runs.
func TestRouteTables(t *testing.T) {
	for _, n := range []int{0, 50} {
		b, err := envoyconfig.Parse([]byte(routeTable(n)))
		if err == nil {
			err = proxy.CheckBootstrap(b)
		}
		if err != nil {
			t.Errorf("%d virtual hosts: %v", n, err)
		}
	}
}
