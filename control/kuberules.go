package control

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// ruleInformers are informers on the routing rules where the cluster
// has their CRDs; a kind it lacks is logged and not followed. A rule that
// does not read is logged and the one before it stays.
func ruleInformers(ctx context.Context, cfg *rest.Config, s *Server) ([]cache.SharedIndexInformer, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var out []cache.SharedIndexInformer
	for _, k := range ruleKinds {
		var client dynamic.NamespaceableResourceInterface
		for _, v := range k.versions {
			c := dyn.Resource(k8sschema.GroupVersionResource{Group: k.group, Version: v, Resource: k.resource})
			_, err := c.List(ctx, metav1.ListOptions{Limit: 1})
			if err == nil {
				client = c
				break
			}
			if apierrors.IsForbidden(err) {
				s.log.Warn("the control plane may not read "+k.kind+"s: not followed (see deploy/control.yaml's ClusterRole)", "kind", k.kind, "err", err)
				break
			}
			if !apierrors.IsNotFound(err) {
				return nil, err
			}
		}
		if client == nil {
			s.log.Warn("the cluster has no "+k.kind+" CRD ("+k.group+") the control plane may read: not followed", "kind", k.kind)
			continue
		}
		inf := cache.NewSharedIndexInformer(&cache.ListWatch{
			ListFunc:  func(o metav1.ListOptions) (runtime.Object, error) { return client.List(ctx, o) },
			WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) { return client.Watch(ctx, o) },
		}, &unstructured.Unstructured{}, 0, cache.Indexers{})
		put := func(obj any) {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return
			}
			doc, err := u.MarshalJSON()
			if err != nil {
				return
			}
			s.Update(func(w *World) {
				if err := k.put(w, doc); err != nil {
					s.log.Error("routing rule not read; the one before stays", "kind", k.kind, "object", u.GetNamespace()+"/"+u.GetName(), "err", err)
				}
			})
		}
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    put,
			UpdateFunc: func(_, obj any) { put(obj) },
			DeleteFunc: func(obj any) {
				if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = tomb.Obj
				}
				if u, ok := obj.(*unstructured.Unstructured); ok {
					s.Update(func(w *World) { k.del(w, u.GetNamespace()+"/"+u.GetName()) })
				}
			},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, inf)
	}
	return out, nil
}
