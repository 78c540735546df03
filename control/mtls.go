package control

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/sidecar"
)

// meshed says whether the pod runs a sidecar of the mesh.
func (p *Pod) meshed() bool { return p.Labels[sidecar.TLSModeLabel] == sidecar.TLSModeIstio }

// meshPod says whether the pod namespace/name has a sidecar, for the
// endpoints' metadata; nil when the mesh sends no mutual TLS.
func (c *compiler) meshPod() func(key string) bool {
	if !c.m.AutoMTLS {
		return nil
	}
	return func(key string) bool {
		p := c.w.Pods[key]
		return p != nil && p.meshed()
	}
}

// meshEndpointMetadata is what Istio puts on an endpoint with a sidecar:
// the transport socket match that picks mutual TLS.
var meshEndpointMetadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}}}}

// autoMTLS gives a service's cluster Istio's transport socket matches:
// mutual TLS to endpoints with a sidecar, checked to be one of sans (the
// identities of the service's pods), plaintext to the rest.
func autoMTLS(cl *clusterv3.Cluster, sans []string) {
	cl.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			TransportSocket: envoyres.MutualTLSUpstream(sans)},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: envoyres.RawBuffer()},
	}
}

// meshIdentities are the SPIFFE IDs of the service port's ready
// endpoints' pods with sidecars, sorted: who the mesh expects to answer.
func (c *compiler) meshIdentities(s *Service, p Port) []string {
	var out []string
	for _, e := range c.w.readyEndpoints(s, p) {
		if pod := c.w.Pods[e.pod]; pod != nil && pod.meshed() && pod.ServiceAccount != "" {
			out = append(out, ca.Identity{TrustDomain: c.m.TrustDomain, Namespace: pod.Namespace, ServiceAccount: pod.ServiceAccount}.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// markMesh puts the mesh metadata on an endpoint when meshed says its pod
// has a sidecar.
func markMesh(lbe *endpointv3.LbEndpoint, pod string, meshed func(string) bool) {
	if meshed != nil && pod != "" && meshed(pod) {
		lbe.Metadata = meshEndpointMetadata
	}
}
