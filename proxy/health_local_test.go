package proxy_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// healthBackends start n backends that answer with their index; each
// fails requests (500) while its fail flag is set, and its /healthz says
// 503 while its sick flag is.
func healthBackends(t *testing.T, n int) (eps []string, fail, sick []*atomic.Bool) {
	for i := range n {
		f, s := &atomic.Bool{}, &atomic.Bool{}
		fail, sick = append(fail, f), append(sick, s)
		_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if s.Load() {
					w.WriteHeader(503)
				}
				return
			}
			w.Header().Set("X-Backend", fmt.Sprint(i))
			if f.Load() {
				w.WriteHeader(500)
			}
		})
		eps = append(eps, fmt.Sprintf("{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}", port))
	}
	return eps, fail, sick
}

// withCluster adds fields to lbConfig's cluster.
func withCluster(config, fields string) string {
	return strings.Replace(config, "    lb_policy: ROUND_ROBIN\n", "    lb_policy: ROUND_ROBIN\n"+fields, 1)
}

// spread sends n requests and counts them by backend ("500" for errors).
func spread(k *keepAlive, n int) map[string]int {
	got := map[string]int{}
	for range n {
		resp, _ := k.do("GET", "/", "")
		key := resp.Header.Get("X-Backend")
		if resp.StatusCode != 200 {
			key = fmt.Sprint(resp.StatusCode)
		}
		got[key]++
	}
	return got
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestOutlierDetection: an endpoint answering 500s is ejected after
// consecutive_5xx of them, traffic goes to the others, and it comes back
// after its ejection time.
func TestOutlierDetection(t *testing.T) {
	eps, fail, _ := healthBackends(t, 3)
	fail[1].Store(true)
	config := withCluster(lbConfig(filepath.Join(t.TempDir(), "log"), "ROUND_ROBIN", "[]", eps),
		"    outlier_detection: {consecutive_5xx: 3, interval: 0.1s, base_ejection_time: 1s, max_ejection_percent: 50}\n")
	cp := startConfig(t, config, nil)
	k := cp.keepAlive(t)
	spread(k, 12) // backend 1 answers its fourth request or so with its third 500
	if got := spread(k, 30); got["500"] != 0 || got["0"] != 15 || got["2"] != 15 {
		t.Fatalf("after the ejection: %v, want backends 0 and 2 only", got)
	}
	if v := gauge(t, cp, "envoy_cluster_outlier_detection_ejections_active"); v != 1 {
		t.Errorf("ejections_active %v, want 1", v)
	}
	fail[1].Store(false)
	eventually(t, "the ejected endpoint returns", func() bool { return spread(k, 3)["1"] > 0 })
}

// TestHealthChecks: an endpoint whose health check fails takes no
// traffic; when it passes again, traffic returns; when none passes, the
// cluster panics (all take traffic), unless the panic threshold is 0
// (503 UH).
func TestHealthChecks(t *testing.T) {
	eps, _, sick := healthBackends(t, 2)
	sick[0].Store(true)
	hc := "    health_checks: [{timeout: 1s, interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]\n"
	cp := startConfig(t, withCluster(lbConfig(filepath.Join(t.TempDir(), "log"), "ROUND_ROBIN", "[]", eps), hc), nil)
	k := cp.keepAlive(t)
	if got := spread(k, 10); got["1"] != 10 {
		t.Fatalf("with backend 0 failing its health check: %v", got)
	}
	sick[0].Store(false)
	eventually(t, "the healthy again endpoint takes traffic", func() bool { return spread(k, 4)["0"] > 0 })
	sick[0].Store(true)
	sick[1].Store(true)
	eventually(t, "panic: both take traffic", func() bool { got := spread(k, 4); return got["0"] > 0 && got["1"] > 0 })

	eps2, _, sick2 := healthBackends(t, 2)
	sick2[0].Store(true)
	sick2[1].Store(true)
	logFile := filepath.Join(t.TempDir(), "log")
	cp2 := startConfig(t, withCluster(lbConfig(logFile, "ROUND_ROBIN", "[]", eps2), hc+"    common_lb_config: {healthy_panic_threshold: {value: 0}}\n"), nil)
	cp2.logFile = logFile
	if resp, body := cp2.keepAlive(t).do("GET", "/", ""); resp.StatusCode != 503 || body != "no healthy upstream" {
		t.Fatalf("no healthy endpoint, no panic: %d %q", resp.StatusCode, body)
	}
	cp2.waitLog(t, `"GET / HTTP/1.1" 503 UH `)
}

// gauge reads a cluster metric's one value.
func gauge(t *testing.T, cp *configProxy, name string) float64 {
	t.Helper()
	mfs, err := cp.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
