package proxy

import (
	"bytes"
	"regexp"
	"strings"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// requestView is what route matching reads of a request, whichever
// protocol it came in: a header by lower-case name (the pseudo-headers
// :method, :authority, :path, :scheme included), and its target.
type requestView interface {
	headerSource
	target() []byte
	downstream() *downstream // the connection it came on
}

// headerSource is what a header matcher reads: a request's or a
// response's headers.
type headerSource interface {
	header(lowerName string) ([]byte, bool)
}

// stringMatcher is Envoy's StringMatcher.
type stringMatcher struct {
	exact, prefix, suffix, contains string
	regex                           *regexp.Regexp
	ignoreCase                      bool
	hasExact                        bool // exact "" is a match on the empty value
}

func (m *stringMatcher) match(v []byte) bool {
	switch {
	case m.regex != nil:
		return m.regex.Match(v)
	case m.hasExact:
		return m.eq(v, m.exact)
	case m.prefix != "":
		return len(v) >= len(m.prefix) && m.eq(v[:len(m.prefix)], m.prefix)
	case m.suffix != "":
		return len(v) >= len(m.suffix) && m.eq(v[len(v)-len(m.suffix):], m.suffix)
	case m.contains != "":
		if m.ignoreCase {
			return containsFold(v, m.contains)
		}
		return bytes.Contains(v, []byte(m.contains))
	}
	return false
}

func (m *stringMatcher) eq(v []byte, s string) bool {
	if m.ignoreCase {
		return len(v) == len(s) && strings.EqualFold(http1.View(v), s)
	}
	return string(v) == s
}

// wholeRegex compiles a safe_regex to match a whole value, as Envoy's
// (RE2's FullMatch) does, not a part of it.
func wholeRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// containsFold says whether v contains s, ignoring ASCII case.
func containsFold(v []byte, s string) bool {
	for i := 0; i+len(s) <= len(v); i++ {
		if strings.EqualFold(http1.View(v[i:i+len(s)]), s) {
			return true
		}
	}
	return false
}

// headerMatcher is Envoy's HeaderMatcher: a value's match, or its
// presence; invert turns it around.
type headerMatcher struct {
	name    string // lower case
	value   *stringMatcher
	present bool // present_match (with no value matcher): the header is there
	absent  bool // present_match false: the header is not there
	invert  bool
}

func (m *headerMatcher) match(r headerSource) bool {
	v, ok := r.header(m.name)
	var res bool
	switch {
	case m.value != nil:
		res = ok && m.value.match(v)
	case m.absent:
		res = !ok
	default:
		res = ok
	}
	return res != m.invert
}

// queryMatcher is Envoy's QueryParameterMatcher, on the raw (undecoded)
// query string.
type queryMatcher struct {
	name  string
	value *stringMatcher
}

func (m *queryMatcher) match(target []byte) bool {
	found := false
	queryParams(target, func(k, v []byte) bool {
		found = string(k) == m.name && (m.value == nil || m.value.match(v)) // no value matcher: present
		return !found
	})
	return found
}

// queryParams calls fn with each raw key and value of a target's query,
// in order, while fn returns true.
func queryParams(target []byte, fn func(k, v []byte) bool) {
	i := bytes.IndexByte(target, '?')
	if i < 0 {
		return
	}
	q := target[i+1:]
	for len(q) > 0 {
		kv := q
		if j := bytes.IndexByte(q, '&'); j >= 0 {
			kv, q = q[:j], q[j+1:]
		} else {
			q = nil
		}
		k, v := kv, []byte(nil)
		if j := bytes.IndexByte(kv, '='); j >= 0 {
			k, v = kv[:j], kv[j+1:]
		}
		if !fn(k, v) {
			return
		}
	}
}

// matches says whether rt takes the request; path is the target's path.
func (rt *route) matches(r requestView, path []byte, connect bool) bool {
	if connect {
		if !rt.connect {
			return false
		}
	} else {
		switch {
		case rt.connect:
			return false
		case rt.regex != nil:
			if !rt.regex.Match(path) {
				return false
			}
		case rt.path != "" || rt.exactPath:
			if !rt.pathEq(path, rt.path) {
				return false
			}
		case rt.separatedPrefix != "":
			p := rt.separatedPrefix
			if len(path) < len(p) || !rt.pathEq(path[:len(p)], p) || len(path) > len(p) && path[len(p)] != '/' {
				return false
			}
		default:
			if len(path) < len(rt.prefix) || !rt.pathEq(path[:len(rt.prefix)], rt.prefix) {
				return false
			}
		}
	}
	if rt.grpc {
		ct, ok := r.header("content-type")
		if !ok || !bytes.HasPrefix(ct, []byte("application/grpc")) {
			return false
		}
	}
	for i := range rt.headers {
		if !rt.headers[i].match(r) {
			return false
		}
	}
	if len(rt.queries) > 0 {
		t := r.target()
		for i := range rt.queries {
			if !rt.queries[i].match(t) {
				return false
			}
		}
	}
	return true
}

func (rt *route) pathEq(a []byte, b string) bool {
	if rt.caseInsensitive {
		return strings.EqualFold(http1.View(a), b)
	}
	return string(a) == b
}
