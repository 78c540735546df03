package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
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
// the old one stays.
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

// withListeners rewrites config's one listener (listener_0, port 0) into
// the listeners given: name and port (0 for any).
func withListeners(config string, listeners ...string) string {
	start, end := strings.Index(config, "  - name: listener_0"), strings.Index(config, "  clusters:")
	block := config[start:end]
	var out strings.Builder
	for i := 0; i < len(listeners); i += 2 {
		b := strings.Replace(block, "name: listener_0", "name: "+listeners[i], 1)
		out.WriteString(strings.Replace(b, "port_value: 0", "port_value: "+listeners[i+1], 1))
	}
	return config[:start] + out.String() + config[end:]
}

// TestReloadListeners: a reload binds a new listener and serves it at
// once, closes a removed one (its open connection finishes its request
// and closes), moves one to a new address; a listener that cannot be
// bound refuses the reload whole, leaving nothing new bound.
func TestReloadListeners(t *testing.T) {
	config, _ := routingConfig(t, filepath.Join(t.TempDir(), "log"), "", `
              - match: {prefix: "/"}
                route: {cluster: a}`)
	cp := startConfig(t, config, nil)
	reload := func(text string) error {
		b, err := envoyconfig.Parse([]byte(text))
		if err != nil {
			return err
		}
		return cp.Reload(b)
	}
	get := func(addr string) error {
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || !strings.HasPrefix(string(b), "a GET /") {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}
	first := cp.ListenerAddr("listener_0").String()
	k := cp.keepAlive(t) // open on listener_0 across the reloads

	// Added.
	if err := reload(withListeners(config, "listener_0", "0", "listener_1", "0")); err != nil {
		t.Fatal(err)
	}
	second := cp.ListenerAddr("listener_1")
	if !second.IsValid() || get(second.String()) != nil || get(first) != nil || cp.ListenerAddr("listener_0").String() != first {
		t.Fatalf("after adding listener_1 at %v: %v, listener_0: %v", second, get(second.String()), get(first))
	}

	// Removed: no new connection; the open one answers, then closes.
	if err := reload(withListeners(config, "listener_1", strconv.Itoa(int(second.Port())))); err != nil {
		t.Fatal(err)
	}
	if cp.ListenerAddr("listener_0").IsValid() || get(first) == nil {
		t.Fatalf("listener_0 still serves at %s after its removal", first)
	}
	if resp, _ := k.do("GET", "/", ""); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the open connection of a removed listener: %d, close %v", resp.StatusCode, resp.Close)
	}

	// Moved.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	if err := reload(withListeners(config, "listener_1", strconv.Itoa(port))); err != nil {
		t.Fatal(err)
	}
	if got := cp.ListenerAddr("listener_1"); got.Port() != uint16(port) || get(got.String()) != nil || get(second.String()) == nil {
		t.Fatalf("listener_1 moved to %d: now at %v (%v), old address %v: %v", port, got, get(got.String()), second, get(second.String()))
	}

	// A port in use: refused whole, listener_2 (which could bind) not left bound.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	err = reload(withListeners(config, "listener_1", strconv.Itoa(port), "listener_2", "0", "listener_3", busyPort))
	var ps envoyconfig.Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != "static_resources.listeners[2]" || !strings.Contains(ps[0].Message, "address already in use") {
		t.Fatalf("a listener on a port in use: %v", err)
	}
	if cp.ListenerAddr("listener_2").IsValid() || cp.ListenerAddr("listener_3").IsValid() || get(cp.ListenerAddr("listener_1").String()) != nil {
		t.Fatalf("a refused reload changed the listeners")
	}
}
