package control

import (
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// hashCluster makes a cluster pick endpoints by a request's hash: on a
// ring (Istio's default for consistentHash) or a Maglev table.
func hashCluster(cl *clusterv3.Cluster, h *ConsistentHash) {
	if h.Maglev {
		cl.LbPolicy = clusterv3.Cluster_MAGLEV
		if h.TableSize > 0 {
			cl.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(h.TableSize)}}
		}
		return
	}
	cl.LbPolicy = clusterv3.Cluster_RING_HASH
	if h.MinRingSize > 0 {
		cl.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(h.MinRingSize)}}
	}
}

// hash is the consistent hash of a policy's clusters of port, or nil:
// a port's own load balancing over the policy's.
func (tp *TrafficPolicy) hash(port uint16) *ConsistentHash {
	if tp == nil {
		return nil
	}
	if pp := tp.Ports[port]; pp != nil && (pp.Hash != nil || pp.LoadBalancer != "") {
		return pp.Hash
	}
	return tp.Hash
}

// hashPolicy is what a route to cluster hashes requests by, as Istio
// puts it on the route: the consistent hash of the DestinationRule of
// the cluster's host, subset and port (a subset's over the rule's).
func (c *compiler) hashPolicy(cluster string) []*routev3.RouteAction_HashPolicy {
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 || parts[0] != "outbound" {
		return nil
	}
	port, _ := strconv.Atoi(parts[1])
	dr := c.rules.dr[parts[3]]
	if dr == nil {
		return nil
	}
	h := dr.Policy.hash(uint16(port))
	for _, sub := range dr.Subsets {
		if sub.Name == parts[2] && parts[2] != "" {
			if sh := sub.Policy.hash(uint16(port)); sh != nil || sub.Policy != nil && sub.Policy.LoadBalancer != "" {
				h = sh
			}
		}
	}
	if h == nil {
		return nil
	}
	hp := &routev3.RouteAction_HashPolicy{}
	switch {
	case h.Header != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}
	case h.Cookie != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie}}
	case h.QueryParam != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.QueryParam}}
	default:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// hashRoutes puts on routes' actions the hash policy of their cluster,
// or with weighted clusters, of the first that hashes: the hash then
// picks the endpoint within whichever cluster the weights chose.
func (c *compiler) hashRoutes(routes []*routev3.Route) {
	for _, rt := range routes {
		a := rt.GetRoute()
		if a == nil {
			continue
		}
		clusters := []string{a.GetCluster()}
		for _, w := range a.GetWeightedClusters().GetClusters() {
			clusters = append(clusters, w.GetName())
		}
		for _, cl := range clusters {
			if hp := c.hashPolicy(cl); hp != nil {
				a.HashPolicy = hp
				break
			}
		}
	}
}
