package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/tracing"
	"github.com/shunt-dev/shunt/sidecar"
)

// scheduleDelayEnv is the OpenTelemetry SDKs' batch span processor delay
// (ms): how often the sidecar sends its queued spans (5000 by default).
const scheduleDelayEnv = "OTEL_BSP_SCHEDULE_DELAY"

// tracingFlags are the sidecar's tracing settings: Istio's OpenTelemetry
// extension provider and its sampling percentage.
type tracingFlags struct {
	collector string
	protocol  string
	sampling  float64
}

func (t *tracingFlags) add(f *pflag.FlagSet) {
	f.StringVar(&t.collector, "tracing-collector", "", "record spans of HTTP requests and send them to this OpenTelemetry collector: host:port (OTLP/gRPC, 4317), or with --tracing-protocol http host:port or http://host:port/v1/traces (OTLP/HTTP, 4318); apps must copy the trace headers (traceparent, x-b3-*) of the requests they serve onto the ones they make")
	f.Var(newChoice(&t.protocol, "grpc", "http"), "tracing-protocol", "how spans go to --tracing-collector: grpc or http (OTLP's transports)")
	f.Float64Var(&t.sampling, "tracing-sampling", t.sampling, "percentage of requests traced when they carry no decision of their own (Istio's meshConfig.defaultConfig.tracing.sampling; x-client-trace-id and x-envoy-force-trace are always traced, a caller's sampled flag is followed)")
}

// check sets cfg's tracing from the flags, and the node id its spans name
// from the pod's environment.
func (t *tracingFlags) check(fs *pflag.FlagSet, cfg *proxy.Config, getenv func(string) (string, bool)) error {
	if t.collector == "" {
		for _, name := range []string{"tracing-protocol", "tracing-sampling"} {
			if fs.Changed(name) {
				return fmt.Errorf("--%s without --tracing-collector: nothing to send spans to", name)
			}
		}
		return nil
	}
	if t.sampling < 0 || t.sampling > 100 {
		return fmt.Errorf("--tracing-sampling %v: not a percentage (0 to 100)", t.sampling)
	}
	cfg.Tracing = &proxy.TracingConfig{Collector: t.collector, Protocol: tracing.Protocol(t.protocol), Sampling: t.sampling}
	if v, ok := getenv(scheduleDelayEnv); ok && v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil || ms == 0 {
			return fmt.Errorf("$%s %s: not a positive number of milliseconds", scheduleDelayEnv, clip.Quote(v))
		}
		cfg.TracingFlushInterval = time.Duration(ms) * time.Millisecond
	}
	env := func(k string) string { v, _ := getenv(k); return v }
	if pod, ns := env(sidecar.PodNameEnv), env(sidecar.PodNamespaceEnv); pod != "" && ns != "" {
		cfg.NodeID = sidecar.NodeID(env(sidecar.InstanceIPEnv), pod, ns)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("--tracing-collector: %v", err)
	}
	return nil
}
