package control

import (
	"fmt"
	"net/netip"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shunt-dev/shunt/proxy"
)

// Mesh is the mesh-wide configuration, Istio's MeshConfig fields by
// their names.
type Mesh struct {
	// ConnectTimeout is every cluster's (connectTimeout, 10s).
	ConnectTimeout time.Duration
	// RegistryOnly: traffic to no known service is refused
	// (outboundTrafficPolicy.mode REGISTRY_ONLY), else passed through
	// (ALLOW_ANY).
	RegistryOnly bool
	// AccessLogFile is where sidecars log (accessLogFile; "" none) in
	// AccessLogFormat (accessLogFormat; "" Istio's).
	AccessLogFile, AccessLogFormat string
	// ProtocolDetectionTimeout bounds protocol sniffing
	// (protocolDetectionTimeout); 0 waits for the client's bytes.
	ProtocolDetectionTimeout time.Duration
	// IdleTimeout closes a TCP flow with no bytes either way (1h).
	IdleTimeout time.Duration
	// InboundSource and InboundSource6 are what the sidecar binds when
	// it connects to its app (127.0.0.6, ::6).
	InboundSource, InboundSource6 netip.Addr
	// RootNamespace's Sidecar is every namespace's default
	// (rootNamespace, istio-system).
	RootNamespace string
	// DNSAutoAllocate gives ServiceEntry hosts with no addresses one of
	// 240.240.0.0/16, which their sidecars' DNS proxies answer and their
	// chains take (Istio's ISTIO_META_DNS_AUTO_ALLOCATE).
	DNSAutoAllocate bool
	// DiscoverySelectors limit the mesh to the namespaces whose labels
	// one of them selects (discoverySelectors; none: every namespace):
	// another's services and rules are not the sidecars'.
	DiscoverySelectors []labels.Selector
	// AutoMTLS: sidecars send mutual TLS to endpoints whose pods have a
	// sidecar (label security.istio.io/tlsMode: istio), plaintext to the
	// rest, and take it inbound as PeerAuthentications say
	// (enableAutoMtls); it needs the CA, which signs their certificates.
	AutoMTLS bool
	// TrustDomain is the mesh's identities' (trustDomain).
	TrustDomain string
	// Tracing, if set, has every sidecar trace its HTTP requests to an
	// OpenTelemetry collector (Istio's extensionProviders opentelemetry
	// with defaultProviders.tracing, at meshConfig.defaultConfig.tracing
	// .sampling percent); each sidecar names its spans by its own
	// workload.
	Tracing *proxy.TracingConfig
	// PeerMetadata is the sidecars' part in Istio's metadata exchange
	// (defaultConfig.proxyHeaders.metadataExchangeHeaders):
	// proxy.PeerMetadataAlways (ALWAYS), proxy.PeerMetadataInMesh
	// (IN_MESH) or proxy.PeerMetadataOff (no istio.metadata_exchange
	// filter).
	PeerMetadata string

	logs           []*accesslogv3.AccessLog
	tracing        *hcmv3.HttpConnectionManager_Tracing
	tracingCluster *clusterv3.Cluster
}

// DefaultMesh is Istio's defaults, with protocol detection bounded as
// shunt's sidecar bounds it.
func DefaultMesh() Mesh {
	return Mesh{ConnectTimeout: 10 * time.Second, ProtocolDetectionTimeout: proxy.DefaultProtocolDetectionTimeout,
		IdleTimeout: time.Hour, InboundSource: netip.MustParseAddr("127.0.0.6"), InboundSource6: netip.MustParseAddr("::6"),
		RootNamespace: "istio-system", TrustDomain: "cluster.local"}
}

// check validates m and readies its access log.
func (m *Mesh) check() error {
	if m.ConnectTimeout <= 0 {
		return fmt.Errorf("connect timeout %s: not positive", m.ConnectTimeout)
	}
	m.logs = nil
	if m.AccessLogFile != "" {
		format := m.AccessLogFormat
		if format == "" {
			format = "istio"
		}
		l, err := proxy.FileAccessLog(m.AccessLogFile, format)
		if err != nil {
			return err
		}
		m.logs = []*accesslogv3.AccessLog{l}
	}
	m.tracing, m.tracingCluster = nil, nil
	if m.Tracing != nil {
		if err := m.Tracing.Check(); err != nil {
			return err
		}
		m.tracing, m.tracingCluster = proxy.TracingResources(m.Tracing, m.ConnectTimeout)
	}
	return nil
}

// inMesh says whether namespace ns is the mesh's: one of the discovery
// selectors selects its labels (w's), or there is none.
func (m *Mesh) inMesh(w *World, ns string) bool {
	if len(m.DiscoverySelectors) == 0 {
		return true
	}
	l, ok := w.Namespaces[ns]
	if !ok {
		return false
	}
	for _, s := range m.DiscoverySelectors {
		if s.Matches(labels.Set(l)) {
			return true
		}
	}
	return false
}
