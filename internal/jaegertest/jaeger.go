// Package jaegertest runs a real trace backend for tests: Jaeger (its v2,
// the OpenTelemetry Collector with Jaeger's in-memory storage), built from
// its Go module by .ci/jaeger, inside a test's network namespace; and
// reads traces back through its query API.
package jaegertest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// Ports Jaeger serves.
const (
	OTLPGRPCPort = 4317
	OTLPHTTPPort = 4318
	QueryPort    = 16686
	MetricsPort  = 8888 // its own Prometheus metrics
)

// Jaeger is a running Jaeger.
type Jaeger struct {
	ns   *testnet.NS
	cmd  *exec.Cmd
	host string // where it listens in ns
}

// Binary is the cached Jaeger; the test skips without it, or fails under
// CI, where .ci/deps builds it.
func Binary(t testing.TB) string {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") != "" {
		fail = t.Fatalf
	}
	_, file, _, _ := runtime.Caller(0)
	out, err := exec.Command(filepath.Join(filepath.Dir(file), "..", "..", ".ci", "jaeger"), "--cached").Output()
	if err != nil {
		fail("trace backend test: Jaeger is not built (run .ci/jaeger; .ci/deps tests does): %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "jaeger")
}

// Start runs Jaeger in ns, listening on every address there, and waits
// until it answers; it stops with the test.
func Start(t testing.TB, ns *testnet.NS) *Jaeger {
	t.Helper()
	bin := Binary(t)
	j := &Jaeger{ns: ns, host: "127.0.0.1"}
	j.cmd = ns.Command(bin)
	j.cmd.Env = append(os.Environ(), "JAEGER_LISTEN_HOST=0.0.0.0")
	log, err := os.CreateTemp("", "shunt-jaeger-*.log")
	if err != nil {
		t.Fatal(err)
	}
	j.cmd.Stdout, j.cmd.Stderr = log, log
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		j.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("jaeger's log (last 4 KiB):\n%s", tail(b, 4096))
		}
		log.Close()
		os.Remove(log.Name())
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := j.get("/api/services"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("Jaeger did not answer in 60s:\n%s", tail(b, 4096))
		}
	}
	return j
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Stop ends Jaeger (a collector that went away); its traces go with it.
func (j *Jaeger) Stop() {
	if j.cmd.Process == nil || j.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-j.cmd.Process.Pid, syscall.SIGKILL)
	_ = j.cmd.Wait()
}

func (j *Jaeger) get(path string) ([]byte, error) {
	c := j.ns.HTTPClient()
	c.Timeout = 5 * time.Second
	resp, err := c.Get(fmt.Sprintf("http://%s:%d%s", j.host, QueryPort, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b, err
}

// Span is a span as Jaeger's query API gives it.
type Span struct {
	TraceID, SpanID, Operation, Service string
	Parent                              string // CHILD_OF's span ID, "" for a root
	Tags                                map[string]string
	Start, Duration                     int64 // µs
}

// Trace is the trace's spans, as Jaeger has them now.
func (j *Jaeger) Trace(id string) ([]Span, error) { return j.spans("/api/traces/" + id) }

// Search is the spans of the traces a search finds: query is the search's
// parameters as Jaeger's UI puts them in its URL (service=S&tags={...}),
// which its query API takes too.
func (j *Jaeger) Search(query string) ([]Span, error) {
	return j.spans("/api/traces?" + query + "&lookback=1h&limit=20")
}

func (j *Jaeger) spans(path string) ([]Span, error) {
	b, err := j.get(path)
	if err != nil {
		return nil, err
	}
	var r struct {
		Data []struct {
			Spans []struct {
				TraceID       string `json:"traceID"`
				SpanID        string `json:"spanID"`
				OperationName string `json:"operationName"`
				References    []struct {
					RefType string `json:"refType"`
					SpanID  string `json:"spanID"`
				} `json:"references"`
				Tags []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
				ProcessID string `json:"processID"`
				StartTime int64  `json:"startTime"`
				Duration  int64  `json:"duration"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", path, err, tail(b, 512))
	}
	var out []Span
	for _, d := range r.Data {
		for _, s := range d.Spans {
			sp := Span{TraceID: s.TraceID, SpanID: s.SpanID, Operation: s.OperationName, Service: d.Processes[s.ProcessID].ServiceName,
				Tags: map[string]string{}, Start: s.StartTime, Duration: s.Duration}
			for _, ref := range s.References {
				if ref.RefType == "CHILD_OF" {
					sp.Parent = ref.SpanID
				}
			}
			for _, tag := range s.Tags {
				sp.Tags[tag.Key] = fmt.Sprint(tag.Value)
			}
			out = append(out, sp)
		}
	}
	return out, nil
}

// WaitTrace waits up to timeout for the trace to have n spans.
func (j *Jaeger) WaitTrace(t testing.TB, id string, n int, timeout time.Duration) []Span {
	t.Helper()
	var spans []Span
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		spans, err = j.Trace(id)
		if len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger has %d spans of trace %s after %v, want %d (%v)", len(spans), id, timeout, n, err)
		}
	}
}

// AcceptedSpans is how many spans Jaeger's OTLP receiver took, by its own
// metrics (otelcol_receiver_accepted_spans).
func (j *Jaeger) AcceptedSpans() (int, error) {
	c := j.ns.HTTPClient()
	c.Timeout = 5 * time.Second
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/metrics", j.host, MetricsPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total, found := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "otelcol_receiver_accepted_spans") || !strings.Contains(line, `receiver="otlp"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		total += int(v)
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no otelcol_receiver_accepted_spans for the otlp receiver in Jaeger's metrics")
	}
	return total, nil
}
