package proxy

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"time"
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
	ResultOK                Result = iota // both sides closed cleanly
	ResultReset                           // one side reset; the reset was passed on
	ResultIdleTimeout                     // no byte either way for the idle timeout
	ResultDrained                         // still open at the end of a drain
	ResultConnectTimeout                  // the upstream did not answer in time
	ResultConnectRefused                  // the upstream refused
	ResultConnectUnreach                  // no route to the upstream
	ResultConnectError                    // any other failure to connect
	ResultLoop                            // the original destination was the proxy itself
	ResultOverLimit                       // the connection limit was reached
	ResultNoOriginalDst                   // the original destination could not be read
	ResultDownstreamClosed                // the downstream went away while the upstream was being dialled
	ResultNoChain                         // no filter chain of the listener takes it
	ResultNoHealthyUpstream               // its cluster has no endpoint
	resultCount
)

var resultNames = [resultCount]string{"ok", "reset", "idle_timeout", "drained", "connect_timeout",
	"connect_refused", "connect_unreachable", "connect_error", "loop_refused", "over_limit", "no_original_dst",
	"downstream_closed", "no_filter_chain", "no_healthy_upstream"}

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

// WritePrometheus writes the metrics in Prometheus' text format.
func (m *Metrics) WritePrometheus(w io.Writer) {
	type series struct{ name, kind, help string }
	head := func(s series) { fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", s.name, s.help, s.name, s.kind) }
	each := func(f func(d Direction, s *perDirection)) {
		for _, d := range []Direction{Outbound, Inbound} {
			f(d, &m.dir[d])
		}
	}
	head(series{"shunt_proxy_connections_total", "counter", "Connections accepted."})
	each(func(d Direction, s *perDirection) {
		fmt.Fprintf(w, "shunt_proxy_connections_total{direction=%q} %d\n", d, s.accepted.Load())
	})
	head(series{"shunt_proxy_connections_active", "gauge", "Connections open now."})
	each(func(d Direction, s *perDirection) {
		fmt.Fprintf(w, "shunt_proxy_connections_active{direction=%q} %d\n", d, s.active.Load())
	})
	head(series{"shunt_proxy_connections_closed_total", "counter",
		"Connections ended, by result; connect_* results are upstream connect failures by reason, loop_refused the loops refused."})
	each(func(d Direction, s *perDirection) {
		for r := Result(0); r < resultCount; r++ {
			fmt.Fprintf(w, "shunt_proxy_connections_closed_total{direction=%q,result=%q} %d\n", d, r, s.closed[r].Load())
		}
	})
	head(series{"shunt_proxy_bytes_total", "counter", "Bytes forwarded; upstream is from the connecting peer, downstream back to it."})
	each(func(d Direction, s *perDirection) {
		fmt.Fprintf(w, "shunt_proxy_bytes_total{direction=%q,flow=\"upstream\"} %d\n", d, s.bytesUp.Load())
		fmt.Fprintf(w, "shunt_proxy_bytes_total{direction=%q,flow=\"downstream\"} %d\n", d, s.bytesDn.Load())
	})
	head(series{"shunt_proxy_goroutines", "gauge", "Goroutines in the proxy process; two per open connection."})
	fmt.Fprintf(w, "shunt_proxy_goroutines %d\n", runtime.NumGoroutine())
	head(series{"shunt_proxy_pipes", "gauge", "Pipes open for splicing, in use or pooled."})
	fmt.Fprintf(w, "shunt_proxy_pipes %d\n", pipesLive.Load())
	head(series{"shunt_proxy_splice_fallbacks_total", "counter", "Bulk transfers copied through a buffer because no pipe could be had."})
	fmt.Fprintf(w, "shunt_proxy_splice_fallbacks_total %d\n", spliceFallbacks.Load())
	head(series{"shunt_proxy_connection_duration_seconds", "histogram", "How long connections lasted."})
	each(func(d Direction, s *perDirection) {
		var cum uint64
		for i, b := range durationBuckets {
			cum += s.buckets[i].Load()
			fmt.Fprintf(w, "shunt_proxy_connection_duration_seconds_bucket{direction=%q,le=\"%g\"} %d\n", d, b.Seconds(), cum)
		}
		cum += s.buckets[len(durationBuckets)].Load()
		fmt.Fprintf(w, "shunt_proxy_connection_duration_seconds_bucket{direction=%q,le=\"+Inf\"} %d\n", d, cum)
		fmt.Fprintf(w, "shunt_proxy_connection_duration_seconds_sum{direction=%q} %g\n", d, time.Duration(s.sumNanos.Load()).Seconds())
		fmt.Fprintf(w, "shunt_proxy_connection_duration_seconds_count{direction=%q} %d\n", d, cum)
	})
}
