package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/backend"
	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/capture/picture"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/netns"
)

type packetFlags struct {
	direction, proto, src, dst, in, out, state string
	dport, sport                               uint16
	uid, gid                                   uint32
	uidSet, gidSet                             bool
	mark                                       uint32
}

func newTraceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace [capture flags] --dst ADDR --dport PORT [packet flags]",
		Short: "Walk a packet through the rules a configuration makes, and say where it goes and why",
		Example: "  shunt trace -i '*' -b '*' --dst 10.96.0.10 --dport 10000 --uid 101\n" +
			"  shunt trace -i '*' -b '*' -d 15020 --direction in --dst 10.1.0.5 --dport 15020",
		Args: cobra.NoArgs,
	}
	set := istioargs.RegisterCapture(cmd.Flags())
	pf := packetFlags{direction: "out", proto: "tcp", in: "eth0"}
	f := cmd.Flags()
	f.Var(newChoice(&pf.direction, "out", "in"), "direction", "out (sent by a process in the pod) or in (arriving at the pod)")
	f.Var(newChoice(&pf.proto, "tcp", "udp"), "proto", "tcp or udp")
	f.StringVar(&pf.src, "src", "", "source address (default 127.0.0.1 when --dst is loopback, else 0.0.0.0, an unspecified source)")
	f.StringVar(&pf.dst, "dst", "", "destination address (required)")
	f.Var(newPort(&pf.dport), "dport", "destination port (required)")
	f.Var(newID(&pf.uid, &pf.uidSet, false), "uid", "UID of the sending process (out only)")
	f.Var(newID(&pf.gid, &pf.gidSet, true), "gid", "GID of the sending process (out only)")
	f.StringVar(&pf.in, "in-interface", "eth0", "interface the packet arrives on (in only)")
	f.StringVar(&pf.out, "out-interface", "", "interface the packet leaves by (out only; default lo for a loopback --dst, else eth0)")
	f.Var(newChoice(&pf.state, "", capture.StateInvalid, capture.StateEstablished, capture.StateRelated), "state", "conntrack state when not the first packet of a connection: INVALID, ESTABLISHED or RELATED")
	f.Var(newPort(&pf.sport), "sport", "source port (DNS answers come from 53)")
	f.Uint32Var(&pf.mark, "mark", 0, "the packet's mark as it enters (a socket's SO_MARK, say)")
	all := f.Bool("all", false, "list every rule evaluated, not only those that matched")
	live := f.Bool("live", false, "also make the connection for real in a namespace, trace it with the kernel's own tracing, and compare")
	liveNS := f.String("network-namespace", "", "with --live: the namespace to make the connection in")
	livePID := 0
	f.Var(newCount(&livePID, 0, 1<<22), "pid", "with --live: make it in this process's namespace")
	format := "text"
	f.Var(newChoice(&format, "text", "json", "svg"), "format", "text, json, or svg (the plan with the path highlighted)")
	var plan *capture.Plan
	var pkt trace.Packet
	cmd.PreRunE = func(*cobra.Command, []string) error {
		var err error
		if plan, err = buildPlan(set); err != nil {
			return err
		}
		if pkt, err = pf.packet(); err != nil {
			return usageError{err}
		}
		if livePID != 0 && *liveNS != "" {
			return usageError{errors.New("--pid and --network-namespace: give one")}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		res, err := trace.Trace(plan, pkt)
		if err != nil {
			return err
		}
		if *live {
			ns := *liveNS
			if livePID != 0 {
				ns = netns.PathForPID(livePID)
			}
			return traceLive(cmd.Context(), cmd.OutOrStdout(), ns, plan, res)
		}
		switch format {
		case "json":
			return traceJSON(cmd.OutOrStdout(), res)
		case "svg":
			_, err := io.WriteString(cmd.OutOrStdout(), picture.Trace(plan, res))
			return err
		}
		return traceText(cmd.OutOrStdout(), res, *all)
	}
	return cmd
}

func (pf packetFlags) packet() (trace.Packet, error) {
	p := trace.Packet{Direction: trace.Direction(pf.direction), Proto: pf.proto, UID: pf.uid, GID: pf.gid,
		InIface: pf.in, OutIface: pf.out, State: pf.state}
	p.SrcPort, p.Mark = pf.sport, pf.mark
	var err error
	if p.Dst, err = netip.ParseAddr(pf.dst); err != nil || p.Dst.Zone() != "" {
		return p, fmt.Errorf("--dst: %s is not an IP address", clip.Quote(pf.dst))
	}
	p.Dst = p.Dst.Unmap()
	if pf.dport == 0 {
		return p, errors.New("--dport: give the destination port (1-65535)")
	}
	p.DstPort = pf.dport
	switch {
	case pf.src != "":
		if p.Src, err = netip.ParseAddr(pf.src); err != nil || p.Src.Unmap().Is4() != p.Dst.Is4() {
			return p, fmt.Errorf("--src: %s is not an address of --dst's family", clip.Quote(pf.src))
		}
		p.Src = p.Src.Unmap()
	case p.Dst.IsLoopback():
		p.Src = p.Dst
	case p.Dst.Is6():
		p.Src = netip.IPv6Unspecified()
	default:
		p.Src = netip.IPv4Unspecified()
	}
	if p.OutIface == "" {
		p.OutIface = "eth0"
		if p.Dst.IsLoopback() {
			p.OutIface = "lo"
		}
	}
	return p, nil
}

func traceText(w io.Writer, res trace.Result, all bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "packet: %s\n", res.Packet)
	for _, s := range res.Steps {
		if !s.Matched && !all {
			continue
		}
		mark := "✔"
		if !s.Matched {
			mark = "·"
		}
		fmt.Fprintf(tw, "  %s %s %s #%d\t%s\t%s\t%s\n", mark, s.Table, s.Chain, s.Index,
			capture.VerdictString(s.Rule.Verdict), s.Rule.Describe(), s.Rule.Purpose)
	}
	fmt.Fprintf(tw, "verdict: %s (%s)\n", res.Verdict(), res.Reason)
	if res.Mark != res.Packet.Mark {
		fmt.Fprintf(tw, "mark: %d\n", res.Mark)
	}
	if res.Zone != 0 {
		fmt.Fprintf(tw, "conntrack zone: %d\n", res.Zone)
	}
	return tw.Flush()
}

type jsonStep struct {
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Index   int    `json:"index"`
	Match   string `json:"match"`
	Verdict string `json:"verdict"`
	Purpose string `json:"purpose"`
	Matched bool   `json:"matched"`
}

func traceJSON(w io.Writer, res trace.Result) error {
	steps := []jsonStep{}
	for _, s := range res.Steps {
		steps = append(steps, jsonStep{string(s.Table), s.Chain, s.Index, s.Rule.Describe(),
			capture.VerdictString(s.Rule.Verdict), s.Rule.Purpose, s.Matched})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{
		"packet": res.Packet.String(), "steps": steps, "outcome": res.Outcome,
		"port": res.Port, "tproxy": res.TProxy, "mark": res.Mark, "zone": res.Zone,
		"verdict": res.Verdict(), "reason": res.Reason,
	})
}

// traceLive prints the model's path, then the kernel's for a real
// connection through the backend holding shunt's rules, and says whether
// they agree; disagreement is an error.
func traceLive(ctx context.Context, w io.Writer, ns string, plan *capture.Plan, res trace.Result) error {
	if err := traceText(w, res, false); err != nil {
		return err
	}
	b, _, err := backend.Holding(ctx, ns)
	if err != nil {
		return fmt.Errorf("live trace: %w", err)
	}
	kernel, err := b.Trace(ctx, res.Packet)
	if err != nil {
		return err
	}
	model, err := b.Model(plan, res)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "kernel (%s): ", b.Name())
	for i, s := range kernel {
		if i > 0 {
			fmt.Fprint(w, " → ")
		}
		fmt.Fprintf(w, "%s %s #%d", s.Table, s.Chain, s.Position)
	}
	fmt.Fprintln(w)
	if !slices.Equal(kernel, model) {
		return fmt.Errorf("the kernel's path differs from the model's %v: the rules in the namespace are not this configuration's (shunt doctor shows how)", model)
	}
	fmt.Fprintln(w, "the kernel took the path the model predicts")
	return nil
}
