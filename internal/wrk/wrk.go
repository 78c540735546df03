// Package wrk reads what the wrk load generator prints with --latency.
package wrk

import (
	"errors"
	"regexp"
	"strconv"
)

var (
	rate    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	total   = regexp.MustCompile(`(\d+) requests in`)
	percent = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)$`)
)

// Result is a run's rate (requests per second), its requests, and its
// p50 and p99 latency in µs.
type Result struct {
	RPS, Total, P50, P99 float64
}

// Parse reads wrk's output; an error when it holds no rate.
func Parse(out string) (Result, error) {
	var r Result
	if m := rate.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := total.FindStringSubmatch(out); m != nil {
		r.Total, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range percent.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		v *= map[string]float64{"us": 1, "ms": 1e3, "s": 1e6}[m[3]]
		if m[1] == "50" {
			r.P50 = v
		} else {
			r.P99 = v
		}
	}
	if r.RPS == 0 || r.Total == 0 {
		return r, errors.New("wrk printed no rate")
	}
	return r, nil
}
