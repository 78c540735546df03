// Package testnet builds the throwaway network namespaces, veth pairs and
// listeners that shunt's kernel tests run in. Everything it makes is named
// uniquely per process (go test runs packages in parallel) and removed when
// the test ends. Tests that use it skip, with a message, when not root.
package testnet

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/netns"
	"github.com/shunt-dev/shunt/origdst"
)

// RequireRoot skips the test unless it runs as root with the tools the
// kernel tests drive.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to create network namespaces (run the tests as root, as CI does)")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("kernel test: %s is not installed (.ci/run installs it)", tool)
		}
	}
}

var counter atomic.Int64

// NS is a network namespace made for one test.
type NS struct {
	Name string
	Path string
}

// NewNS makes a namespace with lo up; it is deleted when the test ends.
func NewNS(t testing.TB, label string) *NS {
	t.Helper()
	name := fmt.Sprintf("shunt-%s-%d-%d", label, os.Getpid(), counter.Add(1))
	run(t, "ip", "netns", "add", name)
	ns := &NS{Name: name, Path: "/var/run/netns/" + name}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside the namespace and fails the test if it fails.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its combined output.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Do runs fn on a thread inside the namespace.
func (n *NS) Do(fn func() error) error { return netns.Do(n.Path, fn) }

// Link joins two namespaces with a veth pair, named and addressed in each
// (names need only be unique within their namespace).
func Link(t testing.TB, a *NS, aIf, aCIDR string, b *NS, bIf, bCIDR string) {
	t.Helper()
	run(t, "ip", "-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, side := range []struct {
		ns       *NS
		ifc, pfx string
	}{{a, aIf, aCIDR}, {b, bIf, bCIDR}} {
		run(t, "ip", "-n", side.ns.Name, "addr", "add", side.pfx, "dev", side.ifc)
		run(t, "ip", "-n", side.ns.Name, "link", "set", side.ifc, "up")
	}
}

// Listen accepts TCP connections on addr inside the namespace and answers
// each with one line, "TAG ORIGINAL-DESTINATION", then closes it.
func (n *NS) Listen(t testing.TB, addr, tag string) {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := origdst.Get(c.(*net.TCPConn))
			reply := fmt.Sprintf("%s %s\n", tag, dst)
			if err != nil {
				reply = fmt.Sprintf("%s ?%v\n", tag, err)
			}
			_, _ = c.Write([]byte(reply))
			c.Close()
		}
	}()
}

// Dial connects from inside the namespace, as a process with the given UID
// and GID would (the socket is made with that filesystem UID and GID, which
// is what netfilter's owner match reads), from src if it is valid, and
// returns the line the listener answered.
func (n *NS) Dial(src netip.Addr, dst netip.AddrPort, uid, gid uint32) (string, error) {
	var reply string
	err := n.Do(func() error {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		d := net.Dialer{Timeout: 2 * time.Second}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.Dial("tcp4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		reply, err = bufio.NewReader(c).ReadString('\n')
		reply = strings.TrimSpace(reply)
		return err
	})
	return reply, err
}

// Pod is a pod's network namespace joined by eth0 (10.1.0.5/24) to a peer
// namespace (10.1.0.1/24) that is the pod's default route and answers, as
// its own, for 10.96.0.0/12, 172.16.0.0/12 and 169.254.0.0/16: any service
// address a test dials there reaches a listener in the peer.
type Pod struct {
	NS, Peer *NS
}

// NewPod builds a Pod; both namespaces are deleted when the test ends.
func NewPod(t testing.TB) *Pod {
	t.Helper()
	p := &Pod{NS: NewNS(t, "pod"), Peer: NewNS(t, "peer")}
	Link(t, p.NS, "eth0", "10.1.0.5/24", p.Peer, "eth0", "10.1.0.1/24")
	p.NS.Run(t, "ip", "route", "add", "default", "via", "10.1.0.1")
	for _, r := range []string{"10.96.0.0/12", "172.16.0.0/12", "169.254.0.0/16"} {
		p.Peer.Run(t, "ip", "route", "add", "local", r, "dev", "lo")
	}
	return p
}
