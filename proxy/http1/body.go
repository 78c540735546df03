package http1

import (
	"bytes"
	"errors"
	"io"
)

// Framing is how a message's body is delimited.
type Framing uint8

const (
	NoBody     Framing = iota
	Length             // Content-Length bytes
	Chunked            // chunked transfer coding, maybe with trailers
	UntilClose         // everything until the sender closes
)

// RequestFraming is how req's body is delimited.
func RequestFraming(req *Request) Framing {
	switch {
	case req.Chunked:
		return Chunked
	case req.ContentLength > 0:
		return Length
	}
	return NoBody
}

// ResponseFraming is how the body of resp, the answer to a request of
// the given method, is delimited (RFC 9112 6.3).
func ResponseFraming(resp *Response, method []byte) Framing {
	switch {
	case equalFold(method, "head") || resp.Code < 200 || resp.Code == 204 || resp.Code == 304:
		return NoBody
	case resp.Chunked:
		return Chunked
	case resp.ContentLength == 0:
		return NoBody
	case resp.ContentLength > 0:
		return Length
	}
	return UntilClose
}

// ErrBodyTruncated is a body that ended, with its connection, before its
// framing said it would.
var ErrBodyTruncated = errors.New("http1: connection closed inside the body")

// Body reads one message's body from a Reader, undoing chunked coding.
type Body struct {
	r         *Reader
	framing   Framing
	remaining int64 // Length: bytes left; Chunked: bytes left in this chunk
	state     chunkState
	err       error
	trailers  Head // the trailer section, when a chunked body has one
}

type chunkState uint8

const (
	chunkSize chunkState = iota // a size line is next
	chunkData                   // inside a chunk
	chunkEnd                    // the CRLF after a chunk's data is next
	chunkDone
)

// Reset makes b read a body of the given framing from r; length is the
// Content-Length for Length framing.
func (b *Body) Reset(r *Reader, f Framing, length int64) {
	b.r, b.framing, b.remaining, b.state, b.err = r, f, length, chunkSize, nil
	b.trailers.Headers = b.trailers.Headers[:0]
	if f == NoBody || f == Length && length <= 0 {
		b.framing, b.err = NoBody, io.EOF
	}
}

// Framing is the body's framing.
func (b *Body) Framing() Framing { return b.framing }

// Trailers are the chunked body's trailer fields, once Read has returned
// io.EOF; valid until the next Reset.
func (b *Body) Trailers() []Header { return b.trailers.Headers }

// Done says the body has been read to its end.
func (b *Body) Done() bool { return b.err == io.EOF }

// Read reads the body's content.
func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int
	switch b.framing {
	case Length:
		n, b.err = b.readLength(p)
	case Chunked:
		n, b.err = b.readChunked(p)
	case UntilClose:
		n, b.err = b.r.Read(p)
	}
	if b.err != nil && n > 0 && b.err == io.EOF {
		return n, nil // EOF on the next call
	}
	return n, b.err
}

func (b *Body) readLength(p []byte) (int, error) {
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.r.Read(p)
	b.remaining -= int64(n)
	switch {
	case b.remaining == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, ErrBodyTruncated
	}
	return n, err
}

func (b *Body) readChunked(p []byte) (int, error) {
	for {
		switch b.state {
		case chunkSize:
			if err := b.readSize(); err != nil {
				return 0, err
			}
		case chunkData:
			if int64(len(p)) > b.remaining {
				p = p[:b.remaining]
			}
			n, err := b.r.Read(p)
			b.remaining -= int64(n)
			if b.remaining == 0 {
				b.state = chunkEnd
			}
			if err == io.EOF {
				err = ErrBodyTruncated
			}
			if n > 0 || err != nil {
				return n, err
			}
		case chunkEnd:
			if err := b.expectCRLF(); err != nil {
				return 0, err
			}
			b.state = chunkSize
		case chunkDone:
			return 0, io.EOF
		}
	}
}

// line returns the next line in the buffer, without its CRLF, filling as
// needed; a line longer than the buffer is refused.
func (b *Body) line() ([]byte, error) {
	for searched := 0; ; {
		buf := b.r.Peek()
		if i := bytes.IndexByte(buf[searched:], '\n'); i >= 0 {
			i += searched
			if i == 0 || buf[i-1] != '\r' {
				return nil, protoErr("chunk line without CRLF")
			}
			b.r.Discard(i + 1)
			return buf[:i-1], nil
		}
		searched = len(buf)
		if len(buf) == len(b.r.buf) {
			return nil, protoErr("chunk line too long")
		}
		if err := b.r.Fill(); err != nil {
			return nil, bodyErr(err)
		}
	}
}

func bodyErr(err error) error {
	if err == io.EOF {
		return ErrBodyTruncated
	}
	return err
}

// readSize reads a chunk-size line: hex digits, then extensions, ignored.
func (b *Body) readSize() error {
	line, err := b.line()
	if err != nil {
		return err
	}
	var size int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i == 15 {
			return protoErr("chunk size too large")
		}
		size = size<<4 | int64(d)
	}
	if i == 0 {
		return protoErr("malformed chunk size")
	}
	if ext := trimOWS(line[i:]); len(ext) > 0 && ext[0] != ';' {
		return protoErr("malformed chunk size")
	}
	if size > 0 {
		b.remaining, b.state = size, chunkData
		return nil
	}
	return b.readTrailers()
}

// readTrailers reads the trailer section after the last chunk.
func (b *Body) readTrailers() error {
	head, err := b.r.readTrailerSection(&b.trailers.raw)
	if err != nil {
		return err
	}
	if err := b.trailers.parseFields(head); err != nil {
		return err
	}
	b.state = chunkDone
	return nil
}

func (b *Body) expectCRLF() error {
	line, err := b.line()
	if err != nil {
		return err
	}
	if len(line) != 0 {
		return protoErr("chunk data longer than its size")
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// readTrailerSection reads the fields after a last chunk, through the
// empty line, into *raw (empty when there are none).
func (r *Reader) readTrailerSection(raw *[]byte) ([]byte, error) {
	for r.w-r.r < 2 {
		if err := r.Fill(); err != nil {
			return nil, bodyErr(err)
		}
	}
	if r.buf[r.r] == '\n' {
		return nil, protoErr("chunk line without CRLF")
	}
	if r.buf[r.r] == '\r' && r.buf[r.r+1] == '\n' {
		r.r += 2
		*raw = (*raw)[:0]
		return *raw, nil
	}
	head, err := r.headAfterBlanks(raw)
	if err == io.ErrUnexpectedEOF {
		err = ErrBodyTruncated
	}
	return head, err
}
