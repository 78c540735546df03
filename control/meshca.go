package control

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/sidecar"
)

// Istio's names: the Secret of the self-signed root (in the control
// plane's namespace), the ConfigMap of the trust bundle in every
// namespace, and the audience of the tokens sidecars prove themselves by.
const (
	CASecretName = "istio-ca-secret"
	CASecretType = "istio.io/ca-root"
)

// CAOptions shape the mesh's CA.
type CAOptions struct {
	Namespace   string   // the control plane's: where the self-signed root's Secret is
	TrustDomain string   // of the identities it signs
	PluggedDir  string   // a plugged-in CA's files (Istio's /etc/cacerts), used when its ca-key.pem is there
	Audiences   []string // a token must be for one of these
	DefaultTTL  time.Duration
	MaxTTL      time.Duration
}

// StartCA is the mesh's CA in a cluster: it signs with a plugged-in CA
// when its files are there, else with a self-signed root kept in the
// Secret istio-ca-secret (made on first start; a replica that loses the
// race reads the winner's), knows callers by TokenReview, and keeps the
// trust bundle in the ConfigMap istio-ca-root-cert of every namespace
// until ctx ends.
func StartCA(ctx context.Context, cfg *rest.Config, srv *Server, opt CAOptions, log *slog.Logger) (*ca.Service, error) {
	core, err := restClient(cfg, corev1.SchemeGroupVersion, corev1.AddToScheme)
	if err != nil {
		return nil, err
	}
	authn, err := restClient(cfg, authnv1.SchemeGroupVersion, authnv1.AddToScheme)
	if err != nil {
		return nil, err
	}
	var bundle ca.Bundle
	source := "plugged-in (" + opt.PluggedDir + ")"
	_, statErr := os.Stat(filepath.Join(opt.PluggedDir, ca.CAKeyFile))
	if opt.PluggedDir != "" && statErr == nil {
		bundle, err = ca.ReadDir(opt.PluggedDir)
	} else {
		source = "self-signed (Secret " + opt.Namespace + "/" + CASecretName + ")"
		bundle, err = rootSecret(ctx, core, opt.Namespace, opt.TrustDomain)
	}
	if err != nil {
		return nil, err
	}
	authority, err := ca.New(bundle)
	if err != nil {
		return nil, fmt.Errorf("the CA (%s): %v", source, err)
	}
	authority.DefaultTTL, authority.MaxTTL = opt.DefaultTTL, opt.MaxTTL
	log.Info("CA signing", "root", source, "trust domain", opt.TrustDomain, "expires", authority.Expiry().UTC().Format(time.RFC3339))
	svc := ca.NewService(authority, opt.TrustDomain, tokenReviewer{authn, opt.Audiences}, log)
	if statErr == nil && opt.PluggedDir != "" {
		go ca.FollowDir(ctx, opt.PluggedDir, svc, opt.DefaultTTL, opt.MaxTTL, 10*time.Second, log)
	}
	go publishRoots(ctx, core, srv.Namespaces, func() string { return svc.Authority().Roots() }, log)
	return svc, nil
}

// CAMetrics are the CA's counters by Istio's names (istiod's citadel_server_*).
func CAMetrics(svc *ca.Service) []prometheus.Collector {
	c := svc.Counts()
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		counter("citadel_server_csr_count", "Certificate signing requests the CA received.", &c.CSRs),
		counter("citadel_server_success_cert_issuance_count", "Certificates the CA issued.", &c.Issued),
		counter("citadel_server_authentication_failure_count", "Requests whose caller the CA could not authenticate.", &c.AuthFailures),
		counter("citadel_server_csr_sign_error_count", "Requests the CA refused to sign (a bad CSR, another identity, a TTL over the max).", &c.CSRErrors),
	}
}

// rootSecret reads the self-signed root from its Secret, making it first
// if there is none.
func rootSecret(ctx context.Context, core rest.Interface, ns, trustDomain string) (ca.Bundle, error) {
	for range 3 {
		var s corev1.Secret
		err := core.Get().Namespace(ns).Resource("secrets").Name(CASecretName).Do(ctx).Into(&s)
		if err == nil {
			return ca.Bundle{Cert: s.Data[ca.CACertFile], Key: s.Data[ca.CAKeyFile], Chain: s.Data[ca.CertChainFile], Root: rootOf(s.Data)}, nil
		}
		if !apierrors.IsNotFound(err) {
			return ca.Bundle{}, fmt.Errorf("the CA's Secret %s/%s: %v", ns, CASecretName, err)
		}
		b, err := ca.SelfSigned(trustDomain, ca.SelfSignedRootTTL, time.Now())
		if err != nil {
			return ca.Bundle{}, err
		}
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: ns}, Type: CASecretType,
			Data: map[string][]byte{ca.CACertFile: b.Cert, ca.CAKeyFile: b.Key, ca.CertChainFile: nil, ca.RootCertFile: b.Root}}
		err = core.Post().Namespace(ns).Resource("secrets").Body(&s).Do(ctx).Error()
		if err == nil {
			return b, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return ca.Bundle{}, fmt.Errorf("making the CA's Secret %s/%s: %v", ns, CASecretName, err)
		}
	}
	return ca.Bundle{}, fmt.Errorf("the CA's Secret %s/%s: made and gone three times", ns, CASecretName)
}

// rootOf is a Secret's roots: root-cert.pem, or for Istio's own
// self-signed Secret (which leaves it empty) the signing certificate.
func rootOf(data map[string][]byte) []byte {
	if len(data[ca.RootCertFile]) > 0 {
		return data[ca.RootCertFile]
	}
	return data[ca.CACertFile]
}

// tokenReviewer knows a caller by its service-account token: the API
// server says whose it is, and that it is for one of the audiences.
type tokenReviewer struct {
	authn     rest.Interface
	audiences []string
}

func (r tokenReviewer) Authenticate(ctx context.Context, token string) (string, string, error) {
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: r.audiences}}
	var out authnv1.TokenReview
	if err := r.authn.Post().Resource("tokenreviews").Body(review).Do(ctx).Into(&out); err != nil {
		return "", "", fmt.Errorf("TokenReview: %v", err)
	}
	st := out.Status
	switch {
	case !st.Authenticated:
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return "", "", fmt.Errorf("the token: %s", why)
	case !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(r.audiences, a) }):
		return "", "", fmt.Errorf("the token is for %v, not %v", st.Audiences, r.audiences)
	}
	rest, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return "", "", fmt.Errorf("the token is %q's, not a service account's", st.User.Username)
	}
	return ns, sa, nil
}

// publishRoots keeps the trust bundle in every namespace's
// istio-ca-root-cert ConfigMap, as Istio's namespace controller does:
// new namespaces at once (looked for every 5 seconds), every namespace
// again every 10 minutes (a ConfigMap deleted or edited comes back), and
// at once when the bundle changes (a root rotated).
func publishRoots(ctx context.Context, core rest.Interface, namespaces func() []string, bundle func() string, log *slog.Logger) {
	done := map[string]bool{}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	full := time.Now()
	published := ""
	for {
		roots := bundle()
		if roots != published {
			clear(done)
			published = roots
		}
		if time.Since(full) > 10*time.Minute {
			clear(done)
			full = time.Now()
		}
		for _, ns := range namespaces() {
			if done[ns] {
				continue
			}
			if err := putRoots(ctx, core, ns, roots); err != nil {
				// A namespace being deleted refuses new objects: not worth a word.
				if !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
					log.Warn("trust bundle not published", "namespace", ns, "err", err)
				}
				continue
			}
			done[ns] = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// putRoots makes or corrects one namespace's ConfigMap.
func putRoots(ctx context.Context, core rest.Interface, ns, roots string) error {
	var cm corev1.ConfigMap
	err := core.Get().Namespace(ns).Resource("configmaps").Name(sidecar.RootConfigMap).Do(ctx).Into(&cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: sidecar.RootConfigMap, Namespace: ns,
			Labels: map[string]string{"istio.io/config": "true"}}, Data: map[string]string{sidecar.RootCertKey: roots}}
		return core.Post().Namespace(ns).Resource("configmaps").Body(&cm).Do(ctx).Error()
	case err != nil:
		return err
	case cm.Data[sidecar.RootCertKey] == roots:
		return nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[sidecar.RootCertKey] = roots
	return core.Put().Namespace(ns).Resource("configmaps").Name(sidecar.RootConfigMap).Body(&cm).Do(ctx).Error()
}
