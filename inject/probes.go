package inject

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Probes, as Istio rewrites them. With inbound capture, the kubelet's
// probe of an app port is captured like any inbound connection, and the
// sidecar answers the handshake whether or not the app listens: a
// tcpSocket probe always passes, an httpGet probe tests the sidecar. So each
// probe (readiness, liveness, startup, and httpGet or tcpSocket lifecycle
// hooks) on a captured port becomes an httpGet of the proxy's
// /app-health/<container>/<kind> on the status port (15020), and the
// original goes to the proxy in ISTIO_KUBE_APP_PROBERS (Istio's variable,
// so either side can be Istio's). The proxy then probes the app from
// 127.0.0.6, which capture lets through, with the probe's own timeout.
// Unlike Istio, a probe of a port that is not captured inbound (excluded,
// or not included) is left as it is: the kubelet already reaches the app.

// AppProbersEnv is the proxy's variable holding the original probes.
const AppProbersEnv = "ISTIO_KUBE_APP_PROBERS"

// Prober is one original probe, as the proxy runs it; its JSON is Istio's.
type Prober struct {
	HTTPGet        *corev1.HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket      *corev1.TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC           *corev1.GRPCAction      `json:"grpc,omitempty"`
	TimeoutSeconds int32                   `json:"timeoutSeconds,omitempty"`
}

// probeRewrite is what rewriting a pod's probes changes: ops that replace
// probes in place (they refer to the containers' current positions, so
// they go before any op that inserts a container), and the original probes
// by path.
type probeRewrite struct {
	ops     []Op
	probers map[string]Prober
}

// env is the ISTIO_KUBE_APP_PROBERS value, keys sorted; "" for none.
func (r probeRewrite) env() string {
	if len(r.probers) == 0 {
		return ""
	}
	b, _ := json.Marshal(r.probers) // map keys come out sorted
	return string(b)
}

// rewriteProbes rewrites the probes of the app's containers (and of its
// own native sidecars) whose ports captured says are captured inbound.
func rewriteProbes(spec *corev1.PodSpec, captured func(int32) bool, statusPort int32, w *warnings) probeRewrite {
	r := probeRewrite{probers: map[string]Prober{}}
	for _, list := range []struct {
		name string
		cs   []corev1.Container
	}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
		for i, c := range list.cs {
			if c.Name == InitName || c.Name == ProxyName {
				continue
			}
			at := fmt.Sprintf("/spec/%s/%d", list.name, i)
			for _, p := range []struct {
				field, kind string
				probe       *corev1.Probe
			}{{"readinessProbe", "readyz", c.ReadinessProbe}, {"livenessProbe", "livez", c.LivenessProbe}, {"startupProbe", "startupz", c.StartupProbe}} {
				if p.probe == nil {
					continue
				}
				path := appHealthPath(c.Name, p.kind)
				orig, ok := r.take(&c, path, p.probe.ProbeHandler, p.probe.TimeoutSeconds, captured, w)
				if !ok {
					continue
				}
				np := p.probe.DeepCopy()
				np.ProbeHandler = corev1.ProbeHandler{HTTPGet: statusGet(path, statusPort, orig)}
				r.ops = append(r.ops, Op{"replace", at + "/" + p.field, np})
			}
			if c.Lifecycle == nil {
				continue
			}
			for _, h := range []struct {
				field, kind string
				handler     *corev1.LifecycleHandler
			}{{"preStop", "prestopz", c.Lifecycle.PreStop}, {"postStart", "poststartz", c.Lifecycle.PostStart}} {
				if h.handler == nil || h.handler.Exec != nil || h.handler.Sleep != nil {
					continue
				}
				path := appHealthPath(c.Name, h.kind)
				ph := corev1.ProbeHandler{HTTPGet: h.handler.HTTPGet, TCPSocket: h.handler.TCPSocket}
				orig, ok := r.take(&c, path, ph, 0, captured, w)
				if !ok {
					continue
				}
				r.ops = append(r.ops, Op{"replace", at + "/lifecycle/" + h.field, corev1.LifecycleHandler{HTTPGet: statusGet(path, statusPort, orig)}})
			}
		}
	}
	return r
}

func appHealthPath(container, kind string) string { return "/app-health/" + container + "/" + kind }

// take records a probe for the proxy to run, with named ports resolved
// against the container's own; ok is false for one left as it is (exec,
// another host, an uncaptured port, a port name that names nothing).
func (r *probeRewrite) take(c *corev1.Container, path string, h corev1.ProbeHandler, timeout int32, captured func(int32) bool, w *warnings) (Prober, bool) {
	var p Prober
	var port *intstr.IntOrString
	switch {
	case h.HTTPGet != nil:
		if h.HTTPGet.Host != "" {
			return p, false // probes another host: not captured
		}
		p.HTTPGet = h.HTTPGet.DeepCopy()
		port = &p.HTTPGet.Port
	case h.TCPSocket != nil:
		if h.TCPSocket.Host != "" {
			return p, false
		}
		p.TCPSocket = h.TCPSocket.DeepCopy()
		port = &p.TCPSocket.Port
	case h.GRPC != nil:
		p.GRPC = h.GRPC.DeepCopy()
		if !captured(p.GRPC.Port) {
			return p, false
		}
	default:
		return p, false
	}
	if port != nil {
		n, ok := resolvePort(c, *port)
		if !ok {
			w.addf("container %q: the probe's port %q names none of its ports; left as it is", c.Name, port.StrVal)
			return p, false
		}
		if !captured(n) {
			return p, false
		}
		*port = intstr.FromInt32(n)
	}
	p.TimeoutSeconds = timeout
	r.probers[path] = p
	return p, true
}

// resolvePort is a probe port's number: given, or named by the container.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, p.IntVal > 0 && p.IntVal < 65536
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// statusGet is the rewritten probe: a GET of the proxy's status port, the
// original's headers kept. An HTTPS probe becomes HTTP (the proxy speaks
// HTTPS to the app), as Istio does.
func statusGet(path string, statusPort int32, orig Prober) *corev1.HTTPGetAction {
	g := &corev1.HTTPGetAction{}
	if orig.HTTPGet != nil {
		g = orig.HTTPGet.DeepCopy()
		if g.Scheme == corev1.URISchemeHTTPS {
			g.Scheme = corev1.URISchemeHTTP
		}
	}
	g.Path, g.Port = path, intstr.FromInt32(statusPort)
	return g
}
