package envoyres

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// ServiceRef is a service as Istio's telemetry metadata names it.
type ServiceRef struct{ Host, Name, Namespace string }

// IstioServices is the cluster metadata Istio's control plane gives a
// cluster for its stats (filter_metadata istio.services: host, name,
// namespace), from which a sidecar reads destination_service; nil for
// none.
func IstioServices(services []ServiceRef) *corev3.Metadata {
	if len(services) == 0 {
		return nil
	}
	list := &structpb.ListValue{}
	for _, s := range services {
		list.Values = append(list.Values, structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"host": structpb.NewStringValue(s.Host), "name": structpb.NewStringValue(s.Name), "namespace": structpb.NewStringValue(s.Namespace)}}))
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"services": structpb.NewListValue(list)}}}}
}

// IstioServicesOf reads IstioServices' metadata back: the services in
// order, none when md has no such metadata.
func IstioServicesOf(md *corev3.Metadata) []ServiceRef {
	var out []ServiceRef
	for _, v := range md.GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues() {
		f := v.GetStructValue().GetFields()
		out = append(out, ServiceRef{Host: f["host"].GetStringValue(), Name: f["name"].GetStringValue(), Namespace: f["namespace"].GetStringValue()})
	}
	return out
}
