// Package xds is the sidecar's xDS client: an ADS stream to the control
// plane (state of the world), whose listeners, routes, clusters and
// endpoints are put together with the bootstrap's static resources into
// one configuration that the proxy reloads, as Envoy applies what it is
// sent; each response is ACKed once in force, or NACKed with why and the
// last good configuration kept.
package xds

import (
	"fmt"
	"slices"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The resource types, by their type URLs.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// resources are the accepted dynamic resources, by name.
type resources struct {
	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
}

func newResources() *resources {
	return &resources{listeners: map[string]*listenerv3.Listener{}, routes: map[string]*routev3.RouteConfiguration{},
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
}

// with is r with one type's resources replaced by those of a response.
func (r *resources) with(typeURL string, msgs []*anypb.Any) (*resources, error) {
	out := *r
	switch typeURL {
	case ListenerType:
		m, err := decode[*listenerv3.Listener](msgs, func(l *listenerv3.Listener) string { return l.GetName() })
		out.listeners = m
		return &out, err
	case RouteType:
		m, err := decode[*routev3.RouteConfiguration](msgs, func(rc *routev3.RouteConfiguration) string { return rc.GetName() })
		out.routes = m
		return &out, err
	case ClusterType:
		m, err := decode[*clusterv3.Cluster](msgs, func(c *clusterv3.Cluster) string { return c.GetName() })
		out.clusters = m
		return &out, err
	case EndpointType:
		m, err := decode[*endpointv3.ClusterLoadAssignment](msgs, func(c *endpointv3.ClusterLoadAssignment) string { return c.GetClusterName() })
		out.endpoints = m
		return &out, err
	}
	return nil, fmt.Errorf("%s is not a type shunt subscribes to", typeURL)
}

// decode unpacks a response's resources, each named once.
func decode[M proto.Message](msgs []*anypb.Any, name func(M) string) (map[string]M, error) {
	out := map[string]M{}
	for i, a := range msgs {
		msg, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource %d: %v", i, err)
		}
		m, ok := msg.(M)
		if !ok {
			return nil, fmt.Errorf("resource %d: a %s among the response's", i, a.GetTypeUrl())
		}
		n := name(m)
		if _, dup := out[n]; dup || n == "" {
			return nil, fmt.Errorf("resource %d: the name %q is empty or given twice", i, n)
		}
		out[n] = m
	}
	return out, nil
}

// routeNames are the route configurations the listeners ask for (RDS).
func (r *resources) routeNames() []string {
	var names []string
	for _, l := range r.listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if hcm := asHCM(f.GetTypedConfig()); hcm != nil && hcm.GetRds() != nil {
					names = append(names, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	return sortedUnique(names)
}

// endpointNames are the load assignments the EDS clusters ask for.
func (r *resources) endpointNames() []string {
	var names []string
	for _, c := range r.clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			names = append(names, edsName(c))
		}
	}
	return sortedUnique(names)
}

func edsName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

func asHCM(a *anypb.Any) *hcmv3.HttpConnectionManager {
	if a == nil || a.MessageName() != "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
		return nil
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if a.UnmarshalTo(hcm) != nil {
		return nil
	}
	return hcm
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// missing names what the listeners and clusters refer to and has not
// come yet: nothing is applied until it has (Envoy's warming).
func (r *resources) missing() []string {
	var out []string
	for _, n := range r.routeNames() {
		if r.routes[n] == nil {
			out = append(out, "route configuration "+n)
		}
	}
	for _, n := range r.endpointNames() {
		if r.endpoints[n] == nil {
			out = append(out, "endpoints "+n)
		}
	}
	return out
}

// assemble puts the dynamic resources into base's static ones: routes
// inline in their connection managers, endpoints in their clusters (then
// STATIC). A dynamic name the bootstrap has already is an error.
func (r *resources) assemble(base *bootstrapv3.Bootstrap) (*bootstrapv3.Bootstrap, error) {
	b := proto.Clone(base).(*bootstrapv3.Bootstrap)
	if b.StaticResources == nil {
		b.StaticResources = &bootstrapv3.Bootstrap_StaticResources{}
	}
	sr := b.StaticResources
	names := map[string]bool{}
	for _, l := range sr.GetListeners() {
		names["listener "+l.GetName()] = true
	}
	for _, c := range sr.GetClusters() {
		names["cluster "+c.GetName()] = true
	}
	for _, name := range sortedKeys(r.clusters) {
		if names["cluster "+name] {
			return nil, fmt.Errorf("cluster %q: the bootstrap has one of that name", name)
		}
		c := proto.Clone(r.clusters[name]).(*clusterv3.Cluster)
		if c.GetType() == clusterv3.Cluster_EDS {
			cla := proto.Clone(r.endpoints[edsName(c)]).(*endpointv3.ClusterLoadAssignment)
			cla.ClusterName = c.GetName()
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.EdsClusterConfig, c.LoadAssignment = nil, cla
		}
		sr.Clusters = append(sr.Clusters, c)
	}
	for _, name := range sortedKeys(r.listeners) {
		if names["listener "+name] {
			return nil, fmt.Errorf("listener %q: the bootstrap has one of that name", name)
		}
		l := proto.Clone(r.listeners[name]).(*listenerv3.Listener)
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := asHCM(f.GetTypedConfig())
				if hcm == nil || hcm.GetRds() == nil {
					continue
				}
				hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: r.routes[hcm.GetRds().GetRouteConfigName()]}
				a, err := anypb.New(hcm)
				if err != nil {
					return nil, err
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
		sr.Listeners = append(sr.Listeners, l)
	}
	return b, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Assemble is base with a control plane's resources, by type URL, put in
// as the client puts them before the proxy runs them.
func Assemble(base *bootstrapv3.Bootstrap, byType map[string][]*anypb.Any) (*bootstrapv3.Bootstrap, error) {
	r := newResources()
	for _, t := range []string{ListenerType, RouteType, ClusterType, EndpointType} {
		next, err := r.with(t, byType[t])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", shortType(t), err)
		}
		r = next
	}
	return r.assemble(base)
}
