package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// TestSeedScenario is the seed as a test: Debian's nginx with an unmodified
// config whose upstream is backend-service:10000, captured into shunt's
// sidecar; a request outbound and one inbound, both answered by the
// backend, and the access log names the address backend-service resolved to.
func TestSeedScenario(t *testing.T) {
	for _, sc := range []scenario.Sidecar{scenario.Shunt, scenario.HAProxy, scenario.Direct} {
		t.Run(string(sc), func(t *testing.T) {
			testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
			if sc == scenario.HAProxy {
				if _, err := exec.LookPath("haproxy"); err != nil {
					t.Skip("haproxy is not installed (.ci/run installs it)")
				}
			}
			name := "shunt-seed-" + string(sc) + "-" + strconv.Itoa(os.Getpid())
			s, err := scenario.Start(context.Background(), scenario.Options{Name: name, Sidecar: sc, ShuntBin: testnet.ShuntBinary(t),
				AccessLogFormat: scenario.SeedFormat + " %UPSTREAM_LOCAL_ADDRESS%"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				s.Close()
				if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
					t.Errorf("namespaces left behind:\n%s", out)
				}
				if _, err := os.Stat("/etc/netns/" + name + "-pod"); err == nil {
					t.Error("/etc/netns entry left behind")
				}
			}()
			for what, do := range map[string]func() (string, error){"outbound": s.Outbound, "inbound": s.Inbound} {
				body, err := do()
				if err != nil || !strings.HasPrefix(body, "hello from backend-service: /test") {
					t.Errorf("%s: %q, %v", what, body, err)
				}
			}
			if sc != scenario.Shunt {
				return
			}
			s.Close() // flushes the access log
			log := s.AccessLog.String()
			// nginx's HTTP/1.0 request out, curl's HTTP/1.1 in, each through
			// the L7 sidecar; inbound handed to nginx from 127.0.0.6.
			for _, want := range []string{`"GET /test HTTP/1.0" 200 49 `, " 10.96.0.10:10000 PassthroughCluster - ",
				`"GET /test HTTP/1.1" 200 49 `, " 10.1.0.5:80 InboundPassthroughCluster - 127.0.0.6:"} {
				if !strings.Contains(log, want) {
					t.Errorf("access log lacks %q:\n%s", want, log)
				}
			}
		})
	}
}

// TestSeedEnvoyConfig runs the seed's Envoy configuration unmodified with
// shunt proxy --config: nginx's outbound request captured to its listener
// on 10000, routed to app_service, whose STRICT_DNS endpoint
// backend-headless-service the pod's resolver names.
func TestSeedEnvoyConfig(t *testing.T) {
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	config, err := os.ReadFile("../../proxy/envoyconfig/testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	name := "shunt-seedcfg-" + strconv.Itoa(os.Getpid())
	s, err := scenario.Start(context.Background(), scenario.Options{Name: name, Sidecar: scenario.Shunt,
		ShuntBin: testnet.ShuntBinary(t), EnvoyConfig: string(config)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 3 {
		body, err := s.Outbound()
		if err != nil || !strings.HasPrefix(body, "hello from backend-service: /test, from 10.1.0.5") {
			t.Fatalf("outbound: %q, %v", body, err)
		}
	}
	s.Close() // flushes the access log
	log := s.AccessLog.String()
	// Envoy's default format: nginx's HTTP/1.0 request, the endpoint the
	// name resolved to.
	if n := strings.Count(log, `"GET /test HTTP/1.0" 200 - 0 49 `); n != 3 || !strings.Contains(log, `"backend_ups" "10.1.0.1:10000"`) {
		t.Errorf("access log (%d requests):\n%s", n, log)
	}
}

// TestSeedCanaryWithRetries: the caller's sidecar splits nginx's /test
// between two versions of the backend by weight (Envoy's
// weighted_clusters), and retries the new version's failures (its every
// third request answers 503): through the capture rules, nginx's
// requests all succeed, both versions answer.
func TestSeedCanaryWithRetries(t *testing.T) {
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	config := envoytest.HCM{Address: "0.0.0.0", Port: 10000, Fields: []string{"http_protocol_options: {accept_http_10: true}"},
		AccessLogs: []string{envoytest.StdoutLog("%REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%\n")},
		RouteConfig: `
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: "/test"}
                route:
                  weighted_clusters: {clusters: [{name: v1, weight: 50}, {name: v2, weight: 50}]}
                  retry_policy: {retry_on: 5xx, num_retries: 2}`,
		Clusters: envoytest.StaticCluster("v1", "10.1.0.1", 10000) + envoytest.StaticCluster("v2", "10.1.0.1", 10001)}.YAML()
	name := "shunt-canary-" + strconv.Itoa(os.Getpid())
	s, err := scenario.Start(context.Background(), scenario.Options{Name: name, Sidecar: scenario.Shunt,
		ShuntBin: testnet.ShuntBinary(t), EnvoyConfig: config})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ln net.Listener
	if err := s.Pod.Peer.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.1.0.1:10001"); return err }); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	v2 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 == 0 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprintf(w, "hello from v2: %s\n", r.URL.Path)
	})}
	go v2.Serve(ln)
	defer v2.Close()
	seen := map[string]int{}
	for range 40 {
		body, err := s.Outbound()
		if err != nil || !strings.HasPrefix(body, "hello from") {
			t.Fatalf("through the canary split: %q, %v", body, err)
		}
		seen[strings.Fields(body)[2]]++
	}
	if seen["backend-service:"] < 8 || seen["v2:"] < 8 {
		t.Errorf("a 50/50 split over 40 requests: %v", seen)
	}
	s.Close()
	if log := s.AccessLog.String(); !strings.Contains(log, "/test 200 v2 attempts=2") {
		t.Errorf("no retried request in the log:\n%s", log)
	}
}

// TestSeedControlPlane is the seed with the sidecar configured over xDS
// by shunt-control alone: nginx's request is routed by its Host
// (backend-service:10000) to Istio's outbound cluster and its EDS
// endpoint, the inbound one to the pod's port of the service that
// selects it, and the control plane reports the sidecar synced.
func TestSeedControlPlane(t *testing.T) {
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	name := "shunt-seed-xds-" + strconv.Itoa(os.Getpid())
	s, err := scenario.Start(context.Background(), scenario.Options{Name: name, Sidecar: scenario.Shunt,
		ShuntBin: testnet.ShuntBinary(t), ControlBin: testnet.ControlBinary(t),
		AccessLogFormat: scenario.SeedFormat + " %UPSTREAM_LOCAL_ADDRESS%"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for what, do := range map[string]func() (string, error){"outbound": s.Outbound, "inbound": s.Inbound} {
		body, err := do()
		if err != nil || !strings.HasPrefix(body, "hello from backend-service: /test") {
			t.Errorf("%s: %q, %v", what, body, err)
		}
	}
	doctor, _ := exec.Command(testnet.ShuntBinary(t), "doctor", "--network-namespace", s.Pod.NS.Path).CombinedOutput()
	if !strings.Contains(string(doctor), "✔ control plane") || !strings.Contains(string(doctor), "connected to 10.1.0.1:15010; in force: listeners") {
		t.Errorf("shunt doctor:\n%s", doctor)
	}
	syncz, err := scenario.Curl(s.Pod.Peer, "http://10.1.0.1:15014/debug/syncz")
	if err != nil || !strings.Contains(syncz, `"proxy": "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local"`) ||
		strings.Contains(syncz, "nacks") {
		t.Errorf("syncz: %v\n%s", err, syncz)
	}
	checkMeshGraph(t, s)
	s.Close() // flushes the access log
	log := s.AccessLog.String()
	for _, want := range []string{`"GET /test HTTP/1.0" 200 49 `, " 10.1.0.1:10000 outbound|10000||backend-service.default.svc.cluster.local - ",
		`"GET /test HTTP/1.1" 200 49 `, " 10.1.0.5:80 inbound|80|| - 127.0.0.6:"} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
}

// startControlled is the seed with its sidecar configured by
// shunt-control from manifest (MeshManifest when ""), torn down when the
// test ends.
func startControlled(t *testing.T, label, manifest string) *scenario.Scenario {
	t.Helper()
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	s, err := scenario.Start(context.Background(), scenario.Options{Name: "shunt-seed-" + label + "-" + strconv.Itoa(os.Getpid()),
		Sidecar: scenario.Shunt, ShuntBin: testnet.ShuntBinary(t), ControlBin: testnet.ControlBinary(t), Manifest: manifest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// splitRules put backend-service's two versions (the backend host's
// nginx on 10000 and 10009) behind a VirtualService that splits 90/10.
var splitRules = `
---
apiVersion: v1
kind: Pod
metadata: {name: backend-v1, namespace: default, labels: {app: backend, version: v1}}
spec: {containers: [{name: b, image: b}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-v2, namespace: default, labels: {app: backend, version: v2}}
spec: {containers: [{name: b, image: b}]}
status: {podIP: 10.1.0.1}
` + endpointSlice("backend-service-1", "backend-service", 10000, "{addresses: [10.1.0.1], targetRef: {kind: Pod, name: backend-v1}}") +
	endpointSlice("backend-service-2", "backend-service", 10009, "{addresses: [10.1.0.1], targetRef: {kind: Pod, name: backend-v2}}") + `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend-service]
  http:
  - route:
    - {destination: {host: backend-service, subset: v1}, weight: 90}
    - {destination: {host: backend-service, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend-service
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// endpointSlice is an EndpointSlice of service named name: its
// endpoints (YAML flow items) on port.
func endpointSlice(name, service string, port int, endpoints string) string {
	return fmt.Sprintf(`
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s, namespace: default, labels: {kubernetes.io/service-name: %s}}
addressType: IPv4
ports: [{name: http, port: %d}]
endpoints: [%s]
`, name, service, port, endpoints)
}

// httpRouteSplitRules split backend-service 90/10 with a Gateway API
// HTTPRoute (GAMMA) between two Services of its versions (the backend
// host's nginx on 10000 and 10009).
var httpRouteSplitRules = `
---
apiVersion: v1
kind: Service
metadata: {name: backend-v1, namespace: default}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 10000}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend-v2, namespace: default}
spec: {clusterIP: 10.96.0.12, ports: [{name: http, port: 10000}]}
` + endpointSlice("backend-v1-1", "backend-v1", 10000, "{addresses: [10.1.0.1]}") +
	endpointSlice("backend-v2-1", "backend-v2", 10009, "{addresses: [10.1.0.1]}") + `
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: backend-service, port: 10000}]
  rules:
  - backendRefs:
    - {name: backend-v1, port: 10000, weight: 90}
    - {name: backend-v2, port: 10000, weight: 10}
`

// TestSeedControlPlaneSplit: nginx's requests, captured, split 90/10
// between backend-service's versions, by a VirtualService and by an
// HTTPRoute, each within ±3 points over 1,000 requests.
func TestSeedControlPlaneSplit(t *testing.T) {
	for _, c := range []struct{ name, rules string }{{"VirtualService", splitRules}, {"HTTPRoute", httpRouteSplitRules}} {
		t.Run(c.name, func(t *testing.T) {
			s := startControlled(t, "split"+strings.ToLower(c.name[:2]), scenario.MeshManifest+c.rules)
			client := s.Client()
			const n = 1000
			v2 := 0
			for i := range n {
				resp, body := getTest(t, client, i)
				switch {
				case strings.HasPrefix(body, "hello from backend-service v2: /test"):
					v2++
				case !strings.HasPrefix(body, "hello from backend-service: /test"):
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
			}
			if share := float64(v2) * 100 / n; share < 7 || share > 13 {
				t.Errorf("v2 took %.1f%% of %d requests, want 10%% ± 3", share, n)
			} else {
				t.Logf("v2 took %.1f%% of %d requests", share, n)
			}
		})
	}
}

// getTest is the i-th request for /test through the pod's nginx, read.
func getTest(t *testing.T, client *http.Client, i int) (*http.Response, string) {
	t.Helper()
	resp, err := client.Get("http://127.0.0.1/test")
	if err != nil {
		t.Fatalf("request %d: %v", i, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestSeedControlPlaneScaleDown: backend-service has three endpoints
// (the backend host's nginx at three addresses); nginx's requests,
// captured, reach all three; the slice loses one and, once shunt-control
// has read it, no request reaches the removed endpoint and none fails.
func TestSeedControlPlaneScaleDown(t *testing.T) {
	slice := func(addrs string) string { return endpointSlice("backend-service-2", "backend-service", 10000, addrs) }
	s := startControlled(t, "scaledown", scenario.MeshManifest+slice("{addresses: [10.1.0.2]}, {addresses: [10.1.0.3]}"))
	for _, a := range []string{"10.1.0.2/24", "10.1.0.3/24"} {
		if out, err := s.Pod.Peer.Run("ip", "addr", "add", a, "dev", "eth0"); err != nil {
			t.Fatalf("%s: %v %s", a, err, out)
		}
	}
	client := s.Client()
	// get sends n requests; it says how many each endpoint took.
	get := func(n int) map[string]int {
		seen := map[string]int{}
		for i := range n {
			resp, body := getTest(t, client, i)
			at := resp.Header.Get("X-Backend-Addr")
			if resp.StatusCode != 200 || at == "" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
			seen[at]++
		}
		return seen
	}
	if seen := get(150); len(seen) != 3 {
		t.Fatalf("150 requests over three endpoints reached %v", seen)
	}
	if err := s.SetManifest(scenario.MeshManifest + slice("{addresses: [10.1.0.2]}")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		seen := get(30)
		if seen["10.1.0.3"] == 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("10 s after the slice lost 10.1.0.3, it still takes requests: %v", seen)
		}
	}
	gone := time.Since(start)
	if seen := get(300); seen["10.1.0.3"] != 0 || len(seen) != 2 {
		t.Errorf("after the scale-down, 300 requests reached %v", seen)
	}
	t.Logf("the removed endpoint took its last request within %s of the slice's change (shunt-control reads its file every second)", gone.Round(10*time.Millisecond))
}

// routeOpsRules give backend-service's VirtualService a fault, a
// redirect, a CORS policy, a direct response and a response header.
const routeOpsRules = `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend-service]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: backend-service}}]
  - match: [{uri: {exact: /test/old}}]
    redirect: {uri: /new}
  - match: [{uri: {prefix: /test/cors}}]
    corsPolicy: {allowOrigins: [{exact: "https://shop.example"}], allowMethods: [GET, POST], maxAge: 10m}
    route: [{destination: {host: backend-service}}]
  - match: [{uri: {prefix: /test/closed}}]
    directResponse: {status: 403, body: {string: "closed by the mesh"}}
  - headers: {response: {set: {x-mesh: shunt}}}
    route: [{destination: {host: backend-service}}]
`

// TestSeedControlPlaneRouteOps: nginx's requests, captured, meet a
// VirtualService's fault, redirect, direct response and header change,
// answered by the sidecar (nginx passes each answer on).
func TestSeedControlPlaneRouteOps(t *testing.T) {
	s := startControlled(t, "routeops", scenario.MeshManifest+routeOpsRules)
	client := *s.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, c := range []struct {
		path, header string
		status       int
		check        func(*http.Response, string) bool
		want         string
	}{
		{"/test", "abort", 418, func(_ *http.Response, b string) bool { return strings.Contains(b, "fault filter abort") }, "the fault's body"},
		{"/test/cors", "preflight", 200, func(r *http.Response, _ string) bool {
			return r.Header.Get("Access-Control-Allow-Origin") == "https://shop.example" && r.Header.Get("Access-Control-Max-Age") == "600"
		}, "the CORS preflight's answer"},
		{"/test/old", "", 301, func(r *http.Response, _ string) bool { return strings.HasSuffix(r.Header.Get("Location"), "/new") }, "Location …/new"},
		{"/test/closed/x", "", 403, func(_ *http.Response, b string) bool { return b == "closed by the mesh" }, "the direct response's body"},
		{"/test", "", 200, func(r *http.Response, b string) bool {
			return r.Header.Get("X-Mesh") == "shunt" && strings.HasPrefix(b, "hello from backend-service: /test")
		}, "the backend's answer with x-mesh: shunt"},
	} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1"+c.path, nil)
		switch c.header {
		case "preflight":
			req.Method = "OPTIONS"
			req.Header.Set("Origin", "https://shop.example")
			req.Header.Set("Access-Control-Request-Method", "POST")
		case "":
		default:
			req.Header.Set("X-Fault", c.header)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !c.check(resp, string(body)) {
			t.Errorf("%s (x-fault %q): %d %v %q, want %d and %s", c.path, c.header, resp.StatusCode, resp.Header, body, c.status, c.want)
		}

	}
}

// TestSeedControlPlaneRestart: with nginx's requests flowing through the
// sidecar, shunt-control is killed and started again; no request fails
// (the sidecar serves on with what it has) and the sidecar follows the
// new one.
func TestSeedControlPlaneRestart(t *testing.T) {
	s := startControlled(t, "cprestart", "")
	client := s.Client()
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent.Add(1)
			resp, err := client.Get("http://127.0.0.1/test")
			if err != nil {
				failed.Add(1)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from backend-service: /test") {
				failed.Add(1)
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := s.RestartControlPlane(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		syncz, _ := scenario.Curl(s.Pod.Peer, "http://10.1.0.1:15014/debug/syncz")
		if strings.Contains(syncz, `"proxy": "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local"`) && strings.Contains(syncz, `"listener_acked": "`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar never came back to the new control plane: %s", syncz)
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-done
	if n := failed.Load(); n != 0 || sent.Load() < 50 {
		t.Errorf("%d of %d requests failed across the restart", n, sent.Load())
	} else {
		t.Logf("%d requests across the restart, none failed", sent.Load())
	}
}

// TestSeedControlPlaneOutlier: backend-service has a second endpoint
// that answers 503; a DestinationRule's outlier detection ejects it, and
// nginx's requests then reach only the good one (none failed: Istio's
// retries take a 503 to the other host meanwhile).
func TestSeedControlPlaneOutlier(t *testing.T) {
	s := startControlled(t, "outlier", scenario.MeshManifest+endpointSlice("backend-service-bad", "backend-service", 10008, "{addresses: [10.1.0.1]}")+`
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend-service
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 50}
`)
	var ln net.Listener
	if err := s.Pod.Peer.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.1.0.1:10008"); return err }); err != nil {
		t.Fatal(err)
	}
	var bad atomic.Int64
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		bad.Add(1)
		http.Error(w, "failing", http.StatusServiceUnavailable)
	}))
	defer ln.Close()
	client := s.Client()
	get := func(n int) (failed int) {
		for range n {
			resp, err := client.Get("http://127.0.0.1/test")
			if err != nil {
				failed++
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed++
			}
		}
		return failed
	}
	if f := get(20); f != 0 {
		t.Errorf("%d of 20 requests failed while the bad endpoint was in", f)
	}
	if bad.Load() == 0 {
		t.Fatal("the bad endpoint was never tried")
	}
	stats := ""
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("http://127.0.0.1:15000/stats?filter=ejections_active")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			stats = string(b)
		}
		if strings.Contains(stats, "cluster.outbound|10000||backend-service.default.svc.cluster.local.outlier_detection.ejections_active: 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bad endpoint was never ejected:\n%s", stats)
		}
	}
	before := bad.Load()
	if f := get(40); f != 0 {
		t.Errorf("%d of 40 requests failed after the ejection", f)
	}
	if after := bad.Load(); after != before {
		t.Errorf("the ejected endpoint got %d more requests", after-before)
	}
}

// checkMeshGraph reads shunt-control's mesh graph, drawn from the
// sidecar's metrics (read every 5 s): the seed's two requests are a call
// from outside the mesh into the app, and the app's call to
// backend-service (named from its cluster, outbound|10000||backend-service
// .default.svc.cluster.local, as Istio's stats name it), neither over
// mutual TLS.
func checkMeshGraph(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	checkGraphEdges(t, s)
	checkGraphInBrowser(t, s)
}

// checkGraphEdges waits for the graph to have the seed's calls, and
// checks them.
func checkGraphEdges(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	type edge struct {
		From, To string
		RPS      float64 `json:"rps"`
		MTLS     float64 `json:"mtls"`
	}
	var g struct {
		Edges []edge `json:"edges"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		body, err := scenario.Curl(s.Pod.Peer, "http://10.1.0.1:15014/graph.json")
		if err == nil && json.Unmarshal([]byte(body), &g) == nil && len(g.Edges) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mesh graph has no edges of the seed's requests: %v\n%s", err, body)
		}
	}
	var in, out *edge
	for i, e := range g.Edges {
		switch {
		case e.From == "unknown":
			in = &g.Edges[i]
		case e.To == "backend-service.default":
			out = &g.Edges[i]
		}
	}
	if in == nil || out == nil || in.To != out.From || in.RPS <= 0 || out.RPS <= 0 || in.MTLS != 0 || out.MTLS != 0 {
		t.Errorf("mesh graph edges %+v: want unknown → the app → backend-service.default, plaintext", g.Edges)
	}
}

// TestSeedMeshGraphFromPrometheus: with --prometheus-url, shunt-control
// draws the graph from Debian's Prometheus scraping the sidecar (as Kiali
// reads it), and finds the same calls as from the sidecar itself.
func TestSeedMeshGraphFromPrometheus(t *testing.T) {
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	if _, err := exec.LookPath("prometheus"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed (.ci/deps tests installs it)")
		}
		t.Skip("prometheus is not installed")
	}
	s, err := scenario.Start(context.Background(), scenario.Options{Name: "shunt-seed-prom-" + strconv.Itoa(os.Getpid()),
		Sidecar: scenario.Shunt, ShuntBin: testnet.ShuntBinary(t), ControlBin: testnet.ControlBinary(t),
		ControlArgs: []string{"--prometheus-url", "http://127.0.0.1:9099"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(conf, []byte("global: {scrape_interval: 1s}\nscrape_configs:\n- job_name: sidecars\n  metrics_path: /stats/prometheus\n"+
		"  static_configs: [{targets: [\"10.1.0.5:15090\"]}]\n"), 0o644)
	prom := s.Pod.Peer.Command("prometheus", "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9099")
	var log bytes.Buffer
	prom.Stdout, prom.Stderr = &log, &log
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})
	// Ready, and the sidecar scraped once (Prometheus takes its targets a
	// few seconds after it starts).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := scenario.Curl(s.Pod.Peer, "http://127.0.0.1:9099/api/v1/query?query="+url.QueryEscape(`up{job="sidecars"}`))
		if err == nil && strings.Contains(out, `"1"]`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus never scraped the sidecar: %v %s", err, out)
		}
	}
	// Two rounds of requests a few scrapes apart: a series is born with
	// the first, and increase() counts from its first sample on.
	for round := range 2 {
		if round > 0 {
			time.Sleep(3 * time.Second) // scrapes of the first round's counts
		}
		for range 5 {
			for what, do := range map[string]func() (string, error){"outbound": s.Outbound, "inbound": s.Inbound} {
				if body, err := do(); err != nil || !strings.HasPrefix(body, "hello from backend-service: /test") {
					t.Fatalf("%s: %q, %v", what, body, err)
				}
			}
		}
	}
	t.Cleanup(func() {
		if t.Failed() { // what Prometheus has
			for _, path := range []string{"/api/v1/query?query=" + url.QueryEscape("sum by (reporter,source_canonical_service,destination_canonical_service,destination_service_name,response_code) (increase(istio_requests_total[60s]))"),
				"/api/v1/query?query=" + url.QueryEscape(`istio_requests_total{reporter="source"}[60s]`)} {
				out, err := scenario.Curl(s.Pod.Peer, "http://127.0.0.1:9099"+path)
				t.Logf("%s: %v %s", path, err, out)
			}
		}
	})
	checkGraphEdges(t, s)
}

// checkGraphInBrowser loads the graph page in headless Chromium (Debian's)
// from the backend host: the DOM it renders has the running scenario's
// services and calls, each call's numbers those /graph.json gives at the
// same moment; and a screenshot of it is an image with the page's colours
// (kept in $SHUNT_SCREENSHOT_DIR when set).
func checkGraphInBrowser(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (.ci/deps tests installs it)")
		}
		t.Log("chromium is not installed: the graph page is not checked in a browser")
		return
	}
	const url = "http://10.1.0.1:15014/graph"
	dir := t.TempDir()
	chromium := func(args ...string) string {
		t.Helper()
		cmd := s.Pod.Peer.Command(append([]string{"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + filepath.Join(dir, "profile")}, args...)...)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return out.String()
	}
	rps := func(jsonText string) string {
		var g struct {
			Edges []struct {
				From, To string
				RPS      float64 `json:"rps"`
			} `json:"edges"`
		}
		json.Unmarshal([]byte(jsonText), &g)
		var parts []string
		for _, e := range g.Edges {
			parts = append(parts, fmt.Sprintf(`data-from="%s" data-to="%s" data-rps="%.2f"`, e.From, e.To, e.RPS))
		}
		return strings.Join(parts, "\n")
	}
	// The graph changes with each scrape (every 5 s): the DOM is compared
	// with the numbers read before and after it, when they agree.
	for attempt := 0; ; attempt++ {
		before, _ := scenario.Curl(s.Pod.Peer, "http://10.1.0.1:15014/graph.json")
		dom := chromium("--dump-dom", url)
		after, _ := scenario.Curl(s.Pod.Peer, "http://10.1.0.1:15014/graph.json")
		if rps(before) != rps(after) && attempt < 5 {
			continue
		}
		for _, want := range append([]string{`data-node="unknown"`, `data-node="backend-service.default"`, `<table id="edges">`},
			strings.Split(rps(after), "\n")...) {
			if !strings.Contains(dom, want) {
				t.Errorf("Chromium's DOM of the graph lacks %q:\n%s", want, dom)
			}
		}
		if n := strings.Count(dom, `class="edge"`); n != 2 {
			t.Errorf("Chromium's DOM has %d edges, want 2", n)
		}
		break
	}
	shot := filepath.Join(dir, "mesh-graph.png")
	chromium("--window-size=1200,400", "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot: %v", err)
	}
	// The node boxes' fill (#e3f2fd) is on it.
	found := false
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y && !found; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if r>>8 == 0xe3 && g>>8 == 0xf2 && b>>8 == 0xfd {
				found = true
				break
			}
		}
	}
	if !found {
		t.Errorf("the screenshot (%v) shows no service box", img.Bounds())
	}
	if keep := os.Getenv("SHUNT_SCREENSHOT_DIR"); keep != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(keep, "mesh-graph.png"), b, 0o644)
	}
	// The app's page, the node's link: its call to backend-service, the
	// service's port, its pod's sidecar synced with shunt-control.
	page := chromium("--dump-dom", "http://10.1.0.1:15014/graph/service/default/app")
	for _, want := range []string{`<h1 id="service">app.default</h1>`, "app.default.svc.cluster.local · ports http 80 → http-web",
		`<a href="/graph/service/default/backend-service">backend-service.default</a>`,
		`<td>sidecar~10.1.0.5~app-1.default~default.svc.cluster.local</td>`, `<td class="good">SYNCED</td>`,
		`<p id="endpoints" class="bad">None: calls to it fail.</p>`} { // the manifest has no EndpointSlice of app's
		if !strings.Contains(page, want) {
			t.Errorf("Chromium's DOM of the app's page lacks %q:\n%s", want, page)
		}
	}
}
