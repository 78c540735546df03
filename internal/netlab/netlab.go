// Package netlab makes network namespaces and veth pairs with iproute2, for
// shunt's demo, benchmarks and tests. Namespaces it makes are deleted by
// Delete; names must be unique on the machine.
package netlab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/netns"
)

// NS is a network namespace made by netlab.
type NS struct {
	Name string
	Path string
}

// NewNS makes a namespace and brings its lo up.
func NewNS(name string) (*NS, error) {
	if _, err := Run("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NS{Name: name, Path: "/var/run/netns/" + name}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// Delete removes the namespace; what is left in it goes with it.
func (n *NS) Delete() { _ = exec.Command("ip", "netns", "del", n.Name).Run() }

// Run runs a program and returns its combined output; the error carries it.
func Run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Run runs a program inside the namespace.
func (n *NS) Run(args ...string) (string, error) {
	return Run("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Command is a program to start inside the namespace.
func (n *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Do runs fn on a thread inside the namespace.
func (n *NS) Do(fn func() error) error { return netns.Do(n.Path, fn) }

// Link joins two namespaces with a veth pair, named and addressed in each.
func Link(a *NS, aIf, aCIDR string, b *NS, bIf, bCIDR string) error {
	if _, err := Run("ip", "-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		return err
	}
	for _, side := range []struct {
		ns       *NS
		ifc, pfx string
	}{{a, aIf, aCIDR}, {b, bIf, bCIDR}} {
		if _, err := Run("ip", "-n", side.ns.Name, "addr", "add", side.pfx, "dev", side.ifc); err != nil {
			return err
		}
		if _, err := Run("ip", "-n", side.ns.Name, "link", "set", side.ifc, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Pod is a pod's namespace joined by eth0 (10.1.0.5/24) to a peer
// namespace (10.1.0.1/24) that is its default route and answers, as its
// own, for the service range 10.96.0.0/12 and for 172.16.0.0/12 and
// 169.254.0.0/16: a connection to any address there reaches the peer.
type Pod struct {
	NS, Peer *NS
}

// Pod addresses.
const (
	PodIP  = "10.1.0.5"
	PeerIP = "10.1.0.1"
)

// NewPod makes a Pod from two fresh namespaces with the given names.
func NewPod(podName, peerName string) (*Pod, error) {
	pod, err := NewNS(podName)
	if err != nil {
		return nil, err
	}
	peer, err := NewNS(peerName)
	if err != nil {
		pod.Delete()
		return nil, err
	}
	p := &Pod{NS: pod, Peer: peer}
	steps := [][]string{
		{"ip", "-n", pod.Name, "route", "add", "default", "via", PeerIP},
		{"ip", "-n", peer.Name, "route", "add", "local", "10.96.0.0/12", "dev", "lo"},
		{"ip", "-n", peer.Name, "route", "add", "local", "172.16.0.0/12", "dev", "lo"},
		{"ip", "-n", peer.Name, "route", "add", "local", "169.254.0.0/16", "dev", "lo"},
	}
	err = Link(pod, "eth0", PodIP+"/24", peer, "eth0", PeerIP+"/24")
	for _, s := range steps {
		if err != nil {
			break
		}
		_, err = Run(s[0], s[1:]...)
	}
	if err != nil {
		p.Delete()
		return nil, err
	}
	return p, nil
}

// Delete removes both namespaces.
func (p *Pod) Delete() {
	p.NS.Delete()
	p.Peer.Delete()
}

// TuneForLoad widens the ephemeral port range and lets TIME_WAIT ports be
// reused: a captured connection uses two sockets, and load tests and
// benchmarks otherwise run out of ports.
func (n *NS) TuneForLoad() error {
	_, err := n.Run("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000")
	return err
}

// HTTPClient is an HTTP client whose connections start inside the
// namespace, as the calling process's user.
func (n *NS) HTTPClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}
