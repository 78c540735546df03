package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"testing"
)

// helloOf is the first TLS record Go's client sends with this SNI and
// ALPN: its ClientHello.
func helloOf(t *testing.T, sni string, alpn []string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		tls.Client(client, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
		client.Close()
	}()
	head := make([]byte, 5)
	if _, err := io.ReadFull(server, head); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(head[3])<<8|int(head[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		t.Fatal(err)
	}
	return append(head, body...)
}

// TestClientHello: tls_inspector's reading of real ClientHellos: the
// record is whole only once all of it is in; the server name and the
// offered protocols, whatever their lengths.
func TestClientHello(t *testing.T) {
	for _, c := range []struct {
		sni  string
		alpn []string
	}{
		{"", nil},
		{"api.example.com", nil},
		{"", []string{"istio-http/1.1"}},
		{"backend.default.svc.cluster.local", []string{"istio-http/1.1", "istio"}},
		{"x", []string{"istio-h2", "istio-peer-exchange", "istio", "h2", "http/1.1"}},
		{"a-name-long-enough-to-make-lengths-odd.example.org", []string{"abcdefghijklmno", "p"}},
	} {
		hello := helloOf(t, c.sni, c.alpn)
		if p, final := classifyTLS(hello); p != ProtocolTLS || !final {
			t.Errorf("%v: the whole ClientHello: %v final %v", c, p, final)
		}
		if p, final := classifyTLS(hello[:len(hello)-1]); p != ProtocolTLS || final {
			t.Errorf("%v: one byte short: %v final %v, want to wait", c, p, final)
		}
		sni, alpn := clientHello(hello)
		if sni != c.sni || !slices.Equal(alpn, c.alpn) {
			t.Errorf("read %q %q, want %q %q", sni, alpn, c.sni, c.alpn)
		}
	}
}
