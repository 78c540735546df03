// Package validate checks, in a network namespace, that installed capture
// rules really hand an app's connection to the outbound listener with its
// original destination intact: what istio-iptables --run-validation does,
// run before the proxy starts.
package validate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/netns"
	"github.com/shunt-dev/shunt/origdst"
)

// ExitCode is the exit code of a failed validation (istio-iptables' own).
const ExitCode = 126

// candidates are documentation and private addresses a probe may be sent
// to: in a pod they lead nowhere, so an answer can only be local.
var candidates = []string{"192.0.2.1", "198.51.100.1", "10.255.255.254", "172.31.255.254", "192.168.255.254"}

// Probe is a connection the plan captures: to Dst, as UID and GID.
type Probe struct {
	Dst      netip.AddrPort
	UID, GID uint32
}

// PickProbe finds a connection the plan says is captured outbound: an app
// identity the rules do not exempt, to a candidate address on port. ok is
// false when the plan captures none of them.
func PickProbe(plan *capture.Plan, cfg capture.Config, port uint16) (Probe, bool) {
	id := uint32(65534)
	for slices.Contains(cfg.ProxyUIDs, id) || slices.Contains(cfg.ProxyGIDs, id) {
		id--
	}
	for _, cand := range candidates {
		pkt := trace.Packet{Direction: trace.Out, Proto: "tcp", Src: netip.IPv4Unspecified(), Dst: netip.MustParseAddr(cand),
			DstPort: port, UID: id, GID: id, OutIface: "eth0"}
		if res, err := trace.Trace(plan, pkt); err == nil && res.Outcome == trace.Redirected && res.Port == cfg.OutboundPort {
			return Probe{Dst: netip.AddrPortFrom(pkt.Dst, port), UID: id, GID: id}, true
		}
	}
	return Probe{}, false
}

// DialAs connects inside the namespace as the probe's identity (the
// socket's filesystem UID and GID, which netfilter's owner match reads).
func DialAs(ns string, p Probe, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(ns, func() (err error) {
		unix.Setfsgid(int(p.GID))
		unix.Setfsuid(int(p.UID))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		c, err = net.DialTimeout("tcp4", p.Dst.String(), timeout)
		return err
	})
	return c, err
}

// Run listens on the outbound port inside the namespace, connects as an
// app to a destination the plan captures, and checks that the connection
// arrived there with that destination as its original one. The error says
// in one line why capture does not work.
func Run(ns string, cfg capture.Config, probePort uint16, timeout time.Duration) error {
	plan, err := capture.Build(cfg)
	if err != nil {
		return err
	}
	probe, ok := PickProbe(plan, cfg, probePort)
	if !ok {
		return errors.New("validation: the configuration captures no outbound connection to probe")
	}
	var ln net.Listener
	err = netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", cfg.OutboundPort))
		return err
	})
	if err != nil {
		return fmt.Errorf("validation: listening on the outbound port %d (validation runs before the proxy): %w", cfg.OutboundPort, err)
	}
	defer ln.Close()
	got := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if dst, err := origdst.Get(c.(*net.TCPConn)); err == nil {
			got <- dst
		}
	}()
	c, err := DialAs(ns, probe, timeout)
	if err != nil {
		return fmt.Errorf("validation: a connection as uid %d to %s was not captured: %v", probe.UID, probe.Dst, err)
	}
	defer c.Close()
	select {
	case dst := <-got:
		if dst != probe.Dst {
			return fmt.Errorf("validation: the outbound listener got a connection for %s, not %s", dst, probe.Dst)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("validation: a connection as uid %d to %s did not reach port %d within %s", probe.UID, probe.Dst, cfg.OutboundPort, timeout)
	}
}
