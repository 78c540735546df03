package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// A worker sends its metrics to the supervisor as metric families (the
// Prometheus data model, length-delimited protobuf, base64 on one line);
// the supervisor merges them family by family and series by series:
// counters, gauges and histogram buckets summed. Nothing is parsed from
// text.

// encodeFamilies is a gatherer's families as one base64 line.
func encodeFamilies(g prometheus.Gatherer) (string, error) {
	mfs, err := g.Gather()
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return "", err
		}
	}
	return base64.StdEncoding.EncodeToString(b.Bytes()), nil
}

// decodeFamilies reads what encodeFamilies wrote.
func decodeFamilies(line string) ([]*dto.MetricFamily, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line))
	if err != nil {
		return nil, err
	}
	dec := expfmt.NewDecoder(bytes.NewReader(raw), expfmt.NewFormat(expfmt.TypeProtoDelim))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		out = append(out, mf)
	}
}

// mergeFamilies sums families of the same name, and series of the same
// labels within them.
func mergeFamilies(sets ...[]*dto.MetricFamily) []*dto.MetricFamily {
	byName := map[string]*dto.MetricFamily{}
	var order []string
	series := map[string]map[string]*dto.Metric{}
	for _, set := range sets {
		for _, mf := range set {
			name := mf.GetName()
			into := byName[name]
			if into == nil {
				into = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
				byName[name] = into
				series[name] = map[string]*dto.Metric{}
				order = append(order, name)
			}
			for _, m := range mf.Metric {
				key := labelKey(m.Label)
				if have := series[name][key]; have != nil {
					addMetric(have, m)
					continue
				}
				series[name][key] = m
				into.Metric = append(into.Metric, m)
			}
		}
	}
	slices.Sort(order)
	out := make([]*dto.MetricFamily, 0, len(order))
	for _, n := range order {
		out = append(out, byName[n])
	}
	return out
}

func labelKey(labels []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range labels {
		b.WriteString(l.GetName())
		b.WriteByte(0)
		b.WriteString(l.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

// addMetric adds m's values into have (same family, same labels).
func addMetric(have, m *dto.Metric) {
	switch {
	case have.Counter != nil && m.Counter != nil:
		have.Counter.Value = proto.Float64(have.Counter.GetValue() + m.Counter.GetValue())
	case have.Gauge != nil && m.Gauge != nil:
		have.Gauge.Value = proto.Float64(have.Gauge.GetValue() + m.Gauge.GetValue())
	case have.Untyped != nil && m.Untyped != nil:
		have.Untyped.Value = proto.Float64(have.Untyped.GetValue() + m.Untyped.GetValue())
	case have.Histogram != nil && m.Histogram != nil:
		h, o := have.Histogram, m.Histogram
		h.SampleCount = proto.Uint64(h.GetSampleCount() + o.GetSampleCount())
		h.SampleSum = proto.Float64(h.GetSampleSum() + o.GetSampleSum())
		for i, b := range h.Bucket {
			if i < len(o.Bucket) && o.Bucket[i].GetUpperBound() == b.GetUpperBound() {
				b.CumulativeCount = proto.Uint64(b.GetCumulativeCount() + o.Bucket[i].GetCumulativeCount())
			}
		}
	}
}

// gathererFunc adapts a function to prometheus.Gatherer.
type gathererFunc func() ([]*dto.MetricFamily, error)

func (f gathererFunc) Gather() ([]*dto.MetricFamily, error) { return f() }
