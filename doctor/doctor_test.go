package doctor_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/doctor"
	"github.com/shunt-dev/shunt/internal/captest"
	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/testnet"
	"github.com/shunt-dev/shunt/sidecar"
)

func TestMain(m *testing.M) { testnet.Main(m) }

var seedArgs = scenario.CaptureArgs

func seedConfig() *capture.Config {
	c := captest.Seed()
	return &c
}

func redirect(t *testing.T, pod *testnet.Pod, extra ...string) {
	t.Helper()
	args := append(append([]string{"redirect", "--network-namespace", pod.NS.Path, "--log_output_level", "warn"}, seedArgs...), extra...)
	if out, err := exec.Command(testnet.ShuntBinary(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("redirect: %v: %s", err, out)
	}
}

// startIn runs a command in the pod's namespace until the test ends.
func startIn(t *testing.T, pod *testnet.Pod, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", pod.NS.Name}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func startProxy(t *testing.T, pod *testnet.Pod) {
	t.Helper()
	startIn(t, pod, testnet.ShuntBinary(t), "proxy", "--uid", "1337", "--gid", "1337", "--access-log", "off", "--log-level", "error")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _, _ := pod.NS.HTTPGet("http://127.0.0.1:15021/healthz/ready"); code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy not ready")
		}
	}
}

// TestDoctor breaks a pod one way at a time; each time exactly the check
// for that break fails, and says what is wrong. The healthy pod passes all.
func TestDoctor(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "iptables-legacy-save", "nft", "setpriv")
	cases := []struct {
		name   string
		setup  func(*testing.T, *testnet.Pod)
		failed []string // checks that must fail; every other must not
		says   string   // in the failed checks' detail or diff
		dual   bool     // the pod, and the doctor's configuration, are dual-stack
	}{
		{"healthy", func(t *testing.T, p *testnet.Pod) { redirect(t, p); startProxy(t, p) }, nil, "", false},
		{"healthy on native nftables", func(t *testing.T, p *testnet.Pod) { redirect(t, p, "--native-nftables"); startProxy(t, p) }, nil, "", false},
		{"native nftables drifted", func(t *testing.T, p *testnet.Pod) {
			redirect(t, p, "--native-nftables", "-o", "25")
			startProxy(t, p)
		}, []string{"shunt rules"}, "tcp dport 25", false},
		{"rules missing", func(t *testing.T, p *testnet.Pod) { startProxy(t, p) },
			[]string{"shunt rules", "capture probe (proxy over lo)", "capture probe (app)"}, "none of shunt's rules", false},
		{"no default route", func(t *testing.T, p *testnet.Pod) {
			redirect(t, p)
			startProxy(t, p)
			p.NS.Run(t, "ip", "route", "del", "default")
		}, nil, "", false},
		{"rules drifted", func(t *testing.T, p *testnet.Pod) { redirect(t, p, "-o", "25"); startProxy(t, p) },
			[]string{"shunt rules"}, "dport 25", false},
		{"IPv6 rules drifted on a dual-stack pod", func(t *testing.T, p *testnet.Pod) {
			redirect(t, p, "--dual-stack")
			p.NS.Run(t, "ip6tables-nft", "-t", "nat", "-I", "SHUNT_OUTPUT", "-d", "2001:db8::/32", "-j", "RETURN")
			startProxy(t, p)
		}, []string{"shunt rules"}, "[ip6tables nat] -A SHUNT_OUTPUT -d 2001:db8::/32 -j RETURN", true},
		{"two backends", func(t *testing.T, p *testnet.Pod) {
			redirect(t, p, "--force-iptables-binary", "iptables-nft")
			p.NS.Run(t, "iptables-legacy", "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.9/32", "-j", "RETURN")
			startProxy(t, p)
		}, []string{"rule backends"}, "iptables-legacy and iptables-nft", false},
		{"proxy not listening", func(t *testing.T, p *testnet.Pod) { redirect(t, p) },
			[]string{"proxy listening"}, "nothing listens on 15001 and 15006", false},
		{"app runs as the proxy's UID", func(t *testing.T, p *testnet.Pod) {
			redirect(t, p)
			startProxy(t, p)
			startIn(t, p, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "sleep", "60")
		}, []string{"app identities"}, "(sleep) runs as uid 1337", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := testnet.NewPod(t)
			tc.setup(t, pod)
			time.Sleep(100 * time.Millisecond) // let started processes reach their steady state
			cfg := seedConfig()
			cfg.DualStack = tc.dual
			r := doctor.Run(context.Background(), doctor.Options{NetNS: pod.NS.Path, Config: cfg})
			var out strings.Builder
			r.Write(&out)
			for _, c := range r.Checks {
				shouldFail := false
				for _, f := range tc.failed {
					shouldFail = shouldFail || f == c.Name
				}
				if (c.Status == doctor.Fail) != shouldFail {
					t.Errorf("check %q: %s, want failed=%v\n%s", c.Name, c.Status, shouldFail, out.String())
				}
				if shouldFail && !strings.Contains(c.Detail+c.Diff, tc.says) && tc.failed[0] == c.Name {
					t.Errorf("check %q does not say %q:\n%s", c.Name, tc.says, out.String())
				}
			}
			if r.Failed() != (len(tc.failed) > 0) {
				t.Errorf("Failed() = %v:\n%s", r.Failed(), out.String())
			}
			t.Logf("\n%s", out.String())
		})
	}
}

// TestDoctorCommand runs `shunt doctor` as a user would: exit 0 on a
// healthy pod, 1 on a broken one, JSON on request.
func TestDoctorCommand(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "iptables-legacy-save", "nft")
	pod := testnet.NewPod(t)
	redirect(t, pod)
	startProxy(t, pod)
	run := func(args ...string) (string, int) {
		out, err := exec.Command(testnet.ShuntBinary(t), append([]string{"doctor", "--network-namespace", pod.NS.Path}, args...)...).CombinedOutput()
		if e, ok := err.(*exec.ExitError); ok {
			return string(out), e.ExitCode()
		}
		return string(out), 0
	}
	if out, code := run(seedArgs...); code != 0 || !strings.Contains(out, "✔ shunt rules") || strings.Contains(out, "✘") {
		t.Errorf("healthy: exit %d\n%s", code, out)
	}
	if out, code := run(append(seedArgs, "--json")...); code != 0 || !strings.Contains(out, `"status": "pass"`) {
		t.Errorf("json: exit %d\n%s", code, out)
	}
	if out, code := run(append(seedArgs, "-i", "10.0.0.0/8")...); code != 1 || !strings.Contains(out, "✘ shunt rules") {
		t.Errorf("against another plan: exit %d\n%s", code, out)
	}
	_ = strconv.Itoa(sidecar.ProxyUID)
}
