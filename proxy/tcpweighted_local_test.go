package proxy_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestTCPProxyWeightedClusters: tcp_proxy's weighted_clusters sends each
// connection to a cluster picked by weight; a cluster of weight 0 gets
// none.
func TestTCPProxyWeightedClusters(t *testing.T) {
	port := func(name string) int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, name)
				c.Close()
			}
		}()
		return ln.Addr().(*net.TCPAddr).Port
	}
	cluster := func(name string) string {
		return fmt.Sprintf(`
  - {name: %s, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: %[1]s, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}}`, name, port(name))
	}
	cp := startConfig(t, `
static_resources:
  listeners:
  - name: split
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: split
          weighted_clusters: {clusters: [{name: a, weight: 3}, {name: b, weight: 1}, {name: c, weight: 0}]}
  clusters:`+cluster("a")+cluster("b")+cluster("c")+"\n", nil)
	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", cp.ListenerAddr("split").String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen[string(b)]++
	}
	// 150 expected of a: at 200 tries, under 110 or over 190 is a broken pick.
	if seen["a"] < 110 || seen["a"] > 190 || seen["b"] == 0 || seen["c"] != 0 || seen["a"]+seen["b"] != 200 {
		t.Errorf("connections by cluster %v, want about 3:1 between a and b, none to c", seen)
	}
}
