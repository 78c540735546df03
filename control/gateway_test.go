package control_test

import (
	"os"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

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
	runs(t, res)
	got, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "gateway.golden.yaml", got)
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
// a MUTUAL one is reported, not run.
func TestCompileIstioGateway(t *testing.T) {
	gw, _ := os.ReadFile("testdata/istio-gateway.yaml")
	w := meshWith(t, string(gw))
	cc, res := compileRouter(t, w, istioIngressNode)
	runs(t, res)
	got, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "istio-gateway.golden.yaml", got)
	text := string(got)
	for _, want := range []string{"name: shop.example.com:8080", "name: edge.example.com:8080", "name: apps.example.com:8080",
		"prefix: /edge", "prefix: /backend", "ns[istio-system]-policy[edge-deny-admin]"} {
		if !strings.Contains(text, want) {
			t.Errorf("the gateway lacks %q", want)
		}
	}
	if strings.Contains(text, "/mesh-only") || strings.Contains(text, "0.0.0.0_9443") {
		t.Errorf("the gateway has the sidecars' match or the MUTUAL server")
	}
	var names []string
	for _, l := range res.Listeners {
		names = append(names, l.GetName())
	}
	if strings.Join(names, " ") != "0.0.0.0_8080 0.0.0.0_8081 0.0.0.0_8443" {
		t.Errorf("listeners %v, want the two HTTP servers' and the SIMPLE one's", names)
	}
	if !strings.Contains(text, "https_redirect: true") || !strings.Contains(text, "name: edge.example.com:8443") || strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("no https redirect or no HTTPS virtual host, or the key shows")
	}
	if p := cc.Problems(); len(p) != 1 || p["Gateway default/ingress spec.servers[3].tls.mode"] != "MUTUAL is not run by shunt yet (SIMPLE is)" {
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
