package control

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/shunt-dev/shunt/meshgraph"
)

// DescribeService is what the control plane knows of a service, for the
// mesh graph's service page: the service of that name in the namespace,
// else the one whose pods' canonical service (the graph's node names)
// that is. Its routing rules (VirtualServices and HTTPRoutes for its
// host, DestinationRules), the policies on its pods (PeerAuthentications,
// AuthorizationPolicies), its endpoints, and its pods' sidecars' sync
// status.
func (s *Server) DescribeService(namespace, name string) (meshgraph.ServiceInfo, bool) {
	w := s.World()
	svc := w.Services[namespace+"/"+name]
	if svc == nil {
		svc = w.serviceOfCanonical(namespace, name)
	}
	if svc == nil {
		return meshgraph.ServiceInfo{}, false
	}
	info := meshgraph.ServiceInfo{Name: svc.Name, Namespace: svc.Namespace, Host: svc.Hostname}
	for _, p := range svc.Ports {
		target := fmt.Sprint(p.TargetPort)
		switch {
		case p.TargetPortName != "":
			target = p.TargetPortName
		case p.TargetPort == 0:
			target = fmt.Sprint(p.Port)
		}
		info.Ports = append(info.Ports, fmt.Sprintf("%s %d → %s", orDash(p.Name), p.Port, target))
	}
	info.Routing = w.routingOf(svc)
	pods := w.podsOf(svc)
	info.Policies = w.policiesOn(pods, s.compiler.mesh.RootNamespace)
	podNames := map[string]bool{}
	for _, p := range pods {
		podNames[p.Namespace+"/"+p.Name] = true
	}
	for _, slice := range slices.Sorted(maps.Keys(w.Endpoints[svc.Namespace+"/"+svc.Name])) {
		for _, e := range w.Endpoints[svc.Namespace+"/"+svc.Name][slice] {
			addr := e.Host
			if e.Addr.IsValid() {
				addr = e.Addr.String()
			}
			var ports []string
			for _, n := range slices.Sorted(maps.Keys(e.Ports)) {
				ports = append(ports, fmt.Sprint(e.Ports[n]))
			}
			info.Endpoints = append(info.Endpoints, meshgraph.Endpoint{Address: addr + ":" + strings.Join(ports, ","), Pod: e.Pod, Ready: e.Ready})
			if e.Pod != "" {
				podNames[e.Pod] = true
			}
		}
	}
	for _, st := range s.Status() {
		if !podNames[st.Namespace+"/"+podOfProxy(st.ProxyID)] {
			continue
		}
		detail := fmt.Sprintf("CDS %s, LDS %s, RDS %s, EDS %s ACKed", orDash(st.ClusterAcked), orDash(st.ListenerAcked), orDash(st.RouteAcked), orDash(st.EndpointAcked))
		if len(st.Nacks) > 0 {
			var refused []string
			for _, t := range slices.Sorted(maps.Keys(st.Nacks)) {
				refused = append(refused, t+" refused: "+st.Nacks[t])
			}
			detail = strings.Join(refused, "; ")
		}
		info.Sidecars = append(info.Sidecars, meshgraph.SidecarSync{Proxy: st.ProxyID, Connected: st.Connected, Synced: st.Synced(), Detail: detail})
	}
	return info, true
}

// serviceOfCanonical is the first service (by name) in namespace that
// selects a pod whose canonical service is name.
func (w *World) serviceOfCanonical(namespace, name string) *Service {
	for _, key := range slices.Sorted(maps.Keys(w.Services)) {
		s := w.Services[key]
		if s.Namespace != namespace {
			continue
		}
		for _, p := range w.podsOf(s) {
			if canonicalService(p.Labels) == name {
				return s
			}
		}
	}
	return nil
}

// canonicalService is a pod's canonical service as Istio derives it from
// its labels.
func canonicalService(labels map[string]string) string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// podsOf are the pods a service selects, by name.
func (w *World) podsOf(s *Service) []*Pod {
	var out []*Pod
	for _, key := range slices.Sorted(maps.Keys(w.Pods)) {
		if p := w.Pods[key]; s.selects(p) {
			out = append(out, p)
		}
	}
	return out
}

// routingOf are the rules for a service's host: VirtualServices naming
// it, HTTPRoutes whose parent it is, DestinationRules for it.
func (w *World) routingOf(s *Service) []meshgraph.Item {
	var out []meshgraph.Item
	for _, key := range slices.Sorted(maps.Keys(w.VirtualServices)) {
		vs := w.VirtualServices[key]
		if !slices.ContainsFunc(vs.Hosts, func(h string) bool { return w.fqdn(h, vs.Namespace) == s.Hostname }) {
			continue
		}
		out = append(out, meshgraph.Item{Kind: orDefault(vs.Kind, "VirtualService"), Name: key, Detail: routeSummary(vs.HTTP), Problems: vs.Problems})
	}
	for _, key := range slices.Sorted(maps.Keys(w.HTTPRoutes)) {
		r := w.HTTPRoutes[key]
		if !slices.ContainsFunc(r.Parents, func(p ParentService) bool { return p.Service == s.Namespace+"/"+s.Name }) {
			continue
		}
		it := meshgraph.Item{Kind: "HTTPRoute", Name: r.Namespace + "/" + r.Name}
		if r.Routes != nil {
			it.Kind, it.Detail, it.Problems = orDefault(r.Routes.Kind, it.Kind), routeSummary(r.Routes.HTTP), r.Routes.Problems
		}
		out = append(out, it)
	}
	for _, key := range slices.Sorted(maps.Keys(w.DestinationRules)) {
		dr := w.DestinationRules[key]
		if w.fqdn(dr.Host, dr.Namespace) != s.Hostname {
			continue
		}
		var subsets []string
		for _, sub := range dr.Subsets {
			subsets = append(subsets, sub.Name)
		}
		detail := "traffic policy"
		if len(subsets) > 0 {
			detail = "subsets " + strings.Join(subsets, ", ")
		}
		out = append(out, meshgraph.Item{Kind: "DestinationRule", Name: key, Detail: detail, Problems: dr.Problems})
	}
	return out
}

// routeSummary is where a rule's routes send requests.
func routeSummary(rules []RouteRule) string {
	var parts []string
	for _, r := range rules {
		var to []string
		for _, d := range r.Route {
			dest := d.Host
			if d.Subset != "" {
				dest += " (" + d.Subset + ")"
			}
			if d.Weight > 0 && len(r.Route) > 1 {
				dest += fmt.Sprintf(" %d%%", d.Weight)
			}
			to = append(to, dest)
		}
		switch {
		case r.Redirect != nil:
			to = append(to, "redirect")
		case r.DirectResponse != nil:
			to = append(to, "direct response")
		case r.Delegate != nil:
			to = append(to, "delegate "+r.Delegate.Namespace+"/"+r.Delegate.Name)
		}
		if r.Fault != nil {
			to = append(to, "fault")
		}
		parts = append(parts, strings.Join(to, ", "))
	}
	return strings.Join(parts, "; ")
}

// policiesOn are the PeerAuthentications and AuthorizationPolicies that
// apply to any of pods.
func (w *World) policiesOn(pods []*Pod, root string) []meshgraph.Item {
	var out []meshgraph.Item
	for _, key := range slices.Sorted(maps.Keys(w.PeerAuthentications)) {
		pa := w.PeerAuthentications[key]
		if slices.ContainsFunc(pods, func(p *Pod) bool {
			return (pa.Namespace == p.Namespace || pa.Namespace == root && pa.Selector == nil) && labelsMatch(p.Labels, pa.Selector)
		}) {
			out = append(out, meshgraph.Item{Kind: "PeerAuthentication", Name: key, Detail: "mTLS " + orDefault(string(pa.Mode), "UNSET"), Problems: pa.Problems})
		}
	}
	seen := map[string]bool{}
	for _, p := range pods {
		for _, ap := range w.authzFor(p, root) {
			key := ap.Namespace + "/" + ap.Name
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, meshgraph.Item{Kind: "AuthorizationPolicy", Name: key, Detail: fmt.Sprintf("%s, %d rule(s)", ap.Action, len(ap.Rules)), Problems: ap.Problems})
		}
	}
	return out
}

// podOfProxy is the pod name in a sidecar's node id.
func podOfProxy(id string) string {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return ""
	}
	pod, _, _ := strings.Cut(parts[2], ".")
	return pod
}

func orDash(s string) string { return orDefault(s, "-") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
