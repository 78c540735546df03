// Package scenario builds the seed scenario in network namespaces: a pod
// running Debian's nginx with an unmodified config whose upstream is
// backend-service:10000, a backend host answering for the service range,
// the seed's istio-init capture rules, and a sidecar (shunt's proxy,
// HAProxy or Caddy) as UID 1337, or none. `shunt demo`, its test and the
// benchmarks all run it.
package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shunt-dev/shunt/internal/netlab"
)

// Sidecar is what takes the captured connections.
type Sidecar string

// Sidecars.
const (
	Direct      Sidecar = "direct"       // no capture, no sidecar
	Shunt       Sidecar = "shunt"        // shunt proxy
	HAProxy     Sidecar = "haproxy"      // Debian's HAProxy in mode tcp, transparent destination
	HAProxyHTTP Sidecar = "haproxy-http" // HAProxy in mode http, transparent destination, http-reuse always
	Caddy       Sidecar = "caddy"        // Debian's Caddy, reverse_proxy with keep-alive, to the scenario's fixed upstreams
)

// CaptureArgs are the seed's istio-init args.
var CaptureArgs = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020"}

// Addresses in the scenario.
const (
	ServiceIP  = "10.96.0.10" // what backend-service resolves to in the pod
	BackendURL = "http://backend-service:10000"
)

// SeedFormat is the access log format of the system shunt implements:
// its sidecar's line for nginx's captured request reads
// "GET /test HTTP/1.0" 200 40 1 <request ID> "curl/7.81.0" "-" <upstream> app_service -
const SeedFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% ` +
	`%BYTES_SENT% %DURATION% %REQ(X-REQUEST-ID)% "%REQ(USER-AGENT)%" "%REQ(X-FORWARDED-FOR)%" %UPSTREAM_HOST% ` +
	`%UPSTREAM_CLUSTER% %RESPONSE_FLAGS%`

// Options configure Start.
type Options struct {
	Name      string // prefix of the namespace names; unique on the machine
	Sidecar   Sidecar
	ShuntBin  string    // the shunt binary, readable by UID 1337
	ProxyArgs []string  // extra `shunt proxy` flags
	ProxyEnv  []string  // and variables (KEY=VALUE)
	Log       io.Writer // progress; nil for none
	// AccessLogFormat is the sidecar's access log format; "" for
	// SeedFormat.
	AccessLogFormat string
	// EnvoyConfig, if set, is an Envoy bootstrap shunt proxy runs
	// (--config) instead of Istio's sidecar: outbound is captured to
	// EnvoyPort, inbound not at all, and backend-headless-service
	// resolves to the backend host.
	EnvoyConfig string
	// ControlBin, if set, is shunt-control: it serves Manifest (else
	// MeshManifest) and the shunt sidecar takes all its configuration
	// from it over xDS.
	ControlBin  string
	Manifest    string
	ControlArgs []string // more shunt-control flags
}

// EnvoyPort is where the seed's Envoy configuration listens.
const EnvoyPort = "10000"

// envoyCaptureArgs capture the pod's outbound TCP to the seed's Envoy
// listener, and leave inbound alone (-b "").
var envoyCaptureArgs = []string{"-p", EnvoyPort, "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "", "-d", "15090,15021,15020"}

// Scenario is a running seed scenario. Close tears it all down.
type Scenario struct {
	Pod         *netlab.Pod
	Opts        Options
	dir         string
	procs       []*exec.Cmd
	proxy       *exec.Cmd
	control     *exec.Cmd // shunt-control, when the sidecar follows it
	controlArgv []string
	AccessLog   *Buffer // the sidecar's access log
	NginxConf   string  // the pod's nginx.conf, as nginx reads it
	closeOnce   sync.Once
}

// Buffer is a goroutine-safe bytes.Buffer for a child's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// PodNginxConf is the app's configuration: an ordinary nginx reverse proxy
// that knows nothing of any sidecar.
const PodNginxConf = `worker_processes 1;
daemon off;
error_log {{dir}}/pod-error.log warn;
pid {{dir}}/pod-nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{dir}}/body;
    proxy_temp_path {{dir}}/proxy;
    upstream backend_ups { server backend-service:10000; }
    server {
        listen 80;
        location /test { proxy_pass http://backend_ups; }
    }
}
`

const backendNginxConf = `worker_processes 1;
daemon off;
error_log {{dir}}/backend-error.log warn;
pid {{dir}}/backend-nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{dir}}/bbody;
    server {
        listen 10000;
        location / { add_header X-Backend-Addr $server_addr; return 200 "hello from backend-service: $request_uri, from $remote_addr\n"; }
    }
    server {
        listen 10009;
        location / { return 200 "hello from backend-service v2: $request_uri, from $remote_addr\n"; }
    }
}
`

// Start builds the scenario. On error, whatever was built is torn down.
func Start(ctx context.Context, o Options) (s *Scenario, err error) {
	s = &Scenario{Opts: o, AccessLog: &Buffer{}}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	if s.dir, err = os.MkdirTemp("/tmp", "shunt-scenario-"); err != nil {
		return s, err
	}
	if err = os.Chmod(s.dir, 0o755); err != nil {
		return s, err
	}
	s.logf("namespaces: pod %s-pod (%s), backend host %s-backend (%s, answers for 10.96.0.0/12)", o.Name, netlab.PodIP, o.Name, netlab.PeerIP)
	if s.Pod, err = netlab.NewPod(o.Name+"-pod", o.Name+"-backend"); err != nil {
		return s, err
	}
	for _, ns := range []*netlab.NS{s.Pod.NS, s.Pod.Peer} {
		if err = ns.TuneForLoad(); err != nil {
			return s, err
		}
	}
	// ip netns exec mounts /etc/netns/NAME/hosts over /etc/hosts: the
	// pod's resolver, as a cluster's DNS would be.
	if err = os.MkdirAll(s.hostsDir(), 0o755); err != nil {
		return s, err
	}
	if err = os.WriteFile(filepath.Join(s.hostsDir(), "hosts"), []byte("127.0.0.1 localhost\n"+ServiceIP+" backend-service\n"+netlab.PeerIP+" backend-headless-service\n"), 0o644); err != nil {
		return s, err
	}
	if err = s.startNginx(s.Pod.Peer, "backend", backendNginxConf, "10.1.0.1:10000"); err != nil {
		return s, err
	}
	if err = s.startNginx(s.Pod.NS, "pod", PodNginxConf, "127.0.0.1:80"); err != nil {
		return s, err
	}
	if o.Sidecar == Direct {
		return s, nil
	}
	capture := CaptureArgs
	if o.EnvoyConfig != "" {
		capture = envoyCaptureArgs
	}
	s.logf("capture: shunt redirect %s", strings.Join(capture, " "))
	args := append([]string{"redirect", "--network-namespace", s.Pod.NS.Path, "--log_output_level", "warn"}, capture...)
	if _, err = netlab.Run(o.ShuntBin, args...); err != nil {
		return s, err
	}
	return s, s.startSidecar(ctx)
}

func (s *Scenario) hostsDir() string { return "/etc/netns/" + s.Opts.Name + "-pod" }

func (s *Scenario) logf(format string, args ...any) {
	if s.Opts.Log != nil {
		fmt.Fprintf(s.Opts.Log, format+"\n", args...)
	}
}

func (s *Scenario) startNginx(ns *netlab.NS, name, conf, addr string) error {
	text := strings.ReplaceAll(conf, "{{dir}}", s.dir)
	path := filepath.Join(s.dir, name+"-nginx.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	if name == "pod" {
		s.NginxConf = text
	}
	s.logf("%s: nginx -c %s", name, path)
	cmd := ns.Command("nginx", "-c", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := s.start(cmd); err != nil {
		return err
	}
	return waitTCP(ns, addr)
}

func (s *Scenario) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	s.procs = append(s.procs, cmd)
	return nil
}

func (s *Scenario) startSidecar(ctx context.Context) error {
	switch s.Opts.Sidecar {
	case Shunt:
		// The scenario ends with SIGTERM once its requests are done: the
		// sidecar stops both listeners and exits as soon as it is idle.
		format := s.Opts.AccessLogFormat
		if format == "" {
			format = SeedFormat
		}
		args := []string{s.Opts.ShuntBin, "proxy", "--uid", "1337", "--gid", "1337", "--access-log", "stdout",
			"--access-log-format", format, "--drain-listeners", "all"}
		if s.Opts.EnvoyConfig != "" {
			file := filepath.Join(s.dir, "envoy.yaml")
			if err := os.WriteFile(file, []byte(s.Opts.EnvoyConfig), 0o644); err != nil {
				return err
			}
			args = []string{s.Opts.ShuntBin, "proxy", "--uid", "1337", "--gid", "1337", "--config", file, "--drain-listeners", "all"}
		}
		var env []string
		if s.Opts.ControlBin != "" {
			xdsArgs, xdsEnv, err := s.startControlPlane(format)
			if err != nil {
				return err
			}
			args, env = append([]string{s.Opts.ShuntBin, "proxy", "--uid", "1337", "--gid", "1337", "--drain-listeners", "all"}, xdsArgs...), xdsEnv
		}
		args = append(args, s.Opts.ProxyArgs...)
		s.logf("sidecar: %s %s", strings.Join(env, " "), strings.Join(args, " "))
		s.proxy = s.Pod.NS.Command(args...)
		s.proxy.Env = append(append(os.Environ(), env...), s.Opts.ProxyEnv...)
		s.proxy.Stdout = s.AccessLog
		s.proxy.Stderr = os.Stderr
		if err := s.start(s.proxy); err != nil {
			return err
		}
		return s.waitReady(ctx)
	case HAProxy, HAProxyHTTP, Caddy:
		return s.startOtherSidecar()
	}
	return fmt.Errorf("unknown sidecar %q", s.Opts.Sidecar)
}

// ProxyPID is the sidecar process's PID, for reading its CPU time.
func (s *Scenario) ProxyPID() int {
	if s.proxy == nil || s.proxy.Process == nil {
		return 0
	}
	return s.proxy.Process.Pid
}

func (s *Scenario) waitReady(ctx context.Context) error {
	client := s.Client()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := client.Get("http://127.0.0.1:15021/healthz/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return errors.New("the sidecar did not become ready in 10s")
}

// Client is an HTTP client whose connections start in the pod, as root:
// the pod's own tools, not its app.
func (s *Scenario) Client() *http.Client { return s.Pod.NS.HTTPClient() }

// Curl runs curl in a namespace and returns what it printed.
func Curl(ns *netlab.NS, url string) (string, error) {
	out, err := ns.Run("curl", "-sS", "--max-time", "5", url)
	return strings.TrimSpace(out), err
}

// Outbound is a request from inside the pod to nginx, which proxies it to
// backend-service: the app's outbound connection is the captured one.
func (s *Scenario) Outbound() (string, error) { return Curl(s.Pod.NS, "http://127.0.0.1/test") }

// Inbound is a request from the backend host to the pod's nginx: captured
// inbound, then nginx's own call to backend-service captured outbound.
func (s *Scenario) Inbound() (string, error) {
	return Curl(s.Pod.Peer, "http://"+netlab.PodIP+"/test")
}

// Close stops every process and removes the namespaces and files. It may
// be called more than once.
func (s *Scenario) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Scenario) close() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	if s.Pod != nil {
		s.Pod.Delete()
	}
	if s.Opts.Name != "" {
		os.RemoveAll(s.hostsDir())
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// waitTCP waits until something accepts on addr inside ns.
func waitTCP(ns *netlab.NS, addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("nothing accepts on %s in %s after 10s", addr, ns.Name)
}
