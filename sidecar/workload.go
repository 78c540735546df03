package sidecar

import (
	"regexp"
	"strings"
)

// The variables injection gives the proxy, Istio's names: the pod's
// identity for the metrics' labels.
const (
	PodNameEnv        = "POD_NAME"
	PodNamespaceEnv   = "POD_NAMESPACE"
	InstanceIPEnv     = "INSTANCE_IP"
	ServiceAccountEnv = "SERVICE_ACCOUNT"
	WorkloadNameEnv   = "ISTIO_META_WORKLOAD_NAME"
	LabelsJSONEnv     = "ISTIO_METAJSON_LABELS"
	ClusterIDEnv      = "ISTIO_META_CLUSTER_ID"
	// InterceptionModeEnv says the capture is TPROXY, to a control plane
	// that then makes the inbound listener transparent.
	InterceptionModeEnv = "ISTIO_META_INTERCEPTION_MODE"
)

// Suffixes Kubernetes adds to a workload's pod names: a ReplicaSet's
// template hash and a pod's random five characters.
var (
	replicaSetPod = regexp.MustCompile(`^(.+)-[0-9a-f]{6,10}-[0-9a-z]{5}$`)
	generatedPod  = regexp.MustCompile(`^(.+)-[0-9a-z]{5}$`)
)

// WorkloadOfPod names the workload a pod belongs to, as Istio does: a
// Deployment's pod without its template hash and random suffix, a
// StatefulSet's without its ordinal, a DaemonSet's or Job's without its
// random suffix. A generateName (ending "-") counts as a name whose
// random part is still to come.
func WorkloadOfPod(pod string, labels map[string]string) string {
	if base, ok := strings.CutSuffix(pod, "-"); ok {
		if hash := labels["pod-template-hash"]; hash != "" {
			if b, ok := strings.CutSuffix(base, "-"+hash); ok {
				return b
			}
		}
		return base
	}
	if pod == "" {
		return ""
	}
	if hash := labels["pod-template-hash"]; hash != "" {
		if i := strings.LastIndexByte(pod, '-'); i > 0 {
			if base, ok := strings.CutSuffix(pod[:i], "-"+hash); ok {
				return base
			}
		}
	}
	if labels["statefulset.kubernetes.io/pod-name"] == pod {
		if i := strings.LastIndexByte(pod, '-'); i > 0 {
			return pod[:i]
		}
	}
	if m := replicaSetPod.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	if m := generatedPod.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	return pod
}

// NodeID is Istio's Envoy node id for a sidecar:
// sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local.
func NodeID(ip, pod, namespace string) string {
	return "sidecar~" + ip + "~" + pod + "." + namespace + "~" + namespace + ".svc.cluster.local"
}
