// Package webhook serves shunt's injection as a Kubernetes mutating
// admission webhook: AdmissionReview v1 in, a JSON Patch out.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shunt-dev/shunt/inject"
)

// DefaultMaxBody bounds a request: an object is at most 1.5 MiB in etcd,
// and a review carries it (and on updates the old one) plus a little.
const DefaultMaxBody = 4 << 20

// Handler answers AdmissionReview requests for pods.
type Handler struct {
	Template inject.Template
	Log      *slog.Logger
	Metrics  *Metrics
	MaxBody  int64 // 0: DefaultMaxBody
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// badRequest is a body the handler refuses to read as a review.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	review, err := h.read(w, r)
	if err != nil {
		h.Log.Warn("bad admission request", "remote", r.RemoteAddr, "error", err)
		h.Metrics.observe(outcomeBad, time.Since(start))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, outcome, attrs := h.review(review.Request)
	review.Response = resp
	review.Request = nil
	body, err := json.Marshal(review)
	if err != nil {
		h.Log.Error("encoding the admission response", "error", err)
		http.Error(w, "encoding the response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
	took := time.Since(start)
	h.Metrics.observe(outcome, took)
	h.Log.Info("admission", append(attrs, "outcome", outcome, "took", took)...)
}

// read checks and decodes the request; every refusal is a badRequest.
func (h *Handler) read(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, error) {
	if r.Method != http.MethodPost {
		return nil, badRequest{fmt.Sprintf("method %s: admission reviews are POSTed", r.Method)}
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return nil, badRequest{fmt.Sprintf("content type %q: want application/json", r.Header.Get("Content-Type"))}
	}
	limit := h.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, badRequest{fmt.Sprintf("body is over %d bytes", limit)}
		}
		return nil, badRequest{fmt.Sprintf("reading the body: %v", err)}
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, badRequest{fmt.Sprintf("body is not an AdmissionReview: %v", err)}
	}
	switch {
	case review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview":
		return nil, badRequest{fmt.Sprintf("got %s %q, want admission.k8s.io/v1 AdmissionReview", review.Kind, review.APIVersion)}
	case review.Request == nil:
		return nil, badRequest{"the review has no request"}
	case review.Request.UID == "":
		return nil, badRequest{"the request has no uid"}
	}
	return &review, nil
}

// review decides one request. A pod that cannot be injected as asked is
// denied with the reason; anything that is not a pod being created is
// allowed unchanged.
func (h *Handler) review(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string, []any) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	attrs := []any{"uid", req.UID, "namespace", req.Namespace, "name", req.Name}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp, outcomeIgnored, append(attrs, "resource", req.Resource.Resource, "operation", req.Operation)
	}
	var pod corev1.Pod
	var raw map[string]any
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("the pod cannot be read: %v", err)), outcomeDenied, attrs
	}
	if err := json.Unmarshal(req.Object.Raw, &raw); err != nil {
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("the pod cannot be read: %v", err)), outcomeDenied, attrs
	}
	if req.Name == "" && pod.GenerateName != "" {
		attrs = append(attrs, "generateName", pod.GenerateName)
	}
	// The webhook's namespaceSelector and objectSelector chose this pod, so
	// the namespace counts as opted in; the pod can still opt out.
	res, err := h.Template.Pod(&pod.ObjectMeta, &pod.Spec, raw, inject.Namespace{Default: true})
	attrs = append(attrs, "reason", res.Decision.Reason)
	resp.Warnings = res.Warnings
	if err != nil {
		return deny(resp, http.StatusForbidden, err.Error()), outcomeDenied, append(attrs, "error", err)
	}
	if len(res.Patch) == 0 {
		return resp, outcomeSkipped, attrs
	}
	patch, err := json.Marshal(res.Patch)
	if err != nil {
		return deny(resp, http.StatusInternalServerError, err.Error()), outcomeDenied, attrs
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp, outcomeInjected, attrs
}

func deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	reason := metav1.StatusReasonForbidden
	if code == http.StatusBadRequest {
		reason = metav1.StatusReasonBadRequest
	}
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: "shunt: " + msg}
	return resp
}
