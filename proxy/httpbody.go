package proxy

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
)

// httpBuf is a request's working buffer: heads are built in it and
// bodies copied through it.
type httpBuf struct{ b []byte }

const httpBufSize = 32 << 10

var httpBufs = sync.Pool{New: func() any { return &httpBuf{b: make([]byte, 0, httpBufSize)} }}

func getBuf() *httpBuf  { return httpBufs.Get().(*httpBuf) }
func putBuf(b *httpBuf) { b.b = b.b[:0]; httpBufs.Put(b) }

// inlineBody appends the request body to the head when all of it has
// already arrived, so both go in one write; it says whether it did (or
// there is no body).
func (h *h1conn) inlineBody(out []byte) ([]byte, bool) {
	switch h.body.Framing() {
	case http1.NoBody:
		return out, true
	case http1.Length:
		n := h.req.ContentLength
		if int64(h.br.Buffered()) < n || int64(cap(out)-len(out)) < n {
			return out, false
		}
		out = append(out, h.br.Peek()[:n]...)
		h.br.Discard(int(n))
		h.body.Reset(h.br, http1.NoBody, 0)
		h.rec.BytesReceived = n
		return out, true
	}
	return out, false
}

// bodyResult is how sending a request body ended.
type bodyResult struct {
	n          int64
	downstream error // reading the client failed (it left, or lied)
	upstream   error // writing to the upstream failed
}

// pendingBody is a request body being copied on its own goroutine.
type pendingBody struct {
	ch   chan bodyResult
	res  bodyResult
	done bool
	read atomic.Bool // the client's body has been read to its end
}

// startBody copies the request body, read from src, to uc on a goroutine. It reports how
// the copy ended before it resets the upstream for a client that left,
// so that the upstream's failure is seen for what it is.
func (h *h1conn) startBody(uc *upstreamConn, src io.Reader) *pendingBody {
	pb := &pendingBody{ch: make(chan bodyResult, 1)}
	go func() {
		res := h.sendBody(uc, src, &pb.read)
		pb.ch <- res
		if res.downstream != nil {
			// The request cannot be completed: the upstream must not take
			// what it has for a whole request.
			reset(uc.c)
		}
	}()
	return pb
}

// poll says how the copy ended, if it has.
func (pb *pendingBody) poll() (bodyResult, bool) {
	if pb == nil {
		return bodyResult{}, false
	}
	if !pb.done {
		select {
		case pb.res = <-pb.ch:
			pb.done = true
		default:
		}
	}
	return pb.res, pb.done
}

// wait waits for the copy to end.
func (pb *pendingBody) wait() bodyResult {
	if !pb.done {
		pb.res, pb.done = <-pb.ch, true
	}
	return pb.res
}

// sendBody copies the request body from src (the body itself, or a try
// of it kept) to the upstream, re-framing chunked bodies, until the body
// ends or either side fails.
func (h *h1conn) sendBody(uc *upstreamConn, src io.Reader, read *atomic.Bool) bodyResult {
	buf := getBuf()
	defer putBuf(buf)
	var res bodyResult
	chunkedOut := h.req.Chunked
	b := buf.b[:cap(buf.b)]
	for {
		p := b[:cap(b)-http1.ChunkTailroom]
		if chunkedOut {
			p = p[http1.ChunkHeadroom:]
		}
		n, err := src.Read(p)
		if err == io.EOF {
			read.Store(true)
		}
		if n > 0 {
			out := p[:n]
			if chunkedOut {
				out = http1.FrameChunk(b, n)
			}
			if _, werr := uc.c.Write(out); werr != nil {
				res.upstream = werr
				return res
			}
			res.n += int64(n)
			h.f.activity.Add(int64(n))
		}
		if err != nil {
			if err == io.EOF {
				if chunkedOut {
					if _, werr := uc.c.Write(http1.AppendLastChunk(b[:0], h.body.Trailers())); werr != nil {
						res.upstream = werr
					}
				}
				return res
			}
			res.downstream = err
			return res
		}
	}
}

// joinBody waits for the request body's copy and folds how it ended into
// the exchange's outcome. A body still arriving after the response ended
// is cut off: the read of it ends at once, and the connection with the
// response (closed, not reset, so that the client reads the response).
func (h *h1conn) joinBody(body *pendingBody, o outcome) outcome {
	res, done := body.poll()
	switch {
	case done:
	case body.read.Load():
		res = body.wait() // all read: the copy ends with its last write
	default:
		_ = h.d.c.SetReadDeadline(time.Unix(1, 0))
		res = body.wait()
		o.more = false
	}
	h.rec.BytesReceived = res.n
	h.rec.RequestDuration = time.Since(h.rec.Start)
	if res.downstream != nil || res.upstream != nil {
		o.reuse, o.more, o.retry = false, false, false
	}
	if res.downstream != nil && h.resp.Code == 0 {
		h.rec.Flags |= accesslog.DownstreamConnectionTermination
		o.result = ResultDownstreamClosed
	}
	return o
}

// respond relays the response: its head, then its body, re-framed for the
// client's version.
func (h *h1conn) respond(uc *upstreamConn, buf *httpBuf, sentAt time.Time, inline bool) outcome {
	req, resp := &h.req, &h.resp
	framing := http1.ResponseFraming(resp, req.Method)
	tunnel := resp.Code == 101 && len(req.Upgrade) > 0 ||
		resp.Code/100 == 2 && string(req.Method) == "CONNECT"
	if tunnel {
		framing = http1.NoBody
	}
	unknownLength := framing == http1.Chunked || framing == http1.UntilClose
	chunkedOut := unknownLength && req.Minor == 1
	closeAfter := req.Close || unknownLength && req.Minor == 0 || h.p.draining.Load() || h.stale()
	out := h.appendDownstreamHead(buf.b[:0], time.Since(sentAt).Milliseconds(), chunkedOut, closeAfter && !tunnel)
	h.rec.ResponseCode = resp.Code
	h.rec.Response = resp
	h.rec.ResponseCodeDetails = "via_upstream"
	if tunnel {
		if !h.write(out) {
			return h.downstreamGone()
		}
		return h.tunnel(uc)
	}
	var rb http1.Body
	rb.Reset(uc.r, framing, resp.ContentLength)
	txStart := time.Now()
	n, upErr, downErr := h.copyBody(&rb, uc, out, buf, chunkedOut)
	h.rec.BytesSent = n
	h.rec.ResponseTxDuration = time.Since(txStart)
	switch {
	case downErr:
		reset(uc.c)
		return h.downstreamGone()
	case upErr:
		// The response is cut: the client must see it end abnormally.
		reset(h.d.c)
		h.rec.Flags |= accesslog.UpstreamConnectionTermination
		h.rec.ResponseCodeDetails = "upstream_reset_after_response_started{connection_termination}"
		return outcome{result: ResultReset}
	}
	reuse := framing != http1.UntilClose && !resp.Close
	return outcome{more: !closeAfter, reuse: reuse, result: ResultOK}
}

// copyBody copies a response body to the client after the head already
// in out, writing whenever nothing more has arrived (a stream's events go
// out at once) or the buffer is full; chunkedOut frames each write as a
// chunk. It returns the body bytes and which side failed.
func (h *h1conn) copyBody(rb *http1.Body, uc *upstreamConn, out []byte, buf *httpBuf, chunkedOut bool) (n int64, upErr, downErr bool) {
	for !rb.Done() && rb.Framing() != http1.NoBody {
		if cap(out)-len(out) < 4096+http1.ChunkHeadroom+http1.ChunkTailroom {
			if !h.write(out) {
				return n, false, true
			}
			out = out[:0]
		}
		start := len(out)
		room := out[start : cap(out)-http1.ChunkTailroom]
		if chunkedOut {
			room = room[http1.ChunkHeadroom:]
		}
		m, err := rb.Read(room)
		if m > 0 {
			n += int64(m)
			if chunkedOut {
				framed := http1.FrameChunk(out[start:cap(out)], m)
				out = append(out[:start], framed...) // memmove over the unused headroom
			} else {
				out = out[:start+m]
			}
		}
		if err != nil && !rb.Done() {
			if len(out) > 0 {
				h.write(out)
			}
			return n, true, false
		}
		if uc.r.Buffered() == 0 && !rb.Done() && len(out) > 0 {
			if !h.write(out) {
				return n, false, true
			}
			out = out[:0]
		}
	}
	if chunkedOut {
		var trailers []http1.Header
		if rb.Framing() == http1.Chunked {
			trailers = rb.Trailers()
		}
		out = http1.AppendLastChunk(out, trailers)
	}
	if len(out) > 0 && !h.write(out) {
		return n, false, true
	}
	buf.b = out[:0]
	return n, false, false
}

// tunnel joins the client and the upstream after a 101 or a CONNECT's
// 2xx: bytes already buffered on either side first, then the L4 pump.
func (h *h1conn) tunnel(uc *upstreamConn) outcome {
	if b := uc.r.Peek(); len(b) > 0 {
		if !h.write(b) {
			return h.downstreamGone()
		}
		h.rec.BytesSent += int64(len(b))
		uc.r.Discard(len(b))
	}
	if b := h.br.Peek(); len(b) > 0 {
		if _, err := uc.c.Write(b); err != nil {
			return outcome{result: ResultReset}
		}
		h.rec.BytesReceived += int64(len(b))
		h.br.Discard(len(b))
	}
	h.p.flows.remove(h.f)
	f := &flow{down: h.d.c, up: uc.c, idle: h.hcm.idle}
	h.p.flows.add(f)
	var rec accesslog.Record
	r := h.p.pump(f, &rec)
	h.p.flows.remove(f)
	h.rec.BytesReceived += rec.BytesReceived
	h.rec.BytesSent += rec.BytesSent
	h.sent += rec.BytesSent
	h.rec.Flags |= rec.Flags
	h.rec.TerminationDetails = rec.TerminationDetails
	return outcome{result: r}
}
