package proxy_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

// lbConfig is a listener routing to cluster "up" of the given endpoint
// ports, with an lb_policy and a route hash_policy.
func lbConfig(logFile, lbPolicy, hashPolicy string, endpoints []string) string {
	eps := ""
	for _, e := range endpoints {
		eps += "\n        - " + e
	}
	return hcmYAML(logFile, "", "", `
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: up, hash_policy: `+hashPolicy+`}}]`, `
  - name: up
    type: STATIC
    lb_policy: `+lbPolicy+`
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:`+eps)
}

// namedBackends start n backends that answer with their index, and
// return their endpoints as lb_endpoints entries (weights as given).
func namedBackends(t *testing.T, n int, weights ...int) []string {
	var out []string
	for i := range n {
		_, port := backendPort(t, func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Backend", fmt.Sprint(i)) })
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		out = append(out, fmt.Sprintf("{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}, load_balancing_weight: %d}", port, w))
	}
	return out
}

// TestHashPolicies: with RING_HASH and MAGLEV, a user's requests stay on
// one endpoint, and different users spread.
func TestHashPolicies(t *testing.T) {
	for _, lb := range []string{"RING_HASH", "MAGLEV"} {
		for _, hp := range []struct{ policy, header string }{
			{"[{header: {header_name: x-user}}]", "X-User: %s"},
			{"[{cookie: {name: session}}]", "Cookie: theme=dark; session=%s"},
			{"[{query_parameter: {name: user}}]", ""},
		} {
			t.Run(lb+" "+hp.policy, func(t *testing.T) {
				cp := startConfig(t, lbConfig(filepath.Join(t.TempDir(), "log"), lb, hp.policy, namedBackends(t, 4)), nil)
				k := cp.keepAlive(t)
				spread := map[string]bool{}
				for u := range 20 {
					user := fmt.Sprint("user", u)
					target, headers := "/?user="+user, ""
					if hp.header != "" {
						headers = fmt.Sprintf(hp.header, user) + "\r\n"
					}
					first := ""
					for range 5 {
						resp, _ := k.do("GET", target, headers)
						got := resp.Header.Get("X-Backend")
						if first == "" {
							first = got
						} else if got != first {
							t.Fatalf("%s went to backends %s and %s", user, first, got)
						}
					}
					spread[first] = true
				}
				if len(spread) < 3 {
					t.Errorf("20 users on %d of 4 backends", len(spread))
				}
			})
		}
	}
}

// TestEndpointWeights: load_balancing_weight splits round robin 3:1.
func TestEndpointWeights(t *testing.T) {
	cp := startConfig(t, lbConfig(filepath.Join(t.TempDir(), "log"), "ROUND_ROBIN", "[]", namedBackends(t, 2, 3, 1)), nil)
	k := cp.keepAlive(t)
	got := map[string]int{}
	for range 400 {
		resp, _ := k.do("GET", "/", "")
		got[resp.Header.Get("X-Backend")]++
	}
	if got["0"] != 300 || got["1"] != 100 {
		t.Errorf("weights 3:1 over 400 requests: %v", got)
	}
}
