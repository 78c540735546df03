package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/shunt-dev/shunt/internal/scenario"
)

// Ports of the backend host's HTTP/2 servers (h2c, gRPC), reached at the
// service address like its nginx.
const (
	h2Port   = 10002
	grpcPort = 10003
)

// startH2Backends runs an h2c server and a gRPC server on the backend
// host, in this process; the returned function stops them.
func startH2Backends(s *scenario.Scenario) func() {
	var h2ln, grpcLn net.Listener
	check(s.Pod.Peer.Do(func() (err error) {
		if h2ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", h2Port)); err != nil {
			return err
		}
		grpcLn, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", grpcPort))
		return err
	}))
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello from backend-service over h2c\n"))
	}), Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(h2ln)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(grpcLn)
	return func() { hs.Close(); gs.Stop() }
}

var (
	h2loadRate = regexp.MustCompile(`finished in [\d.]+m?s, ([\d.]+) req/s`)
	h2loadDone = regexp.MustCompile(`requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded`)
)

// runH2load drives the backend's h2c server from the pod: 16 connections,
// 10 streams each, captured unless direct.
func runH2load(s *scenario.Scenario, dur time.Duration) (rps, total float64) {
	out, err := s.Pod.NS.Run("h2load", "-t", "2", "-c", "16", "-m", "10", "-D", strconv.Itoa(int(dur.Seconds())),
		fmt.Sprintf("http://%s:%d/", scenario.ServiceIP, h2Port))
	check(err)
	m := h2loadRate.FindStringSubmatch(out)
	d := h2loadDone.FindStringSubmatch(out)
	if m == nil || d == nil || d[1] != d[2] {
		fail("h2load:\n" + out)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	total, _ = strconv.ParseFloat(d[2], 64)
	return rps, total
}

// runGRPC makes unary gRPC calls from the pod for dur, 32 at a time over
// one client connection (gRPC's own multiplexing), and counts them.
func runGRPC(s *scenario.Scenario, dur time.Duration) (rps, total float64) {
	dial := func(ctx context.Context, addr string) (c net.Conn, err error) {
		err = s.Pod.NS.Do(func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", addr)
			return err
		})
		return c, err
	}
	conn, err := grpc.NewClient(fmt.Sprintf("passthrough:///%s:%d", scenario.ServiceIP, grpcPort),
		grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	var done atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
				switch status.Code(err) {
				case codes.OK:
					done.Add(1)
				case codes.DeadlineExceeded, codes.Canceled: // the run's end
				default:
					fail("gRPC Check: " + err.Error())
				}
			}
		})
	}
	wg.Wait()
	n := float64(done.Load())
	return n / time.Since(start).Seconds(), n
}
