// Package accesslog formats the proxy's access log in Envoy's format
// language: a format string of command operators (%START_TIME%,
// %REQ(X?Y):Z%, %RESPONSE_CODE%, %RESPONSE_FLAGS%, …) or a JSON
// dictionary of them, compiled once and rendered per request or
// connection into a reused buffer. Operators that do not apply (HTTP ones
// for a TCP flow) print "-", as in Envoy.
package accesslog

import (
	"net/netip"
	"strings"
	"time"
)

// Headers is a header block the formatter can look up by lower-case name.
// The value may be a view into the block's own buffer: the formatter only
// appends it.
type Headers interface {
	Get(lowerName string) ([]byte, bool)
}

// Record is what one request, or one TCP flow, leaves for the log.
type Record struct {
	Start    time.Time
	Protocol string // "HTTP/1.1", "HTTP/1.0", "HTTP/2"; "" for TCP

	// The request's pseudo-headers (HTTP/1's request line and Host).
	Method, Path, Authority, Scheme string
	Request, Response, Trailers     Headers

	ResponseCode        int // 0: no response
	ResponseCodeDetails string
	Flags               Flags

	BytesReceived, BytesSent int64
	Duration                 time.Duration // start to the last byte, both ways
	RequestDuration          time.Duration // start to the request's last byte; <0 unknown
	ResponseDuration         time.Duration // start to the response's first byte; <0 unknown
	ResponseTxDuration       time.Duration // the response's first byte to its last; <0 unknown

	UpstreamHost, UpstreamLocal       netip.AddrPort
	UpstreamCluster                   string
	UpstreamFailureReason             string
	DownstreamRemote, DownstreamLocal netip.AddrPort
	RequestedServerName               string
	DownstreamPeerURISAN              string // a TLS client's certificate's URI SAN (its SPIFFE ID)
	DownstreamLocalURISAN             string // the proxy's own, on that connection
	TerminationDetails                string
	RouteName                         string
	ConnectionID                      uint64
	AttemptCount                      int
}

// Flags are Envoy's response flags.
type Flags uint32

// The flags shunt sets, in Envoy's order.
const (
	NoHealthyUpstream                Flags = 1 << iota // UH
	UpstreamConnectionFailure                          // UF
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	UpstreamRetryLimitExceeded                         // URX
	NoClusterFound                                     // NC
	DurationTimeout                                    // DT
	DownstreamConnectionTermination                    // DC
	FailedLocalHealthCheck                             // LH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionTermination                      // UC
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	UnauthorizedExternalService                        // UAEX
	RateLimitServiceError                              // RLSE
	InvalidEnvoyRequestHeaders                         // IH
	StreamIdleTimeout                                  // SI
	DownstreamProtocolError                            // DPE
	UpstreamProtocolError                              // UPE
	UpstreamMaxStreamDurationReached                   // UMSDR
	OverloadManager                                    // OM
	DNSResolutionFailed                                // DF
	NoFilterConfigFound                                // NFCF
	DropOverLoad                                       // DO
	DownstreamRemoteReset                              // DR
	flagCount
)

var flagNames = [...]string{"UH", "UF", "UO", "NR", "URX", "NC", "DT", "DC", "LH", "UT", "LR", "UR", "UC", "DI", "FI",
	"RL", "UAEX", "RLSE", "IH", "SI", "DPE", "UPE", "UMSDR", "OM", "DF", "NFCF", "DO", "DR"}

// String is the flags as Envoy prints them: "UF,URX", or "-" for none.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(flagNames); i++ {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(flagNames[i])
		}
	}
	return b.String()
}

// appendTo is String without allocating.
func (f Flags) appendTo(b []byte) []byte {
	if f == 0 {
		return append(b, '-')
	}
	first := true
	for i := 0; i < len(flagNames); i++ {
		if f&(1<<i) != 0 {
			if !first {
				b = append(b, ',')
			}
			b = append(b, flagNames[i]...)
			first = false
		}
	}
	return b
}
