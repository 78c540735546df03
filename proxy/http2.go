package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// This file is the HTTP connection manager's HTTP/2 side: h2c with prior
// knowledge (the preface, detected) or by an HTTP/1.1 Upgrade: h2c. Each
// stream is a request, routed like an HTTP/1 one and sent upstream in the
// protocol its cluster speaks (the downstream's, by default, as Istio's
// passthrough clusters do): gRPC keeps its streams, trailers and
// grpc-status end to end.

// h2conn is a downstream HTTP/2 connection.
type h2conn struct {
	p   *Proxy
	d   *downstream
	hcm *httpManager
	f   *flow
	rx  atomic.Int64 // bytes from the client
	tx  atomic.Int64 // bytes to it
}

// countedConn counts a downstream connection's bytes for the metrics and
// marks activity for the sweeper.
type countedConn struct {
	sock
	h   *h2conn
	pre []byte // bytes read already (an upgrade's), served first
}

func (c *countedConn) Read(b []byte) (int, error) {
	var n int
	var err error
	if len(c.pre) > 0 {
		n = copy(b, c.pre)
		c.pre = c.pre[n:]
	} else {
		n, err = c.sock.Read(b)
	}
	c.h.rx.Add(int64(n))
	c.h.f.activity.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.sock.Write(b)
	c.h.tx.Add(int64(n))
	c.h.f.activity.Add(int64(n))
	return n, err
}

// h2Server is an HTTP/2 server and the http.Server whose Shutdown sends
// its connections GOAWAY (a drain).
type h2Server struct {
	srv  *http2.Server
	base *http.Server
}

// h2Server is the proxy's HTTP/2 server for an idle timeout (the server
// applies it between streams).
func (p *Proxy) h2Server(idle time.Duration) *h2Server {
	p.h2mu.Lock()
	defer p.h2mu.Unlock()
	if s := p.h2[idle]; s != nil {
		return s
	}
	s := &h2Server{srv: &http2.Server{IdleTimeout: idle, MaxConcurrentStreams: 1000}, base: &http.Server{}}
	_ = http2.ConfigureServer(s.base, s.srv)
	if p.h2 == nil {
		p.h2 = map[time.Duration]*h2Server{}
	}
	p.h2[idle] = s
	return s
}

// goAway tells every HTTP/2 client to finish its streams and open no more
// (the drain has begun).
func (p *Proxy) goAway() {
	p.h2mu.Lock()
	defer p.h2mu.Unlock()
	for _, s := range p.h2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // start the graceful shutdown, do not wait for it
		_ = s.base.Shutdown(ctx)
	}
}

// serveH2 serves d as HTTP/2 until it closes; upgrade is the HTTP/1.1
// request that asked for h2c (with its HTTP2-Settings and what was read
// past it), or nil for prior knowledge. It closes d.
func (p *Proxy) serveH2(d *downstream, hcm *httpManager, upgrade *http.Request, settings, pre []byte) Result {
	h := &h2conn{p: p, d: d, hcm: hcm, f: &flow{down: d.c}}
	p.flows.add(h.f)
	defer p.flows.remove(h.f)
	ctx, cancel := context.WithCancel(p.stopping)
	defer cancel()
	s := p.h2Server(hcm.idle)
	s.srv.ServeConn(&countedConn{sock: d.c, h: h, pre: pre}, &http2.ServeConnOpts{
		Context: ctx, Handler: h, BaseConfig: s.base, UpgradeRequest: upgrade, Settings: settings})
	d.c.Close()
	d.received, d.sent = d.received+h.rx.Load(), d.sent+h.tx.Load()
	if why := h.f.aborted.Load(); why != 0 {
		return Result(why - 1)
	}
	return ResultOK
}

// headerView lets the access log read an http.Header.
type headerView http.Header

func (hv headerView) Get(lowerName string) ([]byte, bool) {
	v, ok := hv[http.CanonicalHeaderKey(lowerName)]
	if !ok || len(v) == 0 {
		return nil, false
	}
	return []byte(v[0]), true
}

// h2stream is one request on an HTTP/2 connection.
type h2stream struct {
	h       *h2conn
	w       http.ResponseWriter
	r       *http.Request
	rec     accesslog.Record
	grpc    bool
	body    countingBody
	kept    *keptBody // the body kept for retries, under a retry policy
	targetB []byte    // the request's target, for matching
	// grpcStatus is the status a fault abort asks for, if any.
	grpcStatus int
	cl         *cluster // the request's cluster, once routed
	rt         *route   // the request's route, once past the filters
	routed     *route   // the route chosen (its decorator names the span)
	// filtered are the response headers the filters add (CORS's).
	filtered []headerAdd
	// span is the stream's span when its manager traces (traced).
	span   tracing.SpanContext
	traced bool
	// peer and peerAsked: see h1conn's.
	peer      *Workload
	peerAsked bool
}

// startSpan begins the stream's span and replaces the headers that carry
// the trace context with ones naming it (see h1conn.startSpan).
func (s *h2stream) startSpan(tr *tracing.Tracer) {
	var d tracing.Decision
	s.span, d = tr.Start(headerView(s.r.Header))
	s.h.hcm.stats.traced(d.Reason)
	for _, name := range tracing.Strip {
		s.r.Header.Del(name)
	}
	fields, _ := s.span.AppendFields(nil, make([]byte, 0, tracing.FieldsSize))
	for _, f := range fields {
		s.r.Header.Set(string(f.Name), string(f.Value))
	}
	s.traced = true
}

// finishSpan records the stream's span, if sampled; status is its
// grpc-status, if any.
func (s *h2stream) finishSpan(resp *http.Response, status []byte) {
	if !s.traced || !s.span.Sampled {
		return
	}
	var respHeaders accesslog.Headers
	if resp != nil {
		respHeaders = headerView(resp.Header)
	}
	r := spanRequest(&s.rec, s.rec.Request, respHeaders)
	r.GRPCStatus = string(status)
	s.h.hcm.finishSpan(&s.span, s.h.d.lst.dir, s.routed, &s.rec, &r)
}

// countingBody counts a request body's bytes as the upstream reads them;
// whole, if set, is called at its end.
type countingBody struct {
	io.ReadCloser
	n     int64
	whole func() bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF && b.whole != nil {
		b.whole()
	}
	return n, err
}

func (h *h2conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &h2stream{h: h, w: w, r: r, grpc: strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")}
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	s.rec = accesslog.Record{Start: time.Now(), Protocol: "HTTP/2", Scheme: "http", Method: r.Method, Path: target,
		Authority: r.Host, Request: headerView(r.Header), DownstreamRemote: h.d.remote, DownstreamLocal: h.d.local,
		ConnectionID: h.d.id, RequestDuration: -1, ResponseDuration: -1, ResponseTxDuration: -1,
		DownstreamPeerURISAN: h.d.peer, DownstreamLocalURISAN: h.d.localURI}
	if r.ProtoMajor == 1 {
		s.rec.Protocol = "HTTP/1.1" // the request that asked for the upgrade
	}
	if h.hcm.generateRequestID && r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", string(appendUUID(nil)))
	}
	if r.Header.Get("X-Forwarded-Proto") == "" {
		r.Header.Set("X-Forwarded-Proto", "http")
	}
	h.hcm.clientCert.applyXFCC2(r.Header, h.d)
	s.takePeerMetadata()
	if tr := h.hcm.tracer; tr != nil {
		s.startSpan(tr)
	}
	if r.Method == http.MethodConnect {
		s.localReply(403, 0, "upgrade_failed", "")
		return
	}
	s.targetB = []byte(target)
	rt := h.hcm.routes.match(s, []byte(r.Host), false)
	if rt == nil {
		s.localReply(404, accesslog.NoRouteFound, "route_not_found", "")
		return
	}
	s.rec.RouteName, s.routed = rt.name, rt
	ans, ok := rt.runFilters(s, &s.rec)
	s.filtered = ans.headers
	if ok {
		if ans.grpcStatus >= 0 && s.grpc && ans.flags == accesslog.FaultInjected {
			s.grpcStatus = ans.grpcStatus
		}
		s.localReply(ans.code, ans.flags, ans.details, ans.body)
		return
	}
	s.rt = rt // the router's from here: its replies get the route's response headers
	switch {
	case rt.direct != nil:
		s.localReply(rt.direct.code, 0, "direct_response", rt.direct.body)
		return
	case rt.redirect != nil:
		s.w.Header().Set("Location", rt.redirect.location(s.targetB, r.Host, matchedPrefix(rt)))
		s.localReply(rt.redirect.code, 0, "redirect", "")
		return
	}
	cl := rt.clusterFor(s, h.hcm.clusters)
	if cl == nil {
		s.localReply(503, accesslog.NoClusterFound, "cluster_not_found", "")
		return
	}
	s.rec.UpstreamCluster = cl.name
	s.rewrite(rt)
	key, hasKey := rt.hashKey(s, h.d.remote.Addr())
	ep, err := cl.pickKey(h.d.local, key, hasKey)
	if err != nil {
		s.localReply(503, accesslog.NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream")
		return
	}
	s.rec.UpstreamHost = ep
	s.cl = cl
	if r.ContentLength == 0 {
		for _, m := range rt.mirrors { // a request with a body is not copied
			h.p.shadow(m, h.d.lst.dir, r.Method, target, r.Host, r.Header.Clone(), nil)
		}
	}
	if !acquire(&cl.cb.requests, cl.cb.maxRequests) {
		cl.cb.rqOverflow.Add(1)
		s.overflow()
		return
	}
	defer cl.cb.requests.Add(-1)
	defer cl.begin(ep)()
	s.forward(rt, cl, ep)
}

// header is a request header by lower-case name (requestView).
func (s *h2stream) header(name string) ([]byte, bool) {
	switch name {
	case ":method":
		return []byte(s.r.Method), true
	case ":authority":
		return []byte(s.r.Host), s.r.Host != ""
	case ":path":
		return s.targetB, true
	case ":scheme":
		return schemeHTTP, true
	}
	v := s.r.Header.Values(name)
	if len(v) == 0 {
		return nil, false
	}
	return []byte(v[0]), true
}

func (s *h2stream) target() []byte { return s.targetB }

func (s *h2stream) downstream() *downstream { return s.h.d }

// rewrite applies the route's rewrites and header mutations to the
// stream's request.
func (s *h2stream) rewrite(rt *route) {
	r := s.r
	if t, ok := rt.rewritePath(s.targetB, nil); ok {
		r.Header.Set("X-Envoy-Original-Path", string(s.targetB))
		u, err := url.ParseRequestURI(string(t))
		if err == nil {
			r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
		}
		s.rec.Path = string(t)
	}
	if rt.hostRewrite != "" {
		r.Host = rt.hostRewrite
		s.rec.Authority = rt.hostRewrite
	}
	applyHeaderMutations(r.Header, rt.requestAdd, rt.requestRemove)
}

// forward sends the stream's request to ep and relays the response,
// trailers and all.
func (s *h2stream) forward(rt *route, cl *cluster, ep netip.AddrPort) {
	r := s.r
	ctx := r.Context()
	if t := rt.timeoutFor(s); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t, errRouteTimeout)
		defer cancel()
	}
	stopRequestTimer := func() bool { return false }
	if t := s.h.hcm.requestTimeout; t > 0 && r.ContentLength != 0 {
		// request_timeout: the body must be whole in time, unless the
		// response starts first.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		timer := time.AfterFunc(time.Until(s.rec.Start.Add(t)), func() { cancel(errRequestTimeout) })
		stopRequestTimer = timer.Stop
		s.body.whole = timer.Stop
		defer timer.Stop()
	}
	if r.ContentLength != 0 {
		// A timeout ends the body too: the upstream's writer may be
		// waiting on a client that sends no more.
		defer context.AfterFunc(ctx, func() { r.Body.Close() })()
		if rt.retry != nil {
			s.kept = newKeptBody(r.Body, rt.bodyLimit, r.ContentLength, s.body.whole)
			defer s.kept.stop()
		}
	}
	removeHopByHop(r.Header)
	s.sendPeerMetadata(cl)
	resp, sentAt, err := s.attempts(ctx, rt, cl, ep)
	stopRequestTimer()
	if err != nil {
		s.upstreamFailed(ctx, err)
		return
	}
	defer resp.Body.Close()
	s.rec.ResponseDuration = time.Since(s.rec.Start)
	hdr := s.w.Header()
	for k, v := range resp.Header {
		hdr[k] = v
	}
	removeHopByHop(hdr)
	s.answerPeerMetadata(hdr)
	applyHeaderMutations(hdr, rt.responseAdd, rt.responseRemove)
	applyHeaderMutations(hdr, s.filtered, nil)
	hdr.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(time.Since(sentAt).Milliseconds(), 10))
	s.w.WriteHeader(resp.StatusCode)
	s.rec.ResponseCode = resp.StatusCode
	s.rec.Response = headerView(resp.Header)
	s.rec.ResponseCodeDetails = "via_upstream"
	rc := http.NewResponseController(s.w)
	buf := getBuf()
	n, copyErr := streamBody(s.w, rc, resp.Body, buf.b[:cap(buf.b)], resp.ContentLength)
	putBuf(buf)
	s.rec.BytesSent = n
	s.rec.ResponseTxDuration = time.Since(s.rec.Start) - s.rec.ResponseDuration
	if copyErr != nil {
		s.rec.Flags |= accesslog.UpstreamConnectionTermination
		s.rec.ResponseCodeDetails = "upstream_reset_after_response_started{connection_termination}"
		if ctx.Err() != nil && r.Context().Err() != nil {
			s.rec.Flags = accesslog.DownstreamConnectionTermination
			s.rec.ResponseCodeDetails = "downstream_remote_disconnect"
		}
		s.log(resp)
		panic(http.ErrAbortHandler) // resets the stream: the client must not take it for whole
	}
	for k, v := range resp.Trailer {
		hdr[http.TrailerPrefix+k] = v
	}
	s.rec.Trailers = headerView(resp.Trailer)
	s.log(resp)
}

// attempts sends the request, trying again as the route's retry policy
// says; under a policy the request's body is kept for the next try up to
// the route's bound, past which the try that has it is the last. The
// response is the last attempt's.
func (s *h2stream) attempts(ctx context.Context, rt *route, cl *cluster, ep netip.AddrPort) (*http.Response, time.Time, error) {
	r, h, pol := s.r, s.h, rt.retry
	left := 0
	if pol != nil {
		left = pol.numRetries
	}
	kept := s.kept
	body, _ := kept.restart()
	var tried []netip.AddrPort
	for attempt := 1; ; attempt++ {
		s.rec.AttemptCount = attempt
		tried = append(tried, ep)
		// The stream owns r: its header map and URL go upstream as they are.
		u := *r.URL
		u.Scheme, u.Host = "http", ep.String()
		tryCtx, cancel := context.WithCancelCause(ctx)
		var perTry *time.Timer
		if pol != nil && pol.perTry > 0 {
			perTry = time.AfterFunc(pol.perTry, func() { cancel(errPerTryTimeout) })
		}
		var local netip.AddrPort
		out := (&http.Request{Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: r.Header,
			ContentLength: r.ContentLength, Host: r.Host, Trailer: r.Trailer}).WithContext(withLocalAddr(tryCtx, &local))
		switch {
		case kept != nil:
			out.Body = body
			// A try given up ends its body: its transport may wait for
			// that before it returns.
			defer context.AfterFunc(tryCtx, body.end)()
		case r.ContentLength != 0:
			s.body.ReadCloser = r.Body
			out.Body = &s.body
		}
		if rt.includeAttemptCount {
			r.Header.Set("X-Envoy-Attempt-Count", strconv.Itoa(attempt))
		}
		sentAt := time.Now()
		cl.stats.try()
		rt.stats.try()
		if attempt > 1 {
			cl.stats.retried()
			rt.stats.retried()
		}
		resp, err := cl.transport(h.p, h.d.lst.dir, s.h2Upstream(cl)).RoundTrip(out)
		if perTry != nil {
			perTry.Stop()
		}
		s.rec.UpstreamLocal, s.rec.BytesReceived = local, s.body.n
		if kept != nil {
			s.rec.BytesReceived = kept.received()
		}
		switch {
		case err == nil:
			cl.stats.response(resp.StatusCode)
			rt.stats.response(resp.StatusCode)
			cl.reportAddr(ep, resp.StatusCode, false)
		case ctx.Err() == nil && !errors.Is(err, errOverflow):
			cl.reportAddr(ep, 0, true)
		}
		retry := false
		switch {
		case err != nil && pol != nil && ctx.Err() == nil:
			f := failReset
			var op *net.OpError
			if errors.Is(context.Cause(tryCtx), errPerTryTimeout) {
				f = failPerTry
			} else if errors.As(err, &op) && op.Op == "dial" {
				f = failConnect
			}
			retry = pol.retriesFailure(f)
		case err == nil && pol != nil:
			grpc := resp.Header.Get("Grpc-Status")
			retry = pol.retriesStatus(resp.StatusCode, []byte(grpc)) || pol.retriesHeaders(headerView(resp.Header))
		}
		if retry && left > 0 {
			if nextBody, ok := takeRetry(cl, rt.stats, kept); ok {
				if resp != nil {
					resp.Body.Close()
				}
				cancel(nil)
				left--
				pol.backoff(attempt)
				next, perr := pol.repick(cl, h.d.local, tried)
				cl.cb.retries.Add(-1)
				if perr != nil {
					return nil, sentAt, errNoHealthyUpstream
				}
				ep, body = next, nextBody
				s.rec.UpstreamHost = ep
				continue
			}
		}
		if retry {
			s.rec.Flags |= accesslog.UpstreamRetryLimitExceeded
		}
		if err != nil {
			cancel(nil)
			if errors.Is(context.Cause(tryCtx), errPerTryTimeout) {
				err = errPerTryTimeout
			}
			return nil, sentAt, err
		}
		context.AfterFunc(ctx, func() { cancel(nil) }) // the try's context lives as long as the stream's
		return resp, sentAt, nil
	}
}

// errPerTryTimeout ends an attempt past its per_try_timeout.
var errPerTryTimeout = errors.New("upstream per-try timeout")

// errRouteTimeout is the cause of a request's context past its route's
// timeout.
var errRouteTimeout = errors.New("upstream request timeout")

// errRequestTimeout is the cause of a request's context whose body did
// not arrive within the connection manager's request_timeout.
var errRequestTimeout = errors.New("request timeout")

// streamBody copies an upstream body to the client, flushing each read
// so that a stream (gRPC's, server-sent events) flows as it comes; the
// last bytes of a body of known length are not flushed, they go out with
// the end of the stream.
func streamBody(w io.Writer, rc *http.ResponseController, body io.Reader, buf []byte, length int64) (int64, error) {
	var n int64
	for {
		m, err := body.Read(buf)
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
			if n != length {
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// h2Upstream says whether the request goes upstream as HTTP/2: as the
// cluster's protocol options say, else as it came.
func (s *h2stream) h2Upstream(cl *cluster) bool {
	return cl.upstreamProtocol == upstreamDownstream && s.r.ProtoMajor == 2
}

// upstreamFailed answers a request that got no response.
func (s *h2stream) upstreamFailed(ctx context.Context, err error) {
	var op *net.OpError
	switch {
	case s.r.Context().Err() != nil:
		s.rec.Flags |= accesslog.DownstreamConnectionTermination
		s.rec.ResponseCodeDetails = "downstream_remote_disconnect"
		s.log(nil)
	case errors.Is(err, errOverflow):
		s.overflow()
	case errors.Is(err, errNoHealthyUpstream):
		s.localReply(503, accesslog.NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream")
	case errors.Is(context.Cause(ctx), errRequestTimeout):
		s.localReply(408, 0, "request_overall_timeout", "request timeout")
	case errors.Is(context.Cause(ctx), errRouteTimeout), errors.Is(err, errPerTryTimeout):
		s.cl.stats.timedOut()
		s.rt.stats.timedOut()
		s.localReply(504, accesslog.UpstreamRequestTimeout, "upstream_response_timeout", "upstream request timeout")
	case errors.As(err, &op) && op.Op == "dial":
		detail := op.Err.Error()
		s.rec.UpstreamFailureReason = underscores(detail)
		s.localReply(503, accesslog.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}",
			"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: "+detail)
	default:
		s.localReply(503, accesslog.UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}",
			"upstream connect error or disconnect/reset before headers. reset reason: connection termination")
	}
}

// overflow answers a stream a circuit breaker turned away.
func (s *h2stream) overflow() {
	s.localReply(503, accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}",
		"upstream connect error or disconnect/reset before headers. reset reason: overflow")
}

// localReply answers the stream itself: for gRPC as Envoy does, a
// trailers-only response (HTTP 200) whose grpc-status says why.
func (s *h2stream) localReply(code int, flags accesslog.Flags, details, body string) {
	hdr := s.w.Header()
	applyHeaderMutations(hdr, s.filtered, nil)
	if s.rt != nil { // the router's reply (a direct response, say): as Envoy, with the route's response headers
		applyHeaderMutations(hdr, s.rt.responseAdd, nil)
	}
	hdr.Set("Server", "shunt")
	s.rec.Flags |= flags
	s.rec.ResponseCodeDetails = details
	if s.grpc {
		hdr.Set("Content-Type", "application/grpc")
		status := grpcStatusOf(code)
		if s.grpcStatus > 0 {
			status = s.grpcStatus
		}
		hdr.Set("Grpc-Status", strconv.Itoa(status))
		if body == "" {
			body = http.StatusText(code)
		}
		hdr.Set("Grpc-Message", body)
		s.w.WriteHeader(200)
		s.rec.ResponseCode = 200
		s.rec.Response = headerView(hdr)
		s.log(nil)
		return
	}
	if body != "" {
		hdr.Set("Content-Type", "text/plain")
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	s.w.WriteHeader(code)
	if s.r.Method != http.MethodHead {
		_, _ = io.WriteString(s.w, body)
	}
	s.rec.ResponseCode = code
	s.rec.BytesSent = int64(len(body))
	s.log(nil)
}

// grpcStatusOf maps an HTTP status to gRPC's, as gRPC's spec (and Envoy)
// do.
func grpcStatusOf(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// log counts the stream in Istio's metrics and writes its record.
func (s *h2stream) log(resp *http.Response) {
	s.rec.Duration = time.Since(s.rec.Start)
	var status []byte
	if resp != nil && s.grpc {
		v := resp.Trailer.Get("Grpc-Status")
		if v == "" {
			v = resp.Header.Get("Grpc-Status")
		}
		status = []byte(v)
	} else if s.grpc {
		status = []byte(s.w.Header().Get("Grpc-Status"))
	}
	s.h.p.istio.request(s.h.d.lst.dir, &s.rec, status, s.grpc, s.peer)
	s.h.hcm.done(s.rt, s.cl, &s.rec)
	writeAll(s.h.hcm.logs, &s.rec)
	s.finishSpan(resp, status)
}

// hopByHop are the headers that concern one connection only (RFC 9110
// 7.6.1), and HTTP/2 forbids.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
	if te := h.Get("Te"); te != "" && !strings.EqualFold(te, "trailers") {
		h.Del("Te")
	}
}

// h2cSettings are the HTTP2-Settings of a request that asks to upgrade to
// h2c, when the manager may take it: HTTP/1.1, no body (the client sends
// its preface only after the 101), a codec that is not HTTP/1 only.
func (h *h1conn) h2cSettings() ([]byte, bool) {
	req := &h.req
	v, ok := req.Get("http2-settings")
	if !ok || req.Minor != 1 || h.hcm.codec == ProtocolHTTP1 || h.body.Framing() != http1.NoBody {
		return nil, false
	}
	settings, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(string(v), "="))
	return settings, err == nil
}

// upgradeToH2 answers 101 and serves the connection as HTTP/2, the
// upgrading request its first stream.
func (h *h1conn) upgradeToH2(settings []byte) Result {
	req := &h.req
	target := string(req.Target)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		_, r := h.localReply(400, accesslog.DownstreamProtocolError, "http1.codec_error{invalid_target}", "")
		return r
	}
	hr := &http.Request{Method: string(req.Method), URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Host: string(req.Host), Body: http.NoBody}
	for _, hd := range req.Headers {
		name := strings.ToLower(string(hd.Name))
		if req.HopByHop(hd.Name) || name == "host" || name == "http2-settings" || name == "upgrade" || name == "connection" {
			continue
		}
		hr.Header.Add(name, string(hd.Value))
	}
	if !h.write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")) {
		return ResultOK
	}
	pre := append([]byte(nil), h.br.Peek()...)
	h.br.Discard(len(pre))
	h.logged = true // the stream logs itself
	h.p.flows.remove(h.f)
	defer h.p.flows.add(h.f)
	return h.p.serveH2(h.d, h.hcm, hr, settings, pre)
}
