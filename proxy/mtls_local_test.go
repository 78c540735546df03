package proxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/internal/catest"
	"github.com/shunt-dev/shunt/internal/envoytest"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// meshCA issues the test's workload certificates.
func meshCA(t *testing.T) *ca.Authority { return catest.Authority(t) }

func workload(t *testing.T, a *ca.Authority, sa string) *ca.Credentials {
	t.Helper()
	c, err := a.Credentials(ca.Identity{TrustDomain: ca.DefaultTrustDomain, Namespace: "default", ServiceAccount: sa}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// calleeConfig is an inbound sidecar's listener as Istio's is: mutual TLS
// for mesh ALPNs to an HTTP connection manager, and, when permissive,
// plaintext too; both route to the app on appPort.
func calleeConfig(logFile string, appPort uint16, permissive bool) string {
	return calleeConfigOf(logFile, appPort, permissive, false)
}

// calleeConfigOf is calleeConfig, its chains' filter a TCP proxy when tcp.
func calleeConfigOf(logFile string, appPort uint16, permissive, tcp bool) string {
	hcm := func(prefix string) string {
		if tcp {
			return fmt.Sprintf(`
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %s
          cluster: app
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format: {text_format_source: {inline_string: "%s tcp %%BYTES_RECEIVED%% peer=%%DOWNSTREAM_PEER_URI_SAN%%\n"}}`, prefix, logFile, prefix)
		}
		return fmt.Sprintf(`
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {subject: true, uri: true}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format: {text_format_source: {inline_string: "%s %%PROTOCOL%% %%RESPONSE_CODE%% peer=%%DOWNSTREAM_PEER_URI_SAN%% local=%%DOWNSTREAM_LOCAL_URI_SAN%% %%CONNECTION_TERMINATION_DETAILS%%\n"}}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: app, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}]`, prefix, logFile, prefix)
	}
	plain := ""
	if permissive {
		plain = `
    - filter_chain_match: {transport_protocol: raw_buffer}
      filters:` + hcm("plaintext")
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: INBOUND
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - filter_chain_match: %s
      transport_socket: %s
      filters:%s%s
  clusters:
  - name: app
    connect_timeout: 1s
    type: STATIC
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, envoytest.MeshChainMatch, envoytest.MeshServerSocket, hcm("mtls"), plain, appPort)
}

// callerConfig is an outbound sidecar's: plaintext HTTP in, to the
// callee's endpoint at callee with Istio's transport socket matches
// (mutual TLS to an endpoint labelled tlsMode istio, checked to be
// wantSAN), and its log lines.
func callerConfig(logFile, callee, wantSAN string, meshEndpoint bool) string {
	host, port, _ := net.SplitHostPort(callee)
	md := ""
	if meshEndpoint {
		md = ", metadata: " + envoytest.MeshEndpointMetadata
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: outbound
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format: {text_format_source: {inline_string: "caller %%RESPONSE_CODE%% %%RESPONSE_FLAGS%% %%UPSTREAM_TRANSPORT_FAILURE_REASON%%\n"}}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: callee, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: callee}}]}]
  clusters:
  - name: callee
    connect_timeout: 1s
    type: STATIC
    transport_socket_matches: %s
    load_assignment: {cluster_name: callee, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}%s}]}]}
`, logFile, envoytest.MeshClientMatches(wantSAN), host, port, md)
}

// get sends a GET through a listener and returns the status and body.
func get(t *testing.T, addr string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: callee\r\nX-Forwarded-Client-Cert: By=forged\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func logText(path string) string { b, _ := os.ReadFile(path); return string(b) }

// TestMutualTLSBetweenSidecars: a caller's sidecar originates mutual TLS
// to a callee's, which terminates it, checks the caller's certificate and
// logs its SPIFFE ID; a strict callee refuses plaintext, a permissive one
// takes it; a callee whose certificate is not the expected identity, or
// not of the mesh, is refused by the caller (503 UF, the TLS error).
func TestMutualTLSBetweenSidecars(t *testing.T) {
	mesh := meshCA(t)
	callerCreds, calleeCreds := workload(t, mesh, "caller"), workload(t, mesh, "callee")
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s", r.URL.Path)
		if x := r.Header.Values("X-Forwarded-Client-Cert"); len(x) > 0 {
			fmt.Fprintf(w, " xfcc=%s", strings.Join(x, "|"))
		}
	})
	dir := t.TempDir()
	calleeLog, callerLog := filepath.Join(dir, "callee.log"), filepath.Join(dir, "caller.log")
	calleeSAN := "spiffe://cluster.local/ns/default/sa/callee"

	strict := startConfig(t, calleeConfig(calleeLog, appPort, false), nil)
	strict.SetCertificates(func() *ca.Credentials { return calleeCreds })
	strictAddr := strict.ListenerAddr("inbound").String()
	caller := startConfig(t, callerConfig(callerLog, strictAddr, calleeSAN, true), nil)
	caller.SetCertificates(func() *ca.Credentials { return callerCreds })
	callerAddr := caller.ListenerAddr("outbound").String()

	// The caller drops the client's forged header (Envoy's SANITIZE);
	// the callee puts in who called it, as Istio's inbound does.
	sum := sha256.Sum256(callerCreds.Leaf.Raw)
	want := "app saw /hello xfcc=By=" + calleeSAN + ";Hash=" + hex.EncodeToString(sum[:]) + `;Subject="";URI=spiffe://cluster.local/ns/default/sa/caller`
	if code, body := get(t, callerAddr); code != 200 || body != want {
		t.Fatalf("through both sidecars: %d %q, want %q", code, body, want)
	}
	waitFile(t, calleeLog, "mtls HTTP/1.1 200 peer=spiffe://cluster.local/ns/default/sa/caller local="+calleeSAN)
	// Istio's metrics say who called, and how.
	m := series(t, strict.Proxy, "istio_requests_total", map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls",
		"source_principal": "spiffe://cluster.local/ns/default/sa/caller", "destination_principal": calleeSAN, "response_code": "200"})
	if m.GetCounter().GetValue() != 1 {
		t.Errorf("istio_requests_total %v, want 1", m.GetCounter().GetValue())
	}
	// A client with no certificate, and plaintext, are refused by a
	// strict callee.
	if code, _ := get(t, strictAddr); code != 0 {
		t.Errorf("plaintext to a strict callee: %d", code)
	}
	tc, err := tls.Dial("tcp", strictAddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"istio"}})
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
	}
	if err == nil {
		t.Error("a TLS client with no certificate got through a strict callee")
	}

	// Permissive: plaintext and mutual TLS both served, each by its chain.
	permissive := startConfig(t, calleeConfig(calleeLog, appPort, true), nil)
	permissive.SetCertificates(func() *ca.Credentials { return calleeCreds })
	if code, body := get(t, permissive.ListenerAddr("inbound").String()); code != 200 || body != "app saw /hello" {
		t.Errorf("plaintext to a permissive callee: %d %q (no client certificate: the header is dropped)", code, body)
	}
	waitFile(t, calleeLog, "plaintext HTTP/1.1 200 peer=- local=-")

	// The caller checks who answers: another identity, or a certificate
	// of another mesh, is a connect failure.
	wrongSAN := startConfig(t, callerConfig(callerLog, strictAddr, "spiffe://cluster.local/ns/default/sa/other", true), nil)
	wrongSAN.SetCertificates(func() *ca.Credentials { return callerCreds })
	if code, _ := get(t, wrongSAN.ListenerAddr("outbound").String()); code != 503 {
		t.Errorf("a callee of the wrong identity: %d, want 503", code)
	}
	waitFile(t, callerLog, "caller 503 UF TLS_error:")
	if !strings.Contains(logText(callerLog), "none_of_the_names_it_must") {
		t.Errorf("the caller's log does not say why:\n%s", logText(callerLog))
	}
	other := startConfig(t, calleeConfig(calleeLog, appPort, false), nil)
	other.SetCertificates(func() *ca.Credentials { return workload(t, meshCA(t), "callee") })
	stranger := startConfig(t, callerConfig(callerLog, other.ListenerAddr("inbound").String(), calleeSAN, true), nil)
	stranger.SetCertificates(func() *ca.Credentials { return callerCreds })
	if code, _ := get(t, stranger.ListenerAddr("outbound").String()); code != 503 {
		t.Errorf("a callee of another mesh: %d, want 503", code)
	}
	waitFile(t, callerLog, "certificate_signed_by_unknown_authority")

	// An endpoint without the mesh label is sent plaintext.
	plainCaller := startConfig(t, callerConfig(callerLog, permissive.ListenerAddr("inbound").String(), calleeSAN, false), nil)
	if code, _ := get(t, plainCaller.ListenerAddr("outbound").String()); code != 200 {
		t.Errorf("plaintext to an endpoint without tlsMode istio: %d", code)
	}
}

func waitFile(t *testing.T, file, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logText(file), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %q:\n%s", filepath.Base(file), want, logText(file))
		}
	}
}

// TestMutualTLSCarriesTCPAndHTTP2: a TCP flow and HTTP/2 requests go
// through mutual TLS between two sidecars: the caller offers Istio's ALPN
// for what it carries (istio for TCP, istio-h2 for HTTP/2), and the
// callee serves each by it.
func TestMutualTLSCarriesTCPAndHTTP2(t *testing.T) {
	mesh := meshCA(t)
	callerCreds, calleeCreds := workload(t, mesh, "caller"), workload(t, mesh, "callee")
	dir := t.TempDir()
	calleeLog, callerLog := filepath.Join(dir, "callee.log"), filepath.Join(dir, "caller.log")
	calleeSAN := "spiffe://cluster.local/ns/default/sa/callee"

	// TCP: an echo server behind the callee; a tcp_proxy in the caller.
	echo := localEcho(t)
	tcpCallee := startConfig(t, calleeConfigOf(calleeLog, echo.Port(), false, true), nil)
	tcpCallee.SetCertificates(func() *ca.Credentials { return calleeCreds })
	cfg := callerConfig(callerLog, tcpCallee.ListenerAddr("inbound").String(), calleeSAN, true)
	start := strings.Index(cfg, "      - name: envoy.filters.network.http_connection_manager")
	end := strings.Index(cfg, "  clusters:")
	cfg = cfg[:start] + `      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: out, cluster: callee}
` + cfg[end:]
	tcpCaller := startConfig(t, cfg, nil)
	tcpCaller.SetCertificates(func() *ca.Credentials { return callerCreds })
	c, err := net.Dial("tcp", tcpCaller.ListenerAddr("outbound").String())
	if err != nil {
		t.Fatal(err)
	}
	roundTripLocal(t, c.(*net.TCPConn), "ping over mutual TLS")
	c.Close()
	waitFile(t, calleeLog, "mtls tcp 20 peer=spiffe://cluster.local/ns/default/sa/caller")
	series(t, tcpCallee.Proxy, "istio_tcp_connections_opened_total", map[string]string{"connection_security_policy": "mutual_tls",
		"source_principal": "spiffe://cluster.local/ns/default/sa/caller"})

	// HTTP/2: h2c into the caller, HTTP/2 inside mutual TLS to the callee.
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "app saw %s", r.URL.Path) })
	h2Callee := startConfig(t, calleeConfig(calleeLog, appPort, false), nil)
	h2Callee.SetCertificates(func() *ca.Credentials { return calleeCreds })
	cfg = callerConfig(callerLog, h2Callee.ListenerAddr("inbound").String(), calleeSAN, true)
	cfg = strings.Replace(cfg, "    type: STATIC\n    transport_socket_matches:", `    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}
    transport_socket_matches:`, 1)
	h2Caller := startConfig(t, cfg, nil)
	h2Caller.SetCertificates(func() *ca.Credentials { return callerCreds })
	resp, err := h2cClient().Get("http://" + h2Caller.ListenerAddr("outbound").String() + "/over-h2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "app saw /over-h2" || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 through both sidecars: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	waitFile(t, calleeLog, "mtls HTTP/2 200 peer=spiffe://cluster.local/ns/default/sa/caller")
}

// TestTLSConfigProblems: what of a TLS transport socket shunt does not
// run is refused with its path.
func TestTLSConfigProblems(t *testing.T) {
	callee := calleeConfig("/dev/null", 9, false)
	caller := callerConfig("/dev/null", "127.0.0.1:9", "spiffe://cluster.local/ns/default/sa/callee", true)
	chain := "static_resources.listeners[0].filter_chains[0]"
	cluster := "static_resources.clusters[0].transport_socket_matches[0].transport_socket.typed_config.common_tls_context"
	for _, tc := range []struct {
		name, config, old, new, want string
	}{
		{"another certificate", caller, "name: default,", "name: spiffe-cert,", cluster + `.tls_certificate_sds_secret_configs: not implemented by shunt: a TLS context's certificate is SDS secret "default"`},
		{"another trust bundle", caller, "name: ROOTCA,", "name: corp-roots,", cluster + `.combined_validation_context.validation_context_sds_secret_config.name: not implemented by shunt: "corp-roots"`},
		{"SDS from elsewhere", caller, "sds_config: {ads: {}, resource_api_version: V3}}]", "sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: vault}}]}}}]",
			cluster + `.tls_certificate_sds_secret_configs[0].sds_config: not implemented by shunt: SDS from anywhere but ads or Istio's agent`},
		{"an email SAN", caller, "san_type: URI", "san_type: EMAIL", cluster + ".combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type: not implemented by shunt: EMAIL"},
		{"TLS parameters", caller, "alpn_protocols: [istio-peer-exchange, istio]", "alpn_protocols: [istio], tls_params: {tls_minimum_protocol_version: TLSv1_3}", cluster + ".tls_params: not implemented by shunt"},
		{"a client certificate nobody checks", callee, ", combined_validation_context: {default_validation_context: {}, validation_context_sds_secret_config: {name: ROOTCA, sds_config: {ads: {}, resource_api_version: V3}}}", "",
			chain + ".transport_socket.typed_config.common_tls_context: invalid: require_client_certificate without a validation context"},
		{"an upstream context on a listener", callee, "v3.DownstreamTlsContext, require_client_certificate: true", "v3.UpstreamTlsContext", chain + ".transport_socket.typed_config: invalid: an UpstreamTlsContext on a listener's filter chain"},
		{"QUIC", callee, "transport_protocol: tls", "transport_protocol: quic", chain + `.filter_chain_match.transport_protocol: invalid: "quic"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.config, tc.old) {
				t.Fatalf("the config has no %q", tc.old)
			}
			b, err := envoyconfig.Parse([]byte(strings.Replace(tc.config, tc.old, tc.new, 1)))
			if err == nil {
				cfg := proxy.DefaultConfig()
				cfg.Bootstrap = b
				_, err = proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant %q in it", err, tc.want)
			}
		})
	}
}

// TestTLSOrigination: a cluster's UpstreamTlsContext with no certificate
// of its own originates TLS to a server outside the mesh (Envoy's, and
// Istio's DestinationRule SIMPLE), with no workload certificate at all.
func TestTLSOrigination(t *testing.T) {
	var sni string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "https saw %s", r.URL.Path)
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni = h.ServerName; return nil, nil }}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caller := startConfig(t, originating(t, srv.Listener.Addr().String(), "sni: api.example.com"), nil)
	if code, body := get(t, caller.ListenerAddr("outbound").String()); code != 200 || body != "https saw /hello" || sni != "api.example.com" {
		t.Errorf("TLS origination: %d %q, SNI %q", code, body, sni)
	}
}

// originating is the caller's configuration with its cluster's
// transport socket an UpstreamTlsContext of the fields given, to addr.
func originating(t *testing.T, addr, fields string) string {
	cfg := callerConfig(filepath.Join(t.TempDir(), "caller.log"), addr, "", false)
	start := strings.Index(cfg, "    transport_socket_matches:")
	end := strings.Index(cfg, "    load_assignment:")
	return cfg[:start] + `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, ` + fields + `}
` + cfg[end:]
}

// TestTLSOriginationVerified: TLS originated with a validation context
// of its own (Istio's DestinationRule SIMPLE and MUTUAL): the server's
// chain checked against trusted_ca and its name against the DNS SANs
// (a wildcard certificate covering the exact name), a client
// certificate presented; a server the trusted CA did not sign, or whose
// name is not the one wanted, is refused: 503, flag UF, the TLS error
// its reason.
func TestTLSOriginationVerified(t *testing.T) {
	var clientCN string
	srvCert, srvKey := catest.ServerCert(t, "*.example.com")
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "https saw %s", r.URL.Path)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	clientCert, clientKey := catest.ServerCert(t, "client.shop.svc")
	otherCA, _ := catest.ServerCert(t, "other-ca.example")
	for name, b := range map[string][]byte{"ca.pem": srvCert, "other-ca.pem": otherCA, "client.pem": clientCert, "client-key.pem": clientKey} {
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	common := func(ca, san string) string {
		return fmt.Sprintf(`sni: api.example.com, common_tls_context: {tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}],
        validation_context: {trusted_ca: {filename: %s}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: %s}}]}}`,
			filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"), filepath.Join(dir, ca), san)
	}
	for _, c := range []struct {
		name, ca, san string
		ok            bool
	}{
		{"verified, the client's certificate presented", "ca.pem", "api.example.com", true},
		{"another CA", "other-ca.pem", "api.example.com", false},
		{"another name", "ca.pem", "api.example.org", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			clientCN = ""
			caller := startConfig(t, originating(t, srv.Listener.Addr().String(), common(c.ca, c.san)), nil)
			code, body := get(t, caller.ListenerAddr("outbound").String())
			switch {
			case c.ok && (code != 200 || body != "https saw /hello" || clientCN != "client.shop.svc"):
				t.Errorf("%d %q, the server saw the client certificate %q", code, body, clientCN)
			case !c.ok && (code != 503 || !strings.Contains(body, "TLS_error:")):
				t.Errorf("%d %q, want 503 with the TLS error", code, body)
			}
		})
	}

	// A trusted_ca file the proxy does not have: refused at start; on a
	// reload (xDS), that cluster's handshakes fail, naming the file, and
	// the rest of the update stands.
	missing := originating(t, srv.Listener.Addr().String(), common("no-such-ca.pem", "api.example.com"))
	if b, err := envoyconfig.Parse([]byte(missing)); err != nil {
		t.Fatal(err)
	} else {
		cfg := proxy.DefaultConfig()
		cfg.Bootstrap = b
		if _, err := proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil || !strings.Contains(err.Error(), "trusted_ca: invalid") {
			t.Errorf("a missing trusted_ca at start: %v", err)
		}
	}
	caller := startConfig(t, originating(t, srv.Listener.Addr().String(), common("ca.pem", "api.example.com")), nil)
	b, err := envoyconfig.Parse([]byte(missing))
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.Reload(b); err != nil {
		t.Fatalf("a reload with a trusted_ca file this proxy lacks: %v", err)
	}
	if code, body := get(t, caller.ListenerAddr("outbound").String()); code != 503 || !strings.Contains(body, "trusted_ca") {
		t.Errorf("through the cluster whose trusted_ca is missing: %d %q", code, body)
	}

	b, err = envoyconfig.Parse([]byte(originating(t, "127.0.0.1:9", "common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: a.example}}]}}")))
	if err == nil {
		cfg := proxy.DefaultConfig()
		cfg.Bootstrap = b
		_, err = proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	}
	if want := "match_typed_subject_alt_names without trusted_ca"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("SAN matchers without a trusted CA: %v, want %q", err, want)
	}
}

// TestMutualTLSRotationUnderLoad: certificates living two seconds,
// renewed by both sidecars' keepers from a CA over gRPC, while requests
// run for eight seconds, through the caller's pooled connections and as
// a mesh client handshaking anew for each: none fails, and the callee is
// seen to present several certificates in turn.
func TestMutualTLSRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("eight seconds of load")
	}
	authority := meshCA(t)
	authority.MaxTTL = time.Hour
	_, _, conn := catest.Serve(t, authority, catest.NamedToken{}, "127.0.0.1")
	keep := func(sa string) *ca.Keeper {
		k := &ca.Keeper{Identity: ca.Identity{TrustDomain: ca.DefaultTrustDomain, Namespace: "default", ServiceAccount: sa}, Conn: conn,
			Token: func() (string, error) { return sa, nil }, TTL: 2 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { k.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case <-k.Ready():
		case <-time.After(10 * time.Second):
			t.Fatalf("no certificate for %s", sa)
		}
		return k
	}
	callerK, calleeK := keep("caller"), keep("callee")
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	dir := t.TempDir()
	callee := startConfig(t, calleeConfig(filepath.Join(dir, "callee.log"), appPort, false), nil)
	callee.SetCertificates(calleeK.Current)
	calleeAddr := callee.ListenerAddr("inbound").String()
	caller := startConfig(t, callerConfig(filepath.Join(dir, "caller.log"), calleeAddr, "spiffe://cluster.local/ns/default/sa/callee", true), nil)
	caller.SetCertificates(callerK.Current)

	// A mesh client of the callee's, with the caller's current
	// certificate, a new connection (and handshake) each request.
	serials := map[string]bool{}
	var mu sync.Mutex
	direct := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
		NextProtos: []string{"istio-http/1.1"}, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &callerK.Current().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: callerK.Current().Roots}); err != nil {
				return err
			}
			mu.Lock()
			serials[leaf.SerialNumber.String()] = true
			mu.Unlock()
			return nil
		}}}}
	var requests, failures atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(8 * time.Second)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pooled := &http.Client{Timeout: 5 * time.Second}
			for time.Now().Before(deadline) {
				var resp *http.Response
				var err error
				if i%2 == 0 {
					resp, err = pooled.Get("http://" + caller.ListenerAddr("outbound").String() + "/load")
				} else {
					resp, err = direct.Get("https://" + calleeAddr + "/load")
				}
				requests.Add(1)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed across rotations, first: %v", failures.Load(), requests.Load(), firstErr.Load())
		log := logText(filepath.Join(dir, "callee.log"))
		t.Logf("callee log head: %.2000s", log)
	}
	if callerK.Renewals() < 4 || calleeK.Renewals() < 4 || len(serials) < 3 {
		t.Errorf("renewals: caller %d, callee %d; the callee presented %d certificates; want 4, 4 and 3", callerK.Renewals(), calleeK.Renewals(), len(serials))
	}
	t.Logf("%d requests, %d failed; renewals caller %d callee %d; callee certificates seen %d",
		requests.Load(), failures.Load(), callerK.Renewals(), calleeK.Renewals(), len(serials))
}

// TestExpiredCertificateRefused: a peer whose certificate has expired is
// refused both ways: a caller does not take an expired callee, a callee
// does not take an expired caller.
func TestExpiredCertificateRefused(t *testing.T) {
	// A root made four hours ago, which signs both fresh certificates and
	// ones that ended two hours ago.
	root, err := ca.SelfSigned(ca.DefaultTrustDomain, 24*time.Hour, time.Now().Add(-4*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := ca.New(root)
	if err != nil {
		t.Fatal(err)
	}
	old := func(authority *ca.Authority, sa string) *ca.Credentials {
		// The same mesh's root, a certificate that ended two hours ago.
		authority.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
		defer func() { authority.Now = time.Now }()
		return workload(t, authority, sa)
	}
	_, appPort := backendPort(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	dir := t.TempDir()
	callerLog := filepath.Join(dir, "caller.log")
	for _, c := range []struct {
		name           string
		caller, callee *ca.Credentials
		want           string
	}{
		{"an expired callee", workload(t, mesh, "caller"), old(mesh, "callee"), "caller 503 UF TLS_error:the_peer's_certificate:_x509:_certificate_has_expired"},
		{"an expired caller", old(mesh, "caller"), workload(t, mesh, "callee"), "caller 503 UF TLS_error:"},
	} {
		callee := startConfig(t, calleeConfig(filepath.Join(dir, "callee.log"), appPort, false), nil)
		calleeCreds := c.callee
		callee.SetCertificates(func() *ca.Credentials { return calleeCreds })
		caller := startConfig(t, callerConfig(callerLog, callee.ListenerAddr("inbound").String(), "spiffe://cluster.local/ns/default/sa/callee", true), nil)
		callerCreds := c.caller
		caller.SetCertificates(func() *ca.Credentials { return callerCreds })
		if code, _ := get(t, caller.ListenerAddr("outbound").String()); code != 503 {
			t.Errorf("%s: %d, want 503", c.name, code)
		}
		waitFile(t, callerLog, c.want)
	}
	waitFile(t, filepath.Join(dir, "callee.log"), "tls_handshake_failed{TLS:_the_peer's_certificate:_x509:_certificate_has_expired")
}
