package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/shunt-dev/shunt/inject"
)

func newHandler() *Handler {
	return &Handler{Template: inject.DefaultTemplate(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: NewMetrics()}
}

// review is an AdmissionReview as the API server sends it, for a pod
// written in YAML.
func review(t testing.TB, operation, resource, podYAML string) []byte {
	t.Helper()
	obj, err := yaml.YAMLToJSON([]byte(podYAML))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
		"uid":"705ab4f5-6393-11e8-b7cc-42010a800002",
		"kind":{"group":"","version":"v1","kind":"Pod"},
		"resource":{"group":"","version":"v1","resource":"` + resource + `"},
		"requestKind":{"group":"","version":"v1","kind":"Pod"},
		"requestResource":{"group":"","version":"v1","resource":"pods"},
		"namespace":"shop","operation":"` + operation + `",
		"userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","uid":"u","groups":["system:serviceaccounts"]},
		"object":` + string(obj) + `,"oldObject":null,"dryRun":false,
		"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}`
	return []byte(body)
}

func post(h http.Handler, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

const appPod = `
apiVersion: v1
kind: Pod
metadata:
  generateName: web-7d4b9c-
  namespace: shop
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx
    ports: [{name: http, containerPort: 8080}]
`

func decodeResponse(t *testing.T, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("not an AdmissionReview response: %s", rec.Body)
	}
	if out.Response.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Errorf("response uid %q does not echo the request's", out.Response.UID)
	}
	return out.Response
}

// patched applies the response's JSON Patch to the pod.
func patched(t *testing.T, podYAML string, resp *admissionv1.AdmissionResponse) corev1.Pod {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	var ops []inject.Op
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	j, _ := yaml.YAMLToJSON([]byte(podYAML))
	var doc map[string]any
	_ = json.Unmarshal(j, &doc)
	if err := inject.Apply(doc, ops); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc)
	var pod corev1.Pod
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func TestInjectsAPod(t *testing.T) {
	h := newHandler()
	resp := decodeResponse(t, post(h, "application/json", review(t, "CREATE", "pods", appPod)))
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	pod := patched(t, appPod, resp)
	if got := names(pod.Spec.InitContainers); got != "shunt-init,shunt-proxy" {
		t.Errorf("init containers %s", got)
	}
	if got := names(pod.Spec.Containers); got != "nginx" {
		t.Errorf("containers %s", got)
	}
	if _, ok := pod.Annotations[inject.StatusAnnotation]; !ok {
		t.Error("no status annotation")
	}
	// The injected pod, reviewed again (another webhook's reinvocation),
	// is allowed unchanged.
	b, _ := json.Marshal(pod)
	again := decodeResponse(t, post(h, "application/json", review(t, "CREATE", "pods", string(b))))
	if !again.Allowed || len(again.Patch) != 0 {
		t.Errorf("re-review of an injected pod: allowed %t, patch %s", again.Allowed, again.Patch)
	}
	if h.Metrics.Requests(outcomeInjected) != 1 || h.Metrics.Requests(outcomeSkipped) != 1 {
		t.Errorf("metrics: injected %d skipped %d", h.Metrics.Requests(outcomeInjected), h.Metrics.Requests(outcomeSkipped))
	}
}

func names(cs []corev1.Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return strings.Join(out, ",")
}

func TestDecisions(t *testing.T) {
	cases := []struct {
		name, operation, resource, pod string
		allowed, patch                 bool
		message                        string
	}{
		{"uid 1337 denied", "CREATE", "pods", strings.Replace(appPod, "image: nginx", "image: nginx\n    securityContext: {runAsUser: 1337}", 1),
			false, false, `container "nginx" runs as UID 1337`},
		{"uid 1337 allowed by annotation", "CREATE", "pods", strings.Replace(appPod, "labels: {app: web}", "labels: {app: web}\n  annotations: {shunt.dev/allow-proxy-uid: \"true\"}", 1) + "    securityContext: {runAsUser: 1337}\n",
			true, true, ""},
		{"opted out", "CREATE", "pods", strings.Replace(appPod, "labels: {app: web}", "labels: {app: web, sidecar.istio.io/inject: \"false\"}", 1),
			true, false, ""},
		{"host network", "CREATE", "pods", strings.Replace(appPod, "spec:\n", "spec:\n  hostNetwork: true\n", 1),
			true, false, ""},
		{"bad annotation", "CREATE", "pods", strings.Replace(appPod, "labels: {app: web}", "labels: {app: web}\n  annotations: {traffic.sidecar.istio.io/excludeInboundPorts: \"70000\"}", 1),
			false, false, `excludeInboundPorts"]: "70000" is not a port`},
		{"update ignored", "UPDATE", "pods", appPod, true, false, ""},
		{"other resource ignored", "CREATE", "deployments", appPod, true, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := decodeResponse(t, post(newHandler(), "application/json", review(t, c.operation, c.resource, c.pod)))
			if resp.Allowed != c.allowed || (len(resp.Patch) > 0) != c.patch {
				t.Fatalf("allowed %t patch %t, want %t %t (%v)", resp.Allowed, len(resp.Patch) > 0, c.allowed, c.patch, resp.Result)
			}
			if c.message != "" && (resp.Result == nil || !strings.Contains(resp.Result.Message, c.message) || resp.Result.Code != http.StatusForbidden) {
				t.Errorf("result %+v, want 403 saying %q", resp.Result, c.message)
			}
		})
	}
}

func TestBadBodies(t *testing.T) {
	good := review(t, "CREATE", "pods", appPod)
	cases := []struct {
		name, contentType string
		body              []byte
		method            string
	}{
		{"not json", "application/json", []byte("{{{"), ""},
		{"empty", "application/json", nil, ""},
		{"truncated", "application/json", good[:len(good)/2], ""},
		{"wrong kind", "application/json", bytes.Replace(good, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Pod"`), 1), ""},
		{"v1beta1", "application/json", bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), ""},
		{"no request", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), ""},
		{"no uid", "application/json", bytes.Replace(good, []byte(`"uid":"705ab4f5-6393-11e8-b7cc-42010a800002"`), []byte(`"uid":""`), 1), ""},
		{"request is a string", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"pod"}`), ""},
		{"oversized", "application/json", append(good[:len(good)-3], append(bytes.Repeat([]byte(" "), DefaultMaxBody), "}}}"...)...), ""},
		{"form", "application/x-www-form-urlencoded", good, ""},
		{"no content type", "", good, ""},
		{"GET", "application/json", nil, http.MethodGet},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHandler()
			method := c.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/inject", bytes.NewReader(c.body))
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400: %s", rec.Code, rec.Body)
			}
			if h.Metrics.Requests(outcomeBad) != 1 {
				t.Error("not counted as a bad request")
			}
		})
	}
}

func TestUnreadablePodIsDenied(t *testing.T) {
	body := review(t, "CREATE", "pods", appPod)
	body = bytes.Replace(body, []byte(`"containerPort":8080`), []byte(`"containerPort":"eighty"`), 1)
	resp := decodeResponse(t, post(newHandler(), "application/json", body))
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("allowed %t result %+v, want a 400 denial", resp.Allowed, resp.Result)
	}
}

// FuzzHandler: whatever the body, the handler answers (400 or a review)
// and never panics.
func FuzzHandler(f *testing.F) {
	f.Add(review(f, "CREATE", "pods", appPod))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"spec":{"containers":null,"initContainers":{}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"metadata":{"annotations":null},"spec":{"containers":[{"name":"a","ports":[{"containerPort":1}]}]}}}}`))
	f.Add([]byte(`null`))
	h := newHandler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(h, "application/json", body)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Code == http.StatusOK {
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("answer is not a review: %s", rec.Body)
			}
		}
	})
}
