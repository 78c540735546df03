package proxy

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// clusterFor is where the route sends this request: its cluster, a
// weighted pick, or the cluster a header names; nil when that header
// names none there is (Envoy's NC).
func (rt *route) clusterFor(r requestView, clusters map[string]*cluster) *cluster {
	switch {
	case len(rt.weighted) > 0:
		return pickWeighted(rt.weighted, rt.totalWeight)
	case rt.clusterHeader != "":
		v, ok := r.header(rt.clusterHeader)
		if !ok {
			return nil
		}
		return clusters[string(v)]
	}
	return rt.cluster
}

// rewritePath is the target with the route's path rewrite applied, and
// whether there was one: prefix_rewrite replaces the matched prefix,
// regex_rewrite the path's matches; the query is kept.
func (rt *route) rewritePath(target []byte, dst []byte) ([]byte, bool) {
	if !rt.rewritePrefix && rt.regexRewrite == nil {
		return nil, false
	}
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	dst = dst[:0]
	if rt.rewritePrefix {
		matched := len(rt.prefix)
		if rt.separatedPrefix != "" {
			matched = len(rt.separatedPrefix)
		}
		matched = min(matched, len(path))
		dst = append(dst, rt.prefixRewrite...)
		dst = append(dst, path[matched:]...)
	} else {
		dst = append(dst, rt.regexRewrite.ReplaceAll(path, []byte(rt.regexSubstitution))...)
	}
	return append(dst, query...), true
}

// location is where a redirect route sends the client, from the request's
// target and authority.
func (rd *redirectAction) location(target []byte, authority string, matchedPrefix int) string {
	scheme := "http"
	if rd.scheme != "" {
		scheme = rd.scheme
	}
	host, port := authority, ""
	if h, p, err := net.SplitHostPort(authority); err == nil {
		host, port = h, p
	}
	if rd.host != "" {
		host, port = rd.host, ""
	}
	if rd.port != 0 {
		port = strconv.Itoa(int(rd.port))
	}
	if scheme == "https" && port == "80" || scheme == "http" && port == "443" {
		port = ""
	}
	path, query := string(target), ""
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i:]
	}
	switch {
	case rd.path != "":
		path = rd.path
		if strings.Contains(path, "?") {
			query = ""
		}
	case rd.rewritePrefix:
		path = rd.prefixRewrite + path[min(matchedPrefix, len(path)):]
	}
	if rd.stripQuery {
		query = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	}
	return scheme + "://" + host + path + query
}

// applyRequestMutations applies the route's request header mutations to
// an HTTP/1 request; added values are the configuration's, not copied.
func applyRequestMutations(req *http1.Request, adds []headerAdd, removes []string) {
	applyHeadMutations(&req.Head, adds, removes)
}

// applyHeadMutations applies header mutations to an HTTP/1 head.
func applyHeadMutations(req *http1.Head, adds []headerAdd, removes []string) {
	if len(removes) > 0 {
		kept := req.Headers[:0]
		for _, hd := range req.Headers {
			if !containsFoldName(removes, hd.Name) {
				kept = append(kept, hd)
			}
		}
		req.Headers = kept
	}
	for i := range adds {
		a := &adds[i]
		_, exists := req.Get(a.name)
		switch {
		case a.action == addIfAbsent && exists, a.action == overwriteIfExists && !exists:
			continue
		case a.action == overwriteIfExistsOrAdd || a.action == overwriteIfExists:
			kept := req.Headers[:0]
			for _, hd := range req.Headers {
				if !strings.EqualFold(http1.View(hd.Name), a.name) {
					kept = append(kept, hd)
				}
			}
			req.Headers = kept
		}
		req.Headers = append(req.Headers, http1.Header{Name: a.nameB, Value: a.valueB})
	}
}

// containsFoldName says whether name is one of names (lower case).
func containsFoldName(names []string, name []byte) bool {
	for _, n := range names {
		if strings.EqualFold(n, http1.View(name)) {
			return true
		}
	}
	return false
}

// applyHeaderMutations applies header mutations to an http.Header (the
// HTTP/2 side, and responses there).
func applyHeaderMutations(h http.Header, adds []headerAdd, removes []string) {
	for _, name := range removes {
		h.Del(name)
	}
	for _, a := range adds {
		_, exists := h[http.CanonicalHeaderKey(a.name)]
		switch {
		case a.action == addIfAbsent && exists, a.action == overwriteIfExists && !exists:
		case a.action == overwriteIfExistsOrAdd || a.action == overwriteIfExists:
			h.Set(a.name, a.value)
		default:
			h.Add(a.name, a.value)
		}
	}
}

// pickWeighted is a cluster of ws picked at random by weight (total, their
// sum).
func pickWeighted(ws []weightedCluster, total uint64) *cluster {
	n := rand.Uint64N(total)
	for _, w := range ws {
		if n < w.weight {
			return w.cluster
		}
		n -= w.weight
	}
	return ws[len(ws)-1].cluster
}
