package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: app, image: nginx}]\n"), 0o644)
	out, errs, code := shunt(t, nil, "inject", "-f", good, "--image", "registry.example/shunt:1.0", "--sidecar-mode", "classic")
	if code != 0 || !strings.Contains(out, "image: registry.example/shunt:1.0") || !strings.Contains(out, "shunt.dev/status: sidecar=classic,capture=REDIRECT") ||
		!strings.Contains(errs, `document 1 (Pod "web"): injected`) {
		t.Errorf("code %d, stderr %q, output:\n%s", code, errs, out)
	}
	written := filepath.Join(dir, "out.yaml")
	if _, _, code := shunt(t, nil, "inject", "-q", "-f", good, "-o", written); code != 0 {
		t.Fatalf("-o: code %d", code)
	}
	if b, _ := os.ReadFile(written); !strings.Contains(string(b), "name: shunt-proxy") {
		t.Errorf("-o wrote:\n%s", b)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: app, image: nginx, securityContext: {runAsUser: 1337}}]\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"inject", "-f", bad}, `container "app" runs as UID 1337`},
		{[]string{"inject"}, "--filename (-f): give a manifest file"},
		{[]string{"inject", "-f", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"inject", "-f", good, "--sidecar-mode", "sideways"}, `--sidecar-mode: "sideways" is not native or classic`},
		{[]string{"inject", "-f", good, "--image-pull-policy", "Sometimes"}, `--image-pull-policy: "Sometimes" is not Always, IfNotPresent or Never`},
		{[]string{"inject", "-f", good, "--proxy-cpu", "lots"}, `--proxy-cpu: "lots" is not a quantity`},
		{[]string{"webhook", "--self-signed", "--cert", "x"}, "drop --cert and --key"},
		{[]string{"webhook"}, "give --cert and --key"},
		{[]string{"certs"}, "--dir"},
	}
	for _, c := range cases {
		out, errs, code := shunt(t, nil, c.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit %d saying %q", c.args, code, out, errs, exitUsage, c.want)
		}
	}
}

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, errs, code := shunt(t, nil, "certs", "--dir", dir)
	if code != 0 || len(strings.TrimSpace(out)) < 100 {
		t.Fatalf("code %d, stderr %q, stdout %q", code, errs, out)
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !strings.HasPrefix(string(b), "-----BEGIN ") {
			t.Errorf("%s: %v", f, err)
		}
	}
}
