package control_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/meshgraph"
	"github.com/shunt-dev/shunt/xds"
)

// TestDescribeService: a service's page has its routing rules, the
// policies on its pods, its endpoints and its pods' sidecars' sync
// status; a canonical service (the graph's node) finds the service that
// selects its pods.
func TestDescribeService(t *testing.T) {
	var docs []string
	for _, f := range []string{"mesh.yaml", "traffic.yaml", "authz.yaml"} {
		b, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	docs = append(docs, `apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
status: {podIP: 10.1.0.40}
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: default}
spec: {selector: {app: web}, clusterIP: 10.96.0.40, ports: [{name: http, port: 80}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: app-strict, namespace: default}
spec: {selector: {matchLabels: {app: app}}, mtls: {mode: STRICT}}
`)
	w, err := control.LoadWorld([]byte(strings.Join(docs, "\n---\n")), control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	s, addr := startServer(t, w)
	c := &xds.Client{Address: addr, Node: &corev3.Node{Id: appNode}, Base: &bootstrapv3.Bootstrap{},
		Apply: func(*bootstrapv3.Bootstrap) error { return nil }, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the sidecar is synced", func() bool { st := s.Status(); return len(st) == 1 && st[0].Synced() })

	app, ok := s.DescribeService("default", "app")
	if !ok {
		t.Fatal("no app")
	}
	kinds := func(items []meshgraph.Item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Kind+" "+it.Name+": "+it.Detail)
		}
		return out
	}
	if got := kinds(app.Policies); !slices.Contains(got, "PeerAuthentication default/app-strict: mTLS STRICT") ||
		!slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "AuthorizationPolicy default/orders: ALLOW") }) ||
		!slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "AuthorizationPolicy istio-system/deny-admin: DENY") }) {
		t.Errorf("app's policies: %q", got)
	}
	if app.Host != "app.default.svc.cluster.local" || !slices.Equal(app.Ports, []string{"http 80 → http-web", "metrics 9102 → 9102"}) {
		t.Errorf("app: %s %q", app.Host, app.Ports)
	}
	if len(app.Sidecars) != 1 || app.Sidecars[0].Proxy != appNode || !app.Sidecars[0].Synced || !strings.Contains(app.Sidecars[0].Detail, "ACKed") {
		t.Errorf("app's sidecars: %+v", app.Sidecars)
	}

	backend, _ := s.DescribeService("default", "backend-service")
	routing := kinds(backend.Routing)
	if len(routing) != 2 || !strings.HasPrefix(routing[0], "VirtualService default/backend: backend-service (v2); ") ||
		!strings.HasPrefix(routing[1], "DestinationRule default/backend: subsets v1, v2") {
		t.Errorf("backend-service's routing: %q", routing)
	}
	var eps []string
	for _, e := range backend.Endpoints {
		eps = append(eps, e.Address+" "+e.Pod+" "+map[bool]string{true: "ready", false: "not ready"}[e.Ready])
	}
	slices.Sort(eps)
	if want := []string{"10.1.0.7:8080 default/backend-1 ready", "10.1.0.8:8080 default/backend-2 ready", "10.1.0.9:8080 default/backend-3 not ready"}; !slices.Equal(eps, want) {
		t.Errorf("backend-service's endpoints: %q, want %q", eps, want)
	}
	if len(backend.Sidecars) != 0 {
		t.Errorf("backend-service's pods have no sidecar connected, yet: %+v", backend.Sidecars)
	}

	if web, ok := s.DescribeService("default", "web"); !ok || web.Name != "frontend" {
		t.Errorf("the canonical service web: %+v %v, want the service frontend", web, ok)
	}
	if _, ok := s.DescribeService("default", "nothing"); ok {
		t.Error("a service that is not there was found")
	}
}
