package proxy

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// outboundChains is the shape of an outbound listener a control plane
// sends: an HTTP port for every address, a TCP service on the same port
// at one address, an auto port (HTTP and TCP chains sharing an address,
// told apart by detection) and a catch-all.
const outboundChains = `
static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}
    filter_chains:
    - name: http-8080
      filter_chain_match: {destination_port: 8080}
      filters: [HCM]
    - name: tcp-8080-db
      filter_chain_match: {destination_port: 8080, prefix_ranges: [{address_prefix: 10.96.0.7, prefix_len: 32}]}
      filters: [TCP]
    - name: auto-http
      filter_chain_match: {destination_port: 9000, prefix_ranges: [{address_prefix: 10.96.0.9, prefix_len: 32}], application_protocols: [http/1.1, http/1.0, h2c]}
      filters: [HCM]
    - name: auto-tcp
      filter_chain_match: {destination_port: 9000, prefix_ranges: [{address_prefix: 10.96.0.9, prefix_len: 32}]}
      filters: [TCP]
    - name: net-tcp
      filter_chain_match: {prefix_ranges: [{address_prefix: 10.97.0.0, prefix_len: 16}]}
      filters: [TCP]
    - name: passthrough
      filters: [TCP]
  clusters:
  - {name: c, type: STATIC}
`

func TestChainSelectionByAddress(t *testing.T) {
	hcm := `{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}`
	tcp := `{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c}}`
	config := strings.NewReplacer("[HCM]", "["+hcm+"]", "[TCP]", "["+tcp+"]").Replace(outboundChains)
	b, err := envoyconfig.Parse([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	res, err := build(b, buildOptions{open: func(string) (io.Writer, error) { return io.Discard, nil }})
	if err != nil {
		t.Fatal(err)
	}
	l := res.listeners[0]
	for _, c := range []struct {
		dst      string
		proto    Protocol
		chain    string
		declared string // "" when detection must run
	}{
		{"10.96.0.1:8080", ProtocolHTTP1, "http-8080", "http/1.1"},
		{"10.96.0.7:8080", ProtocolTCP, "tcp-8080-db", "tcp"}, // the address is more specific than the port alone
		{"10.96.0.9:9000", ProtocolHTTP1, "auto-http", ""},
		{"10.96.0.9:9000", ProtocolTCP, "auto-tcp", ""},
		{"10.96.0.10:9000", ProtocolHTTP1, "passthrough", ""},
		{"10.97.3.4:5432", ProtocolTCP, "net-tcp", ""},
		{"192.0.2.1:80", ProtocolTCP, "passthrough", ""},
	} {
		dst := netip.MustParseAddrPort(c.dst)
		fc := l.chainFor(dst, c.proto, nil, "")
		if fc == nil || fc.name != c.chain {
			t.Errorf("%s %v: chain %v, want %s", c.dst, c.proto, fc, c.chain)
		}
		proto, ok := l.declared(dst)
		got := ""
		if ok {
			got = proto.String()
		}
		if got != c.declared {
			t.Errorf("%s: declared %q, want %q", c.dst, got, c.declared)
		}
	}
}

func TestPrefixRangeProblems(t *testing.T) {
	for _, c := range []struct{ prefix, want string }{
		{`{address_prefix: 10.0.0.300, prefix_len: 32}`, `prefix_ranges[0]: invalid: address_prefix "10.0.0.300" is not an IP address`},
		{`{address_prefix: 10.0.0.0, prefix_len: 33}`, `prefix_ranges[0]: invalid: prefix_len 33 is longer than 10.0.0.0's 32 bits`},
	} {
		config := `
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 15001}}
    filter_chains:
    - filter_chain_match: {prefix_ranges: [` + c.prefix + `]}
      filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c}}]
  clusters:
  - {name: c, type: STATIC}
`
		b, err := envoyconfig.Parse([]byte(config))
		if err != nil {
			t.Fatal(err)
		}
		_, err = build(b, buildOptions{open: func(string) (io.Writer, error) { return io.Discard, nil }})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.prefix, err, c.want)
		}
	}
}

// TestChainSelectionByTransport: Envoy's order of criteria, and where it
// falls back: a port whose chains take nothing of a connection gives way
// to the chains naming no port; past the port, a criterion leaves the
// connection to its most specific chains only.
func TestChainSelectionByTransport(t *testing.T) {
	tcp := `[{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c}}]`
	config := strings.ReplaceAll(`
static_resources:
  listeners:
  - name: virtualInbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15006}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - name: strict-9443
      filter_chain_match: {destination_port: 9443, transport_protocol: tls, application_protocols: [istio, istio-http/1.1]}
      filters: TCP
    - name: mtls-8080
      filter_chain_match: {destination_port: 8080, transport_protocol: tls, application_protocols: [istio-http/1.1]}
      filters: TCP
    - name: app-tls-8080
      filter_chain_match: {destination_port: 8080, transport_protocol: tls}
      filters: TCP
    - name: plain-8080
      filter_chain_match: {destination_port: 8080, transport_protocol: raw_buffer}
      filters: TCP
    - name: db-tls-7000
      filter_chain_match: {destination_port: 7000, prefix_ranges: [{address_prefix: 10.1.0.7, prefix_len: 32}], transport_protocol: tls}
      filters: TCP
    - name: any-7000
      filter_chain_match: {destination_port: 7000}
      filters: TCP
    - name: passthrough
      filters: TCP
  clusters:
  - {name: c, type: STATIC}
`, "TCP", tcp)
	b, err := envoyconfig.Parse([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	res, err := build(b, buildOptions{open: func(string) (io.Writer, error) { return io.Discard, nil }})
	if err != nil {
		t.Fatal(err)
	}
	l := res.listeners[0]
	for _, c := range []struct {
		dst   string
		proto Protocol
		alpn  []string
		chain string
	}{
		{"10.1.0.5:9443", ProtocolTLS, []string{"istio"}, "strict-9443"},
		{"10.1.0.5:9443", ProtocolTCP, nil, "passthrough"}, // the port's chains take nothing: the port-less ones do
		{"10.1.0.5:8080", ProtocolTLS, []string{"istio-http/1.1", "istio"}, "mtls-8080"},
		{"10.1.0.5:8080", ProtocolTLS, []string{"h2", "http/1.1"}, "app-tls-8080"},
		{"10.1.0.5:8080", ProtocolHTTP1, nil, "plain-8080"},
		{"10.1.0.7:7000", ProtocolTLS, nil, "db-tls-7000"},
		{"10.1.0.7:7000", ProtocolTCP, nil, "passthrough"}, // the longest prefix's chain takes TLS only: not any-7000
		{"10.1.0.8:7000", ProtocolTCP, nil, "any-7000"},
	} {
		fc := l.chainFor(netip.MustParseAddrPort(c.dst), c.proto, c.alpn, "")
		if fc == nil || fc.name != c.chain {
			t.Errorf("%s %v %v: chain %v, want %s", c.dst, c.proto, c.alpn, fc, c.chain)
		}
	}
}
