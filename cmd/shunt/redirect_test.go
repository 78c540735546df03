package main

import (
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/testnet"
)

var seedArgs = scenario.CaptureArgs

func redirect(t *testing.T, ns *testnet.NS, extra ...string) (string, int) {
	t.Helper()
	args := append(append([]string{"redirect", "--network-namespace", ns.Path}, seedArgs...), extra...)
	out, errs, code := shunt(t, nil, args...)
	return out + errs, code
}

// TestSeedArgsCaptureRealTraffic runs `shunt redirect` with the seed's
// istio-init args from outside the pod's namespace, and an app's connection
// in the pod then lands on the proxy port with its original destination.
func TestSeedArgsCaptureRealTraffic(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "nft")
	for bin, backend := range map[string][]string{
		"iptables-legacy": {"--force-iptables-binary", "iptables-legacy"},
		"iptables-nft":    {"--force-iptables-binary", "iptables-nft"},
		"nft":             {"--native-nftables"},
	} {
		t.Run(bin, func(t *testing.T) {
			pod := testnet.NewPod(t)
			pod.NS.Listen(t, "0.0.0.0:15001", "proxy")
			pod.Peer.Listen(t, "0.0.0.0:10000", "backend")
			dst := netip.MustParseAddrPort("10.96.0.10:10000")
			if got, _ := pod.NS.Dial(netip.Addr{}, dst, 101, 101); got != "backend 10.96.0.10:10000" {
				t.Fatalf("before capture: %q", got)
			}
			if errs, code := redirect(t, pod.NS, backend...); code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			if got, err := pod.NS.Dial(netip.Addr{}, dst, 101, 101); got != "proxy 10.96.0.10:10000" {
				t.Errorf("after capture: %q (%v)", got, err)
			}
			if got, _ := pod.NS.Dial(netip.Addr{}, dst, 1337, 1337); got != "backend 10.96.0.10:10000" {
				t.Errorf("the proxy's own connection: %q", got)
			}
			errs, code := redirect(t, pod.NS, backend...)
			if code != 0 || !strings.Contains(errs, "already in place") {
				t.Errorf("re-run: exit %d: %s", code, errs)
			}
			if bin == "nft" {
				errs, code := redirect(t, pod.NS, "--native-nftables", "-o", "25")
				if code != exitUsage || !strings.Contains(errs, "shunt's rules in nft differ") || !strings.Contains(errs, "+ chain SHUNT_OUTPUT: tcp dport 25 return") ||
					strings.Contains(errs, "- chain") {
					t.Errorf("a different configuration: exit %d: %s", code, errs)
				}
			}
			if errs, code := redirect(t, pod.NS, append(backend, "--cleanup-only")...); code != 0 || !strings.Contains(errs, "removed shunt rules") {
				t.Errorf("cleanup: exit %d: %s", code, errs)
			}
			if got, _ := pod.NS.Dial(netip.Addr{}, dst, 101, 101); got != "backend 10.96.0.10:10000" {
				t.Errorf("after cleanup: %q", got)
			}
		})
	}
}

// TestPIDTargetsThatProcessesNamespace: --pid acts in the namespace of a
// process, and nowhere else.
func TestPIDTargetsThatProcessesNamespace(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save")
	ns := testnet.NewNS(t, "pid")
	sleeper := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	_, errs, code := shunt(t, nil, append([]string{"redirect", "--pid", strconv.Itoa(sleeper.Process.Pid)}, seedArgs...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if save := ns.Run(t, "iptables-nft-save", "-t", "nat"); !strings.Contains(save, "SHUNT_OUTPUT") {
		t.Errorf("no shunt rules in the process's namespace:\n%s", save)
	}
}

// TestBadInputChangesNothing: each invalid flag set is refused with exit
// code 2 and a message naming the flag and value, and the namespace's rules
// are exactly as before.
func TestBadInputChangesNothing(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save")
	ns := testnet.NewNS(t, "bad")
	if errs, code := redirect(t, ns, "--drop-invalid"); code != 0 {
		t.Fatalf("setup: %s", errs)
	}
	ns.Run(t, "iptables-nft", "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.1/32", "-j", "RETURN")
	before := ns.Run(t, "sh", "-c", "iptables-nft-save | grep -v '^#'")
	cases := []struct {
		args []string
		env  []string
		want []string
	}{
		{[]string{"-p", "70000"}, nil, []string{"--envoy-port (-p)", `"70000"`}},
		{[]string{"-i", "10.0.0.0/33"}, nil, []string{"--istio-service-cidr (-i)", "10.0.0.0/33"}},
		{[]string{"-m", "MASQUERADE"}, nil, []string{"--istio-inbound-interception-mode (-m)", `"MASQUERADE"`}},
		{[]string{"-u", "not-a-user"}, nil, []string{"--proxy-uid (-u)", `"not-a-user"`}},
		{[]string{"-d", "15090,abc"}, nil, []string{"--istio-local-exclude-ports (-d)", `"abc"`}},
		{[]string{"-x", "*"}, nil, []string{"--istio-service-exclude-cidr (-x)"}},
		{[]string{"-c", "eth 0"}, nil, []string{"--istio-exclude-interfaces (-c)"}},
		{nil, []string{"ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE=-1"}, []string{"$ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", `"-1"`}},
		{nil, []string{"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=10.0.0.0/8"}, []string{"loopback CIDR 10.0.0.0/8"}},
		{[]string{"--force-iptables-binary", "iptables-legacyy"}, nil, []string{"--force-iptables-binary", `"iptables-legacyy"`}},
		{[]string{"--pid", "-5"}, nil, []string{"--pid", `"-5"`}},
		{[]string{"-m", "TPROXY", "-t", "1338"}, nil, []string{"TPROXY mark 1338"}},
		{[]string{"-m", "TPROXY", "-r", "255"}, nil, []string{"--istio-inbound-tproxy-route-table (-r)", `"255"`}},
		{[]string{"--redirect-dns", "--dns-servers", "10.0.0.1,nope"}, nil, []string{"--dns-servers", `"nope"`}},
		{[]string{"--native-nftables", "--force-iptables-binary", "iptables-nft"}, nil, []string{"cannot be combined with --native-nftables"}},
		{[]string{"--no-such-flag"}, nil, []string{"unknown flag: --no-such-flag"}},
		// A valid but different configuration is refused without --reconcile.
		{[]string{"-o", "25"}, nil, []string{"differ from this configuration", "--reconcile", "dport 25", "+ [nat]"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(append(tc.args, tc.env...), " "), func(t *testing.T) {
			args := append(append(append([]string{"redirect", "--network-namespace", ns.Path}, seedArgs...), "--drop-invalid"), tc.args...)
			_, errs, code := shunt(t, tc.env, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", code, exitUsage, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q does not say %q", errs, w)
				}
			}
			if after := ns.Run(t, "sh", "-c", "iptables-nft-save | grep -v '^#'"); after != before {
				t.Errorf("rules changed:\n%s", after)
			}
		})
	}
}

// TestTraceLive: `shunt trace --live` makes the connection in the pod and
// reports that the kernel took the model's path.
func TestTraceLive(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "nft")
	pod := testnet.NewPod(t)
	if errs, code := redirect(t, pod.NS); code != 0 {
		t.Fatal(errs)
	}
	args := append(append([]string{"trace", "--live", "--network-namespace", pod.NS.Path}, seedArgs...),
		"--dst", "10.96.0.10", "--dport", "10000", "--uid", "101", "--gid", "101")
	out, errs, code := shunt(t, nil, args...)
	if code != 0 || !strings.Contains(out, "kernel (iptables-nft): nat SHUNT_OUTPUT #9 → nat SHUNT_REDIRECT #1") ||
		!strings.Contains(out, "the kernel took the path the model predicts") {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
}

// TestRunValidation: --run-validation passes when the rules capture, and
// exits 126 with a one-line reason when they do not (--skip-rule-apply on a
// namespace without them).
func TestRunValidation(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "nft")
	for _, backend := range [][]string{nil, {"--native-nftables"}, {"--native-nftables", "-m", "TPROXY", "--dual-stack"}} {
		pod := testnet.NewPod(t)
		out, code := redirect(t, pod.NS, append(backend, "--run-validation", "--probe-timeout", "2s")...)
		if code != 0 || !strings.Contains(out, "validation passed") {
			t.Errorf("with rules %v: exit %d\n%s", backend, code, out)
		}
	}
	bare := testnet.NewPod(t)
	out, code := redirect(t, bare.NS, "--skip-rule-apply", "--run-validation", "--probe-timeout", "1s")
	if code != 126 || !strings.Contains(out, "validation: a connection as the proxy (uid 1337) to 127.0.0.6:15002 was not captured") {
		t.Errorf("without rules: exit %d, want 126\n%s", code, out)
	}
	// Capture needs no route: a namespace with only its link's subnet
	// validates as well as any (the probe stays on lo, as Istio's does).
	routeless := testnet.NewPod(t)
	routeless.NS.Run(t, "ip", "route", "del", "default")
	if out, code := redirect(t, routeless.NS, "--run-validation", "--probe-timeout", "2s"); code != 0 || !strings.Contains(out, "validation passed") {
		t.Errorf("without a default route: exit %d\n%s", code, out)
	}
}
