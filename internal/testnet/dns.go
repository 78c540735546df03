package testnet

import (
	"net"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// ExchangeDNS asks server (host:port) over network ("udp" or "tcp") for
// name's records of qtype from inside the namespace, from a socket made as
// the given UID and GID (as DialConn).
func (n *NS) ExchangeDNS(network, server string, uid, gid uint32, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	var resp *dns.Msg
	err := n.Do(func() error {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		c, err := net.DialTimeout(network, server, 2*time.Second)
		unix.Setfsuid(0)
		unix.Setfsgid(0)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, _, err = (&dns.Client{Net: network}).ExchangeWithConn(m, &dns.Conn{Conn: c})
		return err
	})
	return resp, err
}
