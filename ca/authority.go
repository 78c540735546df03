package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The files of a plugged-in CA, as Istio's cacerts Secret names them.
const (
	CACertFile    = "ca-cert.pem"    // the signing certificate
	CAKeyFile     = "ca-key.pem"     // its key
	CertChainFile = "cert-chain.pem" // intermediates up to the root (for a root that signs, may be empty)
	RootCertFile  = "root-cert.pem"  // the roots workloads trust
)

// Istio's defaults: DEFAULT_WORKLOAD_CERT_TTL, MAX_WORKLOAD_CERT_TTL and
// the self-signed root's citadel-self-signed-ca-cert-ttl.
const (
	DefaultWorkloadTTL = 24 * time.Hour
	MaxWorkloadTTL     = 90 * 24 * time.Hour
	SelfSignedRootTTL  = 10 * 365 * 24 * time.Hour
)

// backdate is how far before now a certificate starts, for clocks a
// little behind the CA's.
const backdate = time.Minute

// Bundle is a CA's key and certificates, PEM, as the four files say.
type Bundle struct {
	Cert, Key, Chain, Root []byte
}

// ReadDir reads a plugged-in CA's files from dir (Istio's /etc/cacerts);
// the chain file may be absent when the signing certificate is the root.
func ReadDir(dir string) (Bundle, error) {
	var b Bundle
	for _, f := range []struct {
		name     string
		to       *[]byte
		optional bool
	}{{CACertFile, &b.Cert, false}, {CAKeyFile, &b.Key, false}, {CertChainFile, &b.Chain, true}, {RootCertFile, &b.Root, false}} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil && !(f.optional && errors.Is(err, os.ErrNotExist)) {
			return Bundle{}, fmt.Errorf("CA files: %v", err)
		}
		*f.to = data
	}
	return b, nil
}

// SelfSigned is a new root CA for trustDomain, valid for ttl from now:
// an ECDSA P-256 key (Istio's self-signed root is RSA 2048; P-256 signs
// faster and makes smaller chains), its certificate both the signer and
// the root.
func SelfSigned(trustDomain string, ttl time.Duration, now time.Time) (Bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{trustDomain}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return Bundle{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Bundle{}, err
	}
	cert := pemBlock("CERTIFICATE", der)
	return Bundle{Cert: cert, Key: pemBlock("PRIVATE KEY", keyDER), Root: cert}, nil
}

// ErrNotTheCaller is a CSR naming an identity the caller did not prove.
var ErrNotTheCaller = errors.New("the CSR names an identity that is not the caller's")

// Authority signs workload certificates.
type Authority struct {
	key    crypto.Signer
	cert   *x509.Certificate
	path   []string // the signing certificate and intermediates, PEM, sent after a leaf
	roots  string   // the trust bundle, PEM
	pool   *x509.CertPool
	expiry time.Time

	DefaultTTL, MaxTTL time.Duration
	Now                func() time.Time
}

// New is an authority signing with b's key and certificate, once they
// are shown to fit: the key is the certificate's, the certificate may
// sign certificates, is valid now, and chains to one of the roots
// through the chain's certificates.
func New(b Bundle) (*Authority, error) {
	cert, err := onlyCert(b.Cert, CACertFile)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(b.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", CAKeyFile, err)
	}
	if !publicEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of %s", CAKeyFile, CACertFile)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s (%s) is not a CA certificate (basic constraints CA and key usage certSign)", CACertFile, cert.Subject)
	}
	roots, err := certs(b.Root, RootCertFile)
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%s: no certificate", RootCertFile)
	}
	chain, err := certs(b.Chain, CertChainFile)
	if err != nil {
		return nil, err
	}
	a := &Authority{key: key, cert: cert, pool: x509.NewCertPool(), DefaultTTL: DefaultWorkloadTTL, MaxTTL: MaxWorkloadTTL, Now: time.Now}
	for _, r := range roots {
		a.pool.AddCert(r)
	}
	a.roots = string(pemCerts(roots))
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	paths, err := cert.Verify(x509.VerifyOptions{Roots: a.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%s does not chain to %s: %v", CACertFile, RootCertFile, err)
	}
	path := paths[0]
	a.expiry = cert.NotAfter
	for _, c := range path[:len(path)-1] {
		a.path = append(a.path, string(pemBlock("CERTIFICATE", c.Raw)))
		a.expiry = minTime(a.expiry, c.NotAfter)
	}
	a.expiry = minTime(a.expiry, path[len(path)-1].NotAfter)
	return a, nil
}

// Roots is the trust bundle workloads verify each other with, PEM.
func (a *Authority) Roots() string { return a.roots }

// RootPool is the trust bundle as a pool.
func (a *Authority) RootPool() *x509.CertPool { return a.pool }

// Expiry is when the signing certificate or one above it expires: no
// certificate it signs outlives it.
func (a *Authority) Expiry() time.Time { return a.expiry }

// Sign signs a workload's certificate request for id, valid for ttl (0:
// the default), and returns the chain as Istio's CA answers it: the
// certificate, the certificates up to the root, and the trust bundle,
// each PEM. The request must be signed by its key and name no identity
// but id; the certificate names id, for client and server use.
func (a *Authority) Sign(csrPEM []byte, id Identity, ttl time.Duration) ([]string, error) {
	if err := id.Check(); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the CSR's signature: %v", err)
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			return nil, fmt.Errorf("%w: it asks for %s; the caller is %s", ErrNotTheCaller, u, id)
		}
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, errors.New("the CSR asks for DNS names, emails or IP addresses; a workload certificate names only its SPIFFE ID")
	}
	switch {
	case ttl == 0:
		ttl = a.DefaultTTL
	case ttl < 0:
		return nil, fmt.Errorf("requested TTL %s is negative", ttl)
	case ttl > a.MaxTTL:
		return nil, fmt.Errorf("requested TTL %s is greater than the max allowed TTL %s", ttl, a.MaxTTL)
	}
	leaf, err := a.issue(&x509.Certificate{URIs: []*url.URL{id.URL()}}, csr.PublicKey, ttl)
	if err != nil {
		return nil, err
	}
	return slices.Concat([]string{string(leaf)}, a.path, []string{a.roots}), nil
}

// ServingCertificate is a certificate for the CA's own TLS port, for
// hosts (names, or IP addresses), with a key of its own.
func (a *Authority) ServingCertificate(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf, err := a.issue(tmpl, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(slices.Concat(leaf, []byte(strings.Join(a.path, ""))), pemBlock("PRIVATE KEY", keyDER))
}

// issue signs a leaf certificate for pub naming what tmpl names, valid
// from now for ttl (no longer than the authority), for client and
// server use; PEM.
func (a *Authority) issue(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) ([]byte, error) {
	now := a.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), minTime(now.Add(ttl), a.expiry)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("signing: %v", err)
	}
	return pemBlock("CERTIFICATE", der), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemCerts(cs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range cs {
		b.Write(pemBlock("CERTIFICATE", c.Raw))
	}
	return b.Bytes()
}

// certs reads every CERTIFICATE block of a PEM file.
func certs(data []byte, name string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) > 0 {
				return nil, fmt.Errorf("%s: not PEM", name)
			}
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: a %s block where certificates were expected", name, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		out = append(out, c)
	}
}

func onlyCert(data []byte, name string) (*x509.Certificate, error) {
	cs, err := certs(data, name)
	if err != nil {
		return nil, err
	}
	if len(cs) != 1 {
		return nil, fmt.Errorf("%s: %d certificates, not one", name, len(cs))
	}
	return cs[0], nil
}

// parseKey reads a PEM private key: PKCS#8, SEC 1 (EC) or PKCS#1 (RSA).
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a %s block, not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
