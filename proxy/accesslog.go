package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shunt-dev/shunt/proxy/accesslog"
)

// AccessLogFormat compiles an access log format as the command line and
// Config give it: "text" or "envoy" (Envoy's default format), "istio"
// (Istio's TEXT format), "json" (Istio's JSON fields), a JSON object of
// format strings (Envoy's json_format), or a format string of Envoy's
// command operators. A format string without a newline at its end gets
// one, as Istio's accessLogFormat does.
func AccessLogFormat(s string) (*accesslog.Format, error) {
	switch s {
	case "", "text", "envoy":
		return accesslog.Compile(accesslog.EnvoyDefault)
	case "istio":
		return accesslog.Compile(accesslog.IstioDefault)
	case "json":
		return accesslog.CompileJSON(accesslog.JSONDefault)
	}
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		fields, err := jsonFormatFields(s)
		if err != nil {
			return nil, err
		}
		return accesslog.CompileJSON(fields)
	}
	if !strings.Contains(s, "%") {
		return nil, fmt.Errorf("%q is not text, envoy, istio, json, a JSON object or a format string with %%OPERATORS%%", s)
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return accesslog.Compile(s)
}

// jsonFormatFields reads a JSON object of string values, keeping its
// keys' order.
func jsonFormatFields(s string) ([]accesslog.Field, error) {
	d := json.NewDecoder(strings.NewReader(s))
	if _, err := d.Token(); err != nil {
		return nil, fmt.Errorf("JSON format: %w", err)
	}
	var fields []accesslog.Field
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("JSON format: %w", err)
		}
		var v string
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("JSON format: key %q: its value must be a format string", k)
		}
		fields = append(fields, accesslog.Field{Key: k.(string), Format: v})
	}
	if _, err := d.Token(); err != nil {
		return nil, fmt.Errorf("JSON format: %w", err)
	}
	if d.More() || d.InputOffset() < int64(len(bytes.TrimSpace([]byte(s)))) {
		return nil, errors.New("JSON format: text after the object")
	}
	return fields, nil
}

// accessLog writes records through a buffer flushed every flushEvery, so
// a busy proxy makes few write calls; Close flushes what is left.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	file io.Closer // a file the proxy opened, closed with it
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

// logger is one access_log entry: a format and where it writes.
type logger struct {
	sink   *accessLog
	format *accesslog.Format
}

// writeAll writes r to every logger.
func writeAll(logs []logger, r *accesslog.Record) {
	for _, l := range logs {
		l.sink.write(l.format, r)
	}
}

const flushEvery = 100 * time.Millisecond

// newAccessLog makes a sink on w; start runs its flusher.
func newAccessLog(w io.Writer) *accessLog {
	l := &accessLog{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && f != os.Stdout && f != os.Stderr {
		l.file = f
	}
	return l
}

func (l *accessLog) start() { go l.flusher() }

// closeFile closes the file the sink writes to, if the proxy opened it.
func (l *accessLog) closeFile() {
	if l.file != nil {
		l.file.Close()
	}
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

// Close stops the flusher (started) and writes out the buffer.
func (l *accessLog) Close() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	_ = l.w.Flush()
	l.mu.Unlock()
}

func (l *accessLog) write(format *accesslog.Format, r *accesslog.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = format.Append(l.buf[:0], r)
	l.writeLine(l.buf)
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
