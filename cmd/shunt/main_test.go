package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// shuntBin is the shunt binary built once for the tests that run it as a
// user would: in another namespace, with exit codes and standard error.
var shuntBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("/tmp", "shunt-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shuntBin = filepath.Join(dir, "shunt")
	if out, err := exec.Command("go", "build", "-o", shuntBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building shunt: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	testnet.RemoveBuilt()
	os.Exit(code)
}

// shunt runs the binary and returns its standard output, standard error and
// exit code.
func shunt(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(shuntBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// startProcess runs name with args until the test ends: then SIGTERM, and
// its standard error logged if the test failed.
func startProcess(t *testing.T, name string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(name, args...)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s's standard error:\n%s", name, stderr.String())
		}
	})
	return cmd, stderr
}

func TestExplainFormats(t *testing.T) {
	seed := strings.Fields("-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -b * -d 15090,15021,15020")
	out, errs, code := shunt(t, nil, append([]string{"explain"}, seed...)...)
	if code != 0 || !strings.Contains(out, "SHUNT_OUTPUT (table nat, entered from nat OUTPUT)") ||
		!strings.Contains(out, "proxy UID 1337's own traffic is not captured") {
		t.Errorf("text: code %d, stderr %q, output:\n%s", code, errs, out)
	}
	out, _, code = shunt(t, nil, append([]string{"explain", "--format", "iptables"}, seed...)...)
	if code != 0 || !strings.Contains(out, "-A SHUNT_REDIRECT -p tcp -m comment --comment \"shunt: redirect to the proxy\\'s outbound port 15001\" -j REDIRECT --to-ports 15001") {
		t.Errorf("iptables: code %d, output:\n%s", code, out)
	}
	out, _, code = shunt(t, nil, append([]string{"explain", "--format", "json"}, seed...)...)
	if code != 0 || !strings.Contains(out, `"name": "SHUNT_INBOUND"`) || !strings.Contains(out, `"verdict": "REDIRECT → 15006"`) {
		t.Errorf("json: code %d, output:\n%s", code, out)
	}
	if _, errs, code = shunt(t, nil, "explain", "--format", "yaml"); code != exitUsage || !strings.Contains(errs, `"yaml"`) {
		t.Errorf("bad format: code %d, stderr %q", code, errs)
	}
}

func TestTraceCommand(t *testing.T) {
	seed := strings.Fields("-u 1337 -i * -b * -d 15090,15021,15020")
	cases := []struct {
		args, want string
	}{
		{"--dst 10.96.0.10 --dport 10000 --uid 101", "verdict: REDIRECT → 15001"},
		{"--dst 10.96.0.10 --dport 10000 --uid 1337", "verdict: not captured (proxy UID 1337's own traffic is not captured)"},
		{"--direction in --dst 10.1.0.5 --dport 15021", "verdict: not captured (inbound port is excluded from capture)"},
		{"--direction in --dst 10.1.0.5 --dport 80", "✔ nat SHUNT_INBOUND #3"},
	}
	for _, tc := range cases {
		out, errs, code := shunt(t, nil, append(append([]string{"trace"}, seed...), strings.Fields(tc.args)...)...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("trace %s: code %d, stderr %q, output:\n%s\nwant %q", tc.args, code, errs, out, tc.want)
		}
	}
	out, _, code := shunt(t, nil, append(append([]string{"trace", "--format", "json"}, seed...), "--dst", "10.96.0.10", "--dport", "80")...)
	if code != 0 || !strings.Contains(out, `"outcome": "redirected"`) {
		t.Errorf("trace json: code %d:\n%s", code, out)
	}
	if _, errs, code := shunt(t, nil, "trace", "--dst", "nowhere", "--dport", "80"); code != exitUsage || !strings.Contains(errs, `--dst: "nowhere"`) {
		t.Errorf("bad --dst: code %d, stderr %q", code, errs)
	}
}

func TestDryRunTouchesNothing(t *testing.T) {
	out, _, code := shunt(t, nil, "redirect", "-n", "-u", "1337", "-i", "*", "-b", "*", "--network-namespace", "/nonexistent")
	if code != 0 || !strings.HasPrefix(out, "*nat\n") {
		t.Errorf("dry run: code %d, output:\n%s", code, out)
	}
}

// TestProxyConfigFlags: --config and --validate, as a user meets them.
func TestProxyConfigFlags(t *testing.T) {
	seed := "../../proxy/envoyconfig/testdata/seed.yaml"
	if out, errs, code := shunt(t, nil, "proxy", "--config", seed, "--validate"); code != 0 || !strings.Contains(out, "OK: 1 listeners, 1 clusters") {
		t.Errorf("the seed: code %d %q %q", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	b, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), "ROUND_ROBIN", "LOAD_BALANCING_POLICY_CONFIG", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := shunt(t, nil, "proxy", "--config", bad, "--validate"); code != exitUsage ||
		!strings.Contains(errs, "static_resources.clusters[0].lb_policy: LOAD_BALANCING_POLICY_CONFIG is not implemented by shunt") {
		t.Errorf("a refused field: code %d %q", code, errs)
	}
	for _, args := range [][]string{
		{"--validate"},
		{"--config", seed, "--tproxy", "--validate"},
		{"--config", seed, "--port-protocol", "80=http", "--validate"},
		{"--protocol-detection", "off", "--protocol-detection-timeout", "1s", "--uid", "1337", "--gid", "1337"},
		{"--protocol-detection", "maybe"},
		{"--metadata-exchange-headers", "sometimes"},
		{"--config", seed, "--metadata-exchange-headers", "off", "--validate"},
	} {
		if _, errs, code := shunt(t, nil, append([]string{"proxy"}, args...)...); code != exitUsage || errs == "" {
			t.Errorf("%v: code %d %q", args, code, errs)
		}
	}
}

// TestProxyReloadsItsConfig: shunt proxy --config picks up a changed file
// by itself, and keeps the configuration in force when the new one is
// bad (the error logged), SIGHUP or not.
func TestProxyReloadsItsConfig(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	file := filepath.Join(t.TempDir(), "envoy.yaml")
	config := func(body string) string {
		return fmt.Sprintf(`
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: reload
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: %s}}}]}]
`, port, body)
	}
	if err := os.WriteFile(file, []byte(config("one")), 0o644); err != nil {
		t.Fatal(err)
	}
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	cmd, stderr := startProcess(t, shuntBin, "proxy", "--config", file, "--allow-root", "--capture-uid", uid, "--capture-gid", gid,
		"--health-addr", "", "--status-addr", "", "--prometheus-addr", "", "--admin-addr", "", "--drain-timeout", "1s")
	get := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); get() != want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the proxy never answered %q", want)
			}
		}
	}
	waitFor("one")
	if err := os.WriteFile(file, []byte(config("two")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("two")
	if err := os.WriteFile(file, []byte(strings.Replace(config("three"), "stat_prefix: reload", "stat_prefx: reload", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(1500 * time.Millisecond)
	if got := get(); got != "two" || !strings.Contains(stderr.String(), "the configuration was not reloaded") ||
		!strings.Contains(stderr.String(), "stat_prefx: unknown field") {
		t.Errorf("after a bad file: %q; stderr:\n%s", got, stderr.String())
	}
}
