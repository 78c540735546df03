package inject

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shunt-dev/shunt/sidecar"
)

// escapeHint says why running as the proxy's identity is refused.
const escapeHint = "the capture rules let the proxy's UID and GID through uncaptured " +
	"(so that the proxy's own connections do not loop back to it), so this container's " +
	"traffic would silently bypass the sidecar; run it as another user and group, or set the " +
	"pod annotation " + AllowProxyUID + `: "true" to inject anyway`

// checkPod refuses what injection cannot make right: containers named like
// shunt's, app ports that are the proxy's, and app containers running with
// the proxy's UID or GID.
func checkPod(meta *metav1.ObjectMeta, spec *corev1.PodSpec) []error {
	var errs []error
	allow := false
	if v, ok := meta.Annotations[AllowProxyUID]; ok {
		b, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", annotationField(AllowProxyUID), err))
		}
		allow = b
	}
	podUser, podGroup := podIdentity(spec.SecurityContext)
	each := func(list string, cs []corev1.Container) {
		for i, c := range cs {
			at := fmt.Sprintf("spec.%s[%d] (%q)", list, i, c.Name)
			if c.Name == InitName || c.Name == ProxyName {
				errs = append(errs, fmt.Errorf("%s: the name %q is the one shunt gives its own container", at, c.Name))
			}
			for j, p := range c.Ports {
				if slices.Contains(reservedPorts, p.ContainerPort) {
					errs = append(errs, fmt.Errorf("%s.ports[%d]: port %d is the proxy's; the app cannot use it in the same network namespace", at, j, p.ContainerPort))
				}
			}
			if allow {
				continue
			}
			user, userFrom := podUser, "spec.securityContext.runAsUser"
			group, groupFrom := podGroup, "spec.securityContext.runAsGroup"
			if sc := c.SecurityContext; sc != nil {
				if sc.RunAsUser != nil {
					user, userFrom = sc.RunAsUser, at+".securityContext.runAsUser"
				}
				if sc.RunAsGroup != nil {
					group, groupFrom = sc.RunAsGroup, at+".securityContext.runAsGroup"
				}
			}
			if user != nil && *user == sidecar.ProxyUID {
				errs = append(errs, fmt.Errorf("container %q runs as UID %d (%s), the proxy's UID: %s", c.Name, *user, userFrom, escapeHint))
			}
			if group != nil && *group == sidecar.ProxyGID {
				errs = append(errs, fmt.Errorf("container %q runs as GID %d (%s), the proxy's GID: %s", c.Name, *group, groupFrom, escapeHint))
			}
		}
	}
	each("initContainers", spec.InitContainers)
	each("containers", spec.Containers)
	return errs
}

func podIdentity(sc *corev1.PodSecurityContext) (user, group *int64) {
	if sc == nil {
		return nil, nil
	}
	return sc.RunAsUser, sc.RunAsGroup
}
