package control

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// apiVersions are the kinds' API versions, for an event's object.
var apiVersions = map[string]string{"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
	"ServiceEntry": "networking.istio.io/v1", "Sidecar": "networking.istio.io/v1", "HTTPRoute": "gateway.networking.k8s.io/v1",
	"GRPCRoute": "gateway.networking.k8s.io/v1", "TLSRoute": "gateway.networking.k8s.io/v1alpha2", "TCPRoute": "gateway.networking.k8s.io/v1alpha2",
	"Gateway": "gateway.networking.k8s.io/v1", "PeerAuthentication": "security.istio.io/v1", "AuthorizationPolicy": "security.istio.io/v1"}

// eventPoster tells each problem to the cluster as a Warning event on
// the object (kubectl describe shows it), reason NotInForce.
func eventPoster(core rest.Interface, log *slog.Logger) func(Problem) {
	instance, _ := os.Hostname()
	return func(p Problem) {
		ns, name, _ := strings.Cut(p.Object, "/")
		now := metav1.NewTime(time.Now())
		ev := &corev1.Event{
			ObjectMeta:          metav1.ObjectMeta{GenerateName: name + ".", Namespace: ns},
			InvolvedObject:      corev1.ObjectReference{Kind: p.Kind, Namespace: ns, Name: name, APIVersion: apiVersions[p.Kind]},
			Reason:              "NotInForce",
			Message:             p.Field + ": " + p.Why,
			Type:                corev1.EventTypeWarning,
			Source:              corev1.EventSource{Component: "shunt-control"},
			FirstTimestamp:      now,
			LastTimestamp:       now,
			Count:               1,
			ReportingController: "shunt.dev/control",
			ReportingInstance:   instance,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := core.Post().Namespace(ns).Resource("events").Body(ev).Do(ctx).Error(); err != nil {
			log.Warn("event not recorded", "kind", p.Kind, "object", p.Object, "err", err)
		}
	}
}
