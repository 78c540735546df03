package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// retryPolicy is Envoy's RetryPolicy: which failures are tried again, how
// often, how long each try may take, and how long to wait in between.
type retryPolicy struct {
	on          retryOn
	statusCodes []int // retriable-status-codes
	numRetries  int
	perTry      time.Duration // 0: only the route's timeout
	// backoff is jittered exponential: a try waits a random time up to
	// base × 2^(retries so far), at most max.
	backoffBase, backoffMax time.Duration
	// previousHosts avoids, where it can, the endpoints already tried
	// (the previous_hosts retry host predicate), picking up to
	// hostAttempts times.
	previousHosts bool
	hostAttempts  int
	// headers are retriable_headers: a response that has any is tried
	// again (retry_on retriable-headers).
	headers []headerMatcher
}

// responseHeaders is what retriable_headers reads of a response.
type responseHeaders interface {
	Get(lowerName string) ([]byte, bool)
}

// respView lets a header matcher read a response's headers.
type respView struct{ h responseHeaders }

func (r respView) header(name string) ([]byte, bool) { return r.h.Get(name) }

// retriesHeaders says whether a response's headers ask for a retry.
func (p *retryPolicy) retriesHeaders(h responseHeaders) bool {
	if p.on&retryRetriableHeaders == 0 {
		return false
	}
	for i := range p.headers {
		if p.headers[i].match(respView{h}) {
			return true
		}
	}
	return false
}

// retryOn is a retry_on set.
type retryOn uint32

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRefusedStream
	retryRetriable4xx
	retryStatusCodes
	retryGRPCCancelled
	retryGRPCDeadlineExceeded
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryRetriableHeaders
)

var retryOnNames = map[string]retryOn{
	"5xx": retry5xx, "gateway-error": retryGatewayError, "reset": retryReset, "connect-failure": retryConnectFailure,
	"refused-stream": retryRefusedStream, "retriable-4xx": retryRetriable4xx, "retriable-status-codes": retryStatusCodes,
	"cancelled": retryGRPCCancelled, "deadline-exceeded": retryGRPCDeadlineExceeded,
	"resource-exhausted": retryGRPCResourceExhausted, "unavailable": retryGRPCUnavailable,
	"retriable-headers": retryRetriableHeaders,
}

// parseRetryOn reads a retry_on list ("5xx,reset").
func parseRetryOn(s string) (retryOn, error) {
	var on retryOn
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		bit, ok := retryOnNames[name]
		if !ok {
			names := make([]string, 0, len(retryOnNames))
			for n := range retryOnNames {
				names = append(names, n)
			}
			slices.Sort(names)
			return 0, fmt.Errorf("%q is not a retry_on condition shunt implements (%s)", name, strings.Join(names, ", "))
		}
		on |= bit
	}
	return on, nil
}

// failure is how an attempt failed, as retry_on sees it.
type failure uint8

const (
	failConnect failure = iota // no connection to the endpoint
	failReset                  // the upstream reset or closed before a response
	failPerTry                 // the attempt ran out of its per_try_timeout
)

// retriesFailure says whether the policy tries again after f.
func (p *retryPolicy) retriesFailure(f failure) bool {
	switch f {
	case failConnect:
		return p.on&(retry5xx|retryGatewayError|retryConnectFailure|retryReset) != 0
	case failReset:
		return p.on&(retry5xx|retryGatewayError|retryReset) != 0
	}
	return p.on&(retry5xx|retryGatewayError|retryReset) != 0 // a per-try timeout
}

// retriesStatus says whether the policy tries again after a response
// with this status (and gRPC status, for a trailers-only response).
func (p *retryPolicy) retriesStatus(code int, grpcStatus []byte) bool {
	switch {
	case p.on&retry5xx != 0 && code >= 500 && code <= 599,
		p.on&retryGatewayError != 0 && (code == 502 || code == 503 || code == 504),
		p.on&retryRetriable4xx != 0 && code == 409,
		p.on&retryStatusCodes != 0 && slices.Contains(p.statusCodes, code):
		return true
	}
	if len(grpcStatus) == 0 {
		return false
	}
	s, err := strconv.Atoi(string(grpcStatus))
	if err != nil {
		return false
	}
	switch {
	case s == 1 && p.on&retryGRPCCancelled != 0, s == 4 && p.on&retryGRPCDeadlineExceeded != 0,
		s == 8 && p.on&retryGRPCResourceExhausted != 0, s == 14 && p.on&retryGRPCUnavailable != 0:
		return true
	}
	return false
}

// backoff waits before retry n (1 for the first), jittered as Envoy's.
func (p *retryPolicy) backoff(n int) {
	limit := p.backoffBase << min(n-1, 20)
	if limit > p.backoffMax || limit <= 0 {
		limit = p.backoffMax
	}
	if limit > 0 {
		time.Sleep(time.Duration(rand.Int64N(int64(limit))))
	}
}

// repick chooses the endpoint for a retry: with previous_hosts, one not
// tried yet if the cluster has one within hostAttempts picks.
func (p *retryPolicy) repick(cl *cluster, dst netip.AddrPort, tried []netip.AddrPort) (netip.AddrPort, error) {
	ep, err := cl.pick(dst)
	for i := 1; err == nil && p.previousHosts && i < p.hostAttempts && slices.Contains(tried, ep); i++ {
		ep, err = cl.pick(dst)
	}
	return ep, err
}

// tryDeadline is when an attempt starting now must have its response:
// its per-try timeout, within the route's deadline (zero: none).
func (p *retryPolicy) tryDeadline(now, route time.Time) time.Time {
	if p == nil || p.perTry == 0 {
		return route
	}
	d := now.Add(p.perTry)
	if !route.IsZero() && route.Before(d) {
		return route
	}
	return d
}
