package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/sidecar"
)

type proxyFlags struct {
	cfg                      proxy.Config
	uid, gid                 int
	captureUIDs, captureGIDs []uint
	accessLog, logLevel      string
	logJSON                  bool
	workers                  int
	concurrency              int
}

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the sidecar: take captured connections on 15001 and 15006 and forward them to where they were going",
		Long: "Run the sidecar in the pod's network namespace (its container, or ip netns exec).\n" +
			"Started as root with --uid/--gid, it binds its ports and then drops to that identity;\n" +
			"it refuses to run as an identity the capture rules would capture.",
		Example: "  shunt proxy --uid 1337 --gid 1337",
		Args:    cobra.NoArgs,
	}
	pf := &proxyFlags{cfg: proxy.DefaultConfig()}
	f := cmd.Flags()
	f.Uint16Var(&pf.cfg.OutboundPort, "outbound-port", sidecar.OutboundPort, "port captured outbound connections arrive on")
	f.Uint16Var(&pf.cfg.InboundPort, "inbound-port", sidecar.InboundPort, "port captured inbound connections arrive on")
	f.BoolVar(&pf.cfg.TProxy, "tproxy", false, "inbound connections arrive by TPROXY (redirect -m TPROXY): listen with IP_TRANSPARENT, take the local address as the destination")
	f.DurationVar(&pf.cfg.ConnectTimeout, "connect-timeout", pf.cfg.ConnectTimeout, "how long to wait for an upstream to accept")
	f.DurationVar(&pf.cfg.IdleTimeout, "idle-timeout", pf.cfg.IdleTimeout, "close a connection after this long with no byte either way")
	f.IntVar(&pf.cfg.MaxConnections, "max-connections", pf.cfg.MaxConnections, "reset new connections beyond this many open ones (0: no limit)")
	f.DurationVar(&pf.cfg.DrainTimeout, "drain-timeout", pf.cfg.DrainTimeout, "on SIGTERM, how long open connections may finish")
	f.StringVar(&pf.cfg.HealthAddr, "health-addr", pf.cfg.HealthAddr, "address of /healthz/ready (\"\" for none)")
	f.StringVar(&pf.cfg.PrometheusAddr, "prometheus-addr", pf.cfg.PrometheusAddr, "address of /stats/prometheus (\"\" for none)")
	f.StringVar(&pf.cfg.AdminAddr, "admin-addr", pf.cfg.AdminAddr, "address of the admin API, loopback only (\"\" for none)")
	f.StringVar(&pf.accessLog, "access-log", "stdout", "where access log lines go: stdout, stderr, a file path, or off")
	f.StringVar(&pf.cfg.AccessLogFormat, "access-log-format", "text", "text or json")
	f.IntVar(&pf.uid, "uid", -1, "after binding, run as this UID (needs root)")
	f.IntVar(&pf.gid, "gid", -1, "after binding, run as this GID (needs root)")
	f.UintSliceVar(&pf.captureUIDs, "capture-uid", []uint{sidecar.ProxyUID}, "UIDs the capture rules exempt (redirect's -u)")
	f.UintSliceVar(&pf.captureGIDs, "capture-gid", []uint{sidecar.ProxyGID}, "GIDs the capture rules exempt (redirect's -g)")
	f.StringVar(&pf.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&pf.logJSON, "log-json", false, "log as JSON lines")
	f.IntVar(&pf.concurrency, "concurrency", 0, "threads running Go code at once (GOMAXPROCS); 0 leaves the runtime's choice, which follows the container's CPU limit")
	f.IntVar(&pf.workers, "workers", 1, "worker processes sharing the listeners; each has its own descriptor limit (two per connection)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runProxy(cmd.Context(), pf) }
	return cmd
}

func runProxy(ctx context.Context, pf *proxyFlags) error {
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(pf.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %q is not debug, info, warn or error", pf.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: level}
	log := slog.New(slog.NewTextHandler(os.Stderr, opts))
	if pf.logJSON {
		log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	w, err := accessLogWriter(pf.accessLog)
	if err != nil {
		return usageError{err}
	}
	pf.cfg.AccessLog = w
	ctl, isWorker, err := proxy.WorkerListeners()
	if err != nil {
		return err
	}
	if isWorker {
		pf.cfg.HealthAddr, pf.cfg.PrometheusAddr, pf.cfg.AdminAddr = "", "", ""
	}
	if pf.concurrency < 0 {
		return usageError{fmt.Errorf("--concurrency: %d is negative", pf.concurrency)}
	}
	if pf.concurrency > 0 {
		runtime.GOMAXPROCS(pf.concurrency)
	}
	if pf.workers < 1 {
		return usageError{fmt.Errorf("--workers: %d is not a number of processes", pf.workers)}
	}
	// Refuse a captured identity before binding or starting anything.
	if err := checkExempt(pf.uid, pf.gid, pf.captureUIDs, pf.captureGIDs); err != nil {
		return usageError{err}
	}
	p, err := proxy.New(pf.cfg, log, level)
	if err != nil {
		return usageError{err}
	}
	if isWorker {
		err = p.AdoptListeners()
	} else {
		err = p.Listen()
	}
	if err == nil && pf.workers > 1 && !isWorker {
		err = startWorkers(p, pf.workers)
	}
	if err != nil {
		p.Close()
		return err
	}
	if err := dropPrivileges(pf.uid, pf.gid); err != nil {
		p.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
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

func accessLogWriter(dest string) (io.Writer, error) {
	switch dest {
	case "off", "":
		return nil, nil
	case "stdout":
		return os.Stdout, nil
	case "stderr":
		return os.Stderr, nil
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--access-log: %w", err)
	}
	return f, nil
}

// dropPrivileges becomes uid and gid (for every thread), with no
// supplementary groups; -1 leaves an identity as it is.
func dropPrivileges(uid, gid int) error {
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

// checkExempt refuses to run as an identity the capture rules capture: the
// proxy's own upstream connections would be redirected back into it. The
// identity is --uid/--gid where given, else the current one.
func checkExempt(runUID, runGID int, uids, gids []uint) error {
	uid, gid := uint(os.Getuid()), uint(os.Getgid())
	if runUID >= 0 {
		uid = uint(runUID)
	}
	if runGID >= 0 {
		gid = uint(runGID)
	}
	if slices.Contains(uids, uid) || slices.Contains(gids, gid) {
		return nil
	}
	return fmt.Errorf("shunt proxy runs as UID %d GID %d, but the capture rules exempt only UIDs %v and GIDs %v: "+
		"its own upstream connections would be captured back into it. Run it with --uid %d --gid %d, "+
		"or give --capture-uid/--capture-gid the identities redirect's -u/-g exempt",
		uid, gid, uids, gids, sidecar.ProxyUID, sidecar.ProxyGID)
}
