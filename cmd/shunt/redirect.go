package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
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
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, cfgErr := set.Config()
		opts, optErr := set.Options()
		log, logErr := set.Logger()
		if err := errors.Join(cfgErr, optErr, logErr); err != nil {
			return usageError{err}
		}
		rs, err := render(cfg)
		if err != nil {
			return err
		}
		if opts.DryRun {
			_, err := fmt.Fprint(cmd.OutOrStdout(), rs.String())
			return err
		}
		if opts.SkipRuleApply {
			log.Info("skipping rule apply (--skip-rule-apply)")
			return runValidation(log, cfg, opts)
		}
		req := iptables.SyncRequest{Want: rs, Binary: opts.IptablesBinary, LockWait: lockWait,
			Options: iptables.ApplyOptions{Reconcile: opts.Reconcile, Force: opts.ForceApply}}
		if opts.CleanupOnly {
			req.Want = nil
		}
		res, err := iptables.Sync(cmd.Context(), iptables.Exec{NetNS: opts.NetworkNS}, req)
		if err != nil {
			var drift *iptables.DriftError
			if errors.As(err, &drift) {
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

// runValidation checks, when asked, that the rules in the namespace capture
// an app's connection; a failure exits with validate.ExitCode.
func runValidation(log *slog.Logger, cfg capture.Config, opts istioargs.Options) error {
	if !opts.RunValidation {
		return nil
	}
	if err := validate.Run(opts.NetworkNS, cfg, opts.ProbePort, opts.ProbeTimeout); err != nil {
		return validationError{err}
	}
	log.Info("validation passed: an app connection reached the outbound port with its original destination")
	return nil
}

func render(cfg capture.Config) (*iptables.Ruleset, error) {
	plan, err := capture.Build(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return iptables.Render(plan)
}

func report(log *slog.Logger, opts istioargs.Options, res iptables.Result) {
	ns := opts.NetworkNS
	if ns == "" {
		ns = "current"
	}
	switch {
	case res.Transaction == "" && opts.CleanupOnly:
		log.Info("no shunt rules to remove", "variant", res.Variant.Name, "netns", ns)
	case res.Transaction == "":
		log.Info("shunt rules already in place; nothing changed", "variant", res.Variant.Name, "netns", ns)
	case opts.CleanupOnly:
		log.Info("removed shunt rules", "variant", res.Variant.Name, "netns", ns)
	default:
		log.Info("applied shunt rules in one transaction", "variant", res.Variant.Name, "netns", ns)
	}
	log.Debug("transaction", "text", res.Transaction)
}
