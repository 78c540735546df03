package webhook

import (
	"bytes"
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
	"log/slog"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// Certificate serves the key pair in two files and picks up new contents
// when they change (a Secret volume's update, cert-manager's renewal),
// without a restart. Files that change into something unreadable are
// logged and the previous pair is kept.
type Certificate struct {
	CertFile, KeyFile string
	Log               *slog.Logger
	Metrics           *Metrics

	current           atomic.Pointer[tls.Certificate]
	lastCert, lastKey []byte
}

// Load reads the files; it fails when they hold no usable pair.
func (c *Certificate) Load() error {
	changed, err := c.reload()
	if err != nil {
		return err
	}
	if !changed && c.current.Load() == nil {
		return errors.New("no certificate loaded")
	}
	return nil
}

// reload reads the files and swaps in their pair if they changed.
func (c *Certificate) reload() (bool, error) {
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(c.KeyFile)
	if err != nil {
		return false, err
	}
	if bytes.Equal(certPEM, c.lastCert) && bytes.Equal(keyPEM, c.lastKey) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("%s and %s: %w", c.CertFile, c.KeyFile, err)
	}
	c.lastCert, c.lastKey = certPEM, keyPEM
	c.current.Store(&pair)
	if c.Metrics != nil {
		c.Metrics.certLoaded(pair.Leaf.NotAfter)
	}
	c.Log.Info("serving certificate loaded", "file", c.CertFile, "subject", pair.Leaf.Subject.String(),
		"dns", pair.Leaf.DNSNames, "not_after", pair.Leaf.NotAfter.Format(time.RFC3339))
	return true, nil
}

// Watch checks the files every interval until ctx ends.
func (c *Certificate) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.reload(); err != nil {
				// Renewals write the two files one after the other; a
				// mismatched pair in between is normal and retried.
				c.Log.Warn("certificate files changed but cannot be loaded; keeping the previous pair", "error", err)
				if c.Metrics != nil {
					c.Metrics.reloadFailure.Inc()
				}
			}
		}
	}
}

// GetCertificate is for tls.Config.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.current.Load(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("no serving certificate")
}

// Bundle is a CA and a serving certificate it signed, in PEM.
type Bundle struct {
	CA, Cert, Key []byte
}

// SelfSigned makes a CA and a serving certificate for the given DNS names
// and IP addresses, valid for validFor. The CA is what the
// MutatingWebhookConfiguration's caBundle must hold.
func SelfSigned(hosts []string, validFor time.Duration) (Bundle, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "shunt webhook CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Bundle{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Bundle{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return Bundle{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Bundle{}, err
	}
	return Bundle{
		CA:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
