package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// The outbound fallback virtual hosts, by Istio's names: traffic to no
// known host passed through (ALLOW_ANY) or refused (REGISTRY_ONLY).
const (
	allowAny = "allow_any"
	blockAll = "block_all"
)

// ads is the config source that says "over the same ADS stream".
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// hcm is an HTTP connection manager filter whose routes are the route
// configuration named rds (sent over ADS), or inline when rds is "". As
// Istio's, it has the CORS and fault filters, doing nothing until a
// route's typed_per_filter_config gives them a policy or a fault.
func (c *compiler) hcm(statPrefix, rds string, inline *routev3.RouteConfiguration) *listenerv3.Filter {
	return c.hcmWith(statPrefix, rds, inline, proxy.Outbound, false, hcmFilters{})
}

// hcmFilters are the HTTP filters of a connection manager besides
// Istio's own: the AuthorizationPolicies' (after the metadata
// exchange), and EnvoyFilters' patches, first or before the router.
type hcmFilters struct {
	authz, first, beforeRouter []*hcmv3.HttpFilter
}

// hcmWith is hcm for traffic in dir, with Istio's metadata exchange as
// the mesh says (first, as istiod puts it); xfcc has it append the mutual
// TLS client's identity to x-forwarded-client-cert (APPEND_FORWARD, with
// its subject, URI and DNS SANs), as Istio's inbound does; extra's
// filters where hcmFilters says.
func (c *compiler) hcmWith(statPrefix, rds string, inline *routev3.RouteConfiguration, dir proxy.Direction, xfcc bool, extra hcmFilters) *listenerv3.Filter {
	filters := slices.Clone(extra.first)
	if mx := proxy.PeerMetadataFilter(dir, c.m.PeerMetadata); mx != nil {
		filters = append(filters, mx)
	}
	filters = append(append(filters, extra.authz...), envoyres.HTTPFilter(envoyres.CORSFilter, &corsv3.Cors{}),
		envoyres.HTTPFilter(envoyres.FaultFilter, &faultv3.HTTPFault{}))
	h := &hcmv3.HttpConnectionManager{StatPrefix: statPrefix,
		HttpFilters: append(append(filters, extra.beforeRouter...), envoyres.Router()),
		AccessLog:   c.m.logs,
		// HTTP/1.0 is served, not refused with 426 as Istio's default
		// does: an unmodified app (nginx's proxy_pass) speaks it.
		HttpProtocolOptions: &corev3.Http1ProtocolOptions{AcceptHttp_10: true},
		UpgradeConfigs:      []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		Tracing:             c.m.tracing}
	if rds != "" {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds, ConfigSource: ads()}}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: inline}
	}
	if xfcc {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true}
	}
	return envoyres.NetworkFilter("envoy.filters.network.http_connection_manager", envoyres.Typed(h))
}

// routeTo is Istio's route to a cluster: no timeout but a gRPC client's
// own (grpc-timeout, uncapped), and, outbound, Istio's default retries.
func routeTo(name, cluster string, retries bool) *routev3.Route {
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(0),
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)}}
	if retries {
		a.RetryPolicy = istioRetry()
	}
	return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: a}}
}

// istioRetry is the retry policy Istio gives every outbound route: two
// retries of failures to connect, refused streams, gRPC's unavailable
// and cancelled, and 503, each on another host.
func istioRetry() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503},
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: envoyres.Typed(&previoushostsv3.PreviousHostsPredicate{})}}},
		HostSelectionRetryMaxAttempts: 5}
}

// serviceHost is a service port's virtual host: named host:port, for its
// names as a client may write them (FQDN, name.namespace.svc,
// name.namespace, the bare name from its own namespace (sameNamespace),
// its cluster IPs), each also with the port.
func (c *compiler) serviceHost(s *Service, p Port, cluster string, sameNamespace bool) *routev3.VirtualHost {
	names := []string{s.Hostname, s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace}
	if s.Resolution != "" {
		names = names[:1] // a ServiceEntry's host is its only name
	} else if sameNamespace {
		names = append(names, s.Name)
	}
	for _, a := range s.Addresses {
		names = append(names, hostLiteral(a))
	}
	var domains []string
	for _, n := range names {
		domains = append(domains, n, n+":"+strconv.Itoa(int(p.Port)))
	}
	rt := routeTo("default", cluster, true)
	rt.Decorator = &routev3.Decorator{Operation: fmt.Sprintf("%s:%d/*", s.Hostname, p.Port)} // Istio's span name
	return &routev3.VirtualHost{Name: fmt.Sprintf("%s:%d", s.Hostname, p.Port), Domains: domains,
		Routes: []*routev3.Route{rt}, IncludeRequestAttemptCount: true}
}

func hostLiteral(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// fallbackHost is the last virtual host of an outbound route
// configuration: allow_any to the original destination, or, registry
// only, block_all answering 502.
func (c *compiler) fallbackHost() *routev3.VirtualHost {
	if c.m.RegistryOnly {
		return &routev3.VirtualHost{Name: blockAll, Domains: []string{"*"}, Routes: []*routev3.Route{{Name: blockAll,
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}}}}}
	}
	return &routev3.VirtualHost{Name: allowAny, Domains: []string{"*"},
		Routes: []*routev3.Route{routeTo(allowAny, proxy.PassthroughCluster, false)}, IncludeRequestAttemptCount: true}
}
