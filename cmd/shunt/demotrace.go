package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/internal/scenario"
)

// The demo's sidecar traces every request to a collector in the pod, and
// is the pod app-1 of namespace default, app "app", for its spans' names.
var (
	demoTracingArgs = []string{"--tracing-collector", "127.0.0.1:4317", "--tracing-sampling", "100"}
	demoPodEnv      = []string{"POD_NAME=app-1", "POD_NAMESPACE=default", "INSTANCE_IP=10.1.0.5", `ISTIO_METAJSON_LABELS={"app":"app"}`,
		"OTEL_BSP_SCHEDULE_DELAY=100"}
)

// startDemoCollector runs an OpenTelemetry collector in the pod, where
// the sidecar sends its spans (127.0.0.1:4317; its own traffic is not
// captured).
func startDemoCollector(s *scenario.Scenario) (*otlptest.Collector, error) {
	return otlptest.ServeIn(s.Pod.NS.Do, "127.0.0.1:4317", "127.0.0.1:4318", true)
}

// printTraces prints spans as trees, one per trace, each span under its
// parent: kind, name, service, status and duration.
func printTraces(out io.Writer, spans []otlptest.Span) {
	byTrace := map[string][]otlptest.Span{}
	var order []string
	for _, s := range spans {
		id := fmt.Sprintf("%x", s.TraceId)
		if byTrace[id] == nil {
			order = append(order, id)
		}
		byTrace[id] = append(byTrace[id], s)
	}
	for _, id := range order {
		fmt.Fprintf(out, "trace %s\n", id)
		trace := byTrace[id]
		slices.SortFunc(trace, func(a, b otlptest.Span) int { return int(a.StartTimeUnixNano - b.StartTimeUnixNano) })
		ids := map[string]bool{}
		for _, s := range trace {
			ids[fmt.Sprintf("%x", s.SpanId)] = true
		}
		var walk func(parent string, depth int)
		walk = func(parent string, depth int) {
			for _, s := range trace {
				p := fmt.Sprintf("%x", s.ParentSpanId)
				if p == parent || depth == 0 && !ids[p] && parent == "" {
					kind := strings.TrimPrefix(s.Kind.String(), "SPAN_KIND_")
					d := time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano)
					fmt.Fprintf(out, "  %s%-6s %-28s %s  %s %s  %s  span %x\n", strings.Repeat("  ", depth), kind, s.Name,
						s.Resource["service.name"], s.Attr("http.method"), s.Attr("http.status_code"), d.Round(10*time.Microsecond), s.SpanId)
					walk(fmt.Sprintf("%x", s.SpanId), depth+1)
				}
			}
		}
		walk("", 0)
	}
}
