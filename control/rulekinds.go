package control

// ruleKinds are the routing rules the control plane follows, Istio's and
// Gateway API's (newest API version first): how a manifest of each goes
// into the world and comes out, from a file or a cluster alike.
var ruleKinds = []struct {
	kind     string
	group    string
	versions []string
	resource string
	put      func(w *World, doc []byte) error
	del      func(w *World, key string)
}{
	{"VirtualService", "networking.istio.io", []string{"v1", "v1beta1"}, "virtualservices",
		func(w *World, doc []byte) error {
			vs, err := VirtualServiceFrom(doc)
			if err == nil && vs != nil {
				w.PutVirtualService(vs)
			}
			return err
		},
		func(w *World, key string) { delete(w.VirtualServices, key) }},
	{"DestinationRule", "networking.istio.io", []string{"v1", "v1beta1"}, "destinationrules",
		func(w *World, doc []byte) error {
			dr, err := DestinationRuleFrom(doc)
			if err == nil {
				w.PutDestinationRule(dr)
			}
			return err
		},
		func(w *World, key string) { delete(w.DestinationRules, key) }},
	{"ServiceEntry", "networking.istio.io", []string{"v1", "v1beta1"}, "serviceentries",
		func(w *World, doc []byte) error {
			se, err := ServiceEntryFrom(doc)
			if err == nil {
				w.PutServiceEntry(se)
			}
			return err
		},
		func(w *World, key string) { w.DeleteServiceEntry(key) }},
	{"Sidecar", "networking.istio.io", []string{"v1", "v1beta1"}, "sidecars",
		func(w *World, doc []byte) error {
			sc, err := SidecarFrom(doc)
			if err == nil {
				w.PutSidecar(sc)
			}
			return err
		},
		func(w *World, key string) { w.DeleteSidecar(key) }},
	{"HTTPRoute", "gateway.networking.k8s.io", []string{"v1", "v1beta1"}, "httproutes",
		func(w *World, doc []byte) error {
			r, err := HTTPRouteFrom(doc, w.Domain)
			if err == nil && r != nil {
				w.PutHTTPRoute(r)
			}
			return err
		},
		func(w *World, key string) { delete(w.HTTPRoutes, key) }},
	{"GRPCRoute", "gateway.networking.k8s.io", []string{"v1"}, "grpcroutes",
		func(w *World, doc []byte) error {
			r, err := GRPCRouteFrom(doc, w.Domain)
			if err == nil && r != nil {
				w.PutHTTPRoute(r)
			}
			return err
		},
		func(w *World, key string) { delete(w.HTTPRoutes, routeKey("GRPCRoute", key)) }},
}
