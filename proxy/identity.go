package proxy

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/sidecar"
)

// Workload is one side of a request as Istio's metric labels name it.
// A side the proxy knows nothing of is "unknown" throughout.
type Workload struct {
	Name, Namespace, Principal, App, Version string
	CanonicalService, CanonicalRevision      string
	Cluster                                  string
}

// known says w is a workload's (a pod's environment named it), not
// unknown or nil.
func (w *Workload) known() bool {
	return w != nil && w.CanonicalService != "unknown" && w.Namespace != "unknown"
}

// unknownWorkload is a peer the proxy has no metadata for.
var unknownWorkload = Workload{"unknown", "unknown", "unknown", "unknown", "unknown", "unknown", "unknown", "unknown"}

// LabelsFile is where Istio's injection mounts the pod's labels (the
// downward API's key="value" lines).
const LabelsFile = "/etc/istio/pod/labels"

// WorkloadFromEnv is the pod's own identity from the variables Istio's
// injection sets (POD_NAME, POD_NAMESPACE, ISTIO_META_WORKLOAD_NAME,
// ISTIO_META_CLUSTER_ID) and its labels (ISTIO_METAJSON_LABELS, or the
// labels file): app and version, and the canonical service and revision
// the way Istio derives them. What is not there is "unknown". The
// principal needs mTLS, which this proxy does not yet speak: "unknown".
func WorkloadFromEnv(getenv func(string) string, labelsFile string) Workload {
	w := unknownWorkload
	labels := podLabels(getenv(sidecar.LabelsJSONEnv), labelsFile)
	set := func(dst *string, vals ...string) {
		for _, v := range vals {
			if v != "" {
				*dst = v
				return
			}
		}
	}
	set(&w.Name, getenv(sidecar.WorkloadNameEnv), sidecar.WorkloadOfPod(getenv(sidecar.PodNameEnv), labels))
	set(&w.Namespace, getenv(sidecar.PodNamespaceEnv))
	set(&w.App, labels["app"], labels["app.kubernetes.io/name"])
	set(&w.Version, labels["version"], labels["app.kubernetes.io/version"])
	set(&w.CanonicalService, labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/name"], labels["app"], nameIfKnown(w.Name))
	set(&w.CanonicalRevision, labels["service.istio.io/canonical-revision"], labels["app.kubernetes.io/version"], labels["version"])
	if w.CanonicalRevision == "unknown" && w.CanonicalService != "unknown" {
		w.CanonicalRevision = "latest"
	}
	set(&w.Cluster, getenv(sidecar.ClusterIDEnv), "Kubernetes")
	return w
}

func nameIfKnown(s string) string {
	if s == "unknown" {
		return ""
	}
	return s
}

// podLabels reads the labels from JSON, else from the labels file.
func podLabels(jsonLabels, file string) map[string]string {
	labels := map[string]string{}
	if jsonLabels != "" && json.Unmarshal([]byte(jsonLabels), &labels) == nil {
		return labels
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return labels
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		labels[k] = v
	}
	return labels
}
