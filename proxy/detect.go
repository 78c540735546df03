package proxy

import (
	"bytes"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/proxy/http1"
)

// detection is what a connection's first bytes say, as Envoy's
// http_inspector and tls_inspector read them. The bytes are peeked, not
// read: whichever handler takes the connection sees them all.
type detection struct {
	proto    Protocol
	sni      string   // a TLS ClientHello's server name
	alpn     []string // and the application protocols it offers
	timedOut bool     // the client said too little before the wait ended
}

// peekSize bounds what detection looks at: a request line or a
// ClientHello longer than this is judged on its first peekSize bytes.
const peekSize = 4 << 10

var peekBufs = sync.Pool{New: func() any { return new([peekSize]byte) }}

// detect peeks at c's first bytes, waiting up to wait for enough to tell.
// Too little in time (a server-first protocol: the client waits for the
// server) or anything unrecognised is TCP.
func detect(c *net.TCPConn, wait time.Duration) detection {
	raw, err := c.SyscallConn()
	if err != nil {
		return detection{proto: ProtocolTCP}
	}
	buf := peekBufs.Get().(*[peekSize]byte)
	defer peekBufs.Put(buf)
	var n int
	verdict, final := ProtocolTCP, false
	// peek looks at what has arrived; it says whether that is enough.
	peek := func(fd uintptr) bool {
		for {
			r, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), peekSize,
				uintptr(unix.MSG_PEEK|unix.MSG_DONTWAIT), 0, 0)
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				return false // nothing new yet: wait for more, or the deadline
			case errno != 0 || r == 0:
				final = true
				return true // a reset, or a FIN: the TCP proxy passes either on
			}
			n = int(r)
			verdict, final = classify(buf[:n])
			return final || n == peekSize
		}
	}
	// Most clients have spoken by the time their connection is accepted:
	// look once before paying for a deadline.
	ready := false
	_ = raw.Control(func(fd uintptr) { ready = peek(fd) })
	if !ready {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_ = raw.Read(peek)
		_ = c.SetReadDeadline(time.Time{})
	}
	d := detection{proto: verdict, timedOut: !final && n < peekSize}
	if !final && n == peekSize {
		d.proto = fullVerdict(buf[:n])
	}
	if d.proto == ProtocolTLS {
		d.sni, d.alpn = clientHello(buf[:n])
	}
	return d
}

// h2Preface is what an HTTP/2 client with prior knowledge sends first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// classify judges the bytes so far: final is false while they are the
// start of something that more bytes could still make HTTP or TLS, and
// verdict is then what they are if no more come (TCP).
func classify(b []byte) (verdict Protocol, final bool) {
	switch {
	case len(b) == 0:
		return ProtocolTCP, false
	case b[0] == 0x16:
		return classifyTLS(b)
	case b[0] == 'P' && isPrefix(b, h2Preface):
		if len(b) >= len(h2Preface) {
			return ProtocolHTTP2, true
		}
		return ProtocolTCP, false
	}
	return classifyHTTP1(b)
}

// isPrefix says whether b and s agree over their common length.
func isPrefix(b []byte, s string) bool {
	n := min(len(b), len(s))
	return string(b[:n]) == s[:n]
}

// classifyTLS: a handshake record of TLS 1.0 to 1.3, holding a ClientHello;
// final once the whole record is in (the server name is in it).
func classifyTLS(b []byte) (Protocol, bool) {
	if len(b) < 6 {
		return ProtocolTCP, false
	}
	if b[1] != 3 || b[2] > 4 || b[5] != 1 {
		return ProtocolTCP, true
	}
	record := 5 + (int(b[3])<<8 | int(b[4]))
	return ProtocolTLS, len(b) >= record
}

// classifyHTTP1 reads a request line: a method token, a space, a target,
// a space, HTTP/1.x and the line's end.
func classifyHTTP1(b []byte) (Protocol, bool) {
	i := 0
	for i < len(b) && http1.TokenChar(b[i]) {
		i++
	}
	switch {
	case i == len(b):
		return ProtocolTCP, i > 24 // a method is not that long
	case i == 0 || b[i] != ' ':
		return ProtocolTCP, true
	}
	rest := b[i+1:]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		for _, c := range rest {
			if c < ' ' || c == 0x7f {
				return ProtocolTCP, true
			}
		}
		return ProtocolTCP, false
	}
	for _, c := range rest[:sp] {
		if c < ' ' || c == 0x7f {
			return ProtocolTCP, true
		}
	}
	version := rest[sp+1:]
	const want = "HTTP/1."
	if !isPrefix(version, want) {
		return ProtocolTCP, true
	}
	if len(version) < len(want)+2 {
		return ProtocolTCP, false
	}
	if v := version[len(want)]; v < '0' || v > '9' || version[len(want)+1] != '\r' && version[len(want)+1] != '\n' {
		return ProtocolTCP, true
	}
	return ProtocolHTTP1, true
}

// fullVerdict judges a full peek buffer still undecided: a method and a
// target longer than the buffer is HTTP; anything else is not.
func fullVerdict(b []byte) Protocol {
	if sp := bytes.IndexByte(b, ' '); sp > 0 && sp < 25 && b[sp+1] == '/' {
		return ProtocolHTTP1
	}
	return ProtocolTCP
}

// clientHello reads a ClientHello's server name (SNI) and the
// application protocols it offers (ALPN); what it cannot read is empty.
func clientHello(b []byte) (sni string, alpn []string) {
	// record header (5), handshake type (1) and length (3), version (2),
	// random (32)
	p := 5 + 4 + 2 + 32
	skip := func(lenBytes int) bool {
		if p+lenBytes > len(b) {
			return false
		}
		n := 0
		for _, c := range b[p : p+lenBytes] {
			n = n<<8 | int(c)
		}
		p += lenBytes + n
		return p <= len(b)
	}
	if !skip(1) || !skip(2) || !skip(1) { // session id, cipher suites, compression
		return "", nil
	}
	if p+2 > len(b) {
		return "", nil
	}
	end := min(len(b), p+2+(int(b[p])<<8|int(b[p+1])))
	p += 2
	for p+4 <= end {
		typ, n := int(b[p])<<8|int(b[p+1]), int(b[p+2])<<8|int(b[p+3])
		p += 4
		if p+n > end {
			return sni, alpn
		}
		ext := b[p : p+n]
		switch typ {
		case 0: // server_name: list length, name type, name length, name
			if len(ext) >= 5 && ext[2] == 0 {
				if l := int(ext[3])<<8 | int(ext[4]); 5+l <= len(ext) {
					sni = string(ext[5 : 5+l])
				}
			}
		case 16: // ALPN: list length, then (length, protocol)...
			if len(ext) >= 2 {
				list := ext[2:min(len(ext), 2+(int(ext[0])<<8|int(ext[1])))]
				for len(list) > 0 && 1+int(list[0]) <= len(list) {
					alpn = append(alpn, string(list[1:1+int(list[0])]))
					list = list[1+int(list[0]):]
				}
			}
		}
		p += n
	}
	return sni, alpn
}
