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
