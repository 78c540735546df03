package proxy_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// exampleConfig reads one of examples/: its listener on a free port, its
// endpoints 127.0.0.1:808N on backends that answer "808N <path> host=<host>".
func exampleConfig(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "port_value: 10000", "port_value: 0", 1)
	for n := 8081; n <= 8089; n++ {
		_, port := backendPort(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%d %s host=%s", n, r.URL.RequestURI(), r.Host)
		})
		s = strings.ReplaceAll(s, "port_value: "+strconv.Itoa(n), "port_value: "+strconv.Itoa(int(port)))
	}
	return strings.Replace(s, "name: ingress\n", "name: listener_0\n", 1)
}

// TestExamples: every file in examples/ runs, and answers as its
// comments say.
func TestExamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if len(files) < 4 {
		t.Fatalf("examples: %v", files)
	}
	localhost := map[string][]netip.Addr{"localhost": {netip.MustParseAddr("127.0.0.1")}}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			config := strings.Replace(exampleConfig(t, name), "name: egress\n", "name: listener_0\n", 1)
			cp := startConfig(t, config, localhost)
			path := "/"
			if name == "resilience.yaml" {
				path = "/ratings/1" // its only HTTP/1 route
			}
			if resp, body := cp.keepAlive(t).do("GET", path, ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "808") {
				t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
			}
		})
	}
	t.Run("routing.yaml says", func(t *testing.T) {
		cp := startConfig(t, exampleConfig(t, "routing.yaml"), nil)
		k := cp.keepAlive(t)
		for _, c := range []struct{ target, headers, want string }{
			{"/reviews/1", "X-Canary: 1\r\n", "8082 /reviews/1 "},
			{"/v1/users/bob", "", "8081 /users/bob host=users.internal"},
			{"/search?debug", "", "8082 /search?debug "},
			{"/healthz", "", "ok\n"},
		} {
			if resp, body := k.do("GET", c.target, c.headers); resp.StatusCode != 200 || !strings.HasPrefix(body, c.want) || resp.Header.Get("X-Served-By") != "shunt" {
				t.Errorf("%s %q: %d %q %v, want %q", c.target, c.headers, resp.StatusCode, body, resp.Header, c.want)
			}
		}
		if resp, err := h2cClient().Get("http://" + cp.ListenerAddr("listener_0").String() + "/healthz"); err != nil ||
			resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "shunt" {
			t.Errorf("the direct response over HTTP/2: %v %v", resp, err)
		}
		v2 := 0
		for range 200 {
			if _, body := k.do("GET", "/reviews/1", ""); strings.HasPrefix(body, "8082 /api/reviews/1 ") {
				v2++
			} else if !strings.HasPrefix(body, "8081 /api/reviews/1 ") {
				t.Fatalf("the split: %q", body)
			}
		}
		if v2 < 5 || v2 > 40 {
			t.Errorf("the 90/10 split sent %d of 200 to v2", v2)
		}
		c, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(&http.Request{
			Method: "GET", URL: mustURL(t, "http://"+cp.ListenerAddr("listener_0").String()+"/a?b"), Host: "old.shop.example"})
		if err != nil || c.StatusCode != 308 || c.Header.Get("Location") != "http://shop.example/a?b" {
			t.Errorf("the legacy host: %v %v", c, err)
		}
	})
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
