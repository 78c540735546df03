package http1

import "strconv"

// A chunk is framed in place: its data sits in a buffer at ChunkHeadroom,
// with ChunkTailroom bytes free after it, and FrameChunk writes the size
// line before and the CRLF after, so a chunk goes out in one write.
const (
	ChunkHeadroom = 18 // 16 hex digits and CRLF
	ChunkTailroom = 2
)

// FrameChunk frames the n bytes at buf[ChunkHeadroom:] as one chunk and
// returns the framed bytes (a slice of buf).
func FrameChunk(buf []byte, n int) []byte {
	var size [16]byte
	digits := strconv.AppendInt(size[:0], int64(n), 16)
	start := ChunkHeadroom - 2 - len(digits)
	copy(buf[start:], digits)
	buf[ChunkHeadroom-2], buf[ChunkHeadroom-1] = '\r', '\n'
	end := ChunkHeadroom + n
	buf[end], buf[end+1] = '\r', '\n'
	return buf[start : end+2]
}

// AppendLastChunk appends the last chunk and the trailer section.
func AppendLastChunk(b []byte, trailers []Header) []byte {
	b = append(b, "0\r\n"...)
	for _, t := range trailers {
		b = AppendHeader(b, t.Name, t.Value)
	}
	return append(b, "\r\n"...)
}

// AppendHeader appends one header line.
func AppendHeader(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// AppendHeaderString appends one header line from strings.
func AppendHeaderString(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// AppendStatusLine appends "HTTP/1.1 200 OK\r\n".
func AppendStatusLine(b []byte, minor, code int, reason []byte) []byte {
	b = append(b, "HTTP/1."...)
	b = append(b, byte('0'+minor), ' ')
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	return append(b, "\r\n"...)
}
