// Package ca is the mesh's certificate authority and its client: workload
// identities in SPIFFE's form as Istio spells them
// (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>), short-lived
// X.509 certificates signed for them, and the keeper that gets a
// sidecar's certificate (its key never leaves the sidecar) and renews it
// before it expires. The wire is Istio's IstioCertificateService, so
// either side can talk to Istio's.
package ca

import (
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is Istio's: the cluster's.
const DefaultTrustDomain = "cluster.local"

// Identity is a workload's identity: its service account, in a namespace,
// in a trust domain.
type Identity struct {
	TrustDomain, Namespace, ServiceAccount string
}

// String is the identity's SPIFFE ID.
func (id Identity) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the identity as a certificate's URI SAN.
func (id Identity) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// ParseIdentity reads a SPIFFE ID of Istio's form.
func ParseIdentity(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: %v", s, err)
	}
	return identityOf(u)
}

func identityOf(u *url.URL) (Identity, error) {
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", u.String())
	}
	return Identity{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// Check says what is wrong with an identity's parts, if anything.
func (id Identity) Check() error {
	for _, p := range []struct{ name, v string }{{"trust domain", id.TrustDomain}, {"namespace", id.Namespace}, {"service account", id.ServiceAccount}} {
		if p.v == "" {
			return fmt.Errorf("identity: no %s", p.name)
		}
		if strings.ContainsAny(p.v, "/:?#@ ") {
			return fmt.Errorf("identity: %s %q has a character a SPIFFE ID cannot hold", p.name, p.v)
		}
	}
	return nil
}
