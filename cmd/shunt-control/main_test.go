package main_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

const appNode = "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local"

// run runs shunt-control and returns its output and exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(testnet.ControlBinary(t), args...).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestUsage: what a user gets wrong is refused with exit 2, naming it;
// --dump prints a sidecar's configuration.
func TestUsage(t *testing.T) {
	mesh := "../../control/testdata/mesh.yaml"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--outbound-traffic-policy", "DENY"}, `--outbound-traffic-policy "DENY": not ALLOW_ANY or REGISTRY_ONLY`},
		{[]string{"--discovery-selectors", "env in (prod"}, `--discovery-selectors "env in (prod": `},
		{[]string{"--kubeconfig", "k", "--from-file", mesh}, "give one source"},
		{[]string{"--dump", appNode}, "--dump reads --from-file"},
		{[]string{"--from-file", "/nonexistent.yaml"}, "--from-file: open /nonexistent.yaml"},
		{[]string{"--from-file", mesh, "--access-log-file", "/dev/stdout", "--access-log-format", "{bad", "--dump", appNode}, "access log format"},
		{[]string{"--from-file", mesh, "--dump", "waypoint~1~2~3"}, "not a sidecar's or a gateway's"},
		{[]string{"--debounce-after", "1s", "--debounce-max", "10ms"}, "--debounce-max 10ms is under --debounce-after 1s"},
		{[]string{"--metadata-exchange-headers", "sometimes"}, `--metadata-exchange-headers "sometimes": not always, in-mesh or off`},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
	} {
		if out, code := run(t, c.args...); code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d %q, want 2 and %q", c.args, code, out, c.want)
		}
	}
	out, code := run(t, "--from-file", mesh, "--dump", appNode)
	if code != 0 || !strings.Contains(out, "name: outbound|10000||backend-service.default.svc.cluster.local") {
		t.Errorf("--dump: exit %d\n%s", code, out)
	}
}

// TestFollowsFile: the manifests are re-read when the file changes; a
// file that does not load leaves the last good world.
func TestFollowsFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	svc := func(name string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + "}\nspec: {clusterIP: 10.96.0.9, ports: [{name: http, port: 80}]}\n"
	}
	os.WriteFile(file, []byte(svc("a")), 0o644)
	monitor := freeAddr(t)
	cmd := exec.Command(testnet.ControlBinary(t), "--from-file", file, "--addr", freeAddr(t), "--monitor-addr", monitor)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	services := func() string {
		resp, err := http.Get("http://" + monitor + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "pilot_services ") {
				return line
			}
		}
		return string(b)
	}
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); services() != want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("want %q, have %q", want, services())
			}
		}
	}
	waitFor("pilot_services 1")
	os.WriteFile(file, []byte(svc("a")+"---\n"+svc("b")), 0o644)
	waitFor("pilot_services 2")
	os.WriteFile(file, []byte("kind: Service\nspec: {ports: [{port: x}]}\n"), 0o644)
	time.Sleep(2500 * time.Millisecond) // past the next check
	if got := services(); got != "pilot_services 2" {
		t.Errorf("after a file that does not load: %q, want the last good world's", got)
	}
}

func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", kubecluster.FreePort(t)) }
