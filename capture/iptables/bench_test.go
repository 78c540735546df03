package iptables

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/captest"
)

func bigConfig(n int) capture.Config {
	c := captest.Seed()
	for i := 0; i < n; i++ {
		c.OutboundExcludeCIDRs = append(c.OutboundExcludeCIDRs, netip.MustParsePrefix(fmt.Sprintf("100.64.%d.%d/32", i/256, i%256)))
	}
	return c
}

// BenchmarkRender1000 is the in-process cost of turning a plan with 1,000
// excluded ranges into iptables-restore text.
func BenchmarkRender1000(b *testing.B) {
	cfg := bigConfig(1000)
	for b.Loop() {
		plan, _ := capture.Build(cfg)
		rs, _ := Render(plan, capture.IPv4)
		_ = rs.String()
	}
}

// BenchmarkCompare1000 is the in-process cost of a no-op re-apply: read the
// kernel's rules back and compare them with the plan's.
func BenchmarkCompare1000(b *testing.B) {
	plan, _ := capture.Build(bigConfig(1000))
	want, _ := Render(plan, capture.IPv4)
	save := want.String()
	for b.Loop() {
		have, err := ParseSave(save)
		if err != nil || !Equal(have, want) {
			b.Fatal("not equal", err)
		}
	}
}
