package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/http1"
)

// localReply answers the request from the proxy itself, saying why in the
// body (text, as Envoy's local replies are) and in the log: the response
// code details and flags. The connection stays open only when the request
// is wholly read and did not ask to close.
func (h *h1conn) localReply(code int, flags accesslog.Flags, details, body string) (bool, Result) {
	parsed := h.parsed
	keep := parsed && !h.req.Close && (h.body.Framing() == http1.NoBody || h.body.Done()) && !h.p.draining.Load() && !h.stale()
	b := getBuf()
	defer putBuf(b)
	out := http1.AppendStatusLine(b.b[:0], 1, code, []byte(http.StatusText(code)))
	out = append(out, "content-length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n"...)
	if body != "" {
		out = append(out, "content-type: text/plain\r\n"...)
	}
	out = append(out, "date: "...)
	out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
	out = append(out, "\r\nserver: shunt\r\n"...)
	if h.location != "" {
		out = append(append(append(out, "location: "...), h.location...), "\r\n"...)
		h.location = ""
	}
	for _, a := range h.filtered {
		out = http1.AppendHeader(out, a.nameB, a.valueB)
	}
	if rt := h.matched; rt != nil {
		// The router's reply (a direct response, a redirect, a 503): as
		// Envoy, with the route's response headers, but not over the
		// reply's own.
		for _, a := range rt.responseAdd {
			if a.action != overwriteIfExists && !localReplyHeaders[a.name] {
				out = http1.AppendHeader(out, a.nameB, a.valueB)
			}
		}
	}
	switch {
	case !keep:
		out = append(out, "connection: close\r\n"...)
	case h.req.Minor == 0:
		out = append(out, "connection: keep-alive\r\n"...)
	}
	out = append(out, "\r\n"...)
	if !(parsed && string(h.req.Method) == "HEAD") {
		out = append(out, body...)
	}
	h.write(out)
	h.rec.ResponseCode = code
	h.rec.Response = nil
	h.rec.Flags |= flags
	h.rec.ResponseCodeDetails = details
	h.rec.BytesSent = int64(len(body))
	h.log()
	return keep, ResultOK
}

// localReplyHeaders are the headers a local reply has of its own.
var localReplyHeaders = map[string]bool{"content-length": true, "content-type": true, "date": true, "server": true,
	"location": true, "connection": true}

// log counts the request in Istio's metrics and writes its record, once.
func (h *h1conn) log() {
	if h.logged {
		return
	}
	h.logged = true
	h.rec.Duration = time.Since(h.rec.Start)
	h.p.istio.request(h.d.lst.dir, &h.rec, nil, false, h.peer)
	h.hcm.done(h.matched, h.cl, &h.rec)
	writeAll(h.hcm.logs, &h.rec)
	h.finishSpan()
}
