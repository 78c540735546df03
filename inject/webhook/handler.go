// Package webhook serves shunt's injection as a Kubernetes mutating
// admission webhook: AdmissionReview v1 in, a JSON Patch out.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shunt-dev/shunt/inject"
	"github.com/shunt-dev/shunt/internal/clip"
)

// DefaultMaxBody bounds a request: an object is at most 1.5 MiB in etcd,
// and a review carries it (and on updates the old one) plus a little.
const DefaultMaxBody = 4 << 20

// DefaultReviewMemory bounds the request bodies under review at once. A
// review takes several times its body in memory while it is decoded (the
// raw object, the typed pod, its generic form, the patch): 12 MiB of
// bodies keeps the webhook well inside deploy/webhook.yaml's 128 Mi limit
// however many reviews arrive at once.
const DefaultReviewMemory = 12 << 20

// DefaultTimeout is how long a review may take, from its first byte to its
// answer, before the webhook answers 503 instead.
const DefaultTimeout = 8 * time.Second

// Handler answers AdmissionReview requests for pods. Reviews beyond its
// memory budget wait in line for up to half the timeout, then are turned
// away with 429 and Retry-After, which the API server retries.
type Handler struct {
	Template inject.Template
	Log      *slog.Logger
	Metrics  *Metrics
	MaxBody  int64         // 0: DefaultMaxBody
	Memory   int64         // bytes of bodies under review at once; 0: DefaultReviewMemory
	Timeout  time.Duration // 0: DefaultTimeout

	once   sync.Once
	budget *semaphore.Weighted
	memory int64
	// beforeReview, in tests, runs between reading a review and deciding it.
	beforeReview func()
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// badRequest is a body the handler refuses to read as a review.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

// errTimeout is a review that ran out of time.
var errTimeout = errors.New("the review took too long")

func (h *Handler) init() {
	h.memory = h.Memory
	if h.memory <= 0 {
		h.memory = DefaultReviewMemory
	}
	h.budget = semaphore.NewWeighted(h.memory)
}

func (h *Handler) limits() (maxBody int64, timeout time.Duration) {
	maxBody, timeout = h.MaxBody, h.Timeout
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return maxBody, timeout
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.init)
	start := time.Now()
	maxBody, timeout := h.limits()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	// The body's share of the budget: what it says it is, or the most a
	// body may be when it does not say.
	weight := maxBody
	if r.ContentLength >= 0 && r.ContentLength < maxBody {
		weight = max(r.ContentLength, 4<<10)
	}
	weight = min(weight, h.memory)
	queue, stopQueue := context.WithTimeout(ctx, timeout/2)
	err := h.budget.Acquire(queue, weight)
	stopQueue()
	if err != nil {
		h.Metrics.observe(outcomeThrottled, time.Since(start))
		h.Log.Warn("admission request turned away: too many reviews under way", "remote", r.RemoteAddr, "bytes", r.ContentLength)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many reviews under way; retry", http.StatusTooManyRequests)
		return
	}
	defer h.budget.Release(weight)
	rc := http.NewResponseController(w)
	deadline, _ := ctx.Deadline()
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline.Add(2 * time.Second))
	review, err := h.read(ctx, w, r, maxBody)
	if err == nil && ctx.Err() != nil {
		err = errTimeout
	}
	switch {
	case errors.Is(err, errTimeout):
		h.timedOut(w, r, start, timeout)
		return
	case err != nil:
		h.Log.Warn("bad admission request", "remote", r.RemoteAddr, "error", err)
		h.Metrics.observe(outcomeBad, time.Since(start))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if h.beforeReview != nil {
		h.beforeReview()
	}
	resp, outcome, attrs := h.review(review.Request)
	if ctx.Err() != nil {
		h.timedOut(w, r, start, timeout)
		return
	}
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

// timedOut answers 503 for a review that ran past the timeout; the API
// server applies the webhook's failurePolicy.
func (h *Handler) timedOut(w http.ResponseWriter, r *http.Request, start time.Time, timeout time.Duration) {
	took := time.Since(start)
	h.Metrics.observe(outcomeTimeout, took)
	h.Log.Warn("admission review timed out", "remote", r.RemoteAddr, "timeout", timeout, "took", took)
	http.Error(w, "the review took too long", http.StatusServiceUnavailable)
}

// read checks and decodes the request; every refusal is a badRequest, a
// body still arriving when ctx ends is errTimeout.
func (h *Handler) read(ctx context.Context, w http.ResponseWriter, r *http.Request, limit int64) (*admissionv1.AdmissionReview, error) {
	if r.Method != http.MethodPost {
		return nil, badRequest{fmt.Sprintf("method %s: admission reviews are POSTed", r.Method)}
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return nil, badRequest{fmt.Sprintf("content type %s: want application/json", clip.Quote(r.Header.Get("Content-Type")))}
	}
	if r.ContentLength > limit {
		return nil, badRequest{fmt.Sprintf("body is over %d bytes", limit)}
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return nil, badRequest{fmt.Sprintf("body is over %d bytes", limit)}
		case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errTimeout
		}
		return nil, badRequest{fmt.Sprintf("reading the body: %v", err)}
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, badRequest{fmt.Sprintf("body is not an AdmissionReview: %v", err)}
	}
	switch {
	case review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview":
		return nil, badRequest{fmt.Sprintf("got %s %s, want admission.k8s.io/v1 AdmissionReview", clip.Quote(review.Kind), clip.Quote(review.APIVersion))}
	case review.Request == nil:
		return nil, badRequest{"the review has no request"}
	case review.Request.UID == "":
		return nil, badRequest{"the request has no uid"}
	}
	return &review, nil
}

// readBody reads a body whose length may be known, into a buffer of that
// size (io.ReadAll would grow one to twice it).
func readBody(r io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	// A body longer than it said is cut by the server; nothing to check.
	return b, nil
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
	req.Object.Raw = nil // decoded twice; let the collector have it
	if req.Name == "" && pod.GenerateName != "" {
		attrs = append(attrs, "generateName", pod.GenerateName)
	}
	// The webhook's namespaceSelector and objectSelector chose this pod, so
	// the namespace counts as opted in; the pod can still opt out.
	res, err := h.Template.Pod(&pod.ObjectMeta, &pod.Spec, raw, inject.Namespace{Default: true}, "")
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
