package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeCert(t *testing.T, dir string, b Bundle) {
	t.Helper()
	// Write to temporary names and rename, as a Secret volume update does.
	for name, data := range map[string][]byte{"tls.crt": b.Cert, "tls.key": b.Key} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func clientFor(ca []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func startServer(t *testing.T) (dir, https, monitor string, m *Metrics) {
	t.Helper()
	dir = t.TempDir()
	b, err := SelfSigned([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, dir, b)
	os.WriteFile(filepath.Join(dir, "ca.crt"), b.CA, 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m = NewMetrics()
	h := newHandler()
	h.Metrics = m
	srv := &Server{
		Handler:     h,
		Cert:        &Certificate{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Log: log, Metrics: m},
		CertPoll:    20 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond,
	}
	if err := srv.Listen("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	h1, h2 := srv.Addrs()
	return dir, "https://" + h1.String(), "http://" + h2.String(), m
}

func TestServesOverTLSWithMetrics(t *testing.T) {
	dir, https, monitor, _ := startServer(t)
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	c := clientFor(ca)
	resp, err := c.Post(https+"/inject", "application/json", bytes.NewReader(review(t, "CREATE", "pods", appPod)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"patchType":"JSONPatch"`)) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		r, err := http.Get(monitor + path)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, r, err)
		}
		r.Body.Close()
	}
	r, err := http.Get(monitor + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{
		`shunt_webhook_requests_total{outcome="injected"} 1`,
		`shunt_webhook_request_duration_seconds_count 1`,
		`shunt_webhook_certificate_reloads_total 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
	// The review endpoint is not on plain HTTP, and health is on HTTPS too.
	if r, err := c.Get(https + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Errorf("https /healthz: %v %v", r, err)
	}
}

func TestReloadsChangedCertificate(t *testing.T) {
	dir, https, monitor, m := startServer(t)
	next, err := SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, dir, next)
	c := clientFor(next.CA)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := c.Get(https + "/healthz")
		if err == nil {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate is not served: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A broken pair is refused and the one in service stays.
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for value(m.reloadFailure) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broken key was not noticed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, err := c.Get(https + "/healthz"); err != nil {
		t.Fatalf("after a broken update the previous certificate is no longer served: %v", err)
	} else {
		r.Body.Close()
	}
	if value(m.certReloads) != 2 {
		t.Errorf("%v reloads, want 2", value(m.certReloads))
	}
	if r, err := http.Get(monitor + "/metrics"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !strings.Contains(string(b), "shunt_webhook_certificate_reload_failures_total") {
			t.Error("no reload failure metric")
		}
	}
}

func TestRefusesToStartWithoutCertificate(t *testing.T) {
	srv := &Server{Handler: newHandler(), Cert: &Certificate{CertFile: "/nonexistent/tls.crt", KeyFile: "/nonexistent/tls.key",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	if err := srv.Listen("127.0.0.1:0", ""); err == nil || !strings.Contains(err.Error(), "/nonexistent/tls.crt") {
		t.Fatalf("err %v, want one naming the missing file", err)
	}
}

func TestDropsASlowClient(t *testing.T) {
	dir, https, _, _ := startServer(t)
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(https, "https://"), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers that never end.
	if _, err := conn.Write([]byte("POST /inject HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if took := time.Since(start); err != nil || took > 5*time.Second {
		t.Fatalf("the server held a stalled request for %s (err %v)", took, err)
	}
}
