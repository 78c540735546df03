package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The other sidecars' configurations: the same two listeners as shunt's.
const haproxyConf = `global
    maxconn 9000
defaults
    mode {{mode}}
    timeout connect 10s
    timeout client 1h
    timeout server 1h
{{reuse}}frontend outbound
    bind 0.0.0.0:15001
    default_backend passthrough
frontend inbound
    bind 0.0.0.0:15006
    default_backend passthrough_inbound
backend passthrough
    server passthrough 0.0.0.0:0
backend passthrough_inbound
    server passthrough 0.0.0.0:0 source 127.0.0.6
`

// caddyConf: Caddy cannot read a connection's original destination, so
// its upstreams are the scenario's two: backend-service outbound, the
// pod's nginx inbound (from the pod's address: Caddy binds no source).
const caddyConf = `{
	admin off
	auto_https off
	storage file_system {{dir}}/caddy
}
:15001 {
	reverse_proxy ` + ServiceIP + `:10000
}
:15006 {
	reverse_proxy 10.1.0.5:80
}
`

// startOtherSidecar starts HAProxy or Caddy as UID 1337.
func (s *Scenario) startOtherSidecar() error {
	var name, text string
	var argv []string
	switch s.Opts.Sidecar {
	case HAProxy, HAProxyHTTP:
		mode, reuse := "tcp", ""
		if s.Opts.Sidecar == HAProxyHTTP {
			mode, reuse = "http", "    http-reuse always\n"
		}
		name = "haproxy.cfg"
		text = strings.NewReplacer("{{mode}}", mode, "{{reuse}}", reuse).Replace(haproxyConf)
		argv = []string{"haproxy", "-db", "-f"}
	case Caddy:
		name = "Caddyfile"
		text = strings.ReplaceAll(caddyConf, "{{dir}}", s.dir)
		argv = []string{"caddy", "run", "--adapter", "caddyfile", "--config"}
	}
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	if s.Opts.Sidecar == Caddy {
		if err := os.MkdirAll(filepath.Join(s.dir, "caddy"), 0o777); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(s.dir, "caddy"), 0o777); err != nil {
			return err
		}
	}
	s.logf("sidecar: %s %s, as 1337", strings.Join(argv, " "), path)
	args := append([]string{"setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"}, append(argv, path)...)
	s.proxy = s.Pod.NS.Command(args...)
	s.proxy.Env = append(os.Environ(), "HOME="+s.dir, "XDG_DATA_HOME="+s.dir, "XDG_CONFIG_HOME="+s.dir)
	s.proxy.Stdout, s.proxy.Stderr = s.AccessLog, os.Stderr
	if s.Opts.Sidecar == Caddy {
		s.proxy.Stderr = s.AccessLog // Caddy logs every start-up step
	}
	if err := s.start(s.proxy); err != nil {
		return err
	}
	return waitTCP(s.Pod.NS, "127.0.0.1:15001")
}

// BackendPIDs are the backend nginx's processes, master and workers, for
// reading their CPU time.
func (s *Scenario) BackendPIDs() []int {
	if len(s.procs) == 0 || s.procs[0].Process == nil {
		return nil
	}
	master := s.procs[0].Process.Pid
	pids := []int{master}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		return pids
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
