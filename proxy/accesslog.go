package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Entry is one connection's access log record.
type Entry struct {
	Start         time.Time
	Direction     Direction
	OriginalDst   netip.AddrPort
	Downstream    netip.AddrPort // the peer that connected
	UpstreamLocal netip.AddrPort // the proxy's end of the upstream connection
	BytesReceived int64          // from the downstream peer
	BytesSent     int64          // back to it
	Duration      time.Duration
	Result        Result
	Detail        string // why it failed or was reset, when it did
}

// accessLog writes entries through a buffer flushed every flushEvery, so a
// busy proxy makes few write calls; Close flushes what is left.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	json bool
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

const flushEvery = 100 * time.Millisecond

func newAccessLog(w io.Writer, format string) *accessLog {
	if w == nil {
		return nil
	}
	l := &accessLog{w: bufio.NewWriterSize(w, 64<<10), json: format == "json", stop: make(chan struct{}), done: make(chan struct{})}
	go l.flusher()
	return l
}

func (l *accessLog) flusher() {
	defer close(l.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.mu.Lock()
			_ = l.w.Flush()
			l.mu.Unlock()
		case <-l.stop:
			return
		}
	}
}

// Close stops the flusher and writes out the buffer.
func (l *accessLog) Close() {
	if l == nil {
		return
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	_ = l.w.Flush()
	l.mu.Unlock()
}

func (l *accessLog) write(e *Entry) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.json {
		b, _ := json.Marshal(map[string]any{
			"start_time": e.Start.UTC().Format(time.RFC3339Nano), "direction": e.Direction.String(),
			"original_dst": e.OriginalDst.String(), "downstream_remote": e.Downstream.String(),
			"upstream_local": e.UpstreamLocal.String(), "bytes_received": e.BytesReceived, "bytes_sent": e.BytesSent,
			"duration_ms": e.Duration.Milliseconds(), "result": e.Result.String(), "detail": e.Detail,
		})
		l.writeLine(append(b, '\n'))
		return
	}
	l.buf = formatText(l.buf[:0], e)
	l.writeLine(l.buf)
}

// formatText is the text line: Envoy's start-time bracket, then fields a
// person and awk can both read.
//
//	[2026-11-21T15:04:05.123Z] outbound 10.96.0.10:10000 result=ok bytes_received=78 bytes_sent=230 duration_ms=3 upstream_local=10.1.0.5:41234 downstream_remote=10.1.0.5:55012
func formatText(b []byte, e *Entry) []byte {
	b = append(b, '[')
	b = e.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, "] "...)
	b = append(b, e.Direction.String()...)
	b = append(b, ' ')
	b = appendAddr(b, e.OriginalDst)
	b = append(b, " result="...)
	b = append(b, e.Result.String()...)
	b = append(b, " bytes_received="...)
	b = strconv.AppendInt(b, e.BytesReceived, 10)
	b = append(b, " bytes_sent="...)
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, " duration_ms="...)
	b = strconv.AppendInt(b, e.Duration.Milliseconds(), 10)
	b = append(b, " upstream_local="...)
	b = appendAddr(b, e.UpstreamLocal)
	b = append(b, " downstream_remote="...)
	b = appendAddr(b, e.Downstream)
	if e.Detail != "" {
		b = append(b, " detail="...)
		b = strconv.AppendQuote(b, e.Detail)
	}
	return append(b, '\n')
}

// appendAddr writes "-" for an address the connection never had.
func appendAddr(b []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return append(b, '-')
	}
	return a.AppendTo(b)
}

// atomicWrite is the most a write to a pipe may carry and still not be
// interleaved with another process's (PIPE_BUF): workers share stdout.
const atomicWrite = 4096

// writeLine buffers a whole line, flushing first if it would carry the
// buffer past one atomic write, so that every write holds whole lines.
func (l *accessLog) writeLine(b []byte) {
	if l.w.Buffered()+len(b) > atomicWrite {
		_ = l.w.Flush()
	}
	_, _ = l.w.Write(b)
}
