package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestProxyDNSFlags: the DNS proxy's settings, refused as a user meets
// them, before anything is bound.
func TestProxyDNSFlags(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(bad, []byte("10.96.0.20 backend\n10.0.0.300 broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"proxy", "--uid", "1337", "--gid", "1337"}
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--dns-hosts", bad}, nil, "--dns-hosts configures the DNS proxy: add --dns"},
		{[]string{"--dns", "--dns-upstream", "10.0.0.1:x"}, nil, `--dns-upstream: "10.0.0.1:x" is not an IP address, or IP:port`},
		{[]string{"--dns", "--dns-upstream", "10.0.0.1", "--dns-hosts", bad}, nil, `line 2: "10.0.0.300" is not an IP address`},
		{[]string{"--dns-upstream", "10.0.0.1", "--dns-hosts", bad}, []string{"ISTIO_META_DNS_CAPTURE=true"}, `line 2: "10.0.0.300" is not an IP address`},
		{nil, []string{"ISTIO_META_DNS_CAPTURE=maybe"}, `$ISTIO_META_DNS_CAPTURE: "maybe" is not true or false`},
	} {
		if _, errs, code := shunt(t, c.env, append(base, c.args...)...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v %v: code %d %q, want %q", c.args, c.env, code, errs, c.want)
		}
	}
}

// TestProxyServesDNS: shunt proxy --dns, in a namespace of its own,
// answers a mesh name from --dns-hosts on 127.0.0.1 port 15053, over UDP
// and TCP, and says SERVFAIL for a name its upstream cannot answer.
func TestProxyServesDNS(t *testing.T) {
	testnet.RequireRoot(t, "ip")
	ns := testnet.NewNS(t, "dns")
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("10.96.0.20 backend-service.default.svc.cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "ip", "netns", "exec", ns.Name, shuntBin, "proxy", "--allow-root", "--capture-uid", "0", "--capture-gid", "0",
		"--health-addr", "", "--status-addr", "", "--prometheus-addr", "", "--admin-addr", "", "--drain-timeout", "1s",
		"--dns", "--dns-hosts", hosts, "--dns-upstream", "127.0.0.1:9", "--dns-namespace", "default")
	ask := func(network, name string) (*dns.Msg, error) {
		return ns.ExchangeDNS(network, "127.0.0.1:15053", 0, 0, name, dns.TypeA)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := ask("tcp", "backend-service"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the DNS proxy never answered: %v", err)
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		m, err := ask(network, "backend-service")
		if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.96.0.20" {
			t.Errorf("backend-service over %s: %v %v", network, m, err)
		}
		if m, err := ask(network, "elsewhere.example"); err != nil || m.Rcode != dns.RcodeServerFailure {
			t.Errorf("a name the upstream cannot answer, over %s: %v %v, want SERVFAIL", network, m, err)
		}
	}
}
