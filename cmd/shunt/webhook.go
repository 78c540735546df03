package main

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/inject"
	"github.com/shunt-dev/shunt/inject/webhook"
	"github.com/shunt-dev/shunt/internal/memlimit"
)

// defaultWebhookHosts are the names the in-cluster Service answers to.
var defaultWebhookHosts = []string{"shunt-webhook.shunt-system.svc", "shunt-webhook.shunt-system.svc.cluster.local"}

func newWebhookCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Serve injection as a Kubernetes mutating admission webhook (HTTPS, AdmissionReview v1)",
		Long: "webhook answers AdmissionReview v1 requests for pods on POST /inject with a JSON Patch\n" +
			"that adds the capture step and the proxy (the same template as `shunt inject`), or a\n" +
			"denial naming the problem. The certificate files are re-read when they change.\n" +
			"Health and Prometheus metrics are served over plain HTTP on --monitor-addr.",
		Example: "  shunt webhook --cert /etc/shunt/tls.crt --key /etc/shunt/tls.key\n" +
			"  shunt webhook --self-signed --hosts localhost,127.0.0.1   # prints the caBundle",
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	addr, monitor := ":15017", ":15014"
	f.Var(newHostPort(&addr, false), "addr", "HTTPS address of POST /inject")
	f.Var(newHostPort(&monitor, true), "monitor-addr", "plain-HTTP address of /healthz, /readyz and /metrics (\"\" for none)")
	certFile := f.String("cert", "", "serving certificate (PEM); re-read when it changes")
	keyFile := f.String("key", "", "its private key (PEM)")
	selfSigned := f.Bool("self-signed", false, "development: make a CA and a certificate for --hosts, print the CA as a caBundle")
	hosts := f.StringSlice("hosts", []string{"localhost", "127.0.0.1"}, "with --self-signed: names and addresses the certificate is for")
	caOut := f.String("ca-bundle-file", "", "with --self-signed: also write the CA (PEM) here")
	poll, timeout, readTimeout := 2*time.Second, 8*time.Second, 10*time.Second
	f.Var(newDuration(&poll, false, time.Hour), "cert-poll", "how often the certificate files are checked for changes")
	f.Var(newDuration(&timeout, false, time.Hour), "handler-timeout", "answer 503 when a review takes longer (keep it under the webhook's timeoutSeconds)")
	f.Var(newDuration(&readTimeout, false, time.Hour), "read-timeout", "drop a client that takes longer to send its request (half of it for the headers)")
	maxBody := int(webhook.DefaultMaxBody)
	f.Var(newCount(&maxBody, 1024, 64<<20), "max-body", "largest request body accepted, in bytes")
	memory := int(webhook.DefaultReviewMemory)
	f.Var(newCount(&memory, 1<<20, 1<<34), "review-memory", "bytes of request bodies under review at once; beyond it reviews queue, then get 429 with Retry-After")
	logJSON := f.Bool("log-json", false, "log as JSON lines")
	template := templateFlags(f)
	var t inject.Template
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		if t, err = template(); err != nil {
			return err
		}
		switch {
		case *selfSigned && (*certFile != "" || *keyFile != ""):
			return usageError{fmt.Errorf("--self-signed makes its own certificate: drop --cert and --key")}
		case *selfSigned && len(*hosts) == 0:
			return usageError{fmt.Errorf("--hosts: give at least one name or address")}
		case !*selfSigned && (*certFile == "" || *keyFile == ""):
			return usageError{fmt.Errorf("give --cert and --key, or --self-signed for development")}
		case !*selfSigned && *caOut != "":
			return usageError{fmt.Errorf("--ca-bundle-file only goes with --self-signed")}
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
		if *selfSigned {
			dir, err := os.MkdirTemp("", "shunt-webhook-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			b, err := writeBundle(dir, *hosts)
			if err != nil {
				return err
			}
			*certFile, *keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			fmt.Fprintf(cmd.OutOrStdout(), "caBundle: %s\n", base64.StdEncoding.EncodeToString(b.CA))
			if *caOut != "" {
				if err := os.WriteFile(*caOut, b.CA, 0o644); err != nil {
					return err
				}
			}
		}
		metrics := webhook.NewMetrics()
		srv := &webhook.Server{
			Handler:        &webhook.Handler{Template: t, Log: log, Metrics: metrics, MaxBody: int64(maxBody), Memory: int64(memory)},
			Cert:           &webhook.Certificate{CertFile: *certFile, KeyFile: *keyFile, Log: log, Metrics: metrics},
			CertPoll:       poll,
			HandlerTimeout: timeout,
			ReadTimeout:    readTimeout,
		}
		if err := srv.Listen(addr, monitor); err != nil {
			return err
		}
		https, mon := srv.Addrs()
		log.Info("webhook serving", "https", https.String(), "monitor", fmt.Sprint(mon), "image", t.Image, "sidecar_mode", t.Mode)
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return srv.Serve(ctx)
	}
	return cmd
}

// writeBundle makes a self-signed bundle for hosts and writes ca.crt,
// tls.crt and tls.key into dir.
func writeBundle(dir string, hosts []string) (webhook.Bundle, error) {
	if len(hosts) == 0 {
		return webhook.Bundle{}, usageError{fmt.Errorf("--hosts: give at least one name or address")}
	}
	b, err := webhook.SelfSigned(hosts, 365*24*time.Hour)
	if err != nil {
		return b, err
	}
	for name, data := range map[string][]byte{"ca.crt": b.CA, "tls.crt": b.Cert, "tls.key": b.Key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return b, err
		}
	}
	return b, nil
}

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs --dir DIR",
		Short: "Make a CA and the webhook's serving certificate (ca.crt, tls.crt, tls.key) and print the caBundle",
		Example: "  shunt certs --dir certs\n" +
			"  kubectl -n shunt-system create secret tls shunt-webhook-tls --cert certs/tls.crt --key certs/tls.key",
		Args: cobra.NoArgs,
	}
	dir := cmd.Flags().String("dir", "", "folder to write ca.crt, tls.crt and tls.key into")
	hosts := cmd.Flags().StringSlice("hosts", defaultWebhookHosts, "names and addresses the certificate is for")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if *dir == "" {
			return usageError{fmt.Errorf("--dir: say where to write the files")}
		}
		if len(*hosts) == 0 {
			return usageError{fmt.Errorf("--hosts: give at least one name or address")}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		b, err := writeBundle(*dir, *hosts)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n", base64.StdEncoding.EncodeToString(b.CA))
		return nil
	}
	return cmd
}
