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

// appDestinations are documentation and private addresses an app probe may
// be sent to: in a pod they lead nowhere, so an answer can only be local.
// They need a route to leave by, which a namespace may not have.
var appDestinations = []string{"192.0.2.1", "198.51.100.1", "10.255.255.254", "172.31.255.254", "192.168.255.254"}

// Probe is a connection the plan captures: to Dst, as UID and GID; the
// plan sends it to Port.
type Probe struct {
	Src      netip.Addr // bound when valid: the hairpin's loopback (the kernel would pick ::6 for ::6, which capture lets through)
	Dst      netip.AddrPort
	UID, GID uint32
	Port     uint16 // the proxy port it lands on
	Hairpin  bool   // the proxy's own call to 127.0.0.6 (or ::6) over lo
}

func (p Probe) String() string {
	who := "an app"
	if p.Hairpin {
		who = "the proxy"
	}
	return fmt.Sprintf("a connection as %s (uid %d) to %s", who, p.UID, p.Dst)
}

// PickProbes lists connections the plan captures, the way Istio's
// validation probes first: the proxy's own call to 127.0.0.6 (and ::6
// with dual-stack) over lo, which the rules send to the inbound port and
// which needs no route; then an app's call to a made-up destination,
// which the rules send to the outbound port when the namespace has a
// route to leave by.
func PickProbes(plan *capture.Plan, cfg capture.Config, port uint16) []Probe {
	var probes []Probe
	pick := func(pkt trace.Packet, hairpin bool) bool {
		res, err := trace.Trace(plan, pkt)
		if err != nil || res.Outcome != trace.Redirected || res.TProxy {
			return false
		}
		p := Probe{Dst: netip.AddrPortFrom(pkt.Dst, port), UID: pkt.UID, GID: pkt.GID, Port: res.Port, Hairpin: hairpin}
		if hairpin {
			p.Src = pkt.Src
		}
		probes = append(probes, p)
		return true
	}
	if len(cfg.ProxyUIDs) > 0 && len(cfg.ProxyGIDs) > 0 {
		hairpins := []string{"127.0.0.6"}
		if cfg.DualStack {
			hairpins = append(hairpins, "::6")
		}
		for _, h := range hairpins {
			dst := netip.MustParseAddr(h)
			src := netip.MustParseAddr("127.0.0.1")
			if dst.Is6() {
				src = netip.IPv6Loopback()
			}
			pick(trace.Packet{Direction: trace.Out, Proto: "tcp", Src: src, Dst: dst, DstPort: port,
				UID: cfg.ProxyUIDs[0], GID: cfg.ProxyGIDs[0], OutIface: "lo"}, true)
		}
	}
	id := uint32(65534)
	for slices.Contains(cfg.ProxyUIDs, id) || slices.Contains(cfg.ProxyGIDs, id) {
		id--
	}
	for _, cand := range appDestinations {
		if pick(trace.Packet{Direction: trace.Out, Proto: "tcp", Src: netip.IPv4Unspecified(), Dst: netip.MustParseAddr(cand),
			DstPort: port, UID: id, GID: id, OutIface: "eth0"}, false) {
			break
		}
	}
	return probes
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
		network := "tcp4"
		if p.Dst.Addr().Is6() {
			network = "tcp6"
		}
		d := net.Dialer{Timeout: timeout}
		if p.Src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: p.Src.AsSlice()}
		}
		c, err = d.Dial(network, p.Dst.String())
		return err
	})
	return c, err
}

// Run checks, as istio-iptables --run-validation does, that the rules in
// the namespace capture: it listens on the port the first probe should
// land on, makes the probe's connection, and checks it arrived there with
// its destination as its original one. The error says in one line why
// capture does not work.
func Run(ns string, cfg capture.Config, probePort uint16, timeout time.Duration) error {
	plan, err := capture.Build(cfg)
	if err != nil {
		return err
	}
	probes := PickProbes(plan, cfg, probePort)
	if len(probes) == 0 {
		return errors.New("validation: the configuration captures no connection to probe")
	}
	probe := probes[0]
	network, wildcard := "tcp4", "0.0.0.0"
	if probe.Dst.Addr().Is6() {
		network, wildcard = "tcp6", "[::]"
	}
	var ln net.Listener
	err = netns.Do(ns, func() (err error) {
		ln, err = net.Listen(network, fmt.Sprintf("%s:%d", wildcard, probe.Port))
		return err
	})
	if err != nil {
		return fmt.Errorf("validation: listening on port %d, where the probe should land (validation runs before the proxy): %w", probe.Port, err)
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
		return fmt.Errorf("validation: %s was not captured: %v", probe, err)
	}
	defer c.Close()
	select {
	case dst := <-got:
		if dst != probe.Dst {
			return fmt.Errorf("validation: port %d got a connection for %s, not %s", probe.Port, dst, probe.Dst)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("validation: %s did not reach port %d within %s", probe, probe.Port, timeout)
	}
}
