package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/catest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tokens is an authenticator of fixed tokens: token → namespace/account.
type tokens map[string][2]string

func (t tokens) Authenticate(_ context.Context, token string) (string, string, error) {
	if who, ok := t[token]; ok {
		return who[0], who[1], nil
	}
	return "", "", errors.New("unknown token")
}

var callers = tokens{"token-a": {"default", "a"}, "token-b": {"prod", "b"}}

func selfSigned(t *testing.T) *ca.Authority { return catest.Authority(t) }

// serve runs the service over TLS on loopback (its certificate from the
// authority, for "ca.test") and returns a client connection to it that
// trusts the authority's roots.
func serve(t *testing.T, a *ca.Authority) (*ca.Service, *grpc.ClientConn) {
	svc, _, conn := catest.Serve(t, a, callers, "ca.test")
	return svc, conn
}

func keeper(conn grpc.ClientConnInterface, ns, sa, token string) *ca.Keeper {
	return &ca.Keeper{Identity: ca.Identity{TrustDomain: ca.DefaultTrustDomain, Namespace: ns, ServiceAccount: sa},
		Conn: conn, Token: func() (string, error) { return token, nil }, Log: quiet}
}

func TestWorkloadCertificate(t *testing.T) {
	a := selfSigned(t)
	svc, conn := serve(t, a)
	c, err := keeper(conn, "default", "a", "token-a").Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/default/sa/a" || len(c.Leaf.URIs) != 1 {
		t.Errorf("URI SANs %v", c.Leaf.URIs)
	}
	if len(c.Leaf.DNSNames) != 0 || c.Leaf.IsCA {
		t.Errorf("a workload certificate with DNS names %v or CA %v", c.Leaf.DNSNames, c.Leaf.IsCA)
	}
	if life := c.Leaf.NotAfter.Sub(time.Now()); life < 23*time.Hour || life > 24*time.Hour {
		t.Errorf("lifetime %s, want Istio's default 24h", life)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.RootPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a client certificate of the mesh: %v", err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.RootPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("not a server certificate of the mesh: %v", err)
	}
	if n := svc.Counts().Issued.Load(); n != 1 {
		t.Errorf("issued %d, want 1", n)
	}
	// The key is the keeper's: the two sides of a TLS handshake accept it.
	handshake(t, c, c)
}

// handshake runs mutual TLS between a client and a server holding these
// credentials, each verifying the other against its roots.
func handshake(t *testing.T, client, server *ca.Credentials) {
	t.Helper()
	cl, sv := net.Pipe()
	defer cl.Close()
	defer sv.Close()
	errs := make(chan error, 1)
	go func() {
		errs <- tls.Server(sv, &tls.Config{Certificates: []tls.Certificate{server.Certificate},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: server.Roots}).Handshake()
	}()
	// A workload certificate names a SPIFFE ID, not a host: the client
	// checks the chain and the ID itself.
	err := tls.Client(cl, &tls.Config{Certificates: []tls.Certificate{client.Certificate}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: client.Roots, Intermediates: inter}); err != nil {
				return err
			}
			if leaf.URIs[0].String() != server.Identity.String() {
				return fmt.Errorf("the server is %s", leaf.URIs[0])
			}
			return nil
		}}).Handshake()
	if err == nil {
		err = <-errs
	}
	if err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
}

func TestRefused(t *testing.T) {
	a := selfSigned(t)
	_, conn := serve(t, a)
	for _, c := range []struct {
		name      string
		ns, sa    string
		token     string
		ttl       time.Duration
		code      codes.Code
		mentioned string
	}{
		{"no token", "default", "a", "", 0, codes.Unauthenticated, "no bearer token"},
		{"unknown token", "default", "a", "forged", 0, codes.Unauthenticated, "unknown token"},
		{"another account's certificate", "prod", "b", "token-a", 0, codes.PermissionDenied, "the caller is spiffe://cluster.local/ns/default/sa/a"},
		{"same account, other namespace", "prod", "a", "token-a", 0, codes.PermissionDenied, "asks for spiffe://cluster.local/ns/prod/sa/a"},
		{"a TTL over the max", "default", "a", "token-a", 91 * 24 * time.Hour, codes.InvalidArgument, "greater than the max allowed TTL 2160h0m0s"},
	} {
		k := keeper(conn, c.ns, c.sa, c.token)
		k.TTL = c.ttl
		_, err := k.Fetch(context.Background())
		if status.Code(errors.Unwrap(err)) != c.code || !strings.Contains(err.Error(), c.mentioned) {
			t.Errorf("%s: %v, want %s mentioning %q", c.name, err, c.code, c.mentioned)
		}
	}
}

func TestSignRefusesRequests(t *testing.T) {
	a := selfSigned(t)
	id := ca.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "a"}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := func(tmpl *x509.CertificateRequest) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	good := csr(&x509.CertificateRequest{URIs: []*url.URL{id.URL()}})
	tampered := []byte(strings.Replace(string(good), string(good[100:104]), "AAAA", 1))
	for _, c := range []struct {
		name string
		csr  []byte
		ttl  time.Duration
		want string
	}{
		{"not PEM", []byte("hello"), 0, "not a PEM CERTIFICATE REQUEST"},
		{"a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0, "not a PEM CERTIFICATE REQUEST"},
		{"tampered", tampered, 0, "the CSR"},
		{"DNS names", csr(&x509.CertificateRequest{URIs: []*url.URL{id.URL()}, DNSNames: []string{"evil.example"}}), 0, "names only its SPIFFE ID"},
		{"negative TTL", good, -time.Second, "negative"},
	} {
		if _, err := a.Sign(c.csr, id, c.ttl); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := a.Sign(good, ca.Identity{Namespace: "default", ServiceAccount: "a"}, 0); err == nil {
		t.Error("signed for an identity with no trust domain")
	}
	// A request with no SAN gets the caller's identity.
	chain, err := a.Sign(csr(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, chain[0])
	if leaf.URIs[0].String() != id.String() || leaf.NotAfter.Sub(time.Now()) > time.Hour {
		t.Errorf("leaf %v until %s", leaf.URIs, leaf.NotAfter)
	}
}

func parse(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatalf("not PEM: %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// intermediate is a plugged-in CA's files: a root, and an intermediate
// it signed that signs workloads, expiring at until.
func intermediate(t *testing.T, until time.Time) ca.Bundle {
	t.Helper()
	root, err := ca.SelfSigned("corp.example", ca.SelfSignedRootTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rootCert := parse(t, string(root.Cert))
	rb, _ := pem.Decode(root.Key)
	rootKey, _ := x509.ParsePKCS8PrivateKey(rb.Bytes)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: until, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, rootCert, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// cert-chain.pem as Istio's guide makes it: the intermediate, then the root.
	return ca.Bundle{Cert: cert, Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		Chain: append(append([]byte{}, cert...), root.Cert...), Root: root.Cert}
}

func TestPluggedInCA(t *testing.T) {
	until := time.Now().Add(12 * time.Hour)
	b := intermediate(t, until)
	dir := t.TempDir()
	for name, data := range map[string][]byte{ca.CACertFile: b.Cert, ca.CAKeyFile: b.Key, ca.CertChainFile: b.Chain, ca.RootCertFile: b.Root} {
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
	}
	read, err := ca.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(read)
	if err != nil {
		t.Fatal(err)
	}
	_, conn := serve(t, a)
	c, err := keeper(conn, "prod", "b", "token-b").Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Chain) != 1 || c.Chain[0].Subject.CommonName != "intermediate" || len(c.RootCerts) != 1 {
		t.Errorf("chain %d (want the intermediate), roots %d", len(c.Chain), len(c.RootCerts))
	}
	if !c.Leaf.NotAfter.Equal(until.Truncate(time.Second)) {
		t.Errorf("a 24h certificate from an intermediate expiring in 12h ends %s, want %s (no later than its issuer)", c.Leaf.NotAfter, until)
	}
	handshake(t, c, c)
	// The root signed the intermediate: the chain file may be left out.
	os.Remove(filepath.Join(dir, ca.CertChainFile))
	if read, err = ca.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.New(read); err != nil {
		t.Errorf("an intermediate the root signed, with no chain file: %v", err)
	}
	if _, err := ca.ReadDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "ca-cert.pem") {
		t.Errorf("an empty folder: %v", err)
	}
}

func TestNewRefusesBundles(t *testing.T) {
	good := intermediate(t, time.Now().Add(time.Hour))
	other := intermediate(t, time.Now().Add(time.Hour))
	leafOnly := func() ca.Bundle {
		b := good
		a, _ := ca.New(good)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		chain, _ := a.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
			ca.Identity{TrustDomain: "t", Namespace: "n", ServiceAccount: "s"}, time.Hour)
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		b.Cert, b.Key = []byte(chain[0]), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		return b
	}()
	for _, c := range []struct {
		name string
		b    ca.Bundle
		want string
	}{
		{"another's key", ca.Bundle{Cert: good.Cert, Key: other.Key, Chain: good.Chain, Root: good.Root}, "ca-key.pem is not the key of ca-cert.pem"},
		{"another root", ca.Bundle{Cert: good.Cert, Key: good.Key, Chain: good.Chain, Root: other.Root}, "does not chain"},
		{"no root", ca.Bundle{Cert: good.Cert, Key: good.Key}, "root-cert.pem: no certificate"},
		{"key not PEM", ca.Bundle{Cert: good.Cert, Key: []byte("x"), Root: good.Root}, "ca-key.pem: not PEM"},
		{"two certificates", ca.Bundle{Cert: good.Chain, Key: good.Key, Root: good.Root}, "2 certificates, not one"},
		{"garbage in the chain", ca.Bundle{Cert: good.Cert, Key: good.Key, Chain: []byte("junk"), Root: good.Root}, "cert-chain.pem: not PEM"},
		{"a workload's certificate", leafOnly, "not a CA certificate"},
	} {
		if _, err := ca.New(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	id, err := ca.ParseIdentity("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
	if err != nil || id != (ca.Identity{"cluster.local", "default", "bookinfo-productpage"}) {
		t.Errorf("%+v %v", id, err)
	}
	for _, bad := range []string{"https://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe:///ns/a/sa/b",
		"spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/c", "spiffe://td/ns/a/sa/b?x=1"} {
		if _, err := ca.ParseIdentity(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRenewal: a certificate living two seconds is renewed before it
// expires, each time with a new key, and the one in force is always valid.
func TestRenewal(t *testing.T) {
	_, conn := serve(t, selfSigned(t))
	k := keeper(conn, "default", "a", "token-a")
	k.TTL = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case <-k.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no certificate after 10s")
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 4 && time.Now().Before(deadline) {
		c := k.Current()
		if now := time.Now(); now.After(c.Leaf.NotAfter) {
			t.Fatalf("the certificate in force expired at %s (now %s)", c.Leaf.NotAfter, now)
		}
		seen[string(c.Leaf.SubjectKeyId)+c.Leaf.SerialNumber.String()] = true
		time.Sleep(100 * time.Millisecond)
	}
	if len(seen) < 4 {
		t.Fatalf("%d certificates in 20s with a 2s lifetime, want 4", len(seen))
	}
}

// TestRootRotation: a plugged-in CA's root rotated in Istio's two steps,
// the files rewritten under FollowDir: first the trust bundle holds both
// roots while the old one still signs, then the new one signs. A
// workload renewed at each step trusts the others, both ways; one that
// never renewed does not know the new root.
func TestRootRotation(t *testing.T) {
	oldCA, newCA := intermediate(t, time.Now().Add(48*time.Hour)), intermediate(t, time.Now().Add(48*time.Hour))
	both := append(append([]byte{}, oldCA.Root...), newCA.Root...)
	dir := t.TempDir()
	write := func(b ca.Bundle, roots []byte) {
		for name, data := range map[string][]byte{ca.CACertFile: b.Cert, ca.CAKeyFile: b.Key, ca.CertChainFile: b.Chain, ca.RootCertFile: roots} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(oldCA, oldCA.Root)
	b, err := ca.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(b)
	if err != nil {
		t.Fatal(err)
	}
	svc, conn := serve(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ca.FollowDir(ctx, dir, svc, ca.DefaultWorkloadTTL, ca.MaxWorkloadTTL, 20*time.Millisecond, quiet)
	fetch := func(sa, token string) *ca.Credentials {
		c, err := keeper(conn, "default", sa, token).Fetch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitRoots := func(n int) {
		for deadline := time.Now().Add(5 * time.Second); strings.Count(svc.Authority().Roots(), "BEGIN CERTIFICATE") != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the CA did not take the new files (its roots: %d, want %d)", strings.Count(svc.Authority().Roots(), "BEGIN CERTIFICATE"), n)
			}
		}
	}
	never := fetch("a", "token-a")
	// Step 1: both roots trusted, the old one signing.
	time.Sleep(20 * time.Millisecond) // a modification time of its own
	write(oldCA, both)
	waitRoots(2)
	bundled := fetch("a", "token-a")
	if len(bundled.RootCerts) != 2 {
		t.Fatalf("after step 1 a workload trusts %d roots, want 2", len(bundled.RootCerts))
	}
	// Step 2: the new root signs.
	time.Sleep(20 * time.Millisecond)
	write(newCA, both)
	newRoot := parse(t, string(newCA.Root))
	var rotated *ca.Credentials
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rotated = fetch("a", "token-a")
		if len(rotated.Chain) > 0 && rotated.Chain[0].CheckSignatureFrom(newRoot) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no certificate from the new root after step 2")
		}
	}
	handshake(t, bundled, rotated)
	handshake(t, rotated, bundled)
	if chains, err := rotated.Leaf.Verify(x509.VerifyOptions{Roots: never.Roots, Intermediates: poolOf(rotated.Chain)}); err == nil {
		t.Errorf("a workload that never renewed trusts the new root: %d roots; chain %v", len(never.RootCerts), chains)
	}
}

func poolOf(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}
