package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/clip"
)

// Namespace is what is known of a pod's namespace when deciding.
type Namespace struct {
	// Labels are the namespace's labels; nil when unknown (offline injection,
	// or a webhook whose namespaceSelector already did the choosing).
	Labels map[string]string
	// Default is whether a pod that says nothing is injected when the
	// namespace says nothing either.
	Default bool
}

// Decision says whether a pod is injected, and why.
type Decision struct {
	Inject bool
	Reason string
}

// Decide applies the opt-in rules Istio users expect, in this order:
//   - a host-network pod is never injected (its rules would capture the node);
//   - an already injected pod (by shunt or by Istio) is left as it is;
//   - a namespace labelled disabled wins over everything the pod says;
//   - the pod's own label or annotation (sidecar.istio.io/inject or
//     shunt.dev/inject; a label wins over an annotation, shunt's spelling over
//     Istio's) decides next;
//   - then a namespace labelled enabled, then the default.
func Decide(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ns Namespace) (Decision, error) {
	if spec.HostNetwork {
		return Decision{false, "the pod uses the host's network namespace"}, nil
	}
	if _, ok := meta.Annotations[StatusAnnotation]; ok {
		return Decision{false, "already injected (" + StatusAnnotation + ")"}, nil
	}
	if _, ok := meta.Annotations[IstioStatus]; ok {
		return Decision{false, "already carries Istio's sidecar (" + IstioStatus + ")"}, nil
	}
	if hasContainer(spec, IstioProxyName) {
		return Decision{false, "already has Istio's proxy container (" + IstioProxyName +
			"): Istio's injector fills it in (image: auto), and a second proxy would fight it for the traffic"}, nil
	}
	nsSays, nsKey := namespaceSays(ns.Labels)
	if nsSays == "disabled" {
		return Decision{false, fmt.Sprintf("namespace label %s=disabled", nsKey)}, nil
	}
	podSays, field, err := podSays(meta)
	if err != nil {
		return Decision{}, err
	}
	switch {
	case podSays != nil:
		return Decision{*podSays, fmt.Sprintf("%s=%t", field, *podSays)}, nil
	case nsSays == "enabled":
		return Decision{true, fmt.Sprintf("namespace label %s=enabled", nsKey)}, nil
	case ns.Default:
		return Decision{true, "injected by default"}, nil
	}
	return Decision{false, "neither the pod nor its namespace opts in"}, nil
}

// namespaceSays returns "enabled", "disabled" or "" and the label that said
// it; either label saying disabled wins.
func namespaceSays(labels map[string]string) (string, string) {
	say, by := "", ""
	for _, key := range []string{ShuntNamespaceLabel, IstioNamespaceLabel} {
		switch v := strings.ToLower(strings.TrimSpace(labels[key])); v {
		case "disabled":
			return v, key
		case "enabled":
			if say == "" {
				say, by = v, key
			}
		}
	}
	return say, by
}

// podSays reads the pod's opt-in: labels before annotations, shunt's key
// before Istio's. A value that is not a boolean is an error, not a guess.
func podSays(meta *metav1.ObjectMeta) (*bool, string, error) {
	for _, src := range []struct {
		m    map[string]string
		kind string
	}{{meta.Labels, "labels"}, {meta.Annotations, "annotations"}} {
		for _, key := range []string{ShuntInject, IstioInject} {
			v, ok := src.m[key]
			if !ok {
				continue
			}
			field := fmt.Sprintf("metadata.%s[%q]", src.kind, key)
			b, err := parseBool(v)
			if err != nil {
				return nil, field, fmt.Errorf("%s: %w", field, err)
			}
			return &b, field, nil
		}
	}
	return nil, "", nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "y", "enabled", "on":
		return true, nil
	case "false", "no", "n", "disabled", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s is not true or false", clip.Quote(v))
}

func hasContainer(spec *corev1.PodSpec, name string) bool {
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// templatesDecision reads Istio's inject.istio.io/templates: "sidecar" is
// what shunt injects; a gateway and proxyless gRPC pods get no capture and
// no sidecar; other (custom) templates are Istio's own and cannot be
// applied. stop is true when the pod is to be left alone.
func templatesDecision(ann map[string]string) (d Decision, warning string, stop bool) {
	v, ok := ann[IstioTemplates]
	if !ok {
		return Decision{}, "", false
	}
	sidecar := false
	var custom []string
	for _, t := range capture.SplitList(v) {
		switch t {
		case "sidecar":
			sidecar = true
		case "gateway":
			return Decision{false, IstioTemplates + "=" + v + ": a gateway runs its own proxy and is not captured; " +
				"shunt injects sidecars only"}, "", true
		case "grpc-agent", "grpc-simple":
			return Decision{false, IstioTemplates + "=" + v + ": proxyless gRPC takes its configuration " +
				"itself and needs neither capture nor a proxy"}, "", true
		default:
			custom = append(custom, t)
		}
	}
	switch {
	case len(custom) == 0:
		return Decision{}, "", false
	case sidecar:
		return Decision{}, fmt.Sprintf("%s lists %s: custom templates are Istio's mesh configuration and shunt does not apply them; the sidecar is injected without them",
			IstioTemplates, clip.Quote(strings.Join(custom, ","))), false
	}
	return Decision{false, fmt.Sprintf("%s=%s names no template shunt has (it injects the sidecar template only)", IstioTemplates, clip.Quote(v))}, "", true
}
