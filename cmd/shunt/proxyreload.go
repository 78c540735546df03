package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// watchConfig reloads the --config file into p on SIGHUP and whenever
// its content changes (looked at every second), until ctx ends; a file
// that cannot run is logged with its problems and the configuration in
// force stays.
func watchConfig(ctx context.Context, p *proxy.Proxy, file string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := digest(file)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			forced = true
		case <-t.C:
		}
		d := digest(file)
		if !forced && (d == nil || bytes.Equal(d, last)) {
			continue
		}
		last = d
		b, err := envoyconfig.Load(file)
		if err == nil {
			err = p.Reload(b)
		}
		if err != nil {
			log.Error("the configuration was not reloaded; the one in force stays", "file", file, "problems", err.Error())
		}
	}
}

// digest is the file's content hash, nil when it cannot be read.
func digest(file string) []byte {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// forwardHUP passes a supervisor's SIGHUPs on to its workers.
func forwardHUP(ctx context.Context, p *proxy.Proxy) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			p.SignalWorkers()
		}
	}
}
