package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/shunt-dev/shunt/ca"
)

// Istio's SDS secrets: the workload certificate and the trust bundle. The
// sidecar is its own agent: both are its certificate keeper's.
const (
	sdsWorkloadCert = "default"
	sdsRootCA       = "ROOTCA"
)

// Istio's ALPN values marking mesh traffic: the outbound sidecar offers
// the protocol it sends inside mutual TLS, the inbound one picks its
// filter chain by it.
const (
	alpnIstio      = "istio"
	alpnIstioHTTP1 = "istio-http/1.1"
	alpnIstioHTTP2 = "istio-h2"
)

// tlsContext is a TLS transport socket: Envoy's UpstreamTlsContext (the
// proxy originates TLS) or DownstreamTlsContext (it terminates it), with
// the workload certificate as its certificate.
type tlsContext struct {
	server            bool
	requireClientCert bool
	// ownCert: the proxy presents the workload certificate (a client
	// context may present none: TLS origination to a server outside),
	// or static, a certificate the configuration holds (tls_certificates:
	// a gateway's, for its hosts).
	ownCert bool
	static  *tls.Certificate
	sni     string
	alpn    []string
	// verify: a validation context checks the peer's chain against the
	// trust bundle, and its name against sans if any are given.
	verify bool
	sans   []sanMatcher
	// roots, when a validation context names its trusted_ca, are what
	// the peer's chain must lead to, in place of the mesh's trust bundle
	// (TLS originated to a server outside the mesh, say).
	roots *x509.CertPool
	// rootsErr is why a cluster's trusted_ca file could not be read on
	// a reload: its every handshake fails with it.
	rootsErr error
	// configs caches the tls.Config for the credentials in force, per
	// ALPN choice.
	configs atomic.Pointer[tlsConfigs]
}

// sanMatcher is one of match_typed_subject_alt_names: a SAN type (URI or
// DNS) and how its value must read.
type sanMatcher struct {
	dns bool
	m   *stringMatcher
}

type tlsConfigs struct {
	creds *ca.Credentials
	byALP map[string]*tls.Config
}

// errNoCertificate is a TLS connection the sidecar has no certificate for
// yet (the CA has not answered) or at all (no --ca-address).
var errNoCertificate = errors.New("no workload certificate (SDS secret default): the sidecar has none yet, or no CA")

// transportSocket reads a transport socket: nil for raw_buffer
// (plaintext), else its TLS context.
func (r *resources) transportSocket(ts *corev3.TransportSocket, path string, server bool) *tlsContext {
	if ts == nil {
		return nil
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		r.add(path, "invalid: no typed_config")
		return nil
	}
	msg, err := tc.UnmarshalNew()
	if err != nil {
		r.add(path+".typed_config", "invalid: %v", err)
		return nil
	}
	path += ".typed_config"
	t := &tlsContext{server: server}
	var common *tlsv3.CommonTlsContext
	switch m := msg.(type) {
	case *rawv3.RawBuffer:
		return nil
	case *tlsv3.UpstreamTlsContext:
		if server {
			r.add(path, "invalid: an UpstreamTlsContext on a listener's filter chain (it takes a DownstreamTlsContext)")
			return nil
		}
		t.sni, common = m.GetSni(), m.GetCommonTlsContext()
	case *tlsv3.DownstreamTlsContext:
		if !server {
			r.add(path, "invalid: a DownstreamTlsContext on a cluster (it takes an UpstreamTlsContext)")
			return nil
		}
		t.requireClientCert, common = m.GetRequireClientCertificate().GetValue(), m.GetCommonTlsContext()
	default:
		r.add(path, "not implemented by shunt: %T", msg)
		return nil
	}
	path += ".common_tls_context"
	certs := common.GetTlsCertificateSdsSecretConfigs()
	t.ownCert = len(certs) > 0
	if inline := common.GetTlsCertificates(); len(inline) > 0 {
		switch {
		case len(certs) > 0 || len(inline) > 1:
			r.add(path+".tls_certificates", "not implemented by shunt: one inline certificate, without SDS certificates (on a listener, a chain per certificate, chosen by server_names)")
		default:
			chain, err1 := dataSource(inline[0].GetCertificateChain())
			key, err2 := dataSource(inline[0].GetPrivateKey())
			switch c, err := tls.X509KeyPair(chain, key); {
			case err1 != nil:
				r.add(path+".tls_certificates[0].certificate_chain", "invalid: %v", err1)
			case err2 != nil:
				r.add(path+".tls_certificates[0].private_key", "invalid: %v", err2)
			case err != nil:
				r.add(path+".tls_certificates[0]", "invalid: %v", err)
			default:
				t.static = &c
			}
		}
		t.alpn = common.GetAlpnProtocols()
		if _, ok := common.GetValidationContextType().(*tlsv3.CommonTlsContext_ValidationContext); common.GetValidationContextType() != nil && !ok {
			r.add(path, "not implemented by shunt: beside an inline certificate, a validation context is inline too (validation_context with trusted_ca)")
			return t
		}
		r.validation(t, common.GetValidationContext(), path+".validation_context")
		return t
	}
	switch {
	case len(certs) == 0 && !server:
		// A client with no certificate of its own.
	case len(certs) != 1 || certs[0].GetName() != sdsWorkloadCert:
		r.add(path+".tls_certificate_sds_secret_configs", "not implemented by shunt: a TLS context's certificate is SDS secret %q, the workload certificate (Istio's), and only it", sdsWorkloadCert)
	default:
		r.sdsSource(certs[0].GetSdsConfig(), path+".tls_certificate_sds_secret_configs[0].sds_config")
	}
	t.alpn = common.GetAlpnProtocols()
	var roots *tlsv3.SdsSecretConfig
	switch v := common.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		r.validation(t, v.ValidationContext, path+".validation_context")
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		roots = v.ValidationContextSdsSecretConfig
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		roots = v.CombinedValidationContext.GetValidationContextSdsSecretConfig()
		r.validation(t, v.CombinedValidationContext.GetDefaultValidationContext(), path+".combined_validation_context.default_validation_context")
	default:
		r.add(path, "not implemented by shunt: %T (shunt validates with SDS secret %q, the trust bundle, or an inline trusted_ca)", v, sdsRootCA)
	}
	if roots != nil || common.GetValidationContextSdsSecretConfig() != nil {
		t.verify = true
		if t.roots != nil {
			r.add(path+".combined_validation_context.default_validation_context.trusted_ca", "not implemented by shunt: beside the SDS trust bundle")
		}
		r.sdsSource(roots.GetSdsConfig(), path+".combined_validation_context.validation_context_sds_secret_config.sds_config")
		if roots.GetName() != sdsRootCA {
			r.add(path+".combined_validation_context.validation_context_sds_secret_config.name",
				"not implemented by shunt: %q (the trust bundle is SDS secret %q, Istio's)", roots.GetName(), sdsRootCA)
		}
	}
	if len(t.sans) > 0 && !t.verify {
		r.add(path, "invalid: match_typed_subject_alt_names without trusted_ca or the SDS trust bundle: SAN-based verification without a trusted CA is insecure (Envoy refuses it too)")
	}
	if t.requireClientCert && !t.verify {
		r.add(path, "invalid: require_client_certificate without a validation context: nothing would check the client's certificate")
	}
	return t
}

// validation reads a validation context into t: its trusted_ca (the
// roots a peer's chain must lead to; without one, the mesh's trust
// bundle, from SDS) and its SAN matchers.
func (r *resources) validation(t *tlsContext, vc *tlsv3.CertificateValidationContext, path string) {
	if vc == nil {
		return
	}
	if ca := vc.GetTrustedCa(); ca != nil {
		t.verify = true
		pem, err := dataSource(ca)
		t.roots = x509.NewCertPool()
		switch {
		case err != nil && r.opt.reload && !t.server:
			t.rootsErr = fmt.Errorf("trusted_ca: %v", err)
		case err != nil:
			r.add(path+".trusted_ca", "invalid: %v", err)
		case !t.roots.AppendCertsFromPEM(pem):
			r.add(path+".trusted_ca", "invalid: no PEM certificate in it")
		}
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		p := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", path, i)
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_URI, tlsv3.SubjectAltNameMatcher_DNS:
		default:
			r.add(p+".san_type", "not implemented by shunt: %s (URI and DNS are)", m.GetSanType())
			continue
		}
		if sm := r.stringMatcher(m.GetMatcher(), p+".matcher"); sm != nil {
			t.sans = append(t.sans, sanMatcher{dns: m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS, m: sm})
		}
	}
}

// dataSource is a data source's bytes: inline, or a file's, read as the
// configuration loads (as Envoy reads it; a file changed later is not read
// again until the configuration is).
func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	}
	return nil, nil
}

// sdsAgentCluster is Istio's bootstrap's cluster of the agent's SDS.
const sdsAgentCluster = "sds-grpc"

// sdsSource checks where a secret is said to come from: the control
// plane (ads) or Istio's agent (the sds-grpc cluster), which is in
// either case the sidecar's own certificate keeper.
func (r *resources) sdsSource(cs *corev3.ConfigSource, path string) {
	if cs == nil || cs.GetAds() != nil {
		return
	}
	grpc := cs.GetApiConfigSource().GetGrpcServices()
	if len(grpc) == 1 && grpc[0].GetEnvoyGrpc().GetClusterName() == sdsAgentCluster {
		return
	}
	r.add(path, "not implemented by shunt: SDS from anywhere but ads or Istio's agent (cluster %q): the sidecar serves its workload certificate itself", sdsAgentCluster)
}

// alpnFor is what the proxy offers as a TLS client carrying proto: for a
// context marked with Istio's "istio", Istio's per-protocol value first
// (as Istio's istio.alpn filter sets it), so the peer picks its chain.
func (t *tlsContext) alpnFor(proto Protocol) []string {
	if !slices.Contains(t.alpn, alpnIstio) {
		return t.alpn
	}
	switch proto {
	case ProtocolHTTP1:
		return []string{alpnIstioHTTP1, alpnIstio}
	case ProtocolHTTP2:
		return []string{alpnIstioHTTP2, alpnIstio}
	}
	return t.alpn
}

// config is the tls.Config for creds and the ALPN offered (client) or
// chosen (server), made once per certificate.
func (t *tlsContext) config(creds *ca.Credentials, alpn []string) *tls.Config {
	key := ""
	if len(alpn) > 0 {
		key = alpn[0]
	}
	cur := t.configs.Load()
	if cur != nil && cur.creds == creds {
		if c, ok := cur.byALP[key]; ok {
			return c
		}
	}
	c := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             alpn,
		ServerName:             t.sni,
		SessionTicketsDisabled: true,
		// The peer is checked below: a mesh certificate names a SPIFFE
		// ID, not a host name Go's own check would look for.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return t.verifyPeer(cs, creds) },
	}
	switch {
	case t.static != nil:
		c.Certificates = []tls.Certificate{*t.static}
	case t.ownCert:
		c.Certificates = []tls.Certificate{creds.Certificate}
	}
	if t.server && (t.static == nil || t.verify) { // a mesh peer's, if it has one; a gateway's clients only when it checks them
		c.ClientAuth = tls.RequestClientCert
		if t.requireClientCert {
			c.ClientAuth = tls.RequireAnyClientCert
		}
	}
	next := &tlsConfigs{creds: creds, byALP: map[string]*tls.Config{key: c}}
	if cur != nil && cur.creds == creds {
		for k, v := range cur.byALP {
			next.byALP[k] = v
		}
	}
	t.configs.Store(next)
	return c
}

// verifyPeer checks the peer's chain against the trust bundle and its
// name against the context's SAN matchers; a client that sent no
// certificate passes where one is not required.
func (t *tlsContext) verifyPeer(cs tls.ConnectionState, creds *ca.Credentials) error {
	if !t.verify {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		if t.server && !t.requireClientCert {
			return nil
		}
		return errors.New("the peer sent no certificate")
	}
	roots := t.roots
	if roots == nil {
		roots = creds.Roots
	}
	if err := ca.VerifyPeer(cs.PeerCertificates, roots, ""); err != nil {
		return fmt.Errorf("the peer's certificate: %v", err)
	}
	leaf := cs.PeerCertificates[0]
	if len(t.sans) == 0 {
		return nil
	}
	for _, m := range t.sans {
		if m.dns {
			for _, n := range leaf.DNSNames {
				if m.m.match([]byte(n)) || m.m.hasExact && wildcardCovers(n, m.m.exact) {
					return nil
				}
			}
			continue
		}
		for _, u := range leaf.URIs {
			if m.m.match([]byte(u.String())) {
				return nil
			}
		}
	}
	return fmt.Errorf("the peer's certificate names %v, none of the names it must", peerNames(leaf))
}

// wildcardCovers says a certificate's wildcard DNS name (*.domain)
// covers name, one label deep, as Envoy matches an exact DNS SAN.
func wildcardCovers(certName, name string) bool {
	rest, ok := strings.CutPrefix(certName, "*.")
	if !ok {
		return false
	}
	_, domain, ok := strings.Cut(name, ".")
	return ok && strings.EqualFold(domain, rest)
}

func peerNames(c *x509.Certificate) []string {
	out := slices.Clone(c.DNSNames)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

// peerURI is the first URI SAN of a TLS connection's peer, or "".
func peerURI(cs *tls.ConnectionState) string {
	if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) > 0 {
		return cs.PeerCertificates[0].URIs[0].String()
	}
	return ""
}

// credentials is the workload certificate in force, or nil.
func (p *Proxy) credentials() *ca.Credentials {
	if current, _ := p.certs.Load().(func() *ca.Credentials); current != nil {
		return current()
	}
	return nil
}

// tlsClient originates TLS over c for ctx, offering alpn.
func (p *Proxy) tlsClient(ctx context.Context, c *net.TCPConn, t *tlsContext, alpn []string) (*tlsSock, error) {
	creds := p.credentials()
	switch {
	case t.rootsErr != nil:
		return nil, &tlsFailure{t.rootsErr}
	case creds == nil && (t.ownCert || t.verify && t.roots == nil):
		return nil, &tlsFailure{errNoCertificate}
	}
	tc := tls.Client(c, t.config(creds, alpn))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &tlsFailure{err}
	}
	return &tlsSock{Conn: tc, tcp: c}, nil
}

// tlsFailure is a TLS handshake that failed.
type tlsFailure struct{ err error }

func (f *tlsFailure) Error() string { return "TLS: " + f.err.Error() }
func (f *tlsFailure) Unwrap() error { return f.err }

// reason is the failure as Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON%
// gives one: TLS_error: and what went wrong, spaces made underscores.
func (f *tlsFailure) reason() string {
	return "TLS_error:" + strings.ReplaceAll(f.err.Error(), " ", "_")
}

// tlsHandshakeTimeout bounds a client's TLS handshake on a listener.
const tlsHandshakeTimeout = 10 * time.Second

// tlsServer terminates TLS over c, choosing the first of the client's
// offered protocols (as its ClientHello lists them, whether or not a
// listener filter read it) the chain's context lists (or, for Istio's
// contexts, the first offered: the client named what it sends); none
// when none is, the handshake going on without (as Envoy's).
func (p *Proxy) tlsServer(ctx context.Context, c *net.TCPConn, t *tlsContext) (*tlsSock, error) {
	creds := p.credentials()
	if creds == nil && t.static == nil {
		return nil, errNoCertificate
	}
	cfg := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, o := range hello.SupportedProtos {
			if slices.Contains(t.alpn, o) || len(t.alpn) == 0 && isIstioALPN(o) {
				return t.config(creds, []string{o}), nil
			}
		}
		return t.config(creds, nil), nil
	}}
	ctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return &tlsSock{Conn: tc, tcp: c}, nil
}

func isIstioALPN(s string) bool {
	switch s {
	case alpnIstio, alpnIstioHTTP1, alpnIstioHTTP2, "istio-http/1.0", "istio-peer-exchange":
		return true
	}
	return false
}

// serveTLS terminates a chain's TLS on d and hands what it carries to
// the chain's handler: HTTP/2 when the client said so by ALPN (offering
// Istio's istio-h2 first, or negotiating h2), else HTTP/1, or TCP.
func (p *Proxy) serveTLS(d *downstream, fc *filterChain) Result {
	s, err := p.tlsServer(p.stopping, d.tcp, fc.tls)
	if err != nil {
		reset(d.tcp)
		p.log.Debug("TLS handshake failed", "direction", d.lst.dir, "from", d.remote, "err", err)
		return p.refuse(d, ResultTLSHandshake, err.Error())
	}
	d.c = s
	cs := s.ConnectionState()
	d.peer = peerURI(&cs)
	if len(cs.PeerCertificates) > 0 {
		d.peerCert = cs.PeerCertificates[0]
	}
	if creds := p.credentials(); creds != nil {
		d.localURI = creds.Identity.String()
	}
	if fc.http != nil {
		d.xfcc = fc.http.clientCert.element(d)
	}
	if r, refused := p.rbacRefused(d, fc); refused {
		return r
	}
	if fc.http == nil {
		return p.proxyTCP(d, fc.tcp)
	}
	// Istio's outbound side names what it sends first among its ALPN
	// offers (istio-h2); a TLS client of the app's negotiates h2.
	h2 := cs.NegotiatedProtocol == "h2" || cs.NegotiatedProtocol == alpnIstioHTTP2 || len(d.alpn) > 0 && d.alpn[0] == alpnIstioHTTP2
	if h2 && fc.http.codec != ProtocolHTTP1 || fc.http.codec == ProtocolHTTP2 {
		return p.serveH2(d, fc.http, nil, nil, nil)
	}
	return p.serveHTTP(d, fc.http)
}

// transportSocketMatchKey is the endpoint metadata transport_socket_matches
// look at (Istio's endpoints carry tlsMode: istio there).
const transportSocketMatchKey = "envoy.transport_socket_match"

// clusterTLS is a cluster's transport sockets: the default, and those
// its transport_socket_matches choose by an endpoint's metadata.
type clusterTLS struct {
	def     *tlsContext
	matches []tlsMatch
}

type tlsMatch struct {
	match *structpb.Struct
	tls   *tlsContext
}

// forEndpoint is the first match whose every field the endpoint's
// metadata has with the same value, else the default, as Envoy picks.
func (ct clusterTLS) forEndpoint(md *structpb.Struct) *tlsContext {
next:
	for _, m := range ct.matches {
		for k, v := range m.match.GetFields() {
			if !proto.Equal(v, md.GetFields()[k]) {
				continue next
			}
		}
		return m.tls
	}
	return ct.def
}

// clusterTLS reads a cluster's transport_socket and
// transport_socket_matches.
func (r *resources) clusterTLS(c *clusterv3.Cluster, path string) clusterTLS {
	ct := clusterTLS{def: r.transportSocket(c.GetTransportSocket(), path+".transport_socket", false)}
	for i, m := range c.GetTransportSocketMatches() {
		p := fmt.Sprintf("%s.transport_socket_matches[%d]", path, i)
		if m.GetTransportSocket() == nil {
			r.add(p+".transport_socket", "invalid: a match needs its transport socket")
			continue
		}
		ct.matches = append(ct.matches, tlsMatch{match: m.GetMatch(), tls: r.transportSocket(m.GetTransportSocket(), p+".transport_socket", false)})
	}
	return ct
}
