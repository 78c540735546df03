package control

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/shunt-dev/shunt/internal/envoyres"
)

// ClientTLS is a traffic policy's tls: how the proxy speaks to the
// host's endpoints — plaintext (DISABLE), TLS it originates (SIMPLE,
// MUTUAL with a client certificate) or the mesh's mutual TLS
// (ISTIO_MUTUAL). Unset, auto mTLS decides.
type ClientTLS struct {
	Mode string
	// SNI sent; unset, the service's host name.
	SNI string
	// CACertificates is the file of the roots a server is checked
	// against (unset: the system's bundle); ClientCertificate and
	// PrivateKey the files of MUTUAL's client certificate.
	CACertificates, ClientCertificate, PrivateKey string
	// SubjectAltNames the server's certificate must name one of (unset:
	// the SNI for SIMPLE and MUTUAL, the service's identities for
	// ISTIO_MUTUAL).
	SubjectAltNames    []string
	InsecureSkipVerify bool
}

// systemRoots is the system's trust bundle, on the proxy's host, that a
// server outside the mesh is checked against when a DestinationRule
// names no caCertificates (Istio's VERIFY_CERTIFICATE_AT_CLIENT).
const systemRoots = "/etc/ssl/certs/ca-certificates.crt"

var clientTLSSchema = schema{"mode": nil, "sni": nil, "caCertificates": nil, "clientCertificate": nil, "privateKey": nil,
	"subjectAltNames": nil, "insecureSkipVerify": nil}

type jsonClientTLS struct {
	Mode, SNI                                     string
	CACertificates, ClientCertificate, PrivateKey string
	SubjectAltNames                               []string
	InsecureSkipVerify                            bool
}

func (j *jsonClientTLS) model(path string) (*ClientTLS, error) {
	if j == nil {
		return nil, nil
	}
	t := &ClientTLS{Mode: j.Mode, SNI: j.SNI, CACertificates: j.CACertificates, ClientCertificate: j.ClientCertificate,
		PrivateKey: j.PrivateKey, SubjectAltNames: j.SubjectAltNames, InsecureSkipVerify: j.InsecureSkipVerify}
	switch t.Mode {
	case "", "DISABLE":
		t.Mode = "DISABLE"
	case "SIMPLE", "ISTIO_MUTUAL":
	case "MUTUAL":
		if t.ClientCertificate == "" || t.PrivateKey == "" {
			return nil, fmt.Errorf("%s: MUTUAL needs clientCertificate and privateKey", path)
		}
	default:
		return nil, fmt.Errorf("%s.mode: %q is not DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL", path, t.Mode)
	}
	return t, nil
}

// istioMutual says whether a policy, or one of its ports', asks for the
// mesh's mutual TLS.
func (tp *TrafficPolicy) istioMutual() bool {
	if tp == nil {
		return false
	}
	if tp.TLS != nil && tp.TLS.Mode == "ISTIO_MUTUAL" {
		return true
	}
	for _, pp := range tp.Ports {
		if pp.istioMutual() {
			return true
		}
	}
	return false
}

// istioMutual says whether a rule, or one of its subsets, asks for the
// mesh's mutual TLS: then the cluster needs the service's identities.
func (dr *DestinationRule) istioMutual() bool {
	if dr == nil {
		return false
	}
	for _, s := range dr.Subsets {
		if s.Policy.istioMutual() {
			return true
		}
	}
	return dr.Policy.istioMutual()
}

// applyTLS gives a cluster of host the transport socket its tls asks
// for, in place of auto mTLS's matches; sans are the host's identities
// (ISTIO_MUTUAL's, when the rule names none).
func applyTLS(cl *clusterv3.Cluster, t *ClientTLS, host string, sans []string) {
	cl.TransportSocketMatches, cl.TransportSocket = nil, nil
	switch t.Mode {
	case "DISABLE":
		return
	case "ISTIO_MUTUAL":
		if len(t.SubjectAltNames) > 0 {
			sans = t.SubjectAltNames
		}
		cl.TransportSocket = envoyres.MutualTLSUpstreamSNI(t.SNI, sans)
		return
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: t.SNI, CommonTlsContext: &tlsv3.CommonTlsContext{}}
	if ctx.Sni == "" {
		ctx.Sni = host
	}
	if t.Mode == "MUTUAL" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: fileSource(t.ClientCertificate), PrivateKey: fileSource(t.PrivateKey)}}
	}
	if !t.InsecureSkipVerify {
		vc := &tlsv3.CertificateValidationContext{TrustedCa: fileSource(systemRoots)}
		if t.CACertificates != "" {
			vc.TrustedCa = fileSource(t.CACertificates)
		}
		names := t.SubjectAltNames
		if len(names) == 0 {
			names = []string{ctx.Sni}
		}
		for _, n := range names {
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}}})
		}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	cl.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: envoyres.Typed(ctx)}}
}

func fileSource(name string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
}
