package dnsproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream is a name server on loopback, UDP and TCP, that the test
// controls: it counts queries and answers from its zone.
type upstream struct {
	addr    string
	queries atomic.Int64
}

func startUpstream(t *testing.T, zone map[string][]dns.RR) *upstream {
	t.Helper()
	u := &upstream{}
	pc, ln, err := ListenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveZone(t, u, zone, pc, ln)
	u.addr = pc.LocalAddr().String()
	return u
}

// serveZone answers from zone on pc and ln, counting queries in u.
func serveZone(t *testing.T, u *upstream, zone map[string][]dns.RR, pc net.PacketConn, ln net.Listener) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		rrs, ok := zone[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR(". 600 IN SOA a.root. b.root. 1 1800 900 604800 60")
			m.Ns = append(m.Ns, soa)
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncate(dns.MinMsgSize)
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown(); pc.Close(); ln.Close() })
	}
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startProxy runs a Server on loopback in front of upstreams.
func startProxy(t *testing.T, table *Table, upstreams ...string) (*Server, string) {
	t.Helper()
	s, err := New(Config{Upstreams: upstreams, Timeout: 300 * time.Millisecond}, table, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, s.Addrs()[0].String()
}

func ask(t *testing.T, net, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: net, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], net, err)
	}
	return resp
}

func answers(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return strings.Join(out, ",")
}

var meshHosts = []Host{
	{Name: "backend-service.default.svc.cluster.local", Addrs: []netip.Addr{netip.MustParseAddr("10.96.0.20")}},
	{Name: "ratings.shop.svc.cluster.local", Addrs: []netip.Addr{netip.MustParseAddr("10.96.0.30"), netip.MustParseAddr("fd00:96::30")}},
	{Name: "api.partner.example", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}},
}

// TestMeshNames: the table answers a service by the names a pod's
// resolver tries, over UDP and TCP, authoritatively; a name of another
// namespace is not answered by its short name; a known name without an
// address of the family asked is no data, not NXDOMAIN.
func TestMeshNames(t *testing.T) {
	up := startUpstream(t, nil)
	_, addr := startProxy(t, NewTable(meshHosts, "default", "cluster.local"), up.addr)
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			qtype uint16
			rcode int
			want  string
		}{
			{"backend-service", dns.TypeA, dns.RcodeSuccess, "10.96.0.20"},
			{"Backend-Service.default", dns.TypeA, dns.RcodeSuccess, "10.96.0.20"},
			{"backend-service.default.svc", dns.TypeA, dns.RcodeSuccess, "10.96.0.20"},
			{"backend-service.default.svc.cluster.local", dns.TypeA, dns.RcodeSuccess, "10.96.0.20"},
			{"backend-service.default.svc.cluster.local", dns.TypeAAAA, dns.RcodeSuccess, ""},
			{"ratings.shop", dns.TypeAAAA, dns.RcodeSuccess, "fd00:96::30"},
			{"ratings", dns.TypeA, dns.RcodeNameError, ""}, // another namespace: upstream's NXDOMAIN
			{"api.partner.example", dns.TypeA, dns.RcodeSuccess, "192.0.2.7"},
		} {
			m := ask(t, network, addr, c.name, c.qtype)
			if m.Rcode != c.rcode || answers(m) != c.want || c.rcode == dns.RcodeSuccess && !m.Authoritative {
				t.Errorf("%s %s over %s: %s %q (aa %v), want %s %q", c.name, dns.TypeToString[c.qtype], network,
					dns.RcodeToString[m.Rcode], answers(m), m.Authoritative, dns.RcodeToString[c.rcode], c.want)
			}
		}
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("%d queries went upstream, want 1 (\"ratings\" once; then cached)", n)
	}
}

// TestForwardAndCache: a name the table does not know is asked upstream
// once, then answered from the cache with its TTL counted down; a new
// table is answered from at once.
func TestForwardAndCache(t *testing.T) {
	up := startUpstream(t, map[string][]dns.RR{"www.example.org.": {rr(t, "www.example.org. 300 IN A 198.51.100.1")}})
	s, addr := startProxy(t, NewTable(nil, "default", "cluster.local"), up.addr)
	m := ask(t, "udp", addr, "www.example.org", dns.TypeA)
	if answers(m) != "198.51.100.1" || m.Answer[0].Header().Ttl != 300 {
		t.Fatalf("forwarded: %v", m)
	}
	time.Sleep(1100 * time.Millisecond)
	m = ask(t, "tcp", addr, "WWW.example.org", dns.TypeA)
	if answers(m) != "198.51.100.1" || m.Answer[0].Header().Ttl >= 300 {
		t.Fatalf("cached: %v", m)
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("%d upstream queries, want 1", n)
	}
	if s.Stats.CacheHits.Load() != 1 || s.Stats.Forwarded.Load() != 1 {
		t.Errorf("cache hits %d, forwarded %d", s.Stats.CacheHits.Load(), s.Stats.Forwarded.Load())
	}
	s.SetTable(NewTable([]Host{{Name: "www.example.org", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}}}, "default", "cluster.local"))
	if m := ask(t, "udp", addr, "www.example.org", dns.TypeA); answers(m) != "10.0.0.9" {
		t.Errorf("after the table changed: %q", answers(m))
	}
}

// TestUpstreamFailure: a dead first upstream is passed over for the
// next; with none answering the client gets SERVFAIL, in time, and the
// failure is not cached.
func TestUpstreamFailure(t *testing.T) {
	dead := deadUDP(t)
	up := startUpstream(t, map[string][]dns.RR{"a.example.": {rr(t, "a.example. 60 IN A 198.51.100.2")}})
	_, addr := startProxy(t, nil, dead, up.addr)
	if m := ask(t, "udp", addr, "a.example", dns.TypeA); answers(m) != "198.51.100.2" {
		t.Fatalf("with the first upstream dead: %v", m)
	}
	s, addr := startProxy(t, nil, dead)
	start := time.Now()
	for range 2 {
		if m := ask(t, "udp", addr, "b.example", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
			t.Fatalf("no upstream: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
		}
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("SERVFAIL took %s", time.Since(start))
	}
	if s.Stats.Failed.Load() != 2 {
		t.Errorf("failed %d, want 2 (a failure is not cached)", s.Stats.Failed.Load())
	}
}

// deadUDP is a loopback UDP port where nothing answers.
func deadUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // bound, never read: queries time out
	return pc.LocalAddr().String()
}

// TestTruncation: an answer too big for UDP is fetched upstream over TCP;
// a UDP client gets it truncated (TC), a TCP client whole.
func TestTruncation(t *testing.T) {
	var many []dns.RR
	for i := range 60 {
		many = append(many, rr(t, fmt.Sprintf("big.example. 60 IN A 198.51.100.%d", i+1)))
	}
	up := startUpstream(t, map[string][]dns.RR{"big.example.": many})
	_, addr := startProxy(t, nil, up.addr)
	if m := ask(t, "tcp", addr, "big.example", dns.TypeA); len(m.Answer) != 60 || m.Truncated {
		t.Fatalf("over TCP: %d answers, truncated %v", len(m.Answer), m.Truncated)
	}
	if m := ask(t, "udp", addr, "big.example", dns.TypeA); !m.Truncated || len(m.Answer) >= 60 {
		t.Fatalf("over UDP: %d answers, truncated %v", len(m.Answer), m.Truncated)
	}
}

// TestNegativeCache: NXDOMAIN is kept for the SOA's minimum.
func TestNegativeCache(t *testing.T) {
	up := startUpstream(t, nil)
	_, addr := startProxy(t, nil, up.addr)
	for range 3 {
		if m := ask(t, "udp", addr, "nowhere.example", dns.TypeA); m.Rcode != dns.RcodeNameError {
			t.Fatalf("%s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
		}
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("%d upstream queries, want 1", n)
	}
}

func TestParseHosts(t *testing.T) {
	hosts, err := ParseHosts(strings.NewReader("# mesh\n10.96.0.20 backend-service.default.svc.cluster.local backend\nfd00::1 backend # v6 too\n"))
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable(hosts, "default", "cluster.local")
	if as, _ := tb.Lookup("backend."); len(as) != 2 {
		t.Errorf("backend: %v", as)
	}
	if as, _ := tb.Lookup("backend-service"); len(as) != 1 {
		t.Errorf("backend-service: %v", as)
	}
	for in, want := range map[string]string{
		"10.0.0.300 x\n": `line 1: "10.0.0.300" is not an IP address`,
		"\n\n10.0.0.1\n": "line 3: 10.0.0.1 has no name",
	} {
		if _, err := ParseHosts(strings.NewReader(in)); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

func TestBadUpstream(t *testing.T) {
	if _, err := New(Config{Upstreams: []string{"10.0.0.1"}}, nil, nil); err == nil || !strings.Contains(err.Error(), `"10.0.0.1"`) {
		t.Errorf("an upstream without a port: %v", err)
	}
}
