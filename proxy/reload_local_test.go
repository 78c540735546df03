package proxy_test

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// TestReload: a new configuration takes effect for new requests at once,
// under load with no request failing; an unchanged cluster keeps its
// pooled connections; a configuration that cannot run is refused and
// the old one stays; listeners cannot move.
func TestReload(t *testing.T) {
	// routingConfig's backends a and b say who they are; every reload
	// below keeps the same clusters and changes the weights.
	first, _ := routingConfig(t, filepath.Join(t.TempDir(), "log"), "", `
              - match: {prefix: "/"}
                route: {weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 0}]}}`)
	cp := startConfig(t, first, nil)
	stop := make(chan struct{})
	var failures atomic.Int64
	var wg sync.WaitGroup
	// Four clients with keep-alive (net/http's: a response that says
	// Connection: close makes it open a new connection for the next).
	client := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + cp.ListenerAddr("listener_0").String() + "/"
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil || resp.StatusCode != 200 {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	reload := func(text string) error {
		b, err := envoyconfig.Parse([]byte(text))
		if err != nil {
			return err
		}
		return cp.Reload(b)
	}
	// The same clusters, other weights: every reload keeps them.
	sameClusters := func(wa, wb int) string {
		return strings.Replace(first, "{name: a, weight: 1}, {name: b, weight: 0}", "{name: a, weight: "+strconv.Itoa(wa)+"}, {name: b, weight: "+strconv.Itoa(wb)+"}", 1)
	}
	for i := range 10 {
		wa, wb := 1, 0
		if i%2 == 0 {
			wa, wb = 0, 1
		}
		if err := reload(sameClusters(wa, wb)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed across 10 reloads", n)
	}
	if err := reload(sameClusters(0, 1)); err != nil {
		t.Fatal(err)
	}
	k := cp.keepAlive(t)
	for range 5 {
		if resp, _ := k.do("GET", "/", ""); resp.Header.Get("X-Backend") != "b" {
			t.Fatalf("after the reload to b: %v", resp.Header)
		}
	}
	// A configuration that cannot run: refused, the old one stays.
	var ps envoyconfig.Problems
	bad := strings.Replace(sameClusters(1, 0), "stat_prefix: test", "stat_prefix: test\n          use_remote_address: true", 1)
	if err := reload(bad); !errors.As(err, &ps) {
		t.Fatalf("a bad configuration: %v", err)
	}
	moved := strings.Replace(sameClusters(1, 0), "name: listener_0", "name: listener_1", 1)
	if err := reload(moved); err == nil || !strings.Contains(err.Error(), "listener") {
		t.Fatalf("a renamed listener: %v", err)
	}
	for range 3 {
		if resp, _ := k.do("GET", "/", ""); resp.Header.Get("X-Backend") != "b" {
			t.Fatalf("after refused reloads: %v", resp.Header)
		}
	}
	_, dump, _ := httpGet("http://" + cp.AdminAddr().String() + "/config_dump")
	if !strings.Contains(dump, `"weight": 1`) {
		t.Errorf("config_dump does not show the configuration in force")
	}
}
