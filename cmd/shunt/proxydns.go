package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/dnsproxy"
	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
	"github.com/shunt-dev/shunt/xds"
)

// dnsFlags are `shunt proxy`'s DNS proxy settings.
type dnsFlags struct {
	on        bool
	hosts     string
	upstreams []string
	namespace string
	domain    string
}

func (d *dnsFlags) add(f *pflag.FlagSet) {
	f.BoolVar(&d.on, "dns", false, fmt.Sprintf("answer the pod's DNS, which redirect --redirect-dns captures, on 127.0.0.1 and ::1 port %d (UDP and TCP): "+
		"mesh names from --dns-hosts, the rest from --dns-upstream, cached [$ISTIO_META_DNS_CAPTURE]", sidecar.DNSPort))
	f.StringVar(&d.hosts, "dns-hosts", "", "the mesh's names, in /etc/hosts' format: a service's name.namespace.svc.DOMAIN is also answered as name.namespace.svc, name.namespace, and in the pod's namespace as name")
	f.StringSliceVar(&d.upstreams, "dns-upstream", nil, "name servers (IP or IP:port) the rest is asked of, in order (default: /etc/resolv.conf's)")
	f.StringVar(&d.namespace, "dns-namespace", "", "the pod's namespace, whose services answer by their short name [$POD_NAMESPACE]")
	f.StringVar(&d.domain, "dns-domain", "cluster.local", "the cluster's DNS domain")
}

// dnsRun is a checked DNS proxy configuration.
type dnsRun struct {
	table     *dnsproxy.Table
	upstreams []string
	hosts     int
	// what the table is made of, for the control plane's names to join
	static            []dnsproxy.Host
	namespace, domain string
}

// check reads what the DNS proxy needs, refusing what is wrong; nil when
// the proxy does not answer DNS.
func (d *dnsFlags) check(fs *pflag.FlagSet, getenv func(string) (string, bool), resolvConf string) (*dnsRun, error) {
	if v, ok := getenv("ISTIO_META_DNS_CAPTURE"); ok && !fs.Changed("dns") {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("$ISTIO_META_DNS_CAPTURE: %s is not true or false", clip.Quote(v))
		}
		d.on = on
	}
	if !d.on {
		for _, name := range []string{"dns-hosts", "dns-upstream", "dns-namespace", "dns-domain"} {
			if fs.Changed(name) {
				return nil, fmt.Errorf("--%s configures the DNS proxy: add --dns", name)
			}
		}
		return nil, nil
	}
	ns := d.namespace
	if v, ok := getenv("POD_NAMESPACE"); ok && ns == "" {
		ns = v
	}
	var hosts []dnsproxy.Host
	if d.hosts != "" {
		f, err := os.Open(d.hosts)
		if err != nil {
			return nil, fmt.Errorf("--dns-hosts: %v", err)
		}
		hosts, err = dnsproxy.ParseHosts(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--dns-hosts %s: %v", clip.Quote(d.hosts), err)
		}
	}
	r := &dnsRun{table: dnsproxy.NewTable(hosts, ns, d.domain), hosts: len(hosts), static: hosts, namespace: ns, domain: d.domain}
	if len(d.upstreams) == 0 {
		servers, err := nameServers(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("--dns: the name servers to forward to: %v; give --dns-upstream", err)
		}
		d.upstreams = servers
	}
	for _, u := range d.upstreams {
		ap, err := upstreamAddr(u)
		if err != nil {
			return nil, fmt.Errorf("--dns-upstream: %s %v", clip.Quote(u), err)
		}
		r.upstreams = append(r.upstreams, ap.String())
	}
	return r, nil
}

// upstreamAddr reads IP or IP:port (53 by default).
func upstreamAddr(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, errors.New("is not an IP address, or IP:port")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// nameServers are resolv.conf's nameserver lines.
func nameServers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if _, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, fields[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names none", path)
	}
	return out, nil
}

// listen binds the DNS proxy on loopback, IPv4 and (where the namespace
// has it) IPv6, where the capture's REDIRECT sends queries.
func (r *dnsRun) listen(log *slog.Logger) (*dnsproxy.Server, error) {
	s, err := dnsproxy.New(dnsproxy.Config{Upstreams: r.upstreams}, r.table, log)
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(sidecar.DNSPort)
	if err := s.Listen(net.JoinHostPort("127.0.0.1", port)); err != nil {
		return nil, err
	}
	if err := s.Listen(net.JoinHostPort("::1", port)); err != nil {
		log.Debug("DNS proxy: no IPv6 loopback", "err", err)
	}
	log.Info("DNS proxy listening", "port", sidecar.DNSPort, "mesh_hosts", r.hosts, "names", r.table.Len(), "upstreams", r.upstreams)
	return s, nil
}

// fromControlPlane is what the xDS client gives the name tables the
// control plane sends (Istio's NDS): each becomes s's table, with
// --dns-hosts' names beside it.
func (r *dnsRun) fromControlPlane(s *dnsproxy.Server, log *slog.Logger) func([]xds.NameEntry) error {
	return func(entries []xds.NameEntry) error {
		hosts := slices.Clone(r.static)
		for _, e := range entries {
			hosts = append(hosts, dnsproxy.Host{Name: e.Host, Addrs: e.Addrs})
		}
		t := dnsproxy.NewTable(hosts, r.namespace, r.domain)
		s.SetTable(t)
		log.Info("DNS proxy: the control plane's names", "mesh_hosts", len(entries), "names", t.Len())
		return nil
	}
}

// serveDNS runs s until ctx ends.
func serveDNS(ctx context.Context, s *dnsproxy.Server, log *slog.Logger) {
	if err := s.Serve(ctx); err != nil {
		log.Error("DNS proxy stopped", "err", err)
	}
}
