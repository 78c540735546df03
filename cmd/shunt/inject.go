package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/shunt-dev/shunt/inject"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// templateFlags registers what both `inject` and `webhook` put in a pod;
// the returned function checks the flags and gives the template.
func templateFlags(fs *pflag.FlagSet) func() (inject.Template, error) {
	t := inject.DefaultTemplate()
	mode, policy := new(string), new(string)
	*mode, *policy = string(t.Mode), string(t.PullPolicy)
	fs.Var(newChoice(mode, string(inject.Native), string(inject.Classic)), "sidecar-mode", "native (proxy as an init container with restartPolicy Always; Kubernetes ≥ 1.29) or classic (proxy as the first container with a wait hook)")
	fs.StringVar(&t.Image, "image", t.Image, "image of the init step and the proxy; it must hold shunt and iptables/nftables")
	fs.Var(newChoice(policy, string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever)), "image-pull-policy", "Always, IfNotPresent or Never")
	fs.BoolVar(&t.NativeNftables, "nftables", false, "the init step uses shunt's nftables table instead of iptables")
	fs.BoolVar(&t.DNSCapture, "dns-capture", false, "capture the pods' DNS to the proxy's DNS proxy (redirect --redirect-dns, proxy --dns), unless a pod says otherwise with "+inject.DNSCaptureAnnotation+" or Istio's proxy.istio.io/config proxyMetadata ISTIO_META_DNS_CAPTURE")
	fs.StringVar(&t.XDSAddress, "xds-address", "", "the control plane (host:port; shunt-control.shunt-system.svc:15010, say) the proxies take their configuration from over xDS; \"\" for the sidecar from its flags")
	fs.StringVar(&t.CAAddress, "ca-address", "", "the CA (host:port; shunt-control.shunt-system.svc:15012, say) the proxies get their workload certificates from, by the pod's projected token (audience istio-ca); "+
		"the pods are labelled "+sidecar.TLSModeLabel+"="+sidecar.TLSModeIstio+", so the mesh sends them mutual TLS; \"\" for none")
	fs.StringVar(&t.TracingCollector, "tracing-collector", "", "the OpenTelemetry collector the proxies send spans to (proxy --tracing-collector); \"\" for no tracing. Ignored with --xds-address: the control plane configures tracing")
	t.TracingProtocol = "grpc"
	fs.Var(newChoice(&t.TracingProtocol, "grpc", "http"), "tracing-protocol", "grpc or http: OTLP's transport to --tracing-collector")
	fs.Float64Var(&t.TracingSampling, "tracing-sampling", t.TracingSampling, "percentage of requests the proxies trace (Istio's meshConfig.defaultConfig.tracing.sampling), unless a pod's proxy.istio.io/config sets tracing.sampling")
	fs.BoolVar(&t.RewriteProbes, "rewrite-app-probes", t.RewriteProbes, "send app probes on captured ports through the proxy's status port, so they test the app (a pod may say otherwise with sidecar.istio.io/rewriteAppHTTPProbers)")
	type quantityFlag struct {
		flag, annotation string
		list             corev1.ResourceList
		name             corev1.ResourceName
		value            *string
	}
	r := t.ProxyResources
	quantities := []*quantityFlag{
		{"proxy-cpu", "proxyCPU", r.Requests, corev1.ResourceCPU, nil},
		{"proxy-memory", "proxyMemory", r.Requests, corev1.ResourceMemory, nil},
		{"proxy-cpu-limit", "proxyCPULimit", r.Limits, corev1.ResourceCPU, nil},
		{"proxy-memory-limit", "proxyMemoryLimit", r.Limits, corev1.ResourceMemory, nil},
	}
	for _, q := range quantities {
		cur := q.list[q.name]
		q.value = fs.String(q.flag, cur.String(), fmt.Sprintf("proxy %s (a pod may set its own with sidecar.istio.io/%s)", q.flag[len("proxy-"):], q.annotation))
	}
	return func() (inject.Template, error) {
		if strings.TrimSpace(t.Image) == "" {
			return t, usageError{errors.New("--image: give the image of the init step and the proxy")}
		}
		t.Mode = inject.SidecarMode(*mode)
		t.PullPolicy = corev1.PullPolicy(*policy)
		if _, _, err := net.SplitHostPort(t.XDSAddress); t.XDSAddress != "" && err != nil {
			return t, usageError{fmt.Errorf("--xds-address %s: not host:port", clip.Quote(t.XDSAddress))}
		}
		if _, _, err := net.SplitHostPort(t.CAAddress); t.CAAddress != "" && err != nil {
			return t, usageError{fmt.Errorf("--ca-address %s: not host:port", clip.Quote(t.CAAddress))}
		}
		for _, q := range quantities {
			v, err := resource.ParseQuantity(*q.value)
			if err != nil {
				return t, usageError{fmt.Errorf("--%s: %s is not a quantity", q.flag, clip.Quote(*q.value))}
			}
			q.list[q.name] = v
		}
		if t.TracingSampling < 0 || t.TracingSampling > 100 {
			return t, usageError{fmt.Errorf("--tracing-sampling %v: not a percentage (0 to 100)", t.TracingSampling)}
		}
		if err := t.Validate(); err != nil {
			if strings.Contains(err.Error(), "tracing collector") {
				err = fmt.Errorf("--tracing-collector %s: not host:port (or, with --tracing-protocol http, an http:// URL)", clip.Quote(t.TracingCollector))
			}
			return t, usageError{err}
		}
		return t, nil
	}
}

func newInjectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Add the capture step and the proxy to the pods of Kubernetes manifests (offline)",
		Long: "inject reads Pods, Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs\n" +
			"and Lists (YAML or JSON, several documents) and writes them with shunt's init step and\n" +
			"proxy added, as the webhook would. Other documents, and pods that opt out, come out\n" +
			"byte for byte. Offline there is no namespace to ask, so every pod is injected unless it\n" +
			"opts out (sidecar.istio.io/inject: \"false\"). Nothing is written if any document is in error.",
		Example: "  shunt inject -f deployment.yaml | kubectl apply -f -\n" +
			"  kubectl get deploy web -o yaml | shunt inject -f - --sidecar-mode classic",
		Args: cobra.NoArgs,
	}
	file := cmd.Flags().StringP("filename", "f", "", "manifest to read; - for standard input")
	output := cmd.Flags().StringP("output", "o", "-", "where to write; - for standard output")
	quiet := cmd.Flags().BoolP("quiet", "q", false, "do not report each pod on standard error")
	template := templateFlags(cmd.Flags())
	var t inject.Template
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		if t, err = template(); err != nil {
			return err
		}
		if *file == "" {
			return usageError{fmt.Errorf("--filename (-f): give a manifest file, or - for standard input")}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		in, err := readInput(cmd, *file)
		if err != nil {
			return err
		}
		out, reports, err := t.Documents(in, inject.Namespace{Default: true})
		if !*quiet {
			for _, r := range reports {
				verb := "injected"
				if !r.Decision.Inject {
					verb = "left alone"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s (%s)\n", r.Object, verb, r.Decision.Reason)
				for _, w := range r.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", r.Object, w)
				}
			}
		}
		if err != nil {
			return usageError{err}
		}
		if *output == "-" {
			_, err = cmd.OutOrStdout().Write(out)
			return err
		}
		return os.WriteFile(*output, out, 0o644)
	}
	return cmd
}

func readInput(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, usageError{err}
	}
	return b, nil
}
