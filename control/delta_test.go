package control_test

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/xds"
)

// TestDeltaPushesWhatChanged speaks delta ADS: the first responses carry
// every resource, an endpoint change then only the one load assignment.
func TestDeltaPushesWhatChanged(t *testing.T) {
	s, addr := startServer(t, loadWorld(t))
	ads, ctx, _ := dialADS(t, addr)
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: appNode}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	for len(got) < 4 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got[resp.GetTypeUrl()] = len(resp.GetResources())
		st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
	}
	if got[xds.EndpointType] != 6 || got[xds.ClusterType] != 12 || got[xds.ListenerType] != 2 {
		t.Errorf("first responses: %v", got)
	}
	w := s.World().Clone()
	w.PutSlice("default/db", "default/db-1", []control.Endpoint{{Addr: netip.MustParseAddr("10.1.0.21"), Ports: map[string]uint16{"tcp-postgres": 5432}, Ready: true}})
	s.SetWorld(w)
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTypeUrl() != xds.EndpointType || len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "outbound|5432||db.default.svc.cluster.local" {
		t.Errorf("after an endpoint change: %s with %d resources", resp.GetTypeUrl(), len(resp.GetResources()))
	}
}

// TestDeltaSubscriptions speaks delta ADS by resource name: a stream
// subscribed to one load assignment gets it alone, then its changes, a
// newly subscribed one, and its removal when the service goes; a stream
// that reconnects saying what it holds gets nothing again.
func TestDeltaSubscriptions(t *testing.T) {
	const db, cache = "outbound|5432||db.default.svc.cluster.local", "outbound|7000||cache.default.svc.cluster.local"
	s, addr := startServer(t, loadWorld(t))
	ads, ctx, _ := dialADS(t, addr)
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// recv takes the next response and ACKs it, saying what it carried.
	recv := func() (names, removed []string, versions map[string]string) {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != xds.EndpointType {
			t.Fatalf("a response of %s", resp.GetTypeUrl())
		}
		versions = map[string]string{}
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
			versions[r.GetName()] = r.GetVersion()
		}
		st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: resp.GetNonce()})
		return names, resp.GetRemovedResources(), versions
	}
	st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: appNode}, TypeUrl: xds.EndpointType, ResourceNamesSubscribe: []string{db}})
	names, _, _ := recv()
	if len(names) != 1 || names[0] != db {
		t.Fatalf("subscribed to %s: got %v", db, names)
	}
	change := func(addr string) {
		w := s.World().Clone()
		w.PutSlice("default/db", "default/db-1", []control.Endpoint{{Addr: netip.MustParseAddr(addr), Ports: map[string]uint16{"tcp-postgres": 5432}, Ready: true}})
		s.SetWorld(w)
	}
	change("10.1.0.21")
	if names, _, _ := recv(); len(names) != 1 || names[0] != db {
		t.Errorf("after db's endpoint changed: %v", names)
	}
	st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResourceNamesSubscribe: []string{cache}})
	if names, _, _ := recv(); len(names) != 1 || names[0] != cache {
		t.Errorf("subscribed to %s too: %v", cache, names)
	}
	w := s.World().Clone()
	delete(w.Services, "default/db")
	s.SetWorld(w)
	if names, removed, _ := recv(); len(names) != 0 || len(removed) != 1 || removed[0] != db {
		t.Errorf("db's service deleted: updated %v, removed %v", names, removed)
	}

	// A new stream holding cache's current version: nothing to send.
	st2, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st = st2
	_, _, now := func() ([]string, []string, map[string]string) {
		st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: appNode}, TypeUrl: xds.EndpointType, ResourceNamesSubscribe: []string{cache}})
		return recv()
	}()
	st3, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st = st3
	st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: appNode}, TypeUrl: xds.EndpointType,
		ResourceNamesSubscribe: []string{cache}, InitialResourceVersions: now})
	change("10.1.0.22") // db is gone: nothing for this stream either
	w = s.World().Clone()
	w.PutSlice("default/cache", "default/cache-1", []control.Endpoint{{Addr: netip.MustParseAddr("10.1.0.31"), Ports: map[string]uint16{"main": 7000}, Ready: true}})
	s.SetWorld(w)
	if names, _, v := recv(); len(names) != 1 || names[0] != cache || v[cache] == now[cache] {
		t.Errorf("a stream that held cache's version got, after its change, %v %v (held %v)", names, v, now)
	}
}
