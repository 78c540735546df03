package control_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/control"
)

const (
	gatewayNode      = "router~10.1.0.50~public-gw-1.default~default.svc.cluster.local"
	istioIngressNode = "router~10.1.0.51~ingress-1.istio-system~istio-system.svc.cluster.local"
)

// meshWith is the seed's mesh (mesh.yaml) with more manifests.
func meshWith(t *testing.T, more string) *control.World {
	t.Helper()
	mesh, _ := os.ReadFile("testdata/mesh.yaml")
	w, err := control.LoadWorld([]byte(string(mesh)+"\n---\n"+more), control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// compileRouter surveys w and compiles what the gateway proxy id is sent.
func compileRouter(t *testing.T, w *control.World, id string) (*control.Compiler, *control.Resources) {
	t.Helper()
	cc, err := control.NewCompiler(control.DefaultMesh())
	if err != nil {
		t.Fatal(err)
	}
	n, err := control.ParseNode(&corev3.Node{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	cc.Survey(w)
	return cc, cc.Compile(w, n)
}

// TestCompileGateway compiles a gateway's proxy's resources (gateway.yaml
// over the seed's mesh): the golden file, and the proxy runs it; the
// HTTPS listener serves its certificate's names from a Secret (a Secret
// not there is reported), the TLS one passes connections by SNI to the
// TLSRoute's backends by weight, the TCP one is reported; a route the
// listener does not admit (another namespace's, under allowedRoutes
// Same) and one for another listener are left out; a backend in another
// namespace is refused (500, reported) unless a ReferenceGrant there
// grants it.
func TestCompileGateway(t *testing.T) {
	gw, _ := os.ReadFile("testdata/gateway.yaml")
	w := meshWith(t, string(gw))
	cc, res := compileRouter(t, w, gatewayNode)
	got := runsAsGolden(t, res, "gateway.golden.yaml")
	var names []string
	for _, l := range res.Listeners {
		names = append(names, l.GetName())
	}
	if strings.Join(names, " ") != "0.0.0.0_8080 0.0.0.0_8443 0.0.0.0_9000 0.0.0.0_9443" {
		t.Errorf("listeners %v, want the HTTP, HTTPS, TCP and TLS listeners'", names)
	}
	if text := string(got); !strings.Contains(text, "stat_prefix: outbound|10000||backend-service.default.svc.cluster.local\n    name: 0.0.0.0_9000-default/backend-tcp") {
		t.Errorf("the TCP listener does not send to the TCPRoute's backend:\n%s", text)
	}
	if text := string(got); !strings.Contains(text, "prefix: /shop.Cart/") {
		t.Errorf("the GRPCRoute is not on the HTTPS listener:\n%s", text)
	}
	if text := string(got); !strings.Contains(text, "- db.example.com") || !strings.Contains(text, "name: outbound|8000||checkout.default.svc.cluster.local\n            weight: 90") {
		t.Errorf("the TLS listener does not pass db.example.com by weight:\n%s", text)
	}
	if text := string(got); !strings.Contains(text, "- www.example.com") || strings.Contains(text, "PRIVATE KEY") || !strings.Contains(text, "[redacted]") {
		t.Errorf("the HTTPS listener does not serve the certificate's names, or its key shows:\n%s", text)
	}
	if text := string(got); strings.Contains(text, "other.example.com") || !strings.Contains(text, "shop.example.com:8080") {
		t.Errorf("the virtual hosts are not shop.example.com's alone:\n%s", text)
	}
	if p := cc.Problems(); p["Gateway default/public spec.listeners[4].protocol"] != "UDP is not run by shunt yet (HTTP, HTTPS, TLS and TCP are)" ||
		!strings.HasPrefix(p["TCPRoute default/second-tcp spec.parentRefs"], "listener tcp of Gateway default/public takes another TCPRoute already") ||
		p["Gateway default/public spec.listeners[https].tls.certificateRefs[1]"] != "no TLS Secret default/missing-cert" ||
		p["HTTPRoute default/shop spec.rules.backendRefs"] != "the backend web.other.svc.cluster.local is in another namespace, and no ReferenceGrant there lets the route refer to it: refused" {
		t.Errorf("problems: %v", p)
	}
	if text := string(got); !strings.Contains(text, "path_separated_prefix: /foreign") || !strings.Contains(text, "status: 500") {
		t.Errorf("the route to another namespace's backend does not answer 500:\n%s", text)
	}
	if text := string(got); !strings.Contains(text, "cluster: outbound|80||shared.other.svc.cluster.local") {
		t.Errorf("the backend a ReferenceGrant grants is not routed to:\n%s", text)
	}
	// A gateway whose pod names no Gateway of shunt's is sent nothing.
	other, _ := control.ParseNode(&corev3.Node{Id: "router~10.1.0.99~lost-1.default~default.svc.cluster.local"})
	if res := cc.Compile(w, other); len(res.Listeners)+len(res.Clusters) != 0 {
		t.Errorf("a gateway of no Gateway got %d listeners, %d clusters", len(res.Listeners), len(res.Clusters))
	}
}

// TestCompileIstioGateway compiles the proxy of Istio's ingress gateway
// (istio-gateway.yaml over the seed's mesh): the golden file, and the
// proxy runs it: the servers the Gateway whose selector picks the pod
// opens, the VirtualServices bound to it on the hosts it admits, each
// match where its gateways say; the sidecars keep theirs and do not get
// the gateway's; an HTTP server with httpsRedirect sends its hosts to
// https, an HTTPS one serves the certificate its credentialName names,
// a MUTUAL one checks clients against its Secret's ca.crt, one whose
// Secret has none is reported.
func TestCompileIstioGateway(t *testing.T) {
	gw, _ := os.ReadFile("testdata/istio-gateway.yaml")
	w := meshWith(t, string(gw))
	cc, res := compileRouter(t, w, istioIngressNode)
	got := runsAsGolden(t, res, "istio-gateway.golden.yaml")
	text := string(got)
	for _, want := range []string{"name: shop.example.com:8080", "name: edge.example.com:8080", "name: apps.example.com:8080",
		"prefix: /edge", "prefix: /backend", "ns[istio-system]-policy[edge-deny-admin]"} {
		if !strings.Contains(text, want) {
			t.Errorf("the gateway lacks %q", want)
		}
	}
	if strings.Contains(text, "/mesh-only") || strings.Contains(text, "0.0.0.0_9444") {
		t.Errorf("the gateway has the sidecars' match or the MUTUAL server with no CA")
	}
	var names []string
	for _, l := range res.Listeners {
		names = append(names, l.GetName())
	}
	if strings.Join(names, " ") != "0.0.0.0_8080 0.0.0.0_8081 0.0.0.0_8443 0.0.0.0_9443" {
		t.Errorf("listeners %v, want the two HTTP servers', the SIMPLE one's and the MUTUAL one's", names)
	}
	if !strings.Contains(text, "require_client_certificate: true") || !strings.Contains(text, "trusted_ca:") {
		t.Errorf("the MUTUAL server does not require and check a client certificate")
	}
	if !strings.Contains(text, "https_redirect: true") || !strings.Contains(text, "name: edge.example.com:8443") || strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("no https redirect or no HTTPS virtual host, or the key shows")
	}
	if p := cc.Problems(); len(p) != 1 || !strings.Contains(p["Gateway default/ingress spec.servers[4].tls"], "Secret istio-system/shop-cert has no ca.crt") {
		t.Errorf("problems: %v", p)
	}
	app, err := cc.Compile(w, appSidecar(t)).YAML()
	if err != nil {
		t.Fatal(err)
	}
	if s := string(app); !strings.Contains(s, "prefix: /mesh-only") || strings.Contains(s, "/edge") || strings.Contains(s, "/backend") {
		t.Errorf("the sidecar's routes are not the mesh's alone")
	}
}

// TestIstioGatewayCertificateFiles: an HTTPS server's serverCertificate
// and privateKey are the gateway's files, which its proxy reads, served
// for the server's hosts (namespace/ left off; the key redacted in
// dumps); an HTTP server given a
// certificate is refused, reported.
func TestIstioGatewayCertificateFiles(t *testing.T) {
	cc, res := compileRouter(t, meshWith(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: files, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [default/shop.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/istio/ingressgateway-certs/tls.crt, privateKey: /etc/istio/ingressgateway-certs/tls.key}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {credentialName: shop-cert}
---
apiVersion: v1
kind: Pod
metadata: {name: ingress-1, namespace: istio-system, labels: {istio: ingressgateway}}
status: {podIP: 10.1.0.51}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/files]
  http: [{route: [{destination: {host: app, port: {number: 80}}}]}]
`), istioIngressNode)
	got, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	text := string(got)
	for _, want := range []string{"filename: /etc/istio/ingressgateway-certs/tls.crt",
		"- shop.example.com\n", "name: shop.example.com:443"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, "0.0.0.0_80\n") {
		t.Errorf("the HTTP server with a certificate is run")
	}
	if p := cc.Problems(); p["Gateway istio-system/files spec.servers[1].tls"] != "an HTTP server takes httpsRedirect alone" {
		t.Errorf("problems: %v", p)
	}
}

// TestIstioEgressTLSOrigination compiles Istio's egress gateway with TLS
// origination (egress.yaml): the sidecar's subset cluster to the gateway
// is the mesh's mutual TLS with the SNI the rule names and the gateway's
// identity; the gateway's server takes mutual TLS (its certificate, the
// client's required) for the host, and its cluster to the host's 443
// originates TLS checked against the rule's CA and the host's name.
func TestIstioEgressTLSOrigination(t *testing.T) {
	egress, _ := os.ReadFile("testdata/egress.yaml")
	w := meshWith(t, string(egress))
	cc, err := control.NewCompiler(control.DefaultMesh())
	if err != nil {
		t.Fatal(err)
	}
	cc.Survey(w)
	sidecar := cc.Compile(w, appSidecar(t))
	runsAsGolden(t, sidecar, "egress-sidecar.golden.yaml")
	_, gateway := compileRouter(t, w, "router~10.1.0.60~istio-egressgateway-1.istio-system~istio-system.svc.cluster.local")
	runsAsGolden(t, gateway, "egress-gateway.golden.yaml")
	cluster := func(res *control.Resources, name string) string {
		for _, cl := range res.Clusters {
			if cl.GetName() == name {
				b := jsonOf(cl)
				return string(b)
			}
		}
		t.Fatalf("no cluster %s", name)
		return ""
	}
	toGateway := cluster(sidecar, "outbound|80|partner|istio-egressgateway.istio-system.svc.cluster.local")
	for _, want := range []string{`"sni":"api.partner.example"`, `"exact":"spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway"`, `"name":"ROOTCA"`} {
		if !strings.Contains(toGateway, want) {
			t.Errorf("the sidecar's cluster to the gateway lacks %s: %s", want, toGateway)
		}
	}
	if strings.Contains(toGateway, "LEAST_REQUEST") {
		t.Errorf("the subset's ROUND_ROBIN is not on its cluster: %s", toGateway)
	}
	if plain := cluster(sidecar, "outbound|443||istio-egressgateway.istio-system.svc.cluster.local"); strings.Contains(plain, "transportSocket\"") {
		t.Errorf("the gateway's port 443, which no rule makes mutual TLS, has a transport socket: %s", plain)
	}
	toHost := cluster(gateway, "outbound|443||api.partner.example")
	for _, want := range []string{`"sni":"api.partner.example"`, `"filename":"testdata/partner-ca.pem"`, `"sanType":"DNS"`, `"exact":"api.partner.example"`, `"type":"STRICT_DNS"`} {
		if !strings.Contains(toHost, want) {
			t.Errorf("the gateway's cluster to the host lacks %s: %s", want, toHost)
		}
	}
	l := jsonOf(gateway.Listeners[0])
	for _, want := range []string{`"serverNames":["api.partner.example"]`, `"requireClientCertificate":true`, `"name":"default"`} {
		if !strings.Contains(string(l), want) {
			t.Errorf("the gateway's listener lacks %s: %s", want, l)
		}
	}
	if p := cc.Problems(); len(p) != 0 {
		t.Errorf("problems: %v", p)
	}
}

// TestIstioGatewayPassthrough: an Istio Gateway's TLS server in mode
// PASSTHROUGH takes the VirtualServices' tls routes bound to it — a
// filter chain per route for the sniHosts the server admits, sent on
// unopened by weight — and its TCP server the first tcp route bound to
// it; a second tcp route on the port and a missing destination are
// reported, an SNI the server does not admit is not its.
func TestIstioGatewayPassthrough(t *testing.T) {
	cc, res := compileRouter(t, meshWith(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [nginx.example.com, "*.tls.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 27017, name: mongo, protocol: TCP}
    hosts: ["*"]
---
apiVersion: v1
kind: Pod
metadata: {name: ingress-1, namespace: istio-system, labels: {istio: ingressgateway}}
status: {podIP: 10.1.0.51}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-nginx, namespace: default}
spec:
  hosts: [nginx.example.com]
  gateways: [istio-system/edge, mesh]
  tls:
  - match: [{port: 9443, sniHosts: [nginx.example.com], gateways: [istio-system/edge]}]
    route: [{destination: {host: backend-service, port: {number: 10000}}}]
  - match: [{port: 443, sniHosts: [nginx.example.com], gateways: [mesh]}]
    route: [{destination: {host: backend-service, port: {number: 10000}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-wild, namespace: default}
spec:
  hosts: ["*.tls.example.com", other.example.org]
  gateways: [istio-system/edge]
  tls:
  - match: [{sniHosts: [a.tls.example.com, other.example.org]}]
    route:
    - {destination: {host: backend-service, port: {number: 10000}}, weight: 80}
    - {destination: {host: app, port: {number: 80}}, weight: 20}
    - {destination: {host: nowhere, port: {number: 80}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c-db, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp: [{match: [{port: 27017}], route: [{destination: {host: db}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d-cache, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp: [{route: [{destination: {host: cache}}]}]
`), istioIngressNode)
	runs(t, res)
	var names []string
	for _, l := range res.Listeners {
		names = append(names, l.GetName())
	}
	if strings.Join(names, " ") != "0.0.0.0_27017 0.0.0.0_9443" {
		t.Fatalf("listeners %v, want the TCP and the TLS servers'", names)
	}
	tcp := jsonOf(res.Listeners[0])
	tls := jsonOf(res.Listeners[1])
	for _, c := range []struct {
		listener []byte
		want     string
	}{
		{tls, `"name":"envoy.filters.listener.tls_inspector"`},
		{tls, `"serverNames":["nginx.example.com"]`},
		{tls, `"serverNames":["a.tls.example.com"]`},
		{tls, `"cluster":"outbound|10000||backend-service.default.svc.cluster.local"`},
		{tls, `{"name":"outbound|10000||backend-service.default.svc.cluster.local","weight":80},{"name":"outbound|80||app.default.svc.cluster.local","weight":20}`},
		{tcp, `"cluster":"outbound|5432||db.default.svc.cluster.local"`},
	} {
		if !strings.Contains(string(c.listener), c.want) {
			t.Errorf("no %s in %s", c.want, c.listener)
		}
	}
	if strings.Contains(string(tls), "other.example.org") || strings.Contains(string(tcp), "cache") || len(res.Listeners[0].GetFilterChains()) != 1 {
		t.Errorf("an SNI the server does not admit, or a second tcp route, is run:\n%s\n%s", tls, tcp)
	}
	var clusters []string
	for _, cl := range res.Clusters {
		clusters = append(clusters, cl.GetName())
	}
	for _, want := range []string{"outbound|10000||backend-service.default.svc.cluster.local", "outbound|80||app.default.svc.cluster.local", "outbound|5432||db.default.svc.cluster.local"} {
		if !slices.Contains(clusters, want) {
			t.Errorf("no cluster %s in %v", want, clusters)
		}
	}
	wantProblems(t, cc, map[string]string{
		"VirtualService default/b-wild spec.tls[0].route[2].destination.host": "no service nowhere.default.svc.cluster.local",
		"VirtualService default/d-cache spec.tcp[0]":                          "port 27017 takes another tcp route already",
	})
}

// wantProblems checks the compiler reports these problems (by key, a
// part of why) and no others.
func wantProblems(t *testing.T, cc *control.Compiler, want map[string]string) {
	t.Helper()
	p := cc.Problems()
	for key, why := range want {
		if !strings.Contains(p[key], why) {
			t.Errorf("problem %s: %q, want %q", key, p[key], why)
		}
	}
	if len(p) != len(want) {
		t.Errorf("problems: %v", p)
	}
}

// TestMeshL4Routes: the sidecars take VirtualServices' tcp routes (a
// service's address chain proxies to the route's destinations by
// weight) and tls routes (a chain by SNI on the match's port, to the
// route's destination), and reach a TLS ServiceEntry host without an
// address by its SNI; what no SNI takes on that port goes to the
// catch-all's cluster.
func TestMeshL4Routes(t *testing.T) {
	_, _, res := compiled(t, []byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-split, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, port: {number: 5432}}, weight: 80}
    - {destination: {host: cache, port: {number: 7000}}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: default}
spec:
  hosts: [partner.example, other.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner-elsewhere, namespace: default}
spec:
  hosts: [partner.example]
  tls:
  - match: [{port: 443, sniHosts: [partner.example]}]
    route: [{destination: {host: backend-service, port: {number: 10000}}}]
`), control.DefaultMesh())
	runs(t, res)
	chains := map[string]string{} // name → its match and its tcp proxy's target, read back
	for _, fc := range res.Listeners[1].GetFilterChains() {
		tp := &tcpproxyv3.TcpProxy{}
		if fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(tp) != nil {
			continue
		}
		m := fc.GetFilterChainMatch()
		target := tp.GetCluster()
		for _, wc := range tp.GetWeightedClusters().GetClusters() {
			target += fmt.Sprintf("%s=%d ", wc.GetName(), wc.GetWeight())
		}
		chains[fc.GetName()] = fmt.Sprintf("%d %v %s -> %s", m.GetDestinationPort().GetValue(), m.GetServerNames(), m.GetTransportProtocol(), strings.TrimSpace(target))
	}
	for name, want := range map[string]string{
		"10.96.0.20_5432": "5432 []  -> outbound|5432||db.default.svc.cluster.local=80 outbound|7000||cache.default.svc.cluster.local=20",
		"partner.example-default/partner-elsewhere-tls[0]": "443 [partner.example] tls -> outbound|10000||backend-service.default.svc.cluster.local",
		"other.example_443":           "443 [other.example] tls -> outbound|443||other.example",
		"0.0.0.0_443-passthrough-tcp": "443 []  -> PassthroughCluster",
	} {
		if chains[name] != want {
			t.Errorf("chain %s: %q, want %q", name, chains[name], want)
		}
	}
	if _, ok := chains["partner.example_443"]; ok {
		t.Errorf("partner.example has its own chain beside its VirtualService's")
	}
}

// jsonOf is m as compact JSON, the same whatever the build
// (protojson's own output varies its spacing on purpose).
func jsonOf(m proto.Message) []byte {
	b, _ := protojson.Marshal(m)
	var out bytes.Buffer
	json.Compact(&out, b)
	return out.Bytes()
}

// runsAsGolden checks the proxy runs res and that res is the golden file
// name; res as YAML.
func runsAsGolden(t *testing.T, res *control.Resources, name string) []byte {
	t.Helper()
	runs(t, res)
	got, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, name, got)
	return got
}
