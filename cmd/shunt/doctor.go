package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/doctor"
	"github.com/shunt-dev/shunt/netns"
)

func newDoctorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor [--pid PID | --network-namespace PATH] [capture flags]",
		Short: "Check a live network namespace: rules, backends, proxy, app identities, an end-to-end probe, sysctls",
		Long: "Each check is a line with ✔ or ✘ and a hint; the exit code is 1 when any check fails.\n" +
			"Given the capture flags (the init step's args), it also compares the rules with their plan.",
		Example: "  shunt doctor --pid 4242 -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020",
		Args:    cobra.NoArgs,
	}
	set := istioargs.RegisterCapture(cmd.Flags())
	ns := cmd.Flags().String("network-namespace", "", "network namespace file to check (default: the current one)")
	pid := 0
	cmd.Flags().Var(newCount(&pid, 0, 1<<22), "pid", "check this process's network namespace")
	asJSON := cmd.Flags().Bool("json", false, "print the report as JSON")
	var o doctor.Options
	cmd.PreRunE = func(*cobra.Command, []string) error {
		o = doctor.Options{NetNS: *ns}
		if pid != 0 {
			if *ns != "" {
				return usageError{errors.New("give --pid or --network-namespace, not both")}
			}
			o.NetNS = netns.PathForPID(pid)
		}
		if set.Given() {
			cfg, err := set.Config()
			if err != nil {
				return usageError{err}
			}
			o.Config = &cfg
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		report := doctor.Run(cmd.Context(), o)
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(report); err != nil {
				return err
			}
		} else {
			report.Write(cmd.OutOrStdout())
		}
		if report.Failed() {
			return errChecksFailed
		}
		return nil
	}
	return cmd
}

// errChecksFailed is the doctor's non-zero exit: the report said why.
var errChecksFailed = fmt.Errorf("some checks failed")
