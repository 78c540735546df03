package deploy_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/xds"
)

// checkGateway applies deploy/gateway.yaml in a namespace, makes the pod
// its Deployment would (its template's labels, an address), and asks
// shunt-control at xdsAddr for that pod's configuration as its gateway
// proxy would: the Gateway's HTTP listener comes.
func checkGateway(t *testing.T, c *kubecluster.Cluster, xdsAddr string) {
	manifest, _ := os.ReadFile("gateway.yaml")
	if out, err := c.Kubectl("", "create", "namespace", "edge"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := c.Kubectl(string(manifest), "apply", "-n", "edge", "-f", "-"); err != nil {
		t.Fatalf("deploy/gateway.yaml is refused: %v\n%s", err, out)
	}
	out, err := c.Kubectl("", "get", "deployment", "public-gateway", "-n", "edge", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Metadata struct{ Labels map[string]string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	labels, _ := json.Marshal(d.Spec.Template.Metadata.Labels)
	pod := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "public-gateway-7d9f-abcde", "namespace": "edge", "labels": ` + string(labels) + `},
		"spec": {"serviceAccountName": "public-gateway", "containers": [{"name": "gateway", "image": "shunt:latest"}]}}`
	if out, err := c.Kubectl(pod, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := c.Kubectl("", "patch", "pod", "public-gateway-7d9f-abcde", "-n", "edge", "--subresource=status", "--type=merge",
		"-p", `{"status":{"podIP":"10.9.0.5","podIPs":[{"ip":"10.9.0.5"}]}}`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	var mu sync.Mutex
	var listeners []string
	apply := func(b *bootstrapv3.Bootstrap) error {
		mu.Lock()
		defer mu.Unlock()
		listeners = nil
		for _, l := range b.GetStaticResources().GetListeners() {
			listeners = append(listeners, l.GetName())
		}
		return nil
	}
	cl := &xds.Client{Address: xdsAddr, Node: &corev3.Node{Id: "router~10.9.0.5~public-gateway-7d9f-abcde.edge~edge.svc.cluster.local"},
		Base: &bootstrapv3.Bootstrap{}, Apply: apply, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		mu.Lock()
		got := slices.Clone(listeners)
		mu.Unlock()
		if slices.Equal(got, []string{"0.0.0.0_8080"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway's pod got listeners %v, want its Gateway's 0.0.0.0_8080", got)
		}
	}

	// The statuses, written by shunt-control under its role: the class
	// and the Gateway accepted and programmed, a route attached to its
	// listener, and another whose listener does not allow it refused.
	if out, err := c.Kubectl(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: edge}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: edge}
spec:
  parentRefs: [{name: public}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-port, namespace: edge}
spec:
  parentRefs: [{name: public, port: 9999}]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkStatuses(t, c, []statusQuery{
		{"gatewayclass/shunt", `{.status.conditions[?(@.type=="Accepted")].status}`, "True"},
		{"gateway/public", `{.status.conditions[?(@.type=="Accepted")].observedGeneration}`, "1"},
		{"gateway/public", `{.status.conditions[?(@.type=="Programmed")].status}`, "True"},
		{"gateway/public", `{.status.listeners[0].attachedRoutes} {.status.listeners[0].supportedKinds[*].kind}`, "1 HTTPRoute GRPCRoute"},
		{"httproute/web", `{.status.parents[0].controllerName} {.status.parents[0].conditions[?(@.type=="Accepted")].status}`, "shunt.dev/gateway True"},
		{"httproute/wrong-port", `{.status.parents[0].conditions[*].reason}`, "NoMatchingParent BackendNotFound"},
	})
	// Its addresses: its Service's cluster IP, until a load balancer
	// gives it one of its own.
	clusterIP, _ := c.Kubectl("", "get", "service/public-gateway", "-n", "edge", "-o", "jsonpath={.spec.clusterIP}")
	checkStatuses(t, c, []statusQuery{{"gateway/public", `{.status.addresses[*].type} {.status.addresses[*].value}`, "IPAddress " + clusterIP}})
	if out, err := c.Kubectl("", "patch", "service", "public-gateway", "-n", "edge", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkStatuses(t, c, []statusQuery{{"gateway/public", `{.status.addresses[*].type} {.status.addresses[*].value}`, "IPAddress 203.0.113.7"}})
	// A changed spec: its new generation is observed; a condition that
	// stays True keeps the time it became so.
	accepted := `{.status.conditions[?(@.type=="Accepted")].lastTransitionTime}`
	since, _ := c.Kubectl("", "get", "gateway/public", "-n", "edge", "-o", "jsonpath="+accepted)
	time.Sleep(1100 * time.Millisecond) // the times have seconds
	if out, err := c.Kubectl("", "patch", "gateway", "public", "-n", "edge", "--type=json",
		"-p", `[{"op": "add", "path": "/spec/listeners/-", "value": {"name": "web2", "port": 8081, "protocol": "HTTP"}}]`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkStatuses(t, c, []statusQuery{
		{"gateway/public", `{.status.conditions[?(@.type=="Accepted")].observedGeneration} {.status.listeners[*].name}`, "2 http web2"},
		{"gateway/public", accepted, since},
	})
}

// statusQuery is what kubectl get OBJECT -o jsonpath= should print.
type statusQuery struct{ what, jsonpath, want string }

// checkStatuses waits up to 30 s for each query's answer in namespace
// edge.
func checkStatuses(t *testing.T, c *kubecluster.Cluster, qs []statusQuery) {
	t.Helper()
	for _, q := range qs {
		var got string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got, _ = c.Kubectl("", "get", q.what, "-n", "edge", "-o", "jsonpath="+q.jsonpath)
			if got == q.want || time.Now().After(deadline) {
				break
			}
		}
		if got != q.want {
			t.Errorf("%s %s: %q, want %q", q.what, q.jsonpath, got, q.want)
		}
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
