package control

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// GatewayController is the controllerName of the GatewayClasses whose
// Gateways shunt runs.
const GatewayController = "shunt.dev/gateway"

// GatewayClass is a Gateway API GatewayClass: which controller runs the
// Gateways of the class.
type GatewayClass struct {
	Name, Controller string
}

// Gateway is a Gateway API (gateway.networking.k8s.io/v1) Gateway: the
// listeners a gateway's proxies open, and which routes may attach.
type Gateway struct {
	Name, Namespace string
	Generation      int64
	Class           string
	Listeners       []GatewayListener
	// Refused are the listeners shunt does not run, with why.
	Refused []RefusedListener
	// Problems are what of it is not run, with why.
	Problems []string
}

// RefusedListener is a Gateway's listener left out: its name, the reason
// its status gives (Gateway API's), and why.
type RefusedListener struct{ Name, Reason, Message string }

// GatewayListener is one of a Gateway's listeners.
type GatewayListener struct {
	Name     string
	Port     uint16
	Protocol string // HTTP, HTTPS, TLS (Passthrough or Terminate), TCP; UDP is reported, not run
	// Terminate: a TLS listener that terminates TLS with Certificates
	// and sends what it carries on to its TLSRoutes' backends.
	Terminate bool
	Hostname  string // "" for any; may start with "*."
	// AllNamespaces: routes of every namespace may attach (allowedRoutes
	// from: All); Namespaces: of those it selects by their labels (from:
	// Selector); else only the Gateway's own (Same).
	AllNamespaces bool
	Namespaces    labels.Selector
	// Certificates are an HTTPS listener's certificateRefs (TLS Secrets,
	// namespace/name; another namespace's where a ReferenceGrant there
	// lets the Gateway), which it terminates TLS with, chosen by SNI.
	Certificates []string
	// Kinds are the kinds of route that may attach: allowedRoutes.kinds,
	// else the protocol's (HTTPRoute and GRPCRoute; TLSRoute; TCPRoute).
	Kinds []string
}

// routeKinds are the kinds of route shunt attaches to a listener of each
// protocol.
var routeKinds = map[string][]string{"HTTP": {"HTTPRoute", "GRPCRoute"}, "HTTPS": {"HTTPRoute", "GRPCRoute"}, "TLS": {"TLSRoute"}, "TCP": {"TCPRoute"}}

// ParentGateway is a route's parentRef to a Gateway: its listener by
// name (sectionName) or port, or all of them.
type ParentGateway struct {
	Gateway string // namespace/name
	Section string
	Port    uint16
}

var gatewaySchema = schema{
	"gatewayClassName": nil,
	"listeners": listOf{schema{"name": nil, "port": nil, "protocol": nil, "hostname": nil,
		"allowedRoutes": schema{"namespaces": schema{"from": nil, "selector": nil}, "kinds": nil},
		"tls":           schema{"mode": nil, "certificateRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil}}}}},
}

// GatewayFrom reads a Gateway manifest.
func GatewayFrom(doc []byte) (*Gateway, error) {
	o, problems, err := decodeObject(doc, gatewaySchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		GatewayClassName string
		Listeners        []struct {
			Name, Protocol, Hostname string
			Port                     uint16
			AllowedRoutes            *struct {
				Namespaces *struct {
					From     string
					Selector *metav1.LabelSelector
				}
				Kinds []struct{ Group, Kind string }
			}
			TLS *struct {
				Mode            string
				CertificateRefs []struct{ Group, Kind, Name, Namespace string }
			}
		}
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("Gateway %s: %v", name, err)
	}
	if spec.GatewayClassName == "" {
		return nil, fmt.Errorf("Gateway %s: spec.gatewayClassName: none", name)
	}
	g := &Gateway{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Generation: o.Metadata.Generation, Class: spec.GatewayClassName, Problems: problems}
	for i, l := range spec.Listeners {
		path := fmt.Sprintf("spec.listeners[%d]", i)
		if l.Name == "" || l.Port == 0 {
			return nil, fmt.Errorf("Gateway %s: %s: a listener needs a name and a port", name, path)
		}
		gl := GatewayListener{Name: l.Name, Port: l.Port, Protocol: l.Protocol, Hostname: strings.ToLower(l.Hostname)}
		// refuse leaves the listener out, saying why (field: message) and
		// the reason its status gives.
		refuse := func(reason, problem string) {
			g.Problems = append(g.Problems, path+"."+problem)
			g.Refused = append(g.Refused, RefusedListener{Name: l.Name, Reason: reason, Message: problem})
		}
		switch {
		case l.Protocol == "HTTPS" && (l.TLS == nil || l.TLS.Mode != "" && l.TLS.Mode != "Terminate"):
			refuse("UnsupportedProtocol", "tls.mode: only Terminate is run by shunt yet, with certificateRefs")
			continue
		case l.Protocol == "TLS" && (l.TLS == nil || l.TLS.Mode != "Passthrough" && l.TLS.Mode != "Terminate"):
			refuse("UnsupportedProtocol", "tls.mode: a TLS listener is Passthrough or Terminate")
			continue
		case l.Protocol == "HTTPS" || l.Protocol == "TLS" && l.TLS.Mode == "Terminate":
			gl.Terminate = l.Protocol == "TLS"
			for j, ref := range l.TLS.CertificateRefs {
				ns := cmp.Or(ref.Namespace, o.Metadata.Namespace)
				switch {
				case ref.Kind != "" && ref.Kind != "Secret" || ref.Group != "" && ref.Group != "core":
					g.Problems = append(g.Problems, fmt.Sprintf("%s.tls.certificateRefs[%d]: a %s, not a Secret", path, j, ref.Kind))
				default:
					gl.Certificates = append(gl.Certificates, ns+"/"+ref.Name)
				}
			}
			if len(gl.Certificates) == 0 {
				refuse("InvalidCertificateRef", "tls.certificateRefs: no certificate to terminate TLS with: the listener is left out")
				continue
			}
		case routeKinds[l.Protocol] == nil:
			refuse("UnsupportedProtocol", fmt.Sprintf("protocol: %s is not run by shunt yet (HTTP, HTTPS, TLS and TCP are)", l.Protocol))
			continue
		}
		gl.Kinds = routeKinds[l.Protocol]
		if ar := l.AllowedRoutes; ar != nil {
			if ns := ar.Namespaces; ns != nil {
				switch ns.From {
				case "", "Same":
				case "All":
					gl.AllNamespaces = true
				case "Selector":
					sel, err := metav1.LabelSelectorAsSelector(ns.Selector)
					if ns.Selector == nil || err != nil {
						return nil, fmt.Errorf("Gateway %s: %s.allowedRoutes.namespaces.selector: %v", name, path, cmp.Or(err, errors.New("from: Selector needs one")))
					}
					gl.Namespaces = sel
				default:
					return nil, fmt.Errorf("Gateway %s: %s.allowedRoutes.namespaces.from: %q is not All, Same or Selector", name, path, ns.From)
				}
			}
			if len(ar.Kinds) > 0 {
				gl.Kinds = nil
			}
			for j, k := range ar.Kinds {
				if slices.Contains(routeKinds[l.Protocol], k.Kind) {
					gl.Kinds = append(gl.Kinds, k.Kind)
				} else {
					g.Problems = append(g.Problems, fmt.Sprintf("%s.allowedRoutes.kinds[%d]: %s is not a kind shunt attaches to a %s listener (%s)",
						path, j, k.Kind, l.Protocol, strings.Join(routeKinds[l.Protocol], ", ")))
				}
			}
		}
		g.Listeners = append(g.Listeners, gl)
	}
	return g, nil
}

// GatewayClassFrom reads a GatewayClass manifest.
func GatewayClassFrom(doc []byte) (*GatewayClass, error) {
	o, _, err := decodeObject(doc, schema{"controllerName": nil, "parametersRef": nil, "description": nil})
	if err != nil {
		return nil, err
	}
	var spec struct{ ControllerName string }
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("GatewayClass %s: %v", o.Metadata.Name, err)
	}
	return &GatewayClass{Name: o.Metadata.Name, Controller: spec.ControllerName}, nil
}

// PutGateway adds or replaces a Gateway.
func (w *World) PutGateway(g *Gateway) { w.Gateways[g.Namespace+"/"+g.Name] = g }

// PutGatewayClass adds or replaces a GatewayClass (cluster-scoped: by
// name).
func (w *World) PutGatewayClass(c *GatewayClass) { w.GatewayClasses[c.Name] = c }

// gatewayOf is the Gateway a gateway's pod runs: the one its label
// gateway.networking.k8s.io/gateway-name names in its namespace (as
// Istio labels the gateways it deploys), if its class is shunt's.
func (w *World) gatewayOf(n Node) (*Gateway, string) {
	name := w.labelsOf(n)["gateway.networking.k8s.io/gateway-name"]
	if name == "" {
		return nil, "the pod has no label gateway.networking.k8s.io/gateway-name naming its Gateway"
	}
	key := n.Namespace + "/" + name
	if w.Gateways[key] == nil {
		return nil, "no Gateway " + key
	}
	g := w.ours(key)
	if g == nil {
		return nil, fmt.Sprintf("Gateway %s: its class %s is not one of shunt's (controllerName %s)", key, w.Gateways[key].Class, GatewayController)
	}
	return g, ""
}

// labelsOf are a node's pod's labels: as the cluster knows the pod, else
// as its node metadata says.
func (w *World) labelsOf(n Node) map[string]string {
	for _, ip := range n.IPs {
		if p := w.podByIP(ip); p != nil && p.Namespace == n.Namespace {
			return p.Labels
		}
	}
	return n.Labels
}

// admits says a route of kind, of namespace ns, with parent p attaches
// to a Gateway's listener l: p names it (by section, port or neither),
// l allows the kind and the namespace (the Gateway's own, all, or those
// its selector picks by their labels).
func (w *World) admits(g *Gateway, l GatewayListener, kind, ns string, p ParentGateway) bool {
	if p.Gateway != g.Namespace+"/"+g.Name || p.Section != "" && p.Section != l.Name || p.Port != 0 && p.Port != l.Port || !slices.Contains(l.Kinds, kind) {
		return false
	}
	switch {
	case l.AllNamespaces:
		return true
	case l.Namespaces != nil:
		return l.Namespaces.Matches(labels.Set(w.Namespaces[ns]))
	}
	return ns == g.Namespace
}

// hostnames are the names a listener serves for a route: the route's
// the listener's hostname admits (its own when the route names none),
// "*" when neither names any.
func (l GatewayListener) hostnames(route []string) []string {
	if len(route) == 0 {
		if l.Hostname == "" {
			return []string{"*"}
		}
		return []string{l.Hostname}
	}
	var out []string
	for _, h := range route {
		h = strings.ToLower(h)
		switch {
		case l.Hostname == "" || h == l.Hostname:
			out = append(out, h)
		case strings.HasPrefix(l.Hostname, "*.") && strings.HasSuffix(h, l.Hostname[1:]):
			out = append(out, h) // the listener's wildcard covers it
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(l.Hostname, h[1:]):
			out = append(out, l.Hostname) // the route's wildcard covers the listener's name
		}
	}
	return out
}

// TLSSecret is a Secret of type kubernetes.io/tls: a certificate chain and
// its key (PEM).
type TLSSecret struct {
	Cert, Key []byte
	// CA is its ca.crt, if any: the roots a MUTUAL server checks its
	// clients' certificates against (Istio's credentialName).
	CA []byte
}

// PutSecret adds or replaces a TLS Secret (namespace/name).
func (w *World) PutSecret(key string, s *TLSSecret) { w.Secrets[key] = s }

// TLSSecretFrom is a Secret's certificate and key, if it is a TLS Secret
// (type kubernetes.io/tls: tls.crt and tls.key, in data or stringData),
// with its ca.crt if it has one.
func TLSSecretFrom(s *corev1.Secret) (*TLSSecret, bool) {
	if s.Type != corev1.SecretTypeTLS {
		return nil, false
	}
	get := func(k string) []byte {
		if v, ok := s.StringData[k]; ok {
			return []byte(v)
		}
		return s.Data[k]
	}
	return &TLSSecret{Cert: get(corev1.TLSCertKey), Key: get(corev1.TLSPrivateKeyKey), CA: get("ca.crt")}, true
}
