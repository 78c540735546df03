// Package dnsproxy is the sidecar's DNS proxy: the pod's DNS queries,
// captured to it (shunt redirect --redirect-dns), are answered from the
// mesh's names where it knows them, and forwarded to the pod's name
// servers otherwise, with a cache; as Istio's DNS proxy does.
package dnsproxy

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Host is a name the mesh knows and its addresses: a Kubernetes
// service's (name.namespace.svc.DOMAIN) or an external host's.
type Host struct {
	Name  string
	Addrs []netip.Addr
}

// Table answers for the mesh's names. It is read-only once made: a change
// makes a new one.
type Table struct {
	names map[string][]netip.Addr // lower case, no final dot
}

// NewTable makes the table for a pod in namespace, in the cluster's
// domain (cluster.local): each host by its name, and a service's also by
// the shorter names a pod's resolver tries, as Istio's name table does:
// name.namespace.svc, name.namespace, and, in the pod's own namespace,
// name.
func NewTable(hosts []Host, namespace, domain string) *Table {
	t := &Table{names: map[string][]netip.Addr{}}
	suffix := ".svc." + strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, h := range hosts {
		name := strings.ToLower(strings.TrimSuffix(h.Name, "."))
		t.add(name, h.Addrs)
		svc, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		short, ns, ok := strings.Cut(svc, ".")
		if !ok || strings.Contains(ns, ".") {
			continue
		}
		t.add(svc+".svc", h.Addrs)
		t.add(svc, h.Addrs)
		if ns == namespace {
			t.add(short, h.Addrs)
		}
	}
	return t
}

func (t *Table) add(name string, addrs []netip.Addr) {
	for _, a := range addrs {
		if !containsAddr(t.names[name], a) {
			t.names[name] = append(t.names[name], a.Unmap())
		}
	}
	if _, ok := t.names[name]; !ok {
		t.names[name] = nil // known, with no address: an empty answer
	}
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if b == a.Unmap() {
			return true
		}
	}
	return false
}

// Lookup returns the addresses of name (any case, with or without the
// final dot) and whether the table knows it.
func (t *Table) Lookup(name string) ([]netip.Addr, bool) {
	if t == nil {
		return nil, false
	}
	as, ok := t.names[strings.ToLower(strings.TrimSuffix(name, "."))]
	return as, ok
}

// Len is how many names the table answers for.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.names)
}

// ParseHosts reads hosts in hosts(5)'s format: an address, then its
// names; # starts a comment. A bad address is an error naming its line.
func ParseHosts(r io.Reader) ([]Host, error) {
	var hosts []Host
	index := map[string]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		addr, err := netip.ParseAddr(fields[0])
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("line %d: %q is not an IP address", n, fields[0])
		}
		if len(fields) == 1 {
			return nil, fmt.Errorf("line %d: %s has no name", n, fields[0])
		}
		for _, name := range fields[1:] {
			if i, ok := index[name]; ok {
				hosts[i].Addrs = append(hosts[i].Addrs, addr)
				continue
			}
			index[name] = len(hosts)
			hosts = append(hosts, Host{Name: name, Addrs: []netip.Addr{addr}})
		}
	}
	return hosts, sc.Err()
}
