// Package buildinfo names the build a shunt binary is, and reports it as
// Istio's components do: the istio_build gauge.
package buildinfo

import (
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Tag is the build's version: the module's, or for a build from a
// checkout "devel-" and the first 12 digits of its commit; "unknown"
// when the binary does not say.
var Tag = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
})

// Collector is Istio's istio_build{component, tag} gauge, 1 for this
// binary: component "proxy" for a sidecar, "pilot" for the control plane,
// as Istio's mesh dashboard lists them.
func Collector(component string) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "istio_build", Help: "Istio component build info"}, []string{"component", "tag"})
	g.WithLabelValues(component, Tag()).Set(1)
	return g
}
