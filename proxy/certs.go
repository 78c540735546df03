package proxy

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/shunt-dev/shunt/ca"
)

// SetCertificates has the admin API's /certs show current(): the
// workload certificate in force and the roots it trusts.
func (p *Proxy) SetCertificates(current func() *ca.Credentials) { p.certs.Store(current) }

// certDetails is one certificate as Envoy's admin /certs shows it.
type certDetails struct {
	Path                string              `json:"path"`
	SerialNumber        string              `json:"serial_number"`
	SubjectAltNames     []map[string]string `json:"subject_alt_names"`
	DaysUntilExpiration string              `json:"days_until_expiration"`
	ValidFrom           string              `json:"valid_from"`
	ExpirationTime      string              `json:"expiration_time"`
}

// serveCerts is Envoy's /certs: {"certificates": [{"ca_cert": [...],
// "cert_chain": [...]}]}, empty before the first certificate; 404 with no
// CA to get one from.
func (p *Proxy) serveCerts(w http.ResponseWriter, _ *http.Request) {
	type entry struct {
		CACert    []certDetails `json:"ca_cert"`
		CertChain []certDetails `json:"cert_chain"`
	}
	out := struct {
		Certificates []entry `json:"certificates"`
	}{Certificates: []entry{}}
	current, _ := p.certs.Load().(func() *ca.Credentials)
	if current == nil {
		http.Error(w, "no workload certificate: the sidecar has no CA (--ca-address)", http.StatusNotFound)
		return
	}
	{
		if c := current(); c != nil {
			now := time.Now()
			e := entry{}
			for _, r := range c.RootCerts {
				e.CACert = append(e.CACert, describeCert(r, now))
			}
			e.CertChain = append(e.CertChain, describeCert(c.Leaf, now))
			for _, x := range c.Chain {
				e.CertChain = append(e.CertChain, describeCert(x, now))
			}
			out.Certificates = append(out.Certificates, e)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(out)
}

func describeCert(c *x509.Certificate, now time.Time) certDetails {
	d := certDetails{Path: "<inline>", SerialNumber: c.SerialNumber.Text(16), SubjectAltNames: []map[string]string{},
		DaysUntilExpiration: strconv.Itoa(max(0, int(c.NotAfter.Sub(now).Hours()/24))),
		ValidFrom:           c.NotBefore.UTC().Format(time.RFC3339), ExpirationTime: c.NotAfter.UTC().Format(time.RFC3339)}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, map[string]string{"uri": u.String()})
	}
	for _, n := range c.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, map[string]string{"dns": n})
	}
	return d
}
