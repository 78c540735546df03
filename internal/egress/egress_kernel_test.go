// Package egress_test runs Istio's egress gateway pattern under shunt in
// network namespaces: a pod's sidecar under REGISTRY_ONLY, an egress
// gateway, and an "internet" beyond it.
package egress_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/catest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// The mesh: the app's pod; the egress gateway's pod (Istio's labels and
// Service) with shunt-control beside it; a ServiceEntry declaring
// api.partner.example (its virtual address, its address on the
// internet); an Istio Gateway for it on the egress gateway and the
// VirtualService that sends the mesh's requests for it there and the
// gateway's on to it.
const manifest = `
apiVersion: v1
kind: Pod
metadata: {name: app-5f4d58-x2x9z, namespace: shop, labels: {app: app}}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: istio-egressgateway-7d9f-abcde, namespace: istio-system, labels: {istio: egressgateway, app: istio-egressgateway}}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec: {selector: {istio: egressgateway}, clusterIP: 10.96.0.30, ports: [{name: http, port: 80, targetPort: 8080}, {name: tls, port: 443, targetPort: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: istio-egressgateway-1, namespace: istio-system, labels: {kubernetes.io/service-name: istio-egressgateway}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: tls, port: 8443}]
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: shop}
spec:
  hosts: [api.partner.example]
  addresses: [240.240.0.10]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.8.0.2}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: [api.partner.example]}
  - {port: {number: 8443, name: tls, protocol: TLS}, hosts: [secure.partner.example], tls: {mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-tls, namespace: shop}
spec:
  hosts: [secure.partner.example]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: 10.8.0.2}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner-tls-via-egress, namespace: shop}
spec:
  hosts: [secure.partner.example]
  gateways: [mesh, istio-system/egress]
  tls:
  - match: [{gateways: [mesh], port: 443, sniHosts: [secure.partner.example]}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 443}}}]
  - match: [{gateways: [istio-system/egress], port: 8443, sniHosts: [secure.partner.example]}]
    route: [{destination: {host: secure.partner.example, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner-via-egress, namespace: shop}
spec:
  hosts: [api.partner.example]
  gateways: [mesh, istio-system/egress]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 80}}}]
  - match: [{gateways: [istio-system/egress], port: 8080}]
    route: [{destination: {host: api.partner.example, port: {number: 80}}}]
`

// TestEgressGateway: under REGISTRY_ONLY the app's sidecar sends the
// declared external host's requests through the egress gateway, which
// the host sees as the only source; an undeclared host gets 502 from the
// sidecar (BlackHoleCluster), over TCP a reset, and nothing reaches it.
func TestEgressGateway(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save")
	app, egw, internet := testnet.NewNS(t, "app"), testnet.NewNS(t, "egw"), testnet.NewNS(t, "net")
	testnet.Link(t, app, "eth0", "10.1.0.5/24", egw, "eth0", "10.1.0.1/24")
	testnet.Link(t, egw, "eth1", "10.8.0.1/24", internet, "eth0", "10.8.0.2/24")
	internet.Run(t, "ip", "addr", "add", "10.8.0.3/24", "dev", "eth0")
	app.Run(t, "ip", "route", "add", "default", "via", "10.1.0.1")

	// The internet: each host says who it is and whom it saw, over HTTP
	// and HTTPS (secure.partner.example's certificate).
	certPEM, keyPEM := catest.ServerCert(t, "secure.partner.example")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string][]string{}
	for _, ip := range []string{"10.8.0.2", "10.8.0.3"} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			from, _, _ := net.SplitHostPort(r.RemoteAddr)
			mu.Lock()
			seen[ip] = append(seen[ip], from)
			mu.Unlock()
			fmt.Fprintf(w, "%s %s", ip, r.Host)
		})}
		go srv.Serve(internet.Listener(t, ip+":80"))
		t.Cleanup(func() { srv.Close() })
		go srv.Serve(tls.NewListener(internet.Listener(t, ip+":443"), &tls.Config{Certificates: []tls.Certificate{pair}}))
		internet.Listen(t, ip+":5432", "db "+ip)
	}

	dir, err := os.MkdirTemp("/tmp", "shunt-egress-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(manifest), 0o644)
	egw.Start(t, "shunt-control", testnet.ControlBinary(t), "--from-file", filepath.Join(dir, "mesh.yaml"), "--addr", ":15010",
		"--monitor-addr", "127.0.0.1:15014", "--enable-auto-mtls=false", "--outbound-traffic-policy", "REGISTRY_ONLY", "--access-log-file", "/dev/stdout")
	egw.WaitHTTP(t, "http://127.0.0.1:15014/ready")
	egw.Start(t, "the egress gateway", "env", "POD_NAME=istio-egressgateway-7d9f-abcde", "POD_NAMESPACE=istio-system", "INSTANCE_IP=10.1.0.1",
		testnet.ShuntBinary(t), "gateway", "--xds-address", "127.0.0.1:15010", "--uid", "1337", "--gid", "1337", "--health-addr", "127.0.0.1:15021")
	egw.WaitHTTP(t, "http://127.0.0.1:15021/healthz/ready")

	bin := testnet.ShuntBinary(t)
	app.Run(t, bin, "redirect", "--network-namespace", app.Path, "--log_output_level", "warn",
		"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020")
	app.Start(t, "the app's sidecar", "env", "POD_NAME=app-5f4d58-x2x9z", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.0.5",
		bin, "proxy", "--uid", "1337", "--gid", "1337", "--xds-address", "10.1.0.1:15010")
	app.WaitHTTP(t, "http://127.0.0.1:15021/healthz/ready")

	client := app.HTTPClient()
	get := func(url, host string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The declared host, by its virtual address: through the gateway.
	var code int
	var body string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, body = get("http://240.240.0.10/orders", "api.partner.example"); code == 200 {
			break
		}
	}
	if code != 200 || body != "10.8.0.2 api.partner.example" {
		t.Fatalf("the declared host through the egress gateway: %d %q", code, body)
	}
	// HTTP is routed by Host, as Istio's sidecars route it: the declared
	// name at the host's own address goes through the gateway too.
	if code, body := get("http://10.8.0.2/direct", "api.partner.example"); code != 200 || body != "10.8.0.2 api.partner.example" {
		t.Errorf("the declared name at the host's address: %d %q", code, body)
	}
	// Undeclared: 502 from the sidecar, by address or by a name it does
	// not know; nothing reaches the host.
	for _, c := range []struct{ url, host string }{{"http://10.8.0.3/", "10.8.0.3"}, {"http://10.8.0.3/", "unknown.example"}, {"http://10.8.0.2/", "10.8.0.2"}} {
		if code, body := get(c.url, c.host); code != 502 {
			t.Errorf("undeclared %s (Host %s): %d %q, want the sidecar's 502", c.url, c.host, code, body)
		}
	}
	// The app's own TLS to the declared host's address, by SNI through
	// the egress gateway's PASSTHROUGH server (the gateway never
	// decrypts: the host's own certificate); another SNI to that address
	// is undeclared: reset.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	tlsGet := func(sni string) (string, error) {
		c, err := app.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.8.0.2:443"), 0, 0)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: roots})
		fmt.Fprintf(tc, "GET /secure HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
		b, err := io.ReadAll(tc)
		return string(b), err
	}
	if body, err := tlsGet("secure.partner.example"); err != nil || !strings.HasSuffix(body, "10.8.0.2 secure.partner.example") {
		t.Errorf("TLS by SNI through the egress gateway: %q, %v", body, err)
	}
	if body, err := tlsGet("other.partner.example"); err == nil || strings.Contains(body, "10.8.0.2") {
		t.Errorf("an undeclared SNI was passed: %q, %v", body, err)
	}
	// Over TCP, an undeclared destination is reset.
	if c, err := app.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.8.0.3:5432"), 0, 0); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if len(b) != 0 || err == nil {
			t.Errorf("undeclared TCP: read %q, %v; want a reset", b, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen["10.8.0.3"]) != 0 {
		t.Errorf("the undeclared host was reached from %v", seen["10.8.0.3"])
	}
	if from := strings.Join(seen["10.8.0.2"], " "); from == "" || strings.Trim(strings.ReplaceAll(from, "10.8.0.1", ""), " ") != "" {
		t.Errorf("the declared host saw %q, want the egress gateway's 10.8.0.1 alone", from)
	}
}
