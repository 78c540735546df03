package deploy_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/shunt-dev/shunt/internal/testnet"
)

// podman runs podman with the test's own containers.conf: runc (crun fails
// on this cgroup layout) and descriptor and process limits that fit the
// machine's hard limits.
type podman struct {
	t    *testing.T
	conf string
}

func (p podman) run(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (p podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

func requirePodman(t *testing.T) {
	fail := t.Skipf
	if os.Getenv("CI") != "" && os.Geteuid() == 0 {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		t.Skip("pod test: needs root for podman's networks (run the tests as root, as CI does)")
	}
	for _, tool := range []string{"podman", "runc", "debootstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail("pod test: %s is not installed (.ci/deps installs it)", tool)
		}
	}
}

// listenFree listens on addr even before the address exists (the bridge
// appears when the pod starts).
func listenFree(t *testing.T, addr string) net.Listener {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestInjectedPodUnderPodman runs an injected pod with `podman kube play`:
// the image built from Debian's packages (deploy/image/build.sh), the init
// step applying the rules in the pod's network namespace, the proxy as UID
// 1337, and an app that knows nothing of it connecting to a backend. The
// backend sees the connection, and the proxy's access log shows it arrived
// on the outbound listener with the app's original destination.
func TestInjectedPodUnderPodman(t *testing.T) {
	requirePodman(t)
	dir := t.TempDir()
	p := podman{t, filepath.Join(dir, "containers.conf")}
	os.WriteFile(p.conf, []byte(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`), 0o644)

	id := fmt.Sprintf("%d", rand.IntN(90000)+10000)
	tag := "localhost/shunt:test-" + id
	build := exec.Command("./image/build.sh", tag)
	build.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/image/build.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { p.run("rmi", "-f", tag) })

	// netavark turns IPv4 forwarding on for its bridges; leave the host as
	// it was found.
	if fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil {
		t.Cleanup(func() { os.WriteFile("/proc/sys/net/ipv4/ip_forward", fwd, 0o644) })
	}
	subnet := rand.IntN(100) + 100
	network := "shunt-t" + id
	gateway := fmt.Sprintf("10.89.%d.1", subnet)
	p.must("network", "create", "--subnet", fmt.Sprintf("10.89.%d.0/24", subnet), "--gateway", gateway, network)
	t.Cleanup(func() { p.run("network", "rm", "-f", network) })

	// The backend: the test itself, on the network's gateway address.
	ln := listenFree(t, gateway+":10000")
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "reply from backend\n")
		got <- strings.TrimSpace(line) + " from " + c.RemoteAddr().String()
	}()

	pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: shop-%s
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    command: [bash, -c]
    args:
    - |
      for i in $(seq 100); do
        if exec 3<>/dev/tcp/%s/10000; then
          echo "hello from app" >&3
          read -r reply <&3
          echo "got: $reply"
          exit 0
        fi
        sleep 0.2
      done
      exit 1
`, id, tag, gateway)
	injectCmd := exec.Command(testnet.ShuntBinary(t), "inject", "-q", "-f", "-", "--sidecar-mode", "classic",
		"--image", tag, "--image-pull-policy", "Never")
	injectCmd.Stdin = strings.NewReader(pod)
	injected, err := injectCmd.Output()
	if err != nil {
		t.Fatalf("shunt inject: %v", err)
	}
	manifest := filepath.Join(dir, "pod.yaml")
	os.WriteFile(manifest, forPodman(t, injected), 0o644)
	name := "shop-" + id
	t.Cleanup(func() { p.run("pod", "rm", "-f", "-t", "0", name) })
	p.must("kube", "play", "--network", network, manifest)

	logs := func(container string) string {
		out, _ := p.run("logs", name+"-"+container)
		return out
	}
	select {
	case line := <-got:
		if !strings.HasPrefix(line, "hello from app from 10.89.") {
			t.Errorf("the backend got %q", line)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the backend got nothing\ninit: %s\nproxy: %s\napp: %s", logs("shunt-init"), logs("shunt-proxy"), logs("app"))
	}
	if out, err := p.run("wait", name+"-app"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("app exit %q %v\n%s", out, err, logs("app"))
	}
	if !strings.Contains(logs("app"), "got: reply from backend") {
		t.Errorf("the app did not get the backend's reply:\n%s", logs("app"))
	}
	// The proxy writes its access log line when the connection closes: a
	// TCP flow (the app's greeting is not HTTP) in Envoy's default format,
	// to the original destination.
	want := `"- - -" 0 - 15 19 ` // "hello from app\n" in, "reply from backend\n" out
	wantDst := fmt.Sprintf(`"%s:10000"`, gateway)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs("shunt-proxy"), want) || !strings.Contains(logs("shunt-proxy"), wantDst); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy's log has no %q … %q:\n%s\ninit: %s", want, wantDst, logs("shunt-proxy"), logs("shunt-init"))
		}
	}
	t.Logf("proxy access log: %s", strings.TrimSpace(logs("shunt-proxy")))
}

// forPodman stands in for the downward API fields podman kube play does
// not implement (it has a pod's name, not its namespace, address or
// service account): the namespace and service account "default", and no
// INSTANCE_IP (the proxy reads the pod's address from its interfaces).
func forPodman(t *testing.T, manifest []byte) []byte {
	t.Helper()
	var pod corev1.Pod
	if err := yaml.Unmarshal(manifest, &pod); err != nil {
		t.Fatalf("the injected pod: %v", err)
	}
	fix := func(cs []corev1.Container) {
		for i := range cs {
			var env []corev1.EnvVar
			for _, e := range cs[i].Env {
				ref := e.ValueFrom
				switch {
				case ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath == "metadata.name":
					env = append(env, e)
				case ref.FieldRef.FieldPath == "metadata.namespace", ref.FieldRef.FieldPath == "spec.serviceAccountName":
					env = append(env, corev1.EnvVar{Name: e.Name, Value: "default"})
				}
			}
			cs[i].Env = env
		}
	}
	fix(pod.Spec.InitContainers)
	fix(pod.Spec.Containers)
	out, err := yaml.Marshal(&pod)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
