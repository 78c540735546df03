package proxy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// sidecarBootstrap is Istio's sidecar, as shunt runs it without a
// configuration file, in Envoy's resources: virtualOutbound on the
// outbound port to the original destination (PassthroughCluster),
// virtualInbound on the inbound port to the app from the inbound source
// (InboundPassthroughCluster); http_inspector sends HTTP, detected or
// declared by port, through an HTTP connection manager, the rest through
// a TCP proxy. /config_dump shows it.
func sidecarBootstrap(cfg *Config) (*bootstrapv3.Bootstrap, error) {
	logs, err := sidecarAccessLog(cfg)
	if err != nil {
		return nil, err
	}
	var source []netip.Addr
	if cfg.InboundSource.IsValid() {
		source = append(source, cfg.InboundSource)
		if cfg.InboundSource6.IsValid() {
			source = append(source, cfg.InboundSource6)
		}
	}
	clusters := []*clusterv3.Cluster{envoyres.OriginalDst(PassthroughCluster, cfg.ConnectTimeout),
		envoyres.OriginalDst(InboundPassthroughCluster, cfg.ConnectTimeout, source...)}
	clusters = append(clusters, &clusterv3.Cluster{Name: BlackHoleCluster, ConnectTimeout: durationpb.New(cfg.ConnectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}})
	if _, collector := sidecarTracing(cfg); collector != nil {
		clusters = append(clusters, collector)
	}
	var node *corev3.Node
	if cfg.NodeID != "" {
		node = &corev3.Node{Id: cfg.NodeID}
	}
	return &bootstrapv3.Bootstrap{Node: node, StaticResources: &bootstrapv3.Bootstrap_StaticResources{
		Listeners: []*listenerv3.Listener{
			sidecarListener(cfg, "virtualOutbound", cfg.OutboundPort, corev3.TrafficDirection_OUTBOUND, PassthroughCluster, "allow_any", logs),
			sidecarListener(cfg, "virtualInbound", cfg.InboundPort, corev3.TrafficDirection_INBOUND, InboundPassthroughCluster, "default", logs),
		},
		Clusters: clusters,
	}}, nil
}

func sidecarListener(cfg *Config, name string, port uint16, dir corev3.TrafficDirection, cluster, route string, logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	var addr6 netip.AddrPort
	if cfg.ListenAddr6.IsValid() {
		addr6 = netip.AddrPortFrom(cfg.ListenAddr6, port)
	}
	l := envoyres.CaptureListener(name, dir, netip.AddrPortFrom(cfg.ListenAddr, port), addr6,
		cfg.ProtocolDetectionTimeout > 0, cfg.ProtocolDetectionTimeout, cfg.TProxy)
	hcm := sidecarHCM(cfg, name, cluster, route, dir, logs)
	tcp := envoyres.Typed(&tcpproxyv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout: durationpb.New(cfg.IdleTimeout), AccessLog: logs})
	for _, p := range slices.Sorted(maps.Keys(cfg.PortProtocols)) {
		fc := &listenerv3.FilterChain{Name: fmt.Sprintf("%s-%d", name, p),
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(p))}}
		if cfg.PortProtocols[p].isHTTP() {
			fc.Filters = []*listenerv3.Filter{envoyres.NetworkFilter("envoy.filters.network.http_connection_manager", hcm)}
		} else {
			fc.Filters = []*listenerv3.Filter{envoyres.NetworkFilter("envoy.filters.network.tcp_proxy", tcp)}
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	l.FilterChains = append(l.FilterChains,
		&listenerv3.FilterChain{Name: name + "-catchall-http",
			FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: applicationProtocols},
			Filters:          []*listenerv3.Filter{envoyres.NetworkFilter("envoy.filters.network.http_connection_manager", hcm)}},
		&listenerv3.FilterChain{Name: name + "-catchall-tcp",
			Filters: []*listenerv3.Filter{envoyres.NetworkFilter("envoy.filters.network.tcp_proxy", tcp)}})
	return l
}

func sidecarHCM(cfg *Config, name, cluster, route string, dir corev3.TrafficDirection, logs []*accesslogv3.AccessLog) *anypb.Any {
	filters := []*hcmv3.HttpFilter{envoyres.Router()}
	d := Outbound
	if dir == corev3.TrafficDirection_INBOUND {
		d = Inbound
	}
	if mx := PeerMetadataFilter(d, cfg.PeerMetadata); mx != nil {
		filters = append([]*hcmv3.HttpFilter{mx}, filters...)
	}
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(0)}
	tracing, _ := sidecarTracing(cfg)
	return envoyres.Typed(&hcmv3.HttpConnectionManager{
		Tracing:    tracing,
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: route,
			VirtualHosts: []*routev3.VirtualHost{{Name: route, Domains: []string{"*"}, Routes: []*routev3.Route{
				{Name: route, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: action}},
				{Name: route + "-connect", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}},
					Action: &routev3.Route_Route{Route: action}},
			}}}}},
		HttpFilters:         filters,
		AccessLog:           logs,
		StreamIdleTimeout:   durationpb.New(cfg.StreamIdleTimeout),
		HttpProtocolOptions: &corev3.Http1ProtocolOptions{AcceptHttp_10: true},
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{
			{UpgradeType: "websocket"}, {UpgradeType: "CONNECT"}},
	})
}

// sidecarAccessLog is the sidecar's access log: a file logger writing to
// cfg.AccessLogPath in cfg.AccessLogFormat (see AccessLogFormat); none
// without cfg.AccessLog.
func sidecarAccessLog(cfg *Config) ([]*accesslogv3.AccessLog, error) {
	if cfg.AccessLog == nil {
		return nil, nil
	}
	l, err := FileAccessLog(cfg.AccessLogPath, cfg.AccessLogFormat)
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{l}, nil
}

// FileAccessLog is Envoy's file access logger writing to path
// (/dev/stdout when empty) in format, a --access-log-format value: ""
// or "envoy" for Envoy's default, "istio", "json", a JSON object, or an
// Envoy format string.
func FileAccessLog(path, format string) (*accesslogv3.AccessLog, error) {
	if path == "" {
		path = "/dev/stdout"
	}
	f, err := sidecarLogFormat(format)
	if err != nil {
		return nil, fmt.Errorf("access log format: %w", err)
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: envoyres.Typed(&filev3.FileAccessLog{Path: path, AccessLogFormat: f})}}, nil
}

// sidecarLogFormat is a command line's --access-log-format as Envoy's
// log_format (unset for Envoy's default).
func sidecarLogFormat(s string) (*filev3.FileAccessLog_LogFormat, error) {
	if _, err := AccessLogFormat(s); err != nil {
		return nil, err
	}
	var text string
	var fields []accesslog.Field
	switch {
	case s == "" || s == "text" || s == "envoy":
		return nil, nil
	case s == "istio":
		text = accesslog.IstioDefault
	case s == "json":
		fields = accesslog.JSONDefault
	case strings.HasPrefix(strings.TrimSpace(s), "{"):
		fields, _ = jsonFormatFields(s)
	default:
		text = s
		if !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
	}
	if fields != nil {
		m := make(map[string]any, len(fields))
		for _, f := range fields {
			m[f.Key] = f.Format
		}
		st, err := structpb.NewStruct(m)
		if err != nil {
			return nil, err
		}
		return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}, nil
	}
	return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: text}}}}}, nil
}
