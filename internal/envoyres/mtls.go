package envoyres

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// MeshALPNs are the protocols an inbound mutual TLS chain of Istio's
// takes: what an outbound sidecar offers for the protocol it carries.
var MeshALPNs = []string{"istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// meshCommon is a TLS context with Istio's SDS secrets: the workload
// certificate (default) and the trust bundle (ROOTCA), checking the
// peer's URI SAN is one of sans if any are given.
func meshCommon(alpn []string, sans []string) *tlsv3.CommonTlsContext {
	sds := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion: corev3.ApiVersion_V3}
	validation := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		validation.MatchTypedSubjectAltNames = append(validation.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	return &tlsv3.CommonTlsContext{
		AlpnProtocols:                  alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: sds}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: validation, ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: sds}}},
	}
}

// MutualTLSUpstream is Istio's outbound transport socket to a sidecar:
// mutual TLS with the workload certificate, offering Istio's ALPN, the
// peer checked to be one of sans (any of the mesh when none).
func MutualTLSUpstream(sans []string) *corev3.TransportSocket { return MutualTLSUpstreamSNI("", sans) }

// MutualTLSUpstreamSNI is MutualTLSUpstream sending sni (a
// DestinationRule's ISTIO_MUTUAL with sni: an egress gateway picks its
// server by it).
func MutualTLSUpstreamSNI(sni string, sans []string) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: Typed(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: meshCommon([]string{"istio-peer-exchange", "istio"}, sans)})}}
}

// MutualTLSDownstream is Istio's inbound transport socket: mutual TLS,
// the client's certificate required and checked against the trust bundle.
func MutualTLSDownstream() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: Typed(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: meshCommon([]string{"h2", "http/1.1"}, nil)})}}
}

// RawBuffer is the plaintext transport socket.
func RawBuffer() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: Typed(&rawv3.RawBuffer{})}}
}
