package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/dnsproxy"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/internal/memlimit"
	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
	"github.com/shunt-dev/shunt/sidecar"
	"github.com/shunt-dev/shunt/xds"
)

// proxyFlags are `shunt proxy`'s settings as given; check turns them into
// a proxyRun or refuses them, touching nothing.
type proxyFlags struct {
	cfg                      proxy.Config
	uid, gid                 uint32
	uidSet, gidSet           bool
	allowRoot                bool
	captureUIDs, captureGIDs []uint32
	accessLog, logLevel      string
	accessLogFormat          string
	drainListeners           string
	logJSON                  bool
	portProtocols            map[uint16]string
	workers                  int
	concurrency              int
	config                   string
	validate                 bool
	detection                string
	dns                      dnsFlags
	xdsAddress               string
	proxyType                string
	cert                     certFlags
	tracing                  tracingFlags
}

// sidecarOnlyFlags shape Istio's sidecar, which a --config file replaces.
var sidecarOnlyFlags = []string{"outbound-port", "inbound-port", "tproxy", "port-protocol", "protocol-detection", "protocol-detection-timeout",
	"access-log", "access-log-format", "stream-idle-timeout", "connect-timeout", "tracing-collector", "tracing-protocol", "tracing-sampling",
	"metadata-exchange-headers"}

// proxyEnv are Istio's environment variables for the drain, read when the
// flag is not given; seconds marks one given in whole seconds.
var proxyEnv = []struct {
	flag, env string
	seconds   bool
}{
	{"drain-timeout", "TERMINATION_DRAIN_DURATION_SECONDS", true},
	{"exit-on-zero-active-connections", "EXIT_ON_ZERO_ACTIVE_CONNECTIONS", false},
	{"minimum-drain-duration", "MINIMUM_DRAIN_DURATION", false},
}

// newGatewayCmd is `shunt gateway`: the proxy as a gateway's (Istio's
// router), configured by the control plane from the Gateway its pod's
// label names; no capture, no sidecar.
func newGatewayCmd() *cobra.Command {
	cmd := newProxyCmd()
	cmd.Use = "gateway"
	cmd.Short = "Run a gateway's proxy: serve the listeners of the Gateway its pod runs, as the control plane configures them"
	cmd.Long = "Run a gateway's proxy (shunt proxy --proxy-type router) in its own pod, no capture: it asks the control plane at\n" +
		"--xds-address for its configuration as router~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, and the control plane sends\n" +
		"the listeners of the Gateway (gateway.networking.k8s.io, of a GatewayClass whose controllerName is shunt.dev/gateway)\n" +
		"that the pod's label gateway.networking.k8s.io/gateway-name names, with the HTTPRoutes attached to it."
	cmd.Example = "  POD_NAME=public-gw-1 POD_NAMESPACE=default INSTANCE_IP=10.1.0.50 shunt gateway --xds-address shunt-control.shunt-system:15010 --uid 1337 --gid 1337"
	if err := cmd.Flags().Set("proxy-type", "router"); err != nil {
		panic(err) // the flag is the proxy command's
	}
	return cmd
}

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the sidecar: take captured connections on 15001 and 15006 and forward them to where they were going",
		Long: "Run the sidecar in the pod's network namespace (its container, or ip netns exec).\n" +
			"Started as root with --uid/--gid, it binds its ports and then drops to that identity;\n" +
			"it refuses to run as an identity the capture rules would capture, and as root unless --allow-root.\n" +
			"On SIGTERM it drains as Istio's sidecar does: inbound stops at once, outbound serves on\n" +
			"until --drain-timeout (TERMINATION_DRAIN_DURATION_SECONDS), then what is left is reset.",
		Example: "  shunt proxy --uid 1337 --gid 1337\n" +
			"  shunt proxy --config envoy.yaml --uid 1337 --gid 1337   # run an Envoy bootstrap's static_resources\n" +
			"  shunt proxy --config envoy.yaml --validate              # exit 0 if it would run, 2 listing every problem",
		Args: cobra.NoArgs,
	}
	pf := &proxyFlags{cfg: proxy.DefaultConfig(), captureUIDs: []uint32{sidecar.ProxyUID}, captureGIDs: []uint32{sidecar.ProxyGID},
		accessLog: "stdout", accessLogFormat: "text", logLevel: "info", drainListeners: "inbound", workers: 1, detection: "on",
		tracing: tracingFlags{protocol: "grpc", sampling: 1}, proxyType: "sidecar"}
	f := cmd.Flags()
	f.Var(newPort(&pf.cfg.OutboundPort), "outbound-port", "port captured outbound connections arrive on")
	f.Var(newPort(&pf.cfg.InboundPort), "inbound-port", "port captured inbound connections arrive on")
	f.BoolVar(&pf.cfg.TProxy, "tproxy", false, "inbound connections arrive by TPROXY (redirect -m TPROXY): listen with IP_TRANSPARENT, take the local address as the destination")
	f.Var(newDuration(&pf.cfg.ConnectTimeout, false, 24*time.Hour), "connect-timeout", "how long to wait for an upstream to accept")
	f.Var(newDuration(&pf.cfg.IdleTimeout, false, 0), "idle-timeout", "close a connection after this long with no byte either way")
	f.Var(newCount(&pf.cfg.MaxConnections, 0, 10_000_000), "max-connections", "reset new connections beyond this many open ones (0: only the descriptor limit's bound)")
	f.Var(newDuration(&pf.cfg.DrainTimeout, false, 24*time.Hour), "drain-timeout", "on SIGTERM, how long the drain lasts at most; then what is left is reset [$TERMINATION_DRAIN_DURATION_SECONDS]")
	f.Var(newChoice(&pf.drainListeners, "inbound", "all"), "drain-listeners", "listeners that stop at the start of a drain: inbound (Istio's: outbound serves on), or all")
	f.BoolVar(&pf.cfg.ExitOnZeroActive, "exit-on-zero-active-connections", false, "end the drain once no connection is open, after --minimum-drain-duration [$EXIT_ON_ZERO_ACTIVE_CONNECTIONS]")
	f.Var(newDuration(&pf.cfg.MinimumDrain, true, 24*time.Hour), "minimum-drain-duration", "with --exit-on-zero-active-connections, drain at least this long [$MINIMUM_DRAIN_DURATION]")
	f.Var(newHostPort(&pf.cfg.HealthAddr, true), "health-addr", "address of /healthz/ready (\"\" for none)")
	f.Var(newHostPort(&pf.cfg.StatusAddr, true), "status-addr", "address of Istio's agent port: the app probes injection rewrote (/app-health/…, from $ISTIO_KUBE_APP_PROBERS, against $INSTANCE_IP), /healthz/ready, /stats/prometheus, POST /quitquitquit (\"\" for none)")
	f.Var(newHostPort(&pf.cfg.PrometheusAddr, true), "prometheus-addr", "address of /stats/prometheus (\"\" for none)")
	f.Var(newHostPort(&pf.cfg.AdminAddr, true), "admin-addr", "address of the admin API, loopback unless --admin-allow-remote (\"\" for none)")
	f.BoolVar(&pf.cfg.AdminRemote, "admin-allow-remote", false, "let --admin-addr listen beyond loopback (it serves profiles and changes the log level)")
	f.StringVar(&pf.accessLog, "access-log", pf.accessLog, "where access log lines go: stdout, stderr, a file path, or off")
	f.Var(accessLogFormatValue{&pf.accessLogFormat}, "access-log-format", "Envoy's format language: text (Envoy's default format), istio (Istio's), json, a JSON object of format strings, or a format string such as '[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS%'")
	f.Var(newDuration(&pf.cfg.ProtocolDetectionTimeout, true, time.Minute), "protocol-detection-timeout", "how long to wait for a captured connection's first bytes to tell HTTP (proxied at L7) from the rest (passed through at L4); 0 turns detection off, everything is L4 [Istio's meshConfig.protocolDetectionTimeout, which waits for ever by default]")
	f.Var(newChoice(&pf.detection, "on", "off"), "protocol-detection", "on: a captured connection's first bytes say HTTP (L7) or not (L4); off: every captured connection is L4, except on ports --port-protocol declares HTTP")
	f.Var(portProtocolsValue{&pf.portProtocols}, "port-protocol", "PORT=PROTOCOL, repeated or comma-separated: what a destination port speaks, with Istio's port-name protocols (http, http2, grpc → L7; tcp, tls, https, mysql, mongo, redis, … → L4 at once, no detection)")
	f.Var(newDuration(&pf.cfg.StreamIdleTimeout, false, 24*time.Hour), "stream-idle-timeout", "an HTTP request in flight with no byte either way for this long is answered 408, or reset once its response has started (Envoy's stream_idle_timeout)")
	f.Var(newID(&pf.uid, &pf.uidSet, false), "uid", "after binding, run as this UID, a number or a user name (needs root)")
	f.Var(newID(&pf.gid, &pf.gidSet, true), "gid", "after binding, run as this GID, a number or a group name (needs root)")
	f.BoolVar(&pf.allowRoot, "allow-root", false, "run as UID 0 (no --uid, or --uid 0): the proxy then holds root's capabilities while it forwards traffic")
	f.Var(newIDList(&pf.captureUIDs, false), "capture-uid", "UIDs the capture rules exempt (redirect's -u)")
	f.Var(newIDList(&pf.captureGIDs, true), "capture-gid", "GIDs the capture rules exempt (redirect's -g)")
	f.Var(newChoice(&pf.logLevel, "debug", "info", "warn", "error"), "log-level", "debug, info, warn or error")
	f.BoolVar(&pf.logJSON, "log-json", false, "log as JSON lines")
	f.Var(newCount(&pf.concurrency, 0, 1024), "concurrency", "threads running Go code at once (GOMAXPROCS); 0 leaves the runtime's choice, which follows the container's CPU limit")
	f.StringVar(&pf.config, "config", "", "run this Envoy bootstrap (YAML or JSON: static_resources' listeners and clusters, admin) instead of Istio's sidecar; a field shunt does not implement is refused with its path")
	f.BoolVar(&pf.validate, "validate", false, "with --config: check the file as envoy --mode validate does, bind nothing; exit 0 if it would run, else 2 listing every problem")
	f.Var(newCount(&pf.workers, 1, proxy.MaxWorkers), "workers", "worker processes sharing the listeners; each has its own descriptor limit (two per connection)")
	pf.dns.add(f)
	f.StringVar(&pf.xdsAddress, "xds-address", "", "the control plane (host:port, plaintext gRPC, shunt-control or istiod): its listeners, routes, clusters and endpoints (ADS) configure the sidecar, or join --config's static resources, applied as they come; the proxy is the bootstrap's node, else Istio's sidecar identity from $POD_NAME, $POD_NAMESPACE, $INSTANCE_IP")
	f.Var(newChoice(&pf.proxyType, "sidecar", "router"), "proxy-type", "with --xds-address: what the proxy is to the control plane, as Istio's pilot-agent proxy says: a sidecar, or a gateway's proxy (router), which serves its Gateway's listeners")
	pf.cert.add(f)
	pf.tracing.add(f)
	pf.cfg.PeerMetadata = proxy.PeerMetadataAlways
	f.Var(newChoice(&pf.cfg.PeerMetadata, proxy.PeerMetadataAlways, proxy.PeerMetadataInMesh, proxy.PeerMetadataOff), "metadata-exchange-headers",
		"Istio's metadata exchange (x-envoy-peer-metadata, which names the peer workload in the metrics): always (Istio's default: with every outbound HTTP request), in-mesh (Istio's IN_MESH: not to PassthroughCluster, which leaves the mesh), off")
	var run *proxyRun
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) (err error) {
		run, err = pf.check(cmd.Flags(), os.LookupEnv)
		return err
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if pf.validate {
			fmt.Fprintf(cmd.OutOrStdout(), "%s: OK: %d listeners, %d clusters\n", clip.Quote(pf.config),
				len(run.cfg.Bootstrap.GetStaticResources().GetListeners()), len(run.cfg.Bootstrap.GetStaticResources().GetClusters()))
			return nil
		}
		return run.serve(cmd.Context())
	}
	return cmd
}

// proxyRun is a checked `shunt proxy` command line.
type proxyRun struct {
	cfg            proxy.Config
	uid, gid       int // -1: keep
	level          *slog.LevelVar
	logJSON        bool
	accessLog      string
	workers        int
	concurrency    int
	targetUID      uint32
	targetGID      uint32
	captureUIDs    []uint32
	captureGIDs    []uint32
	allowRootGiven bool
	configFile     string
	dns            *dnsRun  // nil: no DNS proxy
	cert           *certRun // nil: no workload certificate
	xdsAddress     string
	xdsNode        *corev3.Node
}

// check validates the flags (and Istio's drain variables) without opening
// or binding anything.
func (pf *proxyFlags) check(fs *pflag.FlagSet, getenv func(string) (string, bool)) (*proxyRun, error) {
	for _, e := range proxyEnv {
		v, ok := getenv(e.env)
		f := fs.Lookup(e.flag)
		if !ok || v == "" || f.Changed {
			continue
		}
		text := v
		if e.seconds {
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				return nil, usageError{fmt.Errorf("$%s: %s is not a whole number of seconds", e.env, clip.Quote(v))}
			}
			text += "s"
		}
		if err := f.Value.Set(text); err != nil {
			return nil, usageError{fmt.Errorf("$%s: %s %s", e.env, clip.Quote(v), valueReason(f, err))}
		}
	}
	r := &proxyRun{cfg: pf.cfg, uid: -1, gid: -1, level: new(slog.LevelVar), logJSON: pf.logJSON,
		accessLog: pf.accessLog, workers: pf.workers, concurrency: pf.concurrency,
		captureUIDs: pf.captureUIDs, captureGIDs: pf.captureGIDs}
	_ = r.level.UnmarshalText([]byte(pf.logLevel))
	r.cfg.AccessLogFormat = pf.accessLogFormat
	if len(pf.portProtocols) > 0 {
		r.cfg.PortProtocols = map[uint16]proxy.Protocol{}
		for port, name := range pf.portProtocols {
			r.cfg.PortProtocols[port], _ = proxy.IstioProtocol(name)
		}
	}
	if pf.drainListeners == "all" {
		r.cfg.DrainListeners = proxy.DrainAll
	}
	if pf.detection == "off" {
		if fs.Changed("protocol-detection-timeout") && r.cfg.ProtocolDetectionTimeout > 0 {
			return nil, usageError{errors.New("--protocol-detection off and --protocol-detection-timeout: the timeout is detection's; give one or the other")}
		}
		r.cfg.ProtocolDetectionTimeout = 0
	}
	if pf.validate && pf.config == "" {
		return nil, usageError{errors.New("--validate checks a --config file: give one")}
	}
	if pf.config != "" {
		if err := r.loadConfig(pf.config, fs); err != nil {
			return nil, err
		}
		if pf.validate {
			return r, nil // the rest is about running it
		}
	}
	if r.cfg.Bootstrap == nil && r.cfg.OutboundPort == r.cfg.InboundPort {
		return nil, usageError{fmt.Errorf("--outbound-port and --inbound-port are both %d: they must differ", r.cfg.OutboundPort)}
	}
	if r.cfg.AdminAddr != "" && !r.cfg.AdminRemote && !proxy.IsLoopbackAddr(r.cfg.AdminAddr) {
		return nil, usageError{fmt.Errorf("--admin-addr: %s is not a loopback address: the admin API serves profiles and "+
			"changes the log level; bind it to 127.0.0.1, or add --admin-allow-remote", clip.Quote(r.cfg.AdminAddr))}
	}
	if r.accessLog == "" {
		r.accessLog = "off"
	}
	if err := r.appProbes(getenv); err != nil {
		return nil, usageError{err}
	}
	r.targetUID, r.targetGID = uint32(os.Getuid()), uint32(os.Getgid())
	if pf.uidSet {
		r.uid, r.targetUID = int(pf.uid), pf.uid
	}
	if pf.gidSet {
		r.gid, r.targetGID = int(pf.gid), pf.gid
	}
	if r.targetUID == 0 && !pf.allowRoot {
		why := "no --uid was given and shunt proxy was started as root"
		if pf.uidSet {
			why = "--uid is 0"
		}
		return nil, usageError{fmt.Errorf("%s: the proxy would forward traffic as root. Run it with --uid %d --gid %d, "+
			"or add --allow-root if that is what you want", why, sidecar.ProxyUID, sidecar.ProxyGID)}
	}
	r.allowRootGiven = pf.allowRoot
	if err := checkExempt(r.targetUID, r.targetGID, r.captureUIDs, r.captureGIDs); err != nil {
		return nil, usageError{err}
	}
	if err := r.cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	dns, err := pf.dns.check(fs, getenv, "/etc/resolv.conf")
	if err != nil {
		return nil, usageError{err}
	}
	r.dns = dns
	if err := r.checkXDS(pf.xdsAddress, fs); err != nil {
		return nil, usageError{err}
	}
	if r.cert, err = pf.cert.check(fs, getenv); err != nil {
		return nil, usageError{err}
	}
	if err := pf.tracing.check(fs, &r.cfg, getenv); err != nil {
		return nil, usageError{err}
	}
	if r.cert != nil && r.workers > 1 {
		return nil, usageError{errors.New("--ca-address with --workers: the workload certificate is kept by one process")}
	}
	if pf.proxyType == "router" && r.xdsAddress == "" {
		return nil, usageError{errors.New("--proxy-type router: a gateway's proxy serves what its control plane sends: give --xds-address")}
	}
	if r.xdsAddress != "" {
		if r.xdsNode, err = xdsNode(r.cfg.Bootstrap.GetNode(), pf.proxyType, getenv); err != nil {
			return nil, usageError{err}
		}
	}
	return r, nil
}

// loadConfig reads and checks an Envoy bootstrap, refusing the flags that
// shape the sidecar it replaces; its admin address is the admin API's
// unless --admin-addr says otherwise.
func (r *proxyRun) loadConfig(file string, flags *pflag.FlagSet) error {
	for _, name := range sidecarOnlyFlags {
		if flags.Changed(name) {
			return usageError{fmt.Errorf("--%s shapes Istio's sidecar, which --config replaces: say it in the file", name)}
		}
	}
	b, err := envoyconfig.Load(file)
	if err == nil {
		err = proxy.CheckBootstrap(b)
	}
	var ps envoyconfig.Problems
	if errors.As(err, &ps) {
		lines := make([]string, len(ps))
		for i, p := range ps {
			lines[i] = "  " + clipMessage(p.String())
		}
		return usageError{fmt.Errorf("--config %s: %d problem(s):\n%s", clip.Quote(file), len(ps), strings.Join(lines, "\n"))}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // without the path, which the message quotes clipped
		if errors.Is(err, syscall.EINVAL) {
			err = errors.New("not a usable file name")
		}
	}
	if err != nil {
		return usageError{fmt.Errorf("--config %s: %v", clip.Quote(file), err)}
	}
	r.cfg.Bootstrap, r.configFile = b, file
	r.accessLog = "off" // the file's access_log entries say where lines go
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a != nil && !flags.Changed("admin-addr") {
		r.cfg.AdminAddr = net.JoinHostPort(a.GetAddress(), strconv.Itoa(int(a.GetPortValue())))
	}
	return nil
}

// appProbes reads the app probes injection moved to the proxy, and the
// pod's address to run them against (both Istio's variables).
func (r *proxyRun) appProbes(getenv func(string) (string, bool)) error {
	text, _ := getenv("ISTIO_KUBE_APP_PROBERS")
	probes, err := proxy.ParseAppProbes(text)
	if err != nil {
		return fmt.Errorf("$ISTIO_KUBE_APP_PROBERS: %s", clipMessage(err.Error()))
	}
	r.cfg.AppProbes = probes
	if ip, ok := getenv("INSTANCE_IP"); ok && ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("$INSTANCE_IP: %s is not an IP address", clip.Quote(ip))
		}
		r.cfg.AppProbeTarget = a.Unmap()
	}
	return nil
}

// serve opens the access log, binds, drops to the proxy's identity,
// checks it holds, and serves until SIGTERM or SIGINT and the drain.
func (r *proxyRun) serve(ctx context.Context) error {
	opts := &slog.HandlerOptions{Level: r.level}
	log := slog.New(slog.NewTextHandler(os.Stderr, opts))
	if r.logJSON {
		log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	ctl, isWorker, err := proxy.WorkerListeners()
	if err != nil {
		return err
	}
	if isWorker {
		r.cfg.HealthAddr, r.cfg.PrometheusAddr, r.cfg.AdminAddr = "", "", ""
	}
	if r.concurrency > 0 {
		runtime.GOMAXPROCS(r.concurrency)
	}
	if soft := memlimit.FromCgroup(); soft > 0 {
		log.Debug("Go memory limit set from the container's", "bytes", soft)
	}
	w, closeLog, err := openAccessLog(r.accessLog)
	if err != nil {
		return err
	}
	defer closeLog()
	r.cfg.AccessLog = w
	p, err := proxy.New(r.cfg, log, r.level)
	if err != nil {
		return usageError{err}
	}
	if isWorker {
		err = p.AdoptListeners()
	} else {
		err = p.Listen()
	}
	if err == nil && r.workers > 1 && !isWorker {
		err = startWorkers(p, r.workers)
	}
	if err == nil {
		err = dropPrivileges(r.uid, r.gid)
	}
	if err == nil {
		err = checkIdentity(r.targetUID, r.targetGID, r.allowRootGiven)
	}
	// The DNS proxy binds as the proxy's identity (its port is not
	// privileged): the capture tracks its answers by their socket's owner.
	var dns *dnsproxy.Server
	if err == nil && r.dns != nil && !isWorker {
		dns, err = r.dns.listen(log)
	}
	if err != nil {
		p.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if dns != nil {
		go serveDNS(ctx, dns, log)
	}
	if r.cert != nil {
		k, err := r.cert.start(ctx, log)
		if err != nil {
			p.Close()
			return err
		}
		p.SetCertificates(k.Current)
	}
	switch {
	case r.xdsAddress != "":
		// The file is read at the start; the control plane's resources
		// join it as they come.
		c := &xds.Client{Address: r.xdsAddress, Node: r.xdsNode, Base: r.cfg.Bootstrap, Apply: xds.Checked(p.Reload), Log: log}
		if dns != nil {
			c.Names = r.dns.fromControlPlane(dns, log)
		}
		p.AwaitConfig()
		p.SetXDSStatus(func() any { return c.Status() })
		go c.Run(ctx)
	case r.configFile != "" && r.workers > 1 && !isWorker:
		go forwardHUP(ctx, p) // the workers watch the file themselves
	case r.configFile != "":
		go watchConfig(ctx, p, r.configFile, log)
	}
	if isWorker {
		return p.ServeWorker(ctx, ctl)
	}
	return p.Serve(ctx)
}

// startWorkers runs this same command line again n times, as workers.
func startWorkers(p *proxy.Proxy, n int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return p.StartWorkers(n, exe, os.Args[1:])
}

func openAccessLog(dest string) (io.Writer, func(), error) {
	switch dest {
	case "off":
		return nil, func() {}, nil
	case "stdout":
		return os.Stdout, func() {}, nil
	case "stderr":
		return os.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// dropPrivileges becomes uid and gid (for every thread), with no
// supplementary groups; -1 leaves an identity as it is. A process that is
// not root (a worker restarted by a supervisor that has dropped already)
// cannot change and need not: checkIdentity says whether it is right.
func dropPrivileges(uid, gid int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if gid >= 0 {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("dropping supplementary groups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("--gid %d: %w", gid, err)
		}
	}
	if uid >= 0 {
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("--uid %d: %w", uid, err)
		}
	}
	return nil
}

// checkIdentity proves the process is who it was asked to be: real,
// effective and saved IDs all the target, and, unless it runs as root,
// no capability left.
func checkIdentity(uid, gid uint32, allowRoot bool) error {
	ru, eu, su := unix.Getresuid()
	rg, eg, sg := unix.Getresgid()
	for _, got := range []int{ru, eu, su} {
		if uint32(got) != uid {
			return fmt.Errorf("after dropping privileges the process runs as UIDs %d/%d/%d, not %d", ru, eu, su, uid)
		}
	}
	for _, got := range []int{rg, eg, sg} {
		if uint32(got) != gid {
			return fmt.Errorf("after dropping privileges the process runs as GIDs %d/%d/%d, not %d", rg, eg, sg, gid)
		}
	}
	if uid == 0 {
		if !allowRoot {
			return errors.New("the proxy runs as root without --allow-root")
		}
		return nil
	}
	caps, err := effectiveCaps()
	if err != nil {
		return err
	}
	if caps != 0 {
		return fmt.Errorf("the proxy runs as UID %d but still holds capabilities %#x", uid, caps)
	}
	return nil
}

// effectiveCaps reads the process's effective capability set.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading the process's capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("reading the process's capabilities: no CapEff line in /proc/self/status")
}

// checkExempt refuses to run as an identity the capture rules capture: the
// proxy's own upstream connections would be redirected back into it.
func checkExempt(uid, gid uint32, uids, gids []uint32) error {
	if slices.Contains(uids, uid) || slices.Contains(gids, gid) {
		return nil
	}
	return fmt.Errorf("shunt proxy runs as UID %d GID %d, but the capture rules exempt only UIDs %v and GIDs %v: "+
		"its own upstream connections would be captured back into it. Run it with --uid %d --gid %d, "+
		"or give --capture-uid/--capture-gid the identities redirect's -u/-g exempt",
		uid, gid, uids, gids, sidecar.ProxyUID, sidecar.ProxyGID)
}
