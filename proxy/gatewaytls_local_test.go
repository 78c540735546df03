package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/catest"
)

// TestTLSBySNI: a listener terminating TLS with certificates the
// configuration holds (a gateway's), one chain per certificate chosen by
// the client's SNI (server_names, exact over wildcard), HTTP/1.1 or h2 by
// ALPN; an SNI no chain names is refused; /config_dump shows the keys
// redacted.
func TestTLSBySNI(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", r.Host, r.Proto) })
	shopCert, shopKey := catest.ServerCert(t, "shop.example.com")
	anyCert, anyKey := catest.ServerCert(t, "*.example.com")
	chain := func(names, cert, key string) string {
		return fmt.Sprintf(`
    - filter_chain_match: {server_names: [%s]}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: %s, private_key: %s}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: https
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]}`, names, cert, key)
	}
	// One chain's certificate is inline, the other's in files.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cert.pem"), anyCert, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), anyKey, 0o600)
	inline := func(pem []byte) string { return fmt.Sprintf("{inline_string: %q}", pem) }
	file := func(name string) string { return fmt.Sprintf("{filename: %q}", filepath.Join(dir, name)) }
	config := `
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
    filter_chains:` + chain(`"*.example.com"`, file("cert.pem"), file("key.pem")) + chain("shop.example.com", inline(shopCert), inline(shopKey)) + `
  clusters:
  - {name: app, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ` + fmt.Sprint(port) + `}}}}]}]}}
`
	cp := startConfig(t, config, nil)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(shopCert)
	roots.AppendCertsFromPEM(anyCert)
	get := func(sni string, h2 bool) (string, string, error) {
		c, err := tls.Dial("tcp", cp.ListenerAddr("listener_0").String(), &tls.Config{ServerName: sni, RootCAs: roots,
			NextProtos: map[bool][]string{false: {"http/1.1"}, true: {"h2"}}[h2]})
		if err != nil {
			return "", "", err
		}
		defer c.Close()
		cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName
		if h2 {
			return cn, c.ConnectionState().NegotiatedProtocol, nil
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return cn, string(b), nil
	}
	for _, c := range []struct{ sni, cn string }{{"shop.example.com", "shop.example.com"}, {"api.example.com", "*.example.com"}} {
		cn, body, err := get(c.sni, false)
		if err != nil || cn != c.cn || !strings.HasSuffix(body, c.sni+" HTTP/1.1") {
			t.Errorf("SNI %s: certificate %q, %v: %q", c.sni, cn, err, body)
		}
	}
	if cn, proto, err := get("shop.example.com", true); err != nil || cn != "shop.example.com" || proto != "h2" {
		t.Errorf("h2 with SNI shop.example.com: certificate %q, ALPN %q, %v", cn, proto, err)
	}
	if _, _, err := get("other.test", false); err == nil {
		t.Error("an SNI no chain names was served")
	}
	_, dump := adminGet(t, cp, "/config_dump")
	if strings.Contains(dump, "PRIVATE KEY") || !strings.Contains(dump, `"[redacted]"`) || !strings.Contains(dump, "BEGIN CERTIFICATE") {
		t.Errorf("/config_dump does not redact the keys alone")
	}
}

// TestALPNWithoutInspector: a TLS chain negotiates ALPN from its
// alpn_protocols whether or not a tls_inspector read the ClientHello
// (Envoy's transport socket does): h2 offered, h2 chosen; a client
// offering only what the chain does not list gets no protocol, and the
// handshake goes on.
func TestALPNWithoutInspector(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Proto) })
	cert, key := catest.ServerCert(t, "edge.example.com")
	cp := startConfig(t, edgeConfig(fmt.Sprintf(`
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: {inline_string: %q}, private_key: {inline_string: %q}}]`, cert, key), port), nil)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cert)
	for _, c := range []struct {
		offer []string
		want  string
	}{{[]string{"h2", "http/1.1"}, "h2"}, {[]string{"http/1.1"}, "http/1.1"}, {[]string{"spdy/3"}, ""}, {nil, ""}} {
		conn, err := tls.Dial("tcp", cp.ListenerAddr("edge").String(), &tls.Config{ServerName: "edge.example.com", RootCAs: roots, NextProtos: c.offer})
		if err != nil {
			t.Errorf("offering %v: %v", c.offer, err)
			continue
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != c.want {
			t.Errorf("offering %v: negotiated %q, want %q", c.offer, got, c.want)
		}
		conn.Close()
	}
}

// TestMutualTLSAtTheEdge: a listener chain with its own certificate that
// requires a client certificate and checks it against an inline
// trusted_ca (Istio's MUTUAL gateway server): a client its CA signed is
// served, one with no certificate or another CA's is refused.
func TestMutualTLSAtTheEdge(t *testing.T) {
	_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello ", r.Proto) })
	cert, key := catest.ServerCert(t, "edge.example.com")
	clientCert, clientKey := catest.ServerCert(t, "client.partner.example")
	otherCert, otherKey := catest.ServerCert(t, "stranger.example")
	cp := startConfig(t, edgeConfig(fmt.Sprintf(`
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {inline_string: %q}, private_key: {inline_string: %q}}]
            validation_context: {trusted_ca: {inline_string: %q}}`, cert, key, clientCert), port), nil)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cert)
	get := func(certPEM, keyPEM []byte) (string, error) {
		cfg := &tls.Config{ServerName: "edge.example.com", RootCAs: roots}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c, err := tls.Dial("tcp", cp.ListenerAddr("edge").String(), cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: edge.example.com\r\nConnection: close\r\n\r\n")
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if body, err := get(clientCert, clientKey); err != nil || !strings.HasSuffix(body, "hello HTTP/1.1") {
		t.Errorf("a client its CA signed: %q, %v", body, err)
	}
	for name, pair := range map[string][2][]byte{"no certificate": {nil, nil}, "another CA's": {otherCert, otherKey}} {
		// TLS 1.3: the client learns of the refusal on its first read.
		if body, err := get(pair[0], pair[1]); err == nil && strings.Contains(body, "hello") {
			t.Errorf("a client with %s was served: %q", name, body)
		}
	}
}

// edgeConfig is a listener "edge" whose one chain terminates TLS with
// the DownstreamTlsContext fields given (YAML at its indentation) and
// routes every request to a backend on port.
func edgeConfig(tlsFields string, port uint16) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
%s
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]}
  clusters:
  - {name: app, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}}
`, tlsFields, port)
}
