package webhook

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Outcomes of a request, the label values of shunt_webhook_requests_total.
const (
	outcomeInjected  = "injected" // the pod was patched
	outcomeSkipped   = "skipped"  // the pod opted out, or was injected already
	outcomeDenied    = "denied"   // the pod was refused (UID collision, bad annotation, …)
	outcomeIgnored   = "ignored"  // not a pod being created
	outcomeBad       = "bad_request"
	outcomeTimeout   = "timeout"   // answered 503: the review ran past the handler timeout
	outcomeThrottled = "throttled" // answered 429: too many reviews under way
)

var outcomes = []string{outcomeInjected, outcomeSkipped, outcomeDenied, outcomeIgnored, outcomeBad, outcomeTimeout, outcomeThrottled}

// latencyBuckets are the upper bounds of the handling-time histogram.
var latencyBuckets = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, time.Second,
}

// Metrics counts requests and how long they took, for Prometheus.
type Metrics struct {
	mu       sync.Mutex
	requests map[string]uint64
	buckets  []uint64 // one per latencyBuckets, then +Inf
	sum      time.Duration

	certReloads   atomic.Uint64
	certNotAfter  atomic.Int64 // unix seconds
	reloadFailure atomic.Uint64
}

// NewMetrics returns zeroed metrics.
func NewMetrics() *Metrics {
	return &Metrics{requests: map[string]uint64{}, buckets: make([]uint64, len(latencyBuckets)+1)}
}

func (m *Metrics) observe(outcome string, took time.Duration) {
	if m == nil {
		return
	}
	i := 0
	for i < len(latencyBuckets) && took > latencyBuckets[i] {
		i++
	}
	m.mu.Lock()
	m.requests[outcome]++
	m.buckets[i]++
	m.sum += took
	m.mu.Unlock()
}

// Requests is how many requests ended with outcome.
func (m *Metrics) Requests(outcome string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests[outcome]
}

// WritePrometheus writes the metrics in Prometheus' text format.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.mu.Lock()
	requests := make(map[string]uint64, len(m.requests))
	for k, v := range m.requests {
		requests[k] = v
	}
	buckets := append([]uint64(nil), m.buckets...)
	sum := m.sum
	m.mu.Unlock()

	fmt.Fprintf(w, "# HELP shunt_webhook_requests_total Admission requests, by outcome.\n# TYPE shunt_webhook_requests_total counter\n")
	for _, o := range outcomes {
		fmt.Fprintf(w, "shunt_webhook_requests_total{outcome=%q} %d\n", o, requests[o])
	}
	fmt.Fprintf(w, "# HELP shunt_webhook_request_duration_seconds Time from reading a request to writing its answer.\n# TYPE shunt_webhook_request_duration_seconds histogram\n")
	var cum uint64
	for i, b := range latencyBuckets {
		cum += buckets[i]
		fmt.Fprintf(w, "shunt_webhook_request_duration_seconds_bucket{le=\"%g\"} %d\n", b.Seconds(), cum)
	}
	cum += buckets[len(latencyBuckets)]
	fmt.Fprintf(w, "shunt_webhook_request_duration_seconds_bucket{le=\"+Inf\"} %d\n", cum)
	fmt.Fprintf(w, "shunt_webhook_request_duration_seconds_sum %g\nshunt_webhook_request_duration_seconds_count %d\n", sum.Seconds(), cum)
	fmt.Fprintf(w, "# HELP shunt_webhook_certificate_reloads_total Serving certificates loaded, the first included.\n# TYPE shunt_webhook_certificate_reloads_total counter\nshunt_webhook_certificate_reloads_total %d\n", m.certReloads.Load())
	fmt.Fprintf(w, "# HELP shunt_webhook_certificate_reload_failures_total Changed certificate files that could not be loaded (the previous certificate stays).\n# TYPE shunt_webhook_certificate_reload_failures_total counter\nshunt_webhook_certificate_reload_failures_total %d\n", m.reloadFailure.Load())
	fmt.Fprintf(w, "# HELP shunt_webhook_certificate_expiry_timestamp_seconds When the serving certificate expires.\n# TYPE shunt_webhook_certificate_expiry_timestamp_seconds gauge\nshunt_webhook_certificate_expiry_timestamp_seconds %d\n", m.certNotAfter.Load())
}
