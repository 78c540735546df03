package proxy

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// statScopes turn Envoy's stats, as the Prometheus families name them,
// back into Envoy's dotted names: the scope's tags go into the name
// where Envoy's tag extraction took them from.
var statScopes = []struct {
	scope  statScope
	format string // the dotted name's scope, its tags in order
}{
	{routeScope, "vhost.%s.route.%s."},
	{clusterScope, "cluster.%s."},
	{hcmScope, "http.%s."},
}

// dottedStat is one stat under its Envoy name.
type dottedStat struct {
	name  string
	value float64
	hist  *dto.Histogram
}

// dottedStats are the Envoy stats among families, under Envoy's names,
// sorted. Families that are not Envoy's (istio_*, shunt_*) have no
// dotted name and are only on /stats/prometheus.
func dottedStats(families []*dto.MetricFamily) []dottedStat {
	var out []dottedStat
	for _, mf := range families {
		if rest, ok := strings.CutPrefix(mf.GetName(), "envoy_tracing_opentelemetry_"); ok && len(mf.GetMetric()) == 1 {
			out = append(out, dottedStat{name: "tracing.opentelemetry." + rest, value: mf.GetMetric()[0].GetCounter().GetValue()})
			continue
		}
		for _, sc := range statScopes {
			rest, ok := strings.CutPrefix(mf.GetName(), "envoy_"+sc.scope.prefix)
			if !ok {
				continue
			}
			// The stats of a filter or feature are under its own name.
			for _, sub := range []string{"outlier_detection", "rbac", "tracing"} {
				if r, ok := strings.CutPrefix(rest, sub+"_"); ok {
					rest = sub + "." + r
					break
				}
			}
			for _, m := range mf.GetMetric() {
				out = append(out, dottedMetric(sc.format, sc.scope.labels, rest, m))
			}
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func dottedMetric(format string, tags []string, rest string, m *dto.Metric) dottedStat {
	vals := make([]any, len(tags))
	for i, t := range tags {
		vals[i] = labelValue(m, t)
	}
	name := fmt.Sprintf(format, vals...) + rest
	if code := labelValue(m, "envoy_response_code"); code != "" {
		name += "_" + code
	}
	if class := labelValue(m, "envoy_response_code_class"); class != "" {
		name = strings.TrimSuffix(name, "_xx") + "_" + class + "xx"
	}
	s := dottedStat{name: name, hist: m.GetHistogram()}
	switch {
	case m.GetCounter() != nil:
		s.value = m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		s.value = m.GetGauge().GetValue()
	}
	return s
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// envoyQuantiles are the quantiles Envoy's /stats prints, in percent.
var envoyQuantiles = []float64{0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100}

// quantile estimates the q-th percentile of a histogram from its
// buckets, linearly within the bucket it falls in (NaN when empty).
func quantile(h *dto.Histogram, q float64) float64 {
	n := float64(h.GetSampleCount())
	if n == 0 {
		return math.NaN()
	}
	target, lower, below := q/100*n, 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, cum := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if cum >= target && cum > below {
			return lower + (upper-lower)*(target-below)/(cum-below)
		}
		lower, below = upper, cum
	}
	return lower // in +Inf: the last finite bound
}

// serveStats is Envoy's /stats: its stats as sorted "name: value" lines
// under Envoy's names, histograms as their quantiles; ?filter=RE keeps
// the names the RE2 expression finds, ?usedonly those that counted
// something; ?format=json is Envoy's JSON, ?format=prometheus the
// Prometheus text (as /stats/prometheus).
func (p *Proxy) serveStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "prometheus" {
		p.servePrometheus(w, r)
		return
	}
	if format != "" && format != "json" && format != "text" {
		http.Error(w, fmt.Sprintf("format %q: say json, prometheus or text", format), http.StatusBadRequest)
		return
	}
	var filter *regexp.Regexp
	if f := q.Get("filter"); f != "" {
		var err error
		if filter, err = regexp.Compile(f); err != nil {
			http.Error(w, fmt.Sprintf("filter: %v", err), http.StatusBadRequest)
			return
		}
	}
	_, usedOnly := q["usedonly"]
	families, err := p.Gather()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var stats []dottedStat
	for _, s := range dottedStats(families) {
		used := s.value != 0 || s.hist.GetSampleCount() > 0
		if (filter == nil || filter.MatchString(s.name)) && (!usedOnly || used) {
			stats = append(stats, s)
		}
	}
	if format == "json" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(statsJSON(stats))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	var b strings.Builder
	for _, s := range stats {
		if s.hist == nil {
			fmt.Fprintf(&b, "%s: %s\n", s.name, strconv.FormatFloat(s.value, 'f', -1, 64))
		}
	}
	for _, s := range stats {
		if s.hist == nil {
			continue
		}
		if s.hist.GetSampleCount() == 0 {
			fmt.Fprintf(&b, "%s: No recorded values\n", s.name)
			continue
		}
		// Envoy prints each quantile of the last interval and of all
		// time; shunt keeps all time only, so the interval is nan.
		b.WriteString(s.name + ":")
		for _, pq := range envoyQuantiles {
			fmt.Fprintf(&b, " P%s(nan,%s)", strconv.FormatFloat(pq, 'f', -1, 64), strconv.FormatFloat(quantile(s.hist, pq), 'g', 4, 64))
		}
		b.WriteString("\n")
	}
	_, _ = w.Write([]byte(b.String()))
}

// statsJSON is Envoy's /stats?format=json shape: counters and gauges as
// name and value, then the histograms' quantiles.
func statsJSON(stats []dottedStat) map[string]any {
	type value struct {
		Interval   *float64 `json:"interval"`
		Cumulative *float64 `json:"cumulative"`
	}
	type computed struct {
		Name   string  `json:"name"`
		Values []value `json:"values"`
	}
	list := []any{}
	var hists []computed
	for _, s := range stats {
		if s.hist == nil {
			list = append(list, map[string]any{"name": s.name, "value": s.value})
			continue
		}
		c := computed{Name: s.name}
		for _, pq := range envoyQuantiles {
			v := quantile(s.hist, pq)
			if math.IsNaN(v) {
				c.Values = append(c.Values, value{})
			} else {
				c.Values = append(c.Values, value{Cumulative: &v})
			}
		}
		hists = append(hists, c)
	}
	if len(hists) > 0 {
		list = append(list, map[string]any{"histograms": map[string]any{"supported_quantiles": envoyQuantiles, "computed_quantiles": hists}})
	}
	return map[string]any{"stats": list}
}
