package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/shunt-dev/shunt/internal/protofields"
)

// NameTableType is Istio's NDS: the names the sidecar's DNS proxy
// answers, with their addresses.
const NameTableType = "type.googleapis.com/istio.networking.nds.v1.NameTable"

// NameEntry is a host of the name table: its addresses, and for a
// Kubernetes Service its short name and namespace.
type NameEntry struct {
	Host      string
	Addrs     []netip.Addr
	Registry  string // Kubernetes, or External (a ServiceEntry's)
	ShortName string
	Namespace string
}

// nameTableTypes are Istio's NameTable message and its NameInfo,
// described as Istio's networking/nds/v1/nds.proto does (so the wire is
// the same): a map of host to NameInfo {ips, registry, shortname,
// namespace, alt_hosts}. Built on first use: a sidecar without the DNS
// proxy never pays for it.
var nameTableTypes = sync.OnceValues(func() (table, info protoreflect.MessageDescriptor) {
	str, msg := protofields.String, protofields.Message
	file := &descriptorpb.FileDescriptorProto{
		Name: proto.String("networking/nds/v1/nds.proto"), Package: proto.String("istio.networking.nds.v1"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name:  proto.String("NameTable"),
			Field: []*descriptorpb.FieldDescriptorProto{msg("table", 1, ".istio.networking.nds.v1.NameTable.TableEntry", true)},
			NestedType: []*descriptorpb.DescriptorProto{
				{Name: proto.String("NameInfo"), Field: []*descriptorpb.FieldDescriptorProto{
					str("ips", 1, true), str("registry", 2, false), str("shortname", 3, false), str("namespace", 4, false), str("alt_hosts", 5, true)}},
				{Name: proto.String("TableEntry"), Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
					Field: []*descriptorpb.FieldDescriptorProto{str("key", 1, false), msg("value", 2, ".istio.networking.nds.v1.NameTable.NameInfo", false)}},
			},
		}},
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		panic(err) // a descriptor written here
	}
	table = fd.Messages().ByName("NameTable")
	return table, table.Messages().ByName("NameInfo")
})

// NewNameTable is a NameTable of entries.
func NewNameTable(entries []NameEntry) proto.Message {
	nameTable, nameInfo := nameTableTypes()
	m := dynamicpb.NewMessage(nameTable)
	table := m.Mutable(nameTable.Fields().ByName("table")).Map()
	f := nameInfo.Fields()
	for _, e := range entries {
		info := dynamicpb.NewMessage(nameInfo)
		ips := info.Mutable(f.ByName("ips")).List()
		for _, a := range e.Addrs {
			ips.Append(protoreflect.ValueOfString(a.String()))
		}
		for name, v := range map[protoreflect.Name]string{"registry": e.Registry, "shortname": e.ShortName, "namespace": e.Namespace} {
			if v != "" {
				info.Set(f.ByName(name), protoreflect.ValueOfString(v))
			}
		}
		table.Set(protoreflect.ValueOfString(e.Host).MapKey(), protoreflect.ValueOfMessage(info))
	}
	return m
}

// ReadNameTable reads a NameTable resource, its entries by host.
func ReadNameTable(a *anypb.Any) ([]NameEntry, error) {
	if a.GetTypeUrl() != NameTableType {
		return nil, fmt.Errorf("a %s, not a NameTable", a.GetTypeUrl())
	}
	nameTable, nameInfo := nameTableTypes()
	m := dynamicpb.NewMessage(nameTable)
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("NameTable: %v", err)
	}
	f := nameInfo.Fields()
	var out []NameEntry
	var bad error
	m.Get(nameTable.Fields().ByName("table")).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		info := v.Message()
		e := NameEntry{Host: k.String(), Registry: info.Get(f.ByName("registry")).String(),
			ShortName: info.Get(f.ByName("shortname")).String(), Namespace: info.Get(f.ByName("namespace")).String()}
		ips := info.Get(f.ByName("ips")).List()
		for i := range ips.Len() {
			a, err := netip.ParseAddr(ips.Get(i).String())
			if err != nil {
				bad = fmt.Errorf("NameTable: %s: %v", e.Host, err)
				return false
			}
			e.Addrs = append(e.Addrs, a)
		}
		out = append(out, e)
		return true
	})
	slices.SortFunc(out, func(a, b NameEntry) int { return strings.Compare(a.Host, b.Host) })
	return out, bad
}
