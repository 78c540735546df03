package dnsproxy

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Bounds of the cache: how long an answer is kept at most (whatever its
// TTL says), how long a negative answer without an SOA is, and how many
// answers are kept.
const (
	maxCacheTTL      = time.Hour
	negativeCacheTTL = 30 * time.Second
	maxCacheEntries  = 10000
)

type cacheKey struct {
	name          string // lower case
	qtype, qclass uint16
	dnssec        bool // the query's DO bit: the answer differs
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// cache keeps upstream answers for their TTL.
type cache struct {
	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

func newCache() *cache { return &cache{entries: map[cacheKey]cacheEntry{}} }

// get returns a copy of the answer for k, its TTLs counted down by the
// time it was kept; nil if there is none, or it expired.
func (c *cache) get(k cacheKey, now time.Time) *dns.Msg {
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.expires) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return m
}

// put keeps m for k as long as its TTL says: the least of its records',
// or, for an answer with none (NXDOMAIN, no data), its SOA's minimum.
// Failures and truncated answers are not kept.
func (c *cache) put(k cacheKey, m *dns.Msg, now time.Time) {
	if m.Truncated || m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return
	}
	ttl, ok := answerTTL(m)
	if !ok || ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCacheEntries {
		for key, e := range c.entries {
			if !now.Before(e.expires) || len(c.entries) >= maxCacheEntries {
				delete(c.entries, key) // the expired, else any one (map order)
			}
			if len(c.entries) < maxCacheEntries*9/10 {
				break
			}
		}
	}
	c.entries[k] = cacheEntry{msg: m.Copy(), stored: now, expires: now.Add(ttl)}
}

// answerTTL is how long m may be kept.
func answerTTL(m *dns.Msg) (time.Duration, bool) {
	least, found := uint32(0), false
	for _, rr := range m.Answer {
		if !found || rr.Header().Ttl < least {
			least, found = rr.Header().Ttl, true
		}
	}
	if !found { // negative: RFC 2308, the SOA's minimum within its TTL
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				least, found = min(soa.Minttl, soa.Hdr.Ttl), true
			}
		}
		if !found {
			return negativeCacheTTL, true
		}
	}
	return min(time.Duration(least)*time.Second, maxCacheTTL), true
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
