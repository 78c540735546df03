package control

import (
	"strings"
	"testing"
)

func TestPeerAuthenticationRefused(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{`{mtls: {mode: STRICTER}}`, `spec.mtls.mode: "STRICTER" is not UNSET, DISABLE, PERMISSIVE or STRICT`},
		{`{portLevelMtls: {8080: {mode: STRICT}}}`, "spec.portLevelMtls: needs a selector"},
		{`{selector: {matchLabels: {app: a}}, portLevelMtls: {http: {mode: STRICT}}}`, "spec.portLevelMtls.http: not a port number"},
		{`{selector: {matchLabels: {app: a}}, portLevelMtls: {8080: {mode: strict}}}`, `spec.portLevelMtls.8080.mode: "strict" is not`},
	} {
		_, err := PeerAuthenticationFrom([]byte("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: ns}\nspec: " + c.spec))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.spec, err, c.want)
		}
	}
}

// TestInboundMTLS: Istio's precedence: the workload's port, the
// workload's, the namespace's, the mesh's (root namespace), PERMISSIVE;
// UNSET defers.
func TestInboundMTLS(t *testing.T) {
	pa := func(ns, name, doc string) *PeerAuthentication {
		p, err := PeerAuthenticationFrom([]byte("metadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + doc))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	app := &Pod{Name: "app-1", Namespace: "shop", Labels: map[string]string{"app": "cart"}}
	other := &Pod{Name: "db-1", Namespace: "shop", Labels: map[string]string{"app": "db"}}
	for _, c := range []struct {
		name     string
		policies []*PeerAuthentication
		pod      *Pod
		port     uint16
		want     MTLSMode
	}{
		{"none", nil, app, 80, MTLSPermissive},
		{"mesh", []*PeerAuthentication{pa("istio-system", "default", "{mtls: {mode: STRICT}}")}, app, 80, MTLSStrict},
		{"namespace over mesh", []*PeerAuthentication{pa("istio-system", "default", "{mtls: {mode: STRICT}}"), pa("shop", "default", "{mtls: {mode: DISABLE}}")}, app, 80, MTLSDisable},
		{"unset namespace defers", []*PeerAuthentication{pa("istio-system", "default", "{mtls: {mode: STRICT}}"), pa("shop", "default", "{mtls: {mode: UNSET}}")}, app, 80, MTLSStrict},
		{"workload over namespace", []*PeerAuthentication{pa("shop", "default", "{mtls: {mode: STRICT}}"),
			pa("shop", "cart", "{selector: {matchLabels: {app: cart}}, mtls: {mode: PERMISSIVE}}")}, app, 80, MTLSPermissive},
		{"another workload's", []*PeerAuthentication{pa("shop", "default", "{mtls: {mode: STRICT}}"),
			pa("shop", "cart", "{selector: {matchLabels: {app: cart}}, mtls: {mode: PERMISSIVE}}")}, other, 80, MTLSStrict},
		{"port over workload", []*PeerAuthentication{pa("shop", "cart", "{selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}, portLevelMtls: {9090: {mode: DISABLE}}}")}, app, 9090, MTLSDisable},
		{"another port", []*PeerAuthentication{pa("shop", "cart", "{selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}, portLevelMtls: {9090: {mode: DISABLE}}}")}, app, 80, MTLSStrict},
		{"a selector in the root namespace is its own pods'", []*PeerAuthentication{pa("istio-system", "x", "{selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}}")}, app, 80, MTLSPermissive},
		{"another namespace's", []*PeerAuthentication{pa("web", "default", "{mtls: {mode: STRICT}}")}, app, 80, MTLSPermissive},
	} {
		w := NewWorld()
		for _, p := range c.policies {
			w.PutPeerAuthentication(p)
		}
		if got := w.inboundMTLS(c.pod, c.port, "istio-system"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestAuthorizationPolicyRefused(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{`{action: PERMIT}`, `spec.action: "PERMIT" is not ALLOW, DENY, AUDIT or CUSTOM`},
		{`{rules: [{to: [{operation: {ports: [http]}}]}]}`, `spec.rules[0].to[0].operation.ports[0]: "http" is not a port`},
		{`{rules: [{when: [{key: "request.auth.claims[iss]", values: [x]}]}]}`, `spec.rules[0].when[0].key: "request.auth.claims[iss]" is not a key shunt runs`},
		{`{rules: [{when: [{key: source.ip}]}]}`, `spec.rules[0].when[0]: values or notValues is needed`},
	} {
		_, err := AuthorizationPolicyFrom([]byte("metadata: {name: p, namespace: ns}\nspec: " + c.spec))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.spec, err, c.want)
		}
	}
	ap, err := AuthorizationPolicyFrom([]byte("metadata: {name: p, namespace: ns}\nspec: {action: CUSTOM, provider: {name: opa}, rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"))
	if err != nil || len(ap.Problems) != 2 || !strings.Contains(strings.Join(ap.Problems, " "), "spec.rules[0].from[0].source.requestPrincipals") || !ap.Rules[0].Unrun {
		t.Errorf("CUSTOM and a JWT field: %+v %v, want both reported, the rule marked", ap, err)
	}
}
