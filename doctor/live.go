package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/validate"
	"github.com/shunt-dev/shunt/netns"
)

// config is the capture to check against: the given one, or the defaults
// with everything captured.
func (o Options) config() capture.Config {
	if o.Config != nil {
		return *o.Config
	}
	c := capture.DefaultConfig()
	c.OutboundAll, c.InboundAll = true, true
	return c
}

// listeningPorts reads the namespace's TCP listeners: port -> socket inodes.
func listeningPorts(ns string) (map[uint16][]string, error) {
	out := map[uint16][]string{}
	err := netns.Do(ns, func() error {
		for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			f, err := os.Open(file)
			if err != nil {
				if file == "/proc/thread-self/net/tcp6" {
					continue // no IPv6 here
				}
				return err
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
					continue
				}
				_, hexPort, _ := strings.Cut(fields[1], ":")
				port, err := strconv.ParseUint(hexPort, 16, 16)
				if err == nil {
					out[uint16(port)] = append(out[uint16(port)], fields[9])
				}
			}
			f.Close()
		}
		return nil
	})
	return out, err
}

func proxyCheck(o Options, listeners map[uint16][]string, err error) Check {
	c := Check{Name: "proxy listening"}
	if err != nil {
		c.Status, c.Detail = Fail, "cannot read the namespace's listeners: "+err.Error()
		return c
	}
	cfg := o.config()
	var missing []string
	for _, p := range []uint16{cfg.OutboundPort, cfg.InboundPort} {
		if len(listeners[p]) == 0 {
			missing = append(missing, strconv.Itoa(int(p)))
		}
	}
	if len(missing) > 0 {
		c.Status = Fail
		c.Detail = fmt.Sprintf("nothing listens on %s", strings.Join(missing, " and "))
		c.Hint = "captured connections are refused: start the sidecar (shunt proxy, or Envoy) in this namespace"
		return c
	}
	c.Status, c.Detail = Pass, fmt.Sprintf("something listens on %d and %d", cfg.OutboundPort, cfg.InboundPort)
	return c
}

// process is one process in the namespace.
type process struct {
	pid       int
	comm      string
	uid, gid  uint32 // filesystem IDs: what netfilter's owner match reads
	isSidecar bool   // holds one of the capture listeners
}

func processesIn(ns string, listenerInodes []string) ([]process, error) {
	nsPath := ns
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	target, err := os.Stat(nsPath)
	if err != nil {
		return nil, err
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []process
	for _, dir := range dirs {
		st, err := os.Stat(dir + "/ns/net")
		if err != nil || !os.SameFile(st, target) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		comm, _ := os.ReadFile(dir + "/comm")
		p := process{pid: pid, comm: strings.TrimSpace(string(comm))}
		status, err := os.ReadFile(dir + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			if len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
				n, _ := strconv.ParseUint(f[4], 10, 32)
				if f[0] == "Uid:" {
					p.uid = uint32(n)
				} else {
					p.gid = uint32(n)
				}
			}
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			link, _ := os.Readlink(dir + "/fd/" + fd.Name())
			if inode, ok := strings.CutPrefix(link, "socket:["); ok && slices.Contains(listenerInodes, strings.TrimSuffix(inode, "]")) {
				p.isSidecar = true
				break
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// identityCheck finds the seed's pitfall: a process that is not the
// sidecar but runs as an identity the rules exempt, so its connections
// escape capture (nginx and Envoy sharing UID 101, say).
func identityCheck(o Options, listeners map[uint16][]string) Check {
	c := Check{Name: "app identities"}
	cfg := o.config()
	inodes := append(slices.Clone(listeners[cfg.OutboundPort]), listeners[cfg.InboundPort]...)
	procs, err := processesIn(o.NetNS, inodes)
	if err != nil {
		c.Status, c.Detail = Fail, "cannot list the namespace's processes: "+err.Error()
		return c
	}
	var escaped []string
	for _, p := range procs {
		if p.isSidecar || !(slices.Contains(cfg.ProxyUIDs, p.uid) || slices.Contains(cfg.ProxyGIDs, p.gid)) {
			continue
		}
		escaped = append(escaped, fmt.Sprintf("pid %d (%s) runs as uid %d%s gid %d", p.pid, p.comm, p.uid, userName(p.uid), p.gid))
	}
	if len(escaped) > 0 {
		c.Status = Fail
		c.Detail = "not the sidecar, but exempt from capture: " + strings.Join(escaped, "; ")
		c.Hint = "the rules exempt the proxy's UID and GID, so these processes' connections bypass the sidecar: " +
			"run the app as another user, or the proxy as its own (UID 1337)"
		return c
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("%d processes; none but the sidecar runs as the exempt UIDs %v or GIDs %v", len(procs), cfg.ProxyUIDs, cfg.ProxyGIDs)
	return c
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return " (" + u.Username + ")"
	}
	return ""
}

// probeChecks make real connections the plan says are captured: the
// proxy's own call to 127.0.0.6 over lo (what Istio's validation probes,
// needing no route), and an app's call to a made-up destination when the
// namespace has a route to leave by. Each must be answered at once,
// locally (by the sidecar, or refused by the kernel if none listens); not
// captured, it would wait for an answer from a host that does not exist.
func probeChecks(o Options, listeners map[uint16][]string) []Check {
	cfg := o.config()
	plan, err := capture.Build(cfg)
	if err != nil {
		return []Check{{Name: "capture probe", Status: Fail, Detail: err.Error()}}
	}
	probes := validate.PickProbes(plan, cfg, 9)
	if len(probes) == 0 {
		return []Check{{Name: "capture probe", Status: Info, Detail: "the configuration captures none of the probe's destinations; nothing to probe"}}
	}
	var checks []Check
	for _, probe := range probes {
		checks = append(checks, probeCheck(o, probe, len(listeners[probe.Port]) > 0))
	}
	return checks
}

// probeCheck makes one probe. The app's made-up destination is remote, so
// even a refusal is proof that the kernel redirected it (to a port where
// nothing listens). The proxy's call to 127.0.0.6 is local whatever
// happens: only an accepted connection proves capture, and with nothing
// listening on the inbound port a refusal proves nothing.
func probeCheck(o Options, probe validate.Probe, portListens bool) Check {
	c := Check{Name: "capture probe (app)"}
	if probe.Hairpin {
		c.Name = "capture probe (proxy over lo)"
	}
	start := time.Now()
	conn, err := validate.DialAs(o.NetNS, probe, time.Second)
	if err == nil {
		conn.Close()
	}
	took := time.Since(start).Round(time.Microsecond)
	refused := errors.Is(err, syscall.ECONNREFUSED)
	switch {
	case probe.Hairpin && refused && !portListens:
		c.Status = Info
		c.Detail = fmt.Sprintf("%s was refused, and nothing listens on port %d: capture cannot be told from a refusal", probe, probe.Port)
	case probe.Hairpin && refused:
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s was refused while the proxy listens on port %d: not captured", probe, probe.Port)
		c.Hint = "the kernel is not redirecting the proxy's calls to the pod's own addresses: check the rules above"
	case err == nil || refused || errors.Is(err, syscall.ECONNRESET):
		// Reset: the sidecar took it and dropped it at once (its upstream,
		// the probe's made-up destination, failed fast): still local.
		c.Status = Pass
		c.Detail = fmt.Sprintf("%s was answered locally in %s: captured", probe, took)
	case !probe.Hairpin && (errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH)) && !hasRoute(o.NetNS, probe.Dst):
		c.Status = Info
		c.Detail = fmt.Sprintf("%s found no route out of the namespace, so it could not be probed (%v)", probe, err)
	default:
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s was not captured: %v", probe, err)
		c.Hint = "the kernel is not redirecting these connections: check the rules above"
	}
	return c
}

// hasRoute says whether the namespace has a route to dst: a UDP socket's
// connect looks the route up and sends nothing. With one, an unreachable
// error came from the network (a router's ICMP answer to the probe), so
// the probe left the pod: not captured.
func hasRoute(ns string, dst netip.AddrPort) bool {
	found := false
	_ = netns.Do(ns, func() error {
		c, err := net.Dial("udp", dst.String())
		if err == nil {
			c.Close()
			found = true
		}
		return nil
	})
	return found
}

// sysctlChecks reads the namespace's settings that captured traffic leans
// on: a captured connection takes two local ports and two conntrack entries.
func sysctlChecks(ns string) []Check {
	var out []Check
	_ = netns.Do(ns, func() error {
		read := func(path string) (string, error) {
			b, err := os.ReadFile(path)
			return strings.TrimSpace(string(b)), err
		}
		c := Check{Name: "port range", Status: Pass}
		if v, err := read("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			var lo, hi int
			fmt.Sscan(v, &lo, &hi)
			c.Detail = fmt.Sprintf("net.ipv4.ip_local_port_range %d-%d (%d ports)", lo, hi, hi-lo+1)
			if hi-lo+1 < 10000 {
				c.Status = Fail
				c.Hint = "a captured connection takes two local ports: widen it (e.g. 1024 65000)"
			}
		}
		out = append(out, c)
		c = Check{Name: "tcp_tw_reuse", Status: Pass}
		if v, err := read("/proc/sys/net/ipv4/tcp_tw_reuse"); err == nil {
			c.Detail = "net.ipv4.tcp_tw_reuse " + v
			if v == "0" {
				c.Status = Info
				c.Hint = "under load the proxy's upstream connections leave many TIME_WAIT ports; 1 lets new ones reuse them"
			}
		}
		out = append(out, c)
		c = Check{Name: "route_localnet", Status: Pass}
		if v, err := read("/proc/sys/net/ipv4/conf/all/route_localnet"); err == nil {
			c.Detail = "net.ipv4.conf.all.route_localnet " + v + "; REDIRECT rules do not need it"
		}
		out = append(out, c)
		c = Check{Name: "conntrack", Status: Info, Detail: "conntrack is not active in this namespace"}
		count, err1 := read("/proc/sys/net/netfilter/nf_conntrack_count")
		max, err2 := read("/proc/sys/net/netfilter/nf_conntrack_max")
		if err1 == nil && err2 == nil {
			n, _ := strconv.Atoi(count)
			m, _ := strconv.Atoi(max)
			c.Status, c.Detail = Pass, fmt.Sprintf("%d of %d entries in use", n, m)
			if m > 0 && n*10 > m*9 {
				c.Status = Fail
				c.Hint = "a full table drops new connections: raise net.netfilter.nf_conntrack_max"
			}
		}
		out = append(out, c)
		return nil
	})
	return out
}
