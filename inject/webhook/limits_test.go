package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startLimited is startServer with a handler timeout and memory budget.
func startLimited(t *testing.T, timeout time.Duration, memory int64) (client *http.Client, https string, m *Metrics, h *Handler) {
	t.Helper()
	dir := t.TempDir()
	b, err := SelfSigned([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, dir, b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m = NewMetrics()
	h = newHandler()
	h.Metrics, h.Timeout, h.Memory = m, timeout, memory
	srv := &Server{Handler: h, Cert: &Certificate{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Log: log, Metrics: m},
		ReadTimeout: 30 * time.Second}
	if err := srv.Listen("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CA)
	client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	h1, _ := srv.Addrs()
	return client, "https://" + h1.String(), m, h
}

// TestTimeoutOverHTTP2: reviews that run past the handler timeout get
// their 503, over HTTP/2 as the API server speaks it, every one, and are
// counted as timeouts, not as what they would have been.
func TestTimeoutOverHTTP2(t *testing.T) {
	client, https, m, h := startLimited(t, 200*time.Millisecond, 0)
	h.beforeReview = func() { time.Sleep(400 * time.Millisecond) }
	body := review(t, "CREATE", "pods", appPod)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := client.Post(https+"/inject", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Errorf("no answer: %v", err)
				return
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.ProtoMajor != 2 || !strings.Contains(string(got), "took too long") {
				t.Errorf("%s %d %q, want HTTP/2 503", resp.Proto, resp.StatusCode, got)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("the 503 came after %s", took)
			}
		}()
	}
	wg.Wait()
	if n := m.Requests(outcomeTimeout); n != 20 {
		t.Errorf("timeouts counted: %d, want 20", n)
	}
	if n := m.Requests(outcomeBad) + m.Requests(outcomeInjected); n != 0 {
		t.Errorf("%d timed-out reviews were counted as something else", n)
	}
}

// TestStalledBodyTimesOut: a client that stops sending its body is answered
// 503 at the timeout and counted as a timeout. (Over HTTP/1.1: a Go HTTP/2
// client that is still sending may lose a response that comes before its
// body is done, which no server can help.)
func TestStalledBodyTimesOut(t *testing.T) {
	_, https, m, _ := startLimited(t, 300*time.Millisecond, 0)
	body := review(t, "CREATE", "pods", appPod)
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write(body[:len(body)/2]) }()
	req, _ := http.NewRequest(http.MethodPost, https+"/inject", pr)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || m.Requests(outcomeTimeout) != 1 || m.Requests(outcomeBad) != 0 {
		t.Errorf("%d; timeouts %d, bad requests %d", resp.StatusCode, m.Requests(outcomeTimeout), m.Requests(outcomeBad))
	}
}

// TestBudgetQueuesThenThrottles: reviews beyond the memory budget wait
// their turn; one that cannot get it within half the timeout is turned
// away with 429 and Retry-After.
func TestBudgetQueuesThenThrottles(t *testing.T) {
	body := review(t, "CREATE", "pods", appPod)
	client, https, m, _ := startLimited(t, 400*time.Millisecond, int64(len(body)))
	// Hold the whole budget with a review whose body stalls.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write(body[:10]) }()
	req, _ := http.NewRequest(http.MethodPost, https+"/inject", pr)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	held := make(chan int, 1)
	h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	go func() {
		resp, err := h1.Do(req) // HTTP/1.1: see TestStalledBodyTimesOut
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	time.Sleep(50 * time.Millisecond)
	resp, err := client.Post(https+"/inject", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("a review over the budget: %d, Retry-After %q; want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := <-held; code != http.StatusServiceUnavailable {
		t.Errorf("the stalled review: %d, want 503", code)
	}
	// The budget is free again: a review goes through.
	resp, err = client.Post(https+"/inject", "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the budget came back: %v %v", resp, err)
	}
	resp.Body.Close()
	if m.Requests(outcomeThrottled) != 1 || m.Requests(outcomeTimeout) != 1 || m.Requests(outcomeInjected) != 1 {
		t.Errorf("throttled %d timeout %d injected %d, want 1 each", m.Requests(outcomeThrottled), m.Requests(outcomeTimeout), m.Requests(outcomeInjected))
	}
}
