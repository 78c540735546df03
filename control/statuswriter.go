package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// gatewayGroup is Gateway API's API group.
const gatewayGroup = "gateway.networking.k8s.io"

// statusResources are where each kind's status is written: its resource
// and the versions to try, newest first.
var statusResources = map[string]struct {
	resource string
	versions []string
}{
	"GatewayClass": {"gatewayclasses", []string{"v1", "v1beta1"}}, "Gateway": {"gateways", []string{"v1", "v1beta1"}},
	"HTTPRoute": {"httproutes", []string{"v1", "v1beta1"}}, "GRPCRoute": {"grpcroutes", []string{"v1"}},
	"TLSRoute": {"tlsroutes", []string{"v1alpha3", "v1alpha2"}}, "TCPRoute": {"tcproutes", []string{"v1alpha2"}},
}

// statusWriter writes the statuses of the Gateway API objects of shunt's
// classes as the world changes: GatewayClasses Accepted, Gateways and
// their listeners, and the routes' parents that are shunt's Gateways
// (other controllers' parent entries kept). What it wrote last is kept,
// and only a change is written again.
type statusWriter struct {
	dyn     dynamic.Interface
	log     *slog.Logger
	written map[string]string // "KIND ns/name" → the status JSON, without times
	version map[string]string // kind → the API version that answered
	failed  bool              // a write of the last pass failed: the next tick tries again
}

// writeStatuses runs a statusWriter until ctx ends, looking at s's world
// every second.
func writeStatuses(ctx context.Context, dyn dynamic.Interface, s *Server) {
	sw := &statusWriter{dyn: dyn, log: s.log, written: map[string]string{}, version: map[string]string{}}
	var last *World
	for t := time.NewTicker(time.Second); ; {
		if w := s.World(); w != last || sw.failed {
			last, sw.failed = w, false
			sw.write(ctx, w)
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stamp is when and for which generation of its object a status is
// written; without a time it makes the text that says whether it
// changed.
type stamp struct {
	now        string
	generation int64
}

// conds are conditions as the API takes them.
func (st stamp) conds(cs []Condition) []map[string]any {
	out := make([]map[string]any, 0, len(cs))
	for _, c := range cs {
		out = append(out, map[string]any{"type": c.Type, "status": c.Status, "reason": c.Reason, "message": c.Message,
			"lastTransitionTime": st.now, "observedGeneration": st.generation})
	}
	return out
}

// write writes what changed in w's statuses.
func (sw *statusWriter) write(ctx context.Context, w *World) {
	for _, name := range slices.Sorted(maps.Keys(w.GatewayClasses)) {
		if w.GatewayClasses[name].Controller == GatewayController {
			sw.patch(ctx, "GatewayClass", "", name, 0, func(st stamp, _ map[string]any) map[string]any {
				return map[string]any{"conditions": st.conds([]Condition{cond("Accepted", true, "Accepted", "")})}
			})
		}
	}
	gws := w.GatewayStatuses()
	for _, key := range slices.Sorted(maps.Keys(gws)) {
		gs := gws[key]
		ns, name, _ := strings.Cut(key, "/")
		sw.patch(ctx, "Gateway", ns, name, gs.Generation, func(st stamp, _ map[string]any) map[string]any {
			listeners := []map[string]any{}
			for _, l := range gs.Listeners {
				kinds := []map[string]any{}
				for _, k := range l.SupportedKinds {
					kinds = append(kinds, map[string]any{"group": gatewayGroup, "kind": k})
				}
				listeners = append(listeners, map[string]any{"name": l.Name, "supportedKinds": kinds, "attachedRoutes": l.AttachedRoutes, "conditions": st.conds(l.Conditions)})
			}
			addresses := []map[string]any{}
			for _, a := range gs.Addresses {
				addresses = append(addresses, map[string]any{"type": a.Type, "value": a.Value})
			}
			return map[string]any{"conditions": st.conds(gs.Conditions), "listeners": listeners, "addresses": addresses}
		})
	}
	routes := w.RouteStatuses()
	for _, key := range slices.Sorted(maps.Keys(routes)) {
		kind, obj, _ := strings.Cut(key, " ")
		ns, name, _ := strings.Cut(obj, "/")
		sw.patch(ctx, kind, ns, name, routes[key][0].Generation, func(st stamp, current map[string]any) map[string]any {
			parents := []any{}
			for _, p := range routes[key] {
				gns, gname, _ := strings.Cut(p.Parent.Gateway, "/")
				ref := map[string]any{"group": gatewayGroup, "kind": "Gateway", "namespace": gns, "name": gname}
				if p.Parent.Section != "" {
					ref["sectionName"] = p.Parent.Section
				}
				if p.Parent.Port != 0 {
					ref["port"] = p.Parent.Port
				}
				parents = append(parents, map[string]any{"parentRef": ref, "controllerName": GatewayController, "conditions": st.conds(p.Conditions)})
			}
			// Other controllers' entries stay as they are.
			others, _ := current["parents"].([]any)
			for _, p := range others {
				if m, ok := p.(map[string]any); ok && m["controllerName"] != GatewayController {
					parents = append(parents, p)
				}
			}
			return map[string]any{"parents": parents}
		})
	}
}

// patch writes an object's status as build makes it from the current
// one, when what shunt says of it, or the object's generation (gen, as
// the world has it), changed since it last wrote it.
func (sw *statusWriter) patch(ctx context.Context, kind, ns, name string, gen int64, build func(st stamp, current map[string]any) map[string]any) {
	key := kind + " " + ns + "/" + name
	text, _ := json.Marshal(build(stamp{generation: gen}, nil))
	if sw.written[key] == string(text) {
		return
	}
	c, obj, err := sw.get(ctx, kind, ns, name)
	if err == nil {
		current, _ := obj.Object["status"].(map[string]any)
		status := build(stamp{now: time.Now().UTC().Format(time.RFC3339), generation: obj.GetGeneration()}, current)
		keepTransitionTimes(status, current)
		body, _ := json.Marshal(map[string]any{"status": status})
		_, err = c.Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "shunt-control"}, "status")
	}
	if err != nil {
		// Tried again on the next tick; an object gone is gone from the
		// world soon.
		sw.failed = true
		level := slog.LevelWarn
		if apierrors.IsNotFound(err) {
			level = slog.LevelDebug
		}
		sw.log.Log(ctx, level, "status not written", "kind", kind, "object", ns+"/"+name, "err", err)
		return
	}
	sw.written[key] = string(text)
}

// get is an object, and the client of its kind's resource in the
// version that answers (found on first use).
func (sw *statusWriter) get(ctx context.Context, kind, ns, name string) (dynamic.ResourceInterface, *unstructured.Unstructured, error) {
	r := statusResources[kind]
	versions := r.versions
	if v, ok := sw.version[kind]; ok {
		versions = []string{v}
	}
	var err error
	for _, v := range versions {
		nri := sw.dyn.Resource(k8sschema.GroupVersionResource{Group: gatewayGroup, Version: v, Resource: r.resource})
		var c dynamic.ResourceInterface = nri
		if ns != "" {
			c = nri.Namespace(ns)
		}
		obj, e := c.Get(ctx, name, metav1.GetOptions{})
		if e == nil {
			sw.version[kind] = v
			return c, obj, nil
		}
		err = e
	}
	return nil, nil, err
}

// keepTransitionTimes gives each condition in next whose status is the
// same in cur (the status as the API server has it) cur's
// lastTransitionTime: the time the condition last changed, as Gateway
// API reads it. Lists are matched item by item by their identity: a
// condition's type, a listener's name, a parent's parentRef.
func keepTransitionTimes(next, cur any) {
	switch n := next.(type) {
	case map[string]any:
		c, ok := cur.(map[string]any)
		if !ok {
			return
		}
		if _, isCond := n["lastTransitionTime"]; isCond && n["status"] == c["status"] && c["lastTransitionTime"] != nil {
			n["lastTransitionTime"] = c["lastTransitionTime"]
		}
		for k, v := range n {
			keepTransitionTimes(v, c[k])
		}
	case []map[string]any:
		for _, item := range n {
			keepTransitionTimes(item, matching(item, cur))
		}
	case []any:
		for _, item := range n {
			keepTransitionTimes(item, matching(item, cur))
		}
	}
}

// matching is the item of list cur with item's identity (type, name or
// parentRef), if any.
func matching(item, cur any) any {
	m, ok := item.(map[string]any)
	list, isList := cur.([]any)
	if !ok || !isList {
		return nil
	}
	for _, key := range []string{"type", "name", "parentRef"} {
		id, has := m[key]
		if !has {
			continue
		}
		want := mustJSON(id)
		for _, c := range list {
			if cm, ok := c.(map[string]any); ok && mustJSON(cm[key]) == want {
				return cm
			}
		}
		return nil
	}
	return nil
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
