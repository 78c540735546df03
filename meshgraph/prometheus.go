package meshgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prometheus reads the graph from a Prometheus server that scrapes the
// sidecars (as Kiali does): the increase over Window of
// istio_requests_total and of istio_request_duration_milliseconds's
// buckets, summed by the labels the graph reads.
type Prometheus struct {
	URL    string        // http://prometheus.istio-system:9090, say
	Window time.Duration // 1m by default
	Client *http.Client  // nil: a client with a 5 s timeout
}

// graphLabels are the labels the graph reads of Istio's metrics.
const graphLabels = "reporter,source_canonical_service,source_workload,source_workload_namespace,destination_canonical_service," +
	"destination_service_name,destination_service_namespace,destination_workload,destination_workload_namespace," +
	"response_code,connection_security_policy"

// Graph is the graph over the window, and the server under "failed" if
// it could not be read.
func (p *Prometheus) Graph() (Graph, map[string]string) {
	window := p.Window
	if window <= 0 {
		window = time.Minute
	}
	secs := int(window.Seconds())
	snap := Snapshot{}
	requests := fmt.Sprintf("sum by (%s) (increase(istio_requests_total[%ds]))", graphLabels, secs)
	buckets := fmt.Sprintf("sum by (%s,le) (increase(istio_request_duration_milliseconds_bucket[%ds]))", graphLabels, secs)
	if err := p.query(requests, func(l Labels, v float64) { snap.AddRequests(l, v) }); err != nil {
		return Graph{}, map[string]string{p.URL: err.Error()}
	}
	err := p.query(buckets, func(l Labels, v float64) {
		le, err := strconv.ParseFloat(l("le"), 64)
		if err == nil {
			snap.AddBucket(l, le, v)
		}
	})
	if err != nil {
		return Graph{}, map[string]string{p.URL: err.Error()}
	}
	return Diff(Snapshot{}, snap, window.Seconds()), nil
}

// query runs an instant query and gives each sample of its vector to f.
func (p *Prometheus) query(q string, f func(Labels, float64)) error {
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.URL, "/")+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %v", resp.Status, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("query %s: %s", q, r.Error)
	}
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil || math.IsNaN(v) {
			continue
		}
		m := s.Metric
		f(func(name string) string { return m[name] }, v)
	}
	return nil
}
