package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// httpManager is Envoy's HTTP connection manager on a filter chain: it
// reads requests, routes each to a cluster, forwards it over a pooled
// upstream connection and logs it.
type httpManager struct {
	statPrefix string
	routes     *routeConfig
	// rejectHTTP10 answers HTTP/1.0 with 426, as Envoy does unless
	// accept_http_10 is set. The sidecar without a config file accepts
	// HTTP/1.0 (nginx's proxy_pass speaks it), as Istio does with
	// PILOT_HTTP10.
	rejectHTTP10 bool
	// codec is the protocol the manager speaks: ProtocolAny to serve what
	// the client speaks (AUTO), ProtocolHTTP1 for HTTP/1 only.
	codec Protocol
	// generateRequestID adds x-request-id to requests without one.
	generateRequestID bool
	// clientCert handles x-forwarded-client-cert.
	clientCert clientCert
	// upgrades are the Upgrade types (lower case; "connect" for CONNECT)
	// it tunnels; others are answered 403, as Envoy does.
	upgrades map[string]bool
	// idle closes a connection idle between requests; streamIdle bounds a
	// request that moves no byte (stream_idle_timeout). 0 for none.
	idle, streamIdle time.Duration
	logs             []logger
	// clusters are its configuration's, for cluster_header.
	clusters map[string]*cluster
	// requestTimeout bounds the arrival of a request's body, from its
	// head (request_timeout; 0 for none): past it, 408.
	requestTimeout time.Duration
	stats          *hcmStats // http.<stat_prefix>.*, kept across reloads
	// tracer samples, records and exports its requests' spans; nil
	// without tracing.
	tracer *tracing.Tracer
	// mx is its part in Istio's metadata exchange.
	mx mxConfig
}

// done counts a finished request in the manager's stats, and in its
// route's and its cluster's.
func (m *httpManager) done(rt *route, cl *cluster, rec *accesslog.Record) {
	m.stats.done(rec)
	if rt != nil {
		rt.stats.done(rec)
	}
	if cl != nil {
		cl.stats.done(rec)
	}
}

// h1conn is one downstream HTTP/1 connection and the request on it.
type h1conn struct {
	p    *Proxy
	d    *downstream
	hcm  *httpManager
	f    *flow
	src  countingConn // what br reads
	br   *http1.Reader
	req  http1.Request
	resp http1.Response
	body http1.Body // the request's
	rec  accesslog.Record
	// logged says the request's record has been written (a local reply
	// writes its own).
	logged bool
	parsed bool  // a request was read (not a codec error)
	sent   int64 // bytes written to the downstream
	// watch notices a client that leaves while its request waits for the
	// upstream; resetUp, its action, resets that upstream.
	watch   *dialWatch
	resetUp func(error)
	// rt is the request's route, for its response header mutations and
	// retry policy.
	rt *route
	cl *cluster
	// matched is the route the request matched, once past the filters,
	// for its stats and the response headers of the router's own
	// replies: unlike rt, also one that answers directly.
	matched *route
	// routed is the route chosen, whether the filters let the request on
	// or not (its decorator names the span).
	routed *route
	// The request's retries: how many are left, its head and body kept
	// to send again, the endpoints tried, the route's deadline.
	retriesLeft int
	resend      []byte
	resent      bool // resend holds the request's body (maybe empty) for another try
	// kept is a body that did not come whole with its head, kept for
	// retries under a retry policy; keptTry the try that sends it next.
	kept     *keptBody
	keptTry  *bodyTry
	tried    []netip.AddrPort
	deadline time.Time
	// newTarget holds a rewritten request target; location a redirect's.
	newTarget []byte
	location  string
	// filtered are the response headers the filters add (CORS's).
	filtered []headerAdd
	// The request's span, when its manager traces: its context, the
	// headers that carry it on and their values.
	traced      bool
	span        tracing.SpanContext
	traceFields []tracing.Field
	traceVals   [tracing.FieldsSize]byte
	// peer is the workload at the other end, when the metadata exchange
	// names it; peerAsked says an inbound caller sent its own, to be
	// answered with the sidecar's.
	peer      *Workload
	peerAsked bool
	// vals holds the values of headers the proxy adds (x-request-id,
	// x-forwarded-proto, x-envoy-upstream-service-time); the header views
	// point into it.
	vals [96]byte
}

// countingConn reads a connection, counting bytes for the metrics and
// marking activity for the idle sweeper.
type countingConn struct {
	c   sock
	n   int64
	act *atomic.Int64
}

func (cc *countingConn) Read(p []byte) (int, error) {
	n, err := cc.c.Read(p)
	if n > 0 {
		cc.n += int64(n)
		cc.act.Add(int64(n))
	}
	return n, err
}

var h1conns = sync.Pool{New: func() any {
	h := &h1conn{watch: newIdleWatch()}
	h.br = http1.NewReader(&h.src, 0)
	h.resetUp = func(error) {
		if up := h.f.httpUp.Load(); up != nil {
			reset(up.c)
		}
	}
	return h
}}

// serveHTTP serves d's requests until it closes or must be closed; it
// closes d.
func (p *Proxy) serveHTTP(d *downstream, hcm *httpManager) Result {
	h := h1conns.Get().(*h1conn)
	h.p, h.d, h.hcm, h.sent = p, d, hcm, 0
	h.f = &flow{down: d.c, http: true, idle: hcm.idle, stream: hcm.streamIdle}
	h.src = countingConn{c: d.c, act: &h.f.activity}
	h.br.Reset(&h.src)
	p.flows.add(h.f)
	r := ResultOK
	for {
		more, res := h.serveRequest()
		if res != ResultOK {
			r = res
		}
		if !more || p.draining.Load() && h.f.stage.Load() == stageIdle {
			break
		}
	}
	p.flows.remove(h.f)
	d.c.Close()
	d.received, d.sent = d.received+h.src.n, d.sent+h.sent
	if why := h.f.aborted.Load(); why != 0 && r == ResultOK {
		r = Result(why - 1)
	}
	h.p, h.d, h.hcm, h.f, h.src, h.rt, h.cl = nil, nil, nil, nil, countingConn{}, nil, nil
	h.rec = accesslog.Record{}
	h1conns.Put(h)
	return r
}

// serveRequest reads one request and answers it; more says the
// connection may carry another.
func (h *h1conn) serveRequest() (more bool, r Result) {
	h.f.stage.Store(stageIdle)
	if err := h.br.ReadRequest(&h.req); err != nil {
		return false, h.badRequest(err)
	}
	h.f.stage.Store(stageAwaiting)
	h.parsed, h.logged, h.matched, h.routed, h.cl = true, false, nil, nil, nil
	req := &h.req
	h.rec = accesslog.Record{
		Start: time.Now(), Protocol: req.Proto(), Scheme: "http",
		Method: http1.View(req.Method), Path: http1.View(req.Target), Authority: http1.View(req.Host),
		Request: req, DownstreamRemote: h.d.remote, DownstreamLocal: h.d.local, ConnectionID: h.d.id,
		DownstreamPeerURISAN: h.d.peer, DownstreamLocalURISAN: h.d.localURI,
		RequestDuration: -1, ResponseDuration: -1, ResponseTxDuration: -1,
	}
	h.body.Reset(h.br, http1.RequestFraming(req), req.ContentLength)
	h.filtered = nil
	h.addRequestHeaders()
	if tr := h.hcm.tracer; tr != nil {
		h.startSpan(tr)
	}
	if req.Minor == 0 && h.hcm.rejectHTTP10 {
		return h.localReply(426, 0, "http1.http10_not_allowed", "")
	}
	connect := string(req.Method) == "CONNECT"
	if len(req.Upgrade) > 0 && strings.EqualFold(string(req.Upgrade), "h2c") {
		if settings, ok := h.h2cSettings(); ok {
			return false, h.upgradeToH2(settings)
		}
		req.Upgrade = nil // a request with a body, or an HTTP/1-only manager: it goes on as HTTP/1.1
	}
	if (connect || len(req.Upgrade) > 0) && !h.hcm.upgrades[upgradeType(req.Upgrade, connect)] {
		return h.localReply(403, 0, "upgrade_failed", "")
	}
	rt := h.hcm.routes.match(h, req.Host, connect)
	if rt == nil {
		return h.localReply(404, accesslog.NoRouteFound, "route_not_found", "")
	}
	h.rec.RouteName, h.routed = rt.name, rt
	ans, ok := rt.runFilters(h, &h.rec)
	h.filtered = ans.headers
	if ok {
		return h.localReply(ans.code, ans.flags, ans.details, ans.body)
	}
	h.matched = rt // the router's from here: its replies get the route's response headers
	switch {
	case rt.direct != nil:
		return h.localReply(rt.direct.code, 0, "direct_response", rt.direct.body)
	case rt.redirect != nil:
		h.location = rt.redirect.location(req.Target, http1.View(req.Host), matchedPrefix(rt))
		return h.localReply(rt.redirect.code, 0, "redirect", "")
	}
	cl := rt.clusterFor(h, h.hcm.clusters)
	if cl == nil {
		return h.localReply(503, accesslog.NoClusterFound, "cluster_not_found", "")
	}
	h.rec.UpstreamCluster = cl.name
	h.rewrite(rt)
	key, hasKey := rt.hashKey(h, h.d.remote.Addr())
	ep, err := cl.pickKey(h.d.local, key, hasKey)
	if err != nil {
		return h.localReply(503, accesslog.NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream")
	}
	h.rec.UpstreamHost = ep
	h.rt, h.cl = rt, cl
	if len(rt.mirrors) > 0 {
		h.mirrorH1(rt)
	}
	if !acquire(&cl.cb.requests, cl.cb.maxRequests) {
		cl.cb.rqOverflow.Add(1)
		return h.overflow()
	}
	defer cl.cb.requests.Add(-1)
	defer cl.begin(ep)()
	return h.forward(rt, cl, ep)
}

// header is a request header by lower-case name, pseudo-headers included
// (requestView).
func (h *h1conn) header(name string) ([]byte, bool) {
	switch name {
	case ":method":
		return h.req.Method, true
	case ":authority":
		return h.req.Host, len(h.req.Host) > 0
	case ":path":
		return h.req.Target, true
	case ":scheme":
		return schemeHTTP, true
	}
	return h.req.Get(name)
}

func (h *h1conn) target() []byte { return h.req.Target }

func (h *h1conn) downstream() *downstream { return h.d }

// rewrite applies the route's rewrites and header mutations to the
// request: the path (the original kept in x-envoy-original-path, as
// Envoy does), the authority, the headers.
func (h *h1conn) rewrite(rt *route) {
	req := &h.req
	if t, ok := rt.rewritePath(req.Target, h.newTarget[:0]); ok {
		h.newTarget = t
		req.Headers = append(req.Headers, http1.Header{Name: xEnvoyOriginalPath, Value: req.Target})
		req.Target = t
		h.rec.Path = http1.View(t)
	}
	if rt.hostRewrite != "" {
		for i := range req.Headers {
			if strings.EqualFold(http1.View(req.Headers[i].Name), "host") {
				req.Headers[i].Value = rt.hostRewriteB
			}
		}
		req.Host = rt.hostRewriteB
		h.rec.Authority = rt.hostRewrite
	}
	if len(rt.requestAdd) > 0 || len(rt.requestRemove) > 0 {
		applyRequestMutations(req, rt.requestAdd, rt.requestRemove)
	}
}

// matchedPrefix is how much of the path a route's prefix match took.
func matchedPrefix(rt *route) int {
	if rt.separatedPrefix != "" {
		return len(rt.separatedPrefix)
	}
	return len(rt.prefix)
}

// badRequest ends a connection whose next request could not be read:
// nothing to log at a clean end or a peer gone mid-head; a local reply
// for a request the proxy refuses.
func (h *h1conn) badRequest(err error) Result {
	var pe *http1.ProtocolError
	var ve *http1.VersionError
	code, details := 0, ""
	switch {
	case errors.As(err, &pe):
		code, details = pe.Status, "http1.codec_error{"+underscores(pe.Reason)+"}"
	case errors.As(err, &ve):
		code, details = 505, "http1.codec_error{unsupported_version}"
	case errors.Is(err, http1.ErrHeadTooLarge):
		code, details = 431, "http1.headers_too_large"
	case err == io.EOF || errors.Is(err, net.ErrClosed):
		return ResultOK
	default:
		return ResultOK // the peer went away mid-head, or reset
	}
	h.parsed, h.logged = false, false
	h.rec = accesslog.Record{Start: time.Now(), Protocol: "HTTP/1.1", DownstreamRemote: h.d.remote, DownstreamLocal: h.d.local,
		ConnectionID: h.d.id, RequestDuration: -1, ResponseDuration: -1, ResponseTxDuration: -1}
	h.localReply(code, accesslog.DownstreamProtocolError, details, "")
	return ResultOK
}

// upgradeType is the upgrade_configs type a request asks for: its
// Upgrade header in lower case, or "connect".
func upgradeType(upgrade []byte, connect bool) string {
	if connect {
		return "connect"
	}
	return strings.ToLower(string(upgrade))
}

// stale says a reload replaced the configuration this connection came in
// on: its response says Connection: close, so that the client's next
// request takes the new one.
func (h *h1conn) stale() bool {
	return h.d.capture != nil && h.d.capture.lst.Load() != h.d.lst
}

// startSpan begins the request's span: the trace context it came with is
// read, its sampling decided, and the headers that carry it replaced by
// ones naming the sidecar's span as the next hop's parent.
func (h *h1conn) startSpan(tr *tracing.Tracer) {
	req := &h.req
	var d tracing.Decision
	h.span, d = tr.Start(req)
	h.hcm.stats.traced(d.Reason)
	req.Headers = slices.DeleteFunc(req.Headers, func(f http1.Header) bool { return isTraceHeader(f.Name) })
	h.traceFields, _ = h.span.AppendFields(h.traceFields[:0], h.traceVals[:0])
	for _, f := range h.traceFields {
		req.Headers = append(req.Headers, http1.Header{Name: f.Name, Value: f.Value})
	}
	h.traced = true
}

// isTraceHeader says a header carries a trace context the sidecar
// replaces.
func isTraceHeader(name []byte) bool {
	for _, s := range tracing.Strip {
		if len(name) == len(s) && strings.EqualFold(http1.View(name), s) {
			return true
		}
	}
	return false
}

// finishSpan records the request's span, if it is sampled.
func (h *h1conn) finishSpan() {
	if !h.traced {
		return
	}
	h.traced = false
	if !h.span.Sampled {
		return
	}
	r := spanRequest(&h.rec, &h.req, h.rec.Response)
	h.hcm.finishSpan(&h.span, h.d.lst.dir, h.routed, &h.rec, &r)
}

// spanRequest is what a span's tags say of a request, from its record
// and headers.
func spanRequest(rec *accesslog.Record, req, resp accesslog.Headers) tracing.Request {
	get := func(h accesslog.Headers, name string) string {
		if h == nil {
			return ""
		}
		v, _ := h.Get(name)
		return http1.View(v)
	}
	r := tracing.Request{Method: rec.Method, Scheme: rec.Scheme, Authority: rec.Authority, Path: rec.Path, Protocol: rec.Protocol,
		RequestID: get(req, "x-request-id"), UserAgent: get(req, "user-agent"), DownstreamCluster: get(req, "x-envoy-downstream-service-cluster"),
		Status: rec.ResponseCode, Flags: rec.Flags.String(), UpstreamCluster: rec.UpstreamCluster,
		PeerAddress: rec.DownstreamRemote.String(), PeerPrincipal: rec.DownstreamPeerURISAN,
		RequestSize: rec.BytesReceived, ResponseSize: rec.BytesSent}
	if rec.UpstreamHost.IsValid() {
		r.UpstreamAddress = rec.UpstreamHost.String()
	}
	if rec.ResponseCode != 0 {
		if r.GRPCStatus = get(rec.Trailers, "grpc-status"); r.GRPCStatus == "" {
			r.GRPCStatus = get(resp, "grpc-status")
		}
	}
	return r
}
