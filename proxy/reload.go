package proxy

import (
	"context"
	"errors"
	"fmt"
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

// Reload runs b from now on, as a hot restart of Envoy would but within
// the process: new connections and requests take the new configuration
// at once; connections already open finish on the one they came in on;
// clusters whose configuration did not change are kept with their
// connection pools, endpoints and health. A configuration that cannot
// run is refused whole (envoyconfig.Problems) and the old one stays.
// Listeners' names and addresses must stay as they are (sockets are
// bound once, before the proxy drops its privileges).
func (p *Proxy) Reload(b *bootstrapv3.Bootstrap) error {
	if p.cfg.Bootstrap == nil {
		return errors.New("the sidecar's own configuration comes from its flags: only a --config file is reloaded")
	}
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	old := p.gen.Load()
	res, err := build(b, buildOptions{open: p.openLog, idle: p.cfg.IdleTimeout, previous: old.clusters, sinks: old.sinks, store: p.stats})
	if err != nil {
		return err
	}
	if err := sameListeners(old.listeners, res.listeners); err != nil {
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
	for dest, s := range res.sinks {
		if old.sinks[dest] != s {
			s.start()
		}
	}
	p.startClusters(p.bg, added) // warmed before they take traffic, as Envoy's
	p.gen.Store(&generation{bootstrap: b, listeners: res.listeners, clusters: res.clusters, sinks: mergeSinks(old.sinks, res.sinks)})
	for _, c := range p.capture {
		for _, l := range res.listeners {
			if l.name == c.name {
				c.lst.Store(l)
			}
		}
	}
	for name, cl := range old.clusters {
		if res.clusters[name] != cl {
			if cl.stopBG != nil {
				cl.stopBG()
			}
			cl.closeIdle() // connections in use close when their requests end
		}
	}
	p.log.Info("configuration reloaded", "listeners", len(res.listeners), "clusters", len(res.clusters),
		"clusters_kept", len(res.clusters)-len(added), "clusters_new", len(added))
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

// sameListeners refuses a reload that adds, removes or moves a listener.
func sameListeners(old, fresh []*listener) error {
	var problems envoyconfig.Problems
	byName := map[string]*listener{}
	for _, l := range old {
		byName[l.name] = l
	}
	for i, l := range fresh {
		o := byName[l.name]
		path := fmt.Sprintf("static_resources.listeners[%d]", i)
		switch {
		case o == nil:
			problems = append(problems, envoyconfig.Problem{Path: path + ".name",
				Message: fmt.Sprintf("not implemented by shunt: a reload adding listener %q (listeners are bound at start: restart the proxy)", l.name)})
		case !slices.Equal(o.addrs, l.addrs) || o.transparent != l.transparent:
			problems = append(problems, envoyconfig.Problem{Path: path + ".address",
				Message: fmt.Sprintf("not implemented by shunt: a reload moving listener %q (listeners are bound at start: restart the proxy)", l.name)})
		}
		delete(byName, l.name)
	}
	for name := range byName {
		problems = append(problems, envoyconfig.Problem{Path: "static_resources.listeners",
			Message: fmt.Sprintf("not implemented by shunt: a reload removing listener %q (restart the proxy)", name)})
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// sameCluster says whether a cluster's configuration is unchanged.
func sameCluster(cl *cluster, config proto.Message) bool {
	return cl != nil && cl.config != nil && proto.Equal(cl.config, config)
}
