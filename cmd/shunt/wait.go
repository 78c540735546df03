package main

import (
	"context"
	"fmt"
	"net/http"
	neturl "net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/internal/clip"
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
	timeout := time.Minute
	cmd.Flags().Var(newDuration(&timeout, false, 24*time.Hour), "timeout", "give up after this long")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		u, err := neturl.Parse(*url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageError{fmt.Errorf("--url: %s is not an http:// or https:// URL", clip.Quote(*url))}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
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
				return fmt.Errorf("%s not ready after %s: %s", *url, timeout, last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return cmd
}
