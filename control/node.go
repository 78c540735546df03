package control

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Node is a sidecar as its xDS node says: Istio's id
// (sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local) and metadata
// (NAMESPACE, NAME, INSTANCE_IPS, LABELS, INTERCEPTION_MODE).
type Node struct {
	ID             string
	Name           string // the pod's
	Namespace      string
	IPs            []netip.Addr
	Labels         map[string]string
	ServiceAccount string
	// TProxy: the pod's inbound capture is TPROXY (INTERCEPTION_MODE),
	// so the inbound listener is transparent.
	TProxy bool
	// Router: the node is a gateway's proxy (Istio's router~ nodes), not
	// a sidecar: it serves its Gateway's listeners.
	Router bool
}

// ParseNode reads a sidecar's identity from its xDS node.
func ParseNode(n *corev3.Node) (Node, error) {
	out := Node{ID: n.GetId(), Labels: map[string]string{}}
	parts := strings.Split(n.GetId(), "~")
	if len(parts) != 4 || parts[0] != "sidecar" && parts[0] != "router" {
		return out, fmt.Errorf("node id %q: not a sidecar's or a gateway's (sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, or router~…)", n.GetId())
	}
	out.Router = parts[0] == "router"
	out.Name, out.Namespace, _ = strings.Cut(parts[2], ".")
	md := n.GetMetadata().GetFields()
	if v := md["NAMESPACE"].GetStringValue(); v != "" {
		out.Namespace = v
	}
	if v := md["NAME"].GetStringValue(); v != "" {
		out.Name = v
	}
	if out.Namespace == "" {
		return out, fmt.Errorf("node id %q: no namespace", n.GetId())
	}
	ips := md["INSTANCE_IPS"].GetStringValue()
	if ips == "" {
		ips = parts[1]
	}
	for _, s := range strings.Split(ips, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	for k, v := range md["LABELS"].GetStructValue().GetFields() {
		out.Labels[k] = v.GetStringValue()
	}
	out.ServiceAccount = md["SERVICE_ACCOUNT"].GetStringValue()
	out.TProxy = md["INTERCEPTION_MODE"].GetStringValue() == "TPROXY"
	return out, nil
}
