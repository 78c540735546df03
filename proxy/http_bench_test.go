package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
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
