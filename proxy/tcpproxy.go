package proxy

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// tcpProxy is Envoy's tcp_proxy filter: connect to the cluster and move
// bytes both ways until both sides are done.
type tcpProxy struct {
	statPrefix string
	cluster    *cluster
	// weighted_clusters: a cluster picked by weight per connection.
	weighted    []weightedCluster
	totalWeight uint64
	idle        time.Duration // idle_timeout: no byte either way for this long closes it; 0 for none
	logs        []logger
}

// proxyTCP runs d through t and logs it; it closes d.
func (p *Proxy) proxyTCP(d *downstream, t *tcpProxy) Result {
	rec := d.record()
	cl := t.cluster
	if len(t.weighted) > 0 {
		cl = pickWeighted(t.weighted, t.totalWeight)
	}
	rec.UpstreamCluster = cl.name
	r := p.forwardTCP(d, t, cl, &rec)
	if rec.Flags == 0 {
		rec.Flags = r.flags(false)
	}
	if rec.TerminationDetails == "" {
		rec.TerminationDetails = terminationDetails(r, "")
	}
	rec.Duration = time.Since(d.start)
	d.received, d.sent = rec.BytesReceived, rec.BytesSent
	writeAll(t.logs, &rec)
	return r
}

func (p *Proxy) forwardTCP(d *downstream, t *tcpProxy, cl *cluster, rec *accesslog.Record) Result {
	ep, err := cl.pick(d.local)
	if err != nil {
		reset(d.c)
		return ResultNoHealthyUpstream
	}
	rec.UpstreamHost = ep
	if !cl.cb.newConnection() {
		reset(d.c)
		return ResultUpstreamOverflow
	}
	defer cl.cb.connections.Add(-1)
	up, r, detail := p.connect(d, cl, ep, true, ProtocolTCP)
	if up == nil {
		reset(d.c)
		rec.UpstreamFailureReason = detail
		if r != ResultDownstreamClosed && r != ResultDrained {
			cl.stats.cxConnectFail.Add(1)
		}
		return r
	}
	cl.stats.cxTotal.Add(1)
	rec.UpstreamLocal = addrPort(up.LocalAddr())
	pr := principals{d.peer, d.localURI}
	f := &flow{down: d.c, up: up, tcp: p.istio.tcp(d.lst.dir, cl.name, 0, pr), idle: t.idle}
	f.tcp.opened.Inc()
	p.flows.add(f)
	r = p.pump(f, rec)
	p.flows.remove(f) // the reporter is done with it
	if r != ResultOK && rec.Flags == 0 {
		rec.Flags = r.flags(false)
	}
	end := p.istio.tcp(d.lst.dir, cl.name, rec.Flags, pr)
	f.reportTCP(end)
	end.closed.Inc()
	return r
}

// connect dials ep for d, giving up when d goes away (if watch: when
// nothing else reads d) or the drain ends, and originates the TLS the
// endpoint's transport socket says, offering ALPN for proto;
// on failure it returns nil, the result, and the error for the log
// (Envoy's upstream transport failure reason).
func (p *Proxy) connect(d *downstream, cl *cluster, ep netip.AddrPort, watch bool, proto Protocol) (sock, Result, string) {
	ctx, cancel := context.WithCancelCause(p.stopping)
	defer cancel(nil)
	ctx, cancelTimeout := cl.dialContext(ctx)
	defer cancelTimeout()
	var w *dialWatch
	if watch {
		w = watchDownstream(d.tcp, cancel)
	}
	up, err := p.dial(ctx, d.lst.dir, cl, ep)
	if t := cl.tlsFor(ep); err == nil && t != nil {
		s, terr := p.tlsClient(ctx, up, t, t.alpnFor(proto))
		if terr == nil {
			gone := w != nil && w.stop()
			if gone {
				reset(s)
				return nil, ResultDownstreamClosed, errDownstreamGone.Error()
			}
			return s, ResultOK, ""
		}
		reset(up)
		err = terr
	}
	gone := w != nil && w.stop()
	if err == nil {
		return up, ResultOK, ""
	}
	r := connectResult(err)
	switch cause := context.Cause(ctx); {
	case gone || errors.Is(cause, errDownstreamGone):
		r = ResultDownstreamClosed
	case errors.Is(cause, errDrainEnded):
		r = ResultDrained
	case errors.Is(cause, context.DeadlineExceeded):
		r = ResultConnectTimeout
	}
	p.log.Debug("upstream connect failed", "direction", d.lst.dir, "to", ep, "result", r, "err", err)
	var tf *tlsFailure
	if errors.As(err, &tf) {
		return nil, r, tf.reason()
	}
	return nil, r, err.Error()
}
