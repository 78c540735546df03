package proxy

import (
	"context"
	"crypto/x509"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/origdst"
	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// downstream is a captured connection on its way through the proxy.
type downstream struct {
	tcp *net.TCPConn // the accepted socket
	c   sock         // what the handler reads and writes: tcp, or TLS over it
	lst *listener
	// capture is the socket it came in on, whose listener a reload may
	// have replaced since (see h1conn.stale).
	capture  *capture
	remote   netip.AddrPort // the peer that connected
	local    netip.AddrPort // where it was going: Envoy's downstream local address
	id       uint64         // %CONNECTION_ID%
	start    time.Time
	sni      string
	alpn     []string          // the protocols a TLS client offered
	peer     string            // a TLS client's URI SAN (its SPIFFE ID), once its certificate is checked
	localURI string            // the proxy's own URI SAN on a TLS connection
	peerCert *x509.Certificate // a TLS client\'s checked certificate
	xfcc     string            // its x-forwarded-client-cert element, made after the handshake
	// bytes read from and written to the peer, for the connection metrics
	received, sent int64
}

// serveConn takes a captured connection through the listener: where it
// was going, which chain takes it, and that chain's handler.
func (p *Proxy) serveConn(c *net.TCPConn, cp *capture, lst *listener) {
	defer p.conns.Done()
	s := &p.metrics.dir[lst.dir]
	s.active.Add(1)
	defer s.active.Add(-1)
	d := downstream{tcp: c, c: c, lst: lst, capture: cp, remote: addrPort(c.RemoteAddr()), id: p.connIDs.Add(1), start: time.Now()}
	r := p.route(&d)
	p.metrics.record(lst.dir, r, d.received, d.sent, time.Since(d.start))
}

// route sends d to its chain's handler, or refuses it; it closes d.
func (p *Proxy) route(d *downstream) Result {
	dst, err := p.originalDst(d.tcp, d.lst)
	if err != nil {
		reset(d.c)
		p.log.Warn("cannot read the original destination", "direction", d.lst.dir, "from", d.remote, "err", err)
		return p.refuse(d, ResultNoOriginalDst, err.Error())
	}
	d.local = dst
	if p.isLoop(d.tcp, d.lst, dst) {
		// Not redirected: someone dialled the listener itself. Forwarding
		// would connect the proxy to itself, again and again.
		reset(d.c)
		p.log.Warn("refused a connection to the proxy's own listener (a loop)", "direction", d.lst.dir, "from", d.remote, "to", dst)
		return p.refuse(d, ResultLoop, "")
	}
	proto, timedOut := p.protocolOf(d)
	if timedOut && d.lst.closeOnTimeout {
		d.c.Close()
		return p.refuse(d, ResultListenerFilterTimeout, "")
	}
	fc := d.lst.chainFor(dst, proto, d.alpn, d.sni)
	if fc == nil {
		reset(d.c)
		return p.refuse(d, ResultNoChain, "")
	}
	if fc.tls != nil {
		return p.serveTLS(d, fc)
	}
	if r, refused := p.rbacRefused(d, fc); refused {
		return r
	}
	if fc.http != nil && fc.http.codec != ProtocolHTTP1 && proto != ProtocolHTTP2 && !d.lst.inspectHTTP {
		// codec_type AUTO: the connection manager tells HTTP/2 by its
		// preface, with or without an http_inspector before it.
		proto = detect(d.tcp, declaredHTTPWait).proto
	}
	if fc.http != nil && proto == ProtocolHTTP2 && fc.http.codec != ProtocolHTTP1 {
		return p.serveH2(d, fc.http, nil, nil, nil)
	}
	if fc.http != nil {
		return p.serveHTTP(d, fc.http)
	}
	return p.proxyTCP(d, fc.tcp)
}

// protocolOf is what d speaks: TCP when its port is declared so (nothing
// waited for); otherwise what its first bytes say, as far as the
// listener's inspectors look (TCP where none does), HTTP where its port
// is declared HTTP whatever they say (the codec judges them). timedOut
// says the client stayed silent past the inspectors' timeout.
func (p *Proxy) protocolOf(d *downstream) (proto Protocol, timedOut bool) {
	declared, ok := d.lst.declared(d.local)
	inspect := d.lst.inspectHTTP || d.lst.inspectTLS
	switch {
	case ok && declared == ProtocolTCP, !ok && !inspect:
		return ProtocolTCP, false
	case !inspect:
		// A port declared HTTP: its client speaks first; its first bytes
		// say HTTP/1 or HTTP/2.
		if detect(d.tcp, declaredHTTPWait).proto == ProtocolHTTP2 {
			return ProtocolHTTP2, false
		}
		return declared, false
	}
	det := detect(d.tcp, d.lst.detect)
	if d.lst.inspectTLS {
		d.sni, d.alpn = det.sni, det.alpn
	}
	proto = det.proto
	if proto.isHTTP() && !d.lst.inspectHTTP || proto == ProtocolTLS && !d.lst.inspectTLS {
		proto = ProtocolTCP
	}
	if ok && !proto.isHTTP() && proto != ProtocolTLS {
		return declared, false
	}
	if ok && proto == ProtocolHTTP1 && declared.isHTTP() {
		return declared, false
	}
	return proto, det.timedOut
}

// refuse logs a connection turned away before any handler took it.
func (p *Proxy) refuse(d *downstream, r Result, detail string) Result {
	rec := d.record()
	rec.Duration = time.Since(d.start)
	rec.Flags = r.flags(false)
	rec.TerminationDetails = terminationDetails(r, detail)
	if r == ResultLoop {
		rec.UpstreamCluster = BlackHoleCluster
	}
	writeAll(d.lst.logs, &rec)
	return r
}

// record is the access log record of a TCP flow on d, so far.
func (d *downstream) record() accesslog.Record {
	return accesslog.Record{Start: d.start, DownstreamRemote: d.remote, DownstreamLocal: d.local, ConnectionID: d.id,
		DownstreamPeerURISAN: d.peer, DownstreamLocalURISAN: d.localURI,
		RequestedServerName: d.sni, RequestDuration: -1, ResponseDuration: -1, ResponseTxDuration: -1}
}

// flags are Envoy's response flags for a connection that ended so;
// upstreamSide says a reset came from the upstream.
func (r Result) flags(upstreamSide bool) accesslog.Flags {
	switch r {
	case ResultConnectTimeout, ResultConnectRefused, ResultConnectUnreach, ResultConnectError:
		return accesslog.UpstreamConnectionFailure
	case ResultLoop, ResultNoHealthyUpstream:
		return accesslog.NoHealthyUpstream
	case ResultNoChain:
		return accesslog.NoRouteFound
	case ResultUpstreamOverflow:
		return accesslog.UpstreamOverflow
	case ResultOverLimit:
		return accesslog.OverloadManager
	case ResultDownstreamClosed:
		return accesslog.DownstreamConnectionTermination
	case ResultReset:
		if upstreamSide {
			return accesslog.UpstreamRemoteReset
		}
		return accesslog.DownstreamRemoteReset
	}
	return 0
}

// terminationDetails is %CONNECTION_TERMINATION_DETAILS% for a result:
// its name and what went wrong, spaces made underscores as Envoy's
// details are, so the log's columns stay columns.
func terminationDetails(r Result, detail string) string {
	if r == ResultOK {
		return ""
	}
	if detail == "" {
		return r.String()
	}
	return r.String() + "{" + strings.ReplaceAll(detail, " ", "_") + "}"
}

// originalDst is where c was going: conntrack's record of the address
// REDIRECT rewrote, or, for TPROXY, the socket's own local address.
func (p *Proxy) originalDst(c *net.TCPConn, l *listener) (netip.AddrPort, error) {
	switch {
	case !l.useOriginalDst || l.transparent:
		return addrPort(c.LocalAddr()), nil
	case p.cfg.OriginalDst != nil:
		return p.cfg.OriginalDst(c, l.dir)
	}
	return origdst.Get(c)
}

// isLoop reports a connection to a capture listener itself: not
// redirected (its original destination is the listener), or under TPROXY,
// addressed to the listener's port. A listener that does not look for an
// original destination takes connections to itself: no loop.
func (p *Proxy) isLoop(c *net.TCPConn, l *listener, dst netip.AddrPort) bool {
	switch {
	case l.transparent:
		return dst.Port() == l.port
	case !l.useOriginalDst:
		return false
	}
	return dst == addrPort(c.LocalAddr())
}

// dial connects to an endpoint of cl, from the cluster's source address
// if it binds one.
func (p *Proxy) dial(ctx context.Context, dir Direction, cl *cluster, dst netip.AddrPort) (*net.TCPConn, error) {
	if p.cfg.Dial != nil {
		return p.cfg.Dial(ctx, dir, dst)
	}
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	if src := cl.sourceFor(dst); src.IsValid() {
		return p.dialer.DialTCP(ctx, network, netip.AddrPortFrom(src, 0), dst)
	}
	// With no source to bind, DialTCP would still bind to port 0, a slower
	// port choice than connect's own.
	c, err := p.dialer.DialContext(ctx, network, dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// declaredHTTPWait bounds the wait for the first bytes of a connection to
// a port declared HTTP, to tell HTTP/1 from HTTP/2 (a silent one is given
// to the HTTP/1 codec, which waits on).
const declaredHTTPWait = 10 * time.Second
