package deploy_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/catest"
	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/internal/netlab"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// egressMesh is Istio's "egress gateway with TLS origination", as its
// docs write it but for the gateway's port (shunt's gateway listens on
// the server's port number, the Service's targetPort): sleep's sidecar
// sends api.partner.example's plaintext requests to the egress gateway
// over the mesh's mutual TLS (a subset whose port 80 is ISTIO_MUTUAL
// with the host's SNI), the gateway's ISTIO_MUTUAL server takes them and
// its cluster to the host's 443 originates TLS, checked against the
// partner's CA (CAFILE).
const egressMesh = `apiVersion: v1
kind: Namespace
metadata: {name: shunt-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sleep, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: istio-egressgateway, namespace: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep-1, namespace: default, labels: {app: sleep, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: sleep, containers: [{name: sleep, image: sleep}]}
---
apiVersion: v1
kind: Pod
metadata: {name: istio-egressgateway-1, namespace: istio-system, labels: {istio: egressgateway, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: istio-egressgateway, containers: [{name: istio-proxy, image: shunt}]}
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec: {clusterIP: 10.96.0.30, selector: {istio: egressgateway}, ports: [{name: https, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: istio-egressgateway-1, namespace: istio-system, labels: {kubernetes.io/service-name: istio-egressgateway}}
addressType: IPv4
ports: [{name: https, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: istio-egressgateway-1, namespace: istio-system}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: default}
spec:
  hosts: [api.partner.example]
  addresses: [240.240.0.10]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http-port, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints: [{address: 10.8.0.2}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 8080, name: https-port-for-tls-origination, protocol: HTTPS}
    hosts: [api.partner.example]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-partner, namespace: default}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: partner
    trafficPolicy:
      portLevelSettings:
      - port: {number: 80}
        tls: {mode: ISTIO_MUTUAL, sni: api.partner.example}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-partner-through-egress-gateway, namespace: default}
spec:
  hosts: [api.partner.example]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: partner, port: {number: 80}}}]
  - match: [{gateways: [istio-egressgateway], port: 8080}]
    route: [{destination: {host: api.partner.example, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-tls-for-partner, namespace: default}
spec:
  host: api.partner.example
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: CAFILE}
`

// TestEgressGatewayMutualTLSOrigination: sleep's pod and the egress
// gateway's as network namespaces (certificates from shunt-control's CA,
// real service-account tokens, a real API server), an "internet"
// namespace behind the gateway serving HTTPS. sleep's plaintext request
// for the partner reaches it over TLS the gateway originated (the
// partner's SNI, from the gateway's address); between the pods the wire
// holds a TLS handshake, never the request; a client without a mesh
// certificate is refused by the gateway's ISTIO_MUTUAL server.
func TestEgressGatewayMutualTLSOrigination(t *testing.T) {
	testnet.RequireRoot(t, "ip", "iptables-legacy", "tcpdump")
	c := kubecluster.Start(t)
	dir, err := os.MkdirTemp("/tmp", "shunt-egress-mtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)

	// The partner on the internet: HTTPS with a certificate its own CA
	// (here, itself) signed, which the gateway is given.
	cert, key := catest.ServerCert(t, "api.partner.example")
	caFile := filepath.Join(dir, "partner-ca.pem")
	os.WriteFile(caFile, cert, 0o644)
	crds, _ := os.ReadFile("istio-crds.yaml")
	for _, args := range [][]string{{"apply", "-f", "-"}, {"wait", "--for", "condition=established", "--timeout", "30s", "crd", "--all"}} {
		if out, err := c.Kubectl(string(crds), args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if out, err := c.Kubectl(strings.Replace(egressMesh, "CAFILE", caFile, 1), "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, p := range []struct{ ns, name, ip string }{{"default", "sleep-1", netlab.PodIP}, {"istio-system", "istio-egressgateway-1", netlab.PeerIP}} {
		if out, err := c.Kubectl("", "-n", p.ns, "patch", "pod", p.name, "--subresource=status", "--type=merge",
			"-p", fmt.Sprintf(`{"status":{"podIP":%q,"podIPs":[{"ip":%q}]}}`, p.ip, p.ip)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	pods := testnet.NewPod(t)
	sleep, gateway := pods.NS, pods.Peer
	internet := testnet.NewNS(t, "net")
	testnet.Link(t, gateway, "eth1", "10.8.0.1/24", internet, "eth0", "10.8.0.2/24")
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // SNI and source of each request
	partner := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen = append(seen, r.TLS.ServerName+" from "+from)
		mu.Unlock()
		fmt.Fprintf(w, "partner over TLS: %s %s", r.Host, r.URL.Path)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}}
	go partner.ServeTLS(internet.Listener(t, "10.8.0.2:443"), "", "")
	t.Cleanup(func() { partner.Close() })

	sleepCtl, gatewayCtl := controlLink(t, sleep, 4), controlLink(t, gateway, 0)
	xds, caPort := kubecluster.FreePort(t), kubecluster.FreePort(t)
	runUntilEnd(t, exec.Command(testnet.ControlBinary(t), "--kubeconfig", c.Kubeconfig, "--addr", fmt.Sprintf("0.0.0.0:%d", xds),
		"--ca-addr", fmt.Sprintf("0.0.0.0:%d", caPort), "--monitor-addr", fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t)),
		"--ca-hosts", sleepCtl+","+gatewayCtl, "--debounce-after", "50ms"), "shunt-control")
	roots := filepath.Join(dir, "root-cert.pem")
	os.WriteFile(roots, []byte(trustBundle(t, c, "default")), 0o644)

	shunt := testnet.ShuntBinary(t)
	token := func(ns, sa string) string {
		tok, err := c.Kubectl("", "-n", ns, "create", "token", sa, "--audience", "istio-ca")
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, sa+"-token")
		os.WriteFile(file, []byte(tok), 0o644)
		return file
	}
	mesh := func(ctl string) []string {
		return []string{"--uid", "1337", "--gid", "1337", "--drain-timeout", "1s", "--xds-address", fmt.Sprintf("%s:%d", ctl, xds),
			"--ca-address", fmt.Sprintf("%s:%d", ctl, caPort), "--ca-root-cert", roots}
	}
	runUntilEnd(t, exec.Command("ip", append([]string{"netns", "exec", gateway.Name, "env", "POD_NAME=istio-egressgateway-1",
		"POD_NAMESPACE=istio-system", "INSTANCE_IP=" + netlab.PeerIP, "SERVICE_ACCOUNT=istio-egressgateway", shunt, "gateway",
		"--token-file", token("istio-system", "istio-egressgateway"), "--health-addr", "127.0.0.1:15021"}, mesh(gatewayCtl)...)...), "the egress gateway")
	if out, err := sleep.Command(shunt, "redirect", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT",
		"-i", "*", "-b", "*").CombinedOutput(); err != nil {
		t.Fatalf("shunt redirect: %v\n%s", err, out)
	}
	runUntilEnd(t, exec.Command("ip", append([]string{"netns", "exec", sleep.Name, "env", "POD_NAME=sleep-1", "POD_NAMESPACE=default",
		"INSTANCE_IP=" + netlab.PodIP, "SERVICE_ACCOUNT=sleep", shunt, "proxy", "--token-file", token("default", "sleep")}, mesh(sleepCtl)...)...),
		"sleep's sidecar")

	client := sleep.HTTPClient()
	get := func() (int, string, error) {
		req, _ := http.NewRequest("GET", "http://240.240.0.10/orders", nil)
		req.Host = "api.partner.example"
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	want := "partner over TLS: api.partner.example /orders"
	wire := capture(t, gateway, func() {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			code, body, err := get()
			if code == 200 && body == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sleep never reached the partner through the egress gateway: %d %q %v", code, body, err)
			}
		}
	})
	clientHello := []byte{0x16, 0x03, 0x01}
	if !bytes.Contains(wire, clientHello) || bytes.Contains(wire, []byte("GET /orders")) {
		t.Errorf("sidecar to gateway is not TLS on the wire (%d bytes captured; a ClientHello: %v, the plaintext request: %v)",
			len(wire), bytes.Contains(wire, clientHello), bytes.Contains(wire, []byte("GET /orders")))
	}
	mu.Lock()
	for _, s := range seen {
		if s != "api.partner.example from 10.8.0.1" {
			t.Errorf("the partner saw %q, want SNI api.partner.example from the gateway's 10.8.0.1", s)
		}
	}
	mu.Unlock()

	// Outside the mesh (sleep's namespace as the proxy's user: not
	// captured), straight to the gateway's port: TLS without a mesh
	// certificate is refused, and so is plaintext.
	conn, err := sleep.DialConn(netip.MustParseAddr(netlab.PodIP), netip.MustParseAddrPort(netlab.PeerIP+":8080"), 1337, 1337)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "api.partner.example", InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(tc, "GET /orders HTTP/1.1\r\nHost: api.partner.example\r\n\r\n")
	if b, _ := io.ReadAll(tc); strings.Contains(string(b), "partner") {
		t.Errorf("a client without a mesh certificate was served: %q", b)
	}
	tc.Close()
}
