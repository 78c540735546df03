package control_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/xds"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer serves w on loopback, pushing changes after 10ms.
func startServer(t *testing.T, w *control.World) (*control.Server, string) {
	t.Helper()
	s, err := control.NewServer(control.DefaultMesh(), w, 10*time.Millisecond, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := control.NewGRPCServer()
	s.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	go g.Serve(ln)
	t.Cleanup(func() { cancel(); g.Stop() })
	return s, ln.Addr().String()
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never", what)
		}
	}
}

// TestServerFollowsWorld connects shunt's own xDS client to the server:
// the sidecar gets all four types and runs them, syncz shows it synced,
// and an endpoint change reaches it as a new EDS version alone.
func TestServerFollowsWorld(t *testing.T) {
	s, addr := startServer(t, loadWorld(t))
	var mu sync.Mutex
	var applied *bootstrapv3.Bootstrap
	apply := xds.Checked(func(b *bootstrapv3.Bootstrap) error {
		cfg := proxy.DefaultConfig()
		cfg.Bootstrap = b
		cfg.HealthAddr, cfg.PrometheusAddr, cfg.StatusAddr, cfg.AdminAddr = "", "", "", ""
		if _, err := proxy.New(cfg, quiet, nil); err != nil {
			return err
		}
		mu.Lock()
		applied = b
		mu.Unlock()
		return nil
	})
	c := &xds.Client{Address: addr, Node: &corev3.Node{Id: appNode}, Base: &bootstrapv3.Bootstrap{}, Apply: apply, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	synced := func() bool {
		st := s.Status()
		return len(st) == 1 && st[0].Synced() && st[0].EndpointAcked != ""
	}
	waitFor(t, "the sidecar is synced", synced)
	before := c.Status().Versions
	if len(before) != 4 {
		t.Fatalf("the client accepted %v, want the four types", before)
	}
	if got := backendEndpoints(t, &mu, &applied); got != "10.1.0.7:8080 10.1.0.8:8080" {
		t.Errorf("backend-service's endpoints: %s", got)
	}

	w := s.World().Clone()
	w.PutSlice("default/backend-service", "default/backend-service-abc", []control.Endpoint{
		{Addr: netip.MustParseAddr("10.1.0.7"), Ports: map[string]uint16{"http": 8080}, Ready: true}})
	s.SetWorld(w)
	waitFor(t, "the endpoint change is applied", func() bool {
		return backendEndpoints(t, &mu, &applied) == "10.1.0.7:8080" && synced()
	})
	after := c.Status().Versions
	for _, typ := range []string{xds.ListenerType, xds.RouteType, xds.ClusterType} {
		if before[typ] != after[typ] {
			t.Errorf("%s went from version %s to %s for an endpoint change", typ, before[typ], after[typ])
		}
	}
	if before[xds.EndpointType] == after[xds.EndpointType] {
		t.Errorf("the endpoints' version stayed %s", after[xds.EndpointType])
	}
	metrics := get(t, s.Handler(), "/metrics")
	for _, want := range []string{"pilot_xds 1", `pilot_xds_pushes{type="eds"} 2`, `pilot_xds_pushes{type="lds"} 1`, "pilot_services 7", "pilot_proxy_convergence_time_count 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	if dump := get(t, s.Handler(), "/debug/config_dump?proxyID="+appNode); !strings.Contains(dump, "outbound|10000||backend-service.default.svc.cluster.local") {
		t.Errorf("config_dump:\n%s", dump)
	}
}

func backendEndpoints(t *testing.T, mu *sync.Mutex, b **bootstrapv3.Bootstrap) string {
	mu.Lock()
	defer mu.Unlock()
	if *b == nil {
		return ""
	}
	for _, c := range (*b).GetStaticResources().GetClusters() {
		if c.GetName() != "outbound|10000||backend-service.default.svc.cluster.local" {
			continue
		}
		var eps []string
		for _, g := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range g.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				eps = append(eps, netip.AddrPortFrom(netip.MustParseAddr(sa.GetAddress()), uint16(sa.GetPortValue())).String())
			}
		}
		return strings.Join(eps, " ")
	}
	return "no cluster"
}

func get(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Body.String()
}

// dialADS is an ADS client of the server at addr, and a context its
// streams end with (10s at most).
func dialADS(t *testing.T, addr string) (discoveryv3.AggregatedDiscoveryServiceClient, context.Context, context.CancelFunc) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return discoveryv3.NewAggregatedDiscoveryServiceClient(conn), ctx, cancel
}

// TestServerRecordsNACK speaks ADS by hand: a NACK shows in syncz and
// pilot_total_xds_rejects, and a node that is neither a sidecar nor a
// gateway is refused with why.
func TestServerRecordsNACK(t *testing.T) {
	s, addr := startServer(t, loadWorld(t))
	ads, ctx, cancel := dialADS(t, addr)

	bad, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "waypoint~1.2.3.4~wp.ns~ns.svc.cluster.local"}, TypeUrl: xds.ClusterType})
	if _, err := bad.Recv(); err == nil || !strings.Contains(err.Error(), "not a sidecar's or a gateway's") {
		t.Errorf("a waypoint's node: %v, want it refused as not a sidecar's or a gateway's", err)
	}

	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: appNode}, TypeUrl: xds.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 12 {
		t.Errorf("%d clusters sent, want 12", len(resp.GetResources()))
	}
	st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "cluster x: refused"}})
	waitFor(t, "the NACK is recorded", func() bool {
		ss := s.Status()
		return len(ss) == 1 && ss[0].Nacks["cds"] == "cluster x: refused" && !ss[0].Synced()
	})
	if m := get(t, s.Handler(), "/metrics"); !strings.Contains(m, `pilot_total_xds_rejects{type="cds"} 1`) {
		t.Errorf("/metrics:\n%s", m)
	}
	if syncz := get(t, s.Handler(), "/debug/syncz"); !strings.Contains(syncz, `"cds": "cluster x: refused"`) || !strings.Contains(syncz, `"cluster_sent": "`+resp.GetVersionInfo()) {
		t.Errorf("syncz:\n%s", syncz)
	}
	st.CloseSend()
	cancel()
	waitFor(t, "the closed stream is forgotten", func() bool { return len(s.Status()) == 0 })
}
