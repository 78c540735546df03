package proxy

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeSize is what one splice moves at most: a pipe's default capacity.
const pipeSize = 64 << 10

// pipe is a kernel pipe that bytes pass through between two sockets, never
// entering user space.
type pipe struct{ r, w int }

// pipes are shared by all connections. A connection takes one only while
// bytes are in flight, not while it waits for them, so ten thousand idle
// connections hold no pipes (Go's own splice holds one per blocked copy,
// which would cost four descriptors per idle connection). At most pipeCap
// exist at once; past it, or when the process is out of descriptors, a
// transfer is copied through a buffer instead.
var pipes = sync.Pool{New: newPipe}

var (
	pipeCap         atomic.Int64 // set from the proxy's Limits
	pipesLive       atomic.Int64 // pipes open, pooled or in use
	spliceFallbacks atomic.Uint64
)

func init() { pipeCap.Store(256) }

func newPipe() any {
	if pipesLive.Add(1) > pipeCap.Load() {
		pipesLive.Add(-1)
		return nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		pipesLive.Add(-1)
		return nil
	}
	p := &pipe{r: fds[0], w: fds[1]}
	runtime.SetFinalizer(p, (*pipe).close)
	return p
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
	runtime.SetFinalizer(p, nil)
	pipesLive.Add(-1)
}

// copyBufSize is the buffer small transfers are copied through. A read
// that fills it marks the connection as bulk, and from then on it is
// spliced: for a request or a response of a few hundred bytes, read and
// write cost the kernel less than two splices through a pipe.
const copyBufSize = 16 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// splicer moves bytes from one socket to another: through a pooled buffer
// while they come in small pieces, through a pooled pipe once they come in
// bulk. Either is held only while bytes are in flight.
type splicer struct {
	src, dst syscall.RawConn
	bulk     bool
	pipe     *pipe
	buf      *[]byte
	inPipe   int // bytes waiting in the pipe, or in buf from off on
	off      int
	err      error
	errAtDst bool // err came from writing, not reading
	eof      bool
	noPipe   bool // fillPipe found no pipe to take
	// The callbacks are made once, so the copy loop allocates nothing.
	fill, drain, read, write func(fd uintptr) bool
}

func newSplicer(src, dst *net.TCPConn) (*splicer, error) {
	s := &splicer{}
	var err error
	if s.src, err = src.SyscallConn(); err != nil {
		return nil, err
	}
	if s.dst, err = dst.SyscallConn(); err != nil {
		return nil, err
	}
	s.fill = s.fillPipe
	s.drain = s.drainPipe
	s.read = s.readBuf
	s.write = s.writeBuf
	return s, nil
}

// readBuf is fillPipe's copying twin.
func (s *splicer) readBuf(fd uintptr) bool {
	if s.buf == nil {
		s.buf = buffers.Get().(*[]byte)
	}
	n, err := unix.Read(int(fd), *s.buf)
	switch {
	case err == unix.EAGAIN:
		buffers.Put(s.buf)
		s.buf = nil
		return false
	case err == unix.EINTR:
		return s.readBuf(fd)
	case err != nil:
		s.err, s.errAtDst = err, false
	case n == 0:
		s.eof = true
	}
	s.inPipe, s.off = max(n, 0), 0
	return true
}

// writeBuf is drainPipe's copying twin.
func (s *splicer) writeBuf(fd uintptr) bool {
	for s.inPipe > 0 {
		n, err := unix.Write(int(fd), (*s.buf)[s.off:s.off+s.inPipe])
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil:
			s.err, s.errAtDst = err, true
			return true
		}
		s.inPipe -= n
		s.off += n
	}
	return true
}

// fillPipe runs when src may be readable: it takes a pipe and splices what
// src has into it. On EAGAIN it gives the pipe back and asks to wait.
func (s *splicer) fillPipe(fd uintptr) bool {
	if s.pipe == nil {
		p, _ := pipes.Get().(*pipe)
		if p == nil {
			s.noPipe = true
			return true
		}
		s.pipe = p
	}
	n, err := unix.Splice(int(fd), nil, s.pipe.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	switch {
	case err == unix.EAGAIN:
		pipes.Put(s.pipe)
		s.pipe = nil
		return false
	case err == unix.EINTR:
		return s.fillPipe(fd)
	case err != nil:
		s.err, s.errAtDst = err, false
	case n == 0:
		s.eof = true
	}
	s.inPipe = int(n)
	return true
}

// drainPipe runs when dst may be writable: it splices the pipe's bytes
// into dst until none are left, asking to wait on EAGAIN.
func (s *splicer) drainPipe(fd uintptr) bool {
	for s.inPipe > 0 {
		n, err := unix.Splice(s.pipe.r, nil, int(fd), nil, s.inPipe, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil:
			s.err, s.errAtDst = err, true
			return true
		}
		s.inPipe -= int(n)
	}
	return true
}

// step moves one pipe's worth of what src has to dst, waiting (through the
// runtime's poller, under the sockets' deadlines) for src to have bytes
// and for dst to take them. It returns the bytes moved; eof when src has
// sent FIN; and, with an error, whether it came from dst.
func (s *splicer) step() (n int, eof bool, atDst bool, err error) {
	s.err, s.eof, s.inPipe = nil, false, 0
	fill, drain := s.read, s.write
	if s.bulk {
		fill, drain = s.fill, s.drain
	}
	if err := s.src.Read(fill); err != nil {
		return 0, false, false, err
	}
	if s.noPipe {
		// No pipe to be had: copy this piece instead. The bytes are still
		// waiting in src, so the read does not wait.
		s.noPipe = false
		spliceFallbacks.Add(1)
		fill, drain = s.read, s.write
		if err := s.src.Read(fill); err != nil {
			return 0, false, false, err
		}
	}
	if s.err != nil || s.eof {
		s.release()
		return 0, s.eof, s.errAtDst, s.err
	}
	n = s.inPipe
	if err := s.dst.Write(drain); err != nil {
		s.discard()
		return n - s.inPipe, false, true, err
	}
	if s.err != nil {
		s.discard()
		return n - s.inPipe, false, s.errAtDst, s.err
	}
	if !s.bulk && n == copyBufSize {
		s.bulk = true
	}
	s.release()
	return n, false, false, nil
}

func (s *splicer) release() {
	if s.pipe != nil {
		pipes.Put(s.pipe)
		s.pipe = nil
	}
	if s.buf != nil {
		buffers.Put(s.buf)
		s.buf = nil
	}
}

// discard drops a pipe that still holds bytes: it cannot be reused.
func (s *splicer) discard() {
	if s.pipe != nil && s.inPipe > 0 {
		s.pipe.close()
		s.pipe = nil
	}
	s.release()
}
