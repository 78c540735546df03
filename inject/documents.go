package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// templatePaths says where each workload kind keeps its pod template.
var templatePaths = map[string][]string{
	"Pod":                   {},
	"PodTemplate":           {"template"},
	"Deployment":            {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
	"DeploymentConfig":      {"spec", "template"}, // OpenShift's apps.openshift.io/v1
}

// Report is what happened to one pod template of a manifest.
type Report struct {
	Object   string // `document 2 (Deployment "web")`, or with `items[0]` for a List
	Decision Decision
	Warnings []string
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$\n?`)

// Documents injects every pod template in a stream of YAML (or JSON)
// documents. Documents it does not change come out byte for byte as they went
// in; the ones it changes are re-encoded. Nothing is written if any document
// is in error; the error names the document and the field.
func (t Template) Documents(in []byte, ns Namespace) ([]byte, []Report, error) {
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	// Each document is decoded once; the Namespaces among them are known
	// before any pod is decided.
	type document struct {
		n    int // its number in the stream, from 1
		text []byte
		obj  map[string]any // nil for a blank document
		err  error
	}
	var docs []document
	namespaces := map[string]map[string]string{}
	for i, text := range docSeparator.Split(string(in), -1) {
		if i == 0 && text == "" {
			continue // the stream starts with a separator
		}
		d := document{n: i + 1, text: []byte(text)}
		if !isBlank(d.text) {
			if err := decode(d.text, &d.obj); err != nil {
				d.err = fmt.Errorf("document %d: %w", i+1, err)
			} else if d.obj == nil {
				d.obj = map[string]any{} // "null": no kind, refused below
			} else if d.obj["kind"] == "Namespace" {
				namespaces[nameOf(d.obj)] = namespaceLabelsOf(d.obj)
			}
		}
		docs = append(docs, d)
	}
	var out [][]byte
	var reports []Report
	var errs []error
	for _, d := range docs {
		if d.obj == nil || d.err != nil {
			out, errs = append(out, d.text), append(errs, d.err)
			continue
		}
		changed, reps, err := t.object(d.obj, fmt.Sprintf("document %d", d.n), ns, namespaces)
		reports = append(reports, reps...)
		text := d.text
		if err == nil && changed {
			text, err = yaml.Marshal(d.obj)
		}
		out, errs = append(out, text), append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, reports, err
	}
	for i, d := range out {
		if len(d) > 0 && d[len(d)-1] != '\n' {
			out[i] = append(d, '\n')
		}
	}
	return bytes.Join(out, []byte("---\n")), reports, nil
}

// namespaceLabelsOf is a Namespace's labels, so that a namespace the stream
// itself labels disabled is respected.
func namespaceLabelsOf(obj map[string]any) map[string]string {
	meta, _ := obj["metadata"].(map[string]any)
	raw, _ := meta["labels"].(map[string]any)
	labels := map[string]string{}
	for k, v := range raw {
		labels[k], _ = v.(string)
	}
	return labels
}

// object injects one decoded object, or each item of a List. It reports
// whether anything changed.
func (t Template) object(obj map[string]any, name string, ns Namespace, namespaces map[string]map[string]string) (bool, []Report, error) {
	kind, _ := obj["kind"].(string)
	if kind == "" {
		return false, nil, fmt.Errorf("%s: kind: missing; not a Kubernetes object", name)
	}
	if items, ok := obj["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		var reports []Report
		var errs []error
		changed := false
		for i, item := range items {
			m, ok := item.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf("%s (%s), items[%d]: not an object", name, kind, i))
				continue
			}
			c, r, err := t.object(m, fmt.Sprintf("%s (%s), items[%d]", name, kind, i), ns, namespaces)
			changed = changed || c
			reports = append(reports, r...)
			errs = append(errs, err)
		}
		return changed, reports, errors.Join(errs...)
	}
	objName := nameOf(obj)
	path, ok := templatePaths[kind]
	if !ok {
		if !carriesPodTemplate(obj) {
			return false, nil, nil
		}
		// A workload shunt does not know: say it was left alone.
		api, _ := obj["apiVersion"].(string)
		return false, []Report{{Object: fmt.Sprintf("%s (%s %q)", name, kind, objName),
			Decision: Decision{false, fmt.Sprintf("%s %s is not a kind shunt injects; its pod template is left as it is", api, kind)}}}, nil
	}
	name = fmt.Sprintf("%s (%s %q)", name, kind, objName)
	where := strings.Join(path, ".")
	raw, ok := lookupPath(obj, path)
	if !ok {
		return false, nil, fmt.Errorf("%s: %s: missing; a %s needs a pod template", name, where, kind)
	}
	var pod corev1.PodTemplateSpec
	if err := convert(raw, &pod); err != nil {
		return false, nil, fmt.Errorf("%s: %s: %w", name, orRoot(where), err)
	}
	if labels, ok := namespaces[namespaceOf(obj)]; ok {
		ns.Labels = labels
	}
	workload := objName // the workload's own name; a Pod's is derived from its name
	if kind == "Pod" {
		workload = ""
	}
	res, err := t.Pod(&pod.ObjectMeta, &pod.Spec, raw, ns, strings.TrimSuffix(workload, "*"))
	if err != nil {
		return false, nil, prefixErrors(fmt.Sprintf("%s: in %s: ", name, orRoot(where)), err)
	}
	report := Report{name, res.Decision, res.Warnings}
	if len(res.Patch) == 0 {
		return false, []Report{report}, nil
	}
	return true, []Report{report}, Apply(raw, res.Patch)
}

// carriesPodTemplate says whether an object of an unknown kind holds a pod
// template where workloads do (spec.template.spec.containers).
func carriesPodTemplate(obj map[string]any) bool {
	spec, ok := lookupPath(obj, []string{"spec", "template", "spec"})
	if !ok {
		return false
	}
	_, ok = spec["containers"].([]any)
	return ok
}

func orRoot(where string) string {
	if where == "" {
		return "the pod"
	}
	return where
}

func namespaceOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	n, _ := meta["namespace"].(string)
	return n
}

func nameOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	if n, _ := meta["name"].(string); n != "" {
		return n
	}
	if n, _ := meta["generateName"].(string); n != "" {
		return n + "*"
	}
	return ""
}

func lookupPath(obj map[string]any, path []string) (map[string]any, bool) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

// decode reads one YAML or JSON document into generic values, keeping
// numbers exact.
func decode(text []byte, v any) error {
	j, err := yaml.YAMLToJSON(text)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("not an object: %w", err)
	}
	return nil
}

// convert decodes generic values into a typed object.
func convert(raw any, v any) error {
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func isBlank(text []byte) bool {
	for _, line := range strings.Split(string(text), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// prefixErrors puts prefix in front of each of the errors err joins.
func prefixErrors(prefix string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = fmt.Errorf("%s%w", prefix, e)
	}
	return errors.Join(out...)
}
