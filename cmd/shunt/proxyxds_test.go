package main

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestProxyXDSFlags: --xds-address, refused as a user meets it.
func TestProxyXDSFlags(t *testing.T) {
	seed := "../../proxy/envoyconfig/testdata/seed.yaml"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--xds-address", "127.0.0.1:15010"}, "$POD_NAME or $POD_NAMESPACE is unset"},
		{[]string{"--xds-address", "127.0.0.1:15010", "--outbound-port", "15002"}, "--outbound-port shapes the sidecar, which the control plane at --xds-address configures"},
		{[]string{"--xds-address", "127.0.0.1:15010", "--access-log", "stdout"}, "--access-log shapes the sidecar"},
		{[]string{"--config", seed, "--xds-address", "istiod"}, `--xds-address "istiod": not host:port`},
		{[]string{"--config", seed, "--xds-address", "127.0.0.1:15010", "--workers", "2"}, "--xds-address with --workers"},
		{[]string{"--config", seed, "--xds-address", "127.0.0.1:15010"}, "the bootstrap has no node id, and $POD_NAME or $POD_NAMESPACE is unset"},
		{[]string{"--proxy-type", "router"}, "--proxy-type router: a gateway's proxy serves what its control plane sends: give --xds-address"},
		{[]string{"--proxy-type", "waypoint"}, `--proxy-type`},
	} {
		args := append([]string{"proxy", "--uid", "1337", "--gid", "1337"}, c.args...)
		if _, errs, code := shunt(t, []string{"POD_NAME=", "POD_NAMESPACE="}, args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d %q, want %q", c.args, code, errs, c.want)
		}
	}
}

// TestXDSNode: the proxy's identity to the control plane, Istio's, from
// the pod's environment; a bootstrap's node wins.
func TestXDSNode(t *testing.T) {
	env := map[string]string{"POD_NAME": "app-1", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.1.0.5",
		"SERVICE_ACCOUNT": "app", "ISTIO_META_WORKLOAD_NAME": "app", "ISTIO_META_INTERCEPTION_MODE": "TPROXY", "ISTIO_METAJSON_LABELS": `{"app":"app","version":"v1"}`}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	n, err := xdsNode(nil, "sidecar", getenv)
	if err != nil {
		t.Fatal(err)
	}
	md := n.GetMetadata().AsMap()
	if n.GetId() != "sidecar~10.1.0.5~app-1.default~default.svc.cluster.local" || n.GetCluster() != "app.default" ||
		md["NAMESPACE"] != "default" || md["SERVICE_ACCOUNT"] != "app" || md["INTERCEPTION_MODE"] != "TPROXY" || md["LABELS"].(map[string]any)["version"] != "v1" {
		t.Errorf("node %v", n)
	}
	if n, _ := xdsNode(&corev3.Node{Id: "mine"}, "sidecar", getenv); n.GetId() != "mine" {
		t.Errorf("the bootstrap's node: %v", n)
	}
	if n, _ := xdsNode(nil, "router", getenv); n.GetId() != "router~10.1.0.5~app-1.default~default.svc.cluster.local" {
		t.Errorf("a gateway's node: %v", n)
	}
	env["ISTIO_METAJSON_LABELS"] = "app=app"
	if _, err := xdsNode(nil, "sidecar", getenv); err == nil || !strings.Contains(err.Error(), "ISTIO_METAJSON_LABELS") {
		t.Errorf("bad labels: %v", err)
	}
}
