package sidecar

import "testing"

func TestWorkloadOfPod(t *testing.T) {
	for _, tc := range []struct {
		pod    string
		labels map[string]string
		want   string
	}{
		{"reviews-v1-6f8d9b7c4-x7k2p", map[string]string{"pod-template-hash": "6f8d9b7c4"}, "reviews-v1"},
		{"reviews-v1-6f8d9b7c4-x7k2p", nil, "reviews-v1"},
		{"reviews-v1-6f8d9b7c4-", map[string]string{"pod-template-hash": "6f8d9b7c4"}, "reviews-v1"},
		{"web-0", map[string]string{"statefulset.kubernetes.io/pod-name": "web-0"}, "web"},
		{"fluentd-7xq9z", nil, "fluentd"},
		{"nginx", nil, "nginx"},
		{"", nil, ""},
	} {
		if got := WorkloadOfPod(tc.pod, tc.labels); got != tc.want {
			t.Errorf("WorkloadOfPod(%q, %v) = %q, want %q", tc.pod, tc.labels, got, tc.want)
		}
	}
}
