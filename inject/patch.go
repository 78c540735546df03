package inject

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Op is one JSON Patch (RFC 6902) operation. Injection adds, and replaces
// the probes it rewrites.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// WithPrefix returns the ops with prefix (a JSON pointer, "" for none) in
// front of their paths: a pod template's ops applied to its workload.
func WithPrefix(ops []Op, prefix string) []Op {
	out := make([]Op, len(ops))
	for i, op := range ops {
		out[i] = Op{op.Op, prefix + op.Path, op.Value}
	}
	return out
}

// escapePointer escapes one JSON pointer segment (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// annotationOp adds one annotation, creating metadata and annotations as
// needed.
func annotationOp(raw map[string]any, key, value string) Op {
	return metadataOps(raw, map[string]string{key: value}, nil)[0]
}

// metadataOps add annotations and labels to the pod's metadata, making
// what is missing (in one op where metadata itself is).
func metadataOps(raw map[string]any, annotations, labels map[string]string) []Op {
	fields := map[string]map[string]string{}
	for name, kv := range map[string]map[string]string{"annotations": annotations, "labels": labels} {
		if len(kv) > 0 {
			fields[name] = kv
		}
	}
	meta, ok := raw["metadata"].(map[string]any)
	if !ok {
		return []Op{{"add", "/metadata", fields}}
	}
	var ops []Op
	for _, field := range []string{"annotations", "labels"} {
		kv := fields[field]
		if kv == nil {
			continue
		}
		if m, ok := meta[field].(map[string]any); !ok || m == nil {
			ops = append(ops, Op{"add", "/metadata/" + field, kv})
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			ops = append(ops, Op{"add", "/metadata/" + field + "/" + escapePointer(k), kv[k]})
		}
	}
	return ops
}

// prependOps puts cs, in order, at the front of spec.<list>.
func prependOps(raw map[string]any, list string, cs []corev1.Container) []Op {
	if len(cs) == 0 {
		return nil
	}
	spec, _ := raw["spec"].(map[string]any)
	if existing, ok := spec[list].([]any); !ok || len(existing) == 0 {
		return []Op{{"add", "/spec/" + list, cs}}
	}
	ops := make([]Op, len(cs))
	for i, c := range cs {
		ops[i] = Op{"add", fmt.Sprintf("/spec/%s/%d", list, i), c}
	}
	return ops
}

// Apply carries out add and replace operations on a document decoded from
// JSON or YAML into generic values, in place. It is what the API server
// does with the webhook's patch, for the documents `shunt inject` rewrites.
func Apply(doc map[string]any, ops []Op) error {
	for _, op := range ops {
		if op.Op != "add" && op.Op != "replace" {
			return fmt.Errorf("patch %s: only add and replace are supported, not %q", op.Path, op.Op)
		}
		value, err := generic(op.Value)
		if err != nil {
			return fmt.Errorf("patch %s: %w", op.Path, err)
		}
		if err := apply(doc, op.Op, op.Path, value); err != nil {
			return fmt.Errorf("patch %s: %w", op.Path, err)
		}
	}
	return nil
}

// generic turns a typed value into the generic form a decoded document has.
func generic(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

// apply adds value at path (inserting into an array), or replaces what is
// there (which must exist).
func apply(doc map[string]any, op, path string, value any) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("not a JSON pointer")
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	// set replaces what is at the current position in its holder; inserting
	// into an array makes a new slice, which its holder must then hold.
	var cur any = doc
	set := func(any) {}
	for _, s := range segs[:len(segs)-1] {
		switch p := cur.(type) {
		case map[string]any:
			next, ok := p[s]
			if !ok {
				return fmt.Errorf("%q does not exist", s)
			}
			cur, set = next, func(v any) { p[s] = v }
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(p) {
				return fmt.Errorf("index %q is out of range", s)
			}
			cur, set = p[i], func(v any) { p[i] = v }
		default:
			return fmt.Errorf("%q is inside a value that is not an object or array", s)
		}
	}
	last := segs[len(segs)-1]
	switch p := cur.(type) {
	case map[string]any:
		if _, ok := p[last]; !ok && op == "replace" {
			return fmt.Errorf("%q does not exist", last)
		}
		p[last] = value
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i > len(p) || (op == "replace" && i == len(p)) {
			return fmt.Errorf("index %q is out of range", last)
		}
		if op == "replace" {
			p[i] = value
			return nil
		}
		set(append(p[:i:i], append([]any{value}, p[i:]...)...))
	default:
		return fmt.Errorf("%q is inside a value that is not an object or array", last)
	}
	return nil
}
