package inject

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// Names of the containers shunt adds.
const (
	InitName  = "shunt-init"
	ProxyName = "shunt-proxy"
)

// SidecarMode says how the proxy is added.
type SidecarMode string

const (
	// Native adds the proxy as an init container with restartPolicy Always
	// (Kubernetes ≥ 1.29): it starts before the app, is ready before the app
	// starts, and does not keep a Job from completing.
	Native SidecarMode = "native"
	// Classic adds the proxy as the first regular container with a postStart
	// hook that waits until it is ready, for clusters without native sidecars.
	Classic SidecarMode = "classic"
)

// Template is what gets injected, apart from what each pod's annotations say.
type Template struct {
	Image          string
	PullPolicy     corev1.PullPolicy
	Mode           SidecarMode
	NativeNftables bool // the init step uses shunt's nftables table instead of iptables
	RewriteProbes  bool // app probes on captured ports go through the proxy's status port (Istio's rewriteAppHTTPProbe)
	DNSCapture     bool // the pods' DNS goes to the proxy's DNS proxy (Istio's ISTIO_META_DNS_CAPTURE), unless a pod says otherwise
	// XDSAddress is the control plane (host:port) the proxies take their
	// configuration from; "" for none (the sidecar from its flags).
	XDSAddress string
	// CAAddress is the CA (host:port) the proxies get their workload
	// certificates from, by the pod's projected token; "" for none (no
	// mutual TLS).
	CAAddress string
	// TracingCollector is the OpenTelemetry collector (host:port, or an
	// http:// URL with TracingProtocol http) the proxies send spans to;
	// "" for no tracing. TracingSampling is the percentage of requests
	// traced (Istio's meshConfig.defaultConfig.tracing.sampling), unless
	// a pod's proxy.istio.io/config says otherwise.
	TracingCollector string
	TracingProtocol  string
	TracingSampling  float64
	ProxyResources   corev1.ResourceRequirements
	InitResources    corev1.ResourceRequirements
}

// DefaultTemplate is Istio's resource defaults with shunt's image.
func DefaultTemplate() Template {
	return Template{
		Image:         "shunt:latest",
		PullPolicy:    corev1.PullIfNotPresent,
		Mode:          Native,
		RewriteProbes: true,
		// Istio's default sampling.
		TracingSampling: 1,
		ProxyResources:  resources("100m", "128Mi", "2", "1Gi"),
		InitResources:   resources("10m", "16Mi", "500m", "128Mi"),
	}
}

func resources(cpu, mem, cpuLimit, memLimit string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuLimit), corev1.ResourceMemory: resource.MustParse(memLimit)},
	}
}

// Validate checks the template before any pod sees it.
func (t Template) Validate() error {
	switch {
	case strings.TrimSpace(t.Image) == "":
		return fmt.Errorf("template: the image is empty")
	case t.Mode != Native && t.Mode != Classic:
		return fmt.Errorf("template: sidecar mode %s is not native or classic", clip.Quote(string(t.Mode)))
	}
	if t.XDSAddress != "" {
		if _, _, err := net.SplitHostPort(t.XDSAddress); err != nil {
			return fmt.Errorf("template: the control plane's address %s is not host:port", clip.Quote(t.XDSAddress))
		}
	}
	if t.CAAddress != "" {
		if _, _, err := net.SplitHostPort(t.CAAddress); err != nil {
			return fmt.Errorf("template: the CA's address %s is not host:port", clip.Quote(t.CAAddress))
		}
	}
	if err := t.checkTracing(); err != nil {
		return err
	}
	switch t.PullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("template: image pull policy %s is not Always, IfNotPresent or Never", clip.Quote(string(t.PullPolicy)))
	}
	return nil
}

// reservedPorts are the proxy's ports; no app container may declare them.
var reservedPorts = []int32{sidecar.AdminPort, sidecar.OutboundPort, sidecar.ProbePort, sidecar.InboundPort,
	sidecar.TunnelPort, sidecar.AgentPort, sidecar.HealthPort, sidecar.DNSPort, sidecar.PrometheusPort}

func (t Template) initContainer(args []string) corev1.Container {
	return corev1.Container{
		Name:            InitName,
		Image:           t.Image,
		ImagePullPolicy: t.PullPolicy,
		Command:         []string{"shunt"},
		Args:            append([]string{"redirect"}, args...),
		Resources:       t.InitResources,
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(false), // iptables takes its lock under /run
			RunAsUser:                ptr[int64](0),
			RunAsGroup:               ptr[int64](0),
			RunAsNonRoot:             ptr(false),
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func (t Template) proxyContainer(mode SidecarMode, tproxy, dns bool, res corev1.ResourceRequirements, status int32, probers string, id proxyIdentity) corev1.Container {
	statusAddr := ""
	if status != 0 {
		statusAddr = fmt.Sprintf(":%d", status)
	}
	// Under a control plane the listeners are its to say: the ports and
	// TPROXY reach it as the node's INTERCEPTION_MODE.
	args := []string{"proxy", "--xds-address", t.XDSAddress}
	if t.XDSAddress == "" {
		args = []string{"proxy", "--outbound-port", strconv.Itoa(sidecar.OutboundPort), "--inbound-port", strconv.Itoa(sidecar.InboundPort)}
	}
	args = append(args, "--health-addr", fmt.Sprintf(":%d", sidecar.HealthPort),
		"--prometheus-addr", fmt.Sprintf(":%d", sidecar.PrometheusPort),
		"--status-addr", statusAddr)
	if dns {
		args = append(args, "--dns")
	}
	if t.CAAddress != "" {
		args = append(args, "--ca-address", t.CAAddress)
	}
	caps := &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
	env := id.env()
	if tproxy {
		// IP_TRANSPARENT on the inbound listener needs CAP_NET_ADMIN.
		caps.Add = []corev1.Capability{"NET_ADMIN"}
		if t.XDSAddress == "" {
			args = append(args, "--tproxy")
		} else {
			env = append(env, corev1.EnvVar{Name: sidecar.InterceptionModeEnv, Value: "TPROXY"})
		}
	}
	if probers != "" {
		env = append(env, corev1.EnvVar{Name: AppProbersEnv, Value: probers})
	}
	ready := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(sidecar.HealthPort)}},
		PeriodSeconds:    2,
		TimeoutSeconds:   1,
		FailureThreshold: 30,
	}
	if status == 0 {
		ready = nil // as Istio: no status port, no readiness
	}
	c := corev1.Container{
		Name:            ProxyName,
		Image:           t.Image,
		ImagePullPolicy: t.PullPolicy,
		Command:         []string{"shunt"},
		Args:            args,
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: "shunt-prom", ContainerPort: sidecar.PrometheusPort, Protocol: corev1.ProtocolTCP},
			{Name: "shunt-health", ContainerPort: sidecar.HealthPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: ready,
		Resources:      res,
		VolumeMounts:   t.identityMounts(),
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             caps,
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			RunAsUser:                ptr[int64](sidecar.ProxyUID),
			RunAsGroup:               ptr[int64](sidecar.ProxyGID),
			RunAsNonRoot:             ptr(true),
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	switch mode {
	case Native:
		// The kubelet starts the next init container (and then the app) only
		// once the startup probe passes.
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		if ready != nil {
			startup := *ready
			startup.PeriodSeconds, startup.FailureThreshold = 1, 600
			c.StartupProbe = &startup
		}
	case Classic:
		// The kubelet starts the next container only when postStart returns.
		c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"shunt", "wait", "--url", fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", sidecar.HealthPort), "--timeout", "5m"},
		}}}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// proxyIdentity is what the proxy is told of its pod, for Istio's metric
// labels: the workload's name (known at injection), the pod's labels, and
// through the downward API its name, namespace, address and service
// account.
type proxyIdentity struct {
	workload string
	labels   map[string]string
}

func (id proxyIdentity) env() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		field(sidecar.PodNameEnv, "metadata.name"),
		field(sidecar.PodNamespaceEnv, "metadata.namespace"),
		field(sidecar.InstanceIPEnv, "status.podIP"),
		field(sidecar.ServiceAccountEnv, "spec.serviceAccountName"),
	}
	if id.workload != "" {
		env = append(env, corev1.EnvVar{Name: sidecar.WorkloadNameEnv, Value: id.workload})
	}
	if len(id.labels) > 0 {
		b, _ := json.Marshal(id.labels) // map keys come out sorted
		env = append(env, corev1.EnvVar{Name: sidecar.LabelsJSONEnv, Value: string(b)})
	}
	return env
}

// workloadOf names the workload a pod belongs to: its controller (a
// ReplicaSet without its template hash: the Deployment), else its name
// or generateName, as Istio's injection does.
func workloadOf(meta *metav1.ObjectMeta) string {
	for _, o := range meta.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if hash := meta.Labels["pod-template-hash"]; hash != "" {
				if base, ok := strings.CutSuffix(o.Name, "-"+hash); ok {
					return base
				}
			}
		}
		return o.Name
	}
	if meta.Name != "" {
		return sidecar.WorkloadOfPod(meta.Name, meta.Labels)
	}
	return sidecar.WorkloadOfPod(meta.GenerateName, meta.Labels)
}

// tracingArgs are the proxy's tracing flags: the template's collector,
// at the pod's sampling rate or the template's. Under a control plane
// the tracing is the control plane's to configure: none.
func (t Template) tracingArgs(pc istioProxyConfig, w *warnings) []string {
	if t.TracingCollector == "" || t.XDSAddress != "" {
		if pc.sampling != nil {
			w.addf("%s: tracing.sampling: the proxy traces nothing here (no collector in the injection template, or the control plane configures tracing)", IstioProxyConfig)
		}
		return nil
	}
	sampling := t.TracingSampling
	if pc.sampling != nil {
		sampling = *pc.sampling
	}
	protocol := t.TracingProtocol
	if protocol == "" {
		protocol = "grpc"
	}
	return []string{"--tracing-collector", t.TracingCollector, "--tracing-protocol", protocol,
		"--tracing-sampling", strconv.FormatFloat(sampling, 'f', -1, 64)}
}

// checkTracing checks the template's collector, protocol and sampling.
func (t Template) checkTracing() error {
	if t.TracingCollector == "" {
		return nil
	}
	switch t.TracingProtocol {
	case "", "grpc", "http":
	default:
		return fmt.Errorf("template: tracing protocol %s is not grpc or http", clip.Quote(t.TracingProtocol))
	}
	if t.TracingSampling < 0 || t.TracingSampling > 100 {
		return fmt.Errorf("template: tracing sampling %v is not a percentage (0 to 100)", t.TracingSampling)
	}
	hostPort := t.TracingCollector
	if rest, ok := strings.CutPrefix(hostPort, "http://"); ok && t.TracingProtocol == "http" {
		hostPort, _, _ = strings.Cut(rest, "/")
	}
	if _, _, err := net.SplitHostPort(hostPort); err != nil {
		return fmt.Errorf("template: the tracing collector %s is not host:port (or, over http, an http:// URL)", clip.Quote(t.TracingCollector))
	}
	return nil
}
