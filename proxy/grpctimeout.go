package proxy

import (
	"time"
)

// grpcTimeout reads a grpc-timeout header ("100m": 100 ms; units H, M,
// S, m, u, n), as gRPC's HTTP/2 protocol spells it.
func grpcTimeout(v []byte) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// timeoutFor is the route's timeout for a request: the route's own, or,
// where the route honours grpc-timeout (max_stream_duration's
// grpc_timeout_header_max), the request's, at most that maximum (0: no
// maximum) and less the offset.
func (rt *route) timeoutFor(r requestView) time.Duration {
	if !rt.honourGRPCTimeout {
		return rt.timeout
	}
	v, ok := r.header("grpc-timeout")
	if !ok {
		return rt.timeout
	}
	d, ok := grpcTimeout(v)
	if !ok {
		return rt.timeout
	}
	if rt.grpcTimeoutMax > 0 && d > rt.grpcTimeoutMax {
		d = rt.grpcTimeoutMax
	}
	if rt.grpcTimeoutOffset > 0 && d > rt.grpcTimeoutOffset {
		d -= rt.grpcTimeoutOffset
	}
	return d
}
