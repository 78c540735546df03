package control

import "strings"

// ruleKinds are the routing rules the control plane follows, Istio's and
// Gateway API's (newest API version first): how a manifest of each goes
// into the world and comes out, from a file or a cluster alike.
var ruleKinds = []struct {
	kind     string
	group    string
	versions []string
	resource string
	put      func(w *World, doc []byte) error
	del      func(w *World, key string)
}{
	{"VirtualService", "networking.istio.io", []string{"v1", "v1beta1"}, "virtualservices",
		reading(anyDomain(VirtualServiceFrom), (*World).PutVirtualService),
		func(w *World, key string) { delete(w.VirtualServices, key) }},
	{"DestinationRule", "networking.istio.io", []string{"v1", "v1beta1"}, "destinationrules",
		reading(anyDomain(DestinationRuleFrom), (*World).PutDestinationRule),
		func(w *World, key string) { delete(w.DestinationRules, key) }},
	{"ServiceEntry", "networking.istio.io", []string{"v1", "v1beta1"}, "serviceentries",
		reading(anyDomain(ServiceEntryFrom), (*World).PutServiceEntry), (*World).DeleteServiceEntry},
	{"Sidecar", "networking.istio.io", []string{"v1", "v1beta1"}, "sidecars",
		reading(anyDomain(SidecarFrom), (*World).PutSidecar), (*World).DeleteSidecar},
	{"PeerAuthentication", "security.istio.io", []string{"v1", "v1beta1"}, "peerauthentications",
		reading(anyDomain(PeerAuthenticationFrom), (*World).PutPeerAuthentication),
		func(w *World, key string) { delete(w.PeerAuthentications, key) }},
	{"AuthorizationPolicy", "security.istio.io", []string{"v1", "v1beta1"}, "authorizationpolicies",
		reading(anyDomain(AuthorizationPolicyFrom), (*World).PutAuthorizationPolicy),
		func(w *World, key string) { delete(w.AuthorizationPolicies, key) }},
	{"HTTPRoute", "gateway.networking.k8s.io", []string{"v1", "v1beta1"}, "httproutes",
		reading(HTTPRouteFrom, (*World).PutHTTPRoute),
		func(w *World, key string) { delete(w.HTTPRoutes, key) }},
	{"Gateway", "gateway.networking.k8s.io", []string{"v1", "v1beta1"}, "gateways",
		reading(anyDomain(GatewayFrom), (*World).PutGateway),
		func(w *World, key string) { delete(w.Gateways, key) }},
	{"Gateway", "networking.istio.io", []string{"v1", "v1beta1"}, "gateways",
		reading(anyDomain(IstioGatewayFrom), (*World).PutIstioGateway),
		func(w *World, key string) { delete(w.IstioGateways, key) }},
	{"EnvoyFilter", "networking.istio.io", []string{"v1alpha3"}, "envoyfilters",
		reading(anyDomain(EnvoyFilterFrom), (*World).PutEnvoyFilter),
		func(w *World, key string) { delete(w.EnvoyFilters, key) }},
	{"GatewayClass", "gateway.networking.k8s.io", []string{"v1", "v1beta1"}, "gatewayclasses",
		reading(anyDomain(GatewayClassFrom), (*World).PutGatewayClass),
		func(w *World, key string) { delete(w.GatewayClasses, strings.TrimPrefix(key, "/")) }}, // cluster-scoped: "/NAME"
	{"TLSRoute", "gateway.networking.k8s.io", []string{"v1alpha3", "v1alpha2"}, "tlsroutes",
		reading(TLSRouteFrom, (*World).PutTLSRoute),
		func(w *World, key string) { delete(w.TLSRoutes, key) }},
	{"TCPRoute", "gateway.networking.k8s.io", []string{"v1alpha2"}, "tcproutes",
		reading(TCPRouteFrom, (*World).PutTLSRoute),
		func(w *World, key string) { delete(w.TLSRoutes, l4RouteKey("TCPRoute", key)) }},
	{"ReferenceGrant", "gateway.networking.k8s.io", []string{"v1", "v1beta1"}, "referencegrants",
		reading(anyDomain(ReferenceGrantFrom), (*World).PutReferenceGrant),
		func(w *World, key string) { delete(w.ReferenceGrants, key) }},
	{"GRPCRoute", "gateway.networking.k8s.io", []string{"v1"}, "grpcroutes",
		reading(GRPCRouteFrom, (*World).PutHTTPRoute),
		func(w *World, key string) { delete(w.HTTPRoutes, routeKey("GRPCRoute", key)) }},
}

// reading puts into the world what from reads of a manifest, in the
// world's cluster domain; nothing for a nil (a rule not the sidecars').
func reading[T any](from func(doc []byte, domain string) (*T, error), put func(*World, *T)) func(*World, []byte) error {
	return func(w *World, doc []byte) error {
		v, err := from(doc, w.Domain)
		if err == nil && v != nil {
			put(w, v)
		}
		return err
	}
}

// anyDomain is a reader that needs no cluster domain.
func anyDomain[T any](from func(doc []byte) (*T, error)) func([]byte, string) (*T, error) {
	return func(doc []byte, _ string) (*T, error) { return from(doc) }
}
