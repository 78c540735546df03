// Package catest runs the mesh's CA for tests: a self-signed authority,
// and its gRPC service over TLS on loopback.
package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shunt-dev/shunt/ca"
)

// Authority is a new self-signed authority of the default trust domain.
func Authority(t testing.TB) *ca.Authority {
	t.Helper()
	b, err := ca.SelfSigned(ca.DefaultTrustDomain, ca.SelfSignedRootTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// NamedToken authenticates a token as the service account of its name,
// in namespace default.
type NamedToken struct{}

func (NamedToken) Authenticate(_ context.Context, token string) (string, string, error) {
	return "default", token, nil
}

// Serve runs a's service (auth knowing the callers) over TLS on
// loopback, its certificate for host, until the test ends; it returns
// the address to dial and a client connection that trusts a's roots.
func Serve(t testing.TB, a *ca.Authority, auth ca.Authenticator, host string) (*ca.Service, string, *grpc.ClientConn) {
	t.Helper()
	svc := ca.NewService(a, ca.DefaultTrustDomain, auth, slog.New(slog.NewTextHandler(io.Discard, nil)))
	serving, err := a.ServingCertificate([]string{host}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}})))
	svc.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort(host, port)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: a.RootPool(), ServerName: host})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return svc, addr, conn
}

// ServerCert is a self-signed server certificate for hosts (its DNS
// SANs; the first its common name) and its key, PEM-encoded, as a TLS
// Secret holds them (tls.crt, tls.key).
func ServerCert(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
