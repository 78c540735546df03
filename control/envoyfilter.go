package control

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// EnvoyFilter is Istio's networking.istio.io EnvoyFilter, the patches
// shunt runs: HTTP filters the proxy runs (local_ratelimit, fault,
// cors) inserted into the connection managers of the gateways and the
// sidecars' inbound side, first or before the router — Istio's way to
// a local rate limit. The workloads it patches: its selector's pods in
// its namespace, or in every namespace from the root namespace.
type EnvoyFilter struct {
	Name, Namespace string
	Selector        map[string]string
	Priority        int32
	Patches         []FilterPatch
	// Problems are what of it is not run, with why: a patch shunt does
	// not run is left out whole.
	Problems []string
}

// FilterPatch is one of an EnvoyFilter's configPatches shunt runs.
type FilterPatch struct {
	Index   int
	Context string // GATEWAY, SIDECAR_INBOUND, ANY
	Port    uint16 // the listener's; 0: any
	// First: INSERT_FIRST, or INSERT_BEFORE with no subFilter (before
	// the first filter); else INSERT_BEFORE the router.
	First  bool
	Filter *hcmv3.HttpFilter
}

var envoyFilterSchema = schema{
	"workloadSelector": schema{"labels": nil},
	"priority":         nil,
	"configPatches": listOf{schema{
		"applyTo": nil,
		"match": schema{"context": nil, "listener": schema{"portNumber": nil,
			"filterChain": schema{"filter": schema{"name": nil, "subFilter": schema{"name": nil}}}}},
		"patch": schema{"operation": nil, "value": nil},
	}},
}

// patchFilters are the HTTP filters a patch may insert: those the proxy
// runs, by their type.
var patchFilters = map[string]proto.Message{
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": &localratelimitv3.LocalRateLimit{},
	"envoy.extensions.filters.http.fault.v3.HTTPFault":                &faultv3.HTTPFault{},
	"envoy.extensions.filters.http.cors.v3.Cors":                      &corsv3.Cors{},
}

type jsonFilterPatch struct {
	ApplyTo string
	Match   struct {
		Context  string
		Listener *struct {
			PortNumber  uint16
			FilterChain struct {
				Filter struct {
					Name      string
					SubFilter struct{ Name string }
				}
			}
		}
	}
	Patch struct {
		Operation string
		Value     map[string]any
	}
}

// EnvoyFilterFrom reads an EnvoyFilter manifest.
func EnvoyFilterFrom(doc []byte) (*EnvoyFilter, error) {
	o, problems, err := decodeObject(doc, envoyFilterSchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		WorkloadSelector struct{ Labels map[string]string }
		Priority         int32
		ConfigPatches    []jsonFilterPatch
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("EnvoyFilter %s/%s: %v", o.Metadata.Namespace, o.Metadata.Name, err)
	}
	f := &EnvoyFilter{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Selector: spec.WorkloadSelector.Labels, Priority: spec.Priority}
	for i, p := range spec.ConfigPatches {
		path := fmt.Sprintf("spec.configPatches[%d]", i)
		if slices.ContainsFunc(problems, func(pr string) bool { return len(pr) > len(path) && pr[:len(path)+1] == path+"." }) {
			f.Problems = append(f.Problems, path+": a field of it is not run by shunt: the patch is left out")
			continue
		}
		fp, why := p.model(i, path)
		if why != "" {
			f.Problems = append(f.Problems, why)
			continue
		}
		f.Patches = append(f.Patches, fp)
	}
	f.Problems = append(problems, f.Problems...)
	return f, nil
}

// model is a patch as shunt runs it, or why it does not.
func (p jsonFilterPatch) model(i int, path string) (FilterPatch, string) {
	fp := FilterPatch{Index: i, Context: cmp.Or(p.Match.Context, "ANY")}
	switch {
	case p.ApplyTo != "HTTP_FILTER":
		return fp, fmt.Sprintf("%s.applyTo: %s is not run by shunt (HTTP_FILTER is)", path, p.ApplyTo)
	case fp.Context == "SIDECAR_OUTBOUND":
		return fp, path + ".match.context: SIDECAR_OUTBOUND is not run by shunt (GATEWAY, SIDECAR_INBOUND and ANY, for those two, are)"
	case fp.Context != "GATEWAY" && fp.Context != "SIDECAR_INBOUND" && fp.Context != "ANY":
		return fp, fmt.Sprintf("%s.match.context: %q is not GATEWAY, SIDECAR_INBOUND, SIDECAR_OUTBOUND or ANY", path, fp.Context)
	}
	if l := p.Match.Listener; l != nil {
		fp.Port = l.PortNumber
		if n := l.FilterChain.Filter.Name; n != "" && n != "envoy.filters.network.http_connection_manager" && n != "envoy.http_connection_manager" {
			return fp, fmt.Sprintf("%s.match.listener.filterChain.filter.name: %s has no HTTP filters", path, n)
		}
	}
	sub := ""
	if l := p.Match.Listener; l != nil {
		sub = l.FilterChain.Filter.SubFilter.Name
	}
	switch op := p.Patch.Operation; {
	case op == "INSERT_FIRST" || op == "INSERT_BEFORE" && sub == "":
		fp.First = true // before the first filter, as Istio reads a match of no subFilter
	case op == "INSERT_BEFORE" && (sub == "envoy.filters.http.router" || sub == "envoy.router"):
	case op == "INSERT_BEFORE":
		return fp, path + ".match.listener.filterChain.filter.subFilter.name: " + sub + ": shunt inserts before the router, or first"
	default:
		return fp, fmt.Sprintf("%s.patch.operation: %s is not run by shunt (INSERT_FIRST, and INSERT_BEFORE the router, are)", path, op)
	}
	name, _ := p.Patch.Value["name"].(string)
	tc, _ := p.Patch.Value["typed_config"].(map[string]any)
	if tc == nil {
		tc, _ = p.Patch.Value["typedConfig"].(map[string]any)
	}
	if name == "" || tc == nil || len(p.Patch.Value) != 2 {
		return fp, path + ".patch.value: an HTTP filter's name and typed_config, and nothing else"
	}
	m, err := envoyconfig.ParseTyped(tc, path+".patch.value.typed_config")
	if err != nil {
		return fp, err.Error()
	}
	if _, ok := patchFilters[string(m.ProtoReflect().Descriptor().FullName())]; !ok {
		return fp, fmt.Sprintf("%s.patch.value.typed_config: %s is not an HTTP filter shunt inserts (%v are)", path,
			m.ProtoReflect().Descriptor().FullName(), slices.Sorted(maps.Keys(patchFilters)))
	}
	fp.Filter = envoyres.HTTPFilter(name, m)
	return fp, ""
}

// PutEnvoyFilter adds or replaces an EnvoyFilter.
func (w *World) PutEnvoyFilter(f *EnvoyFilter) { w.EnvoyFilters[f.Namespace+"/"+f.Name] = f }

// patchedFilters are the HTTP filters the EnvoyFilters for the
// compiler's pod insert into a connection manager of context (GATEWAY,
// SIDECAR_INBOUND) on port: those first, and those before the router,
// in the order of the filters' priority and then their names.
func (c *compiler) patchedFilters(context string, port uint16) (first, beforeRouter []*hcmv3.HttpFilter) {
	if len(c.w.EnvoyFilters) == 0 {
		return nil, nil
	}
	if c.envoyFilters == nil { // once per compile: every connection manager asks
		pod := c.pod()
		c.envoyFilters = []*EnvoyFilter{}
		for _, f := range c.w.EnvoyFilters {
			if (f.Namespace == pod.Namespace || f.Namespace == c.m.RootNamespace) && labelsMatch(pod.Labels, f.Selector) {
				c.envoyFilters = append(c.envoyFilters, f)
			}
		}
		slices.SortFunc(c.envoyFilters, func(a, b *EnvoyFilter) int {
			return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name))
		})
	}
	for _, f := range c.envoyFilters {
		for _, p := range f.Patches {
			if p.Context != context && p.Context != "ANY" || p.Port != 0 && p.Port != port {
				continue
			}
			if p.First {
				first = append([]*hcmv3.HttpFilter{p.Filter}, first...) // each goes first
			} else {
				beforeRouter = append(beforeRouter, p.Filter)
			}
		}
	}
	return first, beforeRouter
}
