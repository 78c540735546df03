package proxy

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// listener is a capture listener's configuration, Envoy's listener with
// use_original_dst: filter chains, chosen by the connection's original
// destination port and the protocol its first bytes speak.
type listener struct {
	name   string // Istio's: virtualOutbound, virtualInbound
	dir    Direction
	chains []*filterChain
	// detect is how long to wait for a client's first bytes to tell HTTP
	// from the rest; 0 turns detection off (every connection is TCP,
	// unless a chain names a protocol for its port).
	detect time.Duration
}

// filterChain is one way through a listener: a match and a handler, a
// TCP proxy or an HTTP connection manager.
type filterChain struct {
	name     string
	ports    []uint16 // destination ports it matches; none: any
	protocol Protocol // the protocol it takes; ProtocolAny: whatever was detected
	tcp      *tcpProxy
	http     *httpManager
}

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

// chainFor picks the chain for a connection to port that speaks proto:
// the first chain naming the port, else the first that takes proto.
func (l *listener) chainFor(port uint16, proto Protocol) *filterChain {
	for _, fc := range l.chains {
		if len(fc.ports) > 0 && slices.Contains(fc.ports, port) && fc.takes(proto) {
			return fc
		}
	}
	for _, fc := range l.chains {
		if len(fc.ports) == 0 && fc.takes(proto) {
			return fc
		}
	}
	return nil
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

// declared is the protocol a chain fixes for port, if one does: such a
// connection needs no detection.
func (l *listener) declared(port uint16) (Protocol, bool) {
	for _, fc := range l.chains {
		if slices.Contains(fc.ports, port) && fc.protocol != ProtocolAny {
			return fc.protocol, true
		}
	}
	return 0, false
}

// sidecarListeners are Istio's sidecar's two capture listeners, as shunt
// runs them without a configuration file: outbound to the original
// destination (PassthroughCluster), inbound to the app from
// InboundSource (InboundPassthroughCluster); HTTP, detected or declared,
// through an HTTP connection manager, the rest through a TCP proxy.
func sidecarListeners(cfg *Config, clusters map[string]*cluster) []*listener {
	mk := func(name string, dir Direction, cl *cluster, route string) *listener {
		l := &listener{name: name, dir: dir, detect: cfg.ProtocolDetectionTimeout}
		hcm := &httpManager{statPrefix: name, routes: passthroughRoutes(route, cl)}
		tcp := &tcpProxy{statPrefix: name, cluster: cl}
		for _, port := range slices.Sorted(maps.Keys(cfg.PortProtocols)) {
			proto := cfg.PortProtocols[port]
			fc := &filterChain{name: fmt.Sprintf("%s-%d", name, port), ports: []uint16{port}, protocol: proto, tcp: tcp}
			if proto.isHTTP() {
				fc.tcp, fc.http = nil, hcm
			}
			l.chains = append(l.chains, fc)
		}
		l.chains = append(l.chains,
			&filterChain{name: name + "-catchall-http", protocol: ProtocolHTTP1, http: hcm},
			&filterChain{name: name + "-catchall-tcp", protocol: ProtocolTCP, tcp: tcp})
		return l
	}
	return []*listener{
		mk("virtualOutbound", Outbound, clusters[PassthroughCluster], "allow_any"),
		mk("virtualInbound", Inbound, clusters[InboundPassthroughCluster], "default"),
	}
}

// sidecarClusters are the clusters sidecarListeners use.
func sidecarClusters(cfg *Config) map[string]*cluster {
	out := &cluster{name: PassthroughCluster, kind: originalDst, connectTimeout: cfg.ConnectTimeout, poolLimits: defaultPoolLimits}
	in := &cluster{name: InboundPassthroughCluster, kind: originalDst, connectTimeout: cfg.ConnectTimeout,
		source: cfg.InboundSource, source6: cfg.InboundSource6, poolLimits: defaultPoolLimits}
	return map[string]*cluster{out.name: out, in.name: in}
}
