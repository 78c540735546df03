package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/netlab"
	"github.com/shunt-dev/shunt/internal/scenario"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run the seed scenario in throwaway network namespaces: unmodified nginx, captured into shunt's sidecar",
		Long: "As root: builds a pod running Debian's nginx (upstream backend-service:10000, config untouched),\n" +
			"a backend host, the seed's istio-init capture rules and shunt proxy as UID 1337; sends a request\n" +
			"outbound and one inbound; shows the proxy's access log and a trace; removes it all, also on Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return usageError{errors.New("demo: run as root (it makes network namespaces and installs rules)")}
			}
			for _, tool := range []string{"ip", "nginx", "curl", "iptables-nft-restore"} {
				if _, err := exec.LookPath(tool); err != nil {
					return usageError{fmt.Errorf("demo: %s is not installed (sudo .ci/deps installs what the demo needs)", tool)}
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, cmd.OutOrStdout(), self)
		},
	}
}

func runDemo(ctx context.Context, out io.Writer, shuntBin string) error {
	step := func(format string, args ...any) { fmt.Fprintf(out, "\n== "+format+"\n", args...) }
	step("building the seed scenario")
	s, err := scenario.Start(ctx, scenario.Options{Name: "shunt-demo-" + strconv.Itoa(os.Getpid()),
		Sidecar: scenario.Shunt, ShuntBin: shuntBin, Log: out, ProxyArgs: append([]string{"--log-level", "warn"}, demoTracingArgs...),
		ProxyEnv: demoPodEnv})
	if err != nil {
		return err
	}
	col, err := startDemoCollector(s)
	if err != nil {
		s.Close()
		return err
	}
	defer col.Close()
	defer func() {
		step("tearing down")
		s.Close()
		fmt.Fprintln(out, "namespaces, processes and files removed")
	}()
	step("the pod's nginx.conf: an ordinary reverse proxy that knows nothing of the sidecar")
	for _, line := range strings.Split(s.NginxConf, "\n") {
		if strings.Contains(line, "upstream") || strings.Contains(line, "location") {
			fmt.Fprintln(out, "   ", strings.TrimSpace(line))
		}
	}
	requests := []struct {
		what string
		do   func() (string, error)
	}{
		{"outbound: curl in the pod → nginx → backend-service:10000 (captured → :15001 → backend)", s.Outbound},
		{"inbound: curl on the backend host → pod:80 (captured → :15006 → nginx from 127.0.0.6 → backend)", s.Inbound},
	}
	for _, r := range requests {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		step("%s", r.what)
		body, err := r.do()
		if err != nil {
			return err
		}
		fmt.Fprintln(out, body)
	}
	step("the sidecar's access log: each request, as Envoy logs it (the seed's format)")
	waitForLines(ctx, s.AccessLog, 3)
	fmt.Fprint(out, s.AccessLog.String())
	step("the sidecar's spans, as an OpenTelemetry collector got them (OTLP/gRPC): nginx's proxy_pass passes the\n" +
		"   request's headers on, traceparent among them, so the inbound request and nginx's call for it are one trace")
	printTraces(out, col.WaitCount(ctx, 3, 5*time.Second))
	uid := nginxWorkerUID(s.Pod.NS)
	step("shunt trace of nginx's connection to backend-service (nginx worker UID %d)", uid)
	return traceSeed(out, uid)
}

// waitForLines waits a little for the proxy's buffered access log.
func waitForLines(ctx context.Context, b *scenario.Buffer, n int) {
	for i := 0; i < 50 && strings.Count(b.String(), "\n") < n && ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func traceSeed(out io.Writer, uid uint32) error {
	fs := pflag.NewFlagSet("capture", pflag.ContinueOnError)
	set := istioargs.RegisterCapture(fs)
	if err := fs.Parse(scenario.CaptureArgs); err != nil {
		return err
	}
	plan, err := buildPlan(set)
	if err != nil {
		return err
	}
	res, err := trace.Trace(plan, trace.Packet{Direction: trace.Out, Proto: "tcp", Src: netip.MustParseAddr(netlab.PodIP),
		Dst: netip.MustParseAddr(scenario.ServiceIP), DstPort: 10000, UID: uid, GID: uid, OutIface: "eth0"})
	if err != nil {
		return err
	}
	return traceText(out, res, false)
}

// nginxWorkerUID finds the UID nginx's worker runs as in the pod: a
// process in that namespace named nginx and not running as root.
func nginxWorkerUID(ns *netlab.NS) uint32 {
	target, _ := os.Stat(ns.Path)
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, comm := range procs {
		name, _ := os.ReadFile(comm)
		if strings.TrimSpace(string(name)) != "nginx" {
			continue
		}
		dir := filepath.Dir(comm)
		if st, err := os.Stat(filepath.Join(dir, "ns", "net")); err != nil || target == nil || !os.SameFile(st, target) {
			continue
		}
		status, _ := os.ReadFile(filepath.Join(dir, "status"))
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] != "0" {
				n, _ := strconv.ParseUint(f[1], 10, 32)
				return uint32(n)
			}
		}
	}
	return 65534 // nobody, nginx's default user
}
