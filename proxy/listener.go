package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// listener is a capture listener's configuration, Envoy's listener with
// use_original_dst: filter chains, chosen by the connection's original
// destination port and the protocol its first bytes speak.
type listener struct {
	name string // Istio's: virtualOutbound, virtualInbound
	// dir is the traffic direction, for the metrics (Istio's reporter).
	dir Direction
	// addrs are where it listens: its address and additional_addresses;
	// with optionalExtra, the additional ones may fail to bind (the
	// sidecar's IPv6 in a namespace without IPv6).
	addrs         []netip.AddrPort
	optionalExtra bool
	// useOriginalDst reads where a connection was going from the
	// kernel's NAT (SO_ORIGINAL_DST); otherwise that is the address it
	// was accepted on. transparent binds with IP_TRANSPARENT (TPROXY:
	// the accepted address is the original destination).
	useOriginalDst, transparent bool
	chains                      []*filterChain
	// inspectHTTP and inspectTLS are Envoy's http_inspector and
	// tls_inspector: they wait up to detect for a client's first bytes;
	// closeOnTimeout closes a connection that stays silent that long
	// (continue_on_listener_filters_timeout false), else it is TCP.
	inspectHTTP, inspectTLS bool
	detect                  time.Duration
	closeOnTimeout          bool
	// logs are its chains' loggers: a connection refused before a chain
	// took it is logged to each.
	logs []logger
	// port is the port it is bound to (the configured one, or the one
	// the kernel chose for 0).
	port uint16
}

// filterChain is one way through a listener: a match and a handler, a
// TCP proxy or an HTTP connection manager.
type filterChain struct {
	name     string
	ports    []uint16       // destination ports it matches; none: any
	prefixes []netip.Prefix // destination addresses it matches (prefix_ranges); none: any
	protocol Protocol       // the protocol it takes; ProtocolAny: whatever was detected
	// detected: the protocol is one detection must find
	// (application_protocols), not one the port declares.
	detected bool
	// transport is transport_protocol: any, raw_buffer or tls; alpns
	// are application_protocols a TLS client must offer one of (Istio's
	// mesh ALPNs); tls terminates TLS (its transport_socket).
	transport transportMatch
	alpns     []string
	// serverNames are server_names: the SNIs (exact, or *.suffix) it
	// takes; none: any.
	serverNames []string
	tls         *tlsContext
	// rbac are its network RBAC filters, in order: a connection one of
	// them stops is closed before its handler sees it.
	rbac []*rbacEngine
	tcp  *tcpProxy
	http *httpManager
}

// transportMatch is a filter chain's transport_protocol.
type transportMatch uint8

const (
	transportAny transportMatch = iota
	transportRaw                // raw_buffer: not TLS
	transportTLS                // tls: a ClientHello came
)

// Protocol is what a connection speaks, as detection or a port's
// declared protocol says.
type Protocol uint8

// Protocols.
const (
	ProtocolAny   Protocol = iota // in a chain: matches anything
	ProtocolTCP                   // opaque bytes
	ProtocolHTTP1                 // HTTP/1.x
	ProtocolHTTP2                 // HTTP/2 with prior knowledge (h2c)
	ProtocolTLS                   // a TLS ClientHello: passed through as TCP, SNI logged
)

var protocolNames = [...]string{"any", "tcp", "http/1.1", "h2c", "tls"}

func (p Protocol) String() string { return protocolNames[p] }

// isHTTP says the protocol is one the HTTP connection manager takes.
func (p Protocol) isHTTP() bool { return p == ProtocolHTTP1 || p == ProtocolHTTP2 }

// IstioProtocol maps Istio's port-name and appProtocol conventions
// (http, http2, grpc, grpc-web, tcp, tls, https, mongo, mysql, redis, …)
// to what shunt does with the port: HTTP is proxied at L7 without waiting
// for detection; everything else is TCP, passed through at once.
func IstioProtocol(name string) (Protocol, error) {
	switch name {
	case "http", "http2", "grpc", "grpc-web", "h2c":
		return ProtocolHTTP1, nil // HTTP/1 or h2c: the first bytes still say which
	case "tcp", "tls", "https", "mongo", "mysql", "redis", "kafka", "zookeeper", "mqtt", "opaque":
		return ProtocolTCP, nil
	}
	return 0, fmt.Errorf("%q is not a protocol Istio names (http, http2, grpc, grpc-web, tcp, tls, https, mongo, mysql, redis)", name)
}

// chainFor picks the chain for a connection to dst that speaks proto
// (offering alpn, for TLS), as Envoy's filter chain manager does, one
// criterion after another: among the chains naming dst's port (else, if
// they take nothing, those naming none), those with the longest prefix
// holding dst's address; then by transport protocol, then by
// application protocol (ALPN, or what http_inspector found), each time
// the chains naming a match over those naming nothing. Past the port, a
// criterion that leaves no chain ends the search: the connection is not
// sent to a less specific chain. The first of equals wins.
func (l *listener) chainFor(dst netip.AddrPort, proto Protocol, alpn []string, sni string) *filterChain {
	if fc := l.narrow(true, dst, proto, alpn, sni); fc != nil {
		return fc
	}
	return l.narrow(false, dst, proto, alpn, sni)
}

// narrow picks, among the chains naming dst's port (namedPort) or naming
// none, the one whose scores (address, server name, transport,
// application protocol) are the highest, level by level: the
// lexicographic best, which is what keeping the best chains of each
// level in turn leaves. A negative score is no match, and a best with
// one leaves nothing.
func (l *listener) narrow(namedPort bool, dst netip.AddrPort, proto Protocol, alpn []string, sni string) *filterChain {
	var best *filterChain
	var bestScores [4]int
	for _, fc := range l.chains {
		if namedPort != (len(fc.ports) > 0) || namedPort && !slices.Contains(fc.ports, dst.Port()) {
			continue
		}
		prefix, ok := fc.matches(dst)
		if !ok {
			prefix = -2
		}
		scores := [4]int{prefix + 1, fc.serverNameScore(sni), fc.transportScore(proto), fc.protocolScore(proto, alpn)}
		if best == nil || slices.Compare(scores[:], bestScores[:]) > 0 {
			best, bestScores = fc, scores
		}
	}
	if best == nil || slices.Min(bestScores[:]) < 0 {
		return nil
	}
	return best
}

// serverNameScore is the server-name level (server_names, against a TLS
// client's SNI), as Envoy ranks it: an exact name over the longest
// wildcard suffix (*.example.com) over a chain naming none (0); -1 for a
// chain whose names the SNI is not.
func (fc *filterChain) serverNameScore(sni string) int {
	if len(fc.serverNames) == 0 {
		return 0
	}
	best := -1
	for _, n := range fc.serverNames {
		switch {
		case n == sni && sni != "":
			return 1 << 20
		case strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:]) && len(n) > best:
			best = len(n)
		}
	}
	return best
}

// transportScore is the transport-protocol level: 1 for a chain naming
// the connection's (tls, or raw_buffer for anything else), 0 for one
// naming none, -1 for one naming the other.
func (fc *filterChain) transportScore(proto Protocol) int {
	switch {
	case fc.transport == transportAny:
		return 0
	case (fc.transport == transportTLS) == (proto == ProtocolTLS):
		return 1
	}
	return -1
}

// protocolScore is the application-protocol level: a chain naming mesh
// ALPNs matches a TLS client offering one of them; one naming HTTP's
// matches a connection detected so; one naming none matches anything.
func (fc *filterChain) protocolScore(proto Protocol, alpn []string) int {
	switch {
	case len(fc.alpns) > 0:
		for _, a := range alpn {
			if slices.Contains(fc.alpns, a) {
				return 1
			}
		}
		return -1
	case !fc.detected:
		// No application_protocols: any (a port's declared protocol only
		// spares detection).
		return 0
	case fc.takes(proto):
		return 1
	}
	return -1
}

// addressRank says whether dst is the chain's port and address, and how
// specific the match is: a port named counts over any prefix, then the
// longest prefix dst is in.
func (fc *filterChain) addressRank(dst netip.AddrPort) (int, bool) {
	prefix, ok := fc.matches(dst)
	if !ok {
		return 0, false
	}
	rank := prefix + 1 // 0 (any address) to 129
	if len(fc.ports) > 0 {
		rank += 1000
	}
	return rank, true
}

// matches says whether dst is the chain's port and address, and the
// length of the longest of its prefixes dst is in (-1: it names none).
func (fc *filterChain) matches(dst netip.AddrPort) (int, bool) {
	if len(fc.ports) > 0 && !slices.Contains(fc.ports, dst.Port()) {
		return 0, false
	}
	if len(fc.prefixes) == 0 {
		return -1, true
	}
	longest := -1
	for _, p := range fc.prefixes {
		if p.Contains(dst.Addr().Unmap()) && p.Bits() > longest {
			longest = p.Bits()
		}
	}
	return longest, longest >= 0
}

func (fc *filterChain) takes(proto Protocol) bool {
	switch fc.protocol {
	case ProtocolAny:
		return true
	case ProtocolHTTP1, ProtocolHTTP2:
		return proto.isHTTP()
	}
	return !proto.isHTTP()
}

// declared is the protocol the chains most specific to dst fix, if one
// does: such a connection needs no detection. Chains that match on the
// detected application protocol, or on TLS and its ALPN, at that rank
// need it.
func (l *listener) declared(dst netip.AddrPort) (Protocol, bool) {
	var proto Protocol
	bestRank, found, detect := -1, false, false
	for _, fc := range l.chains {
		rank, ok := fc.addressRank(dst)
		switch {
		case !ok || rank < bestRank:
			continue
		case rank > bestRank:
			bestRank, found, detect = rank, false, false
		}
		detect = detect || fc.detected || fc.transport != transportAny || len(fc.alpns) > 0
		if !found && len(fc.ports) > 0 && fc.protocol != ProtocolAny && !fc.detected {
			proto, found = fc.protocol, true
		}
	}
	return proto, found && !detect
}
