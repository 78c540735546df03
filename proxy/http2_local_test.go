package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/shunt-dev/shunt/proxy"
)

// h2cClient speaks HTTP/2 with prior knowledge, on one connection.
func h2cClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{}}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// h2cBackend is a backend that speaks HTTP/1.1 and h2c.
func h2cBackend(t *testing.T, h http.Handler) *backend {
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.Protocols = new(http.Protocols)
	b.Config.Protocols.SetHTTP1(true)
	b.Config.Protocols.SetUnencryptedHTTP2(true)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// TestH2C: HTTP/2 with prior knowledge is proxied at L7 stream by stream,
// multiplexed upstream over HTTP/2 (the passthrough cluster uses the
// downstream's protocol), trailers kept, each stream logged.
func TestH2C(t *testing.T) {
	b := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s id=%t body=%d", r.Proto, r.Method, r.URL.Path, r.Header.Get("X-Request-Id") != "", len(body))
		w.Header().Set("X-Checksum", "abc")
	}))
	// A drain long enough for the GOAWAY's graceful close (a second at
	// most, the server's wait for the client to close first).
	lp := startHTTP(t, b, func(c *proxy.Config) { c.DrainTimeout = 10 * time.Second })
	client := h2cClient()
	defer client.CloseIdleConnections()
	url := "http://" + lp.Addr(proxy.Outbound).String()
	// One request first, so that the client and the proxy each have their
	// one connection before the concurrent streams share it.
	if resp, err := client.Get(url + "/warm"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			resp, err := client.Post(fmt.Sprintf("%s/s%d", url, i), "text/plain", strings.NewReader("hello"))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf("HTTP/2.0 POST /s%d id=true body=5", i)
			if resp.ProtoMajor != 2 || string(body) != want || resp.Trailer.Get("X-Checksum") != "abc" {
				errs <- fmt.Errorf("%s %q trailer %q, want %q", resp.Proto, body, resp.Trailer.Get("X-Checksum"), want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	lp.waitAccess(t, `"POST /s7 HTTP/2" 200 - via_upstream rx=5 tx=`, "cluster=PassthroughCluster")
	if n := b.conns.Load(); n != 1 {
		t.Errorf("20 concurrent streams took %d upstream connections, want 1 (multiplexed)", n)
	}
	// A drain sends GOAWAY: the idle connection is closed gracefully, and
	// the drain ends without resetting it.
	lp.stop()
	select {
	case <-lp.served:
		lp.served <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not stop")
	}
	if strings.Contains(lp.logs.String(), "reset the connections left") {
		t.Errorf("the drain reset the HTTP/2 connection instead of sending GOAWAY:\n%s", lp.logs)
	}
}

// TestH2CUpgrade: an HTTP/1.1 request asking for h2c is answered 101 and
// then over HTTP/2, as curl --http2 asks.
func TestH2CUpgrade(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	if out, _ := exec.Command(curl, "--version").Output(); !strings.Contains(string(out), "HTTP2") {
		t.Skip("this curl has no HTTP/2")
	}
	b := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "backend %s", r.Proto) }))
	lp := startHTTP(t, b, nil)
	out, err := exec.Command(curl, "-sS", "-i", "--http2", "--max-time", "5", "http://"+lp.Addr(proxy.Outbound).String()+"/up").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "HTTP/1.1 101") || !strings.Contains(string(out), "HTTP/2 200") ||
		!strings.HasSuffix(string(out), "backend HTTP/1.1") {
		t.Fatalf("%v\n%s", err, out)
	}
	lp.waitAccess(t, `"GET /up HTTP/1.1" 200 - via_upstream`)
}

// TestGRPC: unary, server-streaming and bidirectional gRPC through the
// sidecar, grpc-status carried in trailers, counted with Istio's
// grpc_response_status; a gRPC request the proxy answers itself gets a
// gRPC status, not an HTTP error page.
func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	lp := startHTTP(t, nil, func(c *proxy.Config) { c.Workload = &productpage })
	lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
	conn, err := grpc.NewClient("passthrough:///"+lp.Addr(proxy.Outbound).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	// Unary.
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v %v", r, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v, want NotFound", err)
	}
	// Server streaming: updates arrive as they happen, through the proxy.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("first watch update: %v %v", r, err)
	}
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("second watch update: %v %v", r, err)
	}
	// Bidirectional streaming.
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		r, err := rc.Recv()
		if err != nil || len(r.GetListServicesResponse().GetService()) != 3 {
			t.Fatalf("reflection: %v %v", r, err)
		}
	}
	rc.CloseSend()
	if _, err := rc.Recv(); err != io.EOF {
		t.Fatalf("reflection end: %v", err)
	}
	cancel()
	lp.waitAccess(t, `"POST /grpc.health.v1.Health/Check HTTP/2" 200 - via_upstream`)
	lp.waitAccess(t, `"POST /grpc.reflection.v1.ServerReflection/ServerReflectionInfo HTTP/2" 200 - via_upstream`)
	if v := series(t, lp.Proxy, "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "5"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("NotFound counted %v times", v)
	}
	if v := series(t, lp.Proxy, "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "0"}).GetCounter().GetValue(); v != 2 {
		t.Errorf("OK counted %v times, want 2 (the check, and the reflection stream)", v)
	}
	// The upstream is gone: the proxy's own answer is a gRPC status.
	srv.Stop()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	_, err = hc.Check(ctx2, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "upstream connect error") {
		t.Fatalf("Check with the upstream gone: %v, want Unavailable from the proxy", err)
	}
	// UF when the proxy already knew the connection gone, UC when the
	// call went out on it as the server closed it.
	lp.waitAccess(t, `"POST /grpc.health.v1.Health/Check HTTP/2" 200 U`, "upstream_reset_before_response_started{connection_")
}
