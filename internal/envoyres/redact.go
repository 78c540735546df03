package envoyres

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// Redacted is l with the private keys its chains hold inline (a
// gateway's certificates') replaced by "[redacted]", as Envoy's
// /config_dump shows them; l itself when it holds none.
func Redacted(l *listenerv3.Listener) *listenerv3.Listener {
	var out *listenerv3.Listener
	for i, fc := range l.GetFilterChains() {
		var ctx tlsv3.DownstreamTlsContext
		if fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx) != nil || len(ctx.GetCommonTlsContext().GetTlsCertificates()) == 0 {
			continue
		}
		for _, c := range ctx.GetCommonTlsContext().GetTlsCertificates() {
			c.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}
		}
		if out == nil {
			out = proto.Clone(l).(*listenerv3.Listener)
		}
		out.GetFilterChains()[i].GetTransportSocket().ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: Typed(&ctx)}
	}
	if out == nil {
		return l
	}
	return out
}
