package main

import "github.com/shunt-dev/shunt/internal/envoytest"

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
	routes := `
              - {match: {prefix: "/"}, route: {cluster: app_service}}`
	if vhosts > 0 {
		routes = `
              - {match: {prefix: "/api/"}, route: {cluster: a}}
              - {match: {safe_regex: {regex: "/items/[0-9]+"}}, route: {cluster: b}}
              - {match: {prefix: "/", headers: [{name: x-canary, present_match: true}]}, route: {cluster: c}}
              - {match: {prefix: "/"}, route: {cluster: app_service}}`
	}
	return envoytest.HCM{Address: "0.0.0.0", Port: 10000, Fields: []string{"http_protocol_options: {accept_http_10: true}"},
		RouteConfig: `
            name: local_route
            virtual_hosts:` + envoytest.VirtualHosts(vhosts) + `
            - name: backend
              domains: ["*"]
              routes:` + routes,
		Clusters: envoytest.StaticCluster("app_service", "10.1.0.1", 10000) + `
  - {name: a, type: STATIC}
  - {name: b, type: STATIC}
  - {name: c, type: STATIC}`}.YAML()
}
