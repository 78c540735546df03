package control_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/tracing"
	"github.com/shunt-dev/shunt/xds"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const appNode = "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local"

func loadWorld(t *testing.T) *control.World {
	t.Helper()
	data, err := os.ReadFile("testdata/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w, err := control.LoadWorld(data, control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func appSidecar(t *testing.T) control.Node {
	t.Helper()
	n, err := control.ParseNode(&corev3.Node{Id: appNode})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runs says whether the sidecar runs what it is sent: every resource
// valid by Envoy's own rules, and the whole put together as the xDS
// client puts it, then built by the proxy.
func runs(t *testing.T, res *control.Resources) {
	t.Helper()
	for typ, list := range res.ByType() {
		for _, a := range list {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				t.Errorf("%s: Envoy would refuse it: %v", typ, err)
			}
		}
	}
	b, err := xds.Assemble(&bootstrapv3.Bootstrap{Node: &corev3.Node{Id: appNode}}, res.ByType())
	if err != nil {
		t.Fatal(err)
	}
	err = xds.Checked(func(b *bootstrapv3.Bootstrap) error {
		cfg := proxy.DefaultConfig()
		cfg.Bootstrap = b
		cfg.HealthAddr, cfg.PrometheusAddr, cfg.StatusAddr, cfg.AdminAddr = "", "", "", ""
		_, err := proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		return err
	})(b)
	if err != nil {
		t.Errorf("the sidecar refuses what it is sent: %v", err)
	}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./control -run %s -update rewrites it); got:\n%s", path, t.Name(), got)
	}
}

// TestCompileSeedCluster compiles the seed scenario's cluster for the
// app's sidecar, checks it against the golden file and that the sidecar
// runs it.
func TestCompileSeedCluster(t *testing.T) {
	for _, tc := range []struct {
		name string
		mesh func(*control.Mesh)
	}{
		{"default", func(*control.Mesh) {}},
		{"registry-only", func(m *control.Mesh) {
			m.RegistryOnly, m.AccessLogFile, m.ProtocolDetectionTimeout = true, "/dev/stdout", 0
		}},
		{"tracing", func(m *control.Mesh) {
			m.Tracing = &proxy.TracingConfig{Collector: "otel-collector.observability.svc.cluster.local:4317", Protocol: tracing.OTLPGRPC, Sampling: 10}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := control.DefaultMesh()
			tc.mesh(&m)
			res, err := control.Compile(loadWorld(t), appSidecar(t), m)
			if err != nil {
				t.Fatal(err)
			}
			runs(t, res)
			got, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".golden.yaml", got)
		})
	}
}

func TestLoadWorldProblems(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"kind: Service\nspec: {ports: [{port: x}]}", "document 1"},
		{"metadata: {name: a}", "no kind"},
		{"kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4", "no kubernetes.io/service-name label"},
		{"kind: Pod\n---\nkind: Service\nspec: {bogus: 1}", "document 2"},
	} {
		if _, err := control.LoadWorld([]byte(tc.doc), control.DefaultDomain); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.doc, err, tc.want)
		}
	}
}

// TestCompilerKeepsWhatDidNotChange: a compiler that has compiled a
// world compiles the next one as a fresh compile would, keeping the
// resources an endpoint change leaves alone.
func TestCompilerKeepsWhatDidNotChange(t *testing.T) {
	w := loadWorld(t)
	cc, err := control.NewCompiler(control.DefaultMesh())
	if err != nil {
		t.Fatal(err)
	}
	before := cc.Compile(w, appSidecar(t))
	next := w.Clone()
	next.PutSlice("default/db", "default/db-1", []control.Endpoint{{Addr: netip.MustParseAddr("10.1.0.21"), Ports: map[string]uint16{"tcp-postgres": 5432}, Ready: true}})
	after := cc.Compile(next, appSidecar(t))
	fresh, err := control.Compile(next, appSidecar(t), control.DefaultMesh())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := after.YAML()
	f, _ := fresh.YAML()
	if !bytes.Equal(a, f) {
		t.Fatalf("the kept compile differs from a fresh one:\n%s\nfresh:\n%s", a, f)
	}
	if before.Listeners[1] != after.Listeners[1] {
		t.Error("virtualOutbound was rebuilt for an endpoint change")
	}
	if &before.Routes[0] != &after.Routes[0] {
		t.Error("the namespace's resources were compiled whole for an endpoint change, not patched")
	}
	changed := 0
	for i := range before.Endpoints {
		if before.Endpoints[i] != after.Endpoints[i] {
			changed++
			if name := after.Endpoints[i].GetClusterName(); name != "outbound|5432||db.default.svc.cluster.local" {
				t.Errorf("%s rebuilt", name)
			}
		}
	}
	if changed != 1 {
		t.Errorf("%d load assignments rebuilt, want db's", changed)
	}

	next2 := next.Clone()
	next2.DeleteService("default/db")
	gone := cc.Compile(next2, appSidecar(t))
	fresh2, _ := control.Compile(next2, appSidecar(t), control.DefaultMesh())
	g, _ := gone.YAML()
	f2, _ := fresh2.YAML()
	if !bytes.Equal(g, f2) || bytes.Contains(g, []byte("db.default")) {
		t.Errorf("after deleting db the kept compile differs from a fresh one, or keeps db")
	}
}

// compiled compiles the seed's mesh and more under m for the app's
// sidecar, and checks that the sidecar runs it.
func compiled(t *testing.T, more []byte, m control.Mesh) (*control.Compiler, *control.World, *control.Resources) {
	t.Helper()
	mesh, _ := os.ReadFile("testdata/mesh.yaml")
	w, err := control.LoadWorld(append(append(mesh, "\n---\n"...), more...), control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := control.NewCompiler(m)
	if err != nil {
		t.Fatal(err)
	}
	res := cc.Compile(w, appSidecar(t))
	runs(t, res)
	return cc, w, res
}

// compileWith compiles the seed's mesh with testdata/extra for the
// app's sidecar, checks that the sidecar runs it and that it matches
// testdata/goldenName, and returns the compiler and the world.
func compileWith(t *testing.T, extra, goldenName string) (*control.Compiler, *control.World) {
	t.Helper()
	more, err := os.ReadFile(filepath.Join("testdata", extra))
	if err != nil {
		t.Fatal(err)
	}
	cc, w, res := compiled(t, more, control.DefaultMesh())
	got, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, goldenName, got)
	return cc, w
}

// TestCompileRoutingRules compiles the seed's mesh with Istio's routing
// rules (traffic.yaml): the golden file, the sidecar runs it, and what
// cannot take effect is reported by its field.
func TestCompileRoutingRules(t *testing.T) {
	cc, _ := compileWith(t, "traffic.yaml", "traffic.golden.yaml")
	problems := cc.Problems()
	for key, want := range map[string]string{
		"VirtualService default/backend spec.http[1].retries.retryRemoteLocalities":                  "not run by shunt",
		"VirtualService default/backend spec.http[5].route[2].destination.host":                      "no service nowhere.default.svc.cluster.local",
		"DestinationRule other/shared spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl": "not run by shunt",
	} {
		if problems[key] != want {
			t.Errorf("problem %q: %q, want %q (all: %v)", key, problems[key], want, problems)
		}
	}
	if len(problems) != 3 {
		t.Errorf("problems: %v", problems)
	}
}

// TestCompileHTTPRoutes compiles Gateway API's mesh routes (gamma.yaml,
// HTTPRoutes and a GRPCRoute):
// the golden file, the sidecar runs it, the filter it does not run
// reported.
func TestCompileHTTPRoutes(t *testing.T) {
	cc, w := compileWith(t, "gamma.yaml", "gamma.golden.yaml")
	if len(w.HTTPRoutes) != 4 || w.HTTPRoutes["GRPCRoute default/backend"] == nil {
		t.Errorf("routes: %v, want backend's, the consumer's and the gateway's HTTPRoutes and cart's GRPCRoute", w.HTTPRoutes)
	}
	// The gateway's is the gateway's alone: the sidecars' golden has none
	// of it.
	if r := w.HTTPRoutes["default/ingress"]; r == nil || len(r.Parents) != 0 || len(r.Gateways) != 1 {
		t.Errorf("the gateway's route: %+v", r)
	}
	if p := cc.Problems(); len(p) != 1 || p["HTTPRoute default/backend spec.rules[2].filters[4]: ExtensionRef"] != "not run by shunt" {
		t.Errorf("problems: %v", p)
	}
}

// TestCompileServiceEntries compiles Istio's ServiceEntries
// (serviceentry.yaml): the golden file, the sidecar runs it, what cannot
// take effect reported.
func TestCompileServiceEntries(t *testing.T) {
	cc, _ := compileWith(t, "serviceentry.yaml", "serviceentry.golden.yaml")
	for key, want := range map[string]string{
		"ServiceEntry default/legacy spec.workloadSelector":                                  "not run by shunt",
		"ServiceEntry default/legacy spec.hosts: *.example.org (wildcard hosts are not run)": "not run by shunt",
	} {
		if p := cc.Problems(); p[key] != want {
			t.Errorf("problem %q: %q, want %q (all: %v)", key, p[key], want, p)
		}
	}
	if p := cc.Problems(); len(p) != 2 {
		t.Errorf("problems: %v", p)
	}
	for _, bad := range []string{
		"kind: ServiceEntry\nspec: {hosts: [x.com], resolution: MAGIC}",
		"kind: ServiceEntry\nspec: {hosts: [x.com], ports: [{number: 80, protocol: QUIC}]}",
		"kind: ServiceEntry\nspec: {hosts: [x.com], resolution: STATIC, ports: [{number: 80}], endpoints: [{address: host.name}]}",
		"kind: ServiceEntry\nspec: {ports: [{number: 80}]}",
	} {
		if _, err := control.LoadWorld([]byte(bad), control.DefaultDomain); err == nil {
			t.Errorf("%q: loaded", bad)
		}
	}
}

// TestCompileSidecarScope compiles with Istio's Sidecar resources
// (sidecar.yaml): default's sidecar gets its namespace's services only;
// another namespace's, the root namespace's default; the one with a
// workload selector is reported.
func TestCompileSidecarScope(t *testing.T) {
	cc, w := compileWith(t, "sidecar.yaml", "sidecar.golden.yaml")
	if p := cc.Problems(); len(p) != 1 || !strings.HasPrefix(p["Sidecar default/ratings spec.workloadSelector: a Sidecar for some pods is not run; give the namespace's without one"], "not run") {
		t.Errorf("problems: %v", p)
	}
	other, err := control.ParseNode(&corev3.Node{Id: "sidecar~10.1.1.5~web-1.other~other.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	var clusters []string
	for _, c := range cc.Compile(w, other).Clusters {
		if strings.HasPrefix(c.GetName(), "outbound|") {
			clusters = append(clusters, c.GetName())
		}
	}
	if want := []string{"outbound|80||private.other.svc.cluster.local", "outbound|80||shared.other.svc.cluster.local"}; !slices.Equal(clusters, want) {
		t.Errorf("other's sidecar, scoped by the root namespace's Sidecar: %v, want %v", clusters, want)
	}
}

// TestVirtualServiceRefused: what Istio's validation refuses is an
// error naming the field, and nothing of the file is loaded.
func TestVirtualServiceRefused(t *testing.T) {
	const head = "kind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [backend-service]\n  http:\n"
	for _, c := range []struct{ rule, want string }{
		{"  - {redirect: {uri: /x}, route: [{destination: {host: b}}]}", "spec.http[0]: route, redirect, directResponse and delegate are exclusive"},
		{"  - {redirect: {uri: /x, redirectCode: 200}}", "spec.http[0].redirect.redirectCode: 200 is not 301, 302, 303, 307 or 308"},
		{"  - {redirect: {derivePort: SOMETIMES}}", `spec.http[0].redirect.derivePort: "SOMETIMES"`},
		{"  - {directResponse: {status: 99}}", "spec.http[0].directResponse.status: 99 is not a status"},
		{"  - {directResponse: {status: 200, body: {bytes: '!!'}}}", "spec.http[0].directResponse.body.bytes: not base64"},
		{"  - {fault: {abort: {grpcStatus: SAD}}, route: [{destination: {host: b}}]}", `spec.http[0].fault.abort.grpcStatus: "SAD" is not a gRPC status name`},
		{"  - {fault: {abort: {httpStatus: 700}}, route: [{destination: {host: b}}]}", "spec.http[0].fault.abort.httpStatus: 700"},
		{"  - {fault: {delay: {percentage: {value: 10}}}, route: [{destination: {host: b}}]}", "spec.http[0].fault.delay.fixedDelay: missing"},
		{"  - {fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}, route: [{destination: {host: b}}]}", "spec.http[0].fault.delay.percentage: 101 is not a percentage"},
		{"  - {mirror: {host: b}, mirrorPercentage: {value: -1}, route: [{destination: {host: b}}]}", "spec.http[0].mirrorPercentage: -1"},
		{"  - {match: [{uri: {regex: '(['}}], route: [{destination: {host: b}}]}", `spec.http[0].match[0].uri.regex: "([" is not an RE2 pattern`},
		{"  - {match: [{queryParams: {q: {regex: 'a{99999}'}}}], route: [{destination: {host: b}}]}", "spec.http[0].match[0].queryParams.q.regex"},
		{"  - {rewrite: {uriRegexRewrite: {match: '*', rewrite: /}}, route: [{destination: {host: b}}]}", "spec.http[0].rewrite.uriRegexRewrite.match"},
	} {
		_, err := control.LoadWorld([]byte(head+c.rule+"\n"), control.DefaultDomain)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.rule, err, c.want)
		}
	}
}

// TestVirtualServiceLeftOut: what the sidecar would refuse or shunt does
// not run is left out and reported by its path; the rest loads.
func TestVirtualServiceLeftOut(t *testing.T) {
	vs, err := control.VirtualServiceFrom([]byte(`kind: VirtualService
metadata: {name: partial}
spec:
  hosts: [backend-service]
  http:
  - match: [{sourceLabels: {app: web}}, {uri: {prefix: /}}]
    headers: {request: {set: {x-a: "50%", ":path": /x, x-ok: "yes"}}}
    route:
    - {destination: {host: b, subset: v1}, weight: 50, headers: {request: {set: {x-v: "1"}}}}
    - {destination: {host: b, subset: v2}, weight: 50}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"spec.http[0].match[0]: a match by the client's labels or namespace (left out)", "spec.http[0].route[0].headers (a destination's own, with several destinations)",
		"spec.http[0].headers.request.set.:path: a pseudo-header", "spec.http[0].headers.request.set.x-a: a value with %"}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(vs.Problems))
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%q\nwant\n%q", got, want)
	}
	if len(vs.HTTP) != 1 || len(vs.HTTP[0].Match) != 1 || vs.HTTP[0].Headers.Request.Set["x-ok"] != "yes" || len(vs.HTTP[0].Headers.Request.Set) != 1 {
		t.Errorf("the rule as loaded: %+v", vs.HTTP)
	}
}

// TestDNSAutoAllocate: with auto-allocation, a ServiceEntry host with
// no address (httpbin.org, resolved by DNS) gets one of 240.240.0.0/16:
// a chain takes it and the name table answers it; a host with an
// address keeps it; one of resolution NONE gets none (it goes where the
// app was going), and its TLS port is still reported.
func TestDNSAutoAllocate(t *testing.T) {
	more, _ := os.ReadFile("testdata/serviceentry.yaml")
	m := control.DefaultMesh()
	m.DNSAutoAllocate = true
	_, _, res := compiled(t, more, m)
	var httpbin string
	for _, fc := range res.Listeners[1].GetFilterChains() {
		if strings.HasPrefix(fc.GetName(), "240.240.") && strings.HasSuffix(fc.GetName(), "_80") {
			httpbin = strings.TrimSuffix(fc.GetName(), "_80")
		}
	}
	if httpbin == "" {
		t.Fatalf("no chain for httpbin.org's allocated address: %v", res.Listeners[1].GetFilterChains())
	}
	names := map[string]string{}
	for _, e := range res.NameTable() {
		names[e.Host] = fmt.Sprint(e.Addrs)
	}
	if names["httpbin.org"] != "["+httpbin+"]" || names["db.example.com"] != "[240.0.0.1]" || names["api.example.com"] != "" {
		t.Errorf("the name table: %v (httpbin.org's chain at %s)", names, httpbin)
	}
	// With no address, on a TLS port: its chain is chosen by SNI.
	var sni string
	for _, fc := range res.Listeners[1].GetFilterChains() {
		if m := fc.GetFilterChainMatch(); slices.Equal(m.GetServerNames(), []string{"api.example.com"}) && m.GetDestinationPort().GetValue() == 443 {
			sni = fc.GetName()
		}
	}
	if sni != "api.example.com_443" {
		t.Errorf("api.example.com (resolution NONE, TLS) has no chain by SNI: %q", sni)
	}
}

// TestDelegate: a root VirtualService's route delegates to another, in
// another namespace: the delegate's routes under the root's match,
// merged (a path outside the root's left out), its short hosts in its
// own namespace; a missing delegate is reported.
func TestDelegate(t *testing.T) {
	cc, _, res := compiled(t, []byte(`
---
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [backend-service]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-team: {exact: shop}}}]
    delegate: {name: api, namespace: other}
  - match: [{uri: {prefix: /gone}}]
    delegate: {name: nowhere}
  - route: [{destination: {host: backend-service}}]
---
kind: VirtualService
metadata: {name: api, namespace: other}
spec:
  http:
  - match: [{uri: {prefix: /api/v1}}, {uri: {prefix: /web}}]
    route: [{destination: {host: shared}}]
  - headers: {response: {set: {x-delegated: "yes"}}}
    route: [{destination: {host: backend-service.default.svc.cluster.local}}]
`), control.DefaultMesh())
	var got []string
	for _, rc := range res.Routes {
		if rc.GetName() != "backend-service.default.svc.cluster.local:10000" {
			continue
		}
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			m := r.GetMatch()
			got = append(got, fmt.Sprintf("%s %s %d %s", r.GetName(), m.GetPrefix(), len(m.GetHeaders()), r.GetRoute().GetCluster()))
		}
	}
	want := []string{
		"api.other.0 /api/v1 1 outbound|80||shared.other.svc.cluster.local",
		"api.other.1 /api 1 outbound|10000||backend-service.default.svc.cluster.local",
		"root.default.2 / 0 outbound|10000||backend-service.default.svc.cluster.local",
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := cc.Problems()["VirtualService default/root spec.http[1].delegate"]; p != "no VirtualService default/nowhere" {
		t.Errorf("a missing delegate: %q (all: %v)", p, cc.Problems())
	}
}

// TestDiscoverySelectors: with discovery selectors, a namespace they do
// not select is outside the mesh: its services get no clusters and its
// routing rules do not apply; selecting it by its labels brings it in.
func TestDiscoverySelectors(t *testing.T) {
	extra := []byte(`apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {mesh: "on"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: b}}
---
kind: VirtualService
metadata: {name: from-other, namespace: other}
spec:
  hosts: [backend-service.default.svc.cluster.local]
  http: [{directResponse: {status: 503}}]
`)
	for _, c := range []struct {
		selectors []string
		other     bool
	}{{nil, true}, {[]string{"mesh=on"}, false}, {[]string{"mesh=on", "team in (a,b)"}, true}} {
		m := control.DefaultMesh()
		for _, s := range c.selectors {
			sel, err := labels.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			m.DiscoverySelectors = append(m.DiscoverySelectors, sel)
		}
		_, _, res := compiled(t, extra, m)
		var shared, direct bool
		for _, cl := range res.Clusters {
			shared = shared || strings.HasSuffix(cl.GetName(), "|shared.other.svc.cluster.local")
		}
		for _, rc := range res.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					direct = direct || r.GetDirectResponse() != nil && strings.HasPrefix(vh.GetName(), "backend-service.")
				}
			}
		}
		if shared != c.other || direct != c.other {
			t.Errorf("selectors %q: other's service %t, its VirtualService %t; want both %t", c.selectors, shared, direct, c.other)
		}
	}
}

// TestCompileMeshSecurity compiles the seed's mesh under auto mTLS, for
// the app's sidecar, with sidecars on the backend's pods and
// PeerAuthentications (mtls.yaml), and with AuthorizationPolicies
// (authz.yaml: DENY then ALLOW RBAC filters on its inbound connection
// managers and TCP proxies; for TCP, the ALLOW rule that looks at HTTP
// left out): each against its golden file, and run by the sidecar.
func TestCompileMeshSecurity(t *testing.T) {
	for _, name := range []string{"mtls", "authz"} {
		t.Run(name, func(t *testing.T) {
			more, err := os.ReadFile("testdata/" + name + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			m := control.DefaultMesh()
			m.AutoMTLS = true
			_, _, res := compiled(t, more, m)
			got, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".golden.yaml", got)
		})
	}
}

// TestSameHostTwice: two ServiceEntries of one host, in two namespaces:
// a sidecar keeps one, its own namespace's (two clusters of one name
// would have its whole configuration refused).
func TestSameHostTwice(t *testing.T) {
	entry := func(ns, addr string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: ` + ns + `}
spec: {hosts: [api.partner.example], ports: [{number: 443, name: tls, protocol: TLS}], resolution: STATIC, endpoints: [{address: ` + addr + `}]}
`
	}
	_, _, res := compiled(t, []byte(entry("other", "192.0.2.2")+"---\n"+entry("default", "192.0.2.1")), control.DefaultMesh())
	runs(t, res)
	var eps []string
	for _, cla := range res.Endpoints {
		if cla.GetClusterName() == "outbound|443||api.partner.example" {
			for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
				eps = append(eps, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	if fmt.Sprint(eps) != "[192.0.2.1]" {
		t.Errorf("the host's endpoints: %v, want the sidecar's own namespace's entry's", eps)
	}
}
