package control_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/control"
)

// conds is a status's conditions as TYPE=STATUS/REASON, in order.
func conds(cs []control.Condition) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Type+"="+c.Status+"/"+c.Reason)
	}
	return strings.Join(out, " ")
}

// TestGatewayStatuses: the statuses shunt gives gateway.yaml's Gateway
// and routes, as Gateway API's conformance reads them: listeners
// accepted or not by protocol, their certificates resolved or not, the
// routes attached counted; a route accepted or not by its listeners, its
// backends resolved or not permitted.
func TestGatewayStatuses(t *testing.T) {
	gw, _ := os.ReadFile("testdata/gateway.yaml")
	w := meshWith(t, string(gw))
	st, ok := w.GatewayStatuses()["default/public"]
	if !ok || len(w.GatewayStatuses()) != 1 {
		t.Fatalf("statuses %v, want default/public's alone", w.GatewayStatuses())
	}
	if got := conds(st.Conditions); got != "Accepted=True/Accepted Programmed=True/Programmed" {
		t.Errorf("the Gateway: %s", got)
	}
	var listeners []string
	for _, l := range st.Listeners {
		listeners = append(listeners, fmt.Sprintf("%s %v %d: %s", l.Name, l.SupportedKinds, l.AttachedRoutes, conds(l.Conditions)))
	}
	want := []string{
		"http [HTTPRoute GRPCRoute] 1: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed",
		"https [HTTPRoute GRPCRoute] 2: Accepted=True/Accepted ResolvedRefs=False/InvalidCertificateRef Programmed=True/Programmed",
		"tls [TLSRoute] 1: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed",
		"tcp [TCPRoute] 2: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed",
		"udp [] 0: Accepted=False/UnsupportedProtocol ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid",
	}
	if strings.Join(listeners, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners:\n%s\nwant:\n%s", strings.Join(listeners, "\n"), strings.Join(want, "\n"))
	}
	// No Service selects its pod: the pod's address.
	if fmt.Sprint(st.Addresses) != "[{IPAddress 10.1.0.50}]" {
		t.Errorf("addresses %v, want the pod's", st.Addresses)
	}
	routes := w.RouteStatuses()
	for key, want := range map[string]string{
		"HTTPRoute default/shop":    "Accepted=True/Accepted ResolvedRefs=False/RefNotPermitted",
		"HTTPRoute other/elsewhere": "Accepted=False/NotAllowedByListeners ResolvedRefs=False/BackendNotFound",
		"HTTPRoute default/secure":  "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
		"GRPCRoute default/cart":    "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
		"TLSRoute default/db":       "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
	} {
		if ps := routes[key]; len(ps) != 1 || conds(ps[0].Conditions) != want {
			t.Errorf("%s: %v, want %s", key, ps, want)
		}
	}
}

// TestAllowedRoutesSelector: a listener whose allowedRoutes.namespaces
// is from: Selector takes the routes of the namespaces its selector picks
// by their labels, and no other; a Selector without a selector is bad
// input.
func TestAllowedRoutesSelector(t *testing.T) {
	w, err := control.LoadWorld([]byte(`
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {shared-gateway-access: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: shunt}
spec: {controllerName: shunt.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: infra}
spec:
  gatewayClassName: shunt
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: shared-gateway-access, operator: In, values: ["true"]}]}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: team-a}
spec: {parentRefs: [{name: shared, namespace: infra}], rules: [{backendRefs: [{name: web, port: 80}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: team-b}
spec: {parentRefs: [{name: shared, namespace: infra}], rules: [{backendRefs: [{name: web, port: 80}]}]}
`), control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.GatewayStatuses()["infra/shared"]; len(st.Listeners) != 1 || st.Listeners[0].AttachedRoutes != 1 {
		t.Errorf("listeners %+v, want team-a's route alone attached", st.Listeners)
	}
	routes := w.RouteStatuses()
	if a, b := routes["HTTPRoute team-a/a"], routes["HTTPRoute team-b/b"]; len(a) != 1 || a[0].Conditions[0].Status != "True" ||
		len(b) != 1 || b[0].Conditions[0].Reason != "NotAllowedByListeners" {
		t.Errorf("team-a's %v, team-b's %v", a, b)
	}
	_, err = control.GatewayFrom([]byte(`{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "g", "namespace": "x"},
		"spec": {"gatewayClassName": "shunt", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Selector"}}}]}}`))
	if err == nil || !strings.Contains(err.Error(), "allowedRoutes.namespaces.selector: from: Selector needs one") {
		t.Errorf("a Selector without a selector: %v", err)
	}
}

// TestGatewayAddresses: a Gateway's status.addresses are its Service's
// load balancer's (an IP, a host name), else its cluster IP.
func TestGatewayAddresses(t *testing.T) {
	gw, _ := os.ReadFile("testdata/gateway.yaml")
	service := `
---
apiVersion: v1
kind: Service
metadata: {name: public-shunt, namespace: default}
spec: {type: LoadBalancer, selector: {gateway.networking.k8s.io/gateway-name: public}, clusterIP: 10.96.0.99, ports: [{name: http, port: 80, targetPort: 8080}]}
`
	for _, c := range []struct{ status, want string }{
		{"", "[{IPAddress 10.96.0.99}]"},
		{"status: {loadBalancer: {ingress: [{ip: 203.0.113.7}, {hostname: gw.example.net}]}}", "[{IPAddress 203.0.113.7} {Hostname gw.example.net}]"},
	} {
		w := meshWith(t, string(gw)+service+c.status+"\n")
		if got := fmt.Sprint(w.GatewayStatuses()["default/public"].Addresses); got != c.want {
			t.Errorf("%q: addresses %s, want %s", c.status, got, c.want)
		}
	}
}

// TestTLSTerminateListener: a TLS listener in Terminate mode is accepted
// for TLSRoutes, its certificate resolved; its chain ends TLS with the
// certificate and proxies what it carries to the route's backend.
func TestTLSTerminateListener(t *testing.T) {
	gw, _ := os.ReadFile("testdata/gateway.yaml")
	w := meshWith(t, string(gw)+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: term, namespace: default}
spec:
  gatewayClassName: shunt
  listeners:
  - {name: tls, port: 9446, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: shop-cert}]}}
  - {name: odd, port: 9447, protocol: TLS, tls: {mode: Inspect}}
---
apiVersion: v1
kind: Pod
metadata: {name: term-gw-1, namespace: default, labels: {gateway.networking.k8s.io/gateway-name: term}}
status: {podIP: 10.1.0.52}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: checkout-tls, namespace: default}
spec:
  parentRefs: [{name: term, sectionName: tls}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: checkout, port: 8000}]}]
`)
	var listeners []string
	for _, l := range w.GatewayStatuses()["default/term"].Listeners {
		listeners = append(listeners, fmt.Sprintf("%s %v %d: %s", l.Name, l.SupportedKinds, l.AttachedRoutes, conds(l.Conditions)))
	}
	want := "tls [TLSRoute] 1: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed\n" +
		"odd [] 0: Accepted=False/UnsupportedProtocol ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid"
	if got := strings.Join(listeners, "\n"); got != want {
		t.Errorf("listeners:\n%s\nwant:\n%s", got, want)
	}
	_, res := compileRouter(t, w, "router~10.1.0.52~term-gw-1.default~default.svc.cluster.local")
	runs(t, res)
	if len(res.Listeners) != 1 {
		t.Fatalf("listeners: %v", res.Listeners)
	}
	fc := res.Listeners[0].GetFilterChains()
	if len(fc) != 1 || fc[0].GetTransportSocket() == nil || fmt.Sprint(fc[0].GetFilterChainMatch().GetServerNames()) != "[shop.example.com]" ||
		!strings.Contains(string(jsonOf(fc[0])), `"cluster":"outbound|8000||checkout.default.svc.cluster.local"`) {
		t.Errorf("the Terminate listener's chains: %s", jsonOf(res.Listeners[0]))
	}
}
