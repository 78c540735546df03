package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestDemo runs `shunt demo` as the README says, and checks that the
// requests went through the sidecar and that nothing is left behind.
func TestDemo(t *testing.T) {
	testnet.RequireRoot(t, "nginx", "curl", "iptables-nft-save")
	out, errs, code := shunt(t, nil, "demo")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"upstream backend_ups { server backend-service:10000; }",
		"hello from backend-service: /test",
		`"GET /test HTTP/1.0" 200 49 `,
		" 10.96.0.10:10000 PassthroughCluster -",
		`"GET /test HTTP/1.1" 200 49 `,
		" 10.1.0.5:80 InboundPassthroughCluster -",
		"verdict: REDIRECT → 15001",
		// The inbound request's trace: nginx passed traceparent on, its call
		// to the backend is the SERVER span's child.
		"  SERVER ingress                      app.default  GET 200  ",
		"\n    CLIENT egress backend_ups           app.default  GET 200  ",
		"namespaces, processes and files removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if list, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(list), "shunt-demo-") {
		t.Errorf("the demo left namespaces:\n%s", list)
	}
}
