package captest

import (
	"net/netip"
	"os"
	"testing"

	"github.com/shunt-dev/shunt/capture/trace"
)

// ExpectedReply is the line that the listener the tracer predicts would
// answer in the kernel tests' pods: "out" on 15001, "in" on 15006, "app"
// for a destination in the pod (local), "peer" for one beyond it, and
// nothing for a dropped packet.
func ExpectedReply(pkt trace.Packet, res trace.Result, local bool) string {
	dst := netip.AddrPortFrom(pkt.Dst, pkt.DstPort).String()
	switch {
	case res.Outcome == trace.Redirected && res.Port == 15001:
		return "out " + dst
	case res.Outcome == trace.Redirected && res.Port == 15006:
		return "in " + dst
	case res.Outcome == trace.Dropped:
		return ""
	case local:
		return "app " + dst
	}
	return "peer " + dst
}

// Golden compares got with the golden file at path, rewriting the file
// first when update is set (the tests' -update flag).
func Golden(t *testing.T, path, got string, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("rendering differs from %s (run with -update after review):\n%s", path, got)
	}
}
