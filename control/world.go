package control

import (
	"bytes"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"
)

// PutService adds or replaces a service (w must be a clone of what a
// snapshot uses: see Clone).
func (w *World) PutService(s *Service) { w.Services[s.Namespace+"/"+s.Name] = s }

// DeleteService removes the service namespace/name.
func (w *World) DeleteService(key string) { delete(w.Services, key) }

// PutSlice sets the endpoints one EndpointSlice holds for the service
// svc (namespace/name); none removes the slice.
func (w *World) PutSlice(svc, slice string, eps []Endpoint) {
	if w.epVersion == nil {
		w.epVersion = map[string]uint64{}
	}
	w.epVersion[svc] = epVersions.Add(1)
	slices := maps.Clone(w.Endpoints[svc])
	if slices == nil {
		slices = map[string][]Endpoint{}
	}
	if eps == nil {
		delete(slices, slice)
	} else {
		slices[slice] = eps
	}
	if len(slices) == 0 {
		delete(w.Endpoints, svc)
		return
	}
	w.Endpoints[svc] = slices
}

// DeleteSlice removes an EndpointSlice (namespace/name) from whichever
// service holds it.
func (w *World) DeleteSlice(key string) {
	for svc, slices := range w.Endpoints {
		if _, ok := slices[key]; ok {
			w.PutSlice(svc, key, nil)
		}
	}
}

// PutPod adds or replaces a pod.
func (w *World) PutPod(p *Pod) {
	w.Pods[p.Namespace+"/"+p.Name] = p
	w.podVersion = epVersions.Add(1)
}

// DeletePod removes the pod namespace/name.
func (w *World) DeletePod(key string) {
	delete(w.Pods, key)
	w.podVersion = epVersions.Add(1)
}

// PutVirtualService adds or replaces a VirtualService.
func (w *World) PutVirtualService(vs *VirtualService) {
	w.VirtualServices[vs.Namespace+"/"+vs.Name] = vs
}

// PutServiceEntry adds or replaces a ServiceEntry: its hosts as
// services, with their endpoints.
func (w *World) PutServiceEntry(se *ServiceEntry) {
	key := se.Namespace + "/" + se.Name
	w.DeleteServiceEntry(key)
	if w.serviceEntries == nil {
		w.serviceEntries = map[string]serviceEntry{}
	}
	var keys []string
	for _, s := range se.Services {
		k := s.Namespace + "/" + s.Name
		w.PutService(s)
		w.PutSlice(k, "serviceentry/"+key, nonNil(se.Endpoints[k]))
		keys = append(keys, k)
	}
	w.serviceEntries = maps.Clone(w.serviceEntries)
	w.serviceEntries[key] = serviceEntry{keys, se.Problems}
}

// DeleteServiceEntry removes the ServiceEntry namespace/name's hosts.
func (w *World) DeleteServiceEntry(key string) {
	se, ok := w.serviceEntries[key]
	if !ok {
		return
	}
	for _, k := range se.services {
		w.DeleteService(k)
		w.PutSlice(k, "serviceentry/"+key, nil)
	}
	w.serviceEntries = maps.Clone(w.serviceEntries)
	delete(w.serviceEntries, key)
}

// PutSidecar adds or replaces a Sidecar; one with a workload selector is
// kept for its problems only.
func (w *World) PutSidecar(sc *Sidecar) {
	key := sc.Namespace + "/" + sc.Name
	w.DeleteSidecar(key)
	if !sc.Selected {
		w.Sidecars[key] = sc
	}
	if len(sc.Problems) > 0 {
		if w.sidecarProblems == nil {
			w.sidecarProblems = map[string][]string{}
		}
		w.sidecarProblems[key] = sc.Problems
	}
}

// DeleteSidecar removes the Sidecar namespace/name.
func (w *World) DeleteSidecar(key string) {
	delete(w.Sidecars, key)
	delete(w.sidecarProblems, key)
}

// PutNamespace adds or replaces a namespace's labels.
func (w *World) PutNamespace(name string, labels map[string]string) {
	if labels == nil {
		labels = map[string]string{}
	}
	w.Namespaces[name] = labels
}

// PutHTTPRoute adds or replaces an HTTPRoute or a GRPCRoute.
func (w *World) PutHTTPRoute(r *HTTPRoute) {
	w.HTTPRoutes[routeKey(r.Routes.Kind, r.Namespace+"/"+r.Name)] = r
}

// routeKey keys a Gateway API route in World.HTTPRoutes: an HTTPRoute's
// namespace/name, a GRPCRoute's after its kind (their names may meet).
func routeKey(kind, key string) string {
	if kind == "GRPCRoute" {
		return kind + " " + key
	}
	return key
}

// PutDestinationRule adds or replaces a DestinationRule.
func (w *World) PutDestinationRule(dr *DestinationRule) {
	w.DestinationRules[dr.Namespace+"/"+dr.Name] = dr
}

// epVersions numbers endpoint changes, across worlds.
var epVersions atomic.Uint64

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// LoadWorld is the world a file of Kubernetes manifests describes: its
// Services, EndpointSlices and Pods (YAML documents or JSON; a List's
// items too); other kinds are skipped.
func LoadWorld(data []byte, domain string) (*World, error) {
	w := NewWorld()
	w.Domain = domain
	for i, doc := range docSeparator.Split(string(data), -1) {
		if len(bytes.TrimSpace([]byte(doc))) == 0 {
			continue
		}
		if err := w.putManifest([]byte(doc)); err != nil {
			return nil, fmt.Errorf("document %d: %v", i+1, err)
		}
	}
	return w, nil
}

func (w *World) putManifest(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string
		Items      []any
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	switch head.Kind {
	case "List", "ServiceList", "EndpointSliceList", "PodList":
		for j, item := range head.Items {
			js, err := yaml.Marshal(item)
			if err != nil {
				return err
			}
			if err := w.putManifest(js); err != nil {
				return fmt.Errorf("item %d: %v", j+1, err)
			}
		}
	case "Service":
		var s corev1.Service
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			return err
		}
		defaultNamespace(&s.ObjectMeta.Namespace)
		w.PutService(ServiceFrom(&s, w.Domain))
	case "EndpointSlice":
		var es discoveryv1.EndpointSlice
		if err := yaml.UnmarshalStrict(doc, &es); err != nil {
			return err
		}
		defaultNamespace(&es.Namespace)
		svc, eps, ok := EndpointsFrom(&es)
		if !ok {
			return fmt.Errorf("EndpointSlice %s/%s: no %s label", es.Namespace, es.Name, discoveryv1.LabelServiceName)
		}
		w.PutSlice(svc, es.Namespace+"/"+es.Name, eps)
	case "Namespace":
		var ns corev1.Namespace
		if err := yaml.UnmarshalStrict(doc, &ns); err != nil {
			return err
		}
		w.PutNamespace(ns.Name, ns.Labels)
	case "Secret":
		var sec corev1.Secret
		if err := yaml.UnmarshalStrict(doc, &sec); err != nil {
			return err
		}
		defaultNamespace(&sec.Namespace)
		if ts, ok := TLSSecretFrom(&sec); ok {
			w.PutSecret(sec.Namespace+"/"+sec.Name, ts)
		}
	case "Pod":
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(doc, &p); err != nil {
			return err
		}
		defaultNamespace(&p.Namespace)
		w.PutPod(PodFrom(&p))
	case "":
		return fmt.Errorf("no kind")
	default:
		group, _, _ := strings.Cut(head.APIVersion, "/")
		for _, k := range ruleKinds {
			if k.kind == head.Kind && (k.group == group || head.APIVersion == "") {
				return k.put(w, doc)
			}
		}
	}
	return nil
}

func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = "default"
	}
}
