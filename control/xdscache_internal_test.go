package control

import (
	"fmt"
	"maps"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/xds"
)

// TestPushThrottle: with one place for a large answer, a second
// sidecar's first sync waits until the first's is acknowledged; a
// small answer does not wait.
func TestPushThrottle(t *testing.T) {
	c := newXDSCache(1)
	var clusters []*clusterv3.Cluster
	for i := range heavyMin {
		clusters = append(clusters, &clusterv3.Cluster{Name: fmt.Sprintf("outbound|80||svc-%d.default.svc.cluster.local", i)})
	}
	big := newTypeState(xds.ClusterType, clusters, func(proto.Message) string { return "h" }, nil)
	small := newTypeState(xds.ListenerType, clusters[:1], func(proto.Message) string { return "h" }, nil)
	// watch is a delta request; an ACK (a nonce) holds the cluster state.
	watch := func(node, typeURL, nonce string) chan cache.DeltaResponse {
		ch := make(chan cache.DeltaResponse, 1)
		req := &cache.DeltaRequest{Node: &corev3.Node{Id: node}, TypeUrl: typeURL, ResponseNonce: nonce}
		var held map[string]string
		if nonce != "" {
			held = maps.Clone(big.hashes)
		}
		if _, err := c.CreateDeltaWatch(req, stream.NewDeltaSubscription(nil, nil, held, true), ch); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	answered := func(ch chan cache.DeltaResponse) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	for _, node := range []string{"a", "b"} {
		c.set(node, map[string]*typeState{xds.ClusterType: big, xds.ListenerType: small})
	}
	a, b := watch("a", xds.ClusterType, ""), watch("b", xds.ClusterType, "")
	if !answered(a) || answered(b) {
		t.Fatal("with one place, the first large answer should go and the second wait")
	}
	if !answered(watch("b", xds.ListenerType, "")) {
		t.Error("a small answer waited")
	}
	watch("a", xds.ClusterType, "1") // a's ACK gives its place back
	if !answered(b) {
		t.Error("the held answer did not go once a place was given back")
	}
	// b never acknowledges: after heavyTimeout its place is given back,
	// at the next push at the latest.
	defer func(d time.Duration) { heavyTimeout = d }(heavyTimeout)
	heavyTimeout = 10 * time.Millisecond
	c.set("c", map[string]*typeState{xds.ClusterType: big})
	cw := watch("c", xds.ClusterType, "")
	if answered(cw) {
		t.Fatal("c went while b held the place")
	}
	time.Sleep(20 * time.Millisecond)
	c.set("b", map[string]*typeState{xds.ClusterType: big}) // a push: b has no watch open
	if !answered(cw) {
		t.Error("a place never acknowledged was not given back")
	}
}
