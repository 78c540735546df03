package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// TestSpliceFallsBackToCopying: with no pipe to be had (the cap reached,
// or no descriptors), a bulk transfer is copied through a buffer instead,
// every byte intact, and counted.
func TestSpliceFallsBackToCopying(t *testing.T) {
	saved := pipeCap.Load()
	pipeCap.Store(0)
	defer pipeCap.Store(saved)
	// Drain the pool of pipes made before the cap dropped.
	for {
		p, _ := pipes.Get().(*pipe)
		if p == nil {
			break
		}
		p.close()
	}
	before := spliceFallbacks.Load()
	a, b := tcpPair(t)
	c, d := tcpPair(t)
	// b → c is spliced, the way a proxied half is.
	go func() {
		sp, err := newSplicer(b, c)
		if err != nil {
			t.Error(err)
			return
		}
		defer sp.release()
		for {
			_, eof, _, err := sp.step()
			if eof || err != nil {
				_ = c.CloseWrite()
				return
			}
		}
	}()
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	go func() { _, _ = a.Write(data); _ = a.CloseWrite() }()
	_ = d.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%d of %d bytes arrived intact (%v)", len(got), len(data), err)
	}
	if spliceFallbacks.Load() == before {
		t.Error("no fallback was counted, yet no pipe could be had")
	}
	if n := pipesLive.Load(); n != 0 {
		t.Errorf("%d pipes open with a cap of 0", n)
	}
}

// tcpPair is two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
