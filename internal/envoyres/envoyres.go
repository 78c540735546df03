// Package envoyres builds the Envoy resources that shunt's sidecar and
// its control plane both make: typed configs, addresses, filters, and
// Istio's passthrough clusters.
package envoyres

import (
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Typed packs m as an Any.
func Typed(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // a message of a linked type always packs
	}
	return a
}

// SocketAddress is ap as an Envoy address.
func SocketAddress(ap netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
}

// ListenerFilter is a listener filter named name configured by m.
func ListenerFilter(name string, m proto.Message) *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: Typed(m)}}
}

// NetworkFilter is a network filter named name configured by a.
func NetworkFilter(name string, a *anypb.Any) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

// FaultFilter and CORSFilter name Envoy's fault and CORS filters: a
// route's typed_per_filter_config configures them under these keys.
const (
	FaultFilter = "envoy.filters.http.fault"
	CORSFilter  = "envoy.filters.http.cors"
)

// HTTPFilter is an HTTP filter named name configured by m.
func HTTPFilter(name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Typed(m)}}
}

// Router is the HTTP connection manager's router filter.
func Router() *hcmv3.HttpFilter { return HTTPFilter("envoy.filters.http.router", &routerv3.Router{}) }

// Unlimited is Istio's "no limit" for a circuit breaker threshold.
const Unlimited = 1<<32 - 1

// UnlimitedBreakers are the thresholds of Istio's passthrough clusters.
func UnlimitedBreakers() *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(Unlimited), MaxPendingRequests: wrapperspb.UInt32(Unlimited),
		MaxRequests: wrapperspb.UInt32(Unlimited), MaxRetries: wrapperspb.UInt32(Unlimited)}}}
}

// UseDownstreamProtocol makes a cluster speak upstream the protocol its
// client spoke (HTTP/2 stays HTTP/2, for gRPC), as Istio's passthrough
// and protocol-sniffed clusters do.
func UseDownstreamProtocol() map[string]*anypb.Any {
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Typed(
		&upstreamhttpv3.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})}
}

// OriginalDst is an ORIGINAL_DST cluster as Istio makes its passthrough
// and inbound clusters: no circuit breaking, the client's protocol
// upstream, and, given source addresses, connections bound to them
// (127.0.0.6 and ::6 for inbound, so the capture lets them through).
func OriginalDst(name string, connectTimeout time.Duration, source ...netip.Addr) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:                      clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:                durationpb.New(connectTimeout),
		CircuitBreakers:               UnlimitedBreakers(),
		TypedExtensionProtocolOptions: UseDownstreamProtocol()}
	for i, a := range source {
		addr := SocketAddress(netip.AddrPortFrom(a, 0)).GetSocketAddress()
		if i == 0 {
			c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: addr}
			continue
		}
		c.UpstreamBindConfig.ExtraSourceAddresses = append(c.UpstreamBindConfig.ExtraSourceAddresses, &corev3.ExtraSourceAddress{Address: addr})
	}
	return c
}

// CaptureListener is Istio's virtualOutbound or virtualInbound: on addr
// (and addr6, if valid), the original destination restored and, with
// inspect, the protocol sniffed (TLS, HTTP) for at most timeout (0: as
// long as the client takes) before going on without; outbound connections
// are handed over by their original destination, inbound ones accepted
// on transparent sockets when transparent (TPROXY).
func CaptureListener(name string, dir corev3.TrafficDirection, addr, addr6 netip.AddrPort, inspect bool, timeout time.Duration,
	transparent bool) *listenerv3.Listener {
	l := &listenerv3.Listener{Name: name, TrafficDirection: dir, Address: SocketAddress(addr),
		ListenerFilters: []*listenerv3.ListenerFilter{ListenerFilter("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{})}}
	if inspect {
		l.ListenerFilters = append(l.ListenerFilters,
			ListenerFilter("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{}),
			ListenerFilter("envoy.filters.listener.http_inspector", &httpinspectorv3.HttpInspector{}))
		l.ContinueOnListenerFiltersTimeout = true
		if timeout > 0 {
			l.ListenerFiltersTimeout = durationpb.New(timeout)
		}
	}
	if addr6.IsValid() {
		l.AdditionalAddresses = []*listenerv3.AdditionalAddress{{Address: SocketAddress(addr6)}}
	}
	if dir == corev3.TrafficDirection_OUTBOUND {
		l.UseOriginalDst = wrapperspb.Bool(true)
	} else if transparent {
		l.Transparent = wrapperspb.Bool(true)
	}
	return l
}
