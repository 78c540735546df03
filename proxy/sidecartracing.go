package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// TracingConfig is the sidecar's tracing, as Istio's mesh config and
// Telemetry API set it: an OpenTelemetry collector and a sampling rate.
type TracingConfig struct {
	// Collector is host:port (OTLP/gRPC, 4317 by convention); for
	// OTLP/HTTP also a URL (http://host:4318/v1/traces).
	Collector string
	Protocol  tracing.Protocol
	// Sampling is the percentage of requests with no say of their own
	// that are traced (Istio's meshConfig.defaultConfig.tracing.sampling,
	// 1 by default).
	Sampling float64
}

// Check says what is wrong with t, if anything.
func (t *TracingConfig) Check() error {
	if t.Sampling < 0 || t.Sampling > 100 {
		return fmt.Errorf("tracing sampling %v: not a percentage (0 to 100)", t.Sampling)
	}
	_, _, err := t.hostPort()
	return err
}

// hostPort is where the collector is.
func (t *TracingConfig) hostPort() (string, uint16, error) {
	hp := t.Collector
	if t.Protocol == tracing.OTLPHTTP {
		if u, err := url.Parse(t.Collector); err == nil && u.Scheme != "" {
			if u.Scheme != "http" {
				return "", 0, fmt.Errorf("tracing collector %s: only http:// URLs", clip.Quote(t.Collector))
			}
			hp = u.Host
		}
	}
	host, port, err := net.SplitHostPort(hp)
	n, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil || n == 0 || host == "" {
		return "", 0, fmt.Errorf("tracing collector %s: want host:port", clip.Quote(t.Collector))
	}
	return host, uint16(n), nil
}

// Istio's mesh ID, in the spans' istio.mesh_id tag.
const meshID = "cluster.local"

// sidecarTracing is the sidecar's connection managers' tracing.
func sidecarTracing(cfg *Config) (*hcmv3.HttpConnectionManager_Tracing, *clusterv3.Cluster) {
	if cfg.Tracing == nil {
		return nil, nil
	}
	return TracingResources(cfg.Tracing, cfg.ConnectTimeout)
}

// TracingResources are a sidecar's tracing as Envoy's resources: the
// connection managers' tracing, with an OpenTelemetry provider, and the
// collector's cluster (tracing|PORT||HOST: a name of its own, so that it
// never clashes with the collector's service cluster). They say nothing
// of the sidecar itself: each sidecar names its spans' service
// (CANONICAL-SERVICE.NAMESPACE) and adds Istio's identity tags from its
// own workload, so that one configuration serves every sidecar. t must
// be checked.
func TracingResources(t *TracingConfig, connectTimeout time.Duration) (*hcmv3.HttpConnectionManager_Tracing, *clusterv3.Cluster) {
	host, port, _ := t.hostPort() // checked
	name := fmt.Sprintf("tracing|%d||%s", port, host)
	kind := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		kind = clusterv3.Cluster_STATIC
	}
	cl := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(connectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: kind},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}}}}},
	}
	otel := &tracev3.OpenTelemetryConfig{}
	if t.Protocol == tracing.OTLPHTTP {
		uri := t.Collector
		if u, err := url.Parse(uri); err != nil || u.Scheme == "" {
			uri = "http://" + t.Collector + "/v1/traces"
		}
		otel.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: uri,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: name}, Timeout: durationpb.New(tracing.DefaultTimeout)}}
	} else {
		otel.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: name}}}
	}
	tags := []*tracingtagv3.CustomTag{{Tag: "istio.mesh_id", Type: &tracingtagv3.CustomTag_Literal_{Literal: &tracingtagv3.CustomTag_Literal{Value: meshID}}}}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: t.Sampling}, ClientSampling: &typev3.Percent{Value: 100},
		OverallSampling: &typev3.Percent{Value: 100}, MaxPathTagLength: wrapperspb.UInt32(tracing.MaxPathTagLength),
		CustomTags: tags,
		Provider:   &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: envoyres.Typed(otel)}},
	}, cl
}
