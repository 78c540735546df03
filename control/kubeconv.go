package control

import (
	"cmp"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shunt-dev/shunt/proxy"
)

// ExportToAnnotation is Istio's annotation naming the namespaces that see
// a service.
const ExportToAnnotation = "networking.istio.io/exportTo"

// ServiceFrom is a Kubernetes Service in the model: TCP ports only (the
// sidecar captures TCP), each with the protocol Istio would give it.
func ServiceFrom(s *corev1.Service, domain string) *Service {
	out := &Service{Name: s.Name, Namespace: s.Namespace, Hostname: s.Name + "." + s.Namespace + ".svc." + domain,
		Selector: s.Spec.Selector}
	for _, ip := range s.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			out.Addresses = append(out.Addresses, a)
		}
	}
	if len(out.Addresses) == 0 {
		if a, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
			out.Addresses = append(out.Addresses, a)
		}
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a := cmp.Or(in.IP, in.Hostname); a != "" {
			out.LoadBalancer = append(out.LoadBalancer, a)
		}
	}
	if v := s.Annotations[ExportToAnnotation]; v != "" {
		for _, e := range strings.Split(v, ",") {
			out.ExportTo = append(out.ExportTo, strings.TrimSpace(e))
		}
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		port := Port{Name: p.Name, Port: uint16(p.Port), Protocol: PortProtocol(p.Name, p.AppProtocol)}
		switch {
		case p.TargetPort.Type == intstr.String:
			port.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal > 0:
			port.TargetPort = uint16(p.TargetPort.IntVal)
		}
		out.Ports = append(out.Ports, port)
	}
	return out
}

// PortProtocol is the protocol Istio gives a service port: its
// appProtocol, else its name's prefix before "-" (http, http-api,
// grpc-web, tcp-db …); "" when neither names one Istio knows, and the
// sidecar detects it per connection.
func PortProtocol(name string, appProtocol *string) string {
	if appProtocol != nil {
		switch ap := strings.ToLower(*appProtocol); ap {
		case "kubernetes.io/h2c":
			return "http2"
		case "kubernetes.io/ws", "kubernetes.io/wss":
			return "http"
		default:
			if _, err := proxy.IstioProtocol(ap); err == nil {
				return ap
			}
		}
	}
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	if _, err := proxy.IstioProtocol(prefix); err == nil {
		return prefix
	}
	return ""
}

// EndpointsFrom are an EndpointSlice's endpoints, the service it belongs
// to ("namespace/name"), and false when it belongs to none.
func EndpointsFrom(es *discoveryv1.EndpointSlice) (string, []Endpoint, bool) {
	svc := es.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return "", nil, false
	}
	ports := map[string]uint16{}
	for _, p := range es.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		ports[name] = uint16(*p.Port)
	}
	var out []Endpoint
	for _, e := range es.Endpoints {
		ready := e.Conditions.Ready == nil || *e.Conditions.Ready
		pod := ""
		if r := e.TargetRef; r != nil && r.Kind == "Pod" {
			ns := r.Namespace
			if ns == "" {
				ns = es.Namespace
			}
			pod = ns + "/" + r.Name
		}
		for _, a := range e.Addresses {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			out = append(out, Endpoint{Addr: addr, Ports: ports, Ready: ready, Pod: pod})
		}
	}
	return es.Namespace + "/" + svc, out, true
}

// PodFrom is a pod in the model.
func PodFrom(p *corev1.Pod) *Pod {
	out := &Pod{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, ServiceAccount: p.Spec.ServiceAccountName,
		ContainerPorts: map[string]uint16{}}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	if len(out.IPs) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		for _, cp := range c.Ports {
			if cp.Name != "" && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				out.ContainerPorts[cp.Name] = uint16(cp.ContainerPort)
			}
		}
	}
	return out
}
