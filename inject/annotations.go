package inject

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/clip"
)

// Keys that opt a pod or namespace in or out, and that record injection.
const (
	IstioInject         = "sidecar.istio.io/inject"   // pod label or annotation: "true" / "false"
	ShuntInject         = "shunt.dev/inject"          // shunt's spelling of the same
	IstioNamespaceLabel = "istio-injection"           // namespace label: "enabled" / "disabled"
	ShuntNamespaceLabel = "shunt.dev/injection"       // shunt's spelling of the same
	StatusAnnotation    = "shunt.dev/status"          // what was injected (JSON); present means injected
	IstioStatus         = "sidecar.istio.io/status"   // Istio's injector has been here
	AllowProxyUID       = "shunt.dev/allow-proxy-uid" // "true": inject even if a container runs as the proxy's UID/GID
	SidecarModeKey      = "shunt.dev/sidecar-mode"    // "native" or "classic"
	IstioTemplates      = "inject.istio.io/templates" // Istio's injection templates: sidecar, gateway, grpc-agent, …
	IstioProxyName      = "istio-proxy"               // the container Istio's injector adds
	IstioNativeSidecar  = "sidecar.istio.io/nativeSidecar"
)

// setting is one thing a pod can say with an annotation, in shunt's
// spelling and in Istio's (and in Istio's older spelling, where it has
// one); shunt's wins, then Istio's current one.
type setting struct {
	istio, shunt string
	flag         string // istio-iptables flag the value becomes, or what it sets
	kind         valueKind
	older        string // Istio's deprecated spelling, used when neither other is given
}

type valueKind uint8

const (
	cidrList valueKind = iota
	portList
	inboundPortList // ports, ranges or the names of the pod's container ports
	ifaceList
	interceptionMode
	quantity
	boolean
	port
)

// Capture settings, in the order their flags appear on the init container.
var settings = []setting{
	{"sidecar.istio.io/interceptionMode", "shunt.dev/inbound-mode", "-m", interceptionMode, ""},
	{"traffic.sidecar.istio.io/includeOutboundIPRanges", "shunt.dev/outbound-cidrs", "-i", cidrList, ""},
	{"traffic.sidecar.istio.io/excludeOutboundIPRanges", "shunt.dev/outbound-exclude-cidrs", "-x", cidrList, ""},
	{"traffic.sidecar.istio.io/includeInboundPorts", "shunt.dev/inbound-ports", "-b", inboundPortList, ""},
	{"traffic.sidecar.istio.io/excludeInboundPorts", "shunt.dev/inbound-exclude-ports", "-d", inboundPortList, ""},
	{"traffic.sidecar.istio.io/includeOutboundPorts", "shunt.dev/outbound-include-ports", "-q", portList, ""},
	{"traffic.sidecar.istio.io/excludeOutboundPorts", "shunt.dev/outbound-exclude-ports", "-o", portList, ""},
	{"traffic.sidecar.istio.io/excludeInterfaces", "shunt.dev/exclude-interfaces", "-c", ifaceList, ""},
	// Istio's newer name wins over kubevirtInterfaces, as in Istio.
	{"istio.io/reroute-virtual-interfaces", "shunt.dev/kube-virt-interfaces", "-k", ifaceList, "traffic.sidecar.istio.io/kubevirtInterfaces"},
}

// Proxy resource settings, Istio's annotations and shunt's.
var resourceSettings = []setting{
	{"sidecar.istio.io/proxyCPU", "shunt.dev/proxy-cpu", "requests.cpu", quantity, ""},
	{"sidecar.istio.io/proxyMemory", "shunt.dev/proxy-memory", "requests.memory", quantity, ""},
	{"sidecar.istio.io/proxyCPULimit", "shunt.dev/proxy-cpu-limit", "limits.cpu", quantity, ""},
	{"sidecar.istio.io/proxyMemoryLimit", "shunt.dev/proxy-memory-limit", "limits.memory", quantity, ""},
}

// Settings of the proxy itself.
var (
	rewriteProbesSetting = setting{"sidecar.istio.io/rewriteAppHTTPProbers", "shunt.dev/rewrite-app-probes", "probe rewriting", boolean, ""}
	statusPortSetting    = setting{"status.sidecar.istio.io/port", "shunt.dev/status-port", "status port", port, ""}
)

// lookup returns a setting's value from the annotations: shunt's spelling
// wins over Istio's, Istio's over its older one, and a disagreement is
// reported as a warning. field names where the value came from, for error
// messages.
func (s setting) lookup(ann map[string]string, w *warnings) (value, field string, ok bool) {
	var given []string
	for _, key := range []string{s.shunt, s.istio, s.older} {
		if _, ok := ann[key]; ok && key != "" {
			given = append(given, key)
		}
	}
	if len(given) == 0 {
		return "", "", false
	}
	first := given[0]
	for _, other := range given[1:] {
		if strings.TrimSpace(ann[other]) != strings.TrimSpace(ann[first]) {
			w.addf("annotations %s=%s and %s=%s disagree; %s wins", first, clip.Quote(ann[first]), other, clip.Quote(ann[other]), first)
		}
	}
	return ann[first], annotationField(first), true
}

func annotationField(key string) string { return fmt.Sprintf("metadata.annotations[%q]", key) }

// checkCIDRs parses a comma-separated list of ranges ("*" allowed where all
// is meaningful) and returns it in the form redirect takes.
func checkCIDRs(v string, starOK bool) (string, error) {
	if strings.TrimSpace(v) == "*" {
		if !starOK {
			return "", fmt.Errorf(`"*" would exclude every destination; list ranges instead`)
		}
		return "*", nil
	}
	items := capture.SplitList(v)
	for _, item := range items {
		if _, err := netip.ParsePrefix(item); err != nil {
			if _, aerr := netip.ParseAddr(item); aerr != nil {
				return "", fmt.Errorf("%s is not an IP range (address/bits)", clip.Quote(item))
			}
		}
	}
	return strings.Join(items, ","), nil
}

// checkPorts parses a list of ports and ranges; names are resolved through
// named (nil: names are not allowed). "*" is allowed where starOK.
func checkPorts(v string, starOK bool, named map[string]int32) (string, error) {
	if strings.TrimSpace(v) == "*" {
		if !starOK {
			return "", fmt.Errorf(`"*" is not allowed here; list ports instead`)
		}
		return "*", nil
	}
	var out []string
	for _, item := range capture.SplitList(v) {
		if r, err := capture.ParsePortRange(item); err == nil {
			out = append(out, r.String())
			continue
		} else if named == nil || !isPortName(item) {
			return "", err
		}
		p, ok := named[item]
		if !ok {
			return "", fmt.Errorf("no container of the pod declares a port named %s", clip.Quote(item))
		}
		out = append(out, fmt.Sprint(p))
	}
	return strings.Join(out, ","), nil
}

// isPortName reports whether s could be a Kubernetes port name (IANA_SVC_NAME:
// lower-case letters, digits and dashes, with at least one letter).
func isPortName(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// checkInterfaces checks a list of interface names.
func checkInterfaces(v string) (string, error) {
	items := capture.SplitList(v)
	for _, name := range items {
		if len(name) > 15 || strings.ContainsAny(name, "/ \t") {
			return "", fmt.Errorf("%s is not an interface name", clip.Quote(name))
		}
	}
	return strings.Join(items, ","), nil
}

// warnings collects the non-fatal things an injection wants the user to know.
type warnings []string

func (w *warnings) addf(format string, args ...any) { *w = append(*w, fmt.Sprintf(format, args...)) }
