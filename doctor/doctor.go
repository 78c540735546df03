// Package doctor checks a live network namespace for what makes capture
// fail or leak: rules missing or drifted, rules in two backends, no proxy
// listening, a sidecar not in step with its control plane, an app
// running as the proxy's identity (it escapes capture),
// capture that does not work end to end, and sysctls and conntrack near
// their limits. Each check is one line with a verdict and a hint.
package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/sidecar"
)

// Status is a check's verdict.
type Status string

// Statuses. Only Fail makes the doctor exit non-zero.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Info Status = "info"
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Hint   string `json:"hint,omitempty"`
	Diff   string `json:"diff,omitempty"`
}

// Options say where to look and what the capture should be.
type Options struct {
	NetNS string // namespace file; "" for the current one
	// Config is the capture the namespace should hold; nil checks only
	// that shunt's rules are there.
	Config *capture.Config
	// Backends are where shunt's rules may be; nil for every backend in
	// the namespace.
	Backends []backend.Backend
}

func (o Options) backends() []backend.Backend {
	if o.Backends != nil {
		return o.Backends
	}
	return backend.All(o.NetNS)
}

// Report is every check, in order.
type Report struct {
	NetNS  string  `json:"netns"`
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// Write prints the report, one line a check, hints and diffs indented.
func (r Report) Write(w io.Writer) {
	marks := map[Status]string{Pass: "✔", Fail: "✘", Info: "·"}
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%s %-18s %s\n", marks[c.Status], c.Name, c.Detail)
		if c.Hint != "" && c.Status != Pass {
			fmt.Fprintf(w, "  %-18s hint: %s\n", "", c.Hint)
		}
		for _, line := range strings.Split(strings.TrimRight(c.Diff, "\n"), "\n") {
			if line != "" {
				fmt.Fprintf(w, "  %-18s %s\n", "", line)
			}
		}
	}
}

// Run runs every check.
func Run(ctx context.Context, o Options) Report {
	r := Report{NetNS: o.NetNS}
	if r.NetNS == "" {
		r.NetNS = "current"
	}
	all := readBackends(ctx, o)
	r.Checks = append(r.Checks, backendsCheck(all), rulesCheck(all, o))
	listeners, err := listeningPorts(o.NetNS)
	r.Checks = append(r.Checks, proxyCheck(o, listeners, err))
	if len(listeners[sidecar.AdminPort]) > 0 {
		r.Checks = append(r.Checks, controlPlaneCheck(o.NetNS))
		r.Checks = append(r.Checks, certificateCheck(o.NetNS))
		r.Checks = append(r.Checks, meshSecurityCheck(o.NetNS))
	}
	r.Checks = append(r.Checks, identityCheck(o, listeners))
	r.Checks = append(r.Checks, probeChecks(o, listeners)...)
	r.Checks = append(r.Checks, sysctlChecks(o.NetNS)...)
	return r
}
