package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"
)

// Server is the webhook's HTTPS endpoint (POST /inject, GET /healthz) and
// its plain-HTTP monitoring endpoint (GET /healthz, /readyz, /metrics) for
// the kubelet's probes and Prometheus.
type Server struct {
	Handler        *Handler
	Cert           *Certificate
	CertPoll       time.Duration // how often the certificate files are checked
	HandlerTimeout time.Duration // answer 503 if a review takes longer
	ReadTimeout    time.Duration // drop a client that takes longer to send its request (default 10s)

	httpsLn, monitorLn net.Listener
}

// Listen opens the two listeners (monitor "" for none), so that Addrs is
// known before Serve.
func (s *Server) Listen(addr, monitor string) error {
	if err := s.Cert.Load(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.httpsLn = ln
	if monitor != "" {
		if s.monitorLn, err = net.Listen("tcp", monitor); err != nil {
			ln.Close()
			return err
		}
	}
	return nil
}

// Addrs are the listening addresses (monitor nil when there is none).
func (s *Server) Addrs() (https, monitor net.Addr) {
	if s.monitorLn != nil {
		monitor = s.monitorLn.Addr()
	}
	return s.httpsLn.Addr(), monitor
}

func healthz(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }

// Serve runs until ctx ends, then lets requests in flight finish.
func (s *Server) Serve(ctx context.Context) error {
	timeout := s.HandlerTimeout
	if timeout <= 0 {
		timeout = 8 * time.Second
	}
	read := s.ReadTimeout
	if read <= 0 {
		read = 10 * time.Second
	}
	mux := http.NewServeMux()
	if s.Handler.Timeout <= 0 {
		s.Handler.Timeout = timeout
	}
	mux.Handle("/inject", s.Handler)
	mux.Handle("/inject/", s.Handler)
	mux.HandleFunc("GET /healthz", healthz)
	servers := []*http.Server{{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.Cert.GetCertificate, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: read / 2,
		ReadTimeout:       read,
		WriteTimeout:      timeout + 2*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             http2Flow(),
	}}
	lns := []net.Listener{tls.NewListener(s.httpsLn, servers[0].TLSConfig)}
	if s.monitorLn != nil {
		mon := http.NewServeMux()
		mon.HandleFunc("GET /healthz", healthz)
		mon.HandleFunc("GET /readyz", healthz)
		mon.Handle("GET /metrics", s.Handler.Metrics.Handler())
		servers = append(servers, &http.Server{Handler: mon, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
		lns = append(lns, s.monitorLn)
	}
	poll := s.CertPoll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.Cert.Watch(watchCtx, poll)

	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(lns[i]) }()
	}
	select {
	case err := <-errc:
		shutdown(servers)
		return err
	case <-ctx.Done():
	}
	shutdown(servers)
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// http2Flow sizes HTTP/2's receive windows so that a review waiting for
// the memory budget can never starve one that holds it: the bodies of
// waiting reviews sit unread in the connection's window, so the window is
// made to hold every stream's worth at once. With Go's defaults (1 MiB a
// connection, 1 MiB a stream) one waiting 4 MB review fills the
// connection and the reviews under way stall until it gives up.
func http2Flow() *http.HTTP2Config {
	const streams, perStream = 16, 256 << 10
	return &http.HTTP2Config{MaxConcurrentStreams: streams, MaxReceiveBufferPerStream: perStream,
		MaxReceiveBufferPerConnection: streams*perStream + 1<<20}
}

func shutdown(servers []*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(ctx)
	}
}
