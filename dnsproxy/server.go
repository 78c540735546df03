package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// localTTL is the TTL of the answers from the mesh's table (Istio's).
const localTTL = 30

// Config is how a Server forwards what its table does not answer.
type Config struct {
	// Upstreams are the name servers (host:port) tried in order: the
	// pod's resolv.conf's.
	Upstreams []string
	// Timeout bounds one upstream query (2 s when zero).
	Timeout time.Duration
	// Dial opens the connection an upstream query goes on ("udp" or
	// "tcp"); a net.Dialer's when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Stats count what a Server did.
type Stats struct {
	Queries, Local, CacheHits, Forwarded, Failed atomic.Int64
}

// Server is the DNS proxy: a dns.Handler over UDP and TCP.
type Server struct {
	table     atomic.Pointer[Table]
	upstreams []string
	udp, tcp  *dns.Client
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout   time.Duration
	cache     *cache
	log       *slog.Logger
	Stats     Stats

	mu      sync.Mutex
	servers []*dns.Server
}

// New makes a server answering from table (replaced later by SetTable)
// and forwarding to cfg's upstreams.
func New(cfg Config, table *Table, log *slog.Logger) (*Server, error) {
	for _, u := range cfg.Upstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			return nil, fmt.Errorf("DNS upstream %q: not an address and port: %v", u, err)
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	s := &Server{upstreams: cfg.Upstreams, cache: newCache(), log: log, dial: cfg.Dial, timeout: cfg.Timeout,
		udp: &dns.Client{Net: "udp", Timeout: cfg.Timeout, UDPSize: dns.DefaultMsgSize},
		tcp: &dns.Client{Net: "tcp", Timeout: cfg.Timeout}}
	s.table.Store(table)
	return s, nil
}

// SetTable makes t the table answered from, at once.
func (s *Server) SetTable(t *Table) { s.table.Store(t) }

// ServeDNS answers one query: from the table, the cache, or upstream;
// SERVFAIL when no upstream answers.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.Stats.Queries.Add(1)
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	resp := s.answer(req, udp)
	if udp {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("DNS reply not sent", "to", w.RemoteAddr(), "err", err)
	}
}

func (s *Server) answer(req *dns.Msg, udp bool) *dns.Msg {
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return reply(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass == dns.ClassINET && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		if addrs, ok := s.table.Load().Lookup(q.Name); ok {
			s.Stats.Local.Add(1)
			return local(req, q, addrs)
		}
	}
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass}
	if o := req.IsEdns0(); o != nil {
		key.dnssec = o.Do()
	}
	now := time.Now()
	if m := s.cache.get(key, now); m != nil {
		s.Stats.CacheHits.Add(1)
		m.Id = req.Id
		return m
	}
	s.Stats.Forwarded.Add(1)
	m, err := s.forward(req, udp)
	if err != nil {
		s.Stats.Failed.Add(1)
		s.log.Debug("DNS upstreams failed", "name", q.Name, "type", dns.TypeToString[q.Qtype], "err", err)
		return reply(req, dns.RcodeServerFailure)
	}
	s.cache.put(key, m, now)
	m.Id = req.Id
	return m
}

// forward asks the upstreams in turn; an answer truncated over UDP is
// asked again over TCP.
func (s *Server) forward(req *dns.Msg, udp bool) (*dns.Msg, error) {
	if len(s.upstreams) == 0 {
		return nil, errors.New("no upstream name server")
	}
	q := req.Copy()
	q.Id = dns.Id()
	var errs []error
	for _, u := range s.upstreams {
		m, err := s.exchange(s.udp, q, u)
		if err == nil && m.Truncated {
			m, err = s.exchange(s.tcp, q, u)
		}
		if err == nil && m.Rcode != dns.RcodeServerFailure && m.Rcode != dns.RcodeRefused {
			return m, nil
		}
		if err == nil {
			err = fmt.Errorf("%s answered %s", u, dns.RcodeToString[m.Rcode])
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// exchange asks upstream u over c's network, on a connection of Dial's.
func (s *Server) exchange(c *dns.Client, q *dns.Msg, u string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	conn, err := s.dial(ctx, c.Net, u)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(s.timeout))
	m, _, err := c.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: conn, UDPSize: c.UDPSize})
	return m, err
}

// local is the table's answer: the addresses of the question's family,
// maybe none (the name is known: no data, not NXDOMAIN).
func local(req *dns.Msg, q dns.Question, addrs []netip.Addr) *dns.Msg {
	m := reply(req, dns.RcodeSuccess)
	m.Authoritative = true
	for _, a := range addrs {
		h := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: localTTL}
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			h.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: h, A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6():
			h.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: h, AAAA: a.AsSlice()})
		}
	}
	return m
}

func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// udpSize is the largest UDP answer the client takes.
func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil && o.UDPSize() > dns.MinMsgSize {
		return int(o.UDPSize())
	}
	return dns.MinMsgSize
}

// Listen binds addr over UDP and TCP; Serve then answers on them.
func (s *Server) Listen(addr string) error {
	pc, ln, err := ListenPair(addr)
	if err != nil {
		return fmt.Errorf("DNS proxy: %w", err)
	}
	s.Attach(pc, ln)
	return nil
}

// ListenPair binds UDP and TCP on one address. When addr's port is 0
// the kernel picks the UDP port, and that port may be taken for TCP (by
// any connection's ephemeral end), so a few picks are tried.
func ListenPair(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	tries := 1
	if port == "0" {
		tries = 20
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i+1 >= tries {
			return nil, nil, err
		}
	}
}

// Attach has Serve answer on sockets bound elsewhere.
func (s *Server) Attach(pc net.PacketConn, ln net.Listener) {
	s.mu.Lock()
	s.servers = append(s.servers, &dns.Server{PacketConn: pc, Handler: s}, &dns.Server{Listener: ln, Handler: s})
	s.mu.Unlock()
}

// Addrs are the bound addresses, UDP and TCP in turn.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, srv := range s.servers {
		if srv.PacketConn != nil {
			out = append(out, srv.PacketConn.LocalAddr())
		} else {
			out = append(out, srv.Listener.Addr())
		}
	}
	return out
}

// Serve answers on what Listen bound until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, srv := range servers {
		_ = srv.Shutdown()
		// A server not yet started is not shut down: its socket's close
		// ends it.
		if srv.PacketConn != nil {
			srv.PacketConn.Close()
		} else {
			srv.Listener.Close()
		}
	}
	return err
}
