package deploy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/kubecluster"
)

// checkCA gets workload certificates from shunt-control's CA at addr the
// way a sidecar does: the CA's TLS certificate checked against the trust
// bundle it published in the namespace, a projected token of the
// service account proving who asks. It restarts the control plane with
// restart and checks that the root stayed.
func checkCA(t *testing.T, c *kubecluster.Cluster, addr string, restart func()) {
	t.Helper()
	for _, sa := range []string{"a", "b"} {
		if out, err := c.Kubectl("", "-n", "default", "create", "serviceaccount", sa); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	token := func(sa string, audience ...string) string {
		args := []string{"-n", "default", "create", "token", sa}
		for _, a := range audience {
			args = append(args, "--audience", a)
		}
		out, err := c.Kubectl("", args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	tokenA := token("a", "istio-ca")
	roots := trustBundle(t, c, "default")
	if _, err := c.Kubectl("", "-n", "shunt-system", "get", "secret", "istio-ca-secret"); err != nil {
		t.Errorf("the self-signed root is not kept: %v", err)
	}

	fetch := func(sa, token string) (*ca.Credentials, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(roots)) {
			t.Fatalf("istio-ca-root-cert holds no certificate: %q", roots)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: pool, ServerName: "shunt-control.shunt-system.svc"})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		k := &ca.Keeper{Identity: ca.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, Conn: conn,
			Token: func() (string, error) { return token, nil }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return k.Fetch(ctx)
	}
	cert, err := fetch("a", tokenA)
	if err != nil {
		t.Fatalf("service account a's certificate: %v", err)
	}
	if got := cert.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/default/sa/a" {
		t.Errorf("a's certificate names %s", got)
	}
	for _, c := range []struct {
		name, sa, token string
		code            codes.Code
	}{
		{"a's token for b's certificate", "b", tokenA, codes.PermissionDenied},
		{"a token for the API server, not the CA", "a", token("a"), codes.Unauthenticated},
		{"a forged token", "a", tokenA[:len(tokenA)-4] + "AAAA", codes.Unauthenticated},
	} {
		if _, err := fetch(c.sa, c.token); status.Code(errors.Unwrap(err)) != c.code {
			t.Errorf("%s: %v, want %s", c.name, err, c.code)
		}
	}

	// A restarted control plane signs with the same root.
	restart()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if cert, err = fetch("b", token("b", "istio-ca")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no certificate from the restarted CA: %v", err)
		}
	}
	if after := trustBundle(t, c, "default"); after != roots {
		t.Errorf("the trust bundle changed across a restart")
	}
}

// trustBundle waits for the namespace's istio-ca-root-cert and returns it.
func trustBundle(t *testing.T, c *kubecluster.Cluster, ns string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := c.Kubectl("", "-n", ns, "get", "configmap", "istio-ca-root-cert", "-o", "jsonpath={.data.root-cert\\.pem}")
		if err == nil && strings.Contains(out, "BEGIN CERTIFICATE") {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trust bundle in %s: %v %s", ns, err, out)
		}
	}
}
