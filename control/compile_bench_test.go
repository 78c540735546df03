package control_test

import (
	"fmt"
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/shunt-dev/shunt/control"
)

// bigWorld is n services of 10 endpoints in 10 namespaces.
func bigWorld(n int) *control.World {
	w := control.NewWorld()
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%10)
		s := &control.Service{Name: fmt.Sprintf("svc-%d", i), Namespace: ns,
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)})},
			Ports:     []control.Port{{Name: "http", Port: 80, Protocol: "http", TargetPort: 8080}}}
		s.Hostname = s.Name + "." + ns + ".svc.cluster.local"
		w.PutService(s)
		eps := make([]control.Endpoint, 10)
		for e := range eps {
			eps[e] = control.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(100 + i/250), byte(i % 250), byte(e)}), Ports: map[string]uint16{"http": 8080}, Ready: true}
		}
		w.PutSlice(ns+"/"+s.Name, ns+"/"+s.Name+"-1", eps)
	}
	return w
}

// BenchmarkCompile is one sidecar's compilation in a mesh of 1,000
// services: from nothing, and by a compiler that compiled the world
// before one service's endpoints changed.
func BenchmarkCompile(b *testing.B) {
	w := bigWorld(1000)
	n, err := control.ParseNode(&corev3.Node{Id: "sidecar~10.200.0.1~pod-1.ns-1~ns-1.svc.cluster.local"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			if _, err := control.Compile(w, n, control.DefaultMesh()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("endpoint-change", func(b *testing.B) {
		cc, err := control.NewCompiler(control.DefaultMesh())
		if err != nil {
			b.Fatal(err)
		}
		cc.Compile(w, n)
		i := 0
		for b.Loop() {
			b.StopTimer()
			next := w.Clone()
			next.PutSlice("ns-1/svc-1", "ns-1/svc-1-1", []control.Endpoint{{Addr: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}),
				Ports: map[string]uint16{"http": 8080}, Ready: true}})
			i++
			w = next
			b.StartTimer()
			cc.Compile(w, n)
		}
	})
}
