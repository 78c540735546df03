// Package meshgraph is the mesh's live picture: which service calls which,
// how often, how fast, how often it fails and whether over mutual TLS,
// computed from the sidecars' Istio metrics (istio_requests_total and
// istio_request_duration_milliseconds) and drawn as SVG.
package meshgraph

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Node is a service of the mesh, by Istio's canonical service name and
// namespace, or in the graph's workload view a workload; "unknown" for a
// caller the sidecar could not name (a client outside the mesh).
type Node struct {
	Name, Namespace string
	Workload        bool
}

func (n Node) String() string {
	if n.Namespace == "" || n.Namespace == "unknown" {
		return n.Name
	}
	return n.Name + "." + n.Namespace
}

// EdgeKey is a caller and the service it calls.
type EdgeKey struct{ From, To Node }

// Counts are what the sidecars counted of an edge's requests, as
// cumulative counters: all of them, the 5xx among them, those over mutual
// TLS, and their durations (cumulative buckets over Bounds, in ms).
type Counts struct {
	Requests, Errors, MTLS float64
	Buckets                []float64 // cumulative, one per Bounds entry, then +Inf
}

// Bounds are the duration histogram's upper bounds (ms): Envoy's, as
// Istio's metrics have them.
var Bounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Snapshot is every edge's counts at one moment, summed over the sidecars.
type Snapshot map[EdgeKey]*Counts

// Add reads one sidecar's /stats/prometheus text into s. The destination
// sidecar's report of a request is taken (it knows both ends and the
// mutual TLS); a source's report counts only where the destination has
// no sidecar to report it.
func (s Snapshot) Add(r io.Reader) error {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return err
	}
	for _, m := range families["istio_requests_total"].GetMetric() {
		s.AddRequests(metricLabels(m), m.GetCounter().GetValue())
	}
	for _, m := range families["istio_request_duration_milliseconds"].GetMetric() {
		labels := metricLabels(m)
		h := m.GetHistogram()
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) { // the count below is +Inf's
				s.AddBucket(labels, b.GetUpperBound(), float64(b.GetCumulativeCount()))
			}
		}
		s.AddBucket(labels, math.Inf(1), float64(h.GetSampleCount()))
	}
	return nil
}

// Labels give a series' label by name ("" when it has none).
type Labels func(name string) string

func metricLabels(m *dto.Metric) Labels {
	return func(name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
}

// AddRequests counts v requests of an istio_requests_total series, on
// its service edge and its workload edge.
func (s Snapshot) AddRequests(l Labels, v float64) {
	keys, ok := edgesOf(l)
	if !ok {
		return
	}
	for _, key := range keys {
		c := s.counts(key)
		c.Requests += v
		if code, _ := strconv.Atoi(l("response_code")); code >= 500 || code == 0 {
			c.Errors += v
		}
		if l("connection_security_policy") == "mutual_tls" {
			c.MTLS += v
		}
	}
}

// AddBucket counts v requests of an istio_request_duration_milliseconds
// series at or under le (+Inf: all of them).
func (s Snapshot) AddBucket(l Labels, le, v float64) {
	keys, ok := edgesOf(l)
	if !ok {
		return
	}
	for _, key := range keys {
		c := s.counts(key)
		if math.IsInf(le, 1) {
			c.Buckets[len(Bounds)] += v
		} else if i := slices.Index(Bounds, le); i >= 0 {
			c.Buckets[i] += v
		}
	}
}

func (s Snapshot) counts(k EdgeKey) *Counts {
	c := s[k]
	if c == nil {
		c = &Counts{Buckets: make([]float64, len(Bounds)+1)}
		s[k] = c
	}
	return c
}

// edgesOf are the edges a series counts, if it is one the graph takes:
// between services, and between workloads (a destination without a
// sidecar, which has no workload to name, is its service there too).
func edgesOf(label Labels) ([2]EdgeKey, bool) {
	reporter := label("reporter")
	if reporter == "source" && label("destination_workload") != "unknown" {
		return [2]EdgeKey{}, false // the destination's sidecar reports it
	}
	from := Node{Name: orUnknown(label("source_canonical_service")), Namespace: label("source_workload_namespace")}
	to := Node{Name: label("destination_canonical_service"), Namespace: label("destination_service_namespace")}
	if to.Name == "" || to.Name == "unknown" {
		to.Name = label("destination_service_name")
	}
	if to.Namespace == "" || to.Namespace == "unknown" {
		to.Namespace = label("destination_workload_namespace")
	}
	fromW := Node{Name: orUnknown(label("source_workload")), Namespace: label("source_workload_namespace"), Workload: true}
	toW := Node{Name: label("destination_workload"), Namespace: label("destination_workload_namespace"), Workload: true}
	if toW.Name == "" || toW.Name == "unknown" {
		toW.Name, toW.Namespace = to.Name, to.Namespace
	}
	return [2]EdgeKey{{from, to}, {fromW, toW}}, reporter == "source" || reporter == "destination"
}

// Edge is a caller's requests to a service over a window.
type Edge struct {
	EdgeKey
	RPS       float64 // requests per second
	ErrorRate float64 // the share answered 5xx, or not at all (0 to 1)
	P50, P99  float64 // ms; NaN when no request ended in the window
	MTLS      float64 // the share over mutual TLS (0 to 1)
	Requests  float64 // in the window
}

// Graph is the mesh's services and workloads and the calls between them
// over a window (see View).
type Graph struct {
	Nodes   []Node
	Edges   []Edge
	Seconds float64 // the window
}

// View is the graph's services (workloads false) or its workloads.
func (g Graph) View(workloads bool) Graph {
	out := Graph{Seconds: g.Seconds}
	for _, n := range g.Nodes {
		if n.Workload == workloads {
			out.Nodes = append(out.Nodes, n)
		}
	}
	for _, e := range g.Edges {
		if e.From.Workload == workloads {
			out.Edges = append(out.Edges, e)
		}
	}
	return out
}

// Diff is the graph of what happened between two snapshots seconds
// apart: an edge with no request in the window is left out. A counter
// that went down (a sidecar restarted) counts from zero.
func Diff(before, after Snapshot, seconds float64) Graph {
	g := Graph{Seconds: seconds}
	nodes := map[Node]bool{}
	for k, a := range after {
		b := before[k]
		if b == nil {
			b = &Counts{Buckets: make([]float64, len(Bounds)+1)}
		}
		d := delta(a, b)
		if d.Requests <= 0 {
			continue
		}
		e := Edge{EdgeKey: k, Requests: d.Requests, RPS: d.Requests / seconds, ErrorRate: d.Errors / d.Requests, MTLS: d.MTLS / d.Requests,
			P50: quantile(0.5, d.Buckets), P99: quantile(0.99, d.Buckets)}
		g.Edges = append(g.Edges, e)
		nodes[k.From], nodes[k.To] = true, true
	}
	for n := range nodes {
		g.Nodes = append(g.Nodes, n)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return strings.Compare(a.String(), b.String()) })
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return strings.Compare(a.From.String()+" "+a.To.String(), b.From.String()+" "+b.To.String())
	})
	return g
}

func delta(a, b *Counts) Counts {
	sub := func(x, y float64) float64 {
		if x < y {
			return x // restarted
		}
		return x - y
	}
	d := Counts{Requests: sub(a.Requests, b.Requests), Errors: sub(a.Errors, b.Errors), MTLS: sub(a.MTLS, b.MTLS),
		Buckets: make([]float64, len(a.Buckets))}
	for i := range a.Buckets {
		d.Buckets[i] = sub(a.Buckets[i], b.Buckets[i])
	}
	return d
}

// quantile is Prometheus's histogram_quantile over cumulative buckets:
// the bucket where the rank falls, interpolated linearly; the highest
// finite bound when it falls in +Inf.
func quantile(q float64, buckets []float64) float64 {
	total := buckets[len(buckets)-1]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, upper := range Bounds {
		if buckets[i] >= rank {
			in := buckets[i] - below
			if in == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/in
		}
		lower, below = upper, buckets[i]
	}
	return Bounds[len(Bounds)-1]
}
