package http1

import "bytes"

// parseRequest parses a complete request head in place.
func parseRequest(req *Request, head []byte) error {
	line, rest := cutLine(head)
	method, rest1, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(method) == 0 || !isToken(method) {
		return protoErr("malformed request line")
	}
	target, version, ok := bytes.Cut(rest1, []byte{' '})
	if !ok || len(target) == 0 || !validTarget(target) {
		return protoErr("malformed request target")
	}
	major, minor, ok := parseVersion(version)
	if !ok {
		return protoErr("malformed HTTP version")
	}
	if major != 1 {
		return &VersionError{Major: major, Minor: minor}
	}
	*req = Request{Head: Head{raw: req.raw, Headers: req.Headers[:0], connection: req.connection[:0]}}
	req.Method, req.Target = method, target
	req.Major, req.Minor = major, minor
	if err := req.parseFields(rest); err != nil {
		return err
	}
	return req.semantics()
}

// VersionError is a request of an HTTP major version other than 1 (505).
type VersionError struct{ Major, Minor int }

func (e *VersionError) Error() string { return "http1: unsupported HTTP version" }

// parseResponse parses a complete response head in place.
func parseResponse(resp *Response, head []byte) error {
	line, rest := cutLine(head)
	version, rest1, _ := bytes.Cut(line, []byte{' '})
	major, minor, ok := parseVersion(version)
	if !ok || major != 1 {
		return protoErr("malformed status line")
	}
	code, reason, _ := bytes.Cut(rest1, []byte{' '})
	if len(code) != 3 || !isDigits(code) || code[0] == '0' {
		return protoErr("malformed status code")
	}
	for _, c := range reason {
		if c < ' ' && c != '\t' || c == 0x7f {
			return protoErr("control character in the reason phrase")
		}
	}
	*resp = Response{Head: Head{raw: resp.raw, Headers: resp.Headers[:0], connection: resp.connection[:0]}}
	resp.Code = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	resp.Reason = reason
	resp.Major, resp.Minor = major, minor
	if err := resp.parseFields(rest); err != nil {
		return err
	}
	return resp.semantics()
}

// cutLine splits off the first line, without its CRLF or LF.
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseVersion reads "HTTP/1.1"; a later 1.x minor is taken as 1.1.
func parseVersion(v []byte) (major, minor int, ok bool) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, 0, false
	}
	major, minor = int(v[5]-'0'), int(v[7]-'0')
	if major == 1 && minor > 1 {
		minor = 1
	}
	return major, minor, true
}

// parseFields parses the header lines of a head (after its start line,
// through the empty line).
func (h *Head) parseFields(b []byte) error {
	for len(b) > 0 {
		var line []byte
		line, b = cutLine(b)
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return protoErr("obsolete line folding")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return protoErr("malformed header name")
		}
		value := trimOWS(line[colon+1:])
		if !validValue(value) {
			return protoErr("invalid character in header %s", clipName(line[:colon]))
		}
		if len(h.Headers) == MaxHeaders {
			return protoErr("more than %d headers", MaxHeaders)
		}
		h.Headers = append(h.Headers, Header{Name: line[:colon], Value: value})
	}
	return nil
}

func clipName(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// validValue: visible characters, spaces, tabs and obs-text.
func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validTarget: no whitespace, no controls.
func validTarget(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !tchar(c) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isDigits(b []byte) bool {
	for _, c := range b {
		if !isDigit(c) {
			return false
		}
	}
	return len(b) > 0
}
