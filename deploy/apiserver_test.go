package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shunt-dev/shunt/inject"
	"github.com/shunt-dev/shunt/internal/kubecluster"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// webhookProcess runs `shunt webhook --self-signed` on a loopback port and
// returns its port, its caBundle and a function that stops it.
func webhookProcess(t *testing.T) (port int, caBundle string, stop func()) {
	t.Helper()
	port = kubecluster.FreePort(t)
	cmd := exec.Command(testnet.ShuntBinary(t), "webhook", "--self-signed", "--hosts", "127.0.0.1",
		"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--monitor-addr", "", "--image", "shunt:test")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(t.TempDir(), "webhook.log"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("webhook printed no caBundle: %v", err)
	}
	caBundle, ok := strings.CutPrefix(strings.TrimSpace(line), "caBundle: ")
	if !ok {
		t.Fatalf("webhook's first line is %q, want the caBundle", line)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	// Wait until it accepts.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("webhook does not listen: %v", err)
		}
	}
	return port, caBundle, stop
}

// webhookConfiguration is deploy/webhook.yaml's MutatingWebhookConfiguration
// with its service reference replaced by the test's loopback URL.
func webhookConfiguration(t *testing.T, port int, caBundle string) string {
	t.Helper()
	b, err := os.ReadFile("webhook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := regexp.MustCompile(`(?m)^---$`).Split(string(b), -1)
	mwc := docs[len(docs)-1]
	if !strings.Contains(mwc, "kind: MutatingWebhookConfiguration") {
		t.Fatal("the last document of webhook.yaml is not the MutatingWebhookConfiguration")
	}
	service := regexp.MustCompile(`(?m)^    service: .*$`)
	if n := len(service.FindAllString(mwc, -1)); n != 4 {
		t.Fatalf("%d service references, want 4", n)
	}
	mwc = service.ReplaceAllString(mwc, fmt.Sprintf("    url: https://127.0.0.1:%d/inject", port))
	return strings.ReplaceAll(mwc, "CA_BUNDLE", caBundle)
}

func getPod(t *testing.T, c *kubecluster.Cluster, ns, name string) corev1.Pod {
	t.Helper()
	out, err := c.Kubectl("", "-n", ns, "get", "pod", name, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal([]byte(out), &pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func containerNames(cs []corev1.Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return strings.Join(out, ",")
}

func pod(name, ns, labels, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: {app: %s%s}
spec:
  containers:
  - name: app
    image: nginx
    ports: [{name: http, containerPort: 8080}]
%s`, name, ns, name, labels, extra)
}

func TestWebhookInARealAPIServer(t *testing.T) {
	c := kubecluster.Start(t)
	port, caBundle, stopWebhook := webhookProcess(t)

	// The whole of deploy/webhook.yaml is accepted by the API server; then
	// its webhook points at the test's webhook process instead of the
	// Service (there is no kubelet to run the Deployment).
	manifest, _ := os.ReadFile("webhook.yaml")
	if out, err := c.Kubectl(strings.ReplaceAll(string(manifest), "CA_BUNDLE", caBundle), "apply", "-f", "-"); err != nil {
		t.Fatalf("deploy/webhook.yaml is refused: %v\n%s", err, out)
	}
	if _, err := c.Kubectl(webhookConfiguration(t, port, caBundle), "replace", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: store, labels: {shunt.dev/injection: enabled}}",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy, labels: {istio-injection: disabled}}",
	} {
		if _, err := c.Kubectl(ns, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}

	injected := func(t *testing.T, ns, name string) {
		t.Helper()
		p := getPod(t, c, ns, name)
		if got := containerNames(p.Spec.InitContainers); got != "shunt-init,shunt-proxy" {
			t.Fatalf("%s/%s: init containers %q, want shunt-init,shunt-proxy", ns, name, got)
		}
		proxy := p.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s/%s: the stored proxy is not a native sidecar", ns, name)
		}
		if proxy.Image != "shunt:test" || *proxy.SecurityContext.RunAsUser != 1337 {
			t.Errorf("%s/%s: proxy image %s uid %d", ns, name, proxy.Image, *proxy.SecurityContext.RunAsUser)
		}
		if _, ok := p.Annotations[inject.StatusAnnotation]; !ok {
			t.Errorf("%s/%s: no %s annotation", ns, name, inject.StatusAnnotation)
		}
	}
	untouched := func(t *testing.T, ns, name string) {
		t.Helper()
		p := getPod(t, c, ns, name)
		if len(p.Spec.InitContainers) != 0 || containerNames(p.Spec.Containers) != "app" {
			t.Errorf("%s/%s: changed: init %q containers %q", ns, name, containerNames(p.Spec.InitContainers), containerNames(p.Spec.Containers))
		}
		if _, ok := p.Annotations[inject.StatusAnnotation]; ok {
			t.Errorf("%s/%s: carries %s", ns, name, inject.StatusAnnotation)
		}
	}
	apply := func(t *testing.T, manifest string) (string, error) {
		t.Helper()
		return c.Kubectl(manifest, "apply", "-f", "-")
	}

	t.Run("opted-in namespaces", func(t *testing.T) {
		for _, ns := range []string{"shop", "store"} {
			if _, err := apply(t, pod("web", ns, "", "")); err != nil {
				t.Fatal(err)
			}
			injected(t, ns, "web")
		}
	})
	t.Run("probes rewritten through the webhook", func(t *testing.T) {
		// The webhook's patch replaces the app's probes in place (JSON Patch
		// replace ops ahead of the container inserts); the API server
		// applies it and stores the rewritten probes.
		if _, err := apply(t, pod("probed", "shop", "", "    readinessProbe: {tcpSocket: {port: http}}\n"+
			"    livenessProbe: {httpGet: {path: /live, port: 8080}}\n")); err != nil {
			t.Fatal(err)
		}
		injected(t, "shop", "probed")
		p := getPod(t, c, "shop", "probed")
		app := p.Spec.Containers[0]
		for _, pr := range []struct {
			probe *corev1.Probe
			path  string
		}{{app.ReadinessProbe, "/app-health/app/readyz"}, {app.LivenessProbe, "/app-health/app/livez"}} {
			if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.IntValue() != 15020 {
				t.Errorf("stored probe %+v, want GET %s on 15020", pr.probe, pr.path)
			}
		}
		var probers string
		for _, e := range p.Spec.InitContainers[1].Env {
			if e.Name == inject.AppProbersEnv {
				probers = e.Value
			}
		}
		if !strings.Contains(probers, `"/app-health/app/readyz":{"tcpSocket":{"port":8080}`) {
			t.Errorf("%s = %s", inject.AppProbersEnv, probers)
		}
	})
	t.Run("pod label in a namespace that says nothing", func(t *testing.T) {
		if _, err := apply(t, pod("labelled", "plain", ", sidecar.istio.io/inject: \"true\"", "")); err != nil {
			t.Fatal(err)
		}
		injected(t, "plain", "labelled")
		if _, err := apply(t, pod("unlabelled", "plain", "", "")); err != nil {
			t.Fatal(err)
		}
		untouched(t, "plain", "unlabelled")
	})
	t.Run("opted out", func(t *testing.T) {
		if _, err := apply(t, pod("optout", "shop", ", sidecar.istio.io/inject: \"false\"", "")); err != nil {
			t.Fatal(err)
		}
		untouched(t, "shop", "optout")
		if _, err := apply(t, strings.Replace(pod("annotated-out", "shop", "", ""),
			"metadata:\n", "metadata:\n  annotations: {sidecar.istio.io/inject: \"false\"}\n", 1)); err != nil {
			t.Fatal(err)
		}
		untouched(t, "shop", "annotated-out")
		if _, err := apply(t, pod("legacy", "legacy", ", sidecar.istio.io/inject: \"true\"", "")); err != nil {
			t.Fatal(err)
		}
		untouched(t, "legacy", "legacy")
	})
	t.Run("UID 1337 denied", func(t *testing.T) {
		out, err := apply(t, pod("escape", "shop", "", "    securityContext: {runAsUser: 1337}\n"))
		if err == nil {
			t.Fatalf("a pod running as 1337 was admitted: %s", out)
		}
		for _, want := range []string{`denied the request`, `container "app" runs as UID 1337`, "bypass the sidecar", inject.AllowProxyUID} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the denial does not say %q: %v", want, err)
			}
		}
		if _, err := c.Kubectl("", "-n", "shop", "get", "pod", "escape"); err == nil {
			t.Error("the denied pod was stored")
		}
	})
	t.Run("offline injection is what the API server accepts", func(t *testing.T) {
		// Every golden manifest that injects is valid to a real API server.
		goldens, _ := filepath.Glob("../inject/testdata/in/*.yaml")
		checked := 0
		for _, in := range goldens {
			out, err := exec.Command(testnet.ShuntBinary(t), "inject", "-q", "--image", "shunt:test", "-f", in).Output()
			if err != nil {
				continue // the goldens in error
			}
			verb := "apply"
			if strings.Contains(string(out), "generateName:") {
				verb = "create" // apply needs a name
			}
			if res, err := c.Kubectl(string(out), verb, "--dry-run=server", "-f", "-"); err != nil {
				if strings.Contains(err.Error(), "no matches for kind") || strings.Contains(res, "no matches for kind") {
					continue // a kind this API server has no definition for (Istio's, OpenShift's, Argo's)
				}
				t.Errorf("%s: the API server refuses shunt inject's output: %v\n%s", filepath.Base(in), err, res)
			}
			checked++
		}
		if checked < 25 {
			t.Errorf("only %d manifests checked", checked)
		}
	})
	t.Run("webhook down", func(t *testing.T) {
		stopWebhook()
		// As deployed (failurePolicy Fail), no uncaptured pod gets in.
		out, err := apply(t, pod("while-down", "shop", "", ""))
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("with failurePolicy Fail and the webhook down: %v %s", err, out)
		}
		// With failurePolicy Ignore the pod is created, uninjected.
		patch := `[` + strings.TrimSuffix(strings.Repeat(`{"op":"replace","path":"/webhooks/IDX/failurePolicy","value":"Ignore"},`, 4), ",") + `]`
		for i := range 4 {
			patch = strings.Replace(patch, "IDX", fmt.Sprint(i), 1)
		}
		if _, err := c.Kubectl("", "patch", "mutatingwebhookconfiguration", "shunt-sidecar-injector", "--type=json", "-p", patch); err != nil {
			t.Fatal(err)
		}
		if _, err := apply(t, pod("while-down", "shop", "", "")); err != nil {
			t.Fatalf("with failurePolicy Ignore: %v", err)
		}
		untouched(t, "shop", "while-down")
	})
}
