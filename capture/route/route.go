// Package route installs the policy routing a capture.Plan relies on, over
// rtnetlink (no `ip` command needed in the pod): for TPROXY, "packets with
// the mark look up a table where every destination is local", and for IPv6
// passthrough, the ::6 address on lo.
package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/netns"
)

// Protocol marks the rules and routes shunt adds ("proto 83" in `ip rule`
// and `ip route`), so cleanup removes exactly those.
const Protocol = 83

// RulePriority is where shunt's policy rule goes: before the main table's
// lookup (32766), as `ip rule add` without a priority would put it.
const RulePriority = 32000

// Apply installs the plan's routes and loopback addresses in the namespace
// at path (the caller's when empty). It is idempotent, and returns the
// routes it added, which were not there before, for the caller to remove if
// what needs them fails. skip6 leaves IPv6 out (a kernel without IPv6).
func Apply(path string, p *capture.Plan, skip6 bool) (added []capture.Route, err error) {
	return added, session(path, func(c *conn, lo int) error {
		for _, r := range p.Routes {
			if skip6 && r.Family == capture.IPv6 {
				continue
			}
			newRule, err := c.create(unix.RTM_NEWRULE, ruleMsg(r))
			if err != nil {
				return fmt.Errorf("adding rule fwmark %d lookup %d: %w", r.Mark, r.Table, err)
			}
			newRoute, err := c.create(unix.RTM_NEWROUTE, routeMsg(r, lo))
			if err != nil {
				return fmt.Errorf("adding local default route to table %d: %w", r.Table, err)
			}
			if newRule || newRoute {
				added = append(added, r)
			}
		}
		for _, a := range p.LoopbackAddrs {
			if skip6 && a.Addr().Is6() {
				continue
			}
			if _, err := c.create(unix.RTM_NEWADDR, addrMsg(a, lo)); err != nil {
				return fmt.Errorf("adding %s to lo: %w", a, err)
			}
		}
		return nil
	})
}

// Remove deletes every policy rule, route and address shunt added (those
// with Protocol), whatever their mark and table; absent ones are no error.
func Remove(path string) error {
	return session(path, func(c *conn, _ int) error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			// A rule delete naming only the protocol removes one rule
			// with it; repeat until none is left.
			only := []byte{fam, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			only = attr(only, unix.FRA_PROTOCOL, []byte{Protocol})
			for i := 0; ; i++ {
				err := c.do(unix.RTM_DELRULE, 0, only)
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT) {
					break
				}
				if err != nil || i > 1000 {
					return fmt.Errorf("removing shunt's policy rules: %v", err)
				}
			}
			routes, err := c.dump(unix.RTM_GETROUTE, []byte{fam, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
			if errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			if err != nil {
				return fmt.Errorf("listing routes: %w", err)
			}
			for _, m := range routes {
				if len(m) < 12 || m[5] != Protocol {
					continue
				}
				// Send the route back as a delete: same header and attributes.
				if err := c.do(unix.RTM_DELROUTE, 0, m); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("removing shunt's route: %w", err)
				}
			}
			addrs, err := c.dump(unix.RTM_GETADDR, []byte{fam, 0, 0, 0, 0, 0, 0, 0})
			if err != nil {
				return fmt.Errorf("listing addresses: %w", err)
			}
			for _, m := range addrs {
				if addrIsShunts(m) {
					if err := c.do(unix.RTM_DELADDR, 0, m); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
						return fmt.Errorf("removing shunt's address: %w", err)
					}
				}
			}
		}
		return nil
	})
}

func family(f capture.Family) uint8 {
	if f == capture.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// ruleMsg is "fwmark MARK lookup TABLE proto shunt".
func ruleMsg(r capture.Route) []byte {
	// struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action; u32 flags
	b := []byte{family(r.Family), 0, 0, 0, unix.RT_TABLE_UNSPEC, 0, 0, unix.FR_ACT_TO_TBL, 0, 0, 0, 0}
	b = attr(b, unix.FRA_FWMARK, u32(r.Mark))
	b = attr(b, unix.FRA_FWMASK, u32(0xffffffff))
	b = attr(b, unix.FRA_TABLE, u32(r.Table))
	// An explicit priority makes a repeated add an EEXIST, not a duplicate.
	b = attr(b, unix.FRA_PRIORITY, u32(RulePriority))
	return attr(b, unix.FRA_PROTOCOL, []byte{Protocol})
}

// routeMsg is "local default dev lo table TABLE proto shunt".
func routeMsg(r capture.Route, lo int) []byte {
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags
	b := []byte{family(r.Family), 0, 0, 0, unix.RT_TABLE_UNSPEC, Protocol, unix.RT_SCOPE_HOST, unix.RTN_LOCAL, 0, 0, 0, 0}
	b = attr(b, unix.RTA_TABLE, u32(r.Table))
	return attr(b, unix.RTA_OIF, u32(uint32(lo)))
}

// addrMsg is "ADDR dev lo scope host nodad".
func addrMsg(p netip.Prefix, lo int) []byte {
	fam := uint8(unix.AF_INET)
	if p.Addr().Is6() {
		fam = unix.AF_INET6
	}
	// struct ifaddrmsg: family, prefixlen, flags, scope; u32 index
	b := []byte{fam, uint8(p.Bits()), unix.IFA_F_NODAD, unix.RT_SCOPE_HOST}
	b = binary.NativeEndian.AppendUint32(b, uint32(lo))
	b = attr(b, unix.IFA_LOCAL, p.Addr().AsSlice())
	return attr(b, ifaProto, []byte{Protocol})
}

// ifaProto is IFA_PROTO (Linux 6.1): who added an address. Older kernels
// ignore it, and cleanup then leaves the address, not knowing it shunt's.
const ifaProto = 11

// addrIsShunts reports whether a dumped address carries shunt's protocol.
func addrIsShunts(m []byte) bool {
	for b := m[min(len(m), 8):]; len(b) >= 4; {
		n, typ := int(binary.NativeEndian.Uint16(b)), binary.NativeEndian.Uint16(b[2:])
		if n < 4 || n > len(b) {
			return false
		}
		if typ == ifaProto && n >= 5 {
			return b[4] == Protocol
		}
		b = b[min(len(b), (n+3)&^3):]
	}
	return false
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// attr appends one netlink attribute, padded to four bytes.
func attr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

type conn struct {
	fd  int
	seq uint32
}

func dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &conn{fd: fd}, nil
}

func (c *conn) close() { unix.Close(c.fd) }

// session runs fn with a netlink connection inside the namespace at path,
// and lo's interface index.
func session(path string, fn func(c *conn, lo int) error) error {
	return netns.Do(path, func() error {
		c, err := dial()
		if err != nil {
			return err
		}
		defer c.close()
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		return fn(c, lo.Index)
	})
}

// create adds an object, and says whether it was not there before.
func (c *conn) create(typ uint16, body []byte) (bool, error) {
	err := c.do(typ, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return err == nil, err
}

// dump returns the bodies of every object a dump request lists.
func (c *conn) dump(typ uint16, body []byte) ([][]byte, error) {
	return c.request(typ, unix.NLM_F_DUMP, body)
}

// do sends one change and waits for its acknowledgement; the errors in ok
// are taken as success (EEXIST on an add, ENOENT on a delete).
func (c *conn) do(typ uint16, flags uint16, body []byte, ok ...unix.Errno) error {
	_, err := c.request(typ, flags|unix.NLM_F_ACK, body)
	for _, e := range ok {
		if errors.Is(err, e) {
			return nil
		}
	}
	return err
}

// request sends one message and reads the answer: the objects a dump
// lists, up to its end, or the acknowledgement of a change.
func (c *conn) request(typ, flags uint16, body []byte) ([][]byte, error) {
	c.seq++
	if err := c.send(typ, flags, body); err != nil {
		return nil, err
	}
	var out [][]byte
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch {
			case m.Header.Seq != c.seq:
			case m.Header.Type == unix.NLMSG_DONE:
				return out, nil
			case m.Header.Type == unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
						return nil, unix.Errno(-code)
					}
				}
				return out, nil
			default:
				out = append(out, append([]byte(nil), m.Data...))
			}
		}
	}
}

func (c *conn) send(typ, flags uint16, body []byte) error {
	msg := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = binary.NativeEndian.AppendUint16(msg, flags|unix.NLM_F_REQUEST)
	msg = binary.NativeEndian.AppendUint32(msg, c.seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = append(msg, body...)
	return unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// Undo deletes routes Apply added, after what needed them failed.
func Undo(path string, added []capture.Route) error {
	if len(added) == 0 {
		return nil
	}
	return session(path, func(c *conn, lo int) error {
		var errs []error
		for _, r := range added {
			errs = append(errs, c.do(unix.RTM_DELRULE, 0, ruleMsg(r), unix.ENOENT),
				c.do(unix.RTM_DELROUTE, 0, routeMsg(r, lo), unix.ESRCH))
		}
		return errors.Join(errs...)
	})
}
