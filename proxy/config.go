// Package proxy is shunt's embedded sidecar: it accepts the connections the
// capture rules redirect to it, recovers where each was going, and forwards
// it there. It works at L4: bytes in, bytes out, half-close and reset kept.
package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/shunt-dev/shunt/sidecar"
)

// Config says where the proxy listens and how it treats connections.
type Config struct {
	OutboundPort uint16 // captured outbound connections arrive here
	InboundPort  uint16 // captured inbound connections arrive here
	// ListenAddr is the IPv4 address the capture listeners bind; IPv6
	// listeners bind [::] when the namespace has IPv6.
	ListenAddr netip.Addr

	// TProxy says inbound connections arrive by TPROXY rather than
	// REDIRECT: not rewritten, so the accepted socket's local address is
	// the original destination, on a listener bound with IP_TRANSPARENT.
	TProxy bool

	// InboundSource is the address inbound connections are handed to the
	// app from, so the capture rules let them through (127.0.0.6); the
	// IPv6 form is used for IPv6 destinations.
	InboundSource   netip.Addr
	InboundSource6  netip.Addr
	ConnectTimeout  time.Duration
	IdleTimeout     time.Duration // no byte either way for this long closes the connection
	MaxConnections  int           // beyond it new connections are reset at once; 0 for no limit
	DrainTimeout    time.Duration // how long live connections may finish after SIGTERM
	HealthAddr      string        // serves /healthz/ready; "" for none
	PrometheusAddr  string        // serves /stats/prometheus; "" for none
	AdminAddr       string        // serves the admin API; loopback only; "" for none
	AccessLog       io.Writer     // one line per connection; nil for none
	AccessLogFormat string        // "text" or "json"
}

// DefaultConfig is Istio's ports and Envoy's defaults for its TCP proxy.
func DefaultConfig() Config {
	return Config{
		OutboundPort:    sidecar.OutboundPort,
		InboundPort:     sidecar.InboundPort,
		ListenAddr:      netip.IPv4Unspecified(),
		InboundSource:   netip.MustParseAddr(sidecar.InboundPassthroughSource),
		InboundSource6:  netip.MustParseAddr("::6"),
		ConnectTimeout:  10 * time.Second,
		IdleTimeout:     time.Hour,
		MaxConnections:  100000,
		DrainTimeout:    5 * time.Second,
		HealthAddr:      fmt.Sprintf(":%d", sidecar.HealthPort),
		PrometheusAddr:  fmt.Sprintf(":%d", sidecar.PrometheusPort),
		AdminAddr:       fmt.Sprintf("127.0.0.1:%d", sidecar.AdminPort),
		AccessLogFormat: "text",
	}
}

// Validate checks the Config.
func (c *Config) Validate() error {
	var errs []error
	if c.OutboundPort == 0 || c.InboundPort == 0 || c.OutboundPort == c.InboundPort {
		errs = append(errs, fmt.Errorf("outbound port %d and inbound port %d must be set and differ", c.OutboundPort, c.InboundPort))
	}
	if !c.ListenAddr.Is4() {
		errs = append(errs, fmt.Errorf("listen address %s is not IPv4", c.ListenAddr))
	}
	if !c.InboundSource.Is4() || !c.InboundSource6.Is6() {
		errs = append(errs, fmt.Errorf("inbound sources %s and %s must be IPv4 and IPv6", c.InboundSource, c.InboundSource6))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"connect timeout", c.ConnectTimeout}, {"idle timeout", c.IdleTimeout}, {"drain timeout", c.DrainTimeout}} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.d))
		}
	}
	if c.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("connection limit %d is negative", c.MaxConnections))
	}
	if c.AccessLogFormat != "text" && c.AccessLogFormat != "json" {
		errs = append(errs, fmt.Errorf("access log format %q is not text or json", c.AccessLogFormat))
	}
	return errors.Join(errs...)
}
