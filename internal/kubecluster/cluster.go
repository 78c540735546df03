// Package kubecluster starts a real Kubernetes control plane for tests: etcd
// from Debian and a kube-apiserver built from the k8s.io/kubernetes module
// (.ci/kube), both on loopback, plus the kubectl of the same release. There
// is no scheduler, controller manager or kubelet: objects are stored and
// admitted, not run.
package kubecluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Cluster is a running API server.
type Cluster struct {
	Kubeconfig string
	kubectl    string
}

// Require skips the test when the parts are missing, except under CI,
// where a missing part is a failure: .ci/deps installs them.
func Require(t *testing.T) (bins string) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") != "" {
		fail = t.Fatalf
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		fail("API server test: etcd is not installed (apt-get install etcd-server; .ci/deps does)")
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", ".ci", "kube")
	out, err := exec.Command(script, "--cached").Output()
	if err != nil {
		fail("API server test: kube-apiserver is not built (run .ci/kube; .ci/deps does): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// FreePort is a loopback TCP port nobody listens on at the moment.
func FreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs a process until the test ends; its output goes to log.
func start(t *testing.T, log string, name string, args ...string) {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log (tail):\n%s", filepath.Base(name), b)
		}
	})
}

// Start runs etcd and kube-apiserver in a temporary folder and waits until
// the API server is ready.
func Start(t *testing.T) *Cluster {
	t.Helper()
	bins := Require(t)
	dir := t.TempDir()
	etcdPort, peerPort, apiPort := FreePort(t), FreePort(t), FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	start(t, filepath.Join(dir, "etcd.log"), "etcd", "--name", "shunt-test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "shunt-test="+peerURL)

	saKey := filepath.Join(dir, "sa.key")
	writeKey(t, saKey)
	token := "shunt-test-token"
	tokens := filepath.Join(dir, "tokens.csv")
	os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600)
	start(t, filepath.Join(dir, "apiserver.log"), filepath.Join(bins, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(apiPort),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC", // the admin token is system:masters'; service accounts get what their roles say
		"--service-cluster-ip-range", "10.96.0.0/16",
		// Pods name a service account that no controller creates here.
		"--disable-admission-plugins", "ServiceAccount",
		"--profiling=false")

	c := &Cluster{Kubeconfig: filepath.Join(dir, "kubeconfig"), kubectl: filepath.Join(bins, "kubectl")}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %s}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, apiPort, token)
	os.WriteFile(c.Kubeconfig, []byte(kubeconfig), 0o600)
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := c.Kubectl("", "get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server is not ready after 90s: %v %s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The default namespace is made by the API server itself, shortly after.
	for deadline = time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := c.Kubectl("", "get", "namespace", "default"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no default namespace: %v", err)
		}
	}
	return c
}

func writeKey(t *testing.T, path string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// Kubectl runs kubectl against the cluster with stdin as its input; it
// returns standard output, and on failure an error holding standard error.
func (c *Cluster) Kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// GatewayRouteCRDs stand for Gateway API's HTTPRoute and GRPCRoute CRDs
// (which a cluster installs from Gateway API's release), their schemas
// left open.
var GatewayRouteCRDs = gatewayCRD("HTTPRoute", "httproute", "v1", "Namespaced") + "---\n" + gatewayCRD("GRPCRoute", "grpcroute", "v1", "Namespaced")

// GatewayCRDs stand for the rest of Gateway API's CRDs that shunt reads:
// Gateway, GatewayClass, ReferenceGrant and (experimental) TLSRoute and
// TCPRoute.
var GatewayCRDs = gatewayCRD("Gateway", "gateway", "v1", "Namespaced") + "---\n" + gatewayCRD("GatewayClass", "gatewayclass", "v1", "Cluster") +
	"---\n" + gatewayCRD("ReferenceGrant", "referencegrant", "v1beta1", "Namespaced") + "---\n" + gatewayCRD("TLSRoute", "tlsroute", "v1alpha2", "Namespaced") +
	"---\n" + gatewayCRD("TCPRoute", "tcproute", "v1alpha2", "Namespaced")

// gatewayCRD is a Gateway API kind's CRD at one version, its schema left
// open.
func gatewayCRD(kind, singular, version, scope string) string {
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[2]s.gateway.networking.k8s.io
  annotations: {api-approved.kubernetes.io: "https://github.com/kubernetes-sigs/gateway-api/pull/3328"}
spec:
  group: gateway.networking.k8s.io
  scope: %[4]s
  names: {kind: %[1]s, listKind: %[1]sList, plural: %[2]s, singular: %[5]s}
  versions:
  - name: %[3]s
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, x-kubernetes-preserve-unknown-fields: true}, status: {type: object, x-kubernetes-preserve-unknown-fields: true}}}}
`, kind, plural(singular), version, scope, singular)
}

// plural is a kind's resource name: gatewayclass → gatewayclasses.
func plural(singular string) string {
	if strings.HasSuffix(singular, "s") {
		return singular + "es"
	}
	return singular + "s"
}
