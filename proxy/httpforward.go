package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
)

// outcome is how one exchange with an upstream connection ended.
type outcome struct {
	more  bool // the downstream connection may carry another request
	reuse bool // the upstream connection goes back to its pool
	retry bool // a stale pooled connection: try again on a fresh one
	// policyRetry: the route's retry policy tries again (the response or
	// failure is not the client's).
	policyRetry bool
	result      Result
}

// forward sends the request to ep over a pooled connection, or a new one,
// and relays the response. A pooled connection the upstream had closed is
// replaced, once, for a request that is safe to send again.
func (h *h1conn) forward(rt *route, cl *cluster, ep netip.AddrPort) (more bool, r Result) {
	defer func() {
		if h.kept != nil && !h.finishKept() {
			more = false // the body was not read to its end
		}
	}()
	pol := rt.retry
	h.retriesLeft, h.resend, h.resent, h.tried = 0, h.resend[:0], false, h.tried[:0]
	if pol != nil {
		h.retriesLeft = pol.numRetries
	}
	h.deadline = time.Time{}
	if t := rt.timeoutFor(h); t > 0 {
		h.deadline = h.rec.Start.Add(t)
	}
	if rt.idleTimeout > 0 {
		h.f.stream = rt.idleTimeout
		defer func() { h.f.stream = h.hcm.streamIdle }()
	}
	pl := cl.pool(ep)
	retries := 0
	for attempt := 1; ; attempt++ {
		h.rec.AttemptCount = attempt
		h.tried = append(h.tried, ep)
		uc := pl.get()
		if uc == nil {
			var r Result
			var detail string
			if uc, r, detail = h.dialUpstream(cl, ep); uc == nil {
				pl.drop(time.Now())
				if r == ResultUpstreamOverflow {
					return h.overflow()
				}
				if r != ResultDownstreamClosed && r != ResultDrained {
					cl.reportAddr(ep, 0, true)
				}
				connectFailure := r != ResultDownstreamClosed && r != ResultDrained
				if connectFailure && pol != nil && pol.retriesFailure(failConnect) {
					if h.retriesLeft > 0 && acquireRetry(cl, rt.stats) { // nothing was sent: the request is whole
						cl.stats.retried()
						rt.stats.retried()
						h.retriesLeft--
						retries++
						ep, pl = h.nextEndpoint(pol, cl, retries)
						cl.cb.retries.Add(-1)
						if pl != nil {
							continue
						}
					}
					h.rec.Flags |= accesslog.UpstreamRetryLimitExceeded
				}
				return h.connectFailed(r, detail)
			}
		}
		h.rec.UpstreamLocal = uc.local
		cl.stats.try()
		rt.stats.try()
		o := h.exchange(uc, rt)
		cl.stats.response(h.resp.Code)
		rt.stats.response(h.resp.Code)
		if cl.outlier != nil && !o.retry {
			cl.reportAddr(ep, h.resp.Code, h.resp.Code == 0 && o.result != ResultDownstreamClosed)
		}
		if now := time.Now(); o.reuse {
			pl.put(uc, now)
		} else {
			pl.closeConn(uc)
			pl.drop(now)
		}
		switch {
		case o.retry && attempt == 1:
			continue // a stale pooled connection
		case o.policyRetry:
			cl.stats.retried()
			rt.stats.retried()
			h.retriesLeft--
			retries++
			ep, pl = h.nextEndpoint(pol, cl, retries)
			cl.cb.retries.Add(-1) // the retry has its endpoint; it is a request like the others now
			if pl != nil {
				continue
			}
			return h.localReply(503, accesslog.NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream")
		}
		return o.more, o.result
	}
}

// takeRetry takes a retry of the request, if it has retries left, the
// circuit breakers allow one, and its body can be sent again: all of it
// was in the try's first write (inline), or it is kept, within its bound
// (and then starts over for the next try).
func (h *h1conn) takeRetry(inline bool) bool {
	if h.retriesLeft <= 0 || !inline && h.kept == nil {
		return false
	}
	t, ok := takeRetry(h.cl, h.rt.stats, h.kept)
	if ok && h.kept != nil {
		h.keptTry = t
	}
	return ok
}

// finishKept ends the request's kept body, stopping a read of the client
// still under way; it says whether the body was read to its end (the
// connection may carry another request).
func (h *h1conn) finishKept() bool {
	whole := h.kept.finish(func() { _ = h.d.c.SetReadDeadline(time.Now()) })
	if whole {
		_ = h.d.c.SetReadDeadline(time.Time{})
	}
	h.kept, h.keptTry = nil, nil
	return whole
}

// nextEndpoint waits out the retry back-off and picks the endpoint for
// retry n; nil pool when the cluster has none left.
func (h *h1conn) nextEndpoint(pol *retryPolicy, cl *cluster, n int) (netip.AddrPort, *pool) {
	pol.backoff(n)
	ep, err := pol.repick(cl, h.d.local, h.tried)
	if err != nil {
		return ep, nil
	}
	h.rec.UpstreamHost = ep
	return ep, cl.pool(ep)
}

// dialUpstream opens a new connection to ep, within the cluster's
// max_pending_requests (requests waiting for a connection) and
// max_connections.
func (h *h1conn) dialUpstream(cl *cluster, ep netip.AddrPort) (*upstreamConn, Result, string) {
	if !acquire(&cl.cb.pending, cl.cb.maxPending) {
		cl.cb.rqOverflow.Add(1)
		return nil, ResultUpstreamOverflow, ""
	}
	defer cl.cb.pending.Add(-1)
	if !cl.cb.newConnection() {
		return nil, ResultUpstreamOverflow, ""
	}
	// A kept body's reader watches the client already (and must not
	// have its reads cut short by the watch's end).
	c, r, detail := h.p.connect(h.d, cl, ep, h.kept == nil, ProtocolHTTP1)
	if c == nil {
		cl.cb.connections.Add(-1)
		if r != ResultDownstreamClosed && r != ResultDrained {
			cl.stats.cxConnectFail.Add(1)
		}
		return nil, r, detail
	}
	cl.stats.cxTotal.Add(1)
	uc := &upstreamConn{c: c, local: addrPort(c.LocalAddr())}
	uc.src.c = c
	uc.r = http1.NewReader(&uc.src, 0)
	return uc, ResultOK, ""
}

// overflow answers a request a circuit breaker turned away, as Envoy
// does.
func (h *h1conn) overflow() (bool, Result) {
	return h.localReply(503, accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}",
		"upstream connect error or disconnect/reset before headers. reset reason: overflow")
}

// connectFailed answers a request whose upstream could not be reached.
func (h *h1conn) connectFailed(r Result, detail string) (bool, Result) {
	switch r {
	case ResultDownstreamClosed:
		h.rec.Flags |= accesslog.DownstreamConnectionTermination
		h.rec.ResponseCodeDetails = "downstream_remote_disconnect"
		h.log()
		return false, r
	case ResultDrained:
		h.rec.ResponseCodeDetails = "drained"
		h.log()
		return false, r
	}
	h.rec.UpstreamFailureReason = underscores(detail)
	return h.localReply(503, accesslog.UpstreamConnectionFailure,
		"upstream_reset_before_response_started{connection_failure}",
		"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: "+detail)
}

// safeToRetry: RFC 9110's safe methods, which a client expects may be
// sent more than once.
func safeToRetry(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// exchange sends the request on uc and relays the response.
func (h *h1conn) exchange(uc *upstreamConn, rt *route) outcome {
	h.logged = false
	h.resp.Code = 0
	req := &h.req
	uc.src.act = &h.f.activity
	h.f.httpUp.Store(uc)
	defer h.f.httpUp.Store(nil)
	buf := getBuf()
	defer putBuf(buf)

	if req.Expect100 && h.body.Framing() != http1.NoBody && h.kept == nil {
		// Envoy's default: the proxy says continue itself.
		if !h.write([]byte("HTTP/1.1 100 Continue\r\n\r\n")) {
			return h.downstreamGone()
		}
	}
	// The head is written for each try (its x-envoy-attempt-count may
	// differ); a body that came whole with it is kept for the next try.
	out, inline := h.appendUpstreamHead(buf.b[:0]), true
	switch {
	case h.rec.AttemptCount > 1 && h.resent:
		out = append(out, h.resend...)
	case h.kept != nil:
		inline = false // a retry of a kept body
	default:
		head := len(out)
		out, inline = h.inlineBody(out)
		switch {
		case inline:
			// Kept for another try: the retry policy's, or the one a stale
			// pooled connection gets.
			h.resend, h.resent = append(h.resend[:0], out[head:]...), true
		case rt.retry != nil && h.retriesLeft > 0:
			h.kept = newKeptBody(&h.body, rt.bodyLimit, h.req.ContentLength, nil)
			h.keptTry, _ = h.kept.restart()
		}
	}
	sentAt := time.Now()
	if d := rt.retry.tryDeadline(sentAt, h.deadline); !d.IsZero() {
		_ = uc.c.SetReadDeadline(d)
		defer uc.c.SetReadDeadline(time.Time{})
	}
	if _, err := uc.c.Write(out); err != nil {
		return h.upstreamGone(uc, inline, err, false)
	}
	var body *pendingBody
	if inline {
		h.rec.RequestDuration = time.Since(h.rec.Start)
	} else {
		if t := h.hcm.requestTimeout; t > 0 {
			// request_timeout: the rest of the body must arrive in time.
			_ = h.d.c.SetReadDeadline(h.rec.Start.Add(t))
			defer h.d.c.SetReadDeadline(time.Time{})
		}
		var src io.Reader = &h.body
		if h.kept != nil {
			src = h.keptTry
		}
		body = h.startBody(uc, src)
	}
	o := h.awaitResponse(uc, inline, body, sentAt)
	if o.result == ResultOK && !o.retry && !o.policyRetry && h.resp.Code != 0 {
		if pol := rt.retry; pol != nil && h.resp.Code >= 200 {
			grpc, _ := h.resp.Get("grpc-status")
			if pol.retriesStatus(h.resp.Code, grpc) || pol.retriesHeaders(&h.resp) {
				if h.takeRetry(inline) {
					return outcome{policyRetry: true} // the response is dropped with its connection
				}
				h.rec.Flags |= accesslog.UpstreamRetryLimitExceeded
			}
		}
		o = h.respond(uc, buf, sentAt, inline)
	}
	if body != nil && !o.policyRetry {
		// (A retry's body is kept: the try given up has ended its reading
		// of it, and its copy ends with the upstream connection.)
		o = h.joinBody(body, o)
	}
	if !o.retry && !o.policyRetry {
		h.log()
	}
	return o
}

// awaitResponse reads the response head, skipping 100 Continue (the
// proxy sent its own) and relaying other 1xx to an HTTP/1.1 client.
func (h *h1conn) awaitResponse(uc *upstreamConn, inline bool, body *pendingBody, sentAt time.Time) outcome {
	var w *dialWatch
	if inline {
		// Nothing reads the client while the upstream thinks: watch it,
		// so a client that gives up stops the upstream too.
		w = h.watch
		w.rearm(h.d.tcp, h.resetUp)
	}
	for {
		err := uc.r.ReadResponse(&h.resp)
		if err != nil {
			gone := w != nil && w.stop()
			if res, ok := body.poll(); ok && res.downstream != nil {
				if errors.Is(res.downstream, os.ErrDeadlineExceeded) {
					h.resp.Code = 0
					h.localReply(408, 0, "request_overall_timeout", "request timeout")
					return outcome{}
				}
				gone = true // the client left mid-body; the upstream was reset for it
			}
			h.resp.Code = 0
			return h.upstreamGone(uc, inline, err, gone)
		}
		if h.resp.Code >= 200 || h.resp.Code == 101 {
			break
		}
		if h.resp.Code != 100 && h.req.Minor == 1 {
			if !h.write(h.appendDownstreamHead(nil, -1, false, false)) {
				break
			}
		}
	}
	if w != nil {
		w.stop()
	}
	h.f.stage.Store(stageResponding)
	h.rec.ResponseDuration = time.Since(h.rec.Start)
	return outcome{result: ResultOK}
}

// upstreamGone handles an upstream connection that failed before its
// response: a stale pooled connection is retried, when the request is
// safe to send again and all of it was in the failed write; otherwise
// the client is answered with why (or, if it left, nothing).
func (h *h1conn) upstreamGone(uc *upstreamConn, inline bool, err error, downstreamLeft bool) outcome {
	stale := uc.reused && inline && uc.r.Buffered() == 0 &&
		(err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
	if stale && safeToRetry(h.req.Method) {
		return outcome{retry: true}
	}
	if pol := h.rt.retry; pol != nil && !downstreamLeft && h.f.aborted.Load() == 0 {
		f := failReset
		if errors.Is(err, os.ErrDeadlineExceeded) {
			f = failPerTry
			if !h.deadline.IsZero() && !time.Now().Before(h.deadline) {
				f = 255 // the route's own timeout: not retried
			}
		}
		if f != 255 && pol.retriesFailure(f) {
			if h.takeRetry(inline) {
				return outcome{policyRetry: true}
			}
			h.rec.Flags |= accesslog.UpstreamRetryLimitExceeded
		}
	}
	var pe *http1.ProtocolError
	switch why := h.f.aborted.Load(); {
	case downstreamLeft:
		return h.downstreamGone()
	case why == uint32(ResultDrained)+1:
		h.rec.ResponseCodeDetails = "drained"
		return outcome{result: ResultDrained}
	case why == uint32(ResultIdleTimeout)+1:
		h.localReply(408, accesslog.StreamIdleTimeout, "stream_idle_timeout", "stream timeout")
		return outcome{result: ResultIdleTimeout}
	case errors.Is(err, os.ErrDeadlineExceeded):
		h.cl.stats.timedOut()
		h.rt.stats.timedOut()
		h.localReply(504, accesslog.UpstreamRequestTimeout, "upstream_response_timeout", "upstream request timeout")
		return outcome{}
	case errors.As(err, &pe) || errors.Is(err, http1.ErrHeadTooLarge):
		h.localReply(502, accesslog.UpstreamProtocolError, "upstream_reset_before_response_started{protocol_error}",
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error")
		return outcome{}
	}
	h.localReply(503, accesslog.UpstreamConnectionTermination,
		"upstream_reset_before_response_started{connection_termination}",
		"upstream connect error or disconnect/reset before headers. reset reason: connection termination")
	return outcome{}
}

// downstreamGone ends an exchange whose client left: logged as Envoy
// logs it, DC, with no response.
func (h *h1conn) downstreamGone() outcome {
	h.rec.Flags |= accesslog.DownstreamConnectionTermination
	if h.rec.ResponseCodeDetails == "" {
		h.rec.ResponseCodeDetails = "downstream_remote_disconnect"
	}
	return outcome{result: ResultDownstreamClosed}
}

// write sends b to the client, counting it.
func (h *h1conn) write(b []byte) bool {
	n, err := h.d.c.Write(b)
	h.sent += int64(n)
	if n > 0 {
		h.f.activity.Add(int64(n))
	}
	return err == nil
}

// isClosed says an error is a closed or reset connection's.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// acquireRetry takes a place in the cluster's max_retries (given back once
// the retry has its endpoint); none left, the retry is not made, and
// counted as an overflow of the cluster and of the route's stats.
func acquireRetry(cl *cluster, rs *rqStats) bool {
	limit := cl.cb.maxRetries
	if cl.cb.retryBudget {
		limit = max(cl.cb.minRetries, int64(float64(cl.cb.requests.Load())*cl.cb.budgetPercent/100))
	}
	if acquire(&cl.cb.retries, limit) {
		return true
	}
	cl.cb.retryOverflow.Add(1)
	rs.overflowed()
	return false
}
