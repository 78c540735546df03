package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/sidecar"
)

// caFlags are the CA's flags, Istio's environment variables' meaning.
type caFlags struct {
	addr  string
	opt   control.CAOptions
	hosts []string
}

func (c *caFlags) register(f *pflag.FlagSet) {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "shunt-system"
	}
	f.StringVar(&c.addr, "ca-addr", ":15012", "TLS gRPC address of the CA (Istio's IstioCertificateService) and ADS, istiod's 15012 (\"\" for no CA)")
	f.StringVar(&c.opt.Namespace, "namespace", ns, "the control plane's namespace, where the self-signed root's Secret istio-ca-secret is (default $POD_NAMESPACE)")
	f.StringVar(&c.opt.TrustDomain, "trust-domain", ca.DefaultTrustDomain, "the trust domain of the identities the CA signs (meshConfig trustDomain)")
	f.StringVar(&c.opt.PluggedDir, "cacerts", "/etc/cacerts", "a plugged-in CA's ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem, used when ca-key.pem is there (Istio's cacerts)")
	f.StringSliceVar(&c.opt.Audiences, "token-audiences", []string{sidecar.TokenAudience}, "a sidecar's token must be for one of these (TOKEN_AUDIENCES)")
	f.DurationVar(&c.opt.DefaultTTL, "workload-cert-ttl", ca.DefaultWorkloadTTL, "a workload certificate's lifetime when the sidecar asks none (DEFAULT_WORKLOAD_CERT_TTL)")
	f.DurationVar(&c.opt.MaxTTL, "max-workload-cert-ttl", ca.MaxWorkloadTTL, "the longest lifetime a sidecar may ask (MAX_WORKLOAD_CERT_TTL)")
	f.StringSliceVar(&c.hosts, "ca-hosts", nil, "the names (or IP addresses) the CA's TLS certificate is for (default shunt-control.<namespace>.svc and istiod.<namespace>.svc)")
}

func (c *caFlags) check(fromFile bool, changed func(string) bool) error {
	switch {
	case c.addr != "" && fromFile && changed("ca-addr"):
		return fmt.Errorf("--ca-addr with --from-file: the CA needs a cluster (its callers are known by TokenReview)")
	case c.opt.DefaultTTL <= 0 || c.opt.MaxTTL < c.opt.DefaultTTL:
		return fmt.Errorf("--workload-cert-ttl %s, --max-workload-cert-ttl %s: want 0 < ttl <= max", c.opt.DefaultTTL, c.opt.MaxTTL)
	case len(c.opt.Audiences) == 0:
		return fmt.Errorf("--token-audiences: none")
	}
	if err := (ca.Identity{TrustDomain: c.opt.TrustDomain, Namespace: "n", ServiceAccount: "s"}).Check(); err != nil {
		return fmt.Errorf("--trust-domain %q: %v", c.opt.TrustDomain, err)
	}
	if fromFile {
		c.addr = ""
	}
	if len(c.hosts) == 0 {
		c.hosts = []string{"shunt-control." + c.opt.Namespace + ".svc", "istiod." + c.opt.Namespace + ".svc"}
	}
	return nil
}

// serveTLS serves the CA and ADS over TLS on ln, with a certificate of
// the CA's own for the flags' names, renewed half way through its day.
func serveTLS(ln net.Listener, svc *ca.Service, ads interface{ Register(*grpc.Server) }, hosts []string, log *slog.Logger) (*grpc.Server, error) {
	var mu sync.Mutex
	var cert tls.Certificate
	current := func() (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if cert.Leaf != nil && time.Until(cert.Leaf.NotAfter) > 12*time.Hour {
			return &cert, nil
		}
		c, err := svc.Authority().ServingCertificate(hosts, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		cert = c
		return &cert, nil
	}
	if _, err := current(); err != nil {
		return nil, fmt.Errorf("the CA's TLS certificate: %v", err)
	}
	g := control.NewGRPCServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current() },
	})))
	svc.Register(g)
	ads.Register(g)
	log.Info("CA serving", "addr", ln.Addr().String(), "hosts", hosts)
	return g, nil
}
