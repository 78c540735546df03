package http1

import (
	"bytes"
	"iter"
)

// fields are the headers that frame a message or steer its connection:
// the values of single ones, counts of those that may repeat.
type fields struct {
	host, expect, upgrade []byte
	hosts, te, cl         int
}

// values yields the value of each header named lowerName.
func (h *Head) values(lowerName string) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for i := range h.Headers {
			if equalFold(h.Headers[i].Name, lowerName) && !yield(h.Headers[i].Value) {
				return
			}
		}
	}
}

func (h *Head) collect() fields {
	var f fields
	for i := range h.Headers {
		name, v := h.Headers[i].Name, h.Headers[i].Value
		switch {
		case equalFold(name, "host"):
			f.host = v
			f.hosts++
		case equalFold(name, "content-length"):
			f.cl++
		case equalFold(name, "transfer-encoding"):
			f.te++
		case equalFold(name, "expect"):
			f.expect = v
		case equalFold(name, "upgrade"):
			f.upgrade = v
		}
	}
	return f
}

// connectionTokens applies the Connection header: close, keep-alive,
// upgrade, and the names of other hop-by-hop headers.
func (h *Head) connectionTokens(f *fields) {
	upgrade := false
	for v := range h.values("connection") {
		for tok := range bytes.SplitSeq(v, []byte{','}) {
			tok = trimOWS(tok)
			switch {
			case len(tok) == 0:
			case equalFold(tok, "close"):
				h.Close = true
			case equalFold(tok, "keep-alive"):
				h.KeepAlive = true
			case equalFold(tok, "upgrade"):
				upgrade = true
			default:
				h.connection = append(h.connection, tok)
			}
		}
	}
	if h.Minor == 0 && !h.KeepAlive {
		h.Close = true
	}
	if upgrade && len(f.upgrade) > 0 {
		h.Upgrade = f.upgrade
	}
}

// contentLength reads the Content-Length headers: repeated or listed
// values must agree (RFC 9110 8.6).
func (h *Head) contentLength() (int64, error) {
	n := int64(-1)
	for v := range h.values("content-length") {
		for part := range bytes.SplitSeq(v, []byte{','}) {
			part = trimOWS(part)
			if !isDigits(part) || len(part) > 18 {
				return 0, protoErr("invalid Content-Length")
			}
			var m int64
			for _, c := range part {
				m = m*10 + int64(c-'0')
			}
			if n >= 0 && m != n {
				return 0, protoErr("conflicting Content-Length values")
			}
			n = m
		}
	}
	return n, nil
}

// chunkedOnly reads Transfer-Encoding: shunt implements chunked alone, and
// chunked must be the last coding.
func (h *Head) chunkedOnly() error {
	codings := 0
	for v := range h.values("transfer-encoding") {
		for tok := range bytes.SplitSeq(v, []byte{','}) {
			tok = trimOWS(tok)
			if len(tok) == 0 {
				continue
			}
			codings++
			if !equalFold(tok, "chunked") {
				return &ProtocolError{Reason: "unsupported transfer coding", Status: 501}
			}
		}
	}
	if codings != 1 {
		return protoErr("invalid Transfer-Encoding")
	}
	return nil
}

// semantics applies what the headers say about framing and the connection.
func (req *Request) semantics() error {
	f := req.collect()
	switch {
	case f.hosts > 1:
		return protoErr("more than one Host header")
	case f.hosts == 0 && req.Minor == 1:
		return protoErr("HTTP/1.1 request without a Host header")
	}
	req.Host = f.host
	req.connectionTokens(&f)
	if err := req.framing(&f); err != nil {
		return err
	}
	req.Expect100 = req.Minor == 1 && equalFold(f.expect, "100-continue")
	return nil
}

func (req *Request) framing(f *fields) error {
	req.ContentLength = -1
	if f.te > 0 {
		switch {
		case req.Minor == 0:
			return protoErr("Transfer-Encoding in an HTTP/1.0 request")
		case f.cl > 0:
			return protoErr("both Content-Length and Transfer-Encoding")
		}
		if err := req.chunkedOnly(); err != nil {
			return err
		}
		req.Chunked = true
		return nil
	}
	n, err := req.contentLength()
	req.ContentLength = n
	return err
}

func (resp *Response) semantics() error {
	f := resp.collect()
	resp.connectionTokens(&f)
	resp.ContentLength = -1
	if f.te > 0 {
		if err := resp.chunkedOnly(); err != nil {
			return protoErr("unsupported transfer coding")
		}
		resp.Chunked = true
		if f.cl > 0 {
			// Chunked wins, and the connection is not to be trusted after.
			resp.Close = true
		}
		return nil
	}
	n, err := resp.contentLength()
	resp.ContentLength = n
	return err
}
