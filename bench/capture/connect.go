package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/shunt-dev/shunt/netns"
)

// The cost of a new captured connection as the lists grow: a namespace
// with the seed's capture and n excluded ranges (none of which the
// destination is in, so every SYN passes all of them), a listener on the
// outbound port, and connections made one after another for a while.
// Each backend runs with none and with the full list, side by side, in
// alternating order; the rate ratio says what the list costs.

func connectRates(bin string, cidrs, rounds int, each time.Duration) map[string][2][]float64 {
	out := map[string][2][]float64{}
	kinds := []contender{
		{"iptables-legacy", []string{"--force-iptables-binary", "iptables-legacy"}},
		{"iptables-nft", []string{"--force-iptables-binary", "iptables-nft"}},
		{"native nft", []string{"--native-nftables"}},
	}
	for r := 0; r < rounds; r++ {
		for i := range kinds {
			c := kinds[(i+r)%len(kinds)]
			for _, n := range []int{0, cidrs} {
				if r%2 == 1 {
					n = cidrs - n // alternate which list size goes first
				}
				rate := connectRate(bin, c, n, r, each)
				rates := out[c.name]
				slot := 0
				if n > 0 {
					slot = 1
				}
				rates[slot] = append(rates[slot], rate)
				out[c.name] = rates
			}
		}
	}
	return out
}

func connectRate(bin string, c contender, cidrs, round int, each time.Duration) float64 {
	ns := fmt.Sprintf("shunt-bench-conn-%d-%d", os.Getpid(), round)
	check(exec.Command("ip", "netns", "add", ns).Run())
	defer exec.Command("ip", "netns", "del", ns).Run()
	for _, cmd := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"},
		{"ip", "addr", "add", "10.1.0.5/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "link", "set", "eth0p", "up"},
		{"ip", "route", "add", "default", "via", "10.1.0.1"},
		{"sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, cmd...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%v: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	args := append([]string{"redirect", "--network-namespace", "/var/run/netns/" + ns}, c.flags...)
	args = append(args, planArgs(cidrs)...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n%s", c.name, err, out)
		os.Exit(1)
	}
	var ln net.Listener
	check(netns.Do("/var/run/netns/"+ns, func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:15001")
		return err
	}))
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	n := 0
	check(netns.Do("/var/run/netns/"+ns, func() error {
		d := net.Dialer{Timeout: time.Second}
		for deadline := time.Now().Add(each); time.Now().Before(deadline); n++ {
			conn, err := d.Dial("tcp4", "10.96.0.10:80") // captured, to the outbound port
			if err != nil {
				return fmt.Errorf("%s: connection %d: %w", c.name, n, err)
			}
			_ = conn.(*net.TCPConn).SetLinger(0) // no TIME_WAIT left behind
			conn.Close()
		}
		return nil
	}))
	return float64(n) / each.Seconds()
}

func reportConnect(cidrs, rounds int, each time.Duration, rates map[string][2][]float64) {
	fmt.Printf("\nnew captured connections per second, seed capture with 0 or %d excluded ranges, %d rounds of %s each, medians\n\n", cidrs, rounds, each)
	fmt.Println("| backend | conn/s, none | conn/s, with the list | with / none | target |")
	fmt.Println("|---|---|---|---|---|")
	for _, name := range []string{"iptables-legacy", "iptables-nft", "native nft"} {
		r := rates[name]
		none, list := median(r[0]), median(r[1])
		target := "-"
		if name == "native nft" {
			target = "≥ 0.95"
		}
		fmt.Printf("| %s | %.0f | %.0f | %.2f | %s |\n", name, none, list, list/none, target)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
