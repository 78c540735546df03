// Package inject adds shunt's capture step and proxy to pods: offline, to
// the pod templates of workload manifests, and online, as a mutating
// admission webhook. Both go through Template.Pod, which decides, checks and
// returns the change as JSON Patch operations.
package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// Result is what injecting one pod decided and changes.
type Result struct {
	Decision Decision
	// Patch adds the containers and the status annotation; paths are
	// relative to the pod (or pod template): /metadata/..., /spec/....
	Patch    []Op
	Warnings []string
}

// statusValue is the shunt.dev/status annotation's value: how the proxy was
// added and how traffic is captured, e.g. "sidecar=native,capture=REDIRECT".
// The containers follow from those two (shunt-init unless capture is NONE;
// shunt-proxy as an init container when native, the first container when
// classic). It is kept short: some tools (podman kube play) refuse
// annotation values over 63 characters.
func statusValue(mode SidecarMode, interception string) string {
	return fmt.Sprintf("sidecar=%s,capture=%s", mode, interception)
}

// Pod injects one pod. meta and spec are the pod's, decoded; raw is the same
// pod as generic JSON, which the patch paths are computed against. Errors
// name the field, relative to the pod.
func (t Template) Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, raw map[string]any, ns Namespace) (Result, error) {
	var res Result
	if spec.OS != nil && spec.OS.Name == corev1.Windows {
		res.Decision = Decision{false, "Windows pods have no iptables"}
		return res, nil
	}
	d, err := Decide(meta, spec, ns)
	if err != nil || !d.Inject {
		res.Decision = d
		return res, err
	}
	res.Decision = d
	var w warnings
	errs := checkPod(meta, spec)
	mode, err := t.sidecarMode(meta.Annotations)
	errs = append(errs, err)
	args, interception, aerrs := captureArgs(meta.Annotations, spec, &w)
	errs = append(errs, aerrs...)
	proxyRes, rerrs := t.proxyResources(meta.Annotations, &w)
	errs = append(errs, rerrs...)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if t.NativeNftables {
		args = append(args, "--native-nftables")
	}

	var initCs, cs []corev1.Container
	if interception != "NONE" {
		initCs = append(initCs, t.initContainer(args))
	}
	proxy := t.proxyContainer(mode, interception == "TPROXY", proxyRes)
	if mode == Native {
		initCs = append(initCs, proxy)
	} else {
		cs = append(cs, proxy)
	}
	res.Patch = append(res.Patch, annotationOp(raw, StatusAnnotation, statusValue(mode, interception)))
	res.Patch = append(res.Patch, prependOps(raw, "initContainers", initCs)...)
	res.Patch = append(res.Patch, prependOps(raw, "containers", cs)...)
	res.Warnings = w
	return res, nil
}

func (t Template) sidecarMode(ann map[string]string) (SidecarMode, error) {
	v, ok := ann[SidecarModeKey]
	if !ok {
		return t.Mode, nil
	}
	switch m := SidecarMode(strings.ToLower(strings.TrimSpace(v))); m {
	case Native, Classic:
		return m, nil
	}
	return "", fmt.Errorf("%s: %s is not native or classic", annotationField(SidecarModeKey), clip.Quote(v))
}

// captureArgs turns the pod's annotations into `shunt redirect` args in
// istio-iptables' spelling, checking each value.
func captureArgs(ann map[string]string, spec *corev1.PodSpec, w *warnings) ([]string, string, []error) {
	named := containerPorts(spec)
	args := []string{
		"-p", strconv.Itoa(sidecar.OutboundPort),
		"-z", strconv.Itoa(sidecar.InboundPort),
		"-u", strconv.Itoa(sidecar.ProxyUID),
		"-g", strconv.Itoa(sidecar.ProxyGID),
	}
	values := map[string]string{"-m": "REDIRECT", "-i": "*", "-b": "*"}
	var errs []error
	for _, s := range settings {
		v, field, ok := s.lookup(ann, w)
		if !ok {
			continue
		}
		var out string
		var err error
		switch s.kind {
		case interceptionMode:
			out = strings.ToUpper(strings.TrimSpace(v))
			if out != "REDIRECT" && out != "TPROXY" && out != "NONE" {
				err = fmt.Errorf("%s is not an interception mode (REDIRECT, TPROXY or NONE)", clip.Quote(v))
			}
		case cidrList:
			out, err = checkCIDRs(v, s.flag == "-i")
		case inboundPortList:
			out, err = checkPorts(v, s.flag == "-b", named)
		case portList:
			out, err = checkPorts(v, false, nil)
		case ifaceList:
			out, err = checkInterfaces(v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		values[s.flag] = out
	}
	// The proxy's own ports are always excluded inbound.
	excluded := []string{}
	for _, p := range alwaysExcludedInbound {
		excluded = append(excluded, strconv.Itoa(int(p)))
	}
	if extra := values["-d"]; extra != "" {
		for _, p := range strings.Split(extra, ",") {
			if !slices.Contains(excluded, p) {
				excluded = append(excluded, p)
			}
		}
	}
	values["-d"] = strings.Join(excluded, ",")
	for _, s := range settings {
		if v, ok := values[s.flag]; ok && (v != "" || s.flag == "-i" || s.flag == "-b") {
			args = append(args, s.flag, v)
		}
	}
	return args, values["-m"], errs
}

// containerPorts maps the pod's named container ports to their numbers.
func containerPorts(spec *corev1.PodSpec) map[string]int32 {
	m := map[string]int32{}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name != "" {
				m[p.Name] = p.ContainerPort
			}
		}
	}
	return m
}

// proxyResources is the template's proxy resources with the pod's overrides.
func (t Template) proxyResources(ann map[string]string, w *warnings) (corev1.ResourceRequirements, []error) {
	res := *t.ProxyResources.DeepCopy()
	var errs []error
	for _, s := range resourceSettings {
		v, field, ok := s.lookup(ann, w)
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s is not a quantity", field, clip.Quote(v)))
			continue
		}
		kind, name, _ := strings.Cut(s.flag, ".")
		list := &res.Requests
		if kind == "limits" {
			list = &res.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[corev1.ResourceName(name)] = q
	}
	for name, req := range res.Requests {
		if lim, ok := res.Limits[name]; ok && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("proxy %s request %s is above its limit %s", name, req.String(), lim.String()))
		}
	}
	return res, errs
}
