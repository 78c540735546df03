package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// localProber probes 127.0.0.1 from 127.0.0.6, as the proxy does in a pod
// (all of 127/8 is local, so no root is needed).
func localProber(probes string) (*appProber, error) {
	m, err := ParseAppProbes(probes)
	if err != nil {
		return nil, err
	}
	return &appProber{probes: m, target: netip.MustParseAddr("127.0.0.1"), source: netip.MustParseAddr("127.0.0.6"), statusPort: "15020"}, nil
}

func probe(t *testing.T, a *appProber, path string, header http.Header) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://10.1.0.5:15020"+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func port(addr net.Addr) string { return strconv.Itoa(addr.(*net.TCPAddr).Port) }

func TestHTTPProbe(t *testing.T) {
	var seenP atomic.Pointer[http.Request] // the last request the app saw
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenP.Store(r)
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("fine"))
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/slow":
			time.Sleep(1500 * time.Millisecond)
		default:
			http.Error(w, "broken", http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsApp.Close()
	p := port(app.Listener.Addr())
	a, err := localProber(`{
		"/app-health/web/readyz": {"httpGet": {"path": "/ok", "port": ` + p + `, "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]}},
		"/app-health/web/livez": {"httpGet": {"path": "broken", "port": ` + p + `}},
		"/app-health/web/startupz": {"httpGet": {"path": "/moved", "port": ` + p + `}},
		"/app-health/web/prestopz": {"httpGet": {"path": "/slow", "port": ` + p + `}, "timeoutSeconds": 1},
		"/app-health/tls/readyz": {"httpGet": {"path": "/", "port": ` + port(tlsApp.Listener.Addr()) + `, "scheme": "HTTPS"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := probe(t, a, "/app-health/web/readyz", http.Header{"User-Agent": {"kube-probe/1.33"}}); code != 200 || body != "fine" {
		t.Errorf("readyz: %d %q", code, body)
	}
	seen := seenP.Load()
	if seen.Header.Get("X-Probe") != "kubelet" || seen.Header.Get("User-Agent") != "kube-probe/1.33" {
		t.Errorf("headers the app saw: %v", seen.Header)
	}
	if seen.Host != "10.1.0.5:"+p {
		t.Errorf("Host %q, want the status port replaced by the app's", seen.Host)
	}
	if !strings.HasPrefix(seen.RemoteAddr, "127.0.0.6:") {
		t.Errorf("the probe came from %s, want 127.0.0.6", seen.RemoteAddr)
	}
	for path, want := range map[string]int{"/app-health/web/livez": 503, "/app-health/web/startupz": 200,
		"/app-health/web/prestopz": 500, "/app-health/tls/readyz": 200, "/app-health/nobody/readyz": 400} {
		if code, body := probe(t, a, path, nil); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := port(ln.Addr())
	closed, _ := net.Listen("tcp4", "127.0.0.1:0")
	down := port(closed.Addr())
	closed.Close()
	a, err := localProber(`{"/app-health/app/livez": {"tcpSocket": {"port": ` + up + `}},
		"/app-health/app/readyz": {"tcpSocket": {"port": ` + down + `}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := probe(t, a, "/app-health/app/livez", nil); code != 200 {
		t.Errorf("listening port: %d", code)
	}
	if code, body := probe(t, a, "/app-health/app/readyz", nil); code != 500 || !strings.Contains(body, "refused") {
		t.Errorf("closed port: %d %q", code, body)
	}
	ln.Close()
}

func TestGRPCProbe(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("billing", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	p := port(ln.Addr())
	a, err := localProber(`{"/app-health/app/readyz": {"grpc": {"port": ` + p + `}},
		"/app-health/app/livez": {"grpc": {"port": ` + p + `, "service": "billing"}},
		"/app-health/app/startupz": {"grpc": {"port": 1}}}`)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/app-health/app/readyz": 200, "/app-health/app/livez": 500, "/app-health/app/startupz": 500} {
		if code, body := probe(t, a, path, nil); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
}

func TestParseAppProbesRefuses(t *testing.T) {
	for _, bad := range []string{
		`{"/healthz": {"tcpSocket": {"port": 80}}}`,
		`{"/app-health/a/readyz": {}}`,
		`{"/app-health/a/readyz": {"tcpSocket": {"port": 80}, "httpGet": {"port": 80}}}`,
		`{"/app-health/a/readyz": {"tcpSocket": {"port": 0}}}`,
		`{"/app-health/a/readyz": {"httpGet": {"port": "http"}}}`,
		`{"/app-health/a/readyz": {"grpc": {"port": 70000}}}`,
		`[1,2]`,
	} {
		if _, err := ParseAppProbes(bad); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
