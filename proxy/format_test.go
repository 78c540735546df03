package proxy_test

// l4Format is the access log format the L4 tests read, in Envoy's format
// language: the cluster (which says the direction), the original
// destination, how the flow ended (Envoy's connection termination
// details, "-" for a clean end), its bytes, both ends' addresses, its
// response flags and the upstream failure.
const l4Format = "%UPSTREAM_CLUSTER% %DOWNSTREAM_LOCAL_ADDRESS% result=%CONNECTION_TERMINATION_DETAILS% " +
	"bytes_received=%BYTES_RECEIVED% bytes_sent=%BYTES_SENT% " +
	"upstream_local=%UPSTREAM_LOCAL_ADDRESS% downstream_remote=%DOWNSTREAM_REMOTE_ADDRESS% " +
	"flags=%RESPONSE_FLAGS% reason=%UPSTREAM_TRANSPORT_FAILURE_REASON%"
