package envoyconfig

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestSeedConfigLoads(t *testing.T) {
	b, err := Load("testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || ls[0].GetAddress().GetSocketAddress().GetPortValue() != 10000 {
		t.Fatalf("listeners: %v", ls)
	}
	cs := b.GetStaticResources().GetClusters()
	if len(cs) != 1 || cs[0].GetName() != "app_service" || cs[0].GetType().String() != "STRICT_DNS" {
		t.Fatalf("clusters: %v", cs)
	}
}

// TestRefusals: each unsupported or invalid field is refused with its path.
func TestRefusals(t *testing.T) {
	seed, err := os.ReadFile("testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	hcm := "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	for _, tc := range []struct {
		name, from, to string
		want           []string // path: message fragments, one per problem
	}{
		{"cluster lb policy", "lb_policy: ROUND_ROBIN", "lb_policy: CLUSTER_PROVIDED_NOT",
			[]string{"static_resources.clusters[0].lb_policy"}},
		{"cluster lb policy shunt lacks", "lb_policy: ROUND_ROBIN", "lb_policy: LOAD_BALANCING_POLICY_CONFIG",
			[]string{"static_resources.clusters[0].lb_policy: LOAD_BALANCING_POLICY_CONFIG is not implemented by shunt"}},
		{"cluster type", "type: STRICT_DNS", "type: EDS",
			[]string{"static_resources.clusters[0].type: EDS is not implemented"}},
		{"unknown field", "stat_prefix: ingress_http", "stat_prefix: ingress_http\n          stat_prefx: x",
			[]string{hcm + ".stat_prefx: unknown field"}},
		{"unimplemented field", "stat_prefix: ingress_http", "stat_prefix: ingress_http\n          use_remote_address: true",
			[]string{hcm + ".use_remote_address: not implemented by shunt"}},
		{"unknown extension", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
			[]string{hcm + ".http_filters[0].typed_config.@type: envoy.extensions.transport_sockets.tls.v3.Secret is not an extension shunt runs"}},
		{"route rate limits", "cluster: app_service\n", "cluster: app_service\n                  rate_limits: [{actions: [{remote_address: {}}]}]\n",
			[]string{hcm + ".route_config.virtual_hosts[0].routes[0].route.rate_limits: not implemented"}},
		{"two at once", "lb_policy: ROUND_ROBIN", "lb_policy: LOAD_BALANCING_POLICY_CONFIG\n    lrs_server: {}",
			[]string{"static_resources.clusters[0].lb_policy: LOAD_BALANCING_POLICY_CONFIG", "static_resources.clusters[0].lrs_server: not implemented"}},
		{"wrong value type", "port_value: 10000", "port_value: ten",
			[]string{"static_resources.listeners[0].address.socket_address.port_value: invalid: ten is not a number"}},
		{"alternatives", "prefix: \"/\"", "prefix: \"/\"\n                  path: /x",
			[]string{hcm + ".route_config.virtual_hosts[0].routes[0].match.prefix: invalid: path and prefix are alternatives"}},
		{"invalid value", "port_value: 10000", "port_value: 70000",
			[]string{"static_resources.listeners[0].address.socket_address.port_value: invalid: value must be less than or equal to 65535"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(seed), tc.from) {
				t.Fatalf("the seed has no %q", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(string(seed), tc.from, tc.to, 1)))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("got %v, want problems", err)
			}
			if len(ps) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(tc.want), ps)
			}
			for i, w := range tc.want {
				if !strings.Contains(ps[i].String(), w) {
					t.Errorf("problem %d: %q, want %q in it", i, ps[i], w)
				}
			}
		})
	}
}

func TestNotAConfig(t *testing.T) {
	for _, in := range []string{"", "[1, 2]", "static_resources: [", "{\"static_resources\": 3}"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

// FuzzParse: any input is read or refused with problems, never a panic.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"testdata/seed.yaml", "testdata/realworld/tcp-proxy.json", "testdata/realworld/filters-and-retries.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if (b == nil) == (err == nil) {
			t.Fatalf("bootstrap %v and error %v", b, err)
		}
		var ps Problems
		if err != nil && (!errors.As(err, &ps) || len(ps) == 0) {
			t.Fatalf("an error that lists no problem: %v", err)
		}
	})
}
