package control

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/xds"
)

// ByType are the resources packed, by their type URLs.
func (r *Resources) ByType() map[string][]*anypb.Any {
	out := map[string][]*anypb.Any{}
	add := func(t string, m proto.Message) { out[t] = append(out[t], envoyres.Typed(m)) }
	for _, l := range r.Listeners {
		add(xds.ListenerType, l)
	}
	for _, rc := range r.Routes {
		add(xds.RouteType, rc)
	}
	for _, c := range r.Clusters {
		add(xds.ClusterType, c)
	}
	for _, e := range r.Endpoints {
		add(xds.EndpointType, e)
	}
	return out
}

// YAML is the resources as Envoy's field names spell them, for a person:
// listeners (private keys redacted), routes, clusters, endpoints, and the
// DNS proxy's names.
func (r *Resources) YAML() ([]byte, error) {
	doc := map[string][]json.RawMessage{}
	var names []proto.Message
	if r.space != nil && r.space.nameTable != nil {
		names = []proto.Message{r.space.nameTable}
	}
	listeners := make([]proto.Message, len(r.Listeners))
	for i, l := range r.Listeners {
		listeners[i] = envoyres.Redacted(l)
	}
	for kind, list := range map[string][]proto.Message{
		"listeners": listeners, "routes": asMessages(r.Routes),
		"clusters": asMessages(r.Clusters), "endpoints": asMessages(r.Endpoints), "names": names} {
		doc[kind] = []json.RawMessage{}
		for _, m := range list {
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				return nil, err
			}
			doc[kind] = append(doc[kind], js)
		}
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func asMessages[M proto.Message](list []M) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}
