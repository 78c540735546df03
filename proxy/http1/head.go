// Package http1 is the proxy's HTTP/1.0 and HTTP/1.1 codec: request and
// response heads parsed in place, without allocating, into header views
// that stay valid until the message's next read; bodies framed by
// Content-Length, chunked encoding, or the connection's close; and the
// rules of RFC 9112 for what may be trusted — a length that lies, a head
// too large, a header that smuggles — refused as a ProtocolError.
package http1

import (
	"bytes"
	"errors"
	"fmt"
	"unsafe"
)

// Limits, Envoy's defaults: max_request_headers_kb 60, 100 headers.
const (
	MaxHeadBytes = 60 << 10
	MaxHeaders   = 100
)

// ErrHeadTooLarge is a head over MaxHeadBytes (431, or 502 from upstream).
var ErrHeadTooLarge = errors.New("http1: head too large")

// ProtocolError is a message shunt refuses to forward; Status is the
// response a request of this kind gets (400, or 501 for a transfer coding
// shunt does not implement).
type ProtocolError struct {
	Reason string
	Status int
}

func (e *ProtocolError) Error() string { return "http1: " + e.Reason }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...), Status: 400}
}

// Header is one field, name and value as received (the value trimmed).
type Header struct{ Name, Value []byte }

// Head is what a request and a response share.
type Head struct {
	raw          []byte // the head's bytes; the views point into it
	Headers      []Header
	Major, Minor int
	// ContentLength is the body's length, -1 when the message does not say.
	ContentLength int64
	Chunked       bool
	// Close says the sender closes the connection after this message:
	// Connection: close, or HTTP/1.0 without keep-alive.
	Close bool
	// KeepAlive is HTTP/1.0's Connection: keep-alive.
	KeepAlive bool
	// Upgrade is the Upgrade header when Connection names it.
	Upgrade []byte
	// connection holds the header names the Connection header nominates:
	// hop-by-hop, not forwarded.
	connection [][]byte
}

// Request is a request head.
type Request struct {
	Head
	Method, Target []byte
	Host           []byte // the Host header
	Expect100      bool
}

// Response is a response head.
type Response struct {
	Head
	Code   int
	Reason []byte
}

// Get is a header's value by lower-case name (the first, if repeated).
func (h *Head) Get(lowerName string) ([]byte, bool) {
	for i := range h.Headers {
		if equalFold(h.Headers[i].Name, lowerName) {
			return h.Headers[i].Value, true
		}
	}
	return nil, false
}

// Proto is "HTTP/1.0" or "HTTP/1.1".
func (h *Head) Proto() string {
	if h.Minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// HopByHop says whether a header is the connection's, not the message's:
// the ones RFC 9110 names and the ones the Connection header nominates.
func (h *Head) HopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return true
		}
	case 7:
		if equalFold(name, "trailer") || equalFold(name, "upgrade") {
			return true
		}
	case 10:
		if equalFold(name, "connection") || equalFold(name, "keep-alive") {
			return true
		}
	case 16:
		if equalFold(name, "proxy-connection") {
			return true
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return true
		}
	}
	for _, c := range h.connection {
		if bytes.EqualFold(name, c) {
			return true
		}
	}
	return false
}

// View is b as a string without copying: valid only while b's bytes are
// (for a head, until its next read).
func View(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// equalFold compares b with a lower-case ASCII name.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// TokenChar reports whether c may appear in a token (a method, a header
// name).
func TokenChar(c byte) bool { return tchar(c) }

// tchar reports whether c may appear in a token (a method, a header name).
func tchar(c byte) bool {
	return c < 0x80 && tcharTable[c]
}

var tcharTable = func() (t [128]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()
