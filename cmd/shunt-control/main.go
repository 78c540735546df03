// Command shunt-control is the mesh's control plane, as istiod: it
// serves sidecars their configuration over xDS. It is a program of its
// own, as istiod is apart from the sidecar: the Kubernetes client it
// needs would cost every sidecar's start 4 MB.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/shunt-dev/shunt/ca"
	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/internal/memlimit"
	"github.com/shunt-dev/shunt/meshgraph"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/tracing"
	"github.com/shunt-dev/shunt/sidecar"
)

// usageError marks an error in what the user asked for (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	cmd := newControlCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shunt-control:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newControlCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shunt-control",
		Short: "Serve sidecars their configuration over xDS, from a cluster's Services, EndpointSlices and Pods",
		Long: "control is the mesh's control plane, as istiod: it watches the cluster (or reads a file of\n" +
			"manifests, re-read when it changes), compiles each connected sidecar's listeners, routes,\n" +
			"clusters and endpoints, and serves them over ADS (gRPC, plaintext) on --addr; a change\n" +
			"is pushed once changes settle (--debounce-after, at most --debounce-max), each type only\n" +
			"when it changed. /debug/syncz, /debug/config_dump?proxyID=ID and /metrics are on --monitor-addr.",
		Example: "  shunt-control                                  # in a pod: the cluster it runs in\n" +
			"  shunt-control --kubeconfig ~/.kube/config\n" +
			"  shunt-control --from-file mesh.yaml\n" +
			"  shunt-control --from-file mesh.yaml --dump sidecar~10.1.0.5~app-1.default~default.svc.cluster.local",
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	addr := f.String("addr", ":15010", "gRPC address of ADS (istiod's plaintext xDS port)")
	monitor := f.String("monitor-addr", ":15014", "plain-HTTP address of /ready, /metrics and /debug/ (\"\" for none)")
	kubeconfig := f.String("kubeconfig", "", "the cluster's kubeconfig (default $KUBECONFIG, else the pod's service account)")
	fromFile := f.String("from-file", "", "read Services, EndpointSlices and Pods from this file of manifests instead of a cluster")
	dump := f.String("dump", "", "print the configuration of the sidecar with this node id (YAML) and exit")
	domain := f.String("domain", control.DefaultDomain, "the cluster's DNS domain")
	mesh := control.DefaultMesh()
	f.DurationVar(&mesh.ConnectTimeout, "connect-timeout", mesh.ConnectTimeout, "every cluster's connect timeout (meshConfig connectTimeout)")
	policy := f.String("outbound-traffic-policy", "ALLOW_ANY",
		"traffic to no known service: passed through (ALLOW_ANY), or refused (REGISTRY_ONLY) (meshConfig outboundTrafficPolicy.mode)")
	f.StringVar(&mesh.AccessLogFile, "access-log-file", "", "sidecars log each request and connection here, /dev/stdout say (meshConfig accessLogFile; \"\" none)")
	f.StringVar(&mesh.AccessLogFormat, "access-log-format", "", "in this format: istio (default), envoy, json, a JSON object, or an Envoy format string")
	f.DurationVar(&mesh.ProtocolDetectionTimeout, "protocol-detection-timeout", mesh.ProtocolDetectionTimeout,
		"how long sidecars wait for a client's first bytes to tell HTTP (meshConfig protocolDetectionTimeout; 0 waits)")
	f.BoolVar(&mesh.DNSAutoAllocate, "dns-auto-allocate", false,
		"give ServiceEntry hosts with no addresses one of 240.240.0.0/16, which sidecars' DNS proxies answer and their capture routes (Istio's ISTIO_META_DNS_AUTO_ALLOCATE)")
	selectors := f.StringArray("discovery-selectors", nil,
		"a label selector of namespaces, repeated: the mesh is the namespaces one selects, their services and rules (meshConfig discoverySelectors; none: every namespace)")
	var after, most time.Duration
	f.DurationVar(&after, "debounce-after", control.DefaultDebounceAfter, "push once no change came for this long (PILOT_DEBOUNCE_AFTER)")
	f.DurationVar(&most, "debounce-max", control.DefaultDebounceMax, "push at the latest this long after the first change (PILOT_DEBOUNCE_MAX)")
	logJSON := f.Bool("log-json", false, "log as JSON lines")
	tracingCollector := f.String("tracing-collector", "", "sidecars trace their HTTP requests to this OpenTelemetry collector: host:port (OTLP/gRPC; otel-collector.observability.svc:4317, say), or over --tracing-protocol http an http:// URL "+
		"(Istio's meshConfig.extensionProviders opentelemetry with defaultProviders.tracing; each sidecar names its spans by its workload; \"\" for none)")
	tracingProtocol := f.String("tracing-protocol", "grpc", "grpc or http: OTLP's transport to --tracing-collector")
	var graph graphSources
	f.StringVar(&graph.prometheusURL, "prometheus-url", "", "the mesh graph (/graph on --monitor-addr) reads the sidecars' metrics from this Prometheus (http://prometheus:9090, say) instead of scraping them itself")
	f.StringVar(&graph.tracingURL, "tracing-ui-url", "", "the trace backend's UI (Jaeger's, http://jaeger:16686, say): the mesh graph's service pages link a search of the service's traces, and of a request's by its x-request-id")
	tracingSampling := f.Float64("tracing-sampling", 1, "percentage of requests the sidecars trace when a request carries no decision of its own (meshConfig.defaultConfig.tracing.sampling)")
	metadataExchange := f.String("metadata-exchange-headers", proxy.PeerMetadataAlways, "sidecars' part in Istio's metadata exchange (x-envoy-peer-metadata, which names the peer workload in the metrics): "+
		"always (Istio's ALWAYS: with every outbound HTTP request), in-mesh (IN_MESH: not to PassthroughCluster, which leaves the mesh), off (meshConfig.defaultConfig.proxyHeaders.metadataExchangeHeaders)")
	var caf caFlags
	caf.register(f)
	autoMTLS := f.Bool("enable-auto-mtls", true, "sidecars send mutual TLS to pods with sidecars and take it inbound as PeerAuthentications say (meshConfig enableAutoMtls); "+
		"in force when the CA serves (--ca-addr, a cluster)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		mesh.RegistryOnly = *policy == "REGISTRY_ONLY"
		for _, s := range *selectors {
			sel, err := labels.Parse(s)
			if err != nil {
				return usageError{fmt.Errorf("--discovery-selectors %q: %v", s, err)}
			}
			mesh.DiscoverySelectors = append(mesh.DiscoverySelectors, sel)
		}
		switch {
		case *policy != "ALLOW_ANY" && *policy != "REGISTRY_ONLY":
			return usageError{fmt.Errorf("--outbound-traffic-policy %q: not ALLOW_ANY or REGISTRY_ONLY", *policy)}
		case mesh.ConnectTimeout <= 0:
			return usageError{fmt.Errorf("--connect-timeout %s: not positive", mesh.ConnectTimeout)}
		case mesh.ProtocolDetectionTimeout < 0:
			return usageError{fmt.Errorf("--protocol-detection-timeout %s: negative", mesh.ProtocolDetectionTimeout)}
		case after <= 0:
			return usageError{fmt.Errorf("--debounce-after %s: not positive", after)}
		case *kubeconfig != "" && *fromFile != "":
			return usageError{errors.New("--kubeconfig and --from-file: give one source")}
		case *dump != "" && *fromFile == "":
			return usageError{errors.New("--dump reads --from-file")}
		case most < after:
			return usageError{fmt.Errorf("--debounce-max %s is under --debounce-after %s", most, after)}
		}
		if err := caf.check(*fromFile != "", f.Changed); err != nil {
			return usageError{err}
		}
		if err := meshTracing(&mesh, *tracingCollector, *tracingProtocol, *tracingSampling, f.Changed); err != nil {
			return usageError{err}
		}
		for _, f := range [][2]string{{"prometheus-url", graph.prometheusURL}, {"tracing-ui-url", graph.tracingURL}} {
			if u, err := url.Parse(f[1]); f[1] != "" && (err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
				return usageError{fmt.Errorf("--%s %s: not an http:// or https:// URL", f[0], clip.Quote(f[1]))}
			}
		}
		mesh.AutoMTLS, mesh.TrustDomain = *autoMTLS && caf.addr != "", caf.opt.TrustDomain
		switch mesh.PeerMetadata = *metadataExchange; mesh.PeerMetadata {
		case proxy.PeerMetadataAlways, proxy.PeerMetadataInMesh, proxy.PeerMetadataOff:
		default:
			return usageError{fmt.Errorf("--metadata-exchange-headers %s: not always, in-mesh or off", clip.Quote(*metadataExchange))}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var handler slog.Handler = slog.NewTextHandler(cmd.ErrOrStderr(), nil)
		if *logJSON {
			handler = slog.NewJSONHandler(cmd.ErrOrStderr(), nil)
		}
		log := slog.New(handler)
		if soft := memlimit.FromCgroup(); soft > 0 {
			log.Info("Go memory limit set from the container's", "bytes", soft)
		}
		control.TuneGC()
		world := control.NewWorld()
		world.Domain = *domain
		if *fromFile != "" {
			w, err := loadManifests(*fromFile, *domain)
			if err != nil {
				return err
			}
			world = w
		}
		if *dump != "" {
			return dumpProxy(cmd, world, *dump, mesh)
		}
		srv, err := control.NewServer(mesh, world, after, most, log)
		if err != nil {
			return usageError{err}
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var svc *ca.Service
		if *fromFile != "" {
			go followFile(ctx, *fromFile, *domain, srv, log)
		} else {
			cfg, err := clusterConfig(*kubeconfig)
			if err != nil {
				return err
			}
			if err := control.Watch(ctx, cfg, srv); err != nil {
				return err
			}
			if caf.addr != "" {
				if svc, err = control.StartCA(ctx, cfg, srv, caf.opt, log); err != nil {
					return err
				}
				srv.RegisterMetrics(control.CAMetrics(svc)...)
			}
		}
		return serveControl(ctx, srv, *addr, *monitor, graph, log, &caf, svc)
	}
	return cmd
}

// serveControl serves ADS and the monitoring endpoints until ctx ends.
func serveControl(ctx context.Context, srv *control.Server, addr, monitor string, graph graphSources, log *slog.Logger, caf *caFlags, svc *ca.Service) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := control.NewGRPCServer()
	srv.Register(g)
	errs := make(chan error, 3)
	if svc != nil {
		tln, err := net.Listen("tcp", caf.addr)
		if err != nil {
			ln.Close()
			return err
		}
		tg, err := serveTLS(tln, svc, srv, caf.hosts, log)
		if err != nil {
			tln.Close()
			ln.Close()
			return err
		}
		defer tg.Stop()
		go func() { errs <- tg.Serve(tln) }()
	}
	go srv.Run(ctx)
	go func() { errs <- g.Serve(ln) }()
	var mon *http.Server
	if monitor != "" {
		mln, err := net.Listen("tcp", monitor)
		if err != nil {
			g.Stop()
			return err
		}
		mon = &http.Server{Handler: monitorHandler(ctx, srv, graph), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- mon.Serve(mln) }()
		log.Info("control plane serving", "xds", ln.Addr().String(), "monitor", mln.Addr().String())
	} else {
		log.Info("control plane serving", "xds", ln.Addr().String())
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	g.Stop()
	if mon != nil {
		mon.Close()
	}
	return err
}

// graphSources are where the mesh graph reads the sidecars' metrics
// (Prometheus, else the sidecars), and the trace backend it links.
type graphSources struct{ prometheusURL, tracingURL string }

// monitorHandler is the control plane's monitoring endpoints and the mesh
// graph (/graph, /graph.svg, /graph.json, /graph/service/NS/NAME) over the
// last minute: from Prometheus when its URL is set, else from the
// connected sidecars' metrics, read every 5 s; service pages link the
// trace backend's search, when set.
func monitorHandler(ctx context.Context, srv *control.Server, gs graphSources) http.Handler {
	var source func() (meshgraph.Graph, map[string]string)
	if gs.prometheusURL != "" {
		source = (&meshgraph.Prometheus{URL: gs.prometheusURL}).Graph
	} else {
		scraper := &meshgraph.Scraper{Targets: func() []string {
			var out []string
			for _, a := range srv.ProxyAddrs() {
				out = append(out, netip.AddrPortFrom(a, sidecar.PrometheusPort).String())
			}
			return out
		}}
		go scraper.Run(ctx)
		source = scraper.Graph
	}
	graph := meshgraph.Handler(source, 5*time.Second, meshgraph.Options{Describe: srv.DescribeService, TracingURL: gs.tracingURL})
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	for _, path := range []string{"/graph", "/graph.svg", "/graph.json", "/graph/"} {
		mux.Handle(path, graph)
	}
	return mux
}

// clusterConfig is how to reach the cluster of kubeconfig ($KUBECONFIG,
// else the pod's own service account).
func clusterConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, usageError{fmt.Errorf("no cluster: give --kubeconfig or --from-file (in a pod: %v)", err)}
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, usageError{fmt.Errorf("--kubeconfig: %v", err)}
	}
	return cfg, nil
}

func loadManifests(path, domain string) (*control.World, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--from-file: %v", err)}
	}
	w, err := control.LoadWorld(data, domain)
	if err != nil {
		return nil, usageError{fmt.Errorf("--from-file %s: %v", path, err)}
	}
	return w, nil
}

// followFile re-reads the manifests when the file changes; a file that
// does not load leaves the world as it was.
func followFile(ctx context.Context, path, domain string, srv *control.Server, log *slog.Logger) {
	last := modTime(path)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if m := modTime(path); !m.Equal(last) {
			last = m
			w, err := loadManifests(path, domain)
			if err != nil {
				log.Error("manifests not reloaded; the last good ones stay", "err", err)
				continue
			}
			log.Info("manifests reloaded", "file", path, "services", len(w.Services))
			srv.SetWorld(w)
		}
	}
}

func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// dumpProxy prints what the sidecar with node id would be sent.
func dumpProxy(cmd *cobra.Command, w *control.World, id string, mesh control.Mesh) error {
	n, err := control.ParseNode(&corev3.Node{Id: id})
	if err != nil {
		return usageError{fmt.Errorf("--dump: %v", err)}
	}
	res, err := control.Compile(w, n, mesh)
	if err != nil {
		return usageError{err}
	}
	out, err := res.YAML()
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(out)
	return err
}

// meshTracing sets the mesh's tracing from the --tracing-* flags.
func meshTracing(m *control.Mesh, collector, protocol string, sampling float64, changed func(string) bool) error {
	if collector == "" {
		for _, name := range []string{"tracing-protocol", "tracing-sampling"} {
			if changed(name) {
				return fmt.Errorf("--%s without --tracing-collector: nothing to send spans to", name)
			}
		}
		return nil
	}
	if protocol != "grpc" && protocol != "http" {
		return fmt.Errorf("--tracing-protocol %s: not grpc or http", clip.Quote(protocol))
	}
	if sampling < 0 || sampling > 100 {
		return fmt.Errorf("--tracing-sampling %v: not a percentage (0 to 100)", sampling)
	}
	m.Tracing = &proxy.TracingConfig{Collector: collector, Protocol: tracing.Protocol(protocol), Sampling: sampling}
	if err := m.Tracing.Check(); err != nil {
		return fmt.Errorf("--tracing-collector: %v", err)
	}
	return nil
}
