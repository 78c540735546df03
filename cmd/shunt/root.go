package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/capture/validate"
)

// Exit codes. 1 is any failure to act; 2 is input shunt refused before
// touching anything.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error in what the user asked for.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// validationError is a capture that --run-validation found not working.
type validationError struct{ err error }

func (e validationError) Error() string { return e.err.Error() }
func (e validationError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var u usageError
	var v validationError
	switch {
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &v):
		return validate.ExitCode
	}
	return exitFailure
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shunt",
		Short:         "Send a pod's TCP traffic through a sidecar proxy, without the app knowing",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newRedirectCmd(), newExplainCmd(), newTraceCmd(), newProxyCmd(), newGatewayCmd(), newDemoCmd(), newDoctorCmd(),
		newInjectCmd(), newWebhookCmd(), newCertsCmd(), newWaitCmd())
	return root
}

// buildPlan checks the capture flags and builds their plan; what it refuses
// is the user's to fix.
func buildPlan(set *istioargs.Set) (*capture.Plan, error) {
	cfg, err := set.Config()
	if err != nil {
		return nil, usageError{err}
	}
	plan, err := capture.Build(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return plan, nil
}
