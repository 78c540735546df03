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
	"syscall"
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
// once, over HTTP/2 as the API server does, to a `shunt webhook` process
// under deploy/webhook.yaml's 128 Mi memory limit: each must be answered
// (429s retried after their Retry-After, as the API server does) and the
// process must live. As root the limit is the kernel's, a memory cgroup
// the webhook reads its Go memory limit from as in a pod; otherwise the
// webhook gets that Go limit from GOMEMLIMIT and its anonymous memory
// (what a cgroup cannot reclaim) is sampled against the limit.
func TestWebhookMemoryUnderConcurrentBigReviews(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const limit = 128 << 20
	port := kubecluster.FreePort(t)
	argv := []string{shuntBin, "webhook", "--self-signed", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--monitor-addr", ""}
	cg := newMemCgroup(t, limit)
	if cg != nil {
		argv = cg.wrap(argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if cg == nil {
		t.Log("no memory cgroup to make (not root, or no memory controller): the limit is sampled, not enforced")
		// memlimit.Share of the limit, as the webhook sets from a cgroup.
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMEMLIMIT=%d", limit*9/10))
	}
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
	anonPeak := sampleAnon(t, cmd.Process.Pid)
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
	anon := anonPeak()
	hwm := statusKB(cmd.Process.Pid, "VmHWM:") << 10
	t.Logf("answers %v, 429s retried %d, peak RSS %d MiB, peak anonymous %d MiB", codes, throttled, hwm>>20, anon>>20)
	if codes["HTTP/2.0 200"] != reviews {
		t.Errorf("%d of %d reviews answered 200 over HTTP/2: %v", codes["HTTP/2.0 200"], reviews, codes)
	}
	if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Errorf("the webhook died under load:\n%s", stderr.String())
	}
	if anon == 0 || anon > limit {
		t.Errorf("peak anonymous memory %d MiB, over the %d MiB limit", anon>>20, limit>>20)
	}
	if cg != nil {
		t.Logf("cgroup: peak charge %d MiB (page cache included), OOM kills %d", cg.peak()>>20, cg.ooms())
		if n := cg.ooms(); n != 0 {
			t.Errorf("the kernel OOM-killed %d times in the webhook's cgroup", n)
		}
	}
}

// sampleAnon polls pid's anonymous resident memory every 5 ms until the
// returned function is called, which gives the highest seen, in bytes.
func sampleAnon(t *testing.T, pid int) func() int64 {
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, statusKB(pid, "RssAnon:")<<10)
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var peak int64
	get := func() int64 {
		once.Do(func() { close(stop); peak = <-done })
		return peak
	}
	t.Cleanup(func() { get() })
	return get
}

// statusKB reads a kB field of /proc/pid/status.
func statusKB(pid int, field string) int64 {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
