package proxy

import (
	"slices"

	udpav1 "github.com/cncf/xds/go/udpa/type/v1"
	xdsv3 "github.com/cncf/xds/go/xds/type/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's own HTTP filters, which its control plane sends as TypedStructs.
const (
	peerMetadataType = "type.googleapis.com/io.istio.http.peer_metadata.Config"
	istioStatsType   = "type.googleapis.com/stats.PluginConfig"
)

// mxConfig is a connection manager's part in the metadata exchange, as
// its istio.metadata_exchange filter says: read the caller's from the
// request (downstream_discovery), answer with the sidecar's
// (downstream_propagation), send the sidecar's upstream
// (upstream_propagation; not to PassthroughCluster with
// skip_external_clusters), read the upstream's from the response
// (upstream_discovery).
type mxConfig struct {
	readRequest, answer, send, readResponse, skipExternal bool
}

// any says the manager takes part at all.
func (c mxConfig) any() bool { return c.readRequest || c.answer || c.send || c.readResponse }

// sendsTo says a request to cluster carries the sidecar's metadata.
func (c mxConfig) sendsTo(cluster string) bool {
	return c.send && !(c.skipExternal && cluster == PassthroughCluster)
}

// istioFilter reads one of Istio's HTTP filters, a TypedStruct: the
// metadata exchange configures m; Istio's stats filter is what shunt
// does anyway (Istio's standard metrics); another is refused.
func (r *resources) istioFilter(a *anypb.Any, m *httpManager, path string) {
	typeURL, value, ok := typedStruct(a)
	if !ok {
		r.add(path, "invalid: not a TypedStruct")
		return
	}
	switch typeURL {
	case istioStatsType:
	case peerMetadataType:
		m.mx = r.peerMetadataConfig(value, path+".value")
	default:
		r.add(path+".type_url", "not implemented by shunt: %s", typeURL)
	}
}

// typedStruct is a udpa or xds TypedStruct's type URL and value.
func typedStruct(a *anypb.Any) (string, *structpb.Struct, bool) {
	msg, err := a.UnmarshalNew()
	if err != nil {
		return "", nil, false
	}
	switch ts := msg.(type) {
	case *udpav1.TypedStruct:
		return ts.GetTypeUrl(), ts.GetValue(), true
	case *xdsv3.TypedStruct:
		return ts.GetTypeUrl(), ts.GetValue(), true
	}
	return "", nil, false
}

// peerMetadataConfig reads io.istio.http.peer_metadata.Config: of its
// methods, istio_headers (the x-envoy-peer-metadata headers) is shunt's;
// workload_discovery (ambient's workload metadata service) finds nothing
// here and is passed over, as Envoy passes over a method that finds no
// peer.
func (r *resources) peerMetadataConfig(v *structpb.Struct, path string) mxConfig {
	var c mxConfig
	for key, val := range v.GetFields() {
		p := path + "." + key
		switch key {
		case "shared_with_upstream", "additional_labels":
		case "downstream_discovery", "upstream_discovery", "downstream_propagation", "upstream_propagation":
			for _, method := range val.GetListValue().GetValues() {
				for name, opts := range method.GetStructValue().GetFields() {
					switch {
					case name == "istio_headers":
						switch key {
						case "downstream_discovery":
							c.readRequest = true
						case "upstream_discovery":
							c.readResponse = true
						case "downstream_propagation":
							c.answer = true
						case "upstream_propagation":
							c.send = true
							c.skipExternal = opts.GetStructValue().GetFields()["skip_external_clusters"].GetBoolValue()
						}
					case name == "workload_discovery" && (key == "downstream_discovery" || key == "upstream_discovery"):
					default:
						r.add(p, "not implemented by shunt: the %s method", name)
					}
				}
			}
		default:
			r.add(p, "unknown field")
		}
	}
	return c
}

// PeerMetadataFilter is Istio's istio.metadata_exchange HTTP filter for a
// sidecar's outbound or inbound connection manager, as istiod sends it;
// mode is Config.PeerMetadata. nil for PeerMetadataOff.
func PeerMetadataFilter(dir Direction, mode string) *hcmv3.HttpFilter {
	if mode == PeerMetadataOff {
		return nil
	}
	headers := map[string]any{}
	value := map[string]any{"downstream_discovery": []any{map[string]any{"istio_headers": headers}},
		"downstream_propagation": []any{map[string]any{"istio_headers": headers}}}
	if dir == Outbound {
		propagation := map[string]any{}
		if mode == PeerMetadataInMesh {
			propagation["skip_external_clusters"] = true
		}
		value = map[string]any{"upstream_discovery": []any{map[string]any{"istio_headers": headers}},
			"upstream_propagation": []any{map[string]any{"istio_headers": propagation}}}
	}
	s, err := structpb.NewStruct(value)
	if err != nil {
		panic(err) // the literal above is a valid Struct
	}
	// Marshaled deterministically (the Struct is a map): a control plane
	// versions resources by their bytes.
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, &udpav1.TypedStruct{TypeUrl: peerMetadataType, Value: s}, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return &hcmv3.HttpFilter{Name: "istio.metadata_exchange", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

// isTypedStruct says a filter's config is a TypedStruct.
func isTypedStruct(messageName string) bool {
	return slices.Contains([]string{"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"}, messageName)
}
