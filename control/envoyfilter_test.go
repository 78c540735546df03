package control_test

import (
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/control"
)

// localRateLimit is Istio's docs' local rate limit, for the context and
// the workloads given: a TypedStruct, runtime keys, a header on the
// limited responses.
func localRateLimit(name, ns, labels, context string) string {
	return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  workloadSelector: {labels: ` + labels + `}
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: ` + context + `
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket:
                max_tokens: 4
                tokens_per_fill: 4
                fill_interval: 60s
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              response_headers_to_add:
                - append: false
                  header:
                    key: x-local-rate-limit
                    value: 'true'
`
}

// TestEnvoyFilterLocalRateLimit: Istio's docs' local rate limit
// EnvoyFilters, verbatim, go into the connection managers of the
// workloads they select — the app's inbound side, the ingress gateway's
// listeners — first, as Istio inserts one before no named filter; a
// patch shunt does not run is reported and left out whole, the rest of
// its EnvoyFilter kept.
func TestEnvoyFilterLocalRateLimit(t *testing.T) {
	w := meshWith(t, localRateLimit("app-ratelimit", "default", "{app: app}", "SIDECAR_INBOUND")+"---\n"+
		localRateLimit("edge-ratelimit", "istio-system", "{istio: ingressgateway}", "GATEWAY")+`---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: unsupported, namespace: default}
spec:
  configPatches:
  - applyTo: CLUSTER
    patch: {operation: MERGE, value: {connect_timeout: 1s}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: INSERT_FIRST, value: {name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch: {operation: INSERT_FIRST, value: {name: authz, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch: {operation: INSERT_FIRST, value: {name: rl, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit,
      stat_prefix: rl, token_bucket: {max_tokens: 1, fill_interval: 1s}, local_rate_limit_per_downstream_connection: true}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}}
    patch: {operation: INSERT_BEFORE, value: {name: envoy.filters.http.fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault,
      abort: {http_status: 503, percentage: {numerator: 0}}}}}
---
apiVersion: v1
kind: Pod
metadata: {name: ingress-1, namespace: istio-system, labels: {istio: ingressgateway}}
status: {podIP: 10.1.0.51}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`)
	cc, err := control.NewCompiler(control.DefaultMesh())
	if err != nil {
		t.Fatal(err)
	}
	cc.Survey(w)
	app := cc.Compile(w, appSidecar(t))
	runs(t, app)
	_, gw := compileRouter(t, w, istioIngressNode)
	runs(t, gw)
	filters := func(l []byte) []string {
		var names []string
		for _, part := range strings.Split(string(l), `"httpFilters":[`)[1:] {
			var chain []string
			for _, f := range strings.Split(strings.SplitN(part, `"envoy.filters.http.router"`, 2)[0], `{"name":"`)[1:] {
				chain = append(chain, strings.SplitN(f, `"`, 2)[0])
			}
			names = append(names, strings.Join(chain, ","))
		}
		return names
	}
	inbound := jsonOf(app.Listeners[0])
	outbound := jsonOf(app.Listeners[1])
	gateway := jsonOf(gw.Listeners[0])
	for _, c := range []struct {
		name string
		l    []byte
		want string
	}{
		{"the app's inbound", inbound, "envoy.filters.http.local_ratelimit,istio.metadata_exchange,envoy.filters.http.cors,envoy.filters.http.fault,envoy.filters.http.fault"},
		{"the gateway's", gateway, "envoy.filters.http.local_ratelimit,istio.metadata_exchange,envoy.filters.http.cors,envoy.filters.http.fault"},
	} {
		got := filters(c.l)
		if len(got) == 0 {
			t.Errorf("%s: no connection manager", c.name)
		}
		for _, g := range got {
			if g != c.want {
				t.Errorf("%s: filters %s, want %s", c.name, g, c.want)
			}
		}
	}
	if strings.Contains(string(outbound), "local_ratelimit") || !strings.Contains(string(inbound), `"key":"x-local-rate-limit"`) {
		t.Errorf("the outbound side is patched, or the inbound's filter lost its header")
	}
	wantProblems(t, cc, map[string]string{
		"EnvoyFilter default/unsupported spec.configPatches[0].applyTo":                                                             "CLUSTER is not run by shunt",
		"EnvoyFilter default/unsupported spec.configPatches[1].match.context":                                                       "SIDECAR_OUTBOUND is not run by shunt",
		"EnvoyFilter default/unsupported spec.configPatches[2].patch.value.typed_config.@type":                                      "ExtAuthz is not an extension shunt runs",
		"EnvoyFilter default/unsupported spec.configPatches[3].patch.value.typed_config.local_rate_limit_per_downstream_connection": "not implemented by shunt",
	})
}
