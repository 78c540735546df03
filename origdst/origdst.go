// Package origdst recovers where a captured connection was going before
// netfilter's REDIRECT or DNAT rewrote it.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h), and
// IP6T_SO_ORIGINAL_DST has the same number at the IPv6 level.
const soOriginalDst = 80

// Get returns the original destination of an accepted TCP connection. A
// connection that was not redirected reports its own local address.
func Get(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	// The accepted socket's local address is already known: it says the
	// family, and is the answer when conntrack has no translation.
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	var ap netip.AddrPort
	var opErr error
	err = raw.Control(func(fd uintptr) { ap, opErr = lookup(int(fd), local) })
	if err == nil {
		err = opErr
	}
	return ap, err
}

// FromFD is Get for a raw socket descriptor.
func FromFD(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var local netip.AddrPort
	switch l := sa.(type) {
	case *unix.SockaddrInet6:
		local = netip.AddrPortFrom(netip.AddrFrom16(l.Addr), uint16(l.Port))
	case *unix.SockaddrInet4:
		local = netip.AddrPortFrom(netip.AddrFrom4(l.Addr), uint16(l.Port))
	default:
		return netip.AddrPort{}, fmt.Errorf("original destination: not an IP socket")
	}
	return lookup(fd, local)
}

// lookup asks conntrack through the socket; local is the socket's own
// address, returned when conntrack holds no translation (the connection
// was not redirected).
func lookup(fd int, local netip.AddrPort) (netip.AddrPort, error) {
	var ap netip.AddrPort
	var err error
	if local.Addr().Is6() {
		var sa unix.RawSockaddrInet6
		err = getsockopt(fd, unix.SOL_IPV6, &sa, unix.SizeofSockaddrInet6)
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(sa.Port))
	} else {
		var sa unix.RawSockaddrInet4
		err = getsockopt(fd, unix.SOL_IP, &sa, unix.SizeofSockaddrInet4)
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port(sa.Port))
	}
	if errors.Is(err, unix.ENOENT) {
		return local, nil
	}
	return ap, err
}

func getsockopt[T any](fd, level int, sa *T, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soOriginalDst,
		uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return fmt.Errorf("SO_ORIGINAL_DST: %w", errno)
	}
	return nil
}

// port converts a port as the kernel stores it (network order) to a number.
func port(p uint16) uint16 {
	var b [2]byte
	*(*uint16)(unsafe.Pointer(&b[0])) = p
	return binary.BigEndian.Uint16(b[:])
}
