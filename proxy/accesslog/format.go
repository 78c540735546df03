package accesslog

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Envoy's default format, and Istio's (its sidecars' TEXT access log).
const (
	EnvoyDefault = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
		`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
		`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
		`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"
	IstioDefault = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
		`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
		`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
		`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
		`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% ` +
		`%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ` +
		`%REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"
)

// JSONDefault is the JSON dictionary `--access-log-format json` logs: the
// fields of Istio's JSON access log.
var JSONDefault = []Field{
	{"start_time", "%START_TIME%"}, {"method", "%REQ(:METHOD)%"}, {"path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"},
	{"protocol", "%PROTOCOL%"}, {"response_code", "%RESPONSE_CODE%"}, {"response_flags", "%RESPONSE_FLAGS%"},
	{"response_code_details", "%RESPONSE_CODE_DETAILS%"}, {"connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"},
	{"upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"},
	{"bytes_received", "%BYTES_RECEIVED%"}, {"bytes_sent", "%BYTES_SENT%"}, {"duration", "%DURATION%"},
	{"upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"}, {"x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"},
	{"user_agent", "%REQ(USER-AGENT)%"}, {"request_id", "%REQ(X-REQUEST-ID)%"}, {"authority", "%REQ(:AUTHORITY)%"},
	{"upstream_host", "%UPSTREAM_HOST%"}, {"upstream_cluster", "%UPSTREAM_CLUSTER%"},
	{"upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"}, {"downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"},
	{"downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"}, {"requested_server_name", "%REQUESTED_SERVER_NAME%"},
	{"route_name", "%ROUTE_NAME%"},
}

// Field is one key of a JSON format and its format string.
type Field struct{ Key, Format string }

// Format is a compiled format string or JSON dictionary.
type Format struct {
	parts  []part
	fields []jsonField // for a JSON format
}

type jsonField struct {
	key   []byte // `"key":`, quoted
	parts []part
}

// part is a literal or an operator.
type part struct {
	literal string
	op      op
}

// op appends one operator's value to b; ok is false when the value is
// missing (nothing appended). numeric values stay numbers in JSON.
type op struct {
	fn      func(b []byte, r *Record) ([]byte, bool)
	numeric bool
}

// Compile parses a format string.
func Compile(format string) (*Format, error) {
	parts, err := parse(format)
	if err != nil {
		return nil, err
	}
	return &Format{parts: parts}, nil
}

// CompileJSON parses a JSON dictionary of format strings; its keys come
// out in the order given.
func CompileJSON(fields []Field) (*Format, error) {
	f := &Format{}
	for _, fd := range fields {
		parts, err := parse(fd.Format)
		if err != nil {
			return nil, fmt.Errorf("json_format[%q]: %w", fd.Key, err)
		}
		key, _ := json.Marshal(fd.Key)
		f.fields = append(f.fields, jsonField{key: append(key, ':'), parts: parts})
	}
	return f, nil
}

// Append renders the record onto b.
func (f *Format) Append(b []byte, r *Record) []byte {
	if f.fields == nil {
		for _, p := range f.parts {
			if p.op.fn == nil {
				b = append(b, p.literal...)
				continue
			}
			var ok bool
			n := len(b)
			if b, ok = p.op.fn(b, r); !ok {
				b = append(b[:n], '-')
			}
		}
		return b
	}
	b = append(b, '{')
	for i, fd := range f.fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, fd.key...)
		b = appendJSONValue(b, fd.parts, r)
	}
	return append(b, "}\n"...)
}

// appendJSONValue renders a field: a lone operator keeps its type (a
// number, or null when missing); anything else is a string.
func appendJSONValue(b []byte, parts []part, r *Record) []byte {
	if len(parts) == 1 && parts[0].op.fn != nil {
		n := len(b)
		if !parts[0].op.numeric {
			b = append(b, '"')
		}
		var ok bool
		if b, ok = parts[0].op.fn(b, r); !ok {
			return append(b[:n], "null"...)
		}
		if !parts[0].op.numeric {
			b = escapeJSON(b, n+1)
			b = append(b, '"')
		}
		return b
	}
	n := len(b)
	b = append(b, '"')
	for _, p := range parts {
		if p.op.fn == nil {
			b = append(b, p.literal...)
			continue
		}
		m := len(b)
		var ok bool
		if b, ok = p.op.fn(b, r); !ok {
			b = append(b[:m], '-')
		}
	}
	b = escapeJSON(b, n+1)
	return append(b, '"')
}

// escapeJSON escapes b[from:] in place for a JSON string.
func escapeJSON(b []byte, from int) []byte {
	clean := true
	for _, c := range b[from:] {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	s := string(b[from:])
	q, _ := json.Marshal(s)
	return append(b[:from], q[1:len(q)-1]...)
}

// parse splits a format string into literals and operators.
func parse(format string) ([]part, error) {
	var parts []part
	lit := strings.Builder{}
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, part{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(format); {
		c := format[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		end, o, err := parseOperator(format, i)
		if err != nil {
			return nil, err
		}
		if o.fn == nil { // "%%"
			lit.WriteByte('%')
		} else {
			flush()
			parts = append(parts, part{op: o})
		}
		i = end
	}
	flush()
	return parts, nil
}

// parseOperator reads the operator starting at format[i] == '%' and
// returns where it ends.
func parseOperator(format string, i int) (int, op, error) {
	if strings.HasPrefix(format[i:], "%%") {
		return i + 2, op{}, nil
	}
	j := i + 1
	for j < len(format) && (format[j] >= 'A' && format[j] <= 'Z' || format[j] >= '0' && format[j] <= '9' || format[j] == '_') {
		j++
	}
	name := format[i+1 : j]
	arg, hasArg := "", false
	if j < len(format) && format[j] == '(' {
		depth, k := 0, j
		for ; k < len(format); k++ {
			if format[k] == '(' {
				depth++
			} else if format[k] == ')' {
				if depth--; depth == 0 {
					break
				}
			}
		}
		if k == len(format) {
			return 0, op{}, fmt.Errorf("command operator %%%s at %d: no closing parenthesis", name, i)
		}
		arg, hasArg, j = format[j+1:k], true, k+1
	}
	maxLen := -1
	if j < len(format) && format[j] == ':' {
		k := j + 1
		for k < len(format) && format[k] >= '0' && format[k] <= '9' {
			k++
		}
		if k > j+1 {
			maxLen, _ = strconv.Atoi(format[j+1 : k])
			j = k
		}
	}
	if j >= len(format) || format[j] != '%' {
		return 0, op{}, fmt.Errorf("command operator %%%s at %d is not closed by %%", name, i)
	}
	o, err := operator(name, arg, hasArg, maxLen)
	if err != nil {
		return 0, op{}, fmt.Errorf("%%%s%%: %w", name, err)
	}
	return j + 1, o, nil
}

func operator(name, arg string, hasArg bool, maxLen int) (op, error) {
	str := func(get func(r *Record) string) op {
		return op{fn: func(b []byte, r *Record) ([]byte, bool) {
			v := get(r)
			if v == "" {
				return b, false
			}
			return appendMax(b, v, maxLen), true
		}}
	}
	num := func(get func(r *Record) (int64, bool)) op {
		return op{numeric: true, fn: func(b []byte, r *Record) ([]byte, bool) {
			v, ok := get(r)
			if !ok {
				return b, false
			}
			return strconv.AppendInt(b, v, 10), true
		}}
	}
	addr := func(get func(r *Record) netip.AddrPort, withPort bool) op {
		return op{fn: func(b []byte, r *Record) ([]byte, bool) {
			a := get(r)
			if !a.IsValid() {
				return b, false
			}
			if withPort {
				return a.AppendTo(b), true
			}
			return a.Addr().AppendTo(b), true
		}}
	}
	ms := func(get func(r *Record) time.Duration) op {
		return num(func(r *Record) (int64, bool) {
			d := get(r)
			return d.Milliseconds(), d >= 0
		})
	}
	if hasArg && !slices.Contains([]string{"START_TIME", "REQ", "RESP", "TRAILER"}, name) {
		return op{}, fmt.Errorf("takes no argument")
	}
	switch name {
	case "START_TIME":
		layout := "%Y-%m-%dT%H:%M:%S.%3fZ"
		if hasArg && arg != "" {
			layout = arg
		}
		return startTime(layout)
	case "REQ", "RESP", "TRAILER":
		return headerOp(name, arg, maxLen)
	case "PROTOCOL":
		return str(func(r *Record) string { return r.Protocol }), nil
	case "RESPONSE_CODE":
		// Envoy prints 0 for a connection that had no response.
		return op{numeric: true, fn: func(b []byte, r *Record) ([]byte, bool) {
			return strconv.AppendInt(b, int64(r.ResponseCode), 10), true
		}}, nil
	case "RESPONSE_CODE_DETAILS":
		return str(func(r *Record) string { return r.ResponseCodeDetails }), nil
	case "RESPONSE_FLAGS":
		return op{fn: func(b []byte, r *Record) ([]byte, bool) { return r.Flags.appendTo(b), true }}, nil
	case "BYTES_RECEIVED":
		return num(func(r *Record) (int64, bool) { return r.BytesReceived, true }), nil
	case "BYTES_SENT":
		return num(func(r *Record) (int64, bool) { return r.BytesSent, true }), nil
	case "DURATION":
		return ms(func(r *Record) time.Duration { return r.Duration }), nil
	case "REQUEST_DURATION":
		return ms(func(r *Record) time.Duration { return r.RequestDuration }), nil
	case "RESPONSE_DURATION":
		return ms(func(r *Record) time.Duration { return r.ResponseDuration }), nil
	case "RESPONSE_TX_DURATION":
		return ms(func(r *Record) time.Duration { return r.ResponseTxDuration }), nil
	case "UPSTREAM_HOST", "UPSTREAM_REMOTE_ADDRESS":
		return addr(func(r *Record) netip.AddrPort { return r.UpstreamHost }, true), nil
	case "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		return addr(func(r *Record) netip.AddrPort { return r.UpstreamHost }, false), nil
	case "UPSTREAM_LOCAL_ADDRESS":
		return addr(func(r *Record) netip.AddrPort { return r.UpstreamLocal }, true), nil
	case "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		return addr(func(r *Record) netip.AddrPort { return r.UpstreamLocal }, false), nil
	case "UPSTREAM_CLUSTER":
		return str(func(r *Record) string { return r.UpstreamCluster }), nil
	case "UPSTREAM_TRANSPORT_FAILURE_REASON":
		return str(func(r *Record) string { return r.UpstreamFailureReason }), nil
	case "DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS":
		return addr(func(r *Record) netip.AddrPort { return r.DownstreamRemote }, true), nil
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT":
		return addr(func(r *Record) netip.AddrPort { return r.DownstreamRemote }, false), nil
	case "DOWNSTREAM_LOCAL_ADDRESS":
		return addr(func(r *Record) netip.AddrPort { return r.DownstreamLocal }, true), nil
	case "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		return addr(func(r *Record) netip.AddrPort { return r.DownstreamLocal }, false), nil
	case "DOWNSTREAM_LOCAL_PORT":
		return num(func(r *Record) (int64, bool) {
			return int64(r.DownstreamLocal.Port()), r.DownstreamLocal.IsValid()
		}), nil
	case "DOWNSTREAM_PEER_URI_SAN":
		return str(func(r *Record) string { return r.DownstreamPeerURISAN }), nil
	case "DOWNSTREAM_LOCAL_URI_SAN":
		return str(func(r *Record) string { return r.DownstreamLocalURISAN }), nil
	case "REQUESTED_SERVER_NAME":
		return str(func(r *Record) string { return r.RequestedServerName }), nil
	case "CONNECTION_TERMINATION_DETAILS":
		return str(func(r *Record) string { return r.TerminationDetails }), nil
	case "ROUTE_NAME":
		return str(func(r *Record) string { return r.RouteName }), nil
	case "CONNECTION_ID":
		return num(func(r *Record) (int64, bool) { return int64(r.ConnectionID), true }), nil
	case "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return num(func(r *Record) (int64, bool) { return int64(r.AttemptCount), r.AttemptCount > 0 }), nil
	case "HOSTNAME":
		host, _ := os.Hostname()
		return str(func(*Record) string { return host }), nil
	}
	return op{}, fmt.Errorf("is not a command operator shunt knows")
}

func appendMax(b []byte, v string, maxLen int) []byte {
	if maxLen >= 0 && len(v) > maxLen {
		v = v[:maxLen]
	}
	return append(b, v...)
}

// headerOp is %REQ(X?Y):Z%, %RESP(…)% and %TRAILER(…)%: header X, else Y,
// at most Z bytes. The request's pseudo-headers (:method, :path,
// :authority, :scheme) come from the request line.
func headerOp(kind, arg string, maxLen int) (op, error) {
	first, alt, _ := strings.Cut(arg, "?")
	if first == "" {
		return op{}, fmt.Errorf("give a header name")
	}
	names := []string{strings.ToLower(first)}
	if alt != "" {
		names = append(names, strings.ToLower(alt))
	}
	// pseudo is a request pseudo-header's value from the request line.
	pseudo := func(r *Record, name string) (string, bool) {
		switch name {
		case ":method":
			return r.Method, true
		case ":path":
			return r.Path, true
		case ":authority", "host":
			return r.Authority, true
		case ":scheme":
			return r.Scheme, true
		}
		return "", false
	}
	return op{fn: func(b []byte, r *Record) ([]byte, bool) {
		for _, n := range names {
			if kind == "REQ" {
				if v, ok := pseudo(r, n); ok {
					if v == "" {
						continue
					}
					return appendMax(b, v, maxLen), true
				}
			}
			if kind == "RESP" && n == ":status" {
				if r.ResponseCode == 0 {
					continue
				}
				return strconv.AppendInt(b, int64(r.ResponseCode), 10), true
			}
			h := r.Request
			switch kind {
			case "RESP":
				h = r.Response
			case "TRAILER":
				h = r.Trailers
			}
			if h == nil {
				continue
			}
			if v, ok := h.Get(n); ok && len(v) > 0 {
				if maxLen >= 0 && len(v) > maxLen {
					v = v[:maxLen]
				}
				return append(b, v...), true
			}
		}
		return b, false
	}}, nil
}
