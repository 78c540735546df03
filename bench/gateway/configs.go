package main

// The backend: nginx answering every request 200 with a short body,
// keeping connections open.
const nginxConfig = `worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:8081;
    location / { return 200 "hello from the backend\n"; }
  }
}
`

// shunt's proxy: Envoy's configuration of a TLS-terminating listener.
const shuntConfig = `static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 8443}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: {filename: DIR/cert.pem}, private_key: {filename: DIR/key.pem}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: https
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]}
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8081}}}}]}]}
`

// HAProxy in mode http, reusing backend connections.
const haproxyConfig = `global
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend https
  bind 127.0.0.1:8443 ssl crt DIR/combined.pem alpn h2,http/1.1
  default_backend backend
backend backend
  http-reuse always
  server nginx 127.0.0.1:8081
`

// Caddy's reverse proxy, its automatic HTTPS off, the same certificate.
const caddyConfig = `{
  admin off
  auto_https off
  storage file_system DIR/caddy
}
https://:8443 {
  bind 127.0.0.1
  tls DIR/cert.pem DIR/key.pem
  reverse_proxy 127.0.0.1:8081
}
`
