package control

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// informer lists and watches one kind through a REST client that knows
// only the kinds the control plane reads: client-go's typed clientset
// would register every API group, and cost every shunt process (the
// sidecar too) 14 MB at start.
func informer(client rest.Interface, resource string, obj runtime.Object) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client, resource, metav1.NamespaceAll, fields.Everything())
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
}

// restClients are REST clients for core/v1 and discovery.k8s.io/v1.
func restClients(cfg *rest.Config) (core, discovery rest.Interface, err error) {
	if core, err = restClient(cfg, corev1.SchemeGroupVersion, corev1.AddToScheme); err != nil {
		return nil, nil, err
	}
	discovery, err = restClient(cfg, discoveryv1.SchemeGroupVersion, discoveryv1.AddToScheme)
	return core, discovery, err
}

// restClient is a REST client for one API group version, whose types
// add registers.
func restClient(cfg *rest.Config, gv k8sschema.GroupVersion, add func(*runtime.Scheme) error) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := add(scheme); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, "/apis", serializer.NewCodecFactory(scheme).WithoutConversion()
	if gv.Group == "" {
		c.APIPath = "/api"
	}
	if c.UserAgent == "" {
		c.UserAgent = "shunt-control"
	}
	return rest.RESTClientFor(c)
}

// Watch keeps s's world in step with a cluster's Services,
// EndpointSlices, Pods and Namespaces, and the routing rules where it has their CRDs
// (Istio's VirtualServices, DestinationRules and ServiceEntries, Gateway
// API's HTTPRoutes), by informers; what of a rule cannot take effect is
// told as a Warning event on it; the statuses of the Gateway API objects
// of shunt's classes are written as they change; it returns once their
// first lists are in the world (or ctx ends first), and goes on watching
// until ctx ends.
func Watch(ctx context.Context, cfg *rest.Config, s *Server) error {
	core, disc, err := restClients(cfg)
	if err != nil {
		return err
	}
	services, slices, pods := informer(core, "services", &corev1.Service{}),
		informer(disc, "endpointslices", &discoveryv1.EndpointSlice{}), informer(core, "pods", &corev1.Pod{})
	namespaces := informer(core, "namespaces", &corev1.Namespace{})
	// TLS Secrets alone: a gateway's certificates.
	secrets := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(core, "secrets", metav1.NamespaceAll,
		fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))), &corev1.Secret{}, 0, cache.Indexers{})
	domain := s.World().Domain
	err = follow(s, services, func(w *World, svc *corev1.Service) { w.PutService(ServiceFrom(svc, domain)) },
		func(w *World, svc *corev1.Service) { w.DeleteService(svc.Namespace + "/" + svc.Name) })
	if err == nil {
		err = follow(s, slices,
			func(w *World, es *discoveryv1.EndpointSlice) {
				if svc, eps, ok := EndpointsFrom(es); ok {
					w.PutSlice(svc, es.Namespace+"/"+es.Name, nonNil(eps))
				}
			},
			func(w *World, es *discoveryv1.EndpointSlice) {
				if svc, _, ok := EndpointsFrom(es); ok {
					w.PutSlice(svc, es.Namespace+"/"+es.Name, nil)
				}
			})
	}
	if err == nil {
		err = follow(s, pods,
			func(w *World, p *corev1.Pod) {
				if p.Status.PodIP != "" {
					w.PutPod(PodFrom(p))
				}
			},
			func(w *World, p *corev1.Pod) { w.DeletePod(p.Namespace + "/" + p.Name) })
	}
	if err == nil {
		err = follow(s, namespaces, func(w *World, ns *corev1.Namespace) { w.PutNamespace(ns.Name, ns.Labels) },
			func(w *World, ns *corev1.Namespace) { delete(w.Namespaces, ns.Name) })
	}
	// The gateways' TLS Secrets where it may read them
	// (deploy/control-gateway-secrets.yaml); else not followed.
	readSecrets := secretsReadable(ctx, core, s)
	if err == nil && readSecrets {
		err = follow(s, secrets,
			func(w *World, sec *corev1.Secret) {
				if ts, ok := TLSSecretFrom(sec); ok {
					w.PutSecret(sec.Namespace+"/"+sec.Name, ts)
				}
			},
			func(w *World, sec *corev1.Secret) { delete(w.Secrets, sec.Namespace+"/"+sec.Name) })
	}
	if err != nil {
		return err
	}
	s.compiler.OnProblem(eventPoster(core, s.log))
	rules, err := ruleInformers(ctx, cfg, s)
	if err != nil {
		return err
	}
	start := time.Now()
	all := append([]cache.SharedIndexInformer{services, slices, pods, namespaces}, rules...)
	if readSecrets {
		all = append(all, secrets)
	}
	synced := make([]cache.InformerSynced, len(all))
	for i, inf := range all {
		go inf.Run(ctx.Done())
		synced[i] = inf.HasSynced
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("the cluster's services, endpoint slices, pods and routing rules never listed: %v", context.Cause(ctx))
	}
	s.log.Info("cluster listed", "services", len(s.World().Services), "took", time.Since(start).Round(time.Millisecond))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	go writeStatuses(ctx, dyn, s)
	return nil
}

// secretsReadable says the control plane may list TLS Secrets; where it
// may not, that is logged once.
func secretsReadable(ctx context.Context, core rest.Interface, s *Server) bool {
	err := core.Get().Resource("secrets").VersionedParams(&metav1.ListOptions{Limit: 1,
		FieldSelector: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()}, metav1.ParameterCodec).Do(ctx).Error()
	if err != nil {
		s.log.Warn("the control plane may not read TLS Secrets: the gateways' HTTPS listeners get no certificate (see deploy/control-gateway-secrets.yaml)", "err", err)
		return false
	}
	return true
}

// follow keeps s's world in step with an informer's objects of type T:
// put when added, taken out and put again when changed, del when gone.
func follow[T any](s *Server, inf cache.SharedIndexInformer, put, del func(*World, T)) error {
	typed := func(obj any, f func(T)) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if o, ok := obj.(T); ok {
			f(o)
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { typed(obj, func(o T) { s.Update(func(w *World) { put(w, o) }) }) },
		UpdateFunc: func(old, obj any) {
			typed(old, func(o T) {
				typed(obj, func(n T) { s.Update(func(w *World) { del(w, o); put(w, n) }) })
			})
		},
		DeleteFunc: func(obj any) { typed(obj, func(o T) { s.Update(func(w *World) { del(w, o) }) }) },
	})
	return err
}

// nonNil keeps an empty slice's place: a slice with no endpoints still
// exists.
func nonNil(eps []Endpoint) []Endpoint {
	if eps == nil {
		return []Endpoint{}
	}
	return eps
}
