package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
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

func stat[T any](scope, name, help string, labels []string, kind prometheus.ValueType, get func(*T) uint64) statDesc[T] {
	return statDesc[T]{prometheus.NewDesc("envoy_"+scope+name, help, labels, nil), kind, get}
}

var (
	clusterLabels = []string{"cluster_name"}
	routeLabels   = []string{"envoy_virtual_host", "envoy_route"}
	hcmLabels     = []string{"envoy_http_conn_manager_prefix"}
)

// rqStatDescs are the stats an rqStats keeps, under a scope.
func rqStatDescs(scope string, labels []string) []statDesc[rqStats] {
	c := prometheus.CounterValue
	return []statDesc[rqStats]{
		stat(scope, "upstream_rq_total", "Requests sent upstream (each try).", labels, c, func(s *rqStats) uint64 { return s.total.Load() }),
		stat(scope, "upstream_rq_retry", "Retries made.", labels, c, func(s *rqStats) uint64 { return s.retry.Load() }),
		stat(scope, "upstream_rq_timeout", "Requests whose route or per-try timeout passed (504 UT).", labels, c, func(s *rqStats) uint64 { return s.timeout.Load() }),
		stat(scope, "upstream_rq_retry_success", "Requests a retry answered.", labels, c, func(s *rqStats) uint64 { return s.retrySuccess.Load() }),
		stat(scope, "upstream_rq_retry_limit_exceeded", "Requests not retried again for num_retries (URX).", labels, c, func(s *rqStats) uint64 { return s.retryLimit.Load() }),
	}
}

var (
	clusterRq = rqStatDescs("cluster_", clusterLabels)
	routeRq   = append(rqStatDescs("vhost_route_", routeLabels),
		stat("vhost_route_", "upstream_rq_retry_overflow", "Retries not made for the cluster's max_retries or retry budget.", routeLabels,
			prometheus.CounterValue, func(s *rqStats) uint64 { return s.retryOverflow.Load() }))
	clusterOwn = []statDesc[cluster]{
		stat("cluster_", "upstream_cx_overflow", "Connections refused by the cluster's max_connections circuit breaker.", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.cb.cxOverflow.Load() }),
		stat("cluster_", "upstream_rq_pending_overflow", "Requests refused by the cluster's max_requests or max_pending_requests circuit breaker (503 UO).", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.cb.rqOverflow.Load() }),
		stat("cluster_", "upstream_rq_retry_overflow", "Retries not made for the cluster's max_retries or retry budget.", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.cb.retryOverflow.Load() }),
		stat("cluster_", "outlier_detection_ejections_enforced_total", "Ejections outlier detection has made.", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.ejectionsTotal.Load() }),
		stat("cluster_", "upstream_cx_total", "Connections opened to the cluster's endpoints.", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.stats.cxTotal.Load() }),
		stat("cluster_", "upstream_cx_connect_fail", "Connections that could not be opened.", clusterLabels,
			prometheus.CounterValue, func(c *cluster) uint64 { return c.stats.cxConnectFail.Load() }),
	}
	clusterMembers = []statDesc[endpointCounts]{
		stat("cluster_", "outlier_detection_ejections_active", "Endpoints outlier detection has ejected now.", clusterLabels,
			prometheus.GaugeValue, func(e *endpointCounts) uint64 { return e.ejected }),
		stat("cluster_", "membership_healthy", "Endpoints neither a health check nor outlier detection excludes.", clusterLabels,
			prometheus.GaugeValue, func(e *endpointCounts) uint64 { return e.healthy }),
		stat("cluster_", "membership_total", "Endpoints of the cluster.", clusterLabels,
			prometheus.GaugeValue, func(e *endpointCounts) uint64 { return e.total }),
	}
	hcmOwn = []statDesc[hcmStats]{
		stat("http_", "downstream_rq_total", "Requests the connection manager answered.", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.rqTotal.Load() }),
		stat("http_", "downstream_rq_timeout", "Requests whose body outlasted request_timeout (408).", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.rqTimeout.Load() }),
		stat("http_", "no_route", "Requests no route matched (404 NR).", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.noRoute.Load() }),
		stat("http_", "no_cluster", "Requests whose route's cluster does not exist (503 NC).", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.noCluster.Load() }),
		stat("http_", "rq_redirect", "Requests answered with a redirect.", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.redirect.Load() }),
		stat("http_", "rq_direct_response", "Requests answered with a direct response.", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.direct.Load() }),
		stat("http_", "rq_total", "Requests a route matched.", hcmLabels,
			prometheus.CounterValue, func(s *hcmStats) uint64 { return s.routed.Load() }),
	}
	clusterClass   = classDesc("cluster_", "upstream_rq_xx", clusterLabels)
	clusterCode    = codeDesc("cluster_", clusterLabels)
	clusterTime    = timeDesc("cluster_", clusterLabels)
	routeClass     = classDesc("vhost_route_", "upstream_rq_xx", routeLabels)
	routeCode      = codeDesc("vhost_route_", routeLabels)
	routeTime      = timeDesc("vhost_route_", routeLabels)
	hcmClass       = classDesc("http_", "downstream_rq_xx", hcmLabels)
	responseLabels = func(l []string, tag string) []string { return append(append([]string{}, l...), tag) }
)

func classDesc(scope, name string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("envoy_"+scope+name, "Responses by status class.", responseLabels(labels, "envoy_response_code_class"), nil)
}

func codeDesc(scope string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("envoy_"+scope+"upstream_rq", "Upstream responses by status code.", responseLabels(labels, "envoy_response_code"), nil)
}

func timeDesc(scope string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("envoy_"+scope+"upstream_rq_time", "Time of requests an upstream answered, retries included (ms).", labels, nil)
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
}
