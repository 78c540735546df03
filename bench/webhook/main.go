// Command webhook measures the admission latency of `shunt webhook` under
// bursts of requests, as the API server sends them: AdmissionReview v1 over
// HTTPS (HTTP/2, a warm connection pool), 1,000 requests let go at once.
// Three kinds of review run side by side, interleaved burst by burst, against
// one webhook process:
//
//	inject  a Deployment's pod (named ports, annotations) that gets the patch
//	deny    a pod whose container runs as UID 1337, refused with the reason
//	floor   a review for another resource, answered "allowed" untouched: the
//	        cost of TLS, HTTP and decoding the review, with no injection work
//
// Latency is from sending a request to having read its whole answer.
//
//	go run ./bench/webhook [-burst 1000 -rounds 5]
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-7d4b9c-","namespace":"shop",
"labels":{"app":"web","pod-template-hash":"7d4b9c"},
"annotations":{"traffic.sidecar.istio.io/excludeOutboundIPRanges":"169.254.169.254/32","traffic.sidecar.istio.io/includeInboundPorts":"http,metrics"}},
"spec":{"containers":[{"name":"nginx","image":"nginx:1.25","ports":[{"name":"http","containerPort":8080},{"name":"metrics","containerPort":9113}],
"resources":{"requests":{"cpu":"100m","memory":"64Mi"}},"securityContext":{"runAsUser":%d}}]}}`

func review(resource string, uid int) []byte {
	return []byte(fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"b6f1c9b2-0d1e-4c1f-9f7e-3a7c2f0e4d11",
"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"%s"},
"namespace":"shop","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},
"object":%s}}`, resource, fmt.Sprintf(podJSON, uid)))
}

type contender struct {
	name, want string
	body       []byte
	lat        []time.Duration
	wall       time.Duration // all bursts, first send to last answer
}

func main() {
	burst := flag.Int("burst", 1000, "requests let go at once")
	rounds := flag.Int("rounds", 5, "bursts per contender")
	conns := flag.Int("conns", 4, "HTTP/2 connections in the client's pool (the API server keeps a few)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "shunt-bench-webhook-")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "shunt")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/shunt").CombinedOutput()
	if err != nil {
		fail("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "webhook", "--self-signed", "--hosts", "127.0.0.1", "--addr", addr, "--monitor-addr", "")
	stdout, err := cmd.StdoutPipe()
	check(err)
	cmd.Stderr = io.Discard // one log line per review; logging is part of the cost measured
	check(cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	check(err)
	ca, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(line), "caBundle: "))
	check(err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			fail("webhook does not listen: %v", err)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
		MaxConnsPerHost: *conns, MaxIdleConnsPerHost: *conns,
	}}
	url := "https://" + addr + "/inject"

	cs := []*contender{
		{name: "inject", want: `"patchType":"JSONPatch"`, body: review("pods", 1000)},
		{name: "deny", want: `"allowed":false`, body: review("pods", 1337)},
		{name: "floor", want: `"allowed":true`, body: review("deployments", 1000)},
	}
	// Warm up: connections made, code paths hot.
	for _, c := range cs {
		runBurst(client, url, c, 200, nil)
	}
	proto := ""
	if r, err := client.Post(url, "application/json", bytes.NewReader(cs[2].body)); err == nil {
		proto = r.Proto
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	for r := 0; r < *rounds; r++ {
		// Rotate the order so that no contender always follows another.
		for i := range cs {
			c := cs[(r+i)%len(cs)]
			t0 := time.Now()
			runBurst(client, url, c, *burst, &c.lat)
			c.wall += time.Since(t0)
		}
	}
	fmt.Printf("shunt webhook, %d rounds of a %d-request burst per kind, %s, %d connections, GOMAXPROCS of the webhook: all %d cores\n\n",
		*rounds, *burst, proto, *conns, numCPU())
	fmt.Println("| review | requests | reviews/s | p50 | p90 | p99 | max | p50 / floor | p99 / floor |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	floor := cs[2]
	slices.Sort(floor.lat)
	for _, c := range cs {
		slices.Sort(c.lat)
		fmt.Printf("| %s | %d | %.0f | %s | %s | %s | %s | %.2f× | %.2f× |\n", c.name, len(c.lat), float64(len(c.lat))/c.wall.Seconds(),
			ms(q(c.lat, 0.50)), ms(q(c.lat, 0.90)), ms(q(c.lat, 0.99)), ms(c.lat[len(c.lat)-1]),
			float64(q(c.lat, 0.50))/float64(q(floor.lat, 0.50)), float64(q(c.lat, 0.99))/float64(q(floor.lat, 0.99)))
	}
}

// runBurst lets n requests go at once and records each one's latency.
func runBurst(client *http.Client, url string, c *contender, n int, lat *[]time.Duration) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			r, err := client.Post(url, "application/json", bytes.NewReader(c.body))
			if err != nil {
				fail("%s: %v", c.name, err)
			}
			body, err := io.ReadAll(r.Body)
			r.Body.Close()
			took := time.Since(t0)
			if err != nil || r.StatusCode != 200 || !bytes.Contains(body, []byte(c.want)) {
				fail("%s: %d %v %s", c.name, r.StatusCode, err, body)
			}
			if lat != nil {
				mu.Lock()
				*lat = append(*lat, took)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
}

func q(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/webhook: "+format+"\n", args...)
	os.Exit(1)
}
