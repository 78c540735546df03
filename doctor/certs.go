package doctor

import (
	"fmt"
	"net/http"
	"time"
)

// certsDump is what the sidecar's /certs says, as Envoy's does.
type certsDump struct {
	Certificates []struct {
		CACert    []certDetails `json:"ca_cert"`
		CertChain []certDetails `json:"cert_chain"`
	} `json:"certificates"`
}

type certDetails struct {
	SerialNumber    string              `json:"serial_number"`
	SubjectAltNames []map[string]string `json:"subject_alt_names"`
	ExpirationTime  string              `json:"expiration_time"`
}

// certificateFrom reads the sidecar's workload certificate from its
// admin API's /certs: who it says the pod is, and until when.
func certificateFrom(client *http.Client, url string, now time.Time) Check {
	c := Check{Name: "workload certificate"}
	var d certsDump
	if !askAdmin(&c, client, url, "the sidecar gets no certificate (no --ca-address): no mutual TLS", &d) {
		return c
	}
	if len(d.Certificates) == 0 || len(d.Certificates[0].CertChain) == 0 {
		c.Status, c.Detail = Fail, "the sidecar has no certificate yet"
		c.Hint = "it asks the CA when it starts and retries; its log says why not (the token, the CA's address, the trust bundle)"
		return c
	}
	leaf := d.Certificates[0].CertChain[0]
	id := "no URI SAN"
	for _, san := range leaf.SubjectAltNames {
		if u, ok := san["uri"]; ok {
			id = u
			break
		}
	}
	expiry, err := time.Parse(time.RFC3339, leaf.ExpirationTime)
	switch {
	case err != nil:
		c.Status, c.Detail = Fail, fmt.Sprintf("%s: an expiration time that does not read (%q)", id, leaf.ExpirationTime)
	case !expiry.After(now):
		c.Status, c.Detail = Fail, fmt.Sprintf("%s expired at %s", id, leaf.ExpirationTime)
		c.Hint = "the sidecar renews half way through a certificate's life: it has not reached the CA since; its log says why"
	default:
		c.Status, c.Detail = Pass, fmt.Sprintf("%s (serial %s), expires in %s; trusts %d root(s)", id, leaf.SerialNumber,
			expiry.Sub(now).Round(time.Minute), len(d.Certificates[0].CACert))
	}
	return c
}
