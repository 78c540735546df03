package proxy

import (
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shunt-dev/shunt/internal/envoyres"
	"github.com/shunt-dev/shunt/proxy/accesslog"
	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// Envoy's defaults, where a configuration leaves a field unset.
const (
	envoyConnectTimeout   = 5 * time.Second
	envoyRouteTimeout     = 15 * time.Second
	envoyStreamIdle       = 5 * time.Minute
	envoyDNSRefresh       = 5 * time.Second
	envoyListenerFilters  = 15 * time.Second
	envoyBufferLimit      = 1 << 20        // per_connection_buffer_limit_bytes
	foreverListenerFilter = 24 * time.Hour // listener_filters_timeout 0: wait for the client
)

// resources are what a bootstrap runs: its listeners, clusters, and the
// access log sinks its loggers write to.
type resources struct {
	listeners []*listener
	clusters  map[string]*cluster
	sinks     map[string]*accessLog // by destination
	loggers   map[string]logger     // by destination and format
	admin     string                // the bootstrap's admin address, if any
	node      string                // the bootstrap's node id, for spans' node_id
	// exporterKeys are the span exporters this build started, stopped if
	// it fails.
	exporterKeys []string
	problems     envoyconfig.Problems
	opt          buildOptions
	// bufferLimit is the listener being built's
	// per_connection_buffer_limit_bytes.
	bufferLimit int64
}

// buildOptions say how a bootstrap's outside world is reached.
type buildOptions struct {
	// open is where a file access log at path writes.
	open func(path string) (io.Writer, error)
	// builtin marks the sidecar's own configuration: its listeners'
	// additional (IPv6) addresses may fail to bind, as a namespace may
	// have no IPv6.
	builtin bool
	// idle is the idle timeout of TCP proxies and HTTP connections that
	// set none (the command line's --idle-timeout; Envoy's is 1 hour).
	idle time.Duration
	// previous are the clusters of the configuration a reload replaces:
	// one whose configuration is unchanged is kept; sinks likewise, by
	// destination.
	previous map[string]*cluster
	sinks    map[string]*accessLog
	// store keeps the stats of clusters, routes and connection managers
	// by name, across reloads; nil for a new one.
	store *statStore
	// exporters keeps the span exporters across reloads; nil for a new
	// set.
	exporters *exporterSet
	// workload is the sidecar's own, for its spans' service name and
	// Istio's tags; nil for none.
	workload *Workload
	// reload: a configuration replacing one in force (xDS, a reread
	// file). A cluster's trusted_ca file the proxy cannot read then
	// fails that cluster's handshakes alone, the reason naming the file
	// (Envoy rejects that cluster alone), rather than the whole update:
	// a DestinationRule's file may be on some proxies only.
	reload bool
}

func (r *resources) add(path, format string, args ...any) {
	r.problems = append(r.problems, envoyconfig.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// build turns a checked bootstrap into what the proxy runs, or returns
// envoyconfig.Problems naming every field it cannot run.
func build(b *bootstrapv3.Bootstrap, opt buildOptions) (*resources, error) {
	if opt.store == nil {
		opt.store = newStatStore()
	}
	if opt.exporters == nil {
		opt.exporters = newExporterSet(0)
	}
	r := &resources{clusters: map[string]*cluster{}, sinks: map[string]*accessLog{}, loggers: map[string]logger{}, opt: opt,
		node: b.GetNode().GetId()}
	if a := b.GetAdmin().GetAddress(); a != nil {
		ap, ok := r.socketAddress(a, "admin.address")
		if ok {
			r.admin = ap.String()
		}
	}
	for i, c := range b.GetStaticResources().GetClusters() {
		r.cluster(c, fmt.Sprintf("static_resources.clusters[%d]", i))
	}
	names := map[string]bool{}
	for i, l := range b.GetStaticResources().GetListeners() {
		path := fmt.Sprintf("static_resources.listeners[%d]", i)
		if names[l.GetName()] {
			r.add(path+".name", "invalid: a second listener named %q", l.GetName())
		}
		names[l.GetName()] = true
		r.listener(l, path)
	}
	if len(r.problems) > 0 {
		for _, s := range r.sinks {
			s.closeFile()
		}
		r.opt.exporters.drop(r.exporterKeys)
		return nil, r.problems
	}
	return r, nil
}

// socketAddress reads an Address that must be an IP and a port.
func (r *resources) socketAddress(a *corev3.Address, path string) (netip.AddrPort, bool) {
	sa := a.GetSocketAddress()
	if sa == nil {
		r.add(path, "invalid: a socket_address is needed")
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		r.add(path+".socket_address.address", "invalid: %q is not an IP address", sa.GetAddress())
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), true
}

func (r *resources) cluster(c *clusterv3.Cluster, path string) {
	name := c.GetName()
	if _, dup := r.clusters[name]; dup {
		r.add(path+".name", "invalid: a second cluster named %q", name)
		return
	}
	if prev := r.opt.previous[name]; sameCluster(prev, c) {
		r.clusters[name] = prev
		return
	}
	cl := &cluster{name: name, stats: r.opt.store.cluster(name), connectTimeout: durationOr(c.GetConnectTimeout(), envoyConnectTimeout), poolLimits: defaultPoolLimits,
		cb: defaultBreakers(), panicThreshold: 50, services: envoyres.IstioServicesOf(c.GetMetadata())}
	if pt := c.GetCommonLbConfig().GetHealthyPanicThreshold(); pt != nil {
		cl.panicThreshold = int(pt.GetValue())
	}
	cl.outlier = r.outlierDetection(c.GetOutlierDetection(), path+".outlier_detection")
	for i, hc := range c.GetHealthChecks() {
		if i > 0 {
			r.add(fmt.Sprintf("%s.health_checks[%d]", path, i), "not implemented by shunt: more than one health check")
			break
		}
		cl.hc = r.healthCheck(hc, fmt.Sprintf("%s.health_checks[%d]", path, i))
	}
	for i, th := range c.GetCircuitBreakers().GetThresholds() {
		p := fmt.Sprintf("%s.circuit_breakers.thresholds[%d]", path, i)
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			r.add(p+".priority", "not implemented by shunt: HIGH (routes have no priority in shunt)")
			continue
		}
		cb := &cl.cb
		cb.maxConnections = int64(u32Or(th.GetMaxConnections(), uint32(cb.maxConnections)))
		cb.maxPending = int64(u32Or(th.GetMaxPendingRequests(), uint32(cb.maxPending)))
		cb.maxRequests = int64(u32Or(th.GetMaxRequests(), uint32(cb.maxRequests)))
		cb.maxRetries = int64(u32Or(th.GetMaxRetries(), uint32(cb.maxRetries)))
		if rb := th.GetRetryBudget(); rb != nil {
			cl.cb.retryBudget, cl.cb.budgetPercent, cl.cb.minRetries = true, 20, 3
			if bp := rb.GetBudgetPercent(); bp != nil {
				cl.cb.budgetPercent = bp.GetValue()
			}
			if mr := rb.GetMinRetryConcurrency(); mr != nil {
				cl.cb.minRetries = int64(mr.GetValue())
			}
		}
	}
	bind := c.GetUpstreamBindConfig()
	sources := []*corev3.SocketAddress{bind.GetSourceAddress()}
	for _, e := range bind.GetExtraSourceAddresses() {
		sources = append(sources, e.GetAddress())
	}
	for i, ba := range sources {
		p := path + ".upstream_bind_config.source_address"
		if i > 0 {
			p = fmt.Sprintf("%s.upstream_bind_config.extra_source_addresses[%d].address", path, i-1)
		}
		if ba == nil {
			continue
		}
		ip, err := netip.ParseAddr(ba.GetAddress())
		switch {
		case err != nil:
			r.add(p+".address", "invalid: %q is not an IP address", ba.GetAddress())
		case ba.GetPortValue() != 0:
			r.add(p+".port_value", "not implemented by shunt: only port 0 (the kernel's choice)")
		case ip.Unmap().Is4() && !cl.source.IsValid():
			cl.source = ip.Unmap()
		case ip.Is6() && !ip.Is4In6() && !cl.source6.IsValid():
			cl.source6 = ip
		default:
			r.add(p, "invalid: a second source address of the same family")
		}
	}
	for name, opts := range c.GetTypedExtensionProtocolOptions() {
		p := path + ".typed_extension_protocol_options." + name
		msg, err := opts.UnmarshalNew()
		hpo, ok := msg.(*upstreamhttpv3.HttpProtocolOptions)
		switch {
		case err != nil:
			r.add(p, "invalid: %v", err)
		case !ok || name != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
			r.add(p, "invalid: shunt takes envoy.extensions.upstreams.http.v3.HttpProtocolOptions under its own name")
		case hpo.GetUseDownstreamProtocolConfig() != nil:
			cl.upstreamProtocol = upstreamDownstream
		default:
			cl.upstreamProtocol = upstreamHTTP1
		}
	}
	if c.GetTypedExtensionProtocolOptions() == nil {
		cl.upstreamProtocol = upstreamHTTP1 // Envoy's default
	}
	cl.lb = map[clusterv3.Cluster_LbPolicy]lbPolicy{clusterv3.Cluster_LEAST_REQUEST: lbLeastRequest, clusterv3.Cluster_RANDOM: lbRandom,
		clusterv3.Cluster_RING_HASH: lbRingHash, clusterv3.Cluster_MAGLEV: lbMaglev}[c.GetLbPolicy()]
	switch cl.lb {
	case lbRingHash:
		cl.hashTableSize = 1024
		if n := c.GetRingHashLbConfig().GetMinimumRingSize(); n != nil {
			cl.hashTableSize = min(n.GetValue(), 8<<20)
		}
	case lbMaglev:
		cl.hashTableSize = 65537
		if n := c.GetMaglevLbConfig().GetTableSize(); n != nil {
			if !big.NewInt(int64(n.GetValue())).ProbablyPrime(20) || n.GetValue() > 5000011 {
				r.add(path+".maglev_lb_config.table_size", "invalid: %d is not a prime of at most 5000011, as Envoy requires", n.GetValue())
			}
			cl.hashTableSize = n.GetValue()
		}
	case lbLeastRequest:
		if n := c.GetLeastRequestLbConfig().GetChoiceCount(); n != nil && n.GetValue() != 2 {
			r.add(path+".least_request_lb_config.choice_count", "not implemented by shunt: %d (shunt picks the less loaded of 2)", n.GetValue())
		}
	}
	typ := c.GetType()
	provided := c.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED
	switch {
	case typ == clusterv3.Cluster_ORIGINAL_DST && !provided:
		r.add(path+".lb_policy", "invalid: an ORIGINAL_DST cluster takes lb_policy CLUSTER_PROVIDED, as Envoy requires")
	case typ != clusterv3.Cluster_ORIGINAL_DST && provided:
		r.add(path+".lb_policy", "invalid: CLUSTER_PROVIDED is for ORIGINAL_DST clusters")
	}
	var hosts []hostPort
	for i, group := range c.GetLoadAssignment().GetEndpoints() {
		for j, lbe := range group.GetLbEndpoints() {
			p := fmt.Sprintf("%s.load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address", path, i, j)
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				r.add(p, "invalid: a socket_address is needed")
				continue
			}
			hosts = append(hosts, hostPort{host: sa.GetAddress(), port: uint16(sa.GetPortValue()), path: p,
				weight: max(1, lbe.GetLoadBalancingWeight().GetValue()), priority: group.GetPriority(),
				tlsMatch: lbe.GetMetadata().GetFilterMetadata()[transportSocketMatchKey]})
		}
	}
	cl.tls = r.clusterTLS(c, path)
	switch typ {
	case clusterv3.Cluster_ORIGINAL_DST:
		cl.kind = originalDst
		if len(hosts) > 0 {
			r.add(path+".load_assignment", "invalid: an ORIGINAL_DST cluster has no endpoints of its own")
		}
	case clusterv3.Cluster_STATIC:
		cl.kind = staticEndpoints
		eps := make([]*endpoint, 0, len(hosts))
		for _, h := range hosts {
			ip, err := netip.ParseAddr(h.host)
			if err != nil {
				r.add(h.path+".socket_address.address", "invalid: %q is not an IP address (a STATIC cluster's endpoints are; STRICT_DNS resolves names)", h.host)
				continue
			}
			eps = append(eps, &endpoint{addr: netip.AddrPortFrom(ip.Unmap(), h.port), weight: h.weight, priority: h.priority,
				tls: cl.tls.forEndpoint(h.tlsMatch)})
		}
		cl.setEndpoints(eps)
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		cl.kind = staticEndpoints
		logical := typ == clusterv3.Cluster_LOGICAL_DNS
		if logical && len(hosts) != 1 {
			r.add(path+".load_assignment", "invalid: a LOGICAL_DNS cluster has exactly one endpoint (it has %d)", len(hosts))
		}
		cl.dns = &dnsCluster{hosts: hosts, logical: logical, family: c.GetDnsLookupFamily(),
			refresh: durationOr(c.GetDnsRefreshRate(), envoyDNSRefresh)}
		cl.setEndpoints(nil)
	}
	cl.config = c
	r.clusters[name] = cl
}

// durationOr is d, or def when d is unset.
func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func (r *resources) listener(l *listenerv3.Listener, path string) {
	lst := &listener{name: l.GetName(), dir: Outbound, useOriginalDst: l.GetUseOriginalDst().GetValue(),
		transparent: l.GetTransparent().GetValue(), optionalExtra: r.opt.builtin}
	if l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
		lst.dir = Inbound
	}
	r.bufferLimit = envoyBufferLimit
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		r.bufferLimit = int64(v.GetValue())
	}
	if ap, ok := r.socketAddress(l.GetAddress(), path+".address"); ok {
		lst.addrs = append(lst.addrs, ap)
	}
	for i, a := range l.GetAdditionalAddresses() {
		if ap, ok := r.socketAddress(a.GetAddress(), fmt.Sprintf("%s.additional_addresses[%d].address", path, i)); ok {
			lst.addrs = append(lst.addrs, ap)
		}
	}
	for i, lf := range l.GetListenerFilters() {
		p := fmt.Sprintf("%s.listener_filters[%d]", path, i)
		if lf.GetTypedConfig() == nil {
			r.add(p, "invalid: no typed_config (name %q alone does not say which filter)", lf.GetName())
			continue
		}
		switch lf.GetTypedConfig().MessageName() {
		case "envoy.extensions.filters.listener.original_dst.v3.OriginalDst":
			lst.useOriginalDst = true
		case "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector":
			lst.inspectHTTP = true
		case "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":
			lst.inspectTLS = true
		}
	}
	if lst.inspectHTTP || lst.inspectTLS {
		lst.detect = durationOr(l.GetListenerFiltersTimeout(), envoyListenerFilters)
		if lst.detect == 0 {
			lst.detect = foreverListenerFilter
		}
		lst.closeOnTimeout = !l.GetContinueOnListenerFiltersTimeout()
	}
	for i, fc := range l.GetFilterChains() {
		if c := r.filterChain(fc, fmt.Sprintf("%s.filter_chains[%d]", path, i)); c != nil {
			lst.chains = append(lst.chains, c)
		}
	}
	if len(l.GetFilterChains()) == 0 {
		r.add(path+".filter_chains", "invalid: a listener needs a filter chain")
	}
	seen := map[logger]bool{}
	for _, fc := range lst.chains {
		var logs []logger
		if fc.http != nil {
			logs = fc.http.logs
		} else if fc.tcp != nil {
			logs = fc.tcp.logs
		}
		for _, lg := range logs {
			if !seen[lg] {
				seen[lg] = true
				lst.logs = append(lst.logs, lg)
			}
		}
	}
	r.listeners = append(r.listeners, lst)
}

// applicationProtocols are the values Envoy's http_inspector sets.
var applicationProtocols = []string{"http/1.0", "http/1.1", "h2c"}

func (r *resources) filterChain(fc *listenerv3.FilterChain, path string) *filterChain {
	c := &filterChain{name: fc.GetName()}
	m := fc.GetFilterChainMatch()
	if p := m.GetDestinationPort(); p != nil {
		c.ports = []uint16{uint16(p.GetValue())}
	}
	switch tp := m.GetTransportProtocol(); tp {
	case "":
	case "raw_buffer":
		c.transport = transportRaw
	case "tls":
		c.transport = transportTLS
	default:
		r.add(path+".filter_chain_match.transport_protocol", "invalid: %q (tls_inspector sets tls or raw_buffer)", tp)
	}
	for i, ap := range m.GetApplicationProtocols() {
		switch {
		case c.transport == transportTLS && isIstioALPN(ap):
			c.alpns = append(c.alpns, ap)
		case slices.Contains(applicationProtocols, ap):
			c.protocol, c.detected = ProtocolHTTP1, true
		default:
			r.add(fmt.Sprintf("%s.filter_chain_match.application_protocols[%d]", path, i),
				"not implemented by shunt: %q (it matches %s, which http_inspector sets, and with transport_protocol tls Istio's mesh ALPNs)", ap, strings.Join(applicationProtocols, ", "))
		}
	}
	for _, n := range m.GetServerNames() {
		c.serverNames = append(c.serverNames, strings.ToLower(n))
	}
	c.tls = r.transportSocket(fc.GetTransportSocket(), path+".transport_socket", true)
	for i, cr := range m.GetPrefixRanges() {
		prefix, err := cidrRange(cr)
		if err != nil {
			r.add(fmt.Sprintf("%s.filter_chain_match.prefix_ranges[%d]", path, i), "invalid: %v", err)
			continue
		}
		c.prefixes = append(c.prefixes, prefix)
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		r.add(path+".filters", "invalid: no filter (an http_connection_manager or a tcp_proxy goes last)")
		return nil
	}
	// Network RBAC filters, then the one that takes the connection.
	for i, f := range filters[:len(filters)-1] {
		fp := fmt.Sprintf("%s.filters[%d]", path, i)
		m, err := f.GetTypedConfig().UnmarshalNew()
		rb, ok := m.(*rbacnetv3.RBAC)
		switch {
		case err != nil:
			r.add(fp+".typed_config", "invalid: %v", err)
		case !ok:
			r.add(fp, "not implemented by shunt: %s before the last filter (shunt runs network RBAC filters, then an http_connection_manager or a tcp_proxy)", f.GetTypedConfig().MessageName())
		case rb.GetRules() != nil:
			c.rbac = append(c.rbac, r.rbacRules(rb.GetRules(), fp+".typed_config.rules"))
		}
	}
	last := len(filters) - 1
	fpath := fmt.Sprintf("%s.filters[%d].typed_config", path, last)
	tc := filters[last].GetTypedConfig()
	if tc == nil {
		r.add(fmt.Sprintf("%s.filters[%d]", path, last), "invalid: no typed_config")
		return nil
	}
	msg, err := tc.UnmarshalNew()
	if err != nil {
		r.add(fpath, "invalid: %v", err)
		return nil
	}
	switch f := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		c.http = r.httpManager(f, fpath)
		if c.protocol == ProtocolAny && len(c.ports) > 0 {
			c.protocol = ProtocolHTTP1 // a port declared HTTP: no detection
		}
	case *tcpproxyv3.TcpProxy:
		c.tcp = r.tcpProxy(f, fpath)
		if c.protocol == ProtocolAny && len(c.ports) > 0 {
			c.protocol = ProtocolTCP // a port declared TCP: no detection
		}
	default:
		r.add(fpath, "not implemented by shunt: %s as a listener's filter", tc.MessageName())
		return nil
	}
	if c.http == nil && c.tcp == nil {
		return nil
	}
	return c
}

func (r *resources) tcpProxy(t *tcpproxyv3.TcpProxy, path string) *tcpProxy {
	out := &tcpProxy{statPrefix: t.GetStatPrefix(), idle: durationOr(t.GetIdleTimeout(), r.opt.idle),
		logs: r.accessLogs(t.GetAccessLog(), path+".access_log")}
	if wc := t.GetWeightedClusters(); wc != nil {
		for i, w := range wc.GetClusters() {
			cl := r.clusters[w.GetName()]
			if cl == nil {
				r.add(fmt.Sprintf("%s.weighted_clusters.clusters[%d].name", path, i), "invalid: no cluster named %q", w.GetName())
				return nil
			}
			if w.GetWeight() > 0 {
				out.weighted = append(out.weighted, weightedCluster{cluster: cl, weight: uint64(w.GetWeight())})
				out.totalWeight += uint64(w.GetWeight())
			}
		}
		if out.totalWeight == 0 {
			r.add(path+".weighted_clusters", "invalid: no cluster has a weight")
			return nil
		}
		return out
	}
	if out.cluster = r.clusters[t.GetCluster()]; out.cluster == nil {
		r.add(path+".cluster", "invalid: no cluster named %q", t.GetCluster())
		return nil
	}
	return out
}

func (r *resources) httpManager(h *hcmv3.HttpConnectionManager, path string) *httpManager {
	m := &httpManager{statPrefix: h.GetStatPrefix(), rejectHTTP10: !h.GetHttpProtocolOptions().GetAcceptHttp_10(),
		generateRequestID: h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue(),
		streamIdle:        durationOr(h.GetStreamIdleTimeout(), envoyStreamIdle), idle: r.opt.idle,
		upgrades: map[string]bool{}, logs: r.accessLogs(h.GetAccessLog(), path+".access_log"), clusters: r.clusters,
		requestTimeout: durationOr(h.GetRequestTimeout(), 0), stats: r.opt.store.hcm(h.GetStatPrefix())}
	if h.GetCodecType() == hcmv3.HttpConnectionManager_HTTP1 {
		m.codec = ProtocolHTTP1
	}
	set := h.GetSetCurrentClientCertDetails()
	m.clientCert = clientCert{mode: h.GetForwardClientCertDetails(), subject: set.GetSubject().GetValue(), uri: set.GetUri(), dns: set.GetDns()}
	for _, u := range h.GetUpgradeConfigs() {
		m.upgrades[strings.ToLower(u.GetUpgradeType())] = true
	}
	filters := h.GetHttpFilters()
	var specs []filterSpec
	for i, f := range filters {
		p := fmt.Sprintf("%s.http_filters[%d]", path, i)
		name := f.GetTypedConfig().MessageName()
		switch {
		case name == "envoy.extensions.filters.http.router.v3.Router":
			if i != len(filters)-1 {
				r.add(p, "invalid: the router filter goes last")
			}
		case i == len(filters)-1:
			r.add(p, "invalid: the last filter must be the router")
		case isTypedStruct(string(name)):
			r.istioFilter(f.GetTypedConfig(), m, p+".typed_config")
		default:
			msg, err := f.GetTypedConfig().UnmarshalNew()
			if err != nil {
				r.add(p, "invalid: %v", err)
				continue
			}
			if r.httpFilter(msg, p+".typed_config") == nil {
				continue // refused, with its path
			}
			specs = append(specs, filterSpec{name: f.GetName(), msg: msg, path: p + ".typed_config"})
		}
	}
	if len(filters) == 0 {
		r.add(path+".http_filters", "invalid: the router filter is needed, last")
	}
	rc := h.GetRouteConfig()
	if rc == nil {
		r.add(path, "invalid: an inline route_config is needed (rds is not implemented by shunt)")
		return nil
	}
	m.routes = r.routeConfig(rc, path+".route_config", specs)
	m.tracer = r.tracer(h.GetTracing(), path+".tracing")
	return m
}

func (r *resources) routeConfig(rc *routev3.RouteConfiguration, path string, specs []filterSpec) *routeConfig {
	out := &routeConfig{name: rc.GetName()}
	rcMut := r.mutations(rc, path)
	for i, vh := range rc.GetVirtualHosts() {
		vpath := fmt.Sprintf("%s.virtual_hosts[%d]", path, i)
		v := &virtualHost{name: vh.GetName()}
		for _, d := range vh.GetDomains() {
			v.domains = append(v.domains, strings.ToLower(d))
		}
		vhMut := r.mutations(vh, vpath)
		vhRetry := r.retryPolicy(vh.GetRetryPolicy(), vpath+".retry_policy")
		vhLimit := r.bodyBufferLimit(vh, vpath, r.bufferLimit)
		for j, rt := range vh.GetRoutes() {
			rpath := fmt.Sprintf("%s.routes[%d]", vpath, j)
			if x := r.route(rt, rpath, vhRetry, vhMut, rcMut); x != nil {
				x.includeAttemptCount = vh.GetIncludeRequestAttemptCount()
				x.bodyLimit = r.bodyBufferLimit(rt, rpath, vhLimit)
				if p := rt.GetStatPrefix(); p != "" {
					x.stats = r.opt.store.route(vh.GetName(), p)
				}
				x.filters = r.routeFilters(specs, rt.GetTypedPerFilterConfig(), vh.GetTypedPerFilterConfig(), rpath, vpath)
				v.routes = append(v.routes, x)
			}
		}
		out.hosts = append(out.hosts, v)
	}
	out.index()
	return out
}

// bodyLimited is what sets a bound on a request body kept for retries: a
// route, a virtual host.
type bodyLimited interface {
	GetPerRequestBufferLimitBytes() *wrapperspb.UInt32Value
	GetRequestBodyBufferLimit() *wrapperspb.UInt64Value
}

// bodyBufferLimit is the most of a request body kept for retries at m, by
// Envoy's precedence: its request_body_buffer_limit; else its
// per_request_buffer_limit_bytes, within the listener's
// per_connection_buffer_limit_bytes; else what it inherits.
func (r *resources) bodyBufferLimit(m bodyLimited, path string, inherited int64) int64 {
	perRequest, body := m.GetPerRequestBufferLimitBytes(), m.GetRequestBodyBufferLimit()
	switch {
	case perRequest != nil && body != nil:
		r.add(path+".request_body_buffer_limit", "invalid: only one of per_request_buffer_limit_bytes and request_body_buffer_limit may be set")
	case body != nil:
		return int64(min(body.GetValue(), 1<<62))
	case perRequest != nil:
		return min(int64(perRequest.GetValue()), r.bufferLimit)
	}
	return inherited
}

// headerMutating is what carries header mutations: a route, a virtual
// host, a route configuration.
type headerMutating interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

// mutations are one level's header mutations.
type mutations struct {
	reqAdd, respAdd       []headerAdd
	reqRemove, respRemove []string
}

// headerAdds reads a list of HeaderValueOptions at path. The deprecated
// append is read as Envoy reads it: true appends (the default), false
// overwrites.
func (r *resources) headerAdds(opts []*corev3.HeaderValueOption, path string) []headerAdd {
	var out []headerAdd
	for i, o := range opts {
		p := fmt.Sprintf("%s[%d]", path, i)
		name, value := strings.ToLower(o.GetHeader().GetKey()), o.GetHeader().GetValue()
		if strings.Contains(value, "%") {
			r.add(p+".header.value", "not implemented by shunt: command operators (%%…%%) in header values")
			continue
		}
		action := addAction(o.GetAppendAction())
		if a := o.GetAppend(); a != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				r.add(p, "invalid: append and append_action are exclusive")
				continue
			}
			if !a.GetValue() {
				action = addAction(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
			}
		}
		out = append(out, newHeaderAdd(name, value, action))
	}
	return out
}

func (r *resources) mutations(m headerMutating, path string) mutations {
	adds := func(opts []*corev3.HeaderValueOption, field string) []headerAdd {
		return r.headerAdds(opts, path+"."+field)
	}
	lower := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = strings.ToLower(n)
		}
		return out
	}
	return mutations{reqAdd: adds(m.GetRequestHeadersToAdd(), "request_headers_to_add"),
		respAdd:    adds(m.GetResponseHeadersToAdd(), "response_headers_to_add"),
		reqRemove:  lower(m.GetRequestHeadersToRemove()),
		respRemove: lower(m.GetResponseHeadersToRemove())}
}

func (r *resources) route(rt *routev3.Route, rpath string, vhRetry *retryPolicy, outer ...mutations) *route {
	out := &route{name: rt.GetName(), decorator: rt.GetDecorator().GetOperation()}
	if !r.routeMatch(out, rt.GetMatch(), rpath+".match") {
		return nil
	}
	mut := r.mutations(rt, rpath)
	for _, m := range append([]mutations{mut}, outer...) { // most specific first, as Envoy applies them
		out.requestAdd = append(out.requestAdd, m.reqAdd...)
		out.requestRemove = append(out.requestRemove, m.reqRemove...)
		out.responseAdd = append(out.responseAdd, m.respAdd...)
		out.responseRemove = append(out.responseRemove, m.respRemove...)
	}
	switch {
	case rt.GetRedirect() != nil:
		rd := rt.GetRedirect()
		out.redirect = &redirectAction{scheme: rd.GetSchemeRedirect(), host: rd.GetHostRedirect(), port: rd.GetPortRedirect(),
			path: rd.GetPathRedirect(), prefixRewrite: rd.GetPrefixRewrite(), stripQuery: rd.GetStripQuery(),
			code: redirectCodes[rd.GetResponseCode()]}
		_, out.redirect.rewritePrefix = rd.GetPathRewriteSpecifier().(*routev3.RedirectAction_PrefixRewrite)
		if rd.GetHttpsRedirect() {
			out.redirect.scheme = "https"
		}
		return out
	case rt.GetDirectResponse() != nil:
		dr := rt.GetDirectResponse()
		body, err := dataSource(dr.GetBody())
		if err != nil {
			r.add(rpath+".direct_response.body", "invalid: %v", err)
		}
		out.direct = &directResponse{code: int(dr.GetStatus()), body: string(body)}
		return out
	case rt.GetRoute() == nil:
		r.add(rpath, "invalid: a route needs route, redirect or direct_response")
		return nil
	}
	a := rt.GetRoute()
	apath := rpath + ".route"
	out.timeout = durationOr(a.GetTimeout(), envoyRouteTimeout)
	out.idleTimeout = durationOr(a.GetIdleTimeout(), 0)
	for i, m := range a.GetRequestMirrorPolicies() {
		cl := r.clusters[m.GetCluster()]
		if cl == nil {
			r.add(fmt.Sprintf("%s.request_mirror_policies[%d].cluster", apath, i), "invalid: no cluster named %q", m.GetCluster())
			continue
		}
		out.mirrors = append(out.mirrors, mirrorPolicy{cluster: cl, fraction: fractionOf(m.GetRuntimeFraction().GetDefaultValue())})
	}
	if msd := a.GetMaxStreamDuration(); msd != nil {
		if msd.GetMaxStreamDuration() != nil {
			r.add(apath+".max_stream_duration.max_stream_duration", "not implemented by shunt (the route's timeout bounds a request)")
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			out.honourGRPCTimeout, out.grpcTimeoutMax = true, msd.GetGrpcTimeoutHeaderMax().AsDuration()
			out.grpcTimeoutOffset = durationOr(msd.GetGrpcTimeoutHeaderOffset(), 0)
		}
	}
	out.retry = vhRetry
	for i, hp := range a.GetHashPolicy() {
		p := fmt.Sprintf("%s.hash_policy[%d]", apath, i)
		h := hashPolicy{terminal: hp.GetTerminal()}
		switch {
		case hp.GetHeader() != nil:
			h.kind, h.name = hashHeader, strings.ToLower(hp.GetHeader().GetHeaderName())
		case hp.GetCookie() != nil:
			if hp.GetCookie().GetTtl() != nil {
				r.add(p+".cookie.ttl", "not implemented by shunt: generating the cookie")
			}
			h.kind, h.name = hashCookie, hp.GetCookie().GetName()
		case hp.GetConnectionProperties().GetSourceIp():
			h.kind = hashSourceIP
		case hp.GetQueryParameter() != nil:
			h.kind, h.name = hashQuery, hp.GetQueryParameter().GetName()
		default:
			r.add(p, "invalid: a hash policy needs header, cookie, connection_properties.source_ip or query_parameter")
			continue
		}
		out.hashPolicies = append(out.hashPolicies, h)
	}
	if a.GetRetryPolicy() != nil {
		out.retry = r.retryPolicy(a.GetRetryPolicy(), apath+".retry_policy")
	}
	switch spec := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if out.cluster = r.clusters[spec.Cluster]; out.cluster == nil {
			r.add(apath+".cluster", "invalid: no cluster named %q", spec.Cluster)
			return nil
		}
	case *routev3.RouteAction_ClusterHeader:
		out.clusterHeader = strings.ToLower(spec.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		for i, w := range spec.WeightedClusters.GetClusters() {
			cl := r.clusters[w.GetName()]
			if cl == nil {
				r.add(fmt.Sprintf("%s.weighted_clusters.clusters[%d].name", apath, i), "invalid: no cluster named %q", w.GetName())
				return nil
			}
			if w.GetWeight().GetValue() > 0 {
				out.weighted = append(out.weighted, weightedCluster{cluster: cl, weight: uint64(w.GetWeight().GetValue())})
				out.totalWeight += uint64(w.GetWeight().GetValue())
			}
		}
		if tw := spec.WeightedClusters.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != out.totalWeight {
			r.add(apath+".weighted_clusters.total_weight", "invalid: %d, but the weights add up to %d", tw.GetValue(), out.totalWeight)
			return nil
		}
		if out.totalWeight == 0 {
			r.add(apath+".weighted_clusters", "invalid: no cluster has a weight")
			return nil
		}
	default:
		r.add(apath, "invalid: a route action needs cluster, cluster_header or weighted_clusters")
		return nil
	}
	if a.GetPrefixRewrite() != "" {
		out.rewritePrefix, out.prefixRewrite = true, a.GetPrefixRewrite()
		if out.regex != nil {
			r.add(apath+".prefix_rewrite", "invalid: prefix_rewrite needs a prefix or path_separated_prefix match")
		}
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			r.add(apath+".regex_rewrite.pattern.regex", "invalid: %v", err)
			return nil
		}
		out.regexRewrite, out.regexSubstitution = re, envoySubstitution(rr.GetSubstitution())
	}
	if h := a.GetHostRewriteLiteral(); h != "" {
		out.hostRewrite, out.hostRewriteB = h, []byte(h)
	}
	return out
}

// retryPolicy reads a RetryPolicy, with Envoy's defaults: one retry,
// back-off from 25 ms to ten times that.
func (r *resources) retryPolicy(p *routev3.RetryPolicy, path string) *retryPolicy {
	if p == nil {
		return nil
	}
	on, err := parseRetryOn(p.GetRetryOn())
	if err != nil {
		r.add(path+".retry_on", "not implemented by shunt: %v", err)
		return nil
	}
	out := &retryPolicy{on: on, numRetries: 1, perTry: durationOr(p.GetPerTryTimeout(), 0),
		backoffBase: 25 * time.Millisecond, hostAttempts: int(max(1, p.GetHostSelectionRetryMaxAttempts()))}
	if n := p.GetNumRetries(); n != nil {
		out.numRetries = int(n.GetValue())
	}
	for _, c := range p.GetRetriableStatusCodes() {
		out.statusCodes = append(out.statusCodes, int(c))
	}
	if b := p.GetRetryBackOff(); b != nil {
		out.backoffBase = durationOr(b.GetBaseInterval(), out.backoffBase)
		out.backoffMax = durationOr(b.GetMaxInterval(), 0)
	}
	if out.backoffMax == 0 {
		out.backoffMax = 10 * out.backoffBase
	}
	for i, h := range p.GetRetriableHeaders() {
		hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
		if h.GetStringMatch() != nil {
			if hm.value = r.stringMatcher(h.GetStringMatch(), fmt.Sprintf("%s.retriable_headers[%d].string_match", path, i)); hm.value == nil {
				continue
			}
		}
		out.headers = append(out.headers, hm)
	}
	for i, hp := range p.GetRetryHostPredicate() {
		if hp.GetTypedConfig().MessageName() != "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" {
			r.add(fmt.Sprintf("%s.retry_host_predicate[%d]", path, i), "not implemented by shunt: only previous_hosts")
			continue
		}
		out.previousHosts = true
	}
	return out
}

// redirectCodes are the statuses of RedirectAction's response codes.
var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY: 301, routev3.RedirectAction_FOUND: 302, routev3.RedirectAction_SEE_OTHER: 303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307, routev3.RedirectAction_PERMANENT_REDIRECT: 308}

// envoySubstitution turns RE2's \1 in a substitution into Go's ${1}.
var backref = regexp.MustCompile(`\\(\d)`)

func envoySubstitution(s string) string {
	s = strings.ReplaceAll(s, "$", "$$")
	return backref.ReplaceAllString(s, "$${$1}")
}

func (r *resources) routeMatch(out *route, m *routev3.RouteMatch, path string) bool {
	switch spec := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.prefix = spec.Prefix
	case *routev3.RouteMatch_Path:
		out.path, out.exactPath = spec.Path, true
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.separatedPrefix = spec.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := wholeRegex(spec.SafeRegex.GetRegex())
		if err != nil {
			r.add(path+".safe_regex.regex", "invalid: %v", err)
			return false
		}
		out.regex = re
	case *routev3.RouteMatch_ConnectMatcher_:
		out.connect = true
	default:
		r.add(path, "invalid: a match needs prefix, path, path_separated_prefix, safe_regex or connect_matcher")
		return false
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		out.caseInsensitive = true
	}
	out.grpc = m.GetGrpc() != nil
	ok := true
	for i, h := range m.GetHeaders() {
		hm, hok := r.headerMatcher(h, fmt.Sprintf("%s.headers[%d]", path, i))
		ok = ok && hok
		out.headers = append(out.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		if q.GetStringMatch() != nil {
			qm.value = r.stringMatcher(q.GetStringMatch(), fmt.Sprintf("%s.query_parameters[%d].string_match", path, i))
			ok = ok && qm.value != nil
		}
		out.queries = append(out.queries, qm)
	}
	return ok
}

// headerMatcher reads Envoy's HeaderMatcher: a string match, or
// present_match; false when the string match is refused.
func (r *resources) headerMatcher(h *routev3.HeaderMatcher, path string) (headerMatcher, bool) {
	hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
	if h.GetStringMatch() != nil {
		hm.value = r.stringMatcher(h.GetStringMatch(), path+".string_match")
		return hm, hm.value != nil
	}
	_, isPresent := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch)
	hm.absent = isPresent && !h.GetPresentMatch()
	return hm, true
}

func (r *resources) stringMatcher(m *matcherv3.StringMatcher, path string) *stringMatcher {
	sm := &stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch spec := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.exact, sm.hasExact = spec.Exact, true
	case *matcherv3.StringMatcher_Prefix:
		sm.prefix = spec.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.suffix = spec.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.contains = spec.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		expr := spec.SafeRegex.GetRegex()
		if sm.ignoreCase {
			expr = "(?i)" + expr
		}
		re, err := wholeRegex(expr)
		if err != nil {
			r.add(path+".safe_regex.regex", "invalid: %v", err)
			return nil
		}
		sm.regex = re
	default:
		r.add(path, "invalid: a string match needs exact, prefix, suffix, contains or safe_regex")
		return nil
	}
	return sm
}

// accessLogs are the loggers of a TCP proxy or HTTP connection manager.
func (r *resources) accessLogs(logs []*accesslogv3.AccessLog, path string) []logger {
	var out []logger
	for i, l := range logs {
		p := fmt.Sprintf("%s[%d].typed_config", path, i)
		msg, err := l.GetTypedConfig().UnmarshalNew()
		if err != nil {
			r.add(p, "invalid: %v", err)
			continue
		}
		var dest string
		var format *corev3.SubstitutionFormatString
		switch a := msg.(type) {
		case *filev3.FileAccessLog:
			dest, format = a.GetPath(), a.GetLogFormat()
		case *streamv3.StdoutAccessLog:
			dest, format = "/dev/stdout", a.GetLogFormat()
		case *streamv3.StderrAccessLog:
			dest, format = "/dev/stderr", a.GetLogFormat()
		}
		key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(format)
		key = append([]byte(dest+"\x00"), key...)
		if lg, ok := r.loggers[string(key)]; ok {
			out = append(out, lg) // the same logger as another handler's: one line each, not two, for a refusal
			continue
		}
		f, err := compileFormat(format)
		if err != nil {
			r.add(p+".log_format", "invalid: %v", err)
			continue
		}
		sink := r.sinks[dest]
		if sink == nil && r.opt.sinks[dest] != nil {
			sink = r.opt.sinks[dest]
			r.sinks[dest] = sink
		}
		if sink == nil {
			w, err := r.opt.open(dest)
			if err != nil {
				r.add(p, "cannot open the access log: %v", err)
				continue
			}
			sink = newAccessLog(w)
			r.sinks[dest] = sink
		}
		lg := logger{sink: sink, format: f}
		r.loggers[string(key)] = lg
		out = append(out, lg)
	}
	return out
}

// compileFormat compiles a log_format: Envoy's default when unset.
func compileFormat(f *corev3.SubstitutionFormatString) (*accesslog.Format, error) {
	switch {
	case f == nil:
		return accesslog.Compile(accesslog.EnvoyDefault)
	case f.GetJsonFormat() != nil:
		m := f.GetJsonFormat().AsMap()
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fields := make([]accesslog.Field, 0, len(keys))
		for _, k := range keys {
			s, ok := m[k].(string)
			if !ok {
				return nil, fmt.Errorf("json_format: %q: shunt takes format strings as values", k)
			}
			fields = append(fields, accesslog.Field{Key: k, Format: s})
		}
		return accesslog.CompileJSON(fields)
	case f.GetTextFormatSource() != nil:
		text, err := dataSource(f.GetTextFormatSource())
		if err != nil {
			return nil, fmt.Errorf("text_format_source: %v", err)
		}
		return accesslog.Compile(string(text))
	}
	return accesslog.Compile(f.GetTextFormat())
}

// CheckBootstrap says whether the proxy can run b, without opening or
// binding anything: nil, or envoyconfig.Problems naming every field it
// cannot run.
func CheckBootstrap(b *bootstrapv3.Bootstrap) error {
	exp := newExporterSet(0)
	defer exp.close()
	_, err := build(b, buildOptions{open: func(string) (io.Writer, error) { return io.Discard, nil }, exporters: exp})
	return err
}

// outlierDetection reads an OutlierDetection, with Envoy's defaults.
func (r *resources) outlierDetection(o *clusterv3.OutlierDetection, path string) *outlierDetector {
	if o == nil {
		return nil
	}
	d := &outlierDetector{
		consec5xx:              int32(u32Or(o.GetConsecutive_5Xx(), 5)),
		consecGateway:          int32(u32Or(o.GetConsecutiveGatewayFailure(), 5)),
		consecLocal:            int32(u32Or(o.GetConsecutiveLocalOriginFailure(), 5)),
		enforce5xx:             int(u32Or(o.GetEnforcingConsecutive_5Xx(), 100)),
		enforceGateway:         int(u32Or(o.GetEnforcingConsecutiveGatewayFailure(), 0)),
		enforceLocal:           int(u32Or(o.GetEnforcingConsecutiveLocalOriginFailure(), 100)),
		splitLocal:             o.GetSplitExternalLocalOriginErrors(),
		interval:               durationOr(o.GetInterval(), 10*time.Second),
		baseEjection:           durationOr(o.GetBaseEjectionTime(), 30*time.Second),
		maxEjection:            durationOr(o.GetMaxEjectionTime(), 300*time.Second),
		maxEjectionPercent:     int(u32Or(o.GetMaxEjectionPercent(), 10)),
		successRateMinHosts:    int64(u32Or(o.GetSuccessRateMinimumHosts(), 5)),
		successRateVolume:      int64(u32Or(o.GetSuccessRateRequestVolume(), 100)),
		successRateStdevFactor: float64(u32Or(o.GetSuccessRateStdevFactor(), 1900)) / 1000,
		enforceSuccessRate:     int(u32Or(o.GetEnforcingSuccessRate(), 100)),
	}
	if d.interval <= 0 {
		r.add(path+".interval", "invalid: it must be positive")
		return nil
	}
	return d
}

// healthCheck reads a HealthCheck (HTTP or TCP).
func (r *resources) healthCheck(hc *corev3.HealthCheck, path string) *healthCheck {
	out := &healthCheck{interval: durationOr(hc.GetInterval(), 0), timeout: durationOr(hc.GetTimeout(), 0),
		unhealthyThreshold: int(hc.GetUnhealthyThreshold().GetValue()), healthyThreshold: int(hc.GetHealthyThreshold().GetValue())}
	if out.interval <= 0 || out.timeout <= 0 {
		r.add(path, "invalid: interval and timeout are needed, positive")
		return nil
	}
	out.unhealthyThreshold, out.healthyThreshold = max(1, out.unhealthyThreshold), max(1, out.healthyThreshold)
	switch {
	case hc.GetHttpHealthCheck() != nil:
		h := hc.GetHttpHealthCheck()
		out.path, out.host = h.GetPath(), h.GetHost()
		if out.path == "" {
			r.add(path+".http_health_check.path", "invalid: a path is needed")
			return nil
		}
		for _, rg := range h.GetExpectedStatuses() {
			out.expected = append(out.expected, [2]int{int(rg.GetStart()), int(rg.GetEnd())})
		}
		if out.expected == nil {
			out.expected = [][2]int{{200, 201}}
		}
	case hc.GetTcpHealthCheck() != nil:
	default:
		r.add(path, "not implemented by shunt: a health check other than http_health_check or tcp_health_check")
		return nil
	}
	return out
}

// filterSpec is an HTTP filter of a connection manager, before the
// router: its name (what typed_per_filter_config keys on) and config.
type filterSpec struct {
	name string
	msg  proto.Message
	path string
}

// routeFilters builds a route's filters: each of the manager's, as the
// route's typed_per_filter_config, else its virtual host's, else the
// manager's own configures it. Each route gets its own instance (a
// local rate limit's bucket is per route, as Envoy's).
func (r *resources) routeFilters(specs []filterSpec, route, vhost map[string]*anypb.Any, rpath, vpath string) []httpFilter {
	var out []httpFilter
	for _, sp := range specs {
		msg, path := sp.msg, sp.path
		for _, o := range []struct {
			m    map[string]*anypb.Any
			path string
		}{{route, rpath}, {vhost, vpath}} {
			if a, ok := o.m[sp.name]; ok {
				m, err := a.UnmarshalNew()
				if err != nil {
					r.add(o.path+".typed_per_filter_config."+sp.name, "invalid: %v", err)
					return nil
				}
				msg, path = m, o.path+".typed_per_filter_config."+sp.name
				break
			}
		}
		if f := r.httpFilter(msg, path); f != nil && !f.idle() {
			out = append(out, f)
		}
	}
	return out
}

// httpFilter makes a fault or local rate limit filter.
func (r *resources) httpFilter(msg proto.Message, path string) httpFilter {
	switch m := msg.(type) {
	case *faultv3.HTTPFault:
		f := &faultFilter{maxActive: int64(m.GetMaxActiveFaults().GetValue())}
		for i, h := range m.GetHeaders() {
			hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
			if h.GetStringMatch() != nil {
				hm.value = r.stringMatcher(h.GetStringMatch(), fmt.Sprintf("%s.headers[%d].string_match", path, i))
			}
			f.headers = append(f.headers, hm)
		}
		if d := m.GetDelay(); d != nil {
			f.hasDelay, f.delay, f.headerDelay, f.delayPercent = true, durationOr(d.GetFixedDelay(), 0), d.GetHeaderDelay() != nil, faultFraction(d.GetPercentage())
		}
		if a := m.GetAbort(); a != nil {
			f.hasAbort, f.abortStatus, f.headerAbort, f.abortPercent = true, int(a.GetHttpStatus()), a.GetHeaderAbort() != nil, faultFraction(a.GetPercentage())
			f.abortGRPC = -1
			if _, ok := a.GetErrorType().(*faultv3.FaultAbort_GrpcStatus); ok {
				f.abortGRPC = int(a.GetGrpcStatus())
			}
		}
		return f
	case *rbachttpv3.RBAC:
		if m.GetRules() == nil {
			return &rbacFilter{engine: &rbacEngine{action: rbacv3.RBAC_LOG}} // no rules: Envoy lets everything on
		}
		return &rbacFilter{engine: r.rbacRules(m.GetRules(), path+".rules")}
	case *corsv3.Cors:
		return &corsFilter{} // idle until a route's CorsPolicy
	case *corsv3.CorsPolicy:
		return r.corsFilter(m, path)
	case *localratelimitv3.LocalRateLimit:
		tb := m.GetTokenBucket()
		if tb == nil || durationOr(tb.GetFillInterval(), 0) <= 0 {
			r.add(path+".token_bucket", "invalid: a token bucket with a fill_interval is needed")
			return nil
		}
		l := &rateLimiter{maxTokens: int64(tb.GetMaxTokens()), perFill: int64(tb.GetTokensPerFill().GetValue()),
			fillInterval: tb.GetFillInterval().AsDuration(), status: 429, enabled: fraction{0, 100}, enforced: fraction{0, 100}}
		if tb.GetTokensPerFill() == nil {
			l.perFill = 1
		}
		if s := m.GetStatus(); s != nil {
			l.status = int(s.GetCode())
		}
		if e := m.GetFilterEnabled(); e != nil {
			l.enabled = fractionOf(e.GetDefaultValue())
		}
		if e := m.GetFilterEnforced(); e != nil {
			l.enforced = fractionOf(e.GetDefaultValue())
		}
		l.headers = r.headerAdds(m.GetResponseHeadersToAdd(), path+".response_headers_to_add")
		return l
	}
	r.add(path, "not implemented by shunt: %s as an HTTP filter (shunt runs fault, cors, local_ratelimit and the router)", msg.ProtoReflect().Descriptor().FullName())
	return nil
}

// u32Or is a wrapper's value, or def when it is unset.
func u32Or(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

// fractionOf is a FractionalPercent; unset is all.
func fractionOf(p *typev3.FractionalPercent) fraction {
	if p == nil {
		return fraction{1, 1}
	}
	den := map[typev3.FractionalPercent_DenominatorType]uint64{typev3.FractionalPercent_HUNDRED: 100,
		typev3.FractionalPercent_TEN_THOUSAND: 10000, typev3.FractionalPercent_MILLION: 1000000}[p.GetDenominator()]
	return fraction{uint64(p.GetNumerator()), den}
}

// faultFraction is a fault's percentage: unset is none, as in Envoy,
// whose FractionalPercent defaults to 0 (an Istio fault without a
// percentage never fires either).
func faultFraction(p *typev3.FractionalPercent) fraction {
	if p == nil {
		return fraction{0, 100}
	}
	return fractionOf(p)
}

// cidrRange is an Envoy CidrRange as a prefix.
func cidrRange(cr *corev3.CidrRange) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(cr.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q is not an IP address", cr.GetAddressPrefix())
	}
	bits := int(cr.GetPrefixLen().GetValue())
	if bits > addr.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d is longer than %s's %d bits", bits, addr, addr.BitLen())
	}
	return netip.PrefixFrom(addr.Unmap(), bits).Masked(), nil
}
