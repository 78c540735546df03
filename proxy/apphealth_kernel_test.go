package proxy_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/shunt-dev/shunt/inject"
)

// probedPod is a pod whose app has an HTTP readiness probe, a TCP
// liveness probe and a gRPC startup probe.
const probedPod = `apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  containers:
  - name: app
    image: app
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /ready, port: http}}
    livenessProbe: {tcpSocket: {port: 3333}}
    startupProbe: {grpc: {port: 9090}}
`

// TestAppProbesTestTheApp: injection rewrites the app's probes to the
// proxy's status port; the kubelet's probes (made here from the peer, as
// a node's kubelet would) fail while the app is down and pass once it is
// up, for each kind. Without the rewrite, the kubelet's TCP probe of a
// captured port passes with nothing listening: the sidecar took it.
func TestAppProbesTestTheApp(t *testing.T) {
	out, _, err := inject.DefaultTemplate().Documents([]byte(probedPod), inject.Namespace{Default: true})
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(out, &pod); err != nil {
		t.Fatal(err)
	}
	var probers string
	for _, e := range pod.Spec.InitContainers[1].Env {
		if e.Name == inject.AppProbersEnv {
			probers = e.Value
		}
	}
	app := pod.Spec.Containers[0]
	probes := map[string]*corev1.Probe{"http": app.ReadinessProbe, "tcp": app.LivenessProbe, "grpc": app.StartupProbe}
	// No INSTANCE_IP: the proxy finds the pod's address on eth0.
	s := newSidecarPodWith(t, sidecarOptions{env: []string{inject.AppProbersEnv + "=" + probers}})
	kubelet := func(kind string) int {
		g := probes[kind].HTTPGet
		code, body, err := s.Peer.HTTPGet(fmt.Sprintf("http://10.1.0.5:%d%s", g.Port.IntValue(), g.Path))
		if err != nil {
			t.Fatalf("%s probe: %v", kind, err)
		}
		t.Logf("%s probe %s: %d %s", kind, g.Path, code, strings.TrimSpace(body))
		return code
	}
	for kind := range probes {
		if code := kubelet(kind); code == 200 {
			t.Errorf("%s probe passed with the app down", kind)
		}
	}
	// What the rewrite prevents: a raw TCP probe of port 3333 is answered
	// by the sidecar, not refused (its handshake completes; the sidecar's
	// reset, once its own dial is refused, can come before the connect
	// returns on a busy machine).
	c, err := s.Peer.DialConn(netip.Addr{}, netip.MustParseAddrPort("10.1.0.5:3333"), 0, 0)
	if err == nil {
		c.Close()
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a raw TCP probe of a captured port was refused: %v (expected the sidecar to take it)", err)
	}

	// The app comes up: an HTTP server, a TCP listener, a gRPC health server.
	web := s.NS.Listener(t, "0.0.0.0:80")
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
		}
	}))
	tcp := s.NS.Listener(t, "0.0.0.0:3333")
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	grpcLn := s.NS.Listener(t, "0.0.0.0:9090")
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(grpcLn)
	defer srv.Stop()
	for kind := range probes {
		if code := kubelet(kind); code != 200 {
			t.Errorf("%s probe failed with the app up: %d", kind, code)
		}
	}
	// The app goes unhealthy on gRPC: the probe says so.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if code := kubelet("grpc"); code == 200 {
		t.Error("the gRPC probe passed for a NOT_SERVING app")
	}
}
