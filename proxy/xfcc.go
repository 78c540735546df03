package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// clientCert is an HTTP connection manager's x-forwarded-client-cert
// handling: forward_client_cert_details and what of the client's
// certificate set_current_client_cert_details puts in.
type clientCert struct {
	mode              hcmv3.HttpConnectionManager_ForwardClientCertDetails
	subject, uri, dns bool
}

const xfccName = "x-forwarded-client-cert"

var xfccNameB = []byte(xfccName)

// element is a mutual-TLS connection's element of the header, in
// Envoy's order: By (the proxy's own URI SAN), Hash (SHA-256 of the
// client's certificate), then Subject, URI and DNS as configured. It is
// made once, when the handshake is done (an HTTP/2 connection's streams
// read it at once).
func (cc *clientCert) element(d *downstream) string {
	if d.peerCert == nil {
		return ""
	}
	var b strings.Builder
	if d.localURI != "" {
		b.WriteString("By=" + d.localURI + ";")
	}
	sum := sha256.Sum256(d.peerCert.Raw)
	b.WriteString("Hash=" + hex.EncodeToString(sum[:]))
	if cc.subject {
		b.WriteString(`;Subject="` + strings.ReplaceAll(subjectOf(d.peerCert), `"`, `\"`) + `"`)
	}
	if cc.uri {
		for _, u := range d.peerCert.URIs {
			b.WriteString(";URI=" + u.String())
		}
	}
	if cc.dns {
		for _, n := range d.peerCert.DNSNames {
			b.WriteString(";DNS=" + n)
		}
	}
	return b.String()
}

func subjectOf(c *x509.Certificate) string {
	if len(c.Subject.Names) == 0 {
		return ""
	}
	return c.Subject.String()
}

// action is what to do with a request's header on d: drop it (keep
// false), and the element to add ("" for none).
func (cc *clientCert) action(d *downstream) (keep bool, add string) {
	mtls := d.peerCert != nil
	switch cc.mode {
	case hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		return true, ""
	case hcmv3.HttpConnectionManager_FORWARD_ONLY:
		return mtls, ""
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		if mtls {
			return true, d.xfcc
		}
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		if mtls {
			return false, d.xfcc
		}
	}
	return false, "" // SANITIZE, Envoy's default; and any mode on a connection that is not mutual TLS
}

// applyXFCC1 applies the handling to an HTTP/1 request.
func (cc *clientCert) applyXFCC1(req *http1.Request, d *downstream) {
	keep, add := cc.action(d)
	old, has := req.Get(xfccName)
	if !keep && has {
		kept := req.Headers[:0]
		for _, hd := range req.Headers {
			if !strings.EqualFold(http1.View(hd.Name), xfccName) {
				kept = append(kept, hd)
			}
		}
		req.Headers = kept
		has = false
	}
	switch {
	case add == "":
	case has:
		for i := range req.Headers {
			if strings.EqualFold(http1.View(req.Headers[i].Name), xfccName) {
				req.Headers[i].Value = []byte(string(old) + "," + add)
				break
			}
		}
	default:
		req.Headers = append(req.Headers, http1.Header{Name: xfccNameB, Value: []byte(add)})
	}
}

// applyXFCC2 applies the handling to an HTTP/2 request's header.
func (cc *clientCert) applyXFCC2(h http.Header, d *downstream) {
	keep, add := cc.action(d)
	old := strings.Join(h.Values(xfccName), ",")
	if !keep {
		h.Del(xfccName)
		old = ""
	}
	switch {
	case add == "":
	case old != "":
		h.Set(xfccName, old+","+add)
	default:
		h.Set(xfccName, add)
	}
}
