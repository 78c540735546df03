package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// certFlags are the sidecar's workload-certificate settings, with Istio's
// agent's paths for the token and the trust bundle.
type certFlags struct {
	address     string
	rootCert    string
	tokenFile   string
	trustDomain string
	ttl         time.Duration
}

func (c *certFlags) add(f *pflag.FlagSet) {
	f.StringVar(&c.address, "ca-address", "", "the mesh's CA (host:port, TLS gRPC, shunt-control's or istiod's 15012): the sidecar gets its workload certificate there and renews it half way through its life [$CA_ADDR]")
	f.StringVar(&c.rootCert, "ca-root-cert", sidecar.RootCertDir+"/"+sidecar.RootCertKey, "the trust bundle the CA's TLS certificate is checked against (the namespace's istio-ca-root-cert ConfigMap)")
	f.StringVar(&c.tokenFile, "token-file", sidecar.TokenFile, "the pod's service-account token for the CA (projected, audience istio-ca), read anew for each request")
	f.StringVar(&c.trustDomain, "trust-domain", ca.DefaultTrustDomain, "the trust domain of the sidecar's identity [$TRUST_DOMAIN]")
	f.DurationVar(&c.ttl, "workload-cert-ttl", 0, "the certificate lifetime to ask (0: the CA's default, 24h in Istio) [$SECRET_TTL]")
}

// certRun is a checked workload-certificate configuration.
type certRun struct {
	address, serverName string
	roots               *x509.CertPool
	keeper              *ca.Keeper
}

// check reads what getting a certificate needs: the CA's trust bundle,
// and the identity from the pod's environment; nil when no CA is given.
func (c *certFlags) check(fs *pflag.FlagSet, getenv func(string) (string, bool)) (*certRun, error) {
	for flag, env := range map[string]string{"ca-address": "CA_ADDR", "trust-domain": "TRUST_DOMAIN", "workload-cert-ttl": "SECRET_TTL"} {
		if v, ok := getenv(env); ok && v != "" && !fs.Changed(flag) {
			if err := fs.Set(flag, v); err != nil {
				return nil, fmt.Errorf("$%s: %v", env, err)
			}
		}
	}
	if c.address == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(c.address)
	if err != nil {
		return nil, fmt.Errorf("--ca-address %s: not host:port", clip.Quote(c.address))
	}
	if c.ttl < 0 {
		return nil, fmt.Errorf("--workload-cert-ttl %s: negative", c.ttl)
	}
	env := func(k string) string { v, _ := getenv(k); return v }
	id := ca.Identity{TrustDomain: c.trustDomain, Namespace: env(sidecar.PodNamespaceEnv), ServiceAccount: env(sidecar.ServiceAccountEnv)}
	if id.Namespace == "" || id.ServiceAccount == "" {
		return nil, fmt.Errorf("--ca-address: the sidecar's identity: $%s or $%s is unset", sidecar.PodNamespaceEnv, sidecar.ServiceAccountEnv)
	}
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("--ca-address: %v", err)
	}
	pem, err := os.ReadFile(c.rootCert)
	if err != nil {
		return nil, fmt.Errorf("--ca-root-cert: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-root-cert %s: no PEM certificate", c.rootCert)
	}
	return &certRun{address: c.address, serverName: host, roots: roots,
		keeper: &ca.Keeper{Identity: id, Token: ca.TokenFile(c.tokenFile), TTL: c.ttl}}, nil
}

// start keeps the certificate until ctx ends. The CA's TLS certificate
// is checked against --ca-root-cert's roots and those the CA last sent:
// a root rotated after the sidecar started is known to it.
func (r *certRun) start(ctx context.Context, log *slog.Logger) (*ca.Keeper, error) {
	conn, err := grpc.NewClient(r.address, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		ServerName: r.serverName, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, // checked below, against the roots as they are now
		VerifyConnection:   func(cs tls.ConnectionState) error { return r.verifyCA(cs) },
	})))
	if err != nil {
		return nil, fmt.Errorf("--ca-address: %w", err)
	}
	r.keeper.Conn, r.keeper.Log = conn, log
	go func() {
		r.keeper.Run(ctx)
		conn.Close()
	}()
	return r.keeper, nil
}

// verifyCA checks the CA's TLS certificate: for the name dialled, and
// chaining to the trust bundle of --ca-root-cert or the CA's own last
// one.
func (r *certRun) verifyCA(cs tls.ConnectionState) error {
	roots := r.roots.Clone()
	if c := r.keeper.Current(); c != nil {
		for _, rc := range c.RootCerts {
			roots.AddCert(rc)
		}
	}
	return ca.VerifyPeer(cs.PeerCertificates, roots, r.serverName)
}
