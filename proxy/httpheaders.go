package proxy

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// addRequestHeaders adds what Envoy adds to a request it forwards:
// x-request-id (a UUIDv4) when absent, and x-forwarded-proto when absent.
// The values live in h.vals; the headers join the request's own, so the
// log and the upstream see them alike.
func (h *h1conn) addRequestHeaders() {
	req := &h.req
	if _, ok := req.Get("x-request-id"); !ok && h.hcm.generateRequestID {
		id := appendUUID(h.vals[:0])
		req.Headers = append(req.Headers, http1.Header{Name: xRequestID, Value: id})
	}
	if _, ok := req.Get("x-forwarded-proto"); !ok {
		req.Headers = append(req.Headers, http1.Header{Name: xForwardedProto, Value: schemeHTTP})
	}
	h.hcm.clientCert.applyXFCC1(req, h.d)
	h.takePeerMetadata()
}

// takePeerMetadata strips the metadata exchange's headers from a request
// to a manager that takes part (the app's own are replaced by the
// sidecar's); where it reads them, they name the caller.
func (h *h1conn) takePeerMetadata() {
	h.peer, h.peerAsked = nil, false
	mx := h.hcm.mx
	if !mx.any() {
		return
	}
	var value []byte
	h.req.Headers = slices.DeleteFunc(h.req.Headers, func(f http1.Header) bool {
		switch peerHeader(f.Name) {
		case peerMetadata:
			value = f.Value
			return true
		case peerMetadataID:
			return true
		}
		return false
	})
	if mx.readRequest && value != nil {
		h.peer, h.peerAsked = h.p.peers.peer(http1.View(value)), mx.answer
	}
}

// Which of the exchange's headers a header is.
const (
	notPeerHeader = iota
	peerMetadata
	peerMetadataID
)

// peerHeader says which of the exchange's headers a header name is (in
// any case).
func peerHeader(name []byte) int {
	switch {
	case len(name) == len(peerMetadataHeader) && strings.EqualFold(http1.View(name), peerMetadataHeader):
		return peerMetadata
	case len(name) == len(peerMetadataIDHeader) && strings.EqualFold(http1.View(name), peerMetadataIDHeader):
		return peerMetadataID
	}
	return notPeerHeader
}

var (
	xRequestID         = []byte("x-request-id")
	xForwardedProto    = []byte("x-forwarded-proto")
	xEnvoyOriginalPath = []byte("x-envoy-original-path")
	xUpstreamSvcTime   = []byte("x-envoy-upstream-service-time")
	schemeHTTP         = []byte("http")
	transferEncoding   = []byte("transfer-encoding")
	chunked            = []byte("chunked")
	connectionHeader   = []byte("connection")
	connectionClose    = []byte("close")
	connectionKeep     = []byte("keep-alive")
	connectionUpgrade  = []byte("upgrade")
	upgradeHeader      = []byte("upgrade")
	hostHeader         = []byte("host")
	teHeader           = []byte("te")
	expectHeader       = []byte("expect")
	contentLengthField = []byte("content-length")
)

// appendUUID appends a random (version 4) UUID.
func appendUUID(b []byte) []byte {
	var u [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		u[i], u[8+i] = byte(hi>>(8*i)), byte(lo>>(8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return append(b, s[:]...)
}

// appendUpstreamHead writes the request head the upstream gets: HTTP/1.1,
// the request's end-to-end headers, its own framing, and for an upgrade
// the Connection and Upgrade headers that ask for it.
func (h *h1conn) appendUpstreamHead(b []byte) []byte {
	req := &h.req
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	b = append(b, " HTTP/1.1\r\n"...)
	for _, hd := range req.Headers {
		if req.HopByHop(hd.Name) {
			if len(hd.Name) == 2 && strings.EqualFold(http1.View(hd.Name), "te") && strings.EqualFold(http1.View(hd.Value), "trailers") {
				b = http1.AppendHeader(b, teHeader, hd.Value) // "te: trailers" is end to end
			}
			continue
		}
		if len(hd.Name) == 6 && strings.EqualFold(http1.View(hd.Name), "expect") {
			continue // the proxy answered 100-continue itself
		}
		b = http1.AppendHeader(b, hd.Name, hd.Value)
	}
	if len(req.Host) == 0 {
		b = h.d.local.AppendTo(append(append(b, hostHeader...), ": "...))
		b = append(b, "\r\n"...)
	}
	if h.cl != nil && h.hcm.mx.sendsTo(h.cl.name) {
		b = http1.AppendHeader(b, peerMetadataIDName, h.p.peers.id)
		b = http1.AppendHeader(b, peerMetadataName, h.p.peers.value)
	}
	if h.rt != nil && h.rt.includeAttemptCount {
		b = strconv.AppendInt(append(b, "x-envoy-attempt-count: "...), int64(h.rec.AttemptCount), 10)
		b = append(b, "\r\n"...)
	}
	if req.Chunked {
		b = http1.AppendHeader(b, transferEncoding, chunked)
	}
	if len(req.Upgrade) > 0 {
		b = http1.AppendHeader(b, connectionHeader, connectionUpgrade)
		b = http1.AppendHeader(b, upgradeHeader, req.Upgrade)
	}
	return append(b, "\r\n"...)
}

// appendDownstreamHead writes the response head the client gets: the
// upstream's status and end-to-end headers, the upstream service time,
// and framing for the client's version: chunked where the body's length
// is unknown and the client speaks 1.1, else the end of the connection.
func (h *h1conn) appendDownstreamHead(b []byte, serviceMs int64, chunkedOut, closeAfter bool) []byte {
	resp := &h.resp
	b = http1.AppendStatusLine(b, 1, resp.Code, resp.Reason)
	rt := h.rt
	if rt != nil && len(rt.responseAdd)+len(rt.responseRemove) > 0 {
		applyHeadMutations(&resp.Head, rt.responseAdd, rt.responseRemove)
	}
	if len(h.filtered) > 0 {
		applyHeadMutations(&resp.Head, h.filtered, nil)
	}
	mx := h.hcm.mx
	for _, hd := range resp.Headers {
		if resp.HopByHop(hd.Name) {
			continue
		}
		if mx.any() {
			if kind := peerHeader(hd.Name); kind != notPeerHeader {
				if kind == peerMetadata && mx.readResponse {
					h.peer = h.p.peers.peer(http1.View(hd.Value)) // the upstream sidecar's answer
				}
				continue
			}
		}
		b = http1.AppendHeader(b, hd.Name, hd.Value)
	}
	if h.peerAsked {
		b = http1.AppendHeader(b, peerMetadataIDName, h.p.peers.id)
		b = http1.AppendHeader(b, peerMetadataName, h.p.peers.value)
	}
	if serviceMs >= 0 {
		// The value lives in h.vals, after the request ID, for the log's
		// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% to read back.
		v := strconv.AppendInt(h.vals[48:48], serviceMs, 10)
		resp.Headers = append(resp.Headers, http1.Header{Name: xUpstreamSvcTime, Value: v})
		b = http1.AppendHeader(b, xUpstreamSvcTime, v)
	}
	if chunkedOut {
		b = http1.AppendHeader(b, transferEncoding, chunked)
	}
	switch {
	case resp.Code == 101:
		b = http1.AppendHeader(b, connectionHeader, connectionUpgrade)
		b = http1.AppendHeader(b, upgradeHeader, resp.Upgrade)
	case closeAfter:
		b = http1.AppendHeader(b, connectionHeader, connectionClose)
	case h.req.Minor == 0:
		b = http1.AppendHeader(b, connectionHeader, connectionKeep)
	}
	return append(b, "\r\n"...)
}

// underscores is a detail with its spaces made underscores, as Envoy's
// response code details are.
func underscores(s string) string { return strings.ReplaceAll(s, " ", "_") }
