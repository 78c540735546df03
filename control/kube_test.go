package control_test

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/internal/kubecluster"
)

const kubeManifests = `apiVersion: v1
kind: Service
metadata: {name: backend-service, namespace: default}
spec:
  selector: {app: backend}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 10000, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-service-abc, namespace: default, labels: {kubernetes.io/service-name: backend-service}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.1.0.7], conditions: {ready: true}}
- {addresses: [10.1.0.8], conditions: {ready: true}}
- {addresses: [10.1.0.9], conditions: {ready: true}}
---
apiVersion: v1
kind: Pod
metadata: {name: app-1, namespace: default, labels: {app: app}}
spec:
  containers: [{name: nginx, image: nginx, ports: [{name: http-web, containerPort: 8080}]}]
`

// watching is a server following the cluster c, once it has listed it.
func watching(t *testing.T, c *kubecluster.Cluster) *control.Server {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.NewServer(control.DefaultMesh(), control.NewWorld(), 10*time.Millisecond, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := control.Watch(ctx, cfg, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWatchCluster follows a real API server: what is applied, changed
// and deleted shows in the world the sidecars are compiled from.
func TestWatchCluster(t *testing.T) {
	c := kubecluster.Start(t)
	if out, err := c.Kubectl(kubeManifests, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := c.Kubectl("", "patch", "pod", "app-1", "--subresource=status", "--type=merge",
		"-p", `{"status":{"podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"}]}}`); err != nil {
		t.Fatalf("kubectl patch: %v\n%s", err, out)
	}
	s := watching(t, c)
	w := s.World()
	svc := w.Services["default/backend-service"]
	if svc == nil || !slices.Equal(svc.Addresses, []netip.Addr{netip.MustParseAddr("10.96.0.10")}) || svc.Ports[0].Protocol != "http" {
		t.Fatalf("backend-service once listed: %+v", svc)
	}
	if eps := w.Endpoints["default/backend-service"]["default/backend-service-abc"]; len(eps) != 3 {
		t.Errorf("backend-service's endpoints: %+v", eps)
	}
	if p := w.Pods["default/app-1"]; p == nil || !slices.Equal(p.IPs, []netip.Addr{netip.MustParseAddr("10.1.0.5")}) || p.ContainerPorts["http-web"] != 8080 {
		t.Errorf("app-1: %+v", p)
	}

	if out, err := c.Kubectl("", "patch", "endpointslice", "backend-service-abc", "--type=json",
		"-p", `[{"op":"remove","path":"/endpoints/2"}]`); err != nil {
		t.Fatalf("kubectl patch: %v\n%s", err, out)
	}
	waitFor(t, "a scaled-down slice is followed", func() bool {
		return len(s.World().Endpoints["default/backend-service"]["default/backend-service-abc"]) == 2
	})
	if out, err := c.Kubectl("", "delete", "service", "backend-service"); err != nil {
		t.Fatalf("kubectl delete: %v\n%s", err, out)
	}
	waitFor(t, "a deleted service is gone", func() bool { return s.World().Services["default/backend-service"] == nil })
	if out, err := c.Kubectl("", "label", "namespace", "default", "istio-discovery=enabled"); err != nil {
		t.Fatalf("kubectl label: %v\n%s", err, out)
	}
	waitFor(t, "a namespace's labels are followed", func() bool {
		return s.World().Namespaces["default"]["istio-discovery"] == "enabled"
	})
	// TLS Secrets (a gateway's certificates), and only those.
	if out, err := c.Kubectl("apiVersion: v1\nkind: Secret\nmetadata: {name: shop-cert, namespace: default}\ntype: kubernetes.io/tls\n"+
		"stringData: {tls.crt: CERT, tls.key: KEY}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: password, namespace: default}\n"+
		"stringData: {password: hunter2}\n", "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	waitFor(t, "a TLS Secret is followed", func() bool {
		sec := s.World().Secrets["default/shop-cert"]
		return sec != nil && string(sec.Cert) == "CERT" && string(sec.Key) == "KEY"
	})
	if len(s.World().Secrets) != 1 {
		t.Errorf("Secrets followed: %v, want the TLS one alone", s.World().Secrets)
	}
}

// TestWatchRoutingRules follows Istio's rules through their CRDs
// (deploy/istio-crds.yaml), and Gateway API's HTTPRoutes: applied,
// changed, one that does not read leaving its last good version,
// deleted.
func TestWatchRoutingRules(t *testing.T) {
	c := kubecluster.Start(t)
	crds, err := os.ReadFile("../deploy/istio-crds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(string(crds)+"\n---\n"+kubecluster.GatewayRouteCRDs, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := c.Kubectl("", "wait", "--for", "condition=Established", "--timeout", "30s",
		"crd/virtualservices.networking.istio.io", "crd/destinationrules.networking.istio.io", "crd/serviceentries.networking.istio.io",
		"crd/httproutes.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	vs := func(timeout string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: backend, namespace: default}\n" +
			"spec: {hosts: [backend-service], http: [{route: [{destination: {host: backend-service}}], timeout: " + timeout + "}]}"
	}
	if out, err := c.Kubectl(vs("2s")+"\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: backend, namespace: default}\n"+
		"spec: {host: backend-service, subsets: [{name: v1, labels: {version: v1}}]}\n---\n"+
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: backend, namespace: default}\n"+
		"spec: {parentRefs: [{group: '', kind: Service, name: backend-service}], rules: [{backendRefs: [{name: backend-service, port: 10000}]}]}\n---\n"+
		"apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: backend, namespace: default}\n"+
		"spec: {parentRefs: [{group: '', kind: Service, name: backend-service}], rules: [{matches: [{method: {service: shop.Cart}}], backendRefs: [{name: backend-service, port: 10000}]}]}\n---\n"+
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: httpbin, namespace: default}\n"+
		"spec: {hosts: [httpbin.org], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}",
		"apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := watching(t, c)
	timeout := func() time.Duration {
		if v := s.World().VirtualServices["default/backend"]; v != nil && len(v.HTTP) == 1 && v.HTTP[0].Timeout != nil {
			return *v.HTTP[0].Timeout
		}
		return 0
	}
	if timeout() != 2*time.Second || s.World().DestinationRules["default/backend"] == nil || s.World().HTTPRoutes["default/backend"] == nil ||
		s.World().HTTPRoutes["GRPCRoute default/backend"] == nil ||
		s.World().Services["default/httpbin.org"] == nil {
		t.Fatalf("once listed: %+v %+v %+v", s.World().VirtualServices, s.World().DestinationRules, s.World().HTTPRoutes)
	}
	c.Kubectl(vs("3s"), "apply", "-f", "-")
	waitFor(t, "a changed rule is followed", func() bool { return timeout() == 3*time.Second })
	c.Kubectl(vs("soon"), "apply", "-f", "-")
	time.Sleep(300 * time.Millisecond)
	if timeout() != 3*time.Second {
		t.Errorf("a rule that does not read replaced the last good one: %v", timeout())
	}
	c.Kubectl("", "delete", "virtualservice", "backend")
	waitFor(t, "a deleted rule is gone", func() bool { return s.World().VirtualServices["default/backend"] == nil })
	c.Kubectl("", "delete", "grpcroute", "backend")
	waitFor(t, "a deleted GRPCRoute is gone (its HTTPRoute of the same name stays)", func() bool {
		return s.World().HTTPRoutes["GRPCRoute default/backend"] == nil && s.World().HTTPRoutes["default/backend"] != nil
	})
}
