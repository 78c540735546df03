package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/proxy"
)

// BenchmarkHTTP1NginxStyle is the seed scenario's request in-process: a
// new client connection per request (HTTP/1.0, Connection: close), one
// pooled upstream connection. It tracks the proxy's allocations per
// request (-benchmem); the side-by-side numbers are bench/proxy's.
func BenchmarkHTTP1NginxStyle(b *testing.B) {
	up := rawServer(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
				return
			}
		}
	})
	lp := startHTTP(b, nil, func(c *proxy.Config) { c.AccessLog = nil })
	lp.to(up)
	req := []byte("GET /test HTTP/1.0\r\nHost: backend_ups\r\nConnection: close\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(lp.Addr(proxy.Outbound)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := c.Read(buf[n:])
			n += m
			if err != nil {
				break
			}
		}
		c.Close()
		if n == 0 {
			b.Fatal("no response")
		}
	}
}

// BenchmarkH2C is HTTP/2 through the L7 proxy in-process: 64 concurrent
// streams over one client connection, multiplexed upstream to an h2c
// backend. Its CPU profile (-cpuprofile) is where the HTTP/2 path's cost
// shows; the side-by-side numbers are bench/proxy's.
func BenchmarkH2C(b *testing.B) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello from backend-service over h2c\n")
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	lp := startHTTP(b, nil, func(c *proxy.Config) { c.AccessLog = nil })
	lp.to(ln.Addr().(*net.TCPAddr).AddrPort())
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr}
	b.Cleanup(tr.CloseIdleConnections)
	url := "http://" + lp.Addr(proxy.Outbound).String() + "/"
	if resp, err := client.Get(url); err != nil {
		b.Fatal(err)
	} else {
		resp.Body.Close()
	}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkRetryKeptBody is what keeping request bodies for retries
// costs: HTTP/2 and HTTP/1.1 POSTs of 16 KiB through a route without a
// retry policy, then one with a policy (each body kept until the
// response), in one run.
func BenchmarkRetryKeptBody(b *testing.B) {
	_, port := backendPort(b, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	body := make([]byte, 16<<10)
	for _, policy := range []string{"none", "kept"} {
		c := retryConfig("/dev/null", "{retry_on: 5xx, num_retries: 1}", port)
		if policy == "none" {
			c = strings.Replace(c, "                  retry_policy: {retry_on: 5xx, num_retries: 1}", "", 1)
		}
		cp := startConfig(b, c, nil)
		url := "http://" + cp.ListenerAddr("listener_0").String() + "/upload"
		for _, client := range []struct {
			name string
			c    *http.Client
		}{{"HTTP/2", h2cClient()}, {"HTTP/1.1", &http.Client{Transport: &http.Transport{}}}} {
			b.Run(policy+"/"+client.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					resp, err := client.c.Post(url, "application/octet-stream", streamingBody{bytes.NewReader(body)})
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatal(resp.Status)
					}
				}
			})
			client.c.CloseIdleConnections()
		}
	}
}

// streamingBody hides a body's length, so that it streams (and over
// HTTP/1.1 is not whole in the proxy's first read).
type streamingBody struct{ io.Reader }
