package proxy

import (
	"errors"
	"io"
	"testing"
	"time"
)

// readAsync reads once from r on a goroutine.
func readAsync(r io.Reader, n int) <-chan string {
	ch := make(chan string, 1)
	go func() {
		p := make([]byte, n)
		m, err := r.Read(p)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(p[:m])
	}()
	return ch
}

func within(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the read did not return")
		return ""
	}
}

// TestKeptBodyTries: a retry reads what an earlier try read, then what
// the client sends next; the try it replaced stops at once, even while
// it waits for the client, and what the client sends then is the
// retry's.
func TestKeptBodyTries(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	b := newKeptBody(pr, 1<<20, -1, nil)
	defer b.stop()
	first, _ := b.restart()
	go pw.Write([]byte("abc"))
	if got := within(t, readAsync(first, 10)); got != "abc" {
		t.Fatalf("first try: %q", got)
	}
	waiting := readAsync(first, 10) // the client sends nothing yet
	second, ok := b.restart()
	if !ok {
		t.Fatal("a body within its limit was not restarted")
	}
	if got := within(t, waiting); got != "error: "+errTryOver.Error() {
		t.Fatalf("the try given up read %q", got)
	}
	if got := within(t, readAsync(second, 2)); got != "ab" {
		t.Fatalf("second try: %q", got)
	}
	if got := within(t, readAsync(second, 10)); got != "c" {
		t.Fatalf("second try, on: %q", got)
	}
	next := readAsync(second, 10)
	go func() { pw.Write([]byte("def")); pw.Close() }()
	if got := within(t, next); got != "def" {
		t.Fatalf("second try, what the client sent next: %q", got)
	}
	if got := within(t, readAsync(second, 10)); got != "error: EOF" {
		t.Fatalf("second try at the end: %q", got)
	}
	if b.received() != 6 {
		t.Errorf("received %d, want 6", b.received())
	}
}

// TestKeptBodyOverLimit: a body past its limit is no longer kept: no
// retry of it starts, and what the current try has read is let go.
func TestKeptBodyOverLimit(t *testing.T) {
	pr, pw := io.Pipe()
	b := newKeptBody(pr, 4, -1, nil)
	defer b.stop()
	try, _ := b.restart()
	go func() { pw.Write([]byte("abcdef")); pw.Close() }()
	got, err := io.ReadAll(try)
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("the only try read %q, %v", got, err)
	}
	if _, ok := b.restart(); ok {
		t.Fatal("a body over its limit was restarted")
	}
	if len(b.buf) != 0 {
		t.Errorf("%d bytes still kept of a body over its limit", len(b.buf))
	}
}

// TestKeptBodyEnd: a try ended while it waits for the client returns at
// once; finish interrupts a read of the client under way and waits for
// it.
func TestKeptBodyEnd(t *testing.T) {
	pr, pw := io.Pipe()
	b := newKeptBody(pr, 1<<20, -1, nil)
	try, _ := b.restart()
	waiting := readAsync(try, 10)
	time.Sleep(10 * time.Millisecond)
	try.end()
	if got := within(t, waiting); got != "error: "+errTryOver.Error() {
		t.Fatalf("the ended try read %q", got)
	}
	done := make(chan bool, 1)
	go func() { done <- b.finish(func() { pw.CloseWithError(errors.New("interrupted")) }) }()
	select {
	case whole := <-done:
		if whole {
			t.Error("a body cut short reported whole")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("finish did not return")
	}
}
