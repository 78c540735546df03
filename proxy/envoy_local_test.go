package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// configProxy runs an Envoy configuration in the test process: the seed's,
// changed by edits (old → new), on loopback, with its access log in a file.
type configProxy struct {
	*proxy.Proxy
	logFile string
	logs    *scenario.Buffer
}

// seedConfig is the seed's Envoy configuration with its listener on a
// free loopback port and its stdout access log sent to logFile.
func seedConfig(t *testing.T, logFile string, edits ...string) string {
	t.Helper()
	b, err := os.ReadFile("envoyconfig/testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	edits = append([]string{
		"address: 0.0.0.0\n        port_value: 10000", "address: 127.0.0.1\n        port_value: 0",
		`"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`,
		`"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog` + "\n              path: " + logFile,
	}, edits...)
	for i := 0; i < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("the seed config has no %q", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	return s
}

// startConfig runs config; names resolve through hosts.
func startConfig(t testing.TB, config string, hosts map[string][]netip.Addr) *configProxy {
	t.Helper()
	b, err := envoyconfig.Parse([]byte(config))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cp := &configProxy{logs: &scenario.Buffer{}}
	cfg := proxy.DefaultConfig()
	cfg.Bootstrap = b
	cfg.HealthAddr, cfg.PrometheusAddr, cfg.StatusAddr = "", "", ""
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.DrainListeners, cfg.DrainTimeout = proxy.DrainAll, time.Second
	cfg.TracingFlushInterval = 50 * time.Millisecond
	cfg.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := hosts[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	p, err := proxy.New(cfg, slog.New(slog.NewTextHandler(cp.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	cp.Proxy = p
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
		if t.Failed() {
			t.Logf("proxy log:\n%s", cp.logs)
		}
	})
	return cp
}

// request sends raw to the listener and reads the response.
func (cp *configProxy) request(t *testing.T, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", cp.ListenerAddr("listener_0").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// waitLog waits for the access log file to hold want.
func (cp *configProxy) waitLog(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(cp.logFile)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access log has no %q:\n%s", want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func backendPort(t testing.TB, h http.HandlerFunc) (*httptest.Server, uint16) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
}

func TestSeedConfigRuns(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s %s", r.Method, r.URL.Path)
	})
	logFile := filepath.Join(t.TempDir(), "access.log")
	cp := startConfig(t, seedConfig(t, logFile, "port_value: 10000", fmt.Sprintf("port_value: %d", port)),
		map[string][]netip.Addr{"backend-headless-service": {netip.MustParseAddr("127.0.0.1")}})
	cp.logFile = logFile
	// nginx's proxy_pass: HTTP/1.0, Connection: close.
	resp, body := cp.request(t, "GET /test HTTP/1.0\r\nHost: backend-service:10000\r\nUser-Agent: curl/7.81.0\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "backend saw GET /test" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	line := cp.waitLog(t, `"GET /test HTTP/1.0" 200 - 0 21 `)
	if !strings.Contains(line, fmt.Sprintf(`"-" "curl/7.81.0" "`)) || !strings.Contains(line, fmt.Sprintf(`"backend-service:10000" "127.0.0.1:%d"`, port)) {
		t.Errorf("log line: %s", line)
	}
	code, dump, err := httpGet("http://" + cp.AdminAddr().String() + "/config_dump")
	if err != nil || code != 200 || !strings.Contains(dump, `"name": "app_service"`) || !strings.Contains(dump, `"type": "STRICT_DNS"`) {
		t.Errorf("config_dump: %d %v\n%s", code, err, dump)
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestConfigSemantics: what a configuration says, the proxy does, with
// Envoy's defaults where it says nothing.
func TestConfigSemantics(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
		fmt.Fprintf(w, "id=%s", r.Header.Get("X-Request-Id"))
	})
	hosts := map[string][]netip.Addr{"backend-headless-service": {netip.MustParseAddr("127.0.0.1")}}
	backend := fmt.Sprintf("port_value: %d", port)
	vhost := "domains: [\"*\"]"
	route := "route:\n                  cluster: app_service"
	for _, tc := range []struct {
		name    string
		edits   []string
		request string
		code    int
		log     string // in the access log line
	}{
		{"HTTP/1.0 refused without accept_http_10", []string{"accept_http_10: true", "accept_http_10: false"},
			"GET / HTTP/1.0\r\n\r\n", 426, `"GET / HTTP/1.0" 426 - `},
		{"no virtual host for the authority", []string{vhost, "domains: [\"other.example\"]"},
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404, `"GET / HTTP/1.1" 404 NR `},
		{"route timeout", []string{route, route + "\n                  timeout: 0.2s"},
			"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 504, `"GET /slow HTTP/1.1" 504 UT `},
		{"a name that does not resolve", []string{"address: backend-headless-service", "address: nowhere"},
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 503, `"GET / HTTP/1.1" 503 UH `},
		{"an upgrade not configured", nil,
			"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 403, `"GET /ws HTTP/1.1" 403 - `},
		{"connect refused", []string{"address: backend-headless-service", "address: 127.0.0.1", backend, "port_value: 9"},
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 503, `"GET / HTTP/1.1" 503 UF `},
		{"STATIC cluster", []string{"type: STRICT_DNS", "type: STATIC", "address: backend-headless-service", "address: 127.0.0.1"},
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, `"GET / HTTP/1.1" 200 - `},
		{"LOGICAL_DNS cluster", []string{"type: STRICT_DNS", "type: LOGICAL_DNS"},
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, `"GET / HTTP/1.1" 200 - `},
		{"exact path match", []string{`prefix: "/"`, `path: "/exact"`},
			"GET /exact/not HTTP/1.1\r\nHost: x\r\n\r\n", 404, `"GET /exact/not HTTP/1.1" 404 NR `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "access.log")
			cp := startConfig(t, seedConfig(t, logFile, append([]string{"port_value: 10000\n", backend + "\n"}, tc.edits...)...), hosts)
			cp.logFile = logFile
			resp, body := cp.request(t, tc.request)
			if resp.StatusCode != tc.code {
				t.Fatalf("%d %q, want %d", resp.StatusCode, body, tc.code)
			}
			cp.waitLog(t, tc.log)
		})
	}
}

// TestConfigProblems: a configuration shunt cannot run is refused whole,
// every problem named by its path.
func TestConfigProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits []string
		want  []string
	}{
		{"undefined cluster", []string{"cluster: app_service", "cluster: nowhere"},
			[]string{`static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster: invalid: no cluster named "nowhere"`}},
		{"STATIC with a name", []string{"type: STRICT_DNS", "type: STATIC"},
			[]string{`static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: invalid: "backend-headless-service" is not an IP address`}},
		{"ORIGINAL_DST without CLUSTER_PROVIDED", []string{"type: STRICT_DNS", "type: ORIGINAL_DST"},
			[]string{"static_resources.clusters[0].lb_policy: invalid: an ORIGINAL_DST cluster takes lb_policy CLUSTER_PROVIDED",
				"static_resources.clusters[0].load_assignment: invalid: an ORIGINAL_DST cluster has no endpoints"}},
		{"listener on a name", []string{"address: 127.0.0.1\n        port_value: 0", "address: localhost\n        port_value: 0"},
			[]string{`static_resources.listeners[0].address.socket_address.address: invalid: "localhost" is not an IP address`}},
		{"no router", []string{"envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"},
			[]string{"http_filters[0]: invalid: the last filter must be the router"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := envoyconfig.Parse([]byte(seedConfig(t, filepath.Join(t.TempDir(), "log"), tc.edits...)))
			if err != nil {
				t.Fatal(err)
			}
			cfg := proxy.DefaultConfig()
			cfg.Bootstrap = b
			_, err = proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			var ps envoyconfig.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("got %v, want problems", err)
			}
			if len(ps) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(tc.want), ps)
			}
			for i, w := range tc.want {
				if !strings.Contains(ps[i].String(), w) {
					t.Errorf("problem %d: %q, want %q in it", i, ps[i], w)
				}
			}
		})
	}
}

// hcmYAML is a bootstrap whose listener_0, on a free loopback port, runs
// an HTTP connection manager: its access log to logFile (in logFormat;
// "" for Envoy's default), filters before the router, routeConfig and
// clusters (see envoytest.HCM).
func hcmYAML(logFile, logFormat, filters, routeConfig, clusters string) string {
	return envoytest.HCM{AccessLogs: []string{envoytest.FileLog(logFile, logFormat)}, Filters: filters,
		RouteConfig: routeConfig, Clusters: clusters}.YAML()
}
