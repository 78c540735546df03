package proxy

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Direction is which listener a connection came through.
type Direction uint8

// Directions.
const (
	Outbound Direction = iota
	Inbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Result is how a connection ended, for the access log and the metrics.
type Result uint8

// Results. Each is a label value of shunt_proxy_connections_closed_total.
const (
	ResultOK                    Result = iota // both sides closed cleanly
	ResultReset                               // one side reset; the reset was passed on
	ResultIdleTimeout                         // no byte either way for the idle timeout
	ResultDrained                             // still open at the end of a drain
	ResultConnectTimeout                      // the upstream did not answer in time
	ResultConnectRefused                      // the upstream refused
	ResultConnectUnreach                      // no route to the upstream
	ResultConnectError                        // any other failure to connect
	ResultLoop                                // the original destination was the proxy itself
	ResultOverLimit                           // the connection limit was reached
	ResultNoOriginalDst                       // the original destination could not be read
	ResultDownstreamClosed                    // the downstream went away while the upstream was being dialled
	ResultNoChain                             // no filter chain of the listener takes it
	ResultNoHealthyUpstream                   // its cluster has no endpoint
	ResultListenerFilterTimeout               // silent past the listener filters' timeout, which does not continue
	ResultUpstreamOverflow                    // a circuit breaker of its cluster turned it away
	ResultTLSHandshake                        // its chain's TLS handshake failed (a client with no or a wrong certificate, say)
	ResultRBACDenied                          // a network RBAC filter of its chain stopped it
	resultCount
)

var resultNames = [resultCount]string{"ok", "reset", "idle_timeout", "drained", "connect_timeout",
	"connect_refused", "connect_unreachable", "connect_error", "loop_refused", "over_limit", "no_original_dst",
	"downstream_closed", "no_filter_chain", "no_healthy_upstream", "listener_filter_timeout", "upstream_overflow",
	"tls_handshake_failed", "rbac_denied"}

func (r Result) String() string { return resultNames[r] }

// durationBuckets are the upper bounds of the connection duration histogram.
var durationBuckets = []time.Duration{
	time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	500 * time.Millisecond, time.Second, 5 * time.Second, 30 * time.Second, 300 * time.Second,
}

// perDirection is one direction's counters. Only atomics: connections
// update them without taking a lock.
type perDirection struct {
	accepted atomic.Uint64
	active   atomic.Int64
	closed   [resultCount]atomic.Uint64
	bytesUp  atomic.Uint64 // from the downstream peer to the upstream
	bytesDn  atomic.Uint64 // from the upstream back
	buckets  [11]atomic.Uint64
	sumNanos atomic.Uint64
}

// Metrics are the proxy's counters.
type Metrics struct {
	dir [2]perDirection
}

func (m *Metrics) record(d Direction, r Result, up, down int64, took time.Duration) {
	s := &m.dir[d]
	s.closed[r].Add(1)
	s.bytesUp.Add(uint64(up))
	s.bytesDn.Add(uint64(down))
	i := 0
	for i < len(durationBuckets) && took > durationBuckets[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(uint64(took))
}

// Active is the number of connections open in a direction.
func (m *Metrics) Active(d Direction) int64 { return m.dir[d].active.Load() }

// Closed is how many connections in a direction ended with a result.
func (m *Metrics) Closed(d Direction, r Result) uint64 { return m.dir[d].closed[r].Load() }

// Metrics' series, as the Prometheus client describes them.
var (
	descConnections = prometheus.NewDesc("shunt_proxy_connections_total", "Connections accepted.", []string{"direction"}, nil)
	descActive      = prometheus.NewDesc("shunt_proxy_connections_active", "Connections open now.", []string{"direction"}, nil)
	descClosed      = prometheus.NewDesc("shunt_proxy_connections_closed_total",
		"Connections ended, by result; connect_* results are upstream connect failures by reason, loop_refused the loops refused. "+
			"An HTTP connection counts once, however many requests it carried.", []string{"direction", "result"}, nil)
	descBytes = prometheus.NewDesc("shunt_proxy_bytes_total",
		"Bytes forwarded; upstream is from the connecting peer, downstream back to it.", []string{"direction", "flow"}, nil)
	descGoroutines = prometheus.NewDesc("shunt_proxy_goroutines", "Goroutines in the proxy process.", nil, nil)
	descPipes      = prometheus.NewDesc("shunt_proxy_pipes", "Pipes open for splicing, in use or pooled.", nil, nil)
	descFallbacks  = prometheus.NewDesc("shunt_proxy_splice_fallbacks_total",
		"Bulk transfers copied through a buffer because no pipe could be had.", nil, nil)
	descDuration = prometheus.NewDesc("shunt_proxy_connection_duration_seconds", "How long connections lasted.", []string{"direction"}, nil)
)

// Describe and Collect make Metrics a Prometheus collector: the counters
// stay plain atomics on the hot path, read at scrape time.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(m, ch) }

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, d := range []Direction{Outbound, Inbound} {
		s, dir := &m.dir[d], d.String()
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.CounterValue, float64(s.accepted.Load()), dir)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.active.Load()), dir)
		for r := Result(0); r < resultCount; r++ {
			ch <- prometheus.MustNewConstMetric(descClosed, prometheus.CounterValue, float64(s.closed[r].Load()), dir, r.String())
		}
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.bytesUp.Load()), dir, "upstream")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.bytesDn.Load()), dir, "downstream")
		buckets := make(map[float64]uint64, len(durationBuckets))
		var cum uint64
		for i, b := range durationBuckets {
			cum += s.buckets[i].Load()
			buckets[b.Seconds()] = cum
		}
		cum += s.buckets[len(durationBuckets)].Load()
		ch <- prometheus.MustNewConstHistogram(descDuration, cum, time.Duration(s.sumNanos.Load()).Seconds(), buckets, dir)
	}
	ch <- prometheus.MustNewConstMetric(descGoroutines, prometheus.GaugeValue, float64(runtime.NumGoroutine()))
	ch <- prometheus.MustNewConstMetric(descPipes, prometheus.GaugeValue, float64(pipesLive.Load()))
	ch <- prometheus.MustNewConstMetric(descFallbacks, prometheus.CounterValue, float64(spliceFallbacks.Load()))
}
