package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/shunt-dev/shunt/dnsproxy"
	"github.com/shunt-dev/shunt/internal/netlab"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// ndsMesh is a Service and a ServiceEntry with an address: the names the
// control plane gives the sidecar's DNS proxy.
const ndsMesh = `apiVersion: v1
kind: Service
metadata: {name: backend-service, namespace: default}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 10000}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: default}
spec:
  hosts: [api.partner.example]
  addresses: [192.0.2.7]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
`

// TestProxyDNSFromControlPlane: in a pod whose DNS is captured (shunt
// redirect --redirect-dns, the name server of its resolv.conf on the
// peer), the app's queries reach shunt proxy --dns, which follows
// shunt-control: a Service by its names and a ServiceEntry's host from
// the name table (NDS), the rest from the pod's name server, over UDP
// and TCP.
func TestProxyDNSFromControlPlane(t *testing.T) {
	testnet.RequireRoot(t, "ip", "iptables-legacy")
	pod := testnet.NewPod(t)
	// The pod's name server, on the peer.
	var pc net.PacketConn
	var ln net.Listener
	if err := pod.Peer.Do(func() (err error) {
		pc, ln, err = dnsproxy.ListenPair(netlab.PeerIP + ":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	upstream := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Name == "www.example.org." && q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR("www.example.org. 60 IN A 198.51.100.1")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: upstream}, {Listener: ln, Handler: upstream}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	// ip netns exec mounts /etc/netns/NAME/resolv.conf over the pod's.
	etc := filepath.Join("/etc/netns", pod.NS.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+netlab.PeerIP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := pod.NS.Command(shuntBin, "redirect", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT",
		"-i", "*", "-b", "*", "--redirect-dns").CombinedOutput(); err != nil {
		t.Fatalf("shunt redirect: %v\n%s", err, out)
	}
	manifest := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(manifest, []byte(ndsMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "ip", "netns", "exec", pod.NS.Name, testnet.ControlBinary(t), "--from-file", manifest,
		"--addr", "127.0.0.1:15010", "--monitor-addr", "127.0.0.1:15014")
	startProcess(t, "ip", "netns", "exec", pod.NS.Name, "env", "POD_NAME=app-1", "POD_NAMESPACE=default", "INSTANCE_IP="+netlab.PodIP,
		shuntBin, "proxy", "--uid", "1337", "--gid", "1337", "--xds-address", "127.0.0.1:15010", "--drain-timeout", "1s", "--dns")
	// The app (UID 101) asks its name server; the capture answers.
	ask := func(network, name string) (*dns.Msg, error) {
		return pod.NS.ExchangeDNS(network, netlab.PeerIP+":53", 101, 101, name, dns.TypeA)
	}
	answer := func(m *dns.Msg) string {
		var out []string
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok {
				out = append(out, a.A.String())
			}
		}
		return strings.Join(out, ",")
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m, err := ask("udp", "backend-service"); err == nil && answer(m) == "10.96.0.20" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the captured DNS never answered backend-service from the control plane's names: %v %v", m, err)
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		for name, want := range map[string]string{"backend-service": "10.96.0.20", "backend-service.default.svc.cluster.local": "10.96.0.20",
			"api.partner.example": "192.0.2.7", "www.example.org": "198.51.100.1"} {
			if m, err := ask(network, name); err != nil || answer(m) != want {
				t.Errorf("%s over %s: %v %v, want %s", name, network, m, err, want)
			}
		}
	}
}
