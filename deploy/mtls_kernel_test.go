package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/internal/netlab"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// meshPods are two pods of the mesh (sleep calls httpbin through its
// Service), their service accounts, and the EndpointSlice a controller
// would make; their IPs are the test's namespaces'.
const meshPods = `apiVersion: v1
kind: Namespace
metadata: {name: shunt-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sleep, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: httpbin, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep-1, namespace: default, labels: {app: sleep, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: sleep, containers: [{name: sleep, image: sleep}]}
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-1, namespace: default, labels: {app: httpbin, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: httpbin, containers: [{name: httpbin, image: httpbin, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec: {clusterIP: 10.96.0.20, selector: {app: httpbin}, ports: [{name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: httpbin-1, namespace: default, labels: {kubernetes.io/service-name: httpbin}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: httpbin-1, namespace: default}}]
`

// TestMutualTLSBetweenPods: two pods as network namespaces, each with
// shunt's capture and sidecar, the sidecars configured by shunt-control
// and given certificates by its CA (real service-account tokens, a real
// API server). The caller's request reaches the callee's app with the
// caller's identity (x-forwarded-client-cert), as mutual TLS on the wire
// (a capture of the veth holds a TLS handshake, not the request); a
// client outside the mesh is served while the namespace is PERMISSIVE
// (the default) and refused once a PeerAuthentication makes it STRICT;
// AuthorizationPolicies then deny and allow sleep's requests as they say.
func TestMutualTLSBetweenPods(t *testing.T) {
	testnet.RequireRoot(t, "ip", "iptables-legacy", "tcpdump")
	c := kubecluster.Start(t)
	crds, _ := os.ReadFile("istio-crds.yaml")
	if out, err := c.Kubectl(string(crds)+"---\n"+meshPods, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for pod, ip := range map[string]string{"sleep-1": netlab.PodIP, "httpbin-1": netlab.PeerIP} {
		if out, err := c.Kubectl("", "-n", "default", "patch", "pod", pod, "--subresource=status", "--type=merge",
			"-p", fmt.Sprintf(`{"status":{"podIP":%q,"podIPs":[{"ip":%q}]}}`, ip, ip)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	// sleep's pod is the namespace pair's pod, httpbin's its peer; each
	// reaches shunt-control (here, beside the API server) by a link of
	// its own.
	pods := testnet.NewPod(t)
	sleep, httpbin := pods.NS, pods.Peer
	sleepCtl, httpbinCtl := controlLink(t, sleep, 4), controlLink(t, httpbin, 0)
	xds, caPort := kubecluster.FreePort(t), kubecluster.FreePort(t)
	control := exec.Command(testnet.ControlBinary(t), "--kubeconfig", c.Kubeconfig, "--addr", fmt.Sprintf("0.0.0.0:%d", xds),
		"--ca-addr", fmt.Sprintf("0.0.0.0:%d", caPort), "--monitor-addr", fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t)),
		"--ca-hosts", sleepCtl+","+httpbinCtl, "--debounce-after", "50ms")
	runUntilEnd(t, control, "shunt-control")

	dir, err := os.MkdirTemp("/tmp", "shunt-mtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	roots := filepath.Join(dir, "root-cert.pem")
	os.WriteFile(roots, []byte(trustBundle(t, c, "default")), 0o644)

	// The app behind httpbin's sidecar says what it was sent.
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s xfcc=%s", r.URL.Path, r.Header.Get("X-Forwarded-Client-Cert"))
	})}
	go app.Serve(httpbin.Listener(t, "0.0.0.0:8080"))
	t.Cleanup(func() { app.Close() })

	shunt := testnet.ShuntBinary(t)
	for _, p := range []struct {
		ns           *testnet.NS
		name, sa, ip string
		control      string
	}{{sleep, "sleep-1", "sleep", netlab.PodIP, sleepCtl}, {httpbin, "httpbin-1", "httpbin", netlab.PeerIP, httpbinCtl}} {
		token, err := c.Kubectl("", "-n", "default", "create", "token", p.sa, "--audience", "istio-ca")
		if err != nil {
			t.Fatal(err)
		}
		tokenFile := filepath.Join(dir, p.sa+"-token")
		os.WriteFile(tokenFile, []byte(token), 0o644)
		if out, err := p.ns.Command(shunt, "redirect", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT",
			"-i", "*", "-b", "*").CombinedOutput(); err != nil {
			t.Fatalf("shunt redirect: %v\n%s", err, out)
		}
		sidecar := exec.Command("ip", "netns", "exec", p.ns.Name, "env", "POD_NAME="+p.name, "POD_NAMESPACE=default", "INSTANCE_IP="+p.ip,
			"SERVICE_ACCOUNT="+p.sa, shunt, "proxy", "--uid", "1337", "--gid", "1337", "--drain-timeout", "1s",
			"--xds-address", fmt.Sprintf("%s:%d", p.control, xds), "--ca-address", fmt.Sprintf("%s:%d", p.control, caPort),
			"--ca-root-cert", roots, "--token-file", tokenFile)
		runUntilEnd(t, sidecar, p.name+"'s sidecar")
	}

	// sleep's app calls httpbin's Service; both sidecars have their
	// certificates and configuration once this answers with sleep's
	// identity. Between the pods, on the wire, meanwhile: a TLS handshake
	// and TLS records, never the request.
	service := "http://10.96.0.20:8080/headers"
	wantCaller := "URI=spiffe://cluster.local/ns/default/sa/sleep"
	wire := capture(t, httpbin, func() {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			code, body, err := sleep.HTTPGet(service)
			if code == 200 && strings.Contains(body, wantCaller) {
				if !strings.Contains(body, "By=spiffe://cluster.local/ns/default/sa/httpbin;Hash=") {
					t.Errorf("the callee's identity is not in x-forwarded-client-cert: %q", body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sleep never reached httpbin over mutual TLS: %d %q %v", code, body, err)
			}
		}
	})
	clientHello, appData := []byte{0x16, 0x03, 0x01}, []byte{0x17, 0x03, 0x03}
	if !bytes.Contains(wire, clientHello) || !bytes.Contains(wire, appData) || bytes.Contains(wire, []byte("GET /headers")) {
		t.Errorf("the pods' traffic is not mutual TLS on the wire (%d bytes captured; a ClientHello: %v, TLS records: %v, the plaintext request: %v)",
			len(wire), bytes.Contains(wire, clientHello), bytes.Contains(wire, appData), bytes.Contains(wire, []byte("GET /headers")))
	}

	// A client outside the mesh (sleep's namespace, as the proxy's own
	// user: not captured) goes straight to httpbin's pod in plaintext.
	outside := func() (int, error) {
		conn, err := sleep.DialConn(netip.MustParseAddr(netlab.PodIP), netip.MustParseAddrPort(netlab.PeerIP+":8080"), 1337, 1337)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET /outside HTTP/1.1\r\nHost: httpbin\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := outside(); code != 200 {
		t.Errorf("a plaintext client of a PERMISSIVE workload: %d %v, want 200", code, err)
	}
	if out, err := c.Kubectl("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
		"apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, err := outside()
		if code == 0 && err != nil {
			break // refused: the connection closed without an answer
		}
		if time.Now().After(deadline) {
			t.Fatalf("a plaintext client of a STRICT workload still answered: %d %v", code, err)
		}
	}
	if code, body, err := sleep.HTTPGet(service); code != 200 || !strings.Contains(body, wantCaller) {
		t.Errorf("the mesh's own request under STRICT: %d %q %v", code, body, err)
	}
	checkAuthorization(t, c, sleep)
}

// checkAuthorization applies AuthorizationPolicies to httpbin and checks
// each with sleep's real requests: DENY by path; ALLOW by principal and
// method; ALLOW by namespace (sleep's is not it).
func checkAuthorization(t *testing.T, c *kubecluster.Cluster, sleep *testnet.NS) {
	t.Helper()
	call := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://10.96.0.20:8080"+path, nil)
		resp, err := sleep.HTTPClient().Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	policy := func(name, spec string) {
		t.Helper()
		doc := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: default}\nspec: " + spec + "\n"
		if out, err := c.Kubectl(doc, "apply", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	// expect waits for a request to be answered code (the policy pushed),
	// then checks the others as they are.
	expect := func(what, method, path string, code int, others ...any) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got, body := call(method, path)
			if got == code && (code != 403 || body == "RBAC: access denied") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s %s answered %d %q, want %d", what, method, path, got, body, code)
			}
		}
		for i := 0; i+2 < len(others); i += 3 {
			m, p, want := others[i].(string), others[i+1].(string), others[i+2].(int)
			if got, body := call(m, p); got != want {
				t.Errorf("%s: %s %s answered %d %q, want %d", what, m, p, got, body, want)
			}
		}
	}
	policy("deny-admin", `{selector: {matchLabels: {app: httpbin}}, action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}`)
	expect("DENY by path", "GET", "/admin/users", 403, "GET", "/headers", 200)
	policy("readers", `{selector: {matchLabels: {app: httpbin}}, rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}], to: [{operation: {methods: [GET]}}]}]}`)
	expect("ALLOW by principal and method", "POST", "/headers", 403, "GET", "/headers", 200, "GET", "/admin/users", 403)
	policy("readers", `{selector: {matchLabels: {app: httpbin}}, rules: [{from: [{source: {namespaces: [monitoring]}}]}]}`)
	expect("ALLOW by namespace", "GET", "/headers", 403)
}

// controlLink joins ns to the host's namespace by a veth of its own
// (10.255.250.<base>/30: the host .1, ns .2 past base) and returns the
// host's address, where shunt-control serves it.
func controlLink(t *testing.T, ns *testnet.NS, base int) string {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	host := "shc" + hex.EncodeToString(b[:])
	hostIP, nsIP := fmt.Sprintf("10.255.250.%d", base+1), fmt.Sprintf("10.255.250.%d", base+2)
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", "ctl0", "netns", ns.Name},
		{"addr", "add", hostIP + "/30", "dev", host}, {"link", "set", host, "up"},
		{"-n", ns.Name, "addr", "add", nsIP + "/30", "dev", "ctl0"}, {"-n", ns.Name, "link", "set", "ctl0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		if args[0] == "link" && args[1] == "add" {
			t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
		}
	}
	return hostIP
}

// runUntilEnd starts cmd, logging its output if the test fails, and
// stops it when the test ends.
func runUntilEnd(t *testing.T, cmd *exec.Cmd, name string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b := out.Bytes()
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s's output (tail):\n%s", name, b)
		}
	})
}

// capture records ns's eth0 (TCP to port 8080) while fn runs, and
// returns the bytes of the capture.
func capture(t *testing.T, ns *testnet.NS, fn func()) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "wire.pcap")
	dump := exec.Command("ip", "netns", "exec", ns.Name, "tcpdump", "-Z", "root", "-U", "--immediate-mode", "-i", "eth0", "-w", file, "tcp port 8080")
	var stderr bytes.Buffer
	dump.Stderr = &stderr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "listening on"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			dump.Process.Kill()
			dump.Wait()
			t.Fatalf("tcpdump did not start: %s", stderr.String())
		}
	}
	fn()
	time.Sleep(300 * time.Millisecond)
	dump.Process.Signal(os.Interrupt)
	dump.Wait()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
