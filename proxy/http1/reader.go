package http1

import (
	"bytes"
	"errors"
	"io"
)

// Reader buffers one connection's input: heads are found in its buffer and
// copied out to their message; bodies are read through it.
type Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int
	err  error // sticky: the source's error, returned once its bytes are read
}

// DefaultBufferSize is a Reader's buffer unless a head needs more.
const DefaultBufferSize = 4 << 10

// NewReader reads rd through a buffer of size bytes (DefaultBufferSize if
// size is not positive); it grows, to MaxHeadBytes, only for a larger head.
func NewReader(rd io.Reader, size int) *Reader {
	if size <= 0 {
		size = DefaultBufferSize
	}
	return &Reader{rd: rd, buf: make([]byte, size)}
}

// Reset makes r read rd afresh, keeping its buffer.
func (r *Reader) Reset(rd io.Reader) {
	r.rd, r.r, r.w, r.err = rd, 0, 0, nil
}

// Buffered is how many bytes have been read from the source but not yet
// consumed.
func (r *Reader) Buffered() int { return r.w - r.r }

// Peek returns the buffered bytes without consuming them.
func (r *Reader) Peek() []byte { return r.buf[r.r:r.w] }

// Discard consumes n buffered bytes.
func (r *Reader) Discard(n int) { r.r += min(n, r.w-r.r) }

// Fill reads once from the source into free buffer space, after moving the
// unread bytes to the front; it returns the source's error (for good, once
// the source has returned one), whatever bytes are still buffered.
func (r *Reader) Fill() error {
	if r.err != nil {
		return r.err
	}
	if r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	if r.w == len(r.buf) {
		return errors.New("http1: buffer full")
	}
	n, err := r.rd.Read(r.buf[r.w:])
	r.w += n
	if err != nil {
		r.err = err
		if n == 0 {
			return err
		}
	}
	return nil
}

// Read reads buffered bytes first, then straight from the source when p
// is at least as large as the buffer.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.r == r.w {
		if r.err != nil {
			return 0, r.err
		}
		if len(p) >= len(r.buf) {
			n, err := r.rd.Read(p)
			if err != nil {
				r.err = err
			}
			return n, err
		}
		if err := r.Fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// ReadRequest reads the next request head into req, replacing what it
// held. At a clean end of input, between messages, it returns io.EOF.
func (r *Reader) ReadRequest(req *Request) error {
	head, err := r.readHead(&req.raw)
	if err != nil {
		return err
	}
	return parseRequest(req, head)
}

// ReadResponse reads the next response head into resp.
func (r *Reader) ReadResponse(resp *Response) error {
	head, err := r.readHead(&resp.raw)
	if err != nil {
		return err
	}
	return parseResponse(resp, head)
}

// readHead finds a complete head (up to the empty line) and copies it
// into *raw; it consumes the head from the buffer.
func (r *Reader) readHead(raw *[]byte) ([]byte, error) {
	// Empty lines before a request line are ignored (RFC 9112 2.2), a few.
	for skipped := 0; ; {
		b := r.buf[r.r:r.w]
		switch {
		case len(b) == 0 || len(b) == 1 && b[0] == '\r':
			// need more bytes
		case b[0] == '\n':
			r.r++
			skipped++
		case b[0] == '\r' && b[1] == '\n':
			r.r += 2
			skipped++
		default:
			return r.headAfterBlanks(raw)
		}
		if skipped > 4 {
			return nil, protoErr("empty lines before the start line")
		}
		if r.r < r.w && !(r.w-r.r == 1 && r.buf[r.r] == '\r') {
			continue
		}
		if err := r.Fill(); err != nil {
			if err == io.EOF && r.r == r.w {
				return nil, io.EOF
			}
			return nil, truncated(err)
		}
	}
}

func (r *Reader) headAfterBlanks(raw *[]byte) ([]byte, error) {
	searched := 0
	for {
		data := r.buf[r.r:r.w]
		if end := headEnd(data, searched); end > 0 {
			if end > MaxHeadBytes {
				return nil, ErrHeadTooLarge
			}
			*raw = append((*raw)[:0], data[:end]...)
			r.r += end
			return *raw, nil
		}
		if len(data) >= MaxHeadBytes {
			return nil, ErrHeadTooLarge
		}
		searched = max(0, len(data)-3)
		if r.r > 0 || r.w == len(r.buf) {
			r.grow()
		}
		if err := r.Fill(); err != nil {
			return nil, truncated(err)
		}
	}
}

// grow makes room for a head: unread bytes to the front and, when the
// buffer is full, a larger buffer (up to MaxHeadBytes and a little).
func (r *Reader) grow() {
	if r.w-r.r < len(r.buf) {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
		return
	}
	nb := make([]byte, min(2*len(r.buf), MaxHeadBytes+4))
	r.w = copy(nb, r.buf[r.r:r.w])
	r.r = 0
	r.buf = nb
}

// truncated is the error for input that ends inside a head.
func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// headEnd is the length of the head at the start of b, through the empty
// line that ends it (CRLF CRLF, or a bare LF for either), or 0 if b does
// not hold it all; from says where the search may start.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}
