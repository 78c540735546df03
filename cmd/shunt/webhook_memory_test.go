package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/kubecluster"
)

// bigReview is an AdmissionReview of a pod carrying an annotation of n
// bytes: what the API server sends for the largest objects it stores.
func bigReview(i, n int) []byte {
	return []byte(fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
		"uid":"uid-%d","kind":{"group":"","version":"v1","kind":"Pod"},
		"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE",
		"userInfo":{"username":"u"},
		"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"big-%d","annotations":{"blob":"%s"}},
		"spec":{"containers":[{"name":"app","image":"nginx"}]}}}}`, i, i, strings.Repeat("b", n)))
}

// TestWebhookMemoryUnderConcurrentBigReviews sends 64 reviews of 4 MB at
// once, over HTTP/2 as the API server does, to a `shunt webhook` process:
// each must be answered (429s retried after their Retry-After, as the API
// server does), and the process must stay under deploy/webhook.yaml's
// 128 Mi memory limit.
func TestWebhookMemoryUnderConcurrentBigReviews(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	port := kubecluster.FreePort(t)
	cmd := exec.Command(shuntBin, "webhook", "--self-signed", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--monitor-addr", "")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no caBundle line: %v\n%s", err, stderr.String())
	}
	ca, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(line, "caBundle:")))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	url := fmt.Sprintf("https://127.0.0.1:%d/inject", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never listened:\n%s", stderr.String())
		}
	}
	const reviews, size = 64, 4_000_000
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes, throttled := map[string]int{}, 0
	for i := range reviews {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := bigReview(i, size)
			for attempt := 0; attempt < 50; attempt++ {
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					codes["error: "+err.Error()]++
					mu.Unlock()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					after, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					mu.Lock()
					throttled++
					mu.Unlock()
					time.Sleep(time.Duration(after) * time.Second)
					continue
				}
				mu.Lock()
				codes[fmt.Sprintf("%s %d", resp.Proto, resp.StatusCode)]++
				mu.Unlock()
				return
			}
		}()
	}
	wg.Wait()
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	var peakKB int
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			peakKB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	t.Logf("answers %v, 429s retried %d, peak RSS %d MiB", codes, throttled, peakKB>>10)
	if codes["HTTP/2.0 200"] != reviews {
		t.Errorf("%d of %d reviews answered 200 over HTTP/2: %v", codes["HTTP/2.0 200"], reviews, codes)
	}
	if peakKB == 0 || peakKB > 128<<10 {
		t.Errorf("peak RSS %d KiB, over the 128 Mi limit", peakKB)
	}
}
