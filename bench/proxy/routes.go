package main

import (
	"fmt"
	"strings"
)

// proxyArgs are a contender's shunt proxy flags (a --config run takes its
// access log from the file: none here).
func proxyArgs(c contender) []string {
	if c.envoyConfig != "" {
		return append([]string{"--log-level", "warn"}, c.args...)
	}
	return append([]string{"--log-level", "warn", "--access-log", "off"}, c.args...)
}

// routeTable is the seed's Envoy configuration with vhosts extra virtual
// hosts of 10 routes each (prefix, header and regex matches over 3
// clusters) before the one nginx's requests match, whose route is the
// last of its own 10: the worst case of a realistic table. 0 is the
// seed's one route.
func routeTable(vhosts int) string {
	var b strings.Builder
	for v := range vhosts {
		fmt.Fprintf(&b, "\n            - name: svc%d\n              domains: [\"svc%d.shop.svc.cluster.local\", \"svc%d\"]\n              routes:", v, v, v)
		for r := range 10 {
			cluster := []string{"a", "b", "c"}[r%3]
			switch r % 3 {
			case 0:
				fmt.Fprintf(&b, "\n              - {match: {prefix: \"/api/v%d/\"}, route: {cluster: %s}}", r, cluster)
			case 1:
				fmt.Fprintf(&b, "\n              - {match: {prefix: \"/api/\", headers: [{name: x-version, string_match: {exact: \"v%d\"}}]}, route: {cluster: %s}}", r, cluster)
			default:
				fmt.Fprintf(&b, "\n              - {match: {safe_regex: {regex: \"/items/[0-9]+/r%d\"}}, route: {cluster: %s}}", r, cluster)
			}
		}
	}
	routes := `
              - {match: {prefix: "/"}, route: {cluster: app_service}}`
	if vhosts > 0 {
		routes = `
              - {match: {prefix: "/api/"}, route: {cluster: a}}
              - {match: {safe_regex: {regex: "/items/[0-9]+"}}, route: {cluster: b}}
              - {match: {prefix: "/", headers: [{name: x-canary, present_match: true}]}, route: {cluster: c}}
              - {match: {prefix: "/"}, route: {cluster: app_service}}`
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 0.0.0.0, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          http_protocol_options: {accept_http_10: true}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            name: local_route
            virtual_hosts:%s
            - name: backend
              domains: ["*"]
              routes:%s
  clusters:
  - name: app_service
    type: STATIC
    load_assignment: {cluster_name: app_service, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.1.0.1, port_value: 10000}}}}]}]}
  - {name: a, type: STATIC}
  - {name: b, type: STATIC}
  - {name: c, type: STATIC}
`, b.String(), routes)
}
