package scenario

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shunt-dev/shunt/internal/netlab"
)

// ControlAddr is where shunt-control serves xDS: on the backend host,
// which the sidecar (UID 1337, not captured) reaches directly.
const ControlAddr = netlab.PeerIP + ":15010"

// MeshManifest is the scenario's cluster as shunt-control reads it: the
// app pod, the service that selects it, and backend-service on
// ServiceIP, whose endpoint is the backend host's nginx (which answers
// as a second version on 10009).
const MeshManifest = `apiVersion: v1
kind: Pod
metadata: {name: app-1, namespace: default, labels: {app: app}}
spec:
  containers: [{name: nginx, image: nginx, ports: [{name: http-web, containerPort: 80}]}]
status: {podIP: ` + netlab.PodIP + `}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec:
  selector: {app: app}
  clusterIP: 10.96.0.5
  ports: [{name: http, port: 80, targetPort: http-web}]
---
apiVersion: v1
kind: Service
metadata: {name: backend-service, namespace: default}
spec:
  selector: {app: backend}
  clusterIP: ` + ServiceIP + `
  ports: [{name: http, port: 10000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-service-1, namespace: default, labels: {kubernetes.io/service-name: backend-service}}
addressType: IPv4
ports: [{name: http, port: 10000}]
endpoints: [{addresses: [` + netlab.PeerIP + `], conditions: {ready: true}}]
`

// startControlPlane runs shunt-control on the backend host, serving the
// scenario's manifest with the sidecar's access log, and returns the
// sidecar's arguments and environment to follow it.
func (s *Scenario) startControlPlane(format string) (args, env []string, err error) {
	manifest := filepath.Join(s.dir, "mesh.yaml")
	text := s.Opts.Manifest
	if text == "" {
		text = MeshManifest
	}
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		return nil, nil, err
	}
	s.controlArgv = []string{s.Opts.ControlBin, "--from-file", manifest, "--addr", ControlAddr, "--monitor-addr", netlab.PeerIP + ":15014",
		"--access-log-file", "/dev/stdout", "--access-log-format", format}
	s.controlArgv = append(s.controlArgv, s.Opts.ControlArgs...)
	s.logf("control plane: %s", strings.Join(s.controlArgv, " "))
	if err := s.runControlPlane(); err != nil {
		return nil, nil, err
	}
	return []string{"--xds-address", ControlAddr},
		// The pod's labels, as injection passes them (its canonical
		// service, app, is the mesh graph's node).
		[]string{"POD_NAME=app-1", "POD_NAMESPACE=default", "INSTANCE_IP=" + netlab.PodIP, `ISTIO_METAJSON_LABELS={"app":"app"}`}, nil
}

func (s *Scenario) runControlPlane() error {
	cmd := s.Pod.Peer.Command(s.controlArgv...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := s.start(cmd); err != nil {
		return err
	}
	s.control = cmd
	return waitTCP(s.Pod.Peer, ControlAddr)
}

// SetManifest replaces what shunt-control serves: it reads its file
// again within a second of a change.
func (s *Scenario) SetManifest(text string) error {
	if s.control == nil {
		return fmt.Errorf("no control plane in this scenario")
	}
	path := filepath.Join(s.dir, "mesh.yaml")
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RestartControlPlane kills shunt-control (SIGKILL: the sidecar gets no
// goodbye) and starts it again.
func (s *Scenario) RestartControlPlane() error {
	if s.control == nil {
		return fmt.Errorf("no control plane in this scenario")
	}
	_ = s.control.Process.Kill()
	_ = s.control.Wait()
	s.procs = slices.DeleteFunc(s.procs, func(c *exec.Cmd) bool { return c == s.control })
	return s.runControlPlane()
}
