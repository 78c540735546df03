package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// generation is one configuration the proxy runs: the bootstrap and what
// it built. A reload makes a new one; connections keep the one they came
// in on.
type generation struct {
	bootstrap *bootstrapv3.Bootstrap
	listeners []*listener
	clusters  map[string]*cluster
	sinks     map[string]*accessLog
}

// startClusters starts the background work of clusters (DNS lookups,
// health checks, outlier detection) under ctx, each cluster's under its
// own context so that a reload can stop one; the first DNS lookups and
// health checks are done before it returns.
func (p *Proxy) startClusters(ctx context.Context, clusters map[string]*cluster) {
	for _, cl := range clusters {
		cl.bgCtx, cl.stopBG = context.WithCancel(ctx)
	}
	p.resolveAll(ctx, clusters)
	p.refreshDNS(clusters)
	for _, cl := range clusters {
		if cl.hc != nil {
			p.runHealthChecks(cl.bgCtx, cl)
		}
		if cl.outlier != nil {
			go cl.detectOutliers(cl.bgCtx)
		}
	}
}

// AwaitConfig keeps the proxy not ready until its next reload succeeds:
// a sidecar under a control plane is ready once its first configuration
// is in force, as Envoy's initial fetch.
func (p *Proxy) AwaitConfig() { p.awaiting.Store(true) }

// Reload runs b from now on, as a hot restart of Envoy would but within
// the process: new connections and requests take the new configuration
// at once; connections already open finish on the one they came in on;
// clusters whose configuration did not change are kept with their
// connection pools, endpoints and health. Listeners are matched by name:
// a new one is bound and serves at once, a removed one stops accepting
// (its connections finish their requests), a moved one is bound at its
// new address, then its old socket closes. A configuration that cannot
// run, or a listener that cannot be bound, refuses the reload whole
// (envoyconfig.Problems) and the old configuration stays.
func (p *Proxy) Reload(b *bootstrapv3.Bootstrap) error {
	if p.cfg.Bootstrap == nil {
		return errors.New("the sidecar's own configuration comes from its flags: only a --config file is reloaded")
	}
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	old := p.gen.Load()
	res, err := build(b, buildOptions{open: p.openLog, idle: p.cfg.IdleTimeout, previous: old.clusters, sinks: old.sinks, store: p.stats, exporters: p.exporters, workload: p.cfg.Workload, reload: true})
	if err != nil {
		return err
	}
	plan, err := p.planListeners(old.listeners, res.listeners)
	if err != nil {
		for dest, s := range res.sinks {
			if old.sinks[dest] != s {
				s.closeFile()
			}
		}
		return err
	}
	var added map[string]*cluster
	for name, cl := range res.clusters {
		if old.clusters[name] != cl {
			if added == nil {
				added = map[string]*cluster{}
			}
			added[name] = cl
		}
	}
	if p.started { // else Serve starts them
		for dest, s := range res.sinks {
			if old.sinks[dest] != s {
				s.start()
			}
		}
		p.startClusters(p.bg, added) // warmed before they take traffic, as Envoy's
	}
	p.gen.Store(&generation{bootstrap: b, listeners: res.listeners, clusters: res.clusters, sinks: mergeSinks(old.sinks, res.sinks)})
	p.applyListeners(plan, res.listeners)
	for name, cl := range old.clusters {
		if res.clusters[name] != cl {
			if cl.stopBG != nil {
				cl.stopBG()
			}
			cl.closeIdle() // connections in use close when their requests end
		}
	}
	p.log.Info("configuration reloaded", "listeners", len(res.listeners), "listeners_bound", len(plan.bound),
		"listeners_closed", len(plan.close), "clusters", len(res.clusters),
		"clusters_kept", len(res.clusters)-len(added), "clusters_new", len(added))
	p.awaiting.Store(false)
	return nil
}

// mergeSinks keeps the old sinks (connections of the old configuration
// may still log to them) with the new ones, so that all are flushed and
// closed at the end.
func mergeSinks(old, fresh map[string]*accessLog) map[string]*accessLog {
	out := make(map[string]*accessLog, len(old)+len(fresh))
	for k, v := range old {
		out[k] = v
	}
	for k, v := range fresh {
		out[k] = v
	}
	return out
}

// listenerPlan is what a reload does to the listeners: the sockets it
// bound for new and moved listeners, by name, and the names whose old
// sockets close (removed and moved listeners).
type listenerPlan struct {
	bound map[string][]*net.TCPListener
	close map[string]bool
}

// planListeners compares the listeners by name and binds the sockets of
// the new and moved ones; if one cannot be bound, none stays bound and
// the reload is refused. Workers share their supervisor's sockets, so
// with workers the listeners cannot change.
func (p *Proxy) planListeners(old, fresh []*listener) (listenerPlan, error) {
	plan := listenerPlan{bound: map[string][]*net.TCPListener{}, close: map[string]bool{}}
	var problems envoyconfig.Problems
	refuse := func(path, format string, args ...any) {
		problems = append(problems, envoyconfig.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	byName := map[string]*listener{}
	for _, l := range old {
		byName[l.name] = l
	}
	shared := p.sup != nil || p.adopted
	for i, l := range fresh {
		o := byName[l.name]
		delete(byName, l.name)
		path := fmt.Sprintf("static_resources.listeners[%d]", i)
		what := "adding"
		switch {
		case o != nil && sameAddresses(o, l) && o.transparent == l.transparent:
			continue
		case o != nil:
			what, path = "moving", path+".address"
		}
		switch {
		case shared:
			refuse(path, "not implemented by shunt with --workers above 1: a reload %s listener %q (the workers share the supervisor's sockets: restart the proxy)", what, l.name)
		case p.draining.Load():
			refuse(path, "the proxy is draining: a reload %s listener %q", what, l.name)
		default:
			lns, err := p.bind(l)
			if err != nil {
				refuse(path, "invalid: %v", err)
				continue
			}
			plan.bound[l.name] = lns
			if o != nil {
				plan.close[l.name] = true
			}
		}
	}
	for name := range byName {
		if shared {
			refuse("static_resources.listeners", "not implemented by shunt with --workers above 1: a reload removing listener %q (restart the proxy)", name)
		}
		plan.close[name] = true
	}
	if len(problems) > 0 {
		for _, lns := range plan.bound {
			for _, ln := range lns {
				ln.Close()
			}
		}
		return plan, problems
	}
	return plan, nil
}

// sameAddresses says whether l is bound where o is: the same addresses,
// a port 0 of o's (the kernel's choice) matching the port it got.
func sameAddresses(o, l *listener) bool {
	return slices.EqualFunc(o.addrs, l.addrs, func(a, b netip.AddrPort) bool {
		return a == b || a.Port() == 0 && a.Addr() == b.Addr() && b.Port() == o.port
	})
}

// applyListeners gives the kept sockets their new configuration, closes
// those of removed and moved listeners and serves the new sockets. The
// connections of a closed socket finish the request they are on; its
// configuration is marked replaced, so HTTP/1 ones close after it.
func (p *Proxy) applyListeners(plan listenerPlan, fresh []*listener) {
	byName := map[string]*listener{}
	for _, l := range fresh {
		byName[l.name] = l
	}
	p.capMu.Lock()
	kept := p.capture[:0:0]
	for _, c := range p.capture {
		if plan.close[c.name] {
			if !c.closed {
				c.closed = true
				c.ln.Close()
			}
			replaced := *c.lst.Load()
			c.lst.Store(&replaced)
			continue
		}
		if l := byName[c.name]; l != nil {
			if l.port == 0 { // bound to a port the kernel chose
				l.port = addrPort(c.ln.Addr()).Port()
			}
			c.lst.Store(l)
		}
		kept = append(kept, c)
	}
	p.capture = kept
	p.capMu.Unlock()
	for _, l := range fresh {
		for _, ln := range plan.bound[l.name] {
			p.adopt(ln, l)
			p.log.Info("listener listening", "listener", l.name, "address", addrPort(ln.Addr()))
		}
	}
}

// sameCluster says whether a cluster's configuration is unchanged.
func sameCluster(cl *cluster, config proto.Message) bool {
	return cl != nil && cl.config != nil && proto.Equal(cl.config, config)
}
