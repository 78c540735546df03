package ca

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FollowDir has svc sign with a plugged-in CA's files anew when they
// change (looked at every interval): a new intermediate, or a root being
// rotated, whose root-cert.pem holds the old root and the new one while
// workloads move over; files that do not make a CA leave the one in
// force, said in the log.
func FollowDir(ctx context.Context, dir string, svc *Service, defaultTTL, maxTTL time.Duration, interval time.Duration, log *slog.Logger) {
	last := filesStamp(dir)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		stamp := filesStamp(dir)
		if stamp == last {
			continue
		}
		last = stamp
		b, err := ReadDir(dir)
		var a *Authority
		if err == nil {
			a, err = New(b)
		}
		if err != nil {
			log.Error("the plugged-in CA's files changed but do not make a CA; the one in force stays", "dir", dir, "err", err)
			continue
		}
		a.DefaultTTL, a.MaxTTL = defaultTTL, maxTTL
		svc.SetAuthority(a)
		log.Info("CA signing with the plugged-in files anew", "dir", dir, "expires", a.Expiry().UTC().Format(time.RFC3339))
	}
}

// filesStamp is the CA files' sizes and modification times.
func filesStamp(dir string) string {
	var b strings.Builder
	for _, name := range []string{CACertFile, CAKeyFile, CertChainFile, RootCertFile} {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", name, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}
