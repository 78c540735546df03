package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func newWaitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Wait until the proxy is ready (the classic sidecar's postStart hook)",
		Long: "wait polls the proxy's readiness endpoint until it answers 200. As a postStart hook on\n" +
			"the proxy container it keeps the kubelet from starting the app before the proxy accepts.",
		Args: cobra.NoArgs,
	}
	url := cmd.Flags().String("url", "http://127.0.0.1:15021/healthz/ready", "readiness URL")
	timeout := cmd.Flags().Duration("timeout", time.Minute, "give up after this long")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		client := &http.Client{Timeout: time.Second}
		var last string
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
			if err != nil {
				return usageError{err}
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready after %s: %s", *url, *timeout, last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return cmd
}
