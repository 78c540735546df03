package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/wrk"
)

// runWrk drives the pod's nginx from inside the pod; every request makes
// nginx open a new connection to backend-service, the captured one.
func runWrk(s *scenario.Scenario, dur time.Duration, conns int) (rps, p50, p99, total float64) {
	out, err := s.Pod.NS.Run("wrk", "-t", "2", "-c", strconv.Itoa(conns), "-d", dur.String(), "--latency", "http://127.0.0.1/test")
	check(err)
	r, err := wrk.Parse(out)
	if err != nil {
		fail(err.Error() + ":\n" + out)
	}
	return r.RPS, r.P50, r.P99, r.Total
}

// runIperf measures bulk TCP throughput from an app in the pod to the
// backend at the service address: captured, unless direct.
func runIperf(s *scenario.Scenario, dur time.Duration) float64 {
	server := s.Pod.Peer.Command("iperf3", "-s", "-1", "-p", "5201")
	check(server.Start())
	defer server.Wait()
	time.Sleep(200 * time.Millisecond)
	out, err := s.Pod.NS.Run("iperf3", "-c", scenario.ServiceIP, "-p", "5201", "-t", strconv.Itoa(int(dur.Seconds())), "-J")
	check(err)
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	check(json.Unmarshal([]byte(out), &r))
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// connectionsPerSecond opens connections from the pod to the backend's
// nginx at the service address, one request each, from 8 workers.
func connectionsPerSecond(s *scenario.Scenario, dur time.Duration) float64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(dur)
	req := []byte("GET / HTTP/1.1\r\nHost: backend-service\r\nConnection: close\r\n\r\n")
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check(s.Pod.NS.Do(func() error {
				buf := make([]byte, 4096)
				for time.Now().Before(stop) {
					c, err := net.Dial("tcp4", fmt.Sprintf("%s:10000", scenario.ServiceIP))
					if err != nil {
						return err
					}
					if _, err := c.Write(req); err != nil {
						return err
					}
					r := bufio.NewReader(c)
					for {
						if _, err := r.Read(buf); err != nil {
							break
						}
					}
					c.Close()
					done.Add(1)
				}
				return nil
			}))
		}()
	}
	wg.Wait()
	return float64(done.Load()) / dur.Seconds()
}

// startCollector runs an OpenTelemetry collector in the pod's namespace at
// collectorAddr (OTLP/gRPC) and the port after it (OTLP/HTTP), counting
// the spans it gets.
func startCollector(s *scenario.Scenario) *otlptest.Collector {
	col, err := otlptest.ServeIn(s.Pod.NS.Do, collectorAddr, "127.0.0.1:4318", false)
	check(err)
	return col
}
