package proxy

import (
	"bytes"
	"strings"
	"time"
)

// routeConfig is Envoy's RouteConfiguration: virtual hosts chosen by the
// request's authority, each a list of routes tried in order.
type routeConfig struct {
	name  string
	hosts []*virtualHost
}

type virtualHost struct {
	name    string
	domains []string // exact, "*.suffix", "prefix*" or "*"
	routes  []*route
}

// route is one route: a match on the path and where it goes.
type route struct {
	name   string
	prefix string // match: path prefix ("/" for any)
	path   string // match: exact path, when set
	// connect matches CONNECT requests (Envoy's connect_matcher), which
	// path matches never do.
	connect bool
	// cluster is where matched requests go.
	cluster *cluster
	// timeout bounds the wait for the upstream's response (Envoy's route
	// timeout); 0 for none, Istio's default.
	timeout time.Duration
}

// passthroughRoutes is Istio's route for a passthrough chain: every
// request to cl (outbound "allow_any", inbound "default").
func passthroughRoutes(name string, cl *cluster) *routeConfig {
	return &routeConfig{name: name, hosts: []*virtualHost{{name: name, domains: []string{"*"},
		routes: []*route{{name: name, prefix: "/", connect: true, cluster: cl}}}}}
}

// match finds the route for a request, or nil (NR). An absolute-form
// target is matched by its path.
func (rc *routeConfig) match(authority, target []byte, connect bool) *route {
	vh := rc.virtualHost(authority)
	if vh == nil {
		return nil
	}
	path := pathOf(target)
	for _, r := range vh.routes {
		switch {
		case connect:
			if r.connect {
				return r
			}
			continue
		case r.path != "":
			if string(path) == r.path {
				return r
			}
			continue
		}
		if len(path) >= len(r.prefix) && string(path[:len(r.prefix)]) == r.prefix {
			return r
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
// the longest suffix wildcard, then the longest prefix wildcard, then "*".
// A port in the authority is tried with and without.
func (rc *routeConfig) virtualHost(authority []byte) *virtualHost {
	if len(rc.hosts) == 1 && len(rc.hosts[0].domains) == 1 && rc.hosts[0].domains[0] == "*" {
		return rc.hosts[0] // the passthrough routes: no need to look
	}
	host := strings.ToLower(string(authority))
	candidates := []string{host}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		candidates = append(candidates, host[:i])
	}
	var best *virtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range rc.hosts {
		for _, d := range vh.domains {
			for _, h := range candidates {
				rank, n := domainMatch(d, h)
				if rank > bestRank || rank == bestRank && rank > 0 && n > bestLen {
					best, bestRank, bestLen = vh, rank, n
				}
			}
		}
	}
	return best
}

// domainMatch ranks how d matches host: 4 exact, 3 suffix wildcard, 2
// prefix wildcard, 1 "*", 0 not at all; n is the length matched.
func domainMatch(d, host string) (rank, n int) {
	switch {
	case d == "*":
		return 1, 0
	case d == host:
		return 4, len(d)
	case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
		return 3, len(d)
	case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
		return 2, len(d)
	}
	return 0, 0
}
