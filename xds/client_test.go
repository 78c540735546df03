package xds_test

import (
	"context"
	"fmt"
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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
	"github.com/shunt-dev/shunt/xds"
)

const nodeID = "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local"

// controlPlane is go-control-plane's ADS server over a snapshot cache on
// loopback; it keeps the NACKs it is sent.
type controlPlane struct {
	addr  string
	cache cache.SnapshotCache
	grpc  *grpc.Server
	mu    sync.Mutex
	nacks []string
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: ln.Addr().String(), cache: cache.NewSnapshotCache(true, cache.IDHash{}, nil), grpc: grpc.NewServer()}
	cb := server.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		if r.GetErrorDetail() != nil {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			cp.mu.Unlock()
		}
		return nil
	}}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.grpc, server.NewServer(context.Background(), cp.cache, cb))
	go cp.grpc.Serve(ln)
	t.Cleanup(cp.grpc.Stop)
	return cp
}

func (cp *controlPlane) nacked() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// set serves version: a listener on port routing everything (RDS
// "routes") to the EDS cluster "backend", whose endpoint is ep; bad adds
// a field shunt refuses.
func (cp *controlPlane) set(t *testing.T, version string, port uint16, ep netip.AddrPort, bad bool) {
	t.Helper()
	router, _ := anypb.New(&routerv3.Router{})
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "xds",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "routes"}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}})
	l := &listenerv3.Listener{Name: "dynamic", Address: sockAddr(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
	rc := &routev3.RouteConfiguration{Name: "routes", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}}}}}}}
	c := &clusterv3.Cluster{Name: "backend", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "outbound|80||backend.default.svc.cluster.local"},
		ConnectTimeout:   durationpb.New(time.Second)}
	if bad {
		c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||backend.default.svc.cluster.local",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: sockAddr(ep)}}}}}}}
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: {l}, resource.RouteType: {rc}, resource.ClusterType: {c}, resource.EndpointType: {cla}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

func sockAddr(ap netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
}

func backend(t *testing.T, body string) netip.AddrPort {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String())
}

func freePort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// base is the bootstrap the dynamic resources join: a static listener.
const base = `
static_resources:
  listeners:
  - name: static
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: static}}}]}]}
`

// TestClientFollowsControlPlane: the sidecar takes a listener, its
// routes (RDS), a cluster and its endpoints (EDS) from the control plane
// and serves them beside its static listener; follows an endpoint change;
// NACKs a configuration it cannot run, keeping the last good one; keeps
// serving while the control plane is away, and follows it again when it
// is back.
func TestClientFollowsControlPlane(t *testing.T) {
	b, err := envoyconfig.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.DefaultConfig()
	cfg.Bootstrap = b
	cfg.HealthAddr, cfg.PrometheusAddr, cfg.StatusAddr, cfg.AdminAddr = "", "", "", ""
	cfg.DrainListeners, cfg.DrainTimeout = proxy.DrainAll, time.Second
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := proxy.New(cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	one, two := backend(t, "one"), backend(t, "two")
	port := freePort(t)
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "1", port, one, false)
	c := &xds.Client{Address: cp.addr, Node: &corev3.Node{Id: nodeID}, Base: b, Apply: xds.Checked(p.Reload), Log: log}
	clientDone := make(chan error, 1)
	go func() { clientDone <- c.Run(ctx) }()
	defer func() { cancel(); <-clientDone }()

	get := func() string {
		resp, err := (&http.Client{Timeout: time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never (status %+v)", what, c.Status())
			}
		}
	}
	waitFor("the control plane's listener serves", func() bool { return get() == "one" })
	if got := (func() string {
		resp, err := http.Get("http://" + p.ListenerAddr("static").String() + "/")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	})(); got != "static" {
		t.Errorf("the static listener answers %q", got)
	}

	cp.set(t, "2", port, two, false)
	waitFor("the endpoint change is followed", func() bool { return get() == "two" })

	cp.set(t, "3", port, two, true) // only the cluster changes: its NACK leaves all as it was
	waitFor("a configuration shunt cannot run is NACKed", func() bool { return len(cp.nacked()) > 0 })
	if n := cp.nacked()[0]; !strings.Contains(n, "version 3 refused") || !strings.Contains(n, "LOAD_BALANCING_POLICY_CONFIG") {
		t.Errorf("the NACK says %q", n)
	}
	if got := get(); got != "two" {
		t.Errorf("after the NACK the proxy answers %q, want the last good configuration's", got)
	}
	if st := c.Status(); st.Versions[xds.ClusterType] != "2" || !strings.Contains(st.Nacked[xds.ClusterType], "version 3 refused") {
		t.Errorf("status after the NACK: %+v", st)
	}

	cp.grpc.Stop()
	waitFor("the client sees the control plane go", func() bool { return !c.Status().Connected })
	if got := get(); got != "two" {
		t.Errorf("with the control plane away the proxy answers %q", got)
	}
	cp2 := startControlPlane(t, cp.addr)
	cp2.set(t, "4", port, one, false)
	waitFor("the client follows the control plane back", func() bool { return get() == "one" })
}
