package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// The workload identity's parts, with Istio's names and paths: the
// service-account token the CA knows the pod by (projected, for the CA's
// audience), and the trust bundle the CA's TLS is checked against (the
// namespace's istio-ca-root-cert ConfigMap, which the control plane keeps).
const (
	TokenVolume   = "istio-token"
	TrustVolume   = "istiod-ca-cert"
	tokenLifetime = 43200 // seconds, Istio's
)

// identityMounts are the proxy's mounts of the token and the trust
// bundle, when it gets a certificate.
func (t Template) identityMounts() []corev1.VolumeMount {
	if t.CAAddress == "" {
		return nil
	}
	return []corev1.VolumeMount{{Name: TokenVolume, MountPath: sidecar.TokenDir, ReadOnly: true},
		{Name: TrustVolume, MountPath: sidecar.RootCertDir, ReadOnly: true}}
}

// identityVolumes are the pod's volumes of the token and the trust bundle.
func identityVolumes() []corev1.Volume {
	lifetime := int64(tokenLifetime)
	return []corev1.Volume{
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: sidecar.TokenAudience, ExpirationSeconds: &lifetime, Path: "istio-token"}}}}}},
		{Name: TrustVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: sidecar.RootConfigMap}}}},
	}
}

// identityVolumeOps add the volumes; a pod with volumes of those names
// is refused.
func identityVolumeOps(raw map[string]any, spec *corev1.PodSpec) ([]Op, error) {
	for _, v := range spec.Volumes {
		if v.Name == TokenVolume || v.Name == TrustVolume {
			return nil, fmt.Errorf("spec.volumes: %s is the sidecar's volume name (its identity's); rename the pod's", clip.Quote(v.Name))
		}
	}
	var ops []Op
	podSpec, _ := raw["spec"].(map[string]any)
	vols := identityVolumes()
	existing, ok := podSpec["volumes"].([]any)
	if !ok || len(existing) == 0 {
		return append(ops, Op{"add", "/spec/volumes", vols}), nil
	}
	for i, v := range vols {
		ops = append(ops, Op{"add", fmt.Sprintf("/spec/volumes/%d", len(existing)+i), v})
	}
	return ops, nil
}
