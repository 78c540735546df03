// Package livetrace asks the kernel which rules a real connection's first
// packet matched in shunt's chains: through nftables tracing for
// iptables-nft (nft monitor trace), and through the TRACE target and the
// kernel log for iptables-legacy. Its answer is checked against the model's.
package livetrace

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/netns"
)

// Step is a rule of one of shunt's chains that the kernel says the packet
// matched; Position counts the chain's iptables rules from 1.
type Step struct {
	Table, Chain string
	Position     int
}

// Run makes the connection pkt describes, from inside the namespace as its
// UID and GID, with tracing on for that one connection, and returns the
// steps the kernel reports. Only outbound connections can be made from
// inside; pkt.Src, if set and local, is used as the source address.
func Run(ctx context.Context, ns string, v iptables.Variant, pkt trace.Packet) ([]Step, error) {
	if pkt.Direction != trace.Out || pkt.Proto != "tcp" {
		return nil, errors.New("live trace: only outbound TCP connections can be made from inside the namespace")
	}
	// nft monitor gives no sign that it has subscribed: on a busy machine a
	// first connection may go by unseen, so try again, waiting longer.
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var steps []Step
		if steps, err = runOnce(ctx, ns, v, pkt, time.Duration(attempt)*200*time.Millisecond); !errors.Is(err, errNoTrace) {
			return steps, err
		}
	}
	return nil, err
}

var errNoTrace = errors.New("live trace: the kernel reported no trace of the connection")

func runOnce(ctx context.Context, ns string, v iptables.Variant, pkt trace.Packet, wait time.Duration) ([]Step, error) {
	sport := uint16(40000 + rand.IntN(20000))
	bin := strings.TrimSuffix(v.Save, "-save")
	spec := []string{"-t", "raw", "OUTPUT", "-p", "tcp", "-d", pkt.Dst.String() + "/32", "--dport", strconv.Itoa(int(pkt.DstPort)),
		"--sport", strconv.Itoa(int(sport)), "--syn", "-m", "comment", "--comment", "shunt: live trace", "-j", "TRACE"}
	runner := iptables.Exec{NetNS: ns}
	insert := append([]string{"-w", "-t", "raw", "-I"}, spec[2:]...)
	if _, err := runner.Run(ctx, "", bin, insert...); err != nil {
		return nil, fmt.Errorf("live trace: adding the TRACE rule: %w", err)
	}
	defer runner.Run(context.Background(), "", bin, append([]string{"-w", "-t", "raw", "-D"}, spec[2:]...)...)
	if v == iptables.Legacy {
		return viaKernelLog(ns, pkt, sport)
	}
	return viaNFTMonitor(ctx, ns, pkt, sport, wait)
}

// connect makes the traced connection; whether it succeeds does not matter.
func connect(ns string, pkt trace.Packet, sport uint16) error {
	return netns.Do(ns, func() error {
		unix.Setfsgid(int(pkt.GID))
		unix.Setfsuid(int(pkt.UID))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		src := netip.IPv4Unspecified()
		if pkt.Src.IsValid() && pkt.Src.Is4() && !pkt.Src.IsUnspecified() {
			src = pkt.Src
		}
		d := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, sport))}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(pkt.Dst, pkt.DstPort).String())
		if err == nil {
			c.Close()
		}
		return nil
	})
}

var (
	nftPacket = regexp.MustCompile(`^trace id (\w+) (?:ip|ip6|inet) \S+ \S+ packet: .*tcp sport (\d+) `)
	nftRule   = regexp.MustCompile(`^trace id (\w+) (ip|ip6|inet) (\S+) (\S+) rule .*# handle (\d+) \(verdict`)
)

// viaNFTMonitor reads nftables' trace events (iptables-nft rules are
// nftables rules, and the TRACE target sets nftrace).
func viaNFTMonitor(ctx context.Context, ns string, pkt trace.Packet, sport uint16, wait time.Duration) ([]Step, error) {
	var mon *exec.Cmd
	var out strings.Builder
	err := netns.Do(ns, func() error {
		mon = exec.CommandContext(ctx, "nft", "-a", "monitor", "trace")
		mon.Stdout = &out
		return mon.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("live trace: nft monitor trace: %w", err)
	}
	time.Sleep(wait) // let the monitor subscribe
	_ = connect(ns, pkt, sport)
	time.Sleep(wait)
	_ = mon.Process.Kill()
	_ = mon.Wait()
	id := ""
	type hit struct {
		family, table, chain string
		handle               int
	}
	var hits []hit
	for _, line := range strings.Split(out.String(), "\n") {
		if m := nftPacket.FindStringSubmatch(line); m != nil && id == "" && m[2] == strconv.Itoa(int(sport)) {
			id = m[1]
		}
		if m := nftRule.FindStringSubmatch(line); m != nil && m[1] == id && strings.HasPrefix(m[4], capture.ChainPrefix) {
			h, _ := strconv.Atoi(m[5])
			hits = append(hits, hit{m[2], m[3], m[4], h})
		}
	}
	if id == "" {
		return nil, errNoTrace
	}
	positions := map[string]map[int]int{} // table -> handle -> position in its chain
	var steps []Step
	for _, h := range hits {
		key := h.family + " " + h.table
		if positions[key] == nil {
			listing, err := iptables.Exec{NetNS: ns}.Run(ctx, "", "nft", "-a", "list", "table", h.family, h.table)
			if err != nil {
				return nil, err
			}
			positions[key] = handlePositions(listing)
		}
		table := h.table
		if h.family == "inet" {
			table = key // shunt's own table holds every hook: name it whole
		}
		steps = append(steps, Step{Table: table, Chain: h.chain, Position: positions[key][h.handle]})
	}
	return steps, nil
}

// RunNFT is Run for shunt's native nftables table: a table of its own,
// shunt_trace, whose chain runs before any other on the output hook, marks
// the one connection's packets for tracing (nftrace follows a packet
// through every table), and nft monitor trace reports the rules of
// shunt's table they match. shunt's table is not touched.
func RunNFT(ctx context.Context, ns string, pkt trace.Packet) ([]Step, error) {
	if pkt.Direction != trace.Out || pkt.Proto != "tcp" {
		return nil, errors.New("live trace: only outbound TCP connections can be made from inside the namespace")
	}
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var steps []Step
		if steps, err = runNFTOnce(ctx, ns, pkt, time.Duration(attempt)*200*time.Millisecond); !errors.Is(err, errNoTrace) {
			return steps, err
		}
	}
	return nil, err
}

func runNFTOnce(ctx context.Context, ns string, pkt trace.Packet, wait time.Duration) ([]Step, error) {
	sport := uint16(40000 + rand.IntN(20000))
	runner := iptables.Exec{NetNS: ns}
	l3 := "ip"
	if pkt.Dst.Is6() {
		l3 = "ip6"
	}
	script := fmt.Sprintf("table inet shunt_trace {\n"+
		"\tchain trace {\n\t\ttype filter hook output priority -400; policy accept;\n"+
		"\t\t%s daddr %s tcp dport %d tcp sport %d meta nftrace set 1 comment \"shunt: live trace\"\n\t}\n}\n",
		l3, pkt.Dst, pkt.DstPort, sport)
	if _, err := runner.Run(ctx, script, "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("live trace: adding the trace table: %w", err)
	}
	defer runner.Run(context.Background(), "", "nft", "delete", "table", "inet", "shunt_trace")
	return viaNFTMonitor(ctx, ns, pkt, sport, wait)
}

// handlePositions maps each rule handle in an `nft -a list table` listing
// to the rule's position in its chain.
func handlePositions(listing string) map[int]int {
	out := map[int]int{}
	pos := 0
	for _, line := range strings.Split(listing, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "chain "):
			pos = 0
		case strings.HasPrefix(line, "type ") || !strings.Contains(line, "# handle "):
		default:
			pos++
			h, _ := strconv.Atoi(line[strings.LastIndex(line, "# handle ")+len("# handle "):])
			out[h] = pos
		}
	}
	return out
}

var legacyTrace = regexp.MustCompile(`TRACE: (\w+):(\S+):rule:(\d+) .* SPT=(\d+) `)

// viaKernelLog reads the TRACE target's lines from the kernel log. The
// kernel logs netfilter messages from namespaces other than the first only
// while net.netfilter.nf_log_all_netns is 1; it is set for the trace and
// put back after.
func viaKernelLog(ns string, pkt trace.Packet, sport uint16) ([]Step, error) {
	const allNetns = "/proc/sys/net/netfilter/nf_log_all_netns"
	if old, err := os.ReadFile(allNetns); err == nil && strings.TrimSpace(string(old)) == "0" {
		if err := os.WriteFile(allNetns, []byte("1"), 0o644); err != nil {
			return nil, fmt.Errorf("live trace: %w", err)
		}
		defer os.WriteFile(allNetns, old, 0o644)
	}
	_ = netns.Do(ns, func() error {
		// TRACE needs a logger for IPv4 in the namespace.
		return os.WriteFile("/proc/sys/net/netfilter/nf_log/2", []byte("nf_log_ipv4"), 0o644)
	})
	// Raw descriptor calls: an *os.File would wait in the poller at the
	// log's end instead of returning EAGAIN.
	kmsg, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("live trace: reading the kernel log: %w", err)
	}
	defer unix.Close(kmsg)
	if _, err := unix.Seek(kmsg, 0, unix.SEEK_END); err != nil {
		return nil, err
	}
	_ = connect(ns, pkt, sport)
	time.Sleep(100 * time.Millisecond)
	var steps []Step
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(kmsg, buf) // one record a read; EAGAIN at the end
		if err == unix.EPIPE {
			continue // records were overwritten while we read
		}
		if err != nil || n <= 0 {
			break
		}
		m := legacyTrace.FindStringSubmatch(string(buf[:n]))
		if m == nil || m[4] != strconv.Itoa(int(sport)) || !strings.HasPrefix(m[2], capture.ChainPrefix) {
			continue
		}
		pos, _ := strconv.Atoi(m[3])
		steps = append(steps, Step{Table: m[1], Chain: m[2], Position: pos})
	}
	if len(steps) == 0 {
		return nil, errNoTrace
	}
	return steps, nil
}

// Model is what the tracer says the same steps are: for each rule of
// shunt's chains the model matched, its iptables position (a rule whose
// ports are split over several iptables rules takes several positions;
// the model's step is the first that can match).
func Model(plan *capture.Plan, res trace.Result) ([]Step, error) {
	var out []Step
	for _, s := range res.Matched() {
		pos, err := position(plan, s.Chain, s.Index, res.Packet)
		if err != nil {
			return nil, err
		}
		out = append(out, Step{Table: string(s.Table), Chain: s.Chain, Position: pos})
	}
	return out, nil
}

// position is where the plan's rule index lands among the chain's
// rendered iptables rules, for this packet.
func position(plan *capture.Plan, chain string, index int, pkt trace.Packet) (int, error) {
	c := plan.Chain(chain)
	pos := 0
	for i, r := range c.Rules {
		if f, err := capture.RuleFamily(r); err != nil || f != "" && f != pkt.Family() {
			continue // not in this family's rule set
		}
		lines, err := iptables.RenderRule(chain, r, pkt.Family())
		if err != nil {
			return 0, err
		}
		if i+1 == index {
			return pos + chunkFor(r, pkt), nil
		}
		pos += len(lines)
	}
	return 0, fmt.Errorf("no rule %d in %s", index, chain)
}

// chunkFor is which of a rule's rendered lines holds the packet's port.
func chunkFor(r capture.Rule, pkt trace.Packet) int {
	for _, c := range r.Conds {
		if d, ok := c.(capture.DestPorts); ok && !d.Not {
			for i, chunk := range iptables.ChunkPorts(d.Ports) {
				if capture.PortsContain(chunk, pkt.DstPort) {
					return i + 1
				}
			}
		}
	}
	return 1
}
