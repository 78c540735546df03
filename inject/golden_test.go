package inject

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/internal/captest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// templateFor reads an input's optional first line
// "# template: image=… pull=… mode=… nftables=true".
func templateFor(t *testing.T, in []byte) Template {
	tpl := DefaultTemplate()
	line, _, _ := strings.Cut(string(in), "\n")
	spec, ok := strings.CutPrefix(line, "# template: ")
	if !ok {
		return tpl
	}
	for _, kv := range strings.Fields(spec) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "image":
			tpl.Image = v
		case "pull":
			tpl.PullPolicy = corev1.PullPolicy(v)
		case "mode":
			tpl.Mode = SidecarMode(v)
		case "nftables":
			tpl.NativeNftables = v == "true"
		case "xds":
			tpl.XDSAddress = v
		case "ca":
			tpl.CAAddress = v
		case "tracing":
			tpl.TracingCollector = v
		default:
			t.Fatalf("template line: unknown %q", k)
		}
	}
	return tpl
}

// render is what a golden file holds: the output, then what was reported,
// or the error.
func render(out []byte, reports []Report, err error) string {
	var b strings.Builder
	if err == nil {
		b.Write(out)
	}
	b.WriteString("# ---- report\n")
	for _, r := range reports {
		fmt.Fprintf(&b, "# %s: inject=%t (%s)\n", r.Object, r.Decision.Inject, r.Decision.Reason)
		for _, w := range r.Warnings {
			fmt.Fprintf(&b, "#   warning: %s\n", w)
		}
	}
	if err != nil {
		b.WriteString("# ---- error\n")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(&b, "# %s\n", line)
		}
	}
	return b.String()
}

func TestGoldenInjections(t *testing.T) {
	inputs, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(inputs) < 30 {
		t.Fatalf("want at least 30 golden inputs, have %d (%v)", len(inputs), err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			tpl := templateFor(t, src)
			out, reports, err := tpl.Documents(src, Namespace{Default: true})
			captest.Golden(t, filepath.Join("testdata", name+".golden"), render(out, reports, err), *update)
			if err != nil {
				if out != nil {
					t.Error("an input in error still produced output")
				}
				return
			}
			checkInjected(t, out, reports)
			// Injecting the output again changes nothing, byte for byte.
			again, _, err := tpl.Documents(out, Namespace{Default: true})
			if err != nil || !bytes.Equal(again, out) {
				t.Errorf("injecting the output again changed it (err %v):\n%s", err, again)
			}
			// A document nobody injects comes out as it went in.
			if !slices.ContainsFunc(reports, func(r Report) bool { return r.Decision.Inject }) && !bytes.Equal(out, src) {
				t.Errorf("nothing was injected but the output differs from the input")
			}
		})
	}
}

// checkInjected checks every injected pod of a manifest: shunt's containers
// come first, the init step's args are ones `shunt redirect` accepts, and
// the proxy runs as 1337 while the init step has NET_ADMIN and NET_RAW only.
func checkInjected(t *testing.T, out []byte, reports []Report) {
	t.Helper()
	pods := 0
	for _, text := range docSeparator.Split(string(out), -1) {
		if isBlank([]byte(text)) {
			continue
		}
		var obj map[string]any
		if err := decode([]byte(text), &obj); err != nil {
			t.Fatalf("output is not YAML: %v", err)
		}
		for _, raw := range podTemplates(obj) {
			var pod corev1.PodTemplateSpec
			if err := convert(raw, &pod); err != nil {
				t.Fatal(err)
			}
			if _, ok := pod.Annotations[StatusAnnotation]; !ok {
				continue
			}
			pods++
			checkPodShape(t, &pod.Spec)
		}
	}
	want := 0
	for _, r := range reports {
		if r.Decision.Inject {
			want++
		}
	}
	if pods != want {
		t.Errorf("%d pods carry the status annotation, %d were reported injected", pods, want)
	}
}

func podTemplates(obj map[string]any) []map[string]any {
	kind, _ := obj["kind"].(string)
	if items, ok := obj["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		var out []map[string]any
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				out = append(out, podTemplates(m)...)
			}
		}
		return out
	}
	path, ok := templatePaths[kind]
	if !ok {
		return nil
	}
	raw, _ := lookupPath(obj, path)
	return []map[string]any{raw}
}

func checkPodShape(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	var initStep, proxy *corev1.Container
	for i := range spec.InitContainers {
		switch c := &spec.InitContainers[i]; c.Name {
		case InitName:
			initStep = c
			if i != 0 {
				t.Errorf("%s is init container %d, want the first", InitName, i)
			}
		case ProxyName:
			proxy = c
		}
	}
	if len(spec.Containers) > 0 && spec.Containers[0].Name == ProxyName {
		proxy = &spec.Containers[0]
	}
	if proxy == nil {
		t.Fatal("no proxy container")
	}
	if sc := proxy.SecurityContext; sc == nil || *sc.RunAsUser != 1337 || *sc.RunAsGroup != 1337 || *sc.Privileged {
		t.Errorf("proxy security context %+v, want 1337/1337 unprivileged", sc)
	}
	status := statusPortOf(t, proxy)
	if status != 0 && (proxy.ReadinessProbe == nil || proxy.ReadinessProbe.HTTPGet.Port.IntValue() != 15021) {
		t.Error("proxy readiness probe is not on 15021")
	}
	if initStep == nil {
		return // interception mode NONE
	}
	sc := initStep.SecurityContext
	if *sc.Privileged || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("init step security context %+v, want NET_ADMIN and NET_RAW only", sc)
	}
	if initStep.Args[0] != "redirect" {
		t.Fatalf("init step runs %v", initStep.Args)
	}
	fs := pflag.NewFlagSet("redirect", pflag.ContinueOnError)
	set := istioargs.RegisterRedirect(fs)
	if err := fs.Parse(initStep.Args[1:]); err != nil {
		t.Fatalf("redirect refuses the init args %q: %v", initStep.Args, err)
	}
	cfg, err := set.Config()
	if err != nil {
		t.Fatalf("redirect refuses the init args %q: %v", initStep.Args, err)
	}
	excluded := []uint16{15090, 15021}
	if status != 0 {
		excluded = append(excluded, status)
	}
	for _, p := range excluded {
		if cfg.InboundAll && !slices.ContainsFunc(cfg.InboundExcludePorts, func(r capture.PortRange) bool { return r.Contains(p) }) {
			t.Errorf("port %d is not excluded inbound: %q", p, initStep.Args)
		}
	}
}

// statusPortOf reads the proxy's --status-addr (0 for none).
func statusPortOf(t *testing.T, proxy *corev1.Container) uint16 {
	for i, a := range proxy.Args {
		if a == "--status-addr" && i+1 < len(proxy.Args) {
			if proxy.Args[i+1] == "" {
				return 0
			}
			p, err := capture.ParsePort(strings.TrimPrefix(proxy.Args[i+1], ":"))
			if err != nil {
				t.Fatalf("--status-addr %q", proxy.Args[i+1])
			}
			return p
		}
	}
	t.Fatalf("the proxy has no --status-addr: %q", proxy.Args)
	return 0
}
