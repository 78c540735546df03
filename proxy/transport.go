package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
)

// upstreamProtocol is the HTTP a cluster speaks to its endpoints, as
// Envoy's HttpProtocolOptions say it.
type upstreamProtocol uint8

const (
	upstreamDownstream upstreamProtocol = iota // use_downstream_protocol_config: as the request came (Istio's passthrough)
	upstreamHTTP1                              // explicit_http_config http_protocol_options (Envoy's default)
)

// transport is the cluster's pool for requests that came over HTTP/2,
// sent upstream over HTTP/2 (h2c, multiplexed: gRPC) or HTTP/1.1 (kept
// alive), bounded as the HTTP/1 pools are.
func (c *cluster) transport(p *Proxy, dir Direction, h2 bool) *http.Transport {
	i := 0
	if h2 {
		i = 1
	}
	if t := c.transports[i].Load(); t != nil {
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.transports[i].Load(); t != nil {
		return t
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			if !c.cb.newConnection() {
				return nil, errOverflow
			}
			ctx, cancel := c.dialContext(ctx)
			defer cancel()
			var conn net.Conn
			tcp, err := p.dial(ctx, dir, c, ap)
			conn = tcp
			if t := c.tlsFor(ap); err == nil && t != nil {
				proto := ProtocolHTTP1
				if h2 {
					proto = ProtocolHTTP2
				}
				var s *tlsSock
				if s, err = p.tlsClient(ctx, tcp, t, t.alpnFor(proto)); err != nil {
					reset(tcp)
				}
				conn = s
			}
			if err != nil {
				c.cb.connections.Add(-1)
				c.stats.cxConnectFail.Add(1)
				return nil, err // not a typed nil in the interface
			}
			c.stats.cxTotal.Add(1)
			return &countedUpstream{Conn: conn, b: &c.cb}, nil
		},
		MaxIdleConnsPerHost: c.poolLimits.maxIdle,
		IdleConnTimeout:     c.poolLimits.idleTimeout,
		DisableCompression:  true,
		Protocols:           new(http.Protocols),
	}
	if h2 {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	c.transports[i].Store(t)
	return t
}

// closeTransports closes the idle connections of the cluster's HTTP/2
// side's pools.
func (c *cluster) closeTransports() {
	for i := range c.transports {
		if t := c.transports[i].Load(); t != nil {
			t.CloseIdleConnections()
		}
	}
}

// withLocalAddr records in *local the local address of the upstream
// connection a request goes out on.
func withLocalAddr(ctx context.Context, local *netip.AddrPort) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		*local = addrPort(i.Conn.LocalAddr())
	}})
}
