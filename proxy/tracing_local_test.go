package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
	"github.com/shunt-dev/shunt/proxy/tracing"
)

// tracingYAML is a connection manager tracing every request (or at
// random%) to an OpenTelemetry collector: over gRPC through cluster otel,
// or over HTTP through cluster otelhttp.
func tracingYAML(random float64, overHTTP bool) string {
	service := `grpc_service: {envoy_grpc: {cluster_name: otel}}`
	if overHTTP {
		service = `http_service: {http_uri: {uri: "http://collector/v1/traces", cluster: otelhttp, timeout: 5s}}`
	}
	return fmt.Sprintf(`tracing: {random_sampling: {value: %v}, custom_tags: [{tag: istio.namespace, literal: {value: shop}}, {tag: istio.mesh_id, environment: {name: SHUNT_TEST_NO_SUCH_VAR, default_value: cluster.local}}], `+
		`provider: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, service_name: productpage.shop, %s}}}`, random, service)
}

// startTraced runs a traced connection manager in front of a backend
// that keeps the trace headers of the requests it gets.
func startTraced(t *testing.T, col *otlptest.Collector, random float64, overHTTP bool) (*configProxy, func() []http.Header) {
	var mu sync.Mutex
	var seen []http.Header
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
		}
	})
	g, h := netip.MustParseAddrPort(col.GRPCAddr), netip.MustParseAddrPort(col.HTTPAddr)
	cfg := envoytest.HCM{Fields: []string{tracingYAML(random, overHTTP)},
		RouteConfig: "\n            virtual_hosts: [{name: b, domains: [\"*\"], routes: [" +
			"{match: {prefix: /reviews}, decorator: {operation: \"reviews.shop.svc.cluster.local:9080/reviews*\"}, route: {cluster: backend}}, " +
			"{match: {prefix: /}, route: {cluster: backend}}]}]",
		Clusters: envoytest.StaticCluster("backend", "127.0.0.1", int(port)) + envoytest.StaticCluster("otel", "127.0.0.1", int(g.Port())) +
			envoytest.StaticCluster("otelhttp", "127.0.0.1", int(h.Port())),
	}.YAML()
	cp := startConfig(t, "node: {id: sidecar~10.1.0.7~productpage-1.shop~shop.svc.cluster.local}\n"+cfg, nil)
	return cp, func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return append([]http.Header(nil), seen...)
	}
}

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

// TestTracingSpans: a request that comes with a trace goes on as a child
// of the sidecar's span, which reaches the collector with Envoy's tags;
// one without starts a trace; one its caller chose not to sample is not
// recorded, and its headers still go on.
func TestTracingSpans(t *testing.T) {
	for _, overHTTP := range []bool{false, true} {
		t.Run(map[bool]string{false: "otlp-grpc", true: "otlp-http"}[overHTTP], func(t *testing.T) {
			col := otlptest.Start(t)
			cp, seen := startTraced(t, col, 100, overHTTP)

			resp, _ := cp.request(t, "GET /items?id=1 HTTP/1.1\r\nHost: shop\r\nUser-Agent: test/1\r\nx-request-id: rq-1\r\n"+
				"traceparent: 00-"+callerTrace+"-"+callerSpan+"-01\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			tp := seen()[0].Get("traceparent")
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[1] != callerTrace || parts[2] == callerSpan || parts[3] != "01" {
				t.Fatalf("the backend got traceparent %q, want the caller's trace under a new span", tp)
			}
			if b3 := seen()[0].Get("x-b3-traceid"); b3 != "" {
				t.Errorf("a W3C request got B3 headers too: %q", b3)
			}
			spans := col.WaitSpans(t, 1, 10*time.Second)
			s := spans[0]
			want := map[string]string{
				"trace": callerTrace, "parent": callerSpan, "span": parts[2], "kind": "SPAN_KIND_CLIENT", "name": "egress shop",
				"service.name": "productpage.shop", "http.url": "http://shop/items?id=1", "http.method": "GET", "http.status_code": "200",
				"upstream_cluster": "backend", "guid:x-request-id": "rq-1", "user_agent": "test/1", "response_flags": "-",
				"node_id": "sidecar~10.1.0.7~productpage-1.shop~shop.svc.cluster.local", "istio.namespace": "shop", "istio.mesh_id": "cluster.local",
				"http.protocol": "HTTP/1.1", "error": "",
			}
			got := map[string]string{
				"trace": fmt.Sprintf("%x", s.TraceId), "parent": fmt.Sprintf("%x", s.ParentSpanId), "span": fmt.Sprintf("%x", s.SpanId),
				"kind": s.Kind.String(), "name": s.Name, "service.name": s.Resource["service.name"],
			}
			for k := range want {
				if _, ok := got[k]; !ok {
					got[k] = s.Attr(k)
				}
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("span %s = %q, want %q", k, got[k], v)
				}
			}

			// No trace: one starts here, in W3C's and B3's headers; a 503 is an error.
			cp.request(t, "GET /fail HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
			h := seen()[1]
			root := strings.Split(h.Get("traceparent"), "-")
			if len(root) != 4 || root[1] == callerTrace || h.Get("x-b3-traceid") != root[1] || h.Get("x-b3-spanid") != root[2] || h.Get("x-b3-sampled") != "1" {
				t.Fatalf("a new trace went on as traceparent %q, B3 %q %q %q", h.Get("traceparent"), h.Get("x-b3-traceid"), h.Get("x-b3-spanid"), h.Get("x-b3-sampled"))
			}
			spans = col.WaitSpans(t, 2, 10*time.Second)
			s = spans[1]
			if fmt.Sprintf("%x", s.TraceId) != root[1] || len(s.ParentSpanId) != 0 || s.Attr("error") != "true" || s.GetStatus().GetCode().String() != "STATUS_CODE_ERROR" {
				t.Errorf("the new trace's span: trace %x parent %x error %q status %v", s.TraceId, s.ParentSpanId, s.Attr("error"), s.GetStatus())
			}

			// The caller said not to sample: no span, the decision goes on.
			cp.request(t, "GET / HTTP/1.1\r\nHost: shop\r\ntraceparent: 00-"+callerTrace+"-"+callerSpan+"-00\r\nConnection: close\r\n\r\n")
			if tp := seen()[2].Get("traceparent"); !strings.HasPrefix(tp, "00-"+callerTrace+"-") || !strings.HasSuffix(tp, "-00") || strings.Contains(tp, callerSpan) {
				t.Errorf("an unsampled request went on with traceparent %q", tp)
			}
			// B3 single in, B3 single out.
			cp.request(t, "GET / HTTP/1.1\r\nHost: shop\r\nb3: "+callerTrace+"-"+callerSpan+"-1\r\nConnection: close\r\n\r\n")
			if b3 := strings.Split(seen()[3].Get("b3"), "-"); len(b3) != 4 || b3[0] != callerTrace || b3[2] != "1" || b3[3] != callerSpan {
				t.Errorf("a b3 request went on with b3 %q", seen()[3].Get("b3"))
			}
			spans = col.WaitSpans(t, 3, 10*time.Second)
			if len(spans) != 3 {
				t.Errorf("the collector has %d spans, want 3 (the unsampled request has none)", len(spans))
			}
			// A route's decorator names its spans, as Istio's routes do.
			cp.request(t, "GET /reviews/1 HTTP/1.1\r\nHost: shop\r\nx-client-trace-id: t\r\nConnection: close\r\n\r\n")
			if spans = col.WaitSpans(t, 4, 10*time.Second); spans[3].Name != "reviews.shop.svc.cluster.local:9080/reviews*" {
				t.Errorf("the decorated route's span is named %q", spans[3].Name)
			}
		})
	}
}

// TestTracingConfigProblems: what shunt cannot trace with is refused
// with its path.
func TestTracingConfigProblems(t *testing.T) {
	for _, c := range []struct{ tracing, want string }{
		{`tracing: {provider: {name: envoy.tracers.zipkin, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: otel, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON}}}`,
			"tracing.provider.typed_config.@type: envoy.config.trace.v3.ZipkinConfig is not an extension shunt runs"},
		{`tracing: {random_sampling: {value: 10}}`, "tracing.provider: invalid: shunt needs a provider"},
		{`tracing: {custom_tags: [{tag: a, request_header: {name: x-a}}], provider: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, grpc_service: {envoy_grpc: {cluster_name: otel}}}}}`,
			"tracing.custom_tags[0].request_header"},
		{`tracing: {provider: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, grpc_service: {envoy_grpc: {cluster_name: nowhere}}}}}`,
			`grpc_service.envoy_grpc.cluster_name: invalid: no cluster named "nowhere"`},
		{`tracing: {spawn_upstream_span: true, provider: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, grpc_service: {envoy_grpc: {cluster_name: otel}}}}}`,
			"tracing.spawn_upstream_span"},
	} {
		cfg := envoytest.HCM{Fields: []string{c.tracing},
			RouteConfig: "\n            virtual_hosts: [{name: b, domains: [\"*\"], routes: [{match: {prefix: /}, route: {cluster: otel}}]}]",
			Clusters:    envoytest.StaticCluster("otel", "127.0.0.1", 4317)}.YAML()
		err := validate(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %q", c.tracing, err, c.want)
		}
	}
}

// validate is the config's problems, as shunt proxy --validate finds them.
func validate(config string) error {
	b, err := envoyconfig.Parse([]byte(config))
	if err != nil {
		return err
	}
	return proxy.CheckBootstrap(b)
}

// TestSidecarTracing: Istio's sidecar with a collector, on both sides of
// a call: the caller's outbound CLIENT span, the callee's inbound SERVER
// span under it, the app's request under that; each named for its
// workload.
func TestSidecarTracing(t *testing.T) {
	col := otlptest.Start(t)
	var mu sync.Mutex
	var got http.Header
	app := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
	}))
	sidecar := func(name string) func(*proxy.Config) {
		return func(c *proxy.Config) {
			c.Tracing = &proxy.TracingConfig{Collector: col.GRPCAddr, Protocol: tracing.OTLPGRPC, Sampling: 100}
			c.TracingFlushInterval = 50 * time.Millisecond
			c.Workload = &proxy.Workload{Name: name + "-v1", Namespace: "shop", CanonicalService: name, CanonicalRevision: "v1", Cluster: "Kubernetes"}
			c.NodeID = "sidecar~10.0.0.1~" + name + "-1.shop~shop.svc.cluster.local"
		}
	}
	callee := startHTTP(t, app, sidecar("reviews"))
	caller := startHTTP(t, nil, sidecar("productpage"))
	caller.to(callee.Addr(proxy.Inbound))

	c := caller.dial(t, proxy.Outbound)
	resp, _ := exchange(t, c, bufio.NewReader(c), "GET /reviews/1 HTTP/1.1\r\nHost: reviews:9080\r\nx-request-id: rq-7\r\n\r\n", "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	spans := col.WaitSpans(t, 2, 10*time.Second)
	byKind := map[string]otlptest.Span{}
	for _, s := range spans {
		byKind[s.Kind.String()] = s
	}
	client, server := byKind["SPAN_KIND_CLIENT"], byKind["SPAN_KIND_SERVER"]
	if client.Span == nil || server.Span == nil {
		t.Fatalf("want a CLIENT and a SERVER span, got %v", spans)
	}
	mu.Lock()
	tp := strings.Split(got.Get("traceparent"), "-")
	mu.Unlock()
	checks := [][3]string{
		{"the server span's trace", fmt.Sprintf("%x", server.TraceId), fmt.Sprintf("%x", client.TraceId)},
		{"the server span's parent", fmt.Sprintf("%x", server.ParentSpanId), fmt.Sprintf("%x", client.SpanId)},
		{"the client span's parent", fmt.Sprintf("%x", client.ParentSpanId), ""},
		{"the app's trace", tp[1], fmt.Sprintf("%x", client.TraceId)},
		{"the app's parent", tp[2], fmt.Sprintf("%x", server.SpanId)},
		{"client service", client.Resource["service.name"], "productpage.shop"},
		{"server service", server.Resource["service.name"], "reviews.shop"},
		{"client name", client.Name, "egress reviews:9080"},
		{"server name", server.Name, "ingress"},
		{"client node", client.Attr("node_id"), "sidecar~10.0.0.1~productpage-1.shop~shop.svc.cluster.local"},
		{"server canonical service", server.Attr("istio.canonical_service"), "reviews"},
		{"server mesh", server.Attr("istio.mesh_id"), "cluster.local"},
		{"client request id", client.Attr("guid:x-request-id"), "rq-7"},
		{"server request id", server.Attr("guid:x-request-id"), "rq-7"},
		{"client upstream", client.Attr("upstream_cluster"), "PassthroughCluster"},
		{"server upstream", server.Attr("upstream_cluster"), "InboundPassthroughCluster"},
		{"server status", server.Attr("http.status_code"), "200"},
	}
	for _, c := range checks {
		if c[1] != c[2] {
			t.Errorf("%s = %q, want %q", c[0], c[1], c[2])
		}
	}
}

// TestGRPCTracing: gRPC calls through the sidecar are spans too: the
// trace goes on in the call's metadata, the grpc-status is a tag, and a
// status other than OK marks the span failed.
func TestGRPCTracing(t *testing.T) {
	col := otlptest.Start(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen = append(seen, strings.Join(md.Get("traceparent"), ","))
		mu.Unlock()
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	lp := startHTTP(t, nil, func(c *proxy.Config) {
		c.Tracing = &proxy.TracingConfig{Collector: col.HTTPAddr, Protocol: tracing.OTLPHTTP, Sampling: 0}
		c.TracingFlushInterval = 50 * time.Millisecond
		c.Workload = &productpage
	})
	lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
	conn, err := grpc.NewClient("passthrough:///"+lp.Addr(proxy.Outbound).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	// Sampling 0: a call with no say of its own is not traced; one its
	// caller sampled is.
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	sampled := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	if _, err := hc.Check(sampled, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v, want NotFound", err)
	}
	spans := col.WaitSpans(t, 1, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // a second span, wrongly sent, would be here by now
	if spans = col.Spans(); len(spans) != 1 {
		t.Fatalf("%d spans, want the sampled call's only", len(spans))
	}
	s := spans[0]
	mu.Lock()
	defer mu.Unlock()
	tp := strings.Split(seen[1], "-")
	if len(tp) != 4 || tp[1] != callerTrace || tp[2] != fmt.Sprintf("%x", s.SpanId) || fmt.Sprintf("%x", s.ParentSpanId) != callerSpan {
		t.Errorf("the server got traceparent %q; the span is %x under %x", seen[1], s.SpanId, s.ParentSpanId)
	}
	if s.Attr("grpc.status_code") != "5" || s.Attr("error") != "true" || s.Attr("http.protocol") != "HTTP/2" || s.Attr("http.status_code") != "200" {
		t.Errorf("span tags: grpc.status_code %q error %q protocol %q status %q", s.Attr("grpc.status_code"), s.Attr("error"), s.Attr("http.protocol"), s.Attr("http.status_code"))
	}
	if !strings.HasSuffix(seen[0], "-00") {
		t.Errorf("the unsampled call went on with traceparent %q", seen[0])
	}
}
