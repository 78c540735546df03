package proxy_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/scenario"
	"github.com/shunt-dev/shunt/internal/testnet"
)

// TestTProxyInbound: with --tproxy the inbound listener takes connections
// TPROXY delivers unrewritten, treats the local address as the original
// destination, sees the client's real address, and hands the connection to
// the app from 127.0.0.6.
func TestTProxyInbound(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft")
	pod := testnet.NewPod(t)
	pod.NS.Run(t, "iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "--dport", "8080",
		"-j", "TPROXY", "--on-port", "15006", "--tproxy-mark", "0x539/0xffffffff")
	pod.NS.Run(t, "ip", "rule", "add", "fwmark", "0x539", "lookup", "133")
	pod.NS.Run(t, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "133")

	access := &scenario.Buffer{}
	proc := exec.Command("ip", "netns", "exec", pod.NS.Name, testnet.ShuntBinary(t), "proxy", "--tproxy",
		"--uid", "1337", "--gid", "1337", "--access-log", "stdout", "--access-log-format", l4Format, "--log-level", "warn")
	proc.Stdout = access
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Process.Kill(); _ = proc.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _, _ := pod.NS.HTTPGet("http://127.0.0.1:15021/healthz/ready"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy not ready")
		}
	}
	inboundToApp(t, pod)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(access.String(), "InboundPassthroughCluster 10.1.0.5:8080 result=-"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("access log:\n%s", access)
		}
	}
	if !strings.Contains(access.String(), "downstream_remote=10.1.0.1:") {
		t.Errorf("the proxy did not see the client's real address:\n%s", access)
	}
}
