// Package proxy is shunt's embedded sidecar: it accepts the connections the
// capture rules redirect to it, recovers where each was going, and forwards
// it there, in Envoy's model: a listener's filter chain, chosen by the
// destination port and what the first bytes speak, hands the connection to
// a TCP proxy (bytes in, bytes out, half-close and reset kept) or to an
// HTTP connection manager (requests parsed, routed to a cluster, sent over
// pooled upstream connections, logged one by one).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/shunt-dev/shunt/sidecar"
)

// Config says where the proxy listens and how it treats connections.
type Config struct {
	// OutboundPort and InboundPort are where captured connections arrive;
	// 0 takes any free port (tests), the command line refuses it.
	OutboundPort uint16
	InboundPort  uint16
	// ListenAddr is the IPv4 address the capture listeners bind;
	// ListenAddr6 the IPv6 one, when the namespace has IPv6 (the zero
	// Addr for no IPv6 listeners).
	ListenAddr  netip.Addr
	ListenAddr6 netip.Addr

	// TProxy says inbound connections arrive by TPROXY rather than
	// REDIRECT: not rewritten, so the accepted socket's local address is
	// the original destination, on a listener bound with IP_TRANSPARENT.
	TProxy bool

	// InboundSource is the address inbound connections are handed to the
	// app from, so the capture rules let them through (127.0.0.6); the
	// IPv6 form is used for IPv6 destinations.
	InboundSource  netip.Addr
	InboundSource6 netip.Addr
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration // no byte either way for this long closes the connection
	// StreamIdleTimeout bounds an HTTP request in flight that moves no
	// byte either way: Envoy's stream_idle_timeout (5 minutes); before the
	// response it is answered 408, after it reset.
	StreamIdleTimeout time.Duration
	// TracingFlushInterval is how often queued spans go to the collector
	// (Envoy's OpenTelemetry tracer: 5s); 0 for that.
	TracingFlushInterval time.Duration
	// MaxConnections bounds open connections; beyond it new ones are reset
	// at once. 0 is no limit of its own, but the descriptor limit always
	// bounds it (see Limits).
	MaxConnections int

	// Drain, on SIGTERM, as Istio's sidecar does: the listeners in
	// DrainListeners stop at once (inbound only, by default: the app may
	// still call out while it shuts down); the rest serve until the drain
	// ends. It ends after DrainTimeout, when what is left is reset; or,
	// earlier, once nothing is open and nothing new can come (every
	// listener stopped), or with ExitOnZeroActive, once nothing is open
	// after MinimumDrain.
	DrainTimeout     time.Duration
	DrainListeners   DrainScope
	ExitOnZeroActive bool
	MinimumDrain     time.Duration

	HealthAddr string // serves /healthz/ready; "" for none
	// StatusAddr serves Istio's agent port (15020): /app-health/… (the app
	// probes injection rewrote, run from InboundSource against
	// AppProbeTarget), /healthz/ready, /stats/prometheus, and
	// POST /quitquitquit from loopback; "" for none.
	StatusAddr      string
	AppProbes       map[string]AppProbe
	AppProbeTarget  netip.Addr // the pod's address; invalid: read from the interfaces
	PrometheusAddr  string     // serves /stats/prometheus; "" for none
	AdminAddr       string     // serves the admin API; "" for none
	AdminRemote     bool       // allow AdminAddr off loopback (it serves pprof and changes the log level)
	AccessLog       io.Writer  // one line per request, and per TCP flow; nil for none
	AccessLogFormat string     // see AccessLogFormat

	// ProtocolDetectionTimeout is how long a captured connection's first
	// bytes are waited for to tell HTTP from the rest; what has not said
	// by then is TCP. 0 turns detection off: everything is TCP, except
	// ports PortProtocols declares HTTP.
	ProtocolDetectionTimeout time.Duration
	// PortProtocols declares what destination ports speak, as Istio's
	// port names do: HTTP ports go to L7 without detection, TCP ones are
	// passed through at once (a server-first protocol waits for nothing).
	PortProtocols map[uint16]Protocol

	// Bootstrap is an Envoy configuration to run (shunt proxy --config)
	// instead of Istio's sidecar, which the capture settings above
	// describe; see envoyconfig.Load.
	Bootstrap *bootstrapv3.Bootstrap
	// AccessLogPath is what the sidecar's configuration names as its
	// access log's path (/config_dump shows it); AccessLog is where it
	// writes. /dev/stdout when empty.
	AccessLogPath string
	// Resolve looks up the names of DNS clusters; nil asks the system's
	// resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)

	// Workload is the pod's identity in Istio's metric labels; nil reads
	// it from the environment (WorkloadFromEnv).
	Workload *Workload
	// NodeID is the sidecar's Envoy node id (Istio's
	// sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local), in its spans.
	NodeID string
	// Tracing, if set, has the sidecar's connection managers record
	// spans and send them to a collector.
	Tracing *TracingConfig
	// PeerMetadata is how the sidecar's own configuration (no Bootstrap)
	// takes part in Istio's metadata exchange (x-envoy-peer-metadata on
	// HTTP, which names the peer workload in the metrics): its connection
	// managers' istio.metadata_exchange filters, as istiod sends them,
	// for PeerMetadataAlways (Istio's default, ""), PeerMetadataInMesh
	// (Istio's IN_MESH: nothing sent to PassthroughCluster), none for
	// PeerMetadataOff. A Bootstrap's or control plane's configuration says
	// so itself.
	PeerMetadata string

	// OriginalDst finds where a captured connection was going; nil reads
	// SO_ORIGINAL_DST (or, for TPROXY inbound, the local address).
	OriginalDst func(c *net.TCPConn, dir Direction) (netip.AddrPort, error)
	// Dial connects to the upstream; nil connects from the kernel's choice
	// of source outbound, and from InboundSource inbound. It must give up
	// when ctx ends.
	Dial func(ctx context.Context, dir Direction, dst netip.AddrPort) (*net.TCPConn, error)
}

// DrainScope is which capture listeners stop at the start of a drain.
type DrainScope uint8

// Drain scopes.
const (
	DrainInbound DrainScope = iota // Istio's: inbound stops, outbound serves until the drain ends
	DrainAll                       // both stop at once
)

func (s DrainScope) String() string {
	if s == DrainAll {
		return "all"
	}
	return "inbound"
}

// stops says whether a drain stops dir's listener at its start.
func (s DrainScope) stops(dir Direction) bool { return s == DrainAll || dir == Inbound }

// DefaultProtocolDetectionTimeout is how long detection waits for a
// client's first bytes. Istio's protocolDetectionTimeout is 0 (wait for
// ever, so server-first protocols must be declared); shunt waits this
// long and then passes the connection through as TCP.
const DefaultProtocolDetectionTimeout = 100 * time.Millisecond

// DefaultConfig is Istio's ports and drain and Envoy's defaults for its
// TCP proxy.
func DefaultConfig() Config {
	return Config{
		OutboundPort:      sidecar.OutboundPort,
		InboundPort:       sidecar.InboundPort,
		ListenAddr:        netip.IPv4Unspecified(),
		ListenAddr6:       netip.IPv6Unspecified(),
		InboundSource:     netip.MustParseAddr(sidecar.InboundPassthroughSource),
		InboundSource6:    netip.MustParseAddr("::6"),
		ConnectTimeout:    10 * time.Second,
		IdleTimeout:       time.Hour,
		StreamIdleTimeout: 5 * time.Minute,
		MaxConnections:    100000,
		DrainTimeout:      5 * time.Second,
		MinimumDrain:      5 * time.Second,
		HealthAddr:        fmt.Sprintf(":%d", sidecar.HealthPort),
		StatusAddr:        fmt.Sprintf(":%d", sidecar.AgentPort),
		PrometheusAddr:    fmt.Sprintf(":%d", sidecar.PrometheusPort),
		AdminAddr:         fmt.Sprintf("127.0.0.1:%d", sidecar.AdminPort),
		AccessLogFormat:   "text",

		ProtocolDetectionTimeout: DefaultProtocolDetectionTimeout,
	}
}

// Validate checks the Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Tracing != nil {
		if err := c.Tracing.Check(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.OutboundPort == c.InboundPort && c.OutboundPort != 0 {
		errs = append(errs, fmt.Errorf("outbound port %d and inbound port %d must differ", c.OutboundPort, c.InboundPort))
	}
	if !c.ListenAddr.Is4() {
		errs = append(errs, fmt.Errorf("listen address %s is not IPv4", c.ListenAddr))
	}
	if c.ListenAddr6.IsValid() && !c.ListenAddr6.Is6() {
		errs = append(errs, fmt.Errorf("IPv6 listen address %s is not IPv6", c.ListenAddr6))
	}
	if !c.InboundSource.Is4() || !c.InboundSource6.Is6() {
		errs = append(errs, fmt.Errorf("inbound sources %s and %s must be IPv4 and IPv6", c.InboundSource, c.InboundSource6))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"connect timeout", c.ConnectTimeout}, {"idle timeout", c.IdleTimeout}, {"stream idle timeout", c.StreamIdleTimeout},
		{"drain timeout", c.DrainTimeout}} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.d))
		}
	}
	if c.MinimumDrain < 0 {
		errs = append(errs, fmt.Errorf("minimum drain %s is negative", c.MinimumDrain))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("connection limit %d is negative", c.MaxConnections))
	}
	if c.DrainListeners > DrainAll {
		errs = append(errs, fmt.Errorf("drain scope %d is not inbound or all", c.DrainListeners))
	}
	if c.AdminAddr != "" && !c.AdminRemote && !IsLoopbackAddr(c.AdminAddr) {
		errs = append(errs, fmt.Errorf("admin address %s is not loopback: the admin API serves profiles and changes the log level", c.AdminAddr))
	}
	if len(c.AppProbes) > 0 && c.StatusAddr == "" {
		errs = append(errs, errors.New("app probes are configured but no status address serves them"))
	}
	if _, err := AccessLogFormat(c.AccessLogFormat); err != nil {
		errs = append(errs, fmt.Errorf("access log format: %w", err))
	}
	switch c.PeerMetadata {
	case "", PeerMetadataAlways, PeerMetadataInMesh, PeerMetadataOff:
	default:
		errs = append(errs, fmt.Errorf("peer metadata mode %q is not %s, %s or %s", c.PeerMetadata, PeerMetadataAlways, PeerMetadataInMesh, PeerMetadataOff))
	}
	if c.ProtocolDetectionTimeout < 0 {
		errs = append(errs, fmt.Errorf("protocol detection timeout %s is negative", c.ProtocolDetectionTimeout))
	}
	return errors.Join(errs...)
}

// IsLoopbackAddr says whether a HOST:PORT address listens on loopback only;
// an empty host, 0.0.0.0 and :: listen everywhere.
func IsLoopbackAddr(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
