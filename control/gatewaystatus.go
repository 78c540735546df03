package control

import (
	"maps"
	"net/netip"
	"slices"
)

// Condition is a Gateway API status condition (type, True or False,
// reason, message), as the conformance profile reads them.
type Condition struct{ Type, Status, Reason, Message string }

// GatewayStatus is what shunt says of a Gateway of its class: Accepted
// and Programmed, and per listener its route kinds, routes attached and
// conditions.
type GatewayStatus struct {
	Generation int64 // the Gateway's, which it is of
	Conditions []Condition
	Listeners  []ListenerStatus
	Addresses  []GatewayAddress
}

// GatewayAddress is one of a Gateway's status.addresses: its Type
// IPAddress or Hostname.
type GatewayAddress struct{ Type, Value string }

// gatewayAddresses are where a Gateway is reached: the load balancer
// addresses of the Services in its namespace that select its pods (the
// pods its name labels, gateway.networking.k8s.io/gateway-name), else
// their cluster IPs, else its pods' own.
func (w *World) gatewayAddresses(g *Gateway) []GatewayAddress {
	var pods []*Pod
	for _, key := range slices.Sorted(maps.Keys(w.Pods)) {
		if p := w.Pods[key]; p.Namespace == g.Namespace && p.Labels["gateway.networking.k8s.io/gateway-name"] == g.Name {
			pods = append(pods, p)
		}
	}
	var lb, cluster, own []GatewayAddress
	for _, key := range slices.Sorted(maps.Keys(w.Services)) {
		s := w.Services[key]
		if s.Namespace != g.Namespace || !slices.ContainsFunc(pods, s.selects) {
			continue
		}
		for _, a := range s.LoadBalancer {
			typ := "Hostname"
			if _, err := netip.ParseAddr(a); err == nil {
				typ = "IPAddress"
			}
			lb = append(lb, GatewayAddress{typ, a})
		}
		for _, a := range s.Addresses {
			cluster = append(cluster, GatewayAddress{"IPAddress", a.String()})
		}
	}
	for _, p := range pods {
		for _, a := range p.IPs {
			own = append(own, GatewayAddress{"IPAddress", a.String()})
		}
	}
	for _, addrs := range [][]GatewayAddress{lb, cluster, own} {
		if len(addrs) > 0 {
			return slices.Compact(addrs)
		}
	}
	return nil
}

// ListenerStatus is a Gateway's listener's status.
type ListenerStatus struct {
	Name           string
	SupportedKinds []string
	AttachedRoutes int
	Conditions     []Condition
}

// RouteParentStatus is a route's status towards one of its parentRefs, a
// Gateway of shunt's class: Accepted (attached to a listener) and
// ResolvedRefs (its backends there and permitted).
type RouteParentStatus struct {
	Generation int64 // the route's
	Parent     ParentGateway
	Conditions []Condition
}

// cond is a condition, True when ok.
func cond(typ string, ok bool, reason, message string) Condition {
	status := "False"
	if ok {
		status = "True"
	}
	return Condition{typ, status, reason, message}
}

// ours says a Gateway (namespace/name) is of a class shunt runs.
func (w *World) ours(key string) *Gateway {
	g := w.Gateways[key]
	if g == nil {
		return nil
	}
	if c := w.GatewayClasses[g.Class]; c == nil || c.Controller != GatewayController {
		return nil
	}
	return g
}

// GatewayStatuses are the statuses of the Gateways of shunt's classes, by
// namespace/name.
func (w *World) GatewayStatuses() map[string]GatewayStatus {
	out := map[string]GatewayStatus{}
	for key := range w.Gateways {
		g := w.ours(key)
		if g == nil {
			continue
		}
		st := GatewayStatus{Generation: g.Generation, Addresses: w.gatewayAddresses(g)}
		programmed := 0
		for _, l := range g.Listeners {
			ls := ListenerStatus{Name: l.Name, SupportedKinds: l.Kinds, AttachedRoutes: w.attachedRoutes(g, l)}
			served, reason, msg := w.certificatesResolved(g, l)
			ok := len(l.Certificates) == 0 || served > 0
			refs := cond("ResolvedRefs", true, "ResolvedRefs", "")
			if reason != "" {
				refs = cond("ResolvedRefs", false, reason, msg)
			}
			ls.Conditions = []Condition{cond("Accepted", true, "Accepted", ""), refs, programmedCond(ok, msg)}
			if ok {
				programmed++
			}
			st.Listeners = append(st.Listeners, ls)
		}
		for _, r := range g.Refused {
			// A listener without a certificate is accepted, its refs not
			// resolved; one of a protocol or mode shunt does not run is not.
			accepted, refs := cond("Accepted", false, r.Reason, r.Message), cond("ResolvedRefs", true, "ResolvedRefs", "")
			if r.Reason == "InvalidCertificateRef" {
				accepted, refs = cond("Accepted", true, "Accepted", ""), cond("ResolvedRefs", false, r.Reason, r.Message)
			}
			st.Listeners = append(st.Listeners, ListenerStatus{Name: r.Name, SupportedKinds: []string{}, Conditions: []Condition{
				accepted, refs, programmedCond(false, r.Message)}})
		}
		st.Conditions = []Condition{cond("Accepted", true, "Accepted", ""), programmedCond(programmed > 0, "no listener is programmed")}
		out[key] = st
	}
	return out
}

// programmedCond is Programmed: True, or False (Invalid) with why.
func programmedCond(ok bool, why string) Condition {
	if ok {
		return cond("Programmed", true, "Programmed", "")
	}
	return cond("Programmed", false, "Invalid", why)
}

// certificatesResolved counts an HTTPS listener's certificates it can
// serve, and says why one cannot (a reason and a message; "" for none).
func (w *World) certificatesResolved(g *Gateway, l GatewayListener) (ok int, reason, msg string) {
	for _, ref := range l.Certificates {
		if !w.granted("Gateway", g.Namespace, "Secret", ref) {
			reason, msg = "RefNotPermitted", secretNotGranted(ref)
		} else if _, _, err := w.tlsSecret(ref); err != nil {
			reason, msg = "InvalidCertificateRef", err.Error()
		} else {
			ok++
		}
	}
	return ok, reason, msg
}

// attachedRoutes counts the routes attached to a listener.
func (w *World) attachedRoutes(g *Gateway, l GatewayListener) int {
	n := 0
	for _, r := range w.HTTPRoutes {
		if slices.ContainsFunc(r.Gateways, func(p ParentGateway) bool { return w.admits(g, l, r.Routes.Kind, r.Namespace, p) }) && len(l.hostnames(r.Hostnames)) > 0 {
			n++
		}
	}
	for _, r := range w.TLSRoutes {
		if slices.ContainsFunc(r.Gateways, func(p ParentGateway) bool { return w.admits(g, l, r.Kind, r.Namespace, p) }) && len(l.hostnames(r.Hostnames)) > 0 {
			n++
		}
	}
	return n
}

// RouteStatuses are the statuses of the routes towards their parents that
// are Gateways of shunt's classes, by "KIND namespace/name".
func (w *World) RouteStatuses() map[string][]RouteParentStatus {
	out := map[string][]RouteParentStatus{}
	add := func(kind, ns, name string, gen int64, parents []ParentGateway, hostnames []string, backends []Destination) {
		refs := cond("ResolvedRefs", true, "ResolvedRefs", "")
		for _, b := range backends {
			ref := w.serviceRef(b.Host)
			switch {
			case !w.granted(kind, ns, "Service", ref):
				refs = cond("ResolvedRefs", false, "RefNotPermitted", "the backend "+b.Host+" is in another namespace, and no ReferenceGrant there lets the route refer to it")
			case w.Services[ref] == nil:
				refs = cond("ResolvedRefs", false, "BackendNotFound", "no Service "+ref)
			}
		}
		for _, p := range parents {
			g := w.ours(p.Gateway)
			if g == nil {
				continue
			}
			accepted := cond("Accepted", false, "NoMatchingParent", "no listener of the Gateway is named by the parentRef's sectionName and port")
			for _, l := range g.Listeners {
				if (p.Section != "" && p.Section != l.Name) || (p.Port != 0 && p.Port != l.Port) {
					continue
				}
				switch {
				case !w.admits(g, l, kind, ns, p):
					if accepted.Reason == "NoMatchingParent" {
						accepted = cond("Accepted", false, "NotAllowedByListeners", "the listeners do not allow this route's kind or namespace")
					}
				case len(l.hostnames(hostnames)) == 0:
					if accepted.Status == "False" {
						accepted = cond("Accepted", false, "NoMatchingListenerHostname", "no hostname of the route is the listener's")
					}
				default:
					accepted = cond("Accepted", true, "Accepted", "")
				}
			}
			key := kind + " " + ns + "/" + name
			out[key] = append(out[key], RouteParentStatus{Generation: gen, Parent: p, Conditions: []Condition{accepted, refs}})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.HTTPRoutes)) {
		r := w.HTTPRoutes[key]
		var backends []Destination
		for _, rule := range r.Routes.HTTP {
			backends = append(backends, rule.Route...)
		}
		add(r.Routes.Kind, r.Namespace, r.Name, r.Generation, r.Gateways, r.Hostnames, backends)
	}
	for _, key := range slices.Sorted(maps.Keys(w.TLSRoutes)) {
		r := w.TLSRoutes[key]
		add(r.Kind, r.Namespace, r.Name, r.Generation, r.Gateways, r.Hostnames, r.Backends)
	}
	return out
}
