package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Credentials are a workload's certificate with its key, and the roots it
// trusts.
type Credentials struct {
	Identity    Identity
	Certificate tls.Certificate // the leaf, then the intermediates
	Leaf        *x509.Certificate
	Chain       []*x509.Certificate // the intermediates
	RootCerts   []*x509.Certificate
	Roots       *x509.CertPool
	Received    time.Time
}

// Keeper gets a workload's certificate from the CA and renews it half
// way through its life (Istio's SECRET_GRACE_PERIOD_RATIO, 0.5), each time
// with a new key made here: the key never leaves the process.
type Keeper struct {
	Identity Identity
	Conn     grpc.ClientConnInterface
	Token    func() (string, error) // the service-account token, read anew for each request (projected tokens rotate)
	TTL      time.Duration          // asked of the CA; 0 takes its default
	Log      *slog.Logger
	Now      func() time.Time

	current   atomic.Pointer[Credentials]
	readyOnce sync.Once
	ready     chan struct{}
	renewed   atomic.Int64
}

// TokenFile reads a token from path each time it is called.
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("the service-account token: %v", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("the service-account token: %s is empty", path)
	}
}

// Current is the certificate in force, nil before the first one came.
func (k *Keeper) Current() *Credentials { return k.current.Load() }

// Renewals counts the certificates the keeper got.
func (k *Keeper) Renewals() int64 { return k.renewed.Load() }

// Ready is closed once the first certificate came.
func (k *Keeper) Ready() <-chan struct{} { return k.readyChan() }

func (k *Keeper) readyChan() chan struct{} {
	k.readyOnce.Do(func() { k.ready = make(chan struct{}) })
	return k.ready
}

// Run keeps a certificate until ctx ends: the first at once, then each
// renewed half way through its life; a failure is retried with backoff
// (1 s doubling to 30 s), the certificate in force kept meanwhile.
func (k *Keeper) Run(ctx context.Context) {
	ready := k.readyChan()
	backoff := time.Second
	for {
		c, err := k.Fetch(ctx)
		wait := backoff
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.Log.Warn("workload certificate not renewed; retrying", "identity", k.Identity.String(), "in", backoff, "err", err)
			backoff = min(2*backoff, 30*time.Second)
		} else {
			first := k.current.Swap(c) == nil
			k.renewed.Add(1)
			if first {
				close(ready)
			}
			k.Log.Info("workload certificate", "identity", k.Identity.String(), "serial", c.Leaf.SerialNumber.Text(16),
				"expires", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
			backoff = time.Second
			wait = c.Leaf.NotAfter.Sub(c.Received) / 2
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Fetch gets a new certificate: a new key, a CSR for the identity, and
// the CA's chain checked (it names the identity, is for the key, and
// chains to the roots the CA sent).
func (k *Keeper) Fetch(ctx context.Context) (*Credentials, error) {
	if err := k.Identity.Check(); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{k.Identity.URL()}}, key)
	if err != nil {
		return nil, err
	}
	token, err := k.Token()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), 30*time.Second)
	defer cancel()
	_, d := wireTypes()
	resp := dynamicpb.NewMessage(d)
	ttl := int64(k.TTL / time.Second)
	if err := k.Conn.Invoke(ctx, createCertificate, newRequest(string(pemBlock("CERTIFICATE REQUEST", csrDER)), ttl), resp); err != nil {
		return nil, fmt.Errorf("the CA: %w", err)
	}
	return k.credentials(readResponse(resp), key)
}

// credentials reads and checks the CA's answer.
func (k *Keeper) credentials(chain []string, key *ecdsa.PrivateKey) (*Credentials, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("the CA answered %d PEM strings; a certificate and the roots were expected", len(chain))
	}
	var all []*x509.Certificate
	for i, p := range chain[:len(chain)-1] {
		cs, err := certs([]byte(p), fmt.Sprintf("the CA's cert_chain[%d]", i))
		if err != nil {
			return nil, err
		}
		all = append(all, cs...)
	}
	roots, err := certs([]byte(chain[len(chain)-1]), "the CA's roots")
	if err != nil {
		return nil, err
	}
	if len(all) == 0 || len(roots) == 0 {
		return nil, errors.New("the CA answered no certificate or no roots")
	}
	c := &Credentials{Identity: k.Identity, Leaf: all[0], RootCerts: roots, Roots: x509.NewCertPool(), Received: k.now()}
	// A CA that sends the chain up to and with the root (Istio's does,
	// from a plugged-in cert-chain.pem) sends the root twice: it is not
	// an intermediate.
	for _, x := range all[1:] {
		if !containsCert(roots, x) {
			c.Chain = append(c.Chain, x)
		}
	}
	for _, r := range roots {
		c.Roots.AddCert(r)
	}
	if len(c.Leaf.URIs) != 1 || c.Leaf.URIs[0].String() != k.Identity.String() {
		return nil, fmt.Errorf("the CA's certificate names %v, not %s", c.Leaf.URIs, k.Identity)
	}
	if !publicEqual(key.Public(), c.Leaf.PublicKey) {
		return nil, errors.New("the CA's certificate is not for the key of the request")
	}
	if err := verifyLeaf(c.Leaf, c.Chain, c.Roots, c.Received); err != nil {
		return nil, fmt.Errorf("the CA's certificate: %v", err)
	}
	c.Certificate = tls.Certificate{PrivateKey: key, Leaf: c.Leaf, Certificate: [][]byte{c.Leaf.Raw}}
	for _, x := range c.Chain {
		c.Certificate.Certificate = append(c.Certificate.Certificate, x.Raw)
	}
	return c, nil
}

func (k *Keeper) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// verifyLeaf checks that leaf chains to roots through inter at now, for
// client and server use.
func verifyLeaf(leaf *x509.Certificate, inter []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	pool := x509.NewCertPool()
	for _, c := range inter {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	return err
}

func containsCert(cs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range cs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// Credentials signs a certificate for id with a new key, as a keeper
// would get it from the CA: for a workload the authority runs beside
// (a gateway of the control plane's, a test's peers).
func (a *Authority) Credentials(id Identity, ttl time.Duration) (*Credentials, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, err
	}
	chain, err := a.Sign(pemBlock("CERTIFICATE REQUEST", csr), id, ttl)
	if err != nil {
		return nil, err
	}
	return (&Keeper{Identity: id, Now: a.Now}).credentials(chain, key)
}

// VerifyPeer checks a TLS peer's certificates (the leaf first, then what
// it sent to chain it) against roots; with dnsName, the leaf must be for
// that name or address.
func VerifyPeer(certs []*x509.Certificate, roots *x509.CertPool, dnsName string) error {
	if len(certs) == 0 {
		return errors.New("the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: dnsName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
