package control

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy"
)

// compileGateway is what a gateway's proxy (a router node) is sent: a
// listener per port its Gateways open — the HTTP listeners of the
// Gateway API Gateway its pod's label names, the HTTP servers of the
// Istio Gateways whose selector picks its pod —, on all addresses, whose
// connection manager routes by the route configuration http.PORT: a
// virtual host per hostname, with the rules of the HTTPRoutes attached
// there (in Gateway API's precedence) and of the VirtualServices bound
// there (in their order); the clusters and endpoints of the services
// the routes send to; the AuthorizationPolicies on its pod before them.
// Nothing for a node with no Gateway to serve (why is
// logged); what of a Gateway shunt does not run is reported with the
// other rules' (Survey).
func (cc *Compiler) compileGateway(w *World, n Node) *Resources {
	c := &compiler{w: w, n: n, m: cc.mesh, cc: cc}
	c.rules = w.rulesFor(n.Namespace, func(string) bool { return true })
	out := &Resources{}
	g, why := w.gatewayOf(n)
	istio := w.istioGatewaysOf(w.labelsOf(n))
	if g == nil && len(istio) == 0 {
		if cc.log != nil {
			cc.log.Warn("a gateway has nothing to serve", "proxy", n.ID, "why", why+"; and no Istio Gateway's selector picks its pod")
		}
		return out
	}
	ports := map[uint16]map[string]*gatewayHost{}
	open := func(port uint16) {
		if ports[port] == nil {
			ports[port] = map[string]*gatewayHost{}
		}
	}
	host := func(port uint16, h string) *gatewayHost {
		gh := ports[port][h]
		if gh == nil {
			gh = &gatewayHost{}
			ports[port][h] = gh
		}
		return gh
	}
	// certs are the HTTPS ports' certificates, by port.
	certs := map[uint16][]gatewayCert{}
	var passthrough []GatewayListener
	if g != nil {
		for _, l := range g.Listeners {
			if l.Protocol == "TLS" || l.Protocol == "TCP" {
				passthrough = append(passthrough, l)
				continue
			}
			open(l.Port)
			if l.Protocol == "HTTPS" {
				// None it may serve: the port is closed, not plain HTTP.
				certs[l.Port] = append(slices.Clip(certs[l.Port]), c.listenerCerts(g, l)...)
				if certs[l.Port] == nil {
					certs[l.Port] = []gatewayCert{}
				}
			}
			for _, key := range slices.Sorted(maps.Keys(w.HTTPRoutes)) {
				r := w.HTTPRoutes[key]
				if !slices.ContainsFunc(r.Gateways, func(p ParentGateway) bool { return w.admits(g, l, r.Routes.Kind, r.Namespace, p) }) {
					continue
				}
				rules := c.grantedBackends(r)
				for _, h := range l.hostnames(r.Hostnames) {
					gh := host(l.Port, h)
					if gh.routes == nil {
						gh.routes = &VirtualService{Kind: r.Routes.Kind, Name: r.Name, Namespace: r.Namespace}
					}
					gh.routes.HTTP = append(gh.routes.HTTP, rules...)
				}
			}
		}
	}
	l4 := map[uint16][]istioL4{} // the Istio servers of TLS passthrough and TCP, by port
	for _, key := range istio {
		gw := w.IstioGateways[key]
		for _, srv := range gw.Servers {
			if srv.l4() {
				l4[srv.Port] = append(l4[srv.Port], istioL4{key, gw, srv})
				continue
			}
			open(srv.Port)
			if srv.Credential != "" || srv.CertFile != "" || srv.Mesh {
				gc := gatewayCert{owner: key, field: fmt.Sprintf("spec.servers[%d].tls", srv.Index), certFile: srv.CertFile, keyFile: srv.KeyFile, mesh: srv.Mesh,
					clientCA: srv.ClientCA, caFile: srv.CAFile}
				if srv.Credential != "" {
					gc.secret = n.Namespace + "/" + srv.Credential // the gateway's namespace's, as Istio reads it
				}
				for _, h := range srv.Hosts {
					_, name, qualified := strings.Cut(h, "/")
					if !qualified {
						name = h
					}
					gc.names = append(gc.names, name)
				}
				if slices.Contains(gc.names, "*") {
					gc.names = []string{"*"} // any SNI, or none
				}
				certs[srv.Port] = append(certs[srv.Port], gc)
			}
			for _, vsKey := range slices.Sorted(maps.Keys(w.VirtualServices)) {
				vs := w.VirtualServices[vsKey]
				rules := vs.gatewayRules(key)
				if len(rules) == 0 {
					continue
				}
				bound := &VirtualService{Name: vs.Name, Namespace: vs.Namespace, HTTP: rules}
				for _, h := range vs.Hosts {
					if srv.admitsHost(h, vs.Namespace, gw.Namespace) {
						gh := host(srv.Port, h)
						gh.vss = append(gh.vss, bound)
						gh.httpsRedirect = gh.httpsRedirect || srv.HTTPSRedirect
					}
				}
			}
		}
	}
	// The AuthorizationPolicies on the gateway's pod guard what it takes
	// in, as on a sidecar's inbound (ipBlocks: the client's address).
	authz, _ := c.authzFilters(c.pod())
	clusters := map[string]bool{}
	taken := map[uint16]bool{} // ports with an L4 listener
	for _, l := range passthrough {
		if ports[l.Port] != nil {
			c.cc.report(Problem{"Gateway", g.Namespace + "/" + g.Name, "spec.listeners[" + l.Name + "].port", "an HTTP listener's too: the " + l.Protocol + " listener is left out"})
		} else if lst := c.passthroughListener(g, l, clusters); lst != nil {
			out.Listeners = append(out.Listeners, lst)
			taken[l.Port] = true
		}
	}
	for _, port := range slices.Sorted(maps.Keys(l4)) {
		if ports[port] != nil || taken[port] {
			for _, s := range l4[port] {
				c.cc.report(Problem{"Gateway", s.key, fmt.Sprintf("spec.servers[%d].port", s.srv.Index), "another server's or listener's port: the " + s.srv.Protocol + " server is left out"})
			}
		} else if lst := c.istioL4Listener(port, l4[port], clusters); lst != nil {
			out.Listeners = append(out.Listeners, lst)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		name := fmt.Sprintf("0.0.0.0_%d", port)
		rds := "http." + strconv.Itoa(int(port))
		lst := &listenerv3.Listener{Name: name,
			Address: envoyres.SocketAddress(netip.AddrPortFrom(netip.IPv4Unspecified(), port)), TrafficDirection: corev3.TrafficDirection_OUTBOUND}
		first, beforeRouter := c.patchedFilters("GATEWAY", port)
		hcm := c.hcmWith(outboundStatPrefix(port), rds, nil, proxy.Outbound, false, hcmFilters{authz, first, beforeRouter})
		if pc, ok := certs[port]; ok {
			lst.ListenerFilters = []*listenerv3.ListenerFilter{envoyres.ListenerFilter("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{})}
			lst.FilterChains = c.tlsChains(pc, name, hcm)
			if len(lst.FilterChains) == 0 {
				continue // no certificate to serve: reported
			}
		} else {
			lst.FilterChains = []*listenerv3.FilterChain{{Name: name, Filters: []*listenerv3.Filter{hcm}}}
		}
		out.Listeners = append(out.Listeners, lst)
		rc := c.gatewayRoutes(ports[port], port, rds)
		out.Routes = append(out.Routes, rc)
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if cl := a.GetCluster(); cl != "" {
					clusters[cl] = true
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					clusters[wc.GetName()] = true
				}
				for _, m := range a.GetRequestMirrorPolicies() {
					clusters[m.GetCluster()] = true
				}
			}
		}
	}
	out.Clusters = c.builtinClusters()
	cls, clas := c.gatewayClusters(clusters)
	out.Clusters, out.Endpoints = append(out.Clusters, cls...), clas
	slices.SortFunc(out.Listeners, byName((*listenerv3.Listener).GetName))
	slices.SortFunc(out.Clusters, byName((*clusterv3.Cluster).GetName))
	slices.SortFunc(out.Endpoints, byName((*endpointv3.ClusterLoadAssignment).GetClusterName))
	return out
}

// listenerCerts are a Gateway API listener's certificates the Gateway
// may use (another namespace's where a ReferenceGrant lets it; else
// reported), for its hostname's SNIs (none: the certificate's names).
func (c *compiler) listenerCerts(g *Gateway, l GatewayListener) []gatewayCert {
	var out []gatewayCert
	for i, ref := range l.Certificates {
		field := fmt.Sprintf("spec.listeners[%s].tls.certificateRefs[%d]", l.Name, i)
		if !c.w.granted("Gateway", g.Namespace, "Secret", ref) {
			c.cc.report(Problem{"Gateway", g.Namespace + "/" + g.Name, field, secretNotGranted(ref) + ": refused"})
			continue
		}
		gc := gatewayCert{owner: g.Namespace + "/" + g.Name, field: field, secret: ref, names: []string{l.Hostname}}
		if l.Hostname == "" {
			gc.names = nil // the certificate's
		}
		out = append(out, gc)
	}
	return out
}

// passthroughListener is a TLS Passthrough listener: a filter chain per
// TLSRoute attached, for the SNIs its hostnames and the listener's
// admit, sending the connection on unopened to its backends (by weight;
// none: closed); an SNI no route takes is refused. A TLS Terminate
// listener's chains end TLS first, with the listener's certificate. Or a TCP listener:
// the one TCPRoute attached sends every connection on (a second is
// reported, not run). The clusters it sends to are added to clusters.
// Nil when no route attaches.
func (c *compiler) passthroughListener(g *Gateway, l GatewayListener, clusters map[string]bool) *listenerv3.Listener {
	lst := l4Listener(l.Port, l.Protocol == "TLS")
	name := lst.Name
	for _, key := range slices.Sorted(maps.Keys(c.w.TLSRoutes)) {
		r := c.w.TLSRoutes[key]
		names := l.hostnames(r.Hostnames)
		if len(names) == 0 || !slices.ContainsFunc(r.Gateways, func(p ParentGateway) bool { return c.w.admits(g, l, r.Kind, r.Namespace, p) }) {
			continue
		}
		if l.Protocol == "TCP" && len(lst.FilterChains) > 0 {
			c.cc.report(Problem{r.Kind, r.Namespace + "/" + r.Name, "spec.parentRefs", "listener " + l.Name + " of Gateway " + g.Namespace + "/" + g.Name +
				" takes another TCPRoute already (the first by name): not run"})
			continue
		}
		var backends []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
		for _, b := range r.Backends {
			if !c.w.granted(r.Kind, r.Namespace, "Service", c.w.serviceRef(b.Host)) {
				c.cc.report(Problem{r.Kind, r.Namespace + "/" + r.Name, "spec.rules[0].backendRefs", notGranted(b.Host)})
				continue
			}
			backends = append(backends, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: clusterName("outbound", b.Port, "", b.Host), Weight: uint32(b.Weight)})
		}
		if l.Protocol == "TCP" || slices.Equal(names, []string{"*"}) {
			names = nil
		}
		fc := c.tcpChain(name, name+"-"+r.Namespace+"/"+r.Name, names, backends, clusters)
		if l.Terminate {
			// TLS ends here: the certificate that names the route's
			// first hostname, else the listener's first.
			tls := c.tlsChains(certFor(c.listenerCerts(g, l), names), name, fc.Filters[0])
			if len(tls) == 0 {
				continue // no certificate to serve: reported
			}
			fc.TransportSocket = tls[0].TransportSocket
		}
		lst.FilterChains = append(lst.FilterChains, fc)
	}
	if len(lst.FilterChains) == 0 {
		return nil
	}
	return lst
}

// certFor is, of certs, the one whose names cover the first of names,
// else the first; none for none.
func certFor(certs []gatewayCert, names []string) []gatewayCert {
	for _, gc := range certs {
		if len(names) > 0 && slices.ContainsFunc(gc.names, func(n string) bool { return n != "" && hostCovers(n, names[0]) }) {
			return []gatewayCert{gc}
		}
	}
	return certs[:min(1, len(certs))]
}

// l4Listener is a gateway's listener on port for connections, not
// requests; inspect: its chains are chosen by SNI (tls_inspector).
func l4Listener(port uint16, inspect bool) *listenerv3.Listener {
	lst := &listenerv3.Listener{Name: fmt.Sprintf("0.0.0.0_%d", port), Address: envoyres.SocketAddress(netip.AddrPortFrom(netip.IPv4Unspecified(), port)),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND}
	if inspect {
		lst.ListenerFilters = []*listenerv3.ListenerFilter{envoyres.ListenerFilter("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{})}
	}
	return lst
}

// tcpChain is listener's filter chain name for the SNIs names (none:
// any connection) sending its connections on unopened to backends, by
// weight (none: closed); the clusters it sends to are added to clusters.
func (c *compiler) tcpChain(listener, name string, names []string, backends []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight, clusters map[string]bool) *listenerv3.FilterChain {
	for _, b := range backends {
		clusters[b.Name] = true
	}
	fc := &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{c.tcpProxyTo(listener, backends)}}
	if len(names) > 0 {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: names}
	}
	return fc
}

// gatewayCert is a certificate an HTTPS port serves: a TLS Secret's
// (namespace/name), or the gateway's files; for the SNIs names ("*":
// any; none: the certificate's DNS names); owner and field are the
// Gateway asking for it, for a problem.
type gatewayCert struct {
	owner, field      string
	secret            string
	certFile, keyFile string
	names             []string
	// mesh: the gateway's workload certificate, mutual TLS (Istio's
	// ISTIO_MUTUAL server).
	mesh bool
	// clientCA: clients must present a certificate their CA signed: the
	// Secret's ca.crt, or the file caFile (Istio's MUTUAL server).
	clientCA bool
	caFile   string
}

// tlsChains are an HTTPS port's filter chains: one per certificate,
// terminating TLS with it for the SNIs it is for and handing the
// requests to hcm. A Secret that is not there, or not a certificate and
// key, is reported and left out; files are the gateway proxy's to read.
func (c *compiler) tlsChains(certs []gatewayCert, name string, hcm *listenerv3.Filter) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, gc := range certs {
		names, id := gc.names, gc.certFile
		chain, key, clientCA := fileSource(gc.certFile), fileSource(gc.keyFile), fileSource(gc.caFile)
		if gc.mesh {
			id = "istio-mutual"
		}
		if gc.secret != "" {
			id = gc.secret
			sec, pair, err := c.w.tlsSecret(gc.secret)
			if err == nil && gc.clientCA && len(sec.CA) == 0 {
				err = fmt.Errorf("Secret %s has no ca.crt: a MUTUAL server checks its clients against it", gc.secret)
			}
			if err != nil {
				c.cc.report(Problem{"Gateway", gc.owner, gc.field, err.Error()})
				continue
			}
			clientCA = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.CA}}
			if len(names) == 0 {
				leaf, _ := x509.ParseCertificate(pair.Certificate[0])
				names = leaf.DNSNames
			}
			chain = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.Cert}}
			key = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.Key}}
		}
		if slices.Equal(names, []string{"*"}) {
			names = nil
		}
		ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", "http/1.1"},
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: chain, PrivateKey: key}}}}
		if gc.clientCA {
			ctx.RequireClientCertificate = wrapperspb.Bool(true)
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: clientCA}}
		}
		ts := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: envoyres.Typed(ctx)}}
		if gc.mesh {
			ts = envoyres.MutualTLSDownstream()
		}
		fc := &listenerv3.FilterChain{Name: fmt.Sprintf("%s-%s", name, id), TransportSocket: ts, Filters: []*listenerv3.Filter{hcm}}
		if len(names) > 0 {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: names}
		}
		out = append(out, fc)
	}
	return out
}

// tlsSecret is the TLS Secret ref (namespace/name) and its certificate,
// or why it cannot be served.
func (w *World) tlsSecret(ref string) (*TLSSecret, tls.Certificate, error) {
	sec := w.Secrets[ref]
	if sec == nil {
		return nil, tls.Certificate{}, errors.New("no TLS Secret " + ref)
	}
	pair, err := tls.X509KeyPair(sec.Cert, sec.Key)
	if err != nil {
		return nil, pair, fmt.Errorf("Secret %s: %v", ref, err)
	}
	return sec, pair, nil
}

// secretNotGranted is the problem of a Gateway's certificate in another
// namespace that no ReferenceGrant there grants.
func secretNotGranted(ref string) string {
	return "Secret " + ref + " is in another namespace, and no ReferenceGrant there lets the Gateway refer to it"
}

// gatewayHost is what a gateway port serves for one hostname: the rules
// of the HTTPRoutes attached (merged: their backends are FQDNs), the
// VirtualServices bound (each on its own: a short host is in its
// namespace).
type gatewayHost struct {
	routes *VirtualService
	vss    []*VirtualService
	// httpsRedirect: an Istio server with httpsRedirect admits the host;
	// its every request is sent to https.
	httpsRedirect bool
}

// gatewayRoutes is a port's route configuration: a virtual host per
// hostname (host and host:port), the HTTPRoutes' rules in Gateway API's
// precedence, then the VirtualServices'; a request for another host gets
// 404 (no virtual host).
func (c *compiler) gatewayRoutes(hosts map[string]*gatewayHost, port uint16, name string) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name}
	p := Port{Port: port, Protocol: "http"}
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		gh := hosts[h]
		var routes []*routev3.Route
		switch {
		case gh.httpsRedirect:
			routes = []*routev3.Route{{Name: "https-redirect", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}}}}
		case gh.routes != nil:
			slices.SortStableFunc(gh.routes.HTTP, byPrecedence)
			routes = append(routes, c.vsRoutes(gh.routes, nil, p)...)
			fallthrough
		default:
			for _, vs := range gh.vss {
				routes = append(routes, c.vsRoutes(vs, nil, p)...)
			}
		}
		domains := []string{h}
		if h != "*" {
			domains = append(domains, h+":"+strconv.Itoa(int(port)))
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: h + ":" + strconv.Itoa(int(port)), Domains: domains,
			Routes: routes, IncludeRequestAttemptCount: true})
	}
	return rc
}

// grantedBackends are a route's rules with only the backends it may
// send to: its own namespace's, another's where a ReferenceGrant there
// lets the route's kind from its namespace. One not granted is refused
// (reported); a rule left with none answers 500, as Gateway API says of
// a backend not permitted.
func (c *compiler) grantedBackends(r *HTTPRoute) []RouteRule {
	out := make([]RouteRule, 0, len(r.Routes.HTTP))
	for _, rule := range r.Routes.HTTP {
		kept := slices.DeleteFunc(slices.Clone(rule.Route), func(d Destination) bool {
			if c.w.granted(r.Routes.Kind, r.Namespace, "Service", c.w.serviceRef(d.Host)) {
				return false
			}
			c.cc.report(Problem{r.Routes.Kind, r.Namespace + "/" + r.Name, "spec.rules.backendRefs", notGranted(d.Host)})
			return true
		})
		if len(kept) < len(rule.Route) {
			rule.Route = kept
			if len(kept) == 0 {
				rule.DirectResponse = &DirectResponse{Status: 500}
			}
		}
		out = append(out, rule)
	}
	return out
}

// notGranted is the problem of a route's backend in another namespace
// that no ReferenceGrant there grants.
func notGranted(host string) string {
	return "the backend " + host + " is in another namespace, and no ReferenceGrant there lets the route refer to it: refused"
}

// byPrecedence orders two rules of one match each as Gateway API ranks
// them: an exact path, then the longest prefix, a method, more headers,
// more query parameters.
func byPrecedence(a, b RouteRule) int {
	ma, mb := a.Match[0], b.Match[0]
	return cmp.Or(cmp.Compare(pathRank(mb.URI), pathRank(ma.URI)), cmp.Compare(hasMethod(mb), hasMethod(ma)),
		cmp.Compare(len(mb.Headers), len(ma.Headers)), cmp.Compare(len(mb.QueryParams), len(ma.QueryParams)))
}

// gatewayClusters are the clusters a gateway's routes name
// (outbound|PORT|SUBSET|HOST, as the sidecars' are), with their
// endpoints when over EDS; each service port's built once. A name no
// service has is left out: BlackHoleCluster, which the gateway has.
func (c *compiler) gatewayClusters(names map[string]bool) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	var clusters []*clusterv3.Cluster
	var clas []*endpointv3.ClusterLoadAssignment
	for _, s := range c.w.servicesFor(c.n.Namespace) {
		for _, p := range s.Ports {
			prefix, suffix := fmt.Sprintf("outbound|%d|", p.Port), "|"+s.Hostname
			named := false
			for n := range names {
				named = named || strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix)
			}
			if !named {
				continue
			}
			sc := c.serviceClusters(c.cc.compiled(s), p, c.rules.dr[s.Hostname])
			for _, cl := range append([]*clusterv3.Cluster{sc.cluster}, sc.subsetClusters...) {
				if names[cl.GetName()] {
					clusters = append(clusters, cl)
				}
			}
			for _, cla := range append(sc.subsetCLAs, sc.cla) {
				if cla != nil && names[cla.GetClusterName()] {
					clas = append(clas, cla)
				}
			}
		}
	}
	return clusters, clas
}
