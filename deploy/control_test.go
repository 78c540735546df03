package deploy_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestControlPlaneInARealAPIServer applies deploy/control.yaml to a real
// API server (RBAC on) and runs shunt-control as its service account:
// the role is enough to list and watch what it reads, and no more; a
// gateway deployed by deploy/gateway.yaml is served its Gateway.
func TestControlPlaneInARealAPIServer(t *testing.T) {
	c := kubecluster.Start(t)
	if out, err := c.Kubectl(kubecluster.GatewayRouteCRDs+"---\n"+kubecluster.GatewayCRDs, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, file := range []string{"webhook.yaml", "istio-crds.yaml", "control.yaml"} {
		manifest, _ := os.ReadFile(file)
		if out, err := c.Kubectl(strings.ReplaceAll(string(manifest), "CA_BUNDLE", "Cg=="), "apply", "-f", "-"); err != nil {
			t.Fatalf("deploy/%s is refused: %v\n%s", file, err, out)
		}
	}
	if out, err := c.Kubectl("", "wait", "--for", "condition=Established", "--timeout", "30s", "crd/httproutes.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io",
		"crd/gateways.gateway.networking.k8s.io", "crd/gatewayclasses.gateway.networking.k8s.io", "crd/referencegrants.gateway.networking.k8s.io",
		"crd/tlsroutes.gateway.networking.k8s.io", "crd/tcproutes.gateway.networking.k8s.io",
		"crd/virtualservices.networking.istio.io", "crd/destinationrules.networking.istio.io", "crd/serviceentries.networking.istio.io",
		"crd/sidecars.networking.istio.io", "crd/peerauthentications.security.istio.io",
		"crd/authorizationpolicies.security.istio.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sa := "system:serviceaccount:shunt-system:shunt-control"
	for _, q := range []struct{ verb, resource, want string }{
		{"watch", "endpointslices.discovery.k8s.io", "yes"}, {"list", "services", "yes"}, {"watch", "pods", "yes"}, {"watch", "namespaces", "yes"},
		{"watch", "virtualservices.networking.istio.io", "yes"}, {"list", "destinationrules.networking.istio.io", "yes"},
		{"watch", "httproutes.gateway.networking.k8s.io", "yes"}, {"watch", "grpcroutes.gateway.networking.k8s.io", "yes"}, {"watch", "serviceentries.networking.istio.io", "yes"},
		{"watch", "sidecars.networking.istio.io", "yes"}, {"watch", "peerauthentications.security.istio.io", "yes"},
		{"watch", "authorizationpolicies.security.istio.io", "yes"}, {"watch", "gateways.gateway.networking.k8s.io", "yes"},
		{"watch", "gatewayclasses.gateway.networking.k8s.io", "yes"}, {"watch", "referencegrants.gateway.networking.k8s.io", "yes"},
		{"watch", "tlsroutes.gateway.networking.k8s.io", "yes"}, {"watch", "tcproutes.gateway.networking.k8s.io", "yes"},
		{"patch", "gateways.gateway.networking.k8s.io", "no"}, // its status alone (written below)
		{"create", "events", "yes"}, {"list", "secrets", "no"}, {"update", "services", "no"}, {"create", "pods", "no"},
		{"create", "tokenreviews.authentication.k8s.io", "yes"}, {"update", "configmaps", "yes"}, {"get", "secrets", "no"},
	} {
		out, _ := c.Kubectl("", "auth", "can-i", q.verb, q.resource, "--all-namespaces", "--as", sa)
		if got := strings.TrimSpace(out); got != q.want {
			t.Errorf("can shunt-control %s %s? %q, want %q", q.verb, q.resource, got, q.want)
		}
	}

	token, err := c.Kubectl("", "-n", "shunt-system", "create", "token", "shunt-control")
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := os.ReadFile(c.Kubeconfig)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kubeconfig, []byte(strings.Replace(string(admin), "token: shunt-test-token", "token: "+strings.TrimSpace(token), 1)), 0o600)
	if _, err := c.Kubectl("apiVersion: v1\nkind: Service\nmetadata: {name: backend-service, namespace: default}\nspec: {ports: [{name: http, port: 10000}]}\n---\n"+
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: backend, namespace: default}\n"+
		"spec: {hosts: [backend-service], http: [{route: [{destination: {host: backend-service}}], retries: {attempts: 2, retryRemoteLocalities: true}}]}",
		"apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// Its own namespace's CA Secret, and only that one.
	for _, q := range []struct{ ns, what, want string }{{"shunt-system", "secret/istio-ca-secret", "yes"}, {"shunt-system", "secret/other", "no"}, {"default", "secret/istio-ca-secret", "no"}} {
		out, _ := c.Kubectl("", "auth", "can-i", "get", q.what, "-n", q.ns, "--as", sa)
		if got := strings.TrimSpace(out); got != q.want {
			t.Errorf("can shunt-control get %s in %s? %q, want %q", q.what, q.ns, got, q.want)
		}
	}

	monitor := fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t))
	caAddr := fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t))
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t))
	args := []string{"--kubeconfig", kubeconfig, "--addr", xdsAddr,
		"--monitor-addr", monitor, "--ca-addr", caAddr}
	cmd := exec.Command(testnet.ControlBinary(t), args...)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "control.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var metrics string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + monitor + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			metrics = string(b)
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("shunt-control never served as its service account:\n%s", log)
		}
	}
	// Served only once listed: default/kubernetes, default/backend-service,
	// shunt-system/shunt-webhook and shunt-system/shunt-control.
	if !strings.Contains(metrics, "pilot_services 4") {
		t.Errorf("/metrics:\n%s", metrics)
	}
	// The retry field it does not run is told on the VirtualService.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, _ := c.Kubectl("", "-n", "default", "get", "events", "--field-selector", "involvedObject.kind=VirtualService,involvedObject.name=backend",
			"-o", "jsonpath={range .items[*]}{.type} {.reason} {.message}{\"\\n\"}{end}")
		if strings.Contains(out, "Warning NotInForce spec.http[0].retries.retryRemoteLocalities: not run by shunt") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event on the VirtualService: %q", out)
		}
	}
	checkCA(t, c, caAddr, func() {
		cmd.Process.Kill()
		cmd.Wait()
		cmd = exec.Command(testnet.ControlBinary(t), args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	})
	// The CA counts as istiod's does: the restarted one issued b's.
	resp, err := http.Get("http://" + monitor + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "citadel_server_success_cert_issuance_count 1\n") {
		t.Errorf("the CA's metrics: %s", grepLines(string(b), "citadel_"))
	}
	checkGateway(t, c, xdsAddr)
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
