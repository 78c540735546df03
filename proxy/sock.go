package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
)

// sock is a proxied connection as the handlers read and write it: a TCP
// connection, or TLS over one (a mesh peer's mutual TLS).
type sock interface {
	net.Conn
	CloseWrite() error
	SetLinger(sec int) error
	SyscallConn() (syscall.RawConn, error)
}

// tlsSock is TLS over a TCP connection: reads and writes go through TLS;
// a reset and the liveness look of a pooled connection go to the socket
// under it.
type tlsSock struct {
	*tls.Conn
	tcp *net.TCPConn
}

func (s *tlsSock) SetLinger(sec int) error               { return s.tcp.SetLinger(sec) }
func (s *tlsSock) SyscallConn() (syscall.RawConn, error) { return s.tcp.SyscallConn() }

// CloseWrite sends TLS's close_notify, then the FIN.
func (s *tlsSock) CloseWrite() error {
	err := s.Conn.CloseWrite()
	if e := s.tcp.CloseWrite(); err == nil {
		err = e
	}
	return err
}

// mover moves one half of a flow: step moves what src has to dst.
type mover interface {
	step() (n int, eof bool, atDst bool, err error)
	release()
}

// newMover splices between two TCP sockets; with TLS on either side the
// bytes are copied through a pooled buffer, TLS reading and writing
// them.
func newMover(src, dst sock) (mover, error) {
	s, okS := src.(*net.TCPConn)
	d, okD := dst.(*net.TCPConn)
	if okS && okD {
		return newSplicer(s, d)
	}
	return &copier{src: src, dst: dst}, nil
}

// copier is a splicer's twin for TLS: a read of src, then writes to dst.
type copier struct {
	src, dst sock
	buf      *[]byte
}

func (c *copier) step() (int, bool, bool, error) {
	if c.buf == nil {
		c.buf = buffers.Get().(*[]byte)
	}
	n, err := c.src.Read(*c.buf)
	if n > 0 {
		if _, werr := c.dst.Write((*c.buf)[:n]); werr != nil {
			return 0, false, true, werr
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		return n, n == 0, false, nil
	case err != nil:
		return n, false, false, err
	}
	return n, false, false, nil
}

func (c *copier) release() {
	if c.buf != nil {
		buffers.Put(c.buf)
		c.buf = nil
	}
}
