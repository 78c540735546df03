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

	"github.com/shunt-dev/shunt/capture"
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
//
// workload names the workload the pod belongs to (a Deployment's name,
// say); "" derives it from the pod's owner or name.
func (t Template) Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, raw map[string]any, ns Namespace, workload string) (Result, error) {
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
	var w warnings
	if td, warning, stop := templatesDecision(meta.Annotations); stop {
		res.Decision = td
		return res, nil
	} else if warning != "" {
		w.addf("%s", warning)
	}
	res.Decision = d
	errs := checkPod(meta, spec)
	mode, err := t.sidecarMode(meta.Annotations, &w)
	errs = append(errs, err)
	status, rewrite, perrs := t.proxySettings(meta.Annotations, spec, &w)
	errs = append(errs, perrs...)
	cp, aerrs := captureArgs(meta.Annotations, spec, status, &w)
	errs = append(errs, aerrs...)
	proxyRes, rerrs := t.proxyResources(meta.Annotations, &w)
	errs = append(errs, rerrs...)
	pc, err := readIstioProxyConfig(meta.Annotations, &w)
	errs = append(errs, err)
	dns, err := t.dnsCapture(meta.Annotations, pc, &w)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	args := cp.args
	if t.NativeNftables {
		args = append(args, "--native-nftables")
	}
	if dns && cp.interception == "NONE" {
		w.addf("DNS capture asked for, but interception mode NONE captures nothing: the DNS proxy is not started")
		dns = false
	}
	if dns {
		args = append(args, "--redirect-dns") // the proxy answers on 15053 (--dns below)
	}
	var probes probeRewrite
	if rewrite && status != 0 && cp.interception != "NONE" {
		probes = rewriteProbes(spec, cp.captured, status, &w)
	}

	var initCs, cs []corev1.Container
	if cp.interception != "NONE" {
		initCs = append(initCs, t.initContainer(args))
	}
	if workload == "" {
		workload = workloadOf(meta)
	}
	proxy := t.proxyContainer(mode, cp.interception == "TPROXY", dns, proxyRes, status, probes.env(), proxyIdentity{workload, meta.Labels})
	proxy.Args = append(proxy.Args, t.tracingArgs(pc, &w)...)
	if mode == Native {
		initCs = append(initCs, proxy)
	} else {
		cs = append(cs, proxy)
	}
	// The probes are replaced where they are now, before containers are
	// put in front of them.
	res.Patch = append(res.Patch, probes.ops...)
	var labels map[string]string
	if t.CAAddress != "" {
		// The control plane sends mutual TLS to pods so labelled.
		labels = map[string]string{sidecar.TLSModeLabel: sidecar.TLSModeIstio}
		vops, err := identityVolumeOps(raw, spec)
		if err != nil {
			return res, err
		}
		res.Patch = append(res.Patch, vops...)
	}
	res.Patch = append(res.Patch, metadataOps(raw, map[string]string{StatusAnnotation: statusValue(mode, cp.interception)}, labels)...)
	res.Patch = append(res.Patch, prependOps(raw, "initContainers", initCs)...)
	res.Patch = append(res.Patch, prependOps(raw, "containers", cs)...)
	res.Warnings = w
	return res, nil
}

// sidecarMode is the template's mode, or the pod's: shunt's
// shunt.dev/sidecar-mode, else Istio's sidecar.istio.io/nativeSidecar.
func (t Template) sidecarMode(ann map[string]string, w *warnings) (SidecarMode, error) {
	var istio SidecarMode
	iv, iok := ann[IstioNativeSidecar]
	if iok {
		native, err := parseBool(iv)
		if err != nil {
			return "", fmt.Errorf("%s: %w", annotationField(IstioNativeSidecar), err)
		}
		istio = Classic
		if native {
			istio = Native
		}
	}
	v, ok := ann[SidecarModeKey]
	if !ok {
		if iok {
			return istio, nil
		}
		return t.Mode, nil
	}
	switch m := SidecarMode(strings.ToLower(strings.TrimSpace(v))); m {
	case Native, Classic:
		if iok && m != istio {
			w.addf("annotations %s=%s and %s=%s disagree; %s wins", SidecarModeKey, clip.Quote(v), IstioNativeSidecar, clip.Quote(iv), SidecarModeKey)
		}
		return m, nil
	}
	return "", fmt.Errorf("%s: %s is not native or classic", annotationField(SidecarModeKey), clip.Quote(v))
}

// proxySettings reads the status port (status.sidecar.istio.io/port,
// default 15020; 0 for none: no app-health endpoint, no probes rewritten
// and no readiness probe on the proxy, as Istio) and whether probes are
// rewritten (sidecar.istio.io/rewriteAppHTTPProbers, default the
// template's).
func (t Template) proxySettings(ann map[string]string, spec *corev1.PodSpec, w *warnings) (int32, bool, []error) {
	var errs []error
	status := int32(sidecar.AgentPort)
	if v, field, ok := statusPortSetting.lookup(ann, w); ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %s is not a port (0-65535; 0 for none)", field, clip.Quote(v)))
		case n != sidecar.AgentPort && slices.Contains(reservedPorts, int32(n)):
			errs = append(errs, fmt.Errorf("%s: %d is one of the proxy's other ports", field, n))
		case n != 0 && declaresPort(spec, int32(n)):
			errs = append(errs, fmt.Errorf("%s: %d is a port of the app's", field, n))
		default:
			status = int32(n)
		}
		if status == 0 {
			w.addf("%s: 0: the proxy serves no status port, so it has no readiness probe and no app probe is rewritten (as in Istio)", field)
		}
	}
	rewrite := t.RewriteProbes
	if v, field, ok := rewriteProbesSetting.lookup(ann, w); ok {
		b, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		rewrite = b
	}
	return status, rewrite, errs
}

func declaresPort(spec *corev1.PodSpec, port int32) bool {
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			for _, p := range c.Ports {
				if p.ContainerPort == port {
					return true
				}
			}
		}
	}
	return false
}

// captured is a pod's capture: the init step's args, the interception
// mode, and which inbound ports are captured.
type captured struct {
	args         []string
	interception string
	inboundAll   bool
	inbound      []capture.PortRange // with inboundAll, the excluded ones
}

// captured says whether an inbound connection to port is captured.
func (c captured) captured(port int32) bool {
	if c.interception == "NONE" || port <= 0 || port > 65535 {
		return false
	}
	in := capture.PortsContain(c.inbound, uint16(port))
	return in != c.inboundAll
}

// captureArgs turns the pod's annotations into `shunt redirect` args in
// istio-iptables' spelling, checking each value. The proxy's own inbound
// ports are always excluded, in Istio's order: Prometheus, health, what
// the pod excludes, then the status port.
func captureArgs(ann map[string]string, spec *corev1.PodSpec, status int32, w *warnings) (captured, []error) {
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
	excluded := []string{strconv.Itoa(sidecar.PrometheusPort), strconv.Itoa(sidecar.HealthPort)}
	if extra := values["-d"]; extra != "" {
		for _, p := range strings.Split(extra, ",") {
			if !slices.Contains(excluded, p) {
				excluded = append(excluded, p)
			}
		}
	}
	if s := strconv.Itoa(int(status)); status != 0 && !slices.Contains(excluded, s) {
		excluded = append(excluded, s)
	}
	values["-d"] = strings.Join(excluded, ",")
	for _, s := range settings {
		if v, ok := values[s.flag]; ok && (v != "" || s.flag == "-i" || s.flag == "-b") {
			args = append(args, s.flag, v)
		}
	}
	c := captured{args: args, interception: values["-m"], inboundAll: values["-b"] == "*"}
	list := values["-b"]
	if c.inboundAll {
		list = values["-d"]
	}
	c.inbound, _ = capture.ParsePortList(list) // checked above
	return c, errs
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

// proxyResources is the template's proxy resources, or, as in Istio, if the
// pod sets any of the four resource annotations, the resources those say
// and nothing else: a request above the default limit is then allowed.
func (t Template) proxyResources(ann map[string]string, w *warnings) (corev1.ResourceRequirements, []error) {
	var res corev1.ResourceRequirements
	var errs []error
	fields := map[string]string{}
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
		fields[s.flag] = field
	}
	if len(fields) == 0 && len(errs) == 0 {
		return *t.ProxyResources.DeepCopy(), nil
	}
	for name, req := range res.Requests {
		if lim, ok := res.Limits[name]; ok && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("%s (%s) is above %s (%s): the API server refuses a request above its limit; raise the limit or lower the request",
				fields["requests."+string(name)], req.String(), fields["limits."+string(name)], lim.String()))
		}
	}
	return res, errs
}
