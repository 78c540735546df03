package control

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// ReferenceGrant is a Gateway API ReferenceGrant: its namespace lets the
// objects From name its objects To (a route in another namespace its
// Services, a Gateway its Secrets).
type ReferenceGrant struct {
	Name, Namespace string
	From            []GrantFrom
	To              []GrantTo
}

// GrantFrom is who a ReferenceGrant lets refer: objects of a kind in a
// namespace.
type GrantFrom struct{ Kind, Namespace string }

// GrantTo is what a ReferenceGrant lets be referred to: objects of a kind,
// one of them by name or (Name "") all.
type GrantTo struct{ Kind, Name string }

var referenceGrantSchema = schema{
	"from": listOf{schema{"group": nil, "kind": nil, "namespace": nil}},
	"to":   listOf{schema{"group": nil, "kind": nil, "name": nil}},
}

// ReferenceGrantFrom reads a ReferenceGrant manifest. Only grants shunt
// can use are kept: from Gateway API's routes and Gateways, to core
// Services and Secrets.
func ReferenceGrantFrom(doc []byte) (*ReferenceGrant, error) {
	o, _, err := decodeObject(doc, referenceGrantSchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		From []struct{ Group, Kind, Namespace string }
		To   []struct {
			Group, Kind string
			Name        *string
		}
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("ReferenceGrant %s/%s: %v", o.Metadata.Namespace, o.Metadata.Name, err)
	}
	g := &ReferenceGrant{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace}
	for _, f := range spec.From {
		if f.Group == "gateway.networking.k8s.io" && f.Namespace != "" {
			g.From = append(g.From, GrantFrom{Kind: f.Kind, Namespace: f.Namespace})
		}
	}
	for _, t := range spec.To {
		if t.Group == "" || t.Group == "core" {
			g.To = append(g.To, GrantTo{Kind: t.Kind, Name: deref(t.Name)})
		}
	}
	return g, nil
}

// PutReferenceGrant adds or replaces a ReferenceGrant.
func (w *World) PutReferenceGrant(g *ReferenceGrant) { w.ReferenceGrants[g.Namespace+"/"+g.Name] = g }

// granted says an object of fromKind in namespace fromNS may refer to
// the toKind named ns/name: in its own namespace always, in another
// where a ReferenceGrant there says so.
func (w *World) granted(fromKind, fromNS, toKind, ref string) bool {
	ns, name, _ := strings.Cut(ref, "/")
	if ns == fromNS {
		return true
	}
	for _, g := range w.ReferenceGrants {
		if g.Namespace == ns && slices.Contains(g.From, GrantFrom{fromKind, fromNS}) &&
			slices.ContainsFunc(g.To, func(t GrantTo) bool { return t.Kind == toKind && (t.Name == "" || t.Name == name) }) {
			return true
		}
	}
	return false
}

// serviceRef is the namespace/name of a service's FQDN host in the
// cluster's domain; "" for another host.
func (w *World) serviceRef(host string) string {
	name, ns, ok := strings.Cut(strings.TrimSuffix(host, ".svc."+w.Domain), ".")
	if !ok || !strings.HasSuffix(host, ".svc."+w.Domain) || strings.Contains(ns, ".") {
		return ""
	}
	return ns + "/" + name
}
