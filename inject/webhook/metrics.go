package webhook

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
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

// latencyBuckets are the upper bounds of the handling-time histogram, in
// seconds.
var latencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

// Metrics counts requests and how long they took, and the serving
// certificate's reloads, in a registry of its own.
type Metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	latency       prometheus.Histogram
	certReloads   prometheus.Counter
	reloadFailure prometheus.Counter
	certNotAfter  prometheus.Gauge
}

// NewMetrics returns zeroed metrics, every outcome's series present.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shunt_webhook_requests_total",
			Help: "Admission requests, by outcome."}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shunt_webhook_request_duration_seconds",
			Help: "Time from reading a request to writing its answer.", Buckets: latencyBuckets}),
		certReloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "shunt_webhook_certificate_reloads_total",
			Help: "Serving certificates loaded, the first included."}),
		reloadFailure: prometheus.NewCounter(prometheus.CounterOpts{Name: "shunt_webhook_certificate_reload_failures_total",
			Help: "Changed certificate files that could not be loaded (the previous certificate stays)."}),
		certNotAfter: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shunt_webhook_certificate_expiry_timestamp_seconds",
			Help: "When the serving certificate expires."}),
	}
	for _, o := range outcomes {
		m.requests.WithLabelValues(o)
	}
	m.reg.MustRegister(m.requests, m.latency, m.certReloads, m.reloadFailure, m.certNotAfter)
	return m
}

func (m *Metrics) observe(outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(outcome).Inc()
	m.latency.Observe(took.Seconds())
}

// certLoaded counts a certificate loaded and records when it expires.
func (m *Metrics) certLoaded(notAfter time.Time) {
	m.certReloads.Inc()
	m.certNotAfter.Set(float64(notAfter.Unix()))
}

// Requests is how many requests ended with outcome.
func (m *Metrics) Requests(outcome string) uint64 {
	return uint64(value(m.requests.WithLabelValues(outcome)))
}

// Handler serves the metrics in Prometheus' exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// value reads a counter's or gauge's value.
func value(c prometheus.Metric) float64 {
	var d dto.Metric
	_ = c.Write(&d)
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
