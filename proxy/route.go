package proxy

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// routeConfig is Envoy's RouteConfiguration: virtual hosts chosen by the
// request's authority, each a list of routes tried in order.
type routeConfig struct {
	name  string
	hosts []*virtualHost
	// The domains, indexed (see index).
	exact              map[string]*virtualHost
	suffixes, prefixes []wildcard
	any                *virtualHost
}

type virtualHost struct {
	name    string
	domains []string // exact, "*.suffix", "prefix*" or "*"
	routes  []*route
}

// route is one route: Envoy's RouteMatch and what to do with what it
// matches.
type route struct {
	name string
	// decorator names the spans of its requests (decorator.operation),
	// "" for Envoy's default name.
	decorator string
	// stats are vhost.<virtual host>.route.<stat_prefix>.*, nil without
	// a stat_prefix.
	stats *rqStats
	// The path match: one of prefix ("/" for any), path (exact;
	// exactPath for path ""), separatedPrefix (a prefix ending at a "/"
	// or the path's end), regex (the whole path); caseInsensitive is
	// case_sensitive false.
	prefix, path, separatedPrefix string
	exactPath, caseInsensitive    bool
	regex                         *regexp.Regexp
	// connect matches CONNECT requests (Envoy's connect_matcher), which
	// path matches never do.
	connect bool
	headers []headerMatcher
	queries []queryMatcher
	grpc    bool // only gRPC requests (content-type application/grpc…)

	// Where it goes: cluster, a weighted pick (weighted), or the cluster
	// a request header names (clusterHeader); or no upstream at all
	// (redirect, direct).
	cluster       *cluster
	weighted      []weightedCluster
	totalWeight   uint64
	clusterHeader string
	redirect      *redirectAction
	direct        *directResponse
	// Rewrites on the way: the path's prefix (prefixRewrite, replacing
	// the matched prefix), or regexRewrite; the authority.
	prefixRewrite     string
	rewritePrefix     bool // prefix_rewrite is set (it may be "")
	regexRewrite      *regexp.Regexp
	regexSubstitution string
	hostRewrite       string
	hostRewriteB      []byte
	// Header mutations, this route's, its virtual host's and its route
	// configuration's together, most specific first.
	requestAdd     []headerAdd
	requestRemove  []string
	responseAdd    []headerAdd
	responseRemove []string
	// timeout bounds the wait for the upstream's response (Envoy's route
	// timeout), across retries; 0 for none, Istio's default.
	timeout time.Duration
	// idleTimeout replaces the manager's stream_idle_timeout for this
	// route's requests (0: the manager's).
	idleTimeout time.Duration
	// honourGRPCTimeout: a request's grpc-timeout is its timeout, within
	// grpcTimeoutMax (0: none) less grpcTimeoutOffset.
	honourGRPCTimeout                 bool
	grpcTimeoutMax, grpcTimeoutOffset time.Duration
	retry                             *retryPolicy
	// bodyLimit is the most of a request body kept so that a retry can
	// send it again; a longer body goes once.
	bodyLimit int64
	mirrors   []mirrorPolicy
	// includeAttemptCount adds x-envoy-attempt-count to upstream requests
	// (the virtual host's include_request_attempt_count).
	includeAttemptCount bool
	// hashPolicies make the request's key for RING_HASH and MAGLEV
	// clusters.
	hashPolicies []hashPolicy
	// filters are the HTTP filters before the router, as this route
	// configures them (typed_per_filter_config over the manager's).
	filters []httpFilter
}

// weightedCluster is one cluster of a weighted_clusters split.
type weightedCluster struct {
	cluster *cluster
	weight  uint64
}

// headerAdd is Envoy's HeaderValueOption: a header and what to do if the
// message has it already.
type headerAdd struct {
	name, value   string // name in lower case
	nameB, valueB []byte // the same, for HTTP/1 heads
	action        addAction
}

// newHeaderAdd is a header to add, name in lower case.
func newHeaderAdd(name, value string, action addAction) headerAdd {
	return headerAdd{name: name, value: value, nameB: []byte(name), valueB: []byte(value), action: action}
}

// addAction is Envoy's HeaderAppendAction.
type addAction uint8

const (
	appendIfExistsOrAdd    addAction = iota // APPEND_IF_EXISTS_OR_ADD, the default
	addIfAbsent                             // ADD_IF_ABSENT
	overwriteIfExistsOrAdd                  // OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfExists                       // OVERWRITE_IF_EXISTS
)

// redirectAction is Envoy's RedirectAction.
type redirectAction struct {
	scheme, host, path, prefixRewrite string
	port                              uint32
	rewritePrefix, stripQuery         bool
	code                              int
}

// directResponse is Envoy's DirectResponseAction.
type directResponse struct {
	code int
	body string
}

// match finds the route for a request, or nil (NR). An absolute-form
// target is matched by its path.
func (rc *routeConfig) match(r requestView, authority []byte, connect bool) *route {
	vh := rc.virtualHost(authority)
	if vh == nil {
		return nil
	}
	path := pathOf(r.target())
	for _, rt := range vh.routes {
		if rt.matches(r, path, connect) {
			return rt
		}
	}
	return nil
}

// pathOf is a request target's path: without its query, and for the
// absolute form (http://host/path) without its scheme and authority.
func pathOf(target []byte) []byte {
	if len(target) > 0 && target[0] != '/' {
		if i := bytes.Index(target, []byte("://")); i > 0 {
			rest := target[i+3:]
			if j := bytes.IndexByte(rest, '/'); j >= 0 {
				target = rest[j:]
			} else {
				target = []byte("/")
			}
		}
	}
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		target = target[:q]
	}
	return target
}

// virtualHost picks a virtual host as Envoy does: an exact domain, then
// the longest suffix wildcard, then the longest prefix wildcard, then "*";
// the authority is tried as it is, then without its port. It allocates
// nothing.
func (rc *routeConfig) virtualHost(authority []byte) *virtualHost {
	if len(rc.hosts) == 1 && len(rc.hosts[0].domains) == 1 && rc.hosts[0].domains[0] == "*" {
		return rc.hosts[0] // the passthrough routes: no need to look
	}
	var buf [256]byte
	host := authority
	if len(host) <= len(buf) {
		host = buf[:len(host)]
		for i, c := range authority {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			host[i] = c
		}
	}
	candidates := [2][]byte{host, nil}
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		candidates[1] = host[:i]
	}
	for _, h := range candidates {
		if h == nil {
			continue
		}
		if vh := rc.exact[string(h)]; vh != nil {
			return vh
		}
	}
	for _, h := range candidates {
		for _, w := range rc.suffixes { // longest first
			if h != nil && len(h) > len(w.domain) && strings.EqualFold(http1.View(h[len(h)-len(w.domain):]), w.domain) {
				return w.vh
			}
		}
	}
	for _, h := range candidates {
		for _, w := range rc.prefixes {
			if h != nil && len(h) > len(w.domain) && strings.EqualFold(http1.View(h[:len(w.domain)]), w.domain) {
				return w.vh
			}
		}
	}
	return rc.any
}

// wildcard is a domain with a "*" at one end: the rest of it, and its
// virtual host.
type wildcard struct {
	domain string
	vh     *virtualHost
}

// index sorts the virtual hosts' domains for virtualHost (once, when the
// configuration is built): exact ones by
// name, wildcards longest first (the first virtual host to name a domain
// keeps it, as Envoy refuses duplicates).
func (rc *routeConfig) index() {
	rc.exact = map[string]*virtualHost{}
	for _, vh := range rc.hosts {
		for _, d := range vh.domains {
			switch {
			case d == "*":
				if rc.any == nil {
					rc.any = vh
				}
			case strings.HasPrefix(d, "*"):
				rc.suffixes = append(rc.suffixes, wildcard{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				rc.prefixes = append(rc.prefixes, wildcard{d[:len(d)-1], vh})
			default:
				if rc.exact[d] == nil {
					rc.exact[d] = vh
				}
			}
		}
	}
	longestFirst := func(a, b wildcard) int { return len(b.domain) - len(a.domain) }
	slices.SortStableFunc(rc.suffixes, longestFirst)
	slices.SortStableFunc(rc.prefixes, longestFirst)
}
