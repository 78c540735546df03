package control

import (
	"net/netip"
	"slices"

	"github.com/shunt-dev/shunt/xds"
)

// nameEntry is a service in the name table (Istio's NDS) of the sidecars
// that may call it: a Service by its cluster IPs, or a headless one by
// its ready endpoints' (podAddrs); a ServiceEntry's host by its
// addresses. One with no address has none: its name is the DNS
// server's to answer.
func nameEntry(s *Service, podAddrs []netip.Addr) (xds.NameEntry, bool) {
	if s.Resolution != "" {
		return xds.NameEntry{Host: s.Hostname, Addrs: s.Addresses, Registry: "External"}, len(s.Addresses) > 0
	}
	addrs := s.Addresses
	if len(addrs) == 0 {
		addrs = slices.Clone(podAddrs)
		slices.SortFunc(addrs, netip.Addr.Compare)
		addrs = slices.Compact(addrs)
	}
	return xds.NameEntry{Host: s.Hostname, Addrs: addrs, Registry: "Kubernetes", ShortName: s.Name, Namespace: s.Namespace}, len(addrs) > 0
}

// setNameTable makes sp's name table of entries, or keeps the space
// before's when its entries are the same.
func (sp *space) setNameTable(prev *space, entries []xds.NameEntry) {
	if prev != nil && prev.nameTable != nil && slices.EqualFunc(prev.names, entries, sameEntry) {
		sp.names, sp.nameTable = prev.names, prev.nameTable
		sp.hash[sp.nameTable] = prev.hash[prev.nameTable]
		return
	}
	sp.names, sp.nameTable = entries, xds.NewNameTable(entries)
	sp.hash[sp.nameTable] = hashOf(sp.nameTable)
}

func sameEntry(a, b xds.NameEntry) bool {
	return a.Host == b.Host && a.Registry == b.Registry && a.ShortName == b.ShortName && a.Namespace == b.Namespace && slices.Equal(a.Addrs, b.Addrs)
}

// NameTable is what the sidecar's DNS proxy is sent to answer (NDS).
func (r *Resources) NameTable() []xds.NameEntry {
	if r.space == nil {
		return nil // a gateway's: it has no DNS proxy
	}
	return r.space.names
}
