package testnet

import (
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/scenario"
)

// Start runs a program inside the namespace until the test ends (killed
// then); its output is kept, and shown if the test fails.
func (n *NS) Start(t testing.TB, what string, args ...string) *scenario.Buffer {
	t.Helper()
	cmd := n.Command(args...)
	out := &scenario.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", what, out.String())
		}
	})
	return out
}

// WaitHTTP waits up to 15 s for url to answer 200 from inside the
// namespace.
func (n *NS) WaitHTTP(t testing.TB, url string) {
	t.Helper()
	WaitFor(t, url+" answering 200", func() bool { code, _, _ := n.HTTPGet(url); return code == 200 })
}

// WaitFor waits up to 15 s for ok, and fails the test if it never is.
func WaitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never", what)
		}
	}
}
