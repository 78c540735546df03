package proxy

import (
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shunt-dev/shunt/proxy/tracing"
)

// envoyStats is the collector of Envoy's stats: clusters
// (cluster.<name>.*), connection managers (http.<stat_prefix>.*) and
// routes with a stat_prefix (vhost.<virtual host>.route.<stat_prefix>.*),
// named for Prometheus as Envoy's tag extraction names them
// (envoy_cluster_upstream_rq_xx{cluster_name, envoy_response_code_class}).
// The cluster's tag is Istio's cluster_name.
type envoyStats struct{ p *Proxy }

// statDesc is one stat of a scope: its Prometheus description and how it
// is read.
type statDesc[T any] struct {
	d    *prometheus.Desc
	kind prometheus.ValueType
	get  func(*T) uint64
}

// statScope is where a family of stats lives: the Prometheus name's
// prefix after envoy_, and the tags the dotted name's parts became.
type statScope struct {
	prefix string
	labels []string
}

var (
	clusterScope = statScope{"cluster_", []string{"cluster_name"}}
	routeScope   = statScope{"vhost_route_", []string{"envoy_virtual_host", "envoy_route"}}
	hcmScope     = statScope{"http_", []string{"envoy_http_conn_manager_prefix"}}
)

// statSpec is a stat's name, help and reader.
type statSpec[T any] struct {
	name, help string
	get        func(*T) uint64
}

func stats[T any](sc statScope, kind prometheus.ValueType, specs ...statSpec[T]) []statDesc[T] {
	out := make([]statDesc[T], len(specs))
	for i, s := range specs {
		out[i] = statDesc[T]{prometheus.NewDesc("envoy_"+sc.prefix+s.name, s.help, sc.labels, nil), kind, s.get}
	}
	return out
}

// rqStatSpecs are the stats an rqStats keeps.
var rqStatSpecs = []statSpec[rqStats]{
	{"upstream_rq_total", "Requests sent upstream (each try).", func(s *rqStats) uint64 { return s.total.Load() }},
	{"upstream_rq_retry", "Retries made.", func(s *rqStats) uint64 { return s.retry.Load() }},
	{"upstream_rq_timeout", "Requests whose route or per-try timeout passed (504 UT).", func(s *rqStats) uint64 { return s.timeout.Load() }},
	{"upstream_rq_retry_success", "Requests a retry answered.", func(s *rqStats) uint64 { return s.retrySuccess.Load() }},
	{"upstream_rq_retry_limit_exceeded", "Requests not retried again for num_retries (URX).", func(s *rqStats) uint64 { return s.retryLimit.Load() }},
}

const retryOverflowHelp = "Retries not made for the cluster's max_retries or retry budget."

var (
	clusterRq = stats(clusterScope, prometheus.CounterValue, rqStatSpecs...)
	routeRq   = stats(routeScope, prometheus.CounterValue, append(rqStatSpecs,
		statSpec[rqStats]{"upstream_rq_retry_overflow", retryOverflowHelp, func(s *rqStats) uint64 { return s.retryOverflow.Load() }})...)
	clusterOwn = stats(clusterScope, prometheus.CounterValue, []statSpec[cluster]{
		{"upstream_cx_overflow", "Connections refused by the cluster's max_connections circuit breaker.", func(c *cluster) uint64 { return c.cb.cxOverflow.Load() }},
		{"upstream_rq_pending_overflow", "Requests refused by the cluster's max_requests or max_pending_requests circuit breaker (503 UO).",
			func(c *cluster) uint64 { return c.cb.rqOverflow.Load() }},
		{"upstream_rq_retry_overflow", retryOverflowHelp, func(c *cluster) uint64 { return c.cb.retryOverflow.Load() }},
		{"outlier_detection_ejections_enforced_total", "Ejections outlier detection has made.", func(c *cluster) uint64 { return c.ejectionsTotal.Load() }},
		{"upstream_cx_total", "Connections opened to the cluster's endpoints.", func(c *cluster) uint64 { return c.stats.cxTotal.Load() }},
		{"upstream_cx_connect_fail", "Connections that could not be opened.", func(c *cluster) uint64 { return c.stats.cxConnectFail.Load() }},
	}...)
	clusterMembers = stats(clusterScope, prometheus.GaugeValue, []statSpec[endpointCounts]{
		{"outlier_detection_ejections_active", "Endpoints outlier detection has ejected now.", func(e *endpointCounts) uint64 { return e.ejected }},
		{"membership_healthy", "Endpoints neither a health check nor outlier detection excludes.", func(e *endpointCounts) uint64 { return e.healthy }},
		{"membership_total", "Endpoints of the cluster.", func(e *endpointCounts) uint64 { return e.total }},
	}...)
	hcmOwn = stats(hcmScope, prometheus.CounterValue, []statSpec[hcmStats]{
		{"downstream_rq_total", "Requests the connection manager answered.", func(s *hcmStats) uint64 { return s.rqTotal.Load() }},
		{"downstream_rq_timeout", "Requests whose body outlasted request_timeout (408).", func(s *hcmStats) uint64 { return s.rqTimeout.Load() }},
		{"no_route", "Requests no route matched (404 NR).", func(s *hcmStats) uint64 { return s.noRoute.Load() }},
		{"no_cluster", "Requests whose route's cluster does not exist (503 NC).", func(s *hcmStats) uint64 { return s.noCluster.Load() }},
		{"rq_redirect", "Requests answered with a redirect.", func(s *hcmStats) uint64 { return s.redirect.Load() }},
		{"rq_direct_response", "Requests answered with a direct response.", func(s *hcmStats) uint64 { return s.direct.Load() }},
		{"rq_total", "Requests a route matched.", func(s *hcmStats) uint64 { return s.routed.Load() }},
		{"rbac_denied", "Requests an RBAC filter denied (403).", func(s *hcmStats) uint64 { return s.rbacDenied.Load() }},
		{"tracing_random_sampling", "Requests traced by the random sampling rate (or their caller's decision).",
			func(s *hcmStats) uint64 { return s.tracing[tracing.RandomSampled].Load() }},
		{"tracing_client_enabled", "Requests traced for their x-client-trace-id.", func(s *hcmStats) uint64 { return s.tracing[tracing.ClientForced].Load() }},
		{"tracing_service_forced", "Requests traced for their x-envoy-force-trace.", func(s *hcmStats) uint64 { return s.tracing[tracing.ServiceForced].Load() }},
		{"tracing_not_traceable", "Requests not traced.", func(s *hcmStats) uint64 { return s.tracing[tracing.NotTraceable].Load() }},
	}...)
	clusterClass = clusterScope.desc("upstream_rq_xx", "Responses by status class.", "envoy_response_code_class")
	clusterCode  = clusterScope.desc("upstream_rq", "Upstream responses by status code.", "envoy_response_code")
	clusterTime  = clusterScope.desc("upstream_rq_time", rqTimeHelp)
	routeClass   = routeScope.desc("upstream_rq_xx", "Responses by status class.", "envoy_response_code_class")
	routeCode    = routeScope.desc("upstream_rq", "Upstream responses by status code.", "envoy_response_code")
	routeTime    = routeScope.desc("upstream_rq_time", rqTimeHelp)
	hcmClass     = hcmScope.desc("downstream_rq_xx", "Responses by status class.", "envoy_response_code_class")
)

const rqTimeHelp = "Time of requests an upstream answered, retries included (ms)."

// The OpenTelemetry tracer's counters (tracing.opentelemetry.*), summed
// over the proxy's exporters: spans_sent is Envoy's; spans_dropped (a
// full queue) and spans_failed (an export that failed) are shunt's.
var tracingSpans = []struct {
	d   *prometheus.Desc
	get func(*tracing.Exporter) uint64
}{
	{prometheus.NewDesc("envoy_tracing_opentelemetry_spans_sent", "Spans the collector took.", nil, nil), func(e *tracing.Exporter) uint64 { return e.Sent.Load() }},
	{prometheus.NewDesc("envoy_tracing_opentelemetry_spans_dropped", "Spans dropped for a full export queue (a slow or absent collector).", nil, nil),
		func(e *tracing.Exporter) uint64 { return e.Dropped.Load() }},
	{prometheus.NewDesc("envoy_tracing_opentelemetry_spans_failed", "Spans lost to a failed export.", nil, nil), func(e *tracing.Exporter) uint64 { return e.Failed.Load() }},
}

// desc describes one stat of the scope, with more tags if any.
func (sc statScope) desc(name, help string, tags ...string) *prometheus.Desc {
	return prometheus.NewDesc("envoy_"+sc.prefix+name, help, append(slices.Clone(sc.labels), tags...), nil)
}

// endpointCounts are a cluster's endpoints now.
type endpointCounts struct{ ejected, healthy, total uint64 }

func (e envoyStats) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, clusterRq)
	describe(ch, routeRq)
	describe(ch, clusterOwn)
	describe(ch, clusterMembers)
	describe(ch, hcmOwn)
	for _, d := range []*prometheus.Desc{clusterClass, clusterCode, clusterTime, routeClass, routeCode, routeTime, hcmClass} {
		ch <- d
	}
	for _, t := range tracingSpans {
		ch <- t.d
	}
}

func describe[T any](ch chan<- *prometheus.Desc, descs []statDesc[T]) {
	for _, s := range descs {
		ch <- s.d
	}
}

func emit[T any](ch chan<- prometheus.Metric, descs []statDesc[T], v *T, labels ...string) {
	for _, s := range descs {
		ch <- prometheus.MustNewConstMetric(s.d, s.kind, float64(s.get(v)), labels...)
	}
}

// responses emits an rqStats' answers by class, by code and their time.
func responses(ch chan<- prometheus.Metric, s *rqStats, class, code, time *prometheus.Desc, labels ...string) {
	emitClasses(ch, &s.class, class, labels...)
	if codes := s.codes.Load(); codes != nil {
		for i := range codes {
			if n := codes[i].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(code, prometheus.CounterValue, float64(n), append(labels, strconv.Itoa(100+i))...)
			}
		}
	}
	n, sum, buckets := s.time.snapshot()
	ch <- prometheus.MustNewConstHistogram(time, n, sum, buckets, labels...)
}

func emitClasses(ch chan<- prometheus.Metric, classes *[6]atomic.Uint64, d *prometheus.Desc, labels ...string) {
	for c := 1; c <= 5; c++ {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(classes[c].Load()), append(labels, strconv.Itoa(c))...)
	}
}

func (e envoyStats) Collect(ch chan<- prometheus.Metric) {
	for _, cl := range e.p.gen.Load().clusters {
		emit(ch, clusterRq, &cl.stats.rqStats, cl.name)
		responses(ch, &cl.stats.rqStats, clusterClass, clusterCode, clusterTime, cl.name)
		emit(ch, clusterOwn, cl, cl.name)
		if s := cl.endpoints.Load(); s != nil {
			var n endpointCounts
			for _, ep := range s.all {
				if ep.health.ejected.Load() {
					n.ejected++
				}
				if ep.healthy() {
					n.healthy++
				}
			}
			n.total = uint64(len(s.all))
			emit(ch, clusterMembers, &n, cl.name)
		}
	}
	e.p.stats.each(func(vhost, prefix string, s *rqStats) {
		emit(ch, routeRq, s, vhost, prefix)
		responses(ch, s, routeClass, routeCode, routeTime, vhost, prefix)
	}, func(prefix string, s *hcmStats) {
		emit(ch, hcmOwn, s, prefix)
		emitClasses(ch, &s.rqClass, hcmClass, prefix)
	})
	for _, t := range tracingSpans {
		var n uint64
		e.p.exporters.each(func(x *tracing.Exporter) { n += t.get(x) })
		ch <- prometheus.MustNewConstMetric(t.d, prometheus.CounterValue, float64(n))
	}
}
