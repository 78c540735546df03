package tracing

import (
	"strconv"
	"strings"
	"time"
)

// Kind is a span's side of the call, with OTLP's numbers.
type Kind uint8

// The kinds a sidecar records: SERVER where it takes a request in for its
// app (Envoy's ingress), CLIENT where it sends its app's request out
// (egress).
const (
	KindServer Kind = 2
	KindClient Kind = 3
)

// Attr is a span's tag: Envoy's are strings.
type Attr struct{ Key, Value string }

// Span is a finished span on its way to the collector. Its strings must
// be its own, not views of a request's buffers (Tags copies them).
type Span struct {
	SpanContext
	Kind       Kind
	Name       string
	Start, End time.Time
	Attrs      []Attr
	// Error marks the span failed: a 5xx, no response, or a gRPC status
	// other than OK (Envoy's error tag).
	Error bool
}

// Request is what a span's tags are made of: a request's record at its
// end, as the access log has it. Method, RequestID, UserAgent,
// DownstreamCluster and GRPCStatus may view the request's buffers (Tags
// copies them); the rest must be the caller's own strings.
type Request struct {
	Method, Scheme, Authority, Path, Protocol string
	RequestID, UserAgent, DownstreamCluster   string
	Status                                    int // 0: no response
	GRPCStatus                                string
	Flags                                     string // Envoy's response flags, "-" for none
	UpstreamCluster, UpstreamAddress          string
	PeerAddress                               string
	PeerPrincipal                             string // the mTLS peer's URI SAN, if any
	RequestSize, ResponseSize                 int64
}

// Node is the sidecar's own identity in its spans' tags.
type Node struct {
	ID, Zone string
	// Istio's custom tags: istio.canonical_service and the rest.
	Istio []Attr
}

// MaxPathTagLength is Envoy's default bound on http.url.
const MaxPathTagLength = 256

// Tags are Envoy's standard HTTP span tags for a request, and Istio's
// custom ones: component, node_id, zone, guid:x-request-id, http.url,
// http.method, http.protocol, downstream_cluster, user_agent,
// peer.address, request_size, response_size, upstream_cluster(.name),
// upstream_address, http.status_code, response_flags, error and, under
// mutual TLS, peer.principal. maxPath bounds http.url (0 for
// MaxPathTagLength).
func Tags(r *Request, n *Node, maxPath int) (attrs []Attr, failed bool) {
	if maxPath <= 0 {
		maxPath = MaxPathTagLength
	}
	url := r.Scheme + "://" + r.Authority + r.Path
	if len(url) > maxPath {
		url = url[:maxPath]
	}
	attrs = make([]Attr, 0, 20+len(n.Istio))
	add := func(k, v string) { attrs = append(attrs, Attr{k, v}) }
	// A value that may view the request's buffers is copied; the rest
	// are the span's already (made here, or the configuration's).
	view := func(k, v string) { attrs = append(attrs, Attr{k, strings.Clone(v)}) }
	add("component", "proxy")
	add("node_id", n.ID)
	add("zone", orDash(n.Zone))
	view("guid:x-request-id", r.RequestID)
	add("http.url", url)
	view("http.method", r.Method)
	add("http.protocol", r.Protocol)
	view("downstream_cluster", orDash(r.DownstreamCluster))
	view("user_agent", orDash(r.UserAgent))
	add("peer.address", r.PeerAddress)
	add("request_size", strconv.FormatInt(r.RequestSize, 10))
	add("response_size", strconv.FormatInt(r.ResponseSize, 10))
	if r.UpstreamCluster != "" {
		add("upstream_cluster", r.UpstreamCluster)
		add("upstream_cluster.name", r.UpstreamCluster)
	}
	if r.UpstreamAddress != "" {
		add("upstream_address", r.UpstreamAddress)
	}
	add("http.status_code", strconv.Itoa(r.Status))
	add("response_flags", orDash(r.Flags))
	if r.GRPCStatus != "" {
		view("grpc.status_code", r.GRPCStatus)
	}
	if r.PeerPrincipal != "" {
		add("peer.principal", r.PeerPrincipal)
	}
	attrs = append(attrs, n.Istio...)
	failed = r.Status == 0 || r.Status >= 500 || r.GRPCStatus != "" && r.GRPCStatus != "0"
	if failed {
		add("error", "true")
	}
	return attrs, failed
}

// OperationName is Envoy's span name where no route decorator gives one:
// "ingress" for a request coming in, "egress <authority>" for one going
// out.
func OperationName(k Kind, authority string) string {
	if k == KindServer {
		return "ingress"
	}
	return "egress " + authority
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
