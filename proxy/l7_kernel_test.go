package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestL7ThroughCapture: what the app's traffic speaks, through the real
// capture rules into the sidecar: h2c and gRPC at L7 (multiplexed,
// trailers kept), WebSocket tunnelled after its 101, a TLS connection and
// a server-first protocol passed through at L4.
func TestL7ThroughCapture(t *testing.T) {
	s := newSidecarPod(t, "--access-log-format", "'"+httpFormat+"'")
	dialApp := func(_ context.Context, addr string) (net.Conn, error) { return s.app(t, addr), nil }

	t.Run("h2c", func(t *testing.T) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
			w.Header().Set("X-Sum", "42")
		}), Protocols: new(http.Protocols)}
		srv.Protocols.SetUnencryptedHTTP2(true)
		go srv.Serve(s.Peer.Listener(t, "0.0.0.0:7101"))
		t.Cleanup(func() { srv.Close() })
		tr := &http.Transport{Protocols: new(http.Protocols),
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dialApp(ctx, addr) }}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for i := range 3 {
			resp, err := client.Get(fmt.Sprintf("http://10.96.0.10:7101/h2/%d", i))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != fmt.Sprintf("HTTP/2.0 /h2/%d", i) || resp.Trailer.Get("X-Sum") != "42" {
				t.Fatalf("%q trailer %q", body, resp.Trailer.Get("X-Sum"))
			}
		}
		s.waitAccess(t, `"GET /h2/2 HTTP/2" 200 - via_upstream`, "upstream=10.96.0.10:7101 cluster=PassthroughCluster")
	})

	t.Run("gRPC", func(t *testing.T) {
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go srv.Serve(s.Peer.Listener(t, "0.0.0.0:7102"))
		t.Cleanup(srv.Stop)
		conn, err := grpc.NewClient("passthrough:///10.96.0.10:7102", grpc.WithContextDialer(dialApp),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%v %v", r, err)
		}
		s.waitAccess(t, `"POST /grpc.health.v1.Health/Check HTTP/2" 200 - via_upstream`, "upstream=10.96.0.10:7102")
		if v := s.metricSum(t, "istio_requests_total", `request_protocol="grpc"`, `grpc_response_status="0"`); v != 1 {
			t.Errorf("istio_requests_total for the gRPC call: %v", v)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			brw.Flush()
			io.Copy(c, brw)
		})}
		go srv.Serve(s.Peer.Listener(t, "0.0.0.0:7103"))
		t.Cleanup(func() { srv.Close() })
		c := s.app(t, "10.96.0.10:7103")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("%v %v", resp, err)
		}
		for _, msg := range []string{"frame one", "frame two"} {
			io.WriteString(c, msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
				t.Fatalf("%q %v", got, err)
			}
		}
		c.Close()
		s.waitAccess(t, `"GET /ws HTTP/1.1" 101 - via_upstream`, "upstream=10.96.0.10:7103")
	})

	t.Run("TLS", func(t *testing.T) {
		ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "over TLS") }))
		ts.Listener = s.Peer.Listener(t, "0.0.0.0:7104")
		ts.StartTLS()
		t.Cleanup(ts.Close)
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "secure.example"},
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dialApp(ctx, addr) }}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://10.96.0.10:7104/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "over TLS" {
			t.Fatalf("%q", body)
		}
		tr.CloseIdleConnections()
		s.waitAccess(t, `"- - -" 0 `, "upstream=10.96.0.10:7104", "sni=secure.example")
	})

	t.Run("server first", func(t *testing.T) {
		ln := s.Peer.Listener(t, "0.0.0.0:7105")
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "220 mail.example ESMTP\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "250 hello "+line)
		}()
		c := s.app(t, "10.96.0.10:7105")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
			t.Fatalf("greeting %q %v", line, err)
		}
		io.WriteString(c, "EHLO app\r\n")
		if line, err := br.ReadString('\n'); err != nil || line != "250 hello EHLO app\r\n" {
			t.Fatalf("reply %q %v", line, err)
		}
		c.Close()
		s.waitAccess(t, `"- - -" 0 `, "upstream=10.96.0.10:7105")
	})
}
