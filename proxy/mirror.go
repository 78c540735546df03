package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// mirrorPolicy is one of a route's request_mirror_policies: a copy of a
// fraction of its requests goes to another cluster, fire and forget.
type mirrorPolicy struct {
	cluster  *cluster
	fraction fraction
}

// mirrorTimeout bounds a shadow request (its answer is thrown away).
const mirrorTimeout = 30 * time.Second

// shadow sends a copy of a request to the mirror's cluster on its own
// goroutine, its authority suffixed "-shadow" as Envoy does; the answer
// is read and dropped. The cluster's max_requests bounds how many are in
// flight; beyond it a copy is not sent.
func (p *Proxy) shadow(m mirrorPolicy, dir Direction, method, target, authority string, header http.Header, body []byte) {
	if !m.fraction.hit() {
		return
	}
	cl := m.cluster
	if !acquire(&cl.cb.requests, cl.cb.maxRequests) {
		cl.cb.rqOverflow.Add(1)
		return
	}
	go func() {
		defer cl.cb.requests.Add(-1)
		ep, err := cl.pick(netip.AddrPort{})
		if err != nil {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		u.Scheme, u.Host = "http", ep.String()
		ctx, cancel := context.WithTimeout(p.bg, mirrorTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return
		}
		if len(body) == 0 {
			req.Body = nil
		}
		req.Header = header
		host, port, found := strings.Cut(authority, ":")
		req.Host = host + "-shadow"
		if found {
			req.Host += ":" + port
		}
		resp, err := cl.transport(p, dir, false).RoundTrip(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}

// mirrorH1 shadows an HTTP/1 request by the route's mirror policies: one
// without a body, or whose body has arrived whole with its head (a body
// still arriving is not copied, and the request not mirrored).
func (h *h1conn) mirrorH1(rt *route) {
	req := &h.req
	var body []byte
	switch h.body.Framing() {
	case http1.NoBody:
	case http1.Length:
		if int64(h.br.Buffered()) < req.ContentLength {
			return
		}
		body = append([]byte(nil), h.br.Peek()[:req.ContentLength]...)
	default:
		return
	}
	header := http.Header{}
	for _, hd := range req.Headers {
		if req.HopByHop(hd.Name) || strings.EqualFold(http1.View(hd.Name), "host") {
			continue
		}
		header.Add(string(hd.Name), string(hd.Value))
	}
	for _, m := range rt.mirrors {
		h.p.shadow(m, h.d.lst.dir, string(req.Method), string(req.Target), string(req.Host), header.Clone(), body)
	}
}
