package proxy

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// httpFilter is an HTTP filter before the router: given a request, it
// lets it on (possibly after a delay, noted in flags), or answers it.
type httpFilter interface {
	// decide is the filter's verdict on a request whose headers r shows:
	// a delay before going on, or a local reply (code > 0).
	decide(r requestView) (delay time.Duration, reply localAnswer)
	// idle says the filter does nothing (Istio's fault and CORS filters
	// on every route but those that configure them): a route leaves it
	// out, and it costs no work per request.
	idle() bool
}

// localAnswer is a filter's own reply: its status (0: none), Envoy's
// flag and details for the log, its body; grpcStatus for a gRPC request.
// headers go on the reply, or with no reply, on the upstream's response.
type localAnswer struct {
	code       int
	grpcStatus int
	flags      accesslog.Flags
	details    string
	body       string
	headers    []headerAdd
}

// fraction is an Envoy FractionalPercent: numerator over denominator.
type fraction struct{ numerator, denominator uint64 }

func (f fraction) hit() bool {
	return f.denominator == 0 || rand.Uint64N(f.denominator) < f.numerator
}

// faultFilter is Envoy's envoy.filters.http.fault: a delay and an abort,
// each to a fraction of requests (those matching headers), fixed or as
// the request's x-envoy-fault-* headers say.
type faultFilter struct {
	headers []headerMatcher
	// delay
	delay        time.Duration
	headerDelay  bool
	delayPercent fraction
	hasDelay     bool
	// abort
	abortStatus, abortGRPC int
	headerAbort            bool
	abortPercent           fraction
	hasAbort               bool
	abortBody              string
	// maxActive bounds faults in progress at once (0: no bound).
	maxActive int64
	mu        sync.Mutex
	active    int64
}

func (f *faultFilter) idle() bool { return !f.hasDelay && !f.hasAbort }

func (f *faultFilter) decide(r requestView) (time.Duration, localAnswer) {
	for i := range f.headers {
		if !f.headers[i].match(r) {
			return 0, localAnswer{}
		}
	}
	if f.maxActive > 0 {
		f.mu.Lock()
		if f.active >= f.maxActive {
			f.mu.Unlock()
			return 0, localAnswer{}
		}
		f.active++
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.active--; f.mu.Unlock() }()
	}
	var delay time.Duration
	if f.hasDelay && f.delayPercent.hit() {
		delay = f.delay
		if f.headerDelay {
			delay = 0
			if v, ok := r.header("x-envoy-fault-delay-request"); ok {
				if ms, err := strconv.ParseUint(string(v), 10, 32); err == nil {
					delay = time.Duration(ms) * time.Millisecond
				}
			}
		}
	}
	if !f.hasAbort || !f.abortPercent.hit() {
		return delay, localAnswer{}
	}
	code, grpc := f.abortStatus, f.abortGRPC
	if f.headerAbort {
		code, grpc = 0, -1
		if v, ok := r.header("x-envoy-fault-abort-request"); ok {
			if n, err := strconv.Atoi(string(v)); err == nil && n >= 200 && n < 600 {
				code = n
			}
		}
		if v, ok := r.header("x-envoy-fault-abort-grpc-request"); ok {
			if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 {
				grpc = n
			}
		}
		if code == 0 && grpc < 0 {
			return delay, localAnswer{}
		}
	}
	body := f.abortBody
	if body == "" {
		body = "fault filter abort"
	}
	if code == 0 {
		code = 200 // a gRPC abort: trailers-only, grpc-status says it
	}
	return delay, localAnswer{code: code, grpcStatus: grpc, flags: accesslog.FaultInjected, details: "fault_filter_abort", body: body}
}

// rateLimiter is Envoy's envoy.filters.http.local_ratelimit: a token
// bucket; a request that finds it empty is answered 429 (where the
// filter is enabled and enforced for it).
type rateLimiter struct {
	maxTokens, perFill int64
	fillInterval       time.Duration
	enabled, enforced  fraction
	status             int
	headers            []headerAdd // on its 429s
	mu                 sync.Mutex
	tokens             int64
	lastFill           time.Time
}

func (l *rateLimiter) idle() bool { return false }

func (l *rateLimiter) decide(requestView) (time.Duration, localAnswer) {
	if !l.enabled.hit() {
		return 0, localAnswer{}
	}
	l.mu.Lock()
	now := time.Now()
	if l.lastFill.IsZero() {
		l.tokens, l.lastFill = l.maxTokens, now
	} else if fills := int64(now.Sub(l.lastFill) / l.fillInterval); fills > 0 {
		l.tokens = min(l.maxTokens, l.tokens+fills*l.perFill)
		l.lastFill = l.lastFill.Add(time.Duration(fills) * l.fillInterval)
	}
	ok := l.tokens > 0
	if ok {
		l.tokens--
	}
	l.mu.Unlock()
	if ok || !l.enforced.hit() {
		return 0, localAnswer{}
	}
	return 0, localAnswer{code: l.status, grpcStatus: 14, flags: accesslog.RateLimited, details: "local_rate_limited", body: "local_rate_limited", headers: l.headers}
}

// runFilters runs the route's filters on a request: it waits out their
// delays (flag DI) and returns the first local answer, if one answers;
// else an answer of no code with the response headers they add.
func (rt *route) runFilters(r requestView, rec *accesslog.Record) (localAnswer, bool) {
	var headers []headerAdd
	for _, f := range rt.filters {
		delay, ans := f.decide(r)
		if delay > 0 {
			rec.Flags |= accesslog.DelayInjected
			time.Sleep(delay)
		}
		if ans.code > 0 {
			ans.headers = append(headers, ans.headers...)
			return ans, true
		}
		headers = append(headers, ans.headers...)
	}
	return localAnswer{headers: headers}, false
}
