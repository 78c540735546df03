// Package testnet builds the throwaway network namespaces, veth pairs and
// listeners that shunt's kernel tests run in. Everything it makes is named
// uniquely per process (go test runs packages in parallel) and removed when
// the test ends. Tests that use it skip, with a message, when not root.
package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/internal/netlab"
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
	*netlab.NS
}

func uniqueName(label string) string {
	return fmt.Sprintf("shunt-%s-%d-%d", label, os.Getpid(), counter.Add(1))
}

// NewNS makes a namespace with lo up; it is deleted when the test ends.
func NewNS(t testing.TB, label string) *NS {
	t.Helper()
	ns, err := netlab.NewNS(uniqueName(label))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	return &NS{ns}
}

// Run runs a command inside the namespace and fails the test if it fails.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.NS.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Link joins two namespaces with a veth pair, named and addressed in each
// (names need only be unique within their namespace).
func Link(t testing.TB, a *NS, aIf, aCIDR string, b *NS, bIf, bCIDR string) {
	t.Helper()
	if err := netlab.Link(a.NS, aIf, aCIDR, b.NS, bIf, bCIDR); err != nil {
		t.Fatal(err)
	}
}

// Listen accepts TCP connections on addr ("0.0.0.0:80" or "[::]:80")
// inside the namespace and answers each with one line, "TAG
// ORIGINAL-DESTINATION", then closes it. The socket is transparent, so
// TPROXY can hand it connections too.
func (n *NS) Listen(t testing.TB, addr, tag string) {
	t.Helper()
	var ln net.Listener
	network := "tcp4"
	if strings.HasPrefix(addr, "[") {
		network = "tcp6"
	}
	err := n.Do(func() (err error) {
		ln, err = Transparent.Listen(context.Background(), network, addr)
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

// Transparent makes listeners with IP_TRANSPARENT (or IPV6_TRANSPARENT),
// which TPROXY can hand connections to.
var Transparent = net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1)
		}
	})
	return errors.Join(err, serr)
}}

// Dial connects from inside the namespace, as a process with the given UID
// and GID would (see DialConn), and returns the line the listener answered.
func (n *NS) Dial(src netip.Addr, dst netip.AddrPort, uid, gid uint32) (string, error) {
	c, err := n.DialConn(src, dst, uid, gid)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	reply, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(reply), err
}

// Pod is netlab's Pod (a pod namespace whose default route is a peer that
// answers for 10.96.0.0/12, 172.16.0.0/12 and 169.254.0.0/16), made for one
// test.
type Pod struct {
	NS, Peer *NS
}

// NewPod builds a Pod; both namespaces are deleted when the test ends.
func NewPod(t testing.TB) *Pod {
	t.Helper()
	p, err := netlab.NewPod(uniqueName("pod"), uniqueName("peer"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Delete)
	return &Pod{NS: &NS{p.NS}, Peer: &NS{p.Peer}}
}
