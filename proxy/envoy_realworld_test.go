package proxy_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/proxy"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// TestRealWorldConfigs: configurations of the shapes users run either
// load, or are refused with every problem named; none crashes or hangs.
func TestRealWorldConfigs(t *testing.T) {
	for file, want := range map[string][]string{
		"front-proxy.yaml":        nil,
		"tcp-proxy.json":          nil,
		"istio-like-sidecar.yaml": nil,
		"../seed.yaml":            nil,
		"tls-termination.yaml": {
			"common_tls_context.tls_certificates[0].certificate_chain: invalid: open certs/servercert.pem: no such file or directory",
		},
		"dynamic.yaml": {
			"dynamic_resources: not implemented",
			"static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http2_protocol_options: not implemented",
		},
		"filters-and-retries.yaml": {
			"static_resources.clusters[1].eds_cluster_config: not implemented",
			"static_resources.clusters[1].type: EDS is not implemented",
			"static_resources.listeners[0].address.socket_address.ipv4_compat: not implemented",
			"common_http_protocol_options: not implemented",
			"http2_protocol_options: not implemented",
			"http_filters[1].typed_config.@type: envoy.extensions.filters.http.lua.v3.Lua is not an extension shunt runs",
			"virtual_hosts[0].cors: not implemented",
			"use_remote_address: not implemented",
		},
	} {
		t.Run(file, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				b, err := envoyconfig.Load(filepath.Join("envoyconfig/testdata/realworld", file))
				if err == nil {
					err = proxy.CheckBootstrap(b)
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("checking the file hangs")
			}
			if want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ps envoyconfig.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("got %v, want problems", err)
			}
			all := ps.Error()
			for _, w := range want {
				if !strings.Contains(all, w) {
					t.Errorf("no problem %q in:\n%s", w, all)
				}
			}
			if len(ps) != len(want) {
				t.Errorf("%d problems, want %d:\n%s", len(ps), len(want), all)
			}
		})
	}
}
