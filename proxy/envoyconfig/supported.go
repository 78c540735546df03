package envoyconfig

import (
	// The extensions shunt runs; importing them registers their types so
	// that typed_config resolves.
	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// supported lists, per message, the fields shunt implements; a field set
// in a configuration and not listed here is refused with its path. A
// message not listed at all is an extension shunt does not run.
var supported = map[string][]string{
	"envoy.config.bootstrap.v3.Bootstrap":                                                             {"node", "static_resources", "admin"},
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources":                                             {"listeners", "clusters"},
	"envoy.config.bootstrap.v3.Admin":                                                                 {"address"},
	"envoy.config.core.v3.Node":                                                                       {"id", "cluster", "metadata"},
	"envoy.config.core.v3.Address":                                                                    {"socket_address"},
	"envoy.config.core.v3.SocketAddress":                                                              {"address", "port_value", "protocol"},
	"envoy.config.core.v3.BindConfig":                                                                 {"source_address", "extra_source_addresses"},
	"envoy.config.core.v3.ExtraSourceAddress":                                                         {"address"},
	"envoy.config.core.v3.CidrRange":                                                                  {"address_prefix", "prefix_len"},
	"envoy.config.core.v3.Http1ProtocolOptions":                                                       {"accept_http_10"},
	"envoy.config.core.v3.DataSource":                                                                 {"filename", "inline_string", "inline_bytes"},
	"envoy.config.core.v3.SubstitutionFormatString":                                                   {"text_format", "text_format_source", "json_format"},
	"envoy.config.listener.v3.Listener":                                                               {"name", "address", "additional_addresses", "filter_chains", "listener_filters", "listener_filters_timeout", "continue_on_listener_filters_timeout", "use_original_dst", "traffic_direction", "transparent", "per_connection_buffer_limit_bytes"},
	"envoy.config.listener.v3.AdditionalAddress":                                                      {"address"},
	"envoy.config.listener.v3.FilterChain":                                                            {"name", "filter_chain_match", "filters", "transport_socket"},
	"envoy.config.listener.v3.FilterChainMatch":                                                       {"destination_port", "prefix_ranges", "server_names", "application_protocols", "transport_protocol"},
	"envoy.config.core.v3.TransportSocket":                                                            {"name", "typed_config"},
	"envoy.extensions.filters.http.rbac.v3.RBAC":                                                      {"rules"},
	"envoy.extensions.filters.network.rbac.v3.RBAC":                                                   {"rules", "stat_prefix"},
	"envoy.config.rbac.v3.RBAC":                                                                       {"action", "policies"},
	"envoy.config.rbac.v3.Policy":                                                                     {"permissions", "principals"},
	"envoy.config.rbac.v3.Permission":                                                                 {"and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port", "not_rule"},
	"envoy.config.rbac.v3.Permission.Set":                                                             {"rules"},
	"envoy.config.rbac.v3.Principal":                                                                  {"and_ids", "or_ids", "any", "authenticated", "direct_remote_ip", "remote_ip", "header", "not_id"},
	"envoy.config.rbac.v3.Principal.Set":                                                              {"ids"},
	"envoy.config.rbac.v3.Principal.Authenticated":                                                    {"principal_name"},
	"envoy.type.matcher.v3.PathMatcher":                                                               {"path"},
	"envoy.config.cluster.v3.Cluster.TransportSocketMatch":                                            {"name", "match", "transport_socket"},
	"envoy.config.core.v3.Metadata":                                                                   {"filter_metadata"},
	"envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer":                                      {},
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":                                    {"common_tls_context", "sni"},
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":                                  {"common_tls_context", "require_client_certificate"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":                                      {"tls_certificates", "tls_certificate_sds_secret_configs", "validation_context", "validation_context_sds_secret_config", "combined_validation_context", "alpn_protocols"},
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":                                        {"certificate_chain", "private_key"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": {"default_validation_context", "validation_context_sds_secret_config"},
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":                          {"trusted_ca", "match_typed_subject_alt_names"},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher":                                 {"san_type", "matcher"},
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig":                                       {"name", "sds_config"},
	"envoy.config.core.v3.ConfigSource":                                                               {"ads", "api_config_source", "resource_api_version", "initial_fetch_timeout"},
	"envoy.config.core.v3.AggregatedConfigSource":                                                     {},
	"envoy.config.core.v3.ApiConfigSource":                                                            {"api_type", "grpc_services", "transport_api_version", "set_node_on_first_message_only"},
	"envoy.config.core.v3.GrpcService":                                                                {"envoy_grpc"},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc":                                                      {"cluster_name"},
	"envoy.config.listener.v3.Filter":                                                                 {"name", "typed_config"},
	"envoy.config.listener.v3.ListenerFilter":                                                         {"name", "typed_config"},
	"envoy.config.accesslog.v3.AccessLog":                                                             {"name", "typed_config"},
	"envoy.config.route.v3.RouteConfiguration":                                                        {"name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"},
	"envoy.config.route.v3.VirtualHost":                                                               {"name", "domains", "routes", "include_request_attempt_count", "typed_per_filter_config", "retry_policy", "per_request_buffer_limit_bytes", "request_body_buffer_limit", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"},
	"envoy.config.route.v3.Route":                                                                     {"name", "stat_prefix", "decorator", "match", "route", "per_request_buffer_limit_bytes", "request_body_buffer_limit", "typed_per_filter_config", "redirect", "direct_response", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"},
	"envoy.config.route.v3.RouteMatch":                                                                {"prefix", "path", "connect_matcher", "safe_regex", "path_separated_prefix", "case_sensitive", "headers", "query_parameters", "grpc"},
	"envoy.config.route.v3.RouteMatch.ConnectMatcher":                                                 {},
	"envoy.config.route.v3.RouteAction":                                                               {"cluster", "timeout", "request_mirror_policies", "idle_timeout", "max_stream_duration", "hash_policy", "retry_policy", "weighted_clusters", "cluster_header", "prefix_rewrite", "regex_rewrite", "host_rewrite_literal"},
	"envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions":                                          {},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget":                                  {"budget_percent", "min_retry_concurrency"},
	"envoy.config.route.v3.RouteAction.RequestMirrorPolicy":                                           {"cluster", "runtime_fraction"},
	"envoy.config.route.v3.RouteAction.MaxStreamDuration":                                             {"max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset"},
	"envoy.extensions.filters.http.fault.v3.HTTPFault":                                                {"delay", "abort", "headers", "max_active_faults"},
	"envoy.extensions.filters.http.cors.v3.Cors":                                                      {},
	"envoy.extensions.filters.http.cors.v3.CorsPolicy":                                                {"allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers", "max_age", "allow_credentials", "filter_enabled", "forward_not_matching_preflights"},
	"envoy.extensions.filters.common.fault.v3.FaultDelay":                                             {"fixed_delay", "header_delay", "percentage"},
	"envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay":                                 {},
	"envoy.extensions.filters.http.fault.v3.FaultAbort":                                               {"http_status", "grpc_status", "header_abort", "percentage"},
	"envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort":                                   {},
	"envoy.type.v3.FractionalPercent":                                                                 {"numerator", "denominator"},
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit":                                 {"stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced", "response_headers_to_add"},
	"envoy.type.v3.TokenBucket":                                                                       {"max_tokens", "tokens_per_fill", "fill_interval"},
	"envoy.config.core.v3.RuntimeFractionalPercent":                                                   {"default_value", "runtime_key"},
	"envoy.type.v3.HttpStatus":                                                                        {"code"},
	"envoy.config.cluster.v3.OutlierDetection":                                                        {"consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure", "split_external_local_origin_errors", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure", "max_ejection_time"},
	"envoy.config.core.v3.HealthCheck":                                                                {"timeout", "interval", "unhealthy_threshold", "healthy_threshold", "http_health_check", "tcp_health_check"},
	"envoy.config.core.v3.HealthCheck.HttpHealthCheck":                                                {"host", "path", "expected_statuses"},
	"envoy.config.core.v3.HealthCheck.TcpHealthCheck":                                                 {},
	"envoy.type.v3.Int64Range":                                                                        {"start", "end"},
	"envoy.config.cluster.v3.Cluster.CommonLbConfig":                                                  {"healthy_panic_threshold"},
	"envoy.type.v3.Percent":                                                                           {"value"},
	"envoy.config.cluster.v3.CircuitBreakers":                                                         {"thresholds"},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds":                                              {"priority", "retry_budget", "max_connections", "max_pending_requests", "max_requests", "max_retries"},
	"envoy.config.route.v3.RouteAction.HashPolicy":                                                    {"header", "cookie", "connection_properties", "query_parameter", "terminal"},
	"envoy.config.route.v3.RouteAction.HashPolicy.Header":                                             {"header_name"},
	"envoy.config.route.v3.RouteAction.HashPolicy.Cookie":                                             {"name"},
	"envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties":                               {"source_ip"},
	"envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter":                                     {"name"},
	"envoy.config.cluster.v3.Cluster.RingHashLbConfig":                                                {"minimum_ring_size", "maximum_ring_size"},
	"envoy.config.cluster.v3.Cluster.MaglevLbConfig":                                                  {"table_size"},
	"envoy.config.cluster.v3.Cluster.LeastRequestLbConfig":                                            {"choice_count"},
	"envoy.config.route.v3.RetryPolicy":                                                               {"retry_on", "retriable_headers", "num_retries", "per_try_timeout", "retry_back_off", "retriable_status_codes", "retry_host_predicate", "host_selection_retry_max_attempts"},
	"envoy.config.route.v3.RetryPolicy.RetryBackOff":                                                  {"base_interval", "max_interval"},
	"envoy.config.route.v3.RetryPolicy.RetryHostPredicate":                                            {"name", "typed_config"},
	"envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate":                            {},
	"envoy.config.route.v3.HeaderMatcher":                                                             {"name", "string_match", "present_match", "invert_match"},
	"envoy.config.route.v3.QueryParameterMatcher":                                                     {"name", "string_match", "present_match"},
	"envoy.config.route.v3.WeightedCluster":                                                           {"clusters", "total_weight"},
	"envoy.config.route.v3.WeightedCluster.ClusterWeight":                                             {"name", "weight"},
	"envoy.config.route.v3.Decorator":                                                                 {"operation"},
	"envoy.config.route.v3.RedirectAction":                                                            {"https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect", "prefix_rewrite", "response_code", "strip_query"},
	"envoy.config.route.v3.DirectResponseAction":                                                      {"status", "body"},
	"envoy.type.matcher.v3.StringMatcher":                                                             {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"},
	"envoy.type.matcher.v3.RegexMatcher":                                                              {"regex"},
	"envoy.type.matcher.v3.RegexMatchAndSubstitute":                                                   {"pattern", "substitution"},
	"envoy.config.core.v3.HeaderValueOption":                                                          {"header", "append_action", "append"},
	"envoy.config.core.v3.HeaderValue":                                                                {"key", "value"},
	"envoy.config.cluster.v3.Cluster":                                                                 {"name", "metadata", "type", "transport_socket", "transport_socket_matches", "outlier_detection", "health_checks", "common_lb_config", "circuit_breakers", "ring_hash_lb_config", "maglev_lb_config", "least_request_lb_config", "connect_timeout", "lb_policy", "load_assignment", "dns_lookup_family", "dns_refresh_rate", "upstream_bind_config", "typed_extension_protocol_options"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":                                          {"explicit_http_config", "use_downstream_protocol_config"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig":                       {"http_protocol_options"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig":                  {"http_protocol_options", "http2_protocol_options"},
	"envoy.config.core.v3.Http2ProtocolOptions":                                                       {},
	"envoy.config.endpoint.v3.ClusterLoadAssignment":                                                  {"cluster_name", "endpoints"},
	"envoy.config.endpoint.v3.LocalityLbEndpoints":                                                    {"lb_endpoints", "priority"},
	"envoy.config.endpoint.v3.LbEndpoint":                                                             {"endpoint", "load_balancing_weight", "metadata"},
	"envoy.config.endpoint.v3.Endpoint":                                                               {"address"},
	"envoy.extensions.filters.listener.original_dst.v3.OriginalDst":                                   {},
	"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector":                               {},
	"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":                                 {},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {
		"stat_prefix", "request_timeout", "codec_type", "route_config", "http_filters", "access_log", "stream_idle_timeout",
		"generate_request_id", "http_protocol_options", "upgrade_configs", "forward_client_cert_details", "set_current_client_cert_details", "tracing"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": {
		"client_sampling", "random_sampling", "overall_sampling", "max_path_tag_length", "custom_tags", "provider"},
	"envoy.type.tracing.v3.CustomTag":             {"tag", "literal", "environment"},
	"envoy.type.tracing.v3.CustomTag.Literal":     {"value"},
	"envoy.type.tracing.v3.CustomTag.Environment": {"name", "default_value"},
	"envoy.config.trace.v3.Tracing.Http":          {"name", "typed_config"},
	"envoy.config.trace.v3.OpenTelemetryConfig":   {"grpc_service", "http_service", "service_name"},
	"envoy.config.core.v3.HttpService":            {"http_uri"},
	"envoy.config.core.v3.HttpUri":                {"uri", "cluster", "timeout"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails": {"subject", "uri", "dns"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig":               {"upgrade_type"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter":                                        {"name", "typed_config"},
	"envoy.extensions.filters.http.router.v3.Router":                                                                {},
	"udpa.type.v1.TypedStruct":                                                             {"type_url", "value"},
	"xds.type.v3.TypedStruct":                                                              {"type_url", "value"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":                               {"stat_prefix", "cluster", "weighted_clusters", "access_log", "idle_timeout"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster":               {"clusters"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": {"name", "weight"},
	"envoy.extensions.access_loggers.file.v3.FileAccessLog":                                {"path", "log_format"},
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog":                            {"log_format"},
	"envoy.extensions.access_loggers.stream.v3.StderrAccessLog":                            {"log_format"},
}

// enumValues restricts enum fields to the values shunt implements.
var enumValues = map[string][]string{
	"envoy.config.cluster.v3.Cluster.type":                                                         {"STATIC", "STRICT_DNS", "LOGICAL_DNS", "ORIGINAL_DST"},
	"envoy.config.cluster.v3.Cluster.lb_policy":                                                    {"ROUND_ROBIN", "CLUSTER_PROVIDED", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"},
	"envoy.config.core.v3.SocketAddress.protocol":                                                  {"TCP"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.codec_type": {"AUTO", "HTTP1"},
}

// leaves are messages taken whole: protobuf's well-known types.
func isLeaf(fullName string) bool {
	switch fullName {
	case "google.protobuf.Duration", "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.BoolValue",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.StringValue", "google.protobuf.Timestamp":
		return true
	}
	return false
}
