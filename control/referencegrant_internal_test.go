package control

import "testing"

// TestGranted: a reference within a namespace needs no grant; across
// namespaces, a ReferenceGrant in the target's namespace from the
// referrer's kind and namespace, to the target's kind (by name, or all).
func TestGranted(t *testing.T) {
	w := NewWorld()
	for _, doc := range []string{`
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}]
  to: [{group: "", kind: Secret}]`, `
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: db, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: edge}, {group: other.example, kind: TLSRoute, namespace: rogue}]
  to: [{group: "", kind: Service, name: db}]`} {
		g, err := ReferenceGrantFrom([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		w.PutReferenceGrant(g)
	}
	for _, c := range []struct {
		fromKind, fromNS, toKind, ref string
		want                          bool
	}{
		{"HTTPRoute", "edge", "Service", "edge/web", true},
		{"Gateway", "edge", "Secret", "certs/any", true},
		{"Gateway", "other", "Secret", "certs/any", false},
		{"HTTPRoute", "edge", "Secret", "certs/any", false},
		{"Gateway", "edge", "Service", "certs/any", false},
		{"TLSRoute", "edge", "Service", "data/db", true},
		{"TLSRoute", "edge", "Service", "data/cache", false},
		{"HTTPRoute", "edge", "Service", "data/db", false},
		{"TLSRoute", "rogue", "Service", "data/db", false}, // another API group's kind
	} {
		if got := w.granted(c.fromKind, c.fromNS, c.toKind, c.ref); got != c.want {
			t.Errorf("%s of %s to %s %s: granted %v, want %v", c.fromKind, c.fromNS, c.toKind, c.ref, got, c.want)
		}
	}
	if got := w.serviceRef("db.data.svc.cluster.local"); got != "data/db" {
		t.Errorf("serviceRef: %q", got)
	}
	if got := w.serviceRef("api.example.com"); got != "" {
		t.Errorf("serviceRef of an outside host: %q", got)
	}
}
