package main

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/capture/install"
	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/capture/validate"
)

// lockWait is how long to wait for the xtables lock that another iptables
// user may hold.
const lockWait = 30 * time.Second

func newRedirectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "redirect [istio-iptables flags]",
		Aliases: []string{"istio-iptables"},
		Short:   "Install capture rules; takes istio-iptables' flags and environment unchanged",
		Example: "  shunt redirect -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020",
		Args:    cobra.NoArgs,
	}
	set := istioargs.RegisterRedirect(cmd.Flags())
	var cfg capture.Config
	var opts istioargs.Options
	var plan *capture.Plan
	cmd.PreRunE = func(*cobra.Command, []string) error {
		var cfgErr, optErr error
		cfg, cfgErr = set.Config()
		opts, optErr = set.Options()
		if err := errors.Join(cfgErr, optErr, set.CheckLogger()); err != nil {
			return usageError{err}
		}
		var err error
		if plan, err = capture.Build(cfg); err != nil {
			return usageError{err}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := set.Logger()
		if err != nil {
			return err
		}
		warnIgnored(log, cfg)
		if opts.DryRun {
			return printRules(cmd.OutOrStdout(), plan, opts.NativeNftables)
		}
		if opts.SkipRuleApply {
			log.Info("skipping rule apply (--skip-rule-apply)")
			return runValidation(log, cfg, opts)
		}
		res, err := install.Sync(cmd.Context(), install.Request{Plan: plan, Cleanup: opts.CleanupOnly,
			NativeNFT: opts.NativeNftables, IptablesBinary: opts.IptablesBinary, NetNS: opts.NetworkNS,
			Reconcile: opts.Reconcile, Force: opts.ForceApply, LockWait: lockWait})
		if err != nil {
			if install.IsDrift(err) {
				return usageError{err}
			}
			return err
		}
		report(log, opts, res)
		if opts.CleanupOnly {
			return nil
		}
		return runValidation(log, cfg, opts)
	}
	return cmd
}

// warnIgnored says what the configuration asks for that istio-iptables
// would silently ignore, as shunt does.
func warnIgnored(log *slog.Logger, cfg capture.Config) {
	if cfg.RedirectDNS && !cfg.CapturesDNS() {
		log.Warn("DNS capture is on, but there is no name server to capture (none in resolv.conf or --dns-servers, " +
			"and not --capture-all-dns): DNS is not captured")
	}
	if !cfg.DualStack {
		for _, p := range append(append([]netip.Prefix{}, cfg.OutboundCIDRs...), cfg.OutboundExcludeCIDRs...) {
			if p.Addr().Is6() {
				log.Warn("IPv6 range ignored without --dual-stack", "range", p)
			}
		}
	}
}

// printRules prints what would be applied: iptables-restore input, or the
// nft table.
func printRules(w io.Writer, plan *capture.Plan, nft bool) error {
	format := "iptables"
	if nft {
		format = "nft"
	}
	rules, err := backend.Printer(format).Render(plan)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, rules.String())
	return err
}

// runValidation checks, when asked, that the rules in the namespace capture
// an app's connection; a failure exits with validate.ExitCode.
func runValidation(log *slog.Logger, cfg capture.Config, opts istioargs.Options) error {
	if !opts.RunValidation {
		return nil
	}
	if err := validate.Run(opts.NetworkNS, cfg, opts.ProbePort, opts.ProbeTimeout); err != nil {
		return validationError{err}
	}
	log.Info("validation passed: a captured connection reached the proxy's port with its original destination")
	return nil
}

func report(log *slog.Logger, opts istioargs.Options, res install.Result) {
	ns := opts.NetworkNS
	if ns == "" {
		ns = "current"
	}
	for _, w := range res.Warnings {
		log.Warn(w, "backend", res.Backend, "netns", ns)
	}
	switch {
	case !res.Changed && opts.CleanupOnly:
		log.Info("no shunt rules to remove", "backend", res.Backend, "netns", ns)
	case !res.Changed:
		log.Info("shunt rules already in place; nothing changed", "backend", res.Backend, "netns", ns)
	case opts.CleanupOnly:
		log.Info("removed shunt rules", "backend", res.Backend, "netns", ns)
	default:
		log.Info("applied shunt rules in one transaction", "backend", res.Backend, "netns", ns)
	}
	log.Debug("transaction", "text", res.Transaction)
}
