package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/catest"
)

// startCA serves a CA on loopback over TLS for "localhost", a token
// naming the service account it is; it returns its address and the file
// of its roots.
func startCA(t *testing.T, dir string) (string, string) {
	t.Helper()
	a := catest.Authority(t)
	_, addr, _ := catest.Serve(t, a, catest.NamedToken{}, "localhost")
	roots := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(roots, []byte(a.Roots()), 0o644); err != nil {
		t.Fatal(err)
	}
	return addr, roots
}

// TestProxyWorkloadCertificate: `shunt proxy --ca-address` gets the pod's
// certificate with its token and shows it on /certs as Envoy does.
func TestProxyWorkloadCertificate(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "shunt-cert-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	addr, roots := startCA(t, dir)
	token := filepath.Join(dir, "istio-token")
	os.WriteFile(token, []byte("app\n"), 0o644)
	config := filepath.Join(dir, "envoy.yaml")
	os.WriteFile(config, []byte("static_resources: {}\n"), 0o644)
	admin := freeLoopbackPort(t)
	t.Setenv("POD_NAMESPACE", "default")
	t.Setenv("SERVICE_ACCOUNT", "app")
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	startProcess(t, shuntBin, "proxy", "--config", config, "--allow-root", "--capture-uid", uid, "--capture-gid", gid,
		"--health-addr", "", "--status-addr", "", "--prometheus-addr", "", "--admin-addr", admin, "--drain-timeout", "1s",
		"--ca-address", addr, "--ca-root-cert", roots, "--token-file", token)
	type details struct {
		SerialNumber    string              `json:"serial_number"`
		SubjectAltNames []map[string]string `json:"subject_alt_names"`
		Days            string              `json:"days_until_expiration"`
		Expiration      string              `json:"expiration_time"`
	}
	var certs struct {
		Certificates []struct {
			CACert    []details `json:"ca_cert"`
			CertChain []details `json:"cert_chain"`
		} `json:"certificates"`
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + admin + "/certs"); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&certs)
			resp.Body.Close()
			if err == nil && len(certs.Certificates) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/certs shows no certificate after 15s: %+v", certs)
		}
	}
	c := certs.Certificates[0]
	if len(c.CertChain) != 1 || len(c.CertChain[0].SubjectAltNames) != 1 || c.CertChain[0].SubjectAltNames[0]["uri"] != "spiffe://cluster.local/ns/default/sa/app" {
		t.Errorf("cert_chain %+v", c.CertChain)
	}
	if len(c.CACert) != 1 || c.CertChain[0].Days != "0" || c.CertChain[0].SerialNumber == "" {
		t.Errorf("ca_cert %+v, a certificate for an hour (the CA's life) expiring in %q days", c.CACert, c.CertChain[0].Days)
	}
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestProxyCertFlags: --ca-address refused as a user meets it.
func TestProxyCertFlags(t *testing.T) {
	dir := t.TempDir()
	roots := filepath.Join(dir, "root-cert.pem")
	os.WriteFile(roots, []byte("not a certificate"), 0o644)
	b, err := ca.SelfSigned("cluster.local", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	goodRoots := filepath.Join(dir, "good.pem")
	os.WriteFile(goodRoots, b.Root, 0o644)
	seed := "../../proxy/envoyconfig/testdata/seed.yaml"
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--ca-address", "istiod"}, nil, `--ca-address "istiod": not host:port`},
		{[]string{"--ca-address", "istiod:15012", "--ca-root-cert", filepath.Join(dir, "none.pem")}, nil, "--ca-root-cert: open"},
		{[]string{"--ca-address", "istiod:15012", "--ca-root-cert", roots}, nil, "no PEM certificate"},
		{nil, []string{"CA_ADDR=istiod"}, `--ca-address "istiod": not host:port`},
		{[]string{"--ca-address", "istiod:15012"}, []string{"SERVICE_ACCOUNT="}, "$POD_NAMESPACE or $SERVICE_ACCOUNT is unset"},
		{[]string{"--ca-address", "istiod:15012", "--trust-domain", "a/b"}, nil, `trust domain "a/b" has a character`},
		{[]string{"--ca-address", "istiod:15012", "--config", seed, "--workers", "2", "--ca-root-cert", goodRoots}, nil, "--ca-address with --workers"},
		{[]string{"--ca-address", "istiod:15012", "--workload-cert-ttl", "-1s"}, nil, "--workload-cert-ttl -1s: negative"},
	} {
		args := append([]string{"proxy", "--uid", "1337", "--gid", "1337", "--config", seed}, c.args...)
		env := append([]string{"POD_NAMESPACE=default", "SERVICE_ACCOUNT=app"}, c.env...)
		if _, errs, code := shunt(t, env, args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v %v: code %d %q, want %q", c.args, c.env, code, errs, c.want)
		}
	}
}
