package meshgraph

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Scraper reads the sidecars' metrics every Interval and keeps what the
// graph needs: the snapshots of the last Window.
type Scraper struct {
	// Targets are the sidecars' metrics addresses (host:port, Istio's
	// 15090), asked anew for each scrape.
	Targets  func() []string
	Interval time.Duration // 5s by default
	Window   time.Duration // 1m by default
	Client   *http.Client  // nil: a client with a 2 s timeout

	mu     sync.Mutex
	shots  []shot
	failed map[string]string // target → its last scrape's error
}

type shot struct {
	at   time.Time
	snap Snapshot
}

// Run scrapes until ctx ends.
func (s *Scraper) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.Scrape(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Scrape reads every target once and keeps the sum.
func (s *Scraper) Scrape(ctx context.Context) {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	snap, failed := Snapshot{}, map[string]string{}
	for _, target := range s.Targets() {
		if err := scrapeOne(ctx, client, target, snap); err != nil {
			failed[target] = err.Error()
		}
	}
	window := s.Window
	if window <= 0 {
		window = time.Minute
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shots = append(s.shots, shot{now, snap})
	for len(s.shots) > 2 && now.Sub(s.shots[1].at) >= window {
		s.shots = s.shots[1:]
	}
	s.failed = failed
}

func scrapeOne(ctx context.Context, client *http.Client, target string, snap Snapshot) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/stats/prometheus", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return snap.Add(resp.Body)
}

// Graph is the graph over the window so far (empty until two scrapes),
// and the targets whose last scrape failed.
func (s *Scraper) Graph() (Graph, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.shots) < 2 {
		return Graph{}, s.failed
	}
	first, last := s.shots[0], s.shots[len(s.shots)-1]
	return Diff(first.snap, last.snap, last.at.Sub(first.at).Seconds()), s.failed
}
