// Package envoyconfig reads an Envoy v3 bootstrap (YAML or JSON) into
// go-control-plane's types, and says which of its fields shunt does not
// implement, by path, before anything runs: nothing is silently ignored.
package envoyconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// Problem is one thing wrong with a configuration: a field shunt does not
// implement, a field Envoy does not know, or a value that is invalid.
type Problem struct {
	Path    string // e.g. static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems are every problem found in a configuration.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// maxSize bounds a configuration file: a bootstrap is kilobytes.
const maxSize = 16 << 20

// Load reads and checks the bootstrap in file; YAML unless its name ends
// in .json (JSON is YAML too, so either reads either).
func Load(file string) (*bootstrapv3.Bootstrap, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxSize {
		return nil, fmt.Errorf("%s: %d bytes, more than a configuration file's %d", file, fi.Size(), maxSize)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse reads a bootstrap from YAML or JSON. It returns Problems listing
// every field shunt refuses, every field Envoy does not know and every
// value that is invalid; nil and Problems together never.
func Parse(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, Problems{{Message: "not YAML or JSON: " + err.Error()}}
	}
	var tree any
	if err := json.Unmarshal(js, &tree); err != nil {
		return nil, Problems{{Message: "not YAML or JSON: " + err.Error()}}
	}
	if tree == nil {
		return nil, Problems{{Message: "the configuration is empty"}}
	}
	root, ok := tree.(map[string]any)
	if !ok {
		return nil, Problems{{Message: "the configuration is not an object (a bootstrap: static_resources, admin, …)"}}
	}
	b := &bootstrapv3.Bootstrap{}
	c := checker{}
	c.message(root, b.ProtoReflect().Descriptor(), "")
	clean, err := json.Marshal(root)
	if err != nil {
		return nil, Problems{{Message: err.Error()}}
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(clean, b); err != nil {
		msg := strings.TrimPrefix(err.Error(), "proto: ")
		if _, rest, ok := strings.Cut(msg, "): "); ok && strings.HasPrefix(msg, "(line ") {
			msg = rest // a position in the checked copy, not in the file
		}
		c.add("", "invalid: "+msg)
	}
	if len(c.problems) == 0 {
		c.validate(b)
	}
	if len(c.problems) > 0 {
		return nil, c.problems
	}
	return b, nil
}

// validate runs the configuration's own constraints (Envoy's
// protoc-gen-validate rules).
func (c *checker) validate(b *bootstrapv3.Bootstrap) {
	err := b.ValidateAll()
	if err == nil {
		return
	}
	var multi interface{ AllErrors() []error }
	if errors.As(err, &multi) {
		for _, e := range multi.AllErrors() {
			c.add(validationPath(e.Error()))
		}
		return
	}
	c.add(validationPath(err.Error()))
}

// validationPath turns a protoc-gen-validate error chain ("invalid
// Bootstrap.StaticResources: embedded message failed validation | caused
// by: invalid Listener.Address: …") into a field path and the last
// message.
func validationPath(chain string) (path, msg string) {
	var parts []string
	for _, seg := range strings.Split(chain, " | caused by: ") {
		field, rest, ok := strings.Cut(strings.TrimPrefix(seg, "invalid "), ": ")
		if !ok {
			return strings.Join(parts, "."), "invalid: " + seg
		}
		if i := strings.LastIndexByte(field, '.'); i >= 0 {
			field = field[i+1:]
		}
		parts = append(parts, snake(field))
		msg = rest
	}
	return strings.Join(parts, "."), "invalid: " + msg
}

// snake turns a Go field name (with an index, maybe) into the protobuf
// one: StaticResources[0] → static_resources[0].
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checker walks the JSON tree of a configuration along its protobuf
// descriptors, recording problems and cutting the fields it refuses out
// of the tree (so that the rest can still be read and checked).
type checker struct {
	problems Problems
}

func (c *checker) add(path, msg string) {
	c.problems = append(c.problems, Problem{Path: path, Message: msg})
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// message checks obj as a message of type md at path.
func (c *checker) message(obj map[string]any, md protoreflect.MessageDescriptor, path string) {
	name := string(md.FullName())
	if isLeaf(name) {
		return
	}
	allowed, known := supported[name]
	if !known {
		c.add(path, fmt.Sprintf("%s is not something shunt runs", name))
		return
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	oneofs := map[protoreflect.FullName]string{} // oneof set → by which key
	for _, k := range keys {
		if k == "@type" {
			continue
		}
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		p := join(path, k)
		if fd == nil {
			c.add(p, fmt.Sprintf("unknown field: %s has no field %q", name, k))
			delete(obj, k)
			continue
		}
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			if other, set := oneofs[o.FullName()]; set {
				c.add(p, fmt.Sprintf("invalid: %s and %s are alternatives (%s): set one", other, k, o.Name()))
				delete(obj, k)
				continue
			}
			oneofs[o.FullName()] = k
		}
		if !slices.Contains(allowed, string(fd.Name())) {
			c.add(p, "not implemented by shunt (the field is Envoy's; shunt refuses what it would not honour)")
			delete(obj, k)
			continue
		}
		if v, keep := c.field(obj[k], fd, p); keep {
			obj[k] = v
		} else {
			delete(obj, k)
		}
	}
}

// field checks v as the value of fd, and returns what is left of it
// (a list without its refused elements); false drops it.
func (c *checker) field(v any, fd protoreflect.FieldDescriptor, path string) (any, bool) {
	if v == nil {
		return v, true
	}
	if fd.IsMap() {
		m, ok := v.(map[string]any)
		if !ok {
			c.add(path, "must be an object")
			return nil, false
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !c.single(m[k], fd.MapValue(), path+"."+k) {
				delete(m, k)
			}
		}
		return m, true
	}
	if !fd.IsList() {
		return v, c.single(v, fd, path)
	}
	list, ok := v.([]any)
	if !ok {
		c.add(path, "must be a list")
		return nil, false
	}
	kept := list[:0:0]
	for i, e := range list {
		if c.single(e, fd, fmt.Sprintf("%s[%d]", path, i)) {
			kept = append(kept, e)
		}
	}
	return kept, true
}

// single checks one value of fd (an element, for a list).
func (c *checker) single(v any, fd protoreflect.FieldDescriptor, path string) bool {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		key := string(fd.ContainingMessage().FullName()) + "." + string(fd.Name())
		values, restricted := enumValues[key]
		s, isName := v.(string)
		if !isName {
			if n, ok := v.(float64); ok {
				if ev := fd.Enum().Values().ByNumber(protoreflect.EnumNumber(n)); ev != nil {
					s, isName = string(ev.Name()), true
				}
			}
		}
		if restricted && isName && !slices.Contains(values, s) {
			c.add(path, fmt.Sprintf("%s is not implemented by shunt (it runs %s)", s, strings.Join(values, ", ")))
			return false
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			c.add(path, fmt.Sprintf("invalid: %v is not true or false", v))
			return false
		}
	case protoreflect.StringKind, protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			c.add(path, fmt.Sprintf("invalid: %v is not a string", v))
			return false
		}
	case protoreflect.Int32Kind, protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Uint64Kind,
		protoreflect.Sint32Kind, protoreflect.Sint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind, protoreflect.FloatKind, protoreflect.DoubleKind:
		if !isNumber(v) {
			c.add(path, fmt.Sprintf("invalid: %v is not a number", v))
			return false
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		obj, ok := v.(map[string]any)
		if !ok {
			if isLeaf(string(fd.Message().FullName())) {
				return true // a Duration's "1s", a wrapper's bare value
			}
			c.add(path, "must be an object")
			return false
		}
		md := fd.Message()
		if md.FullName() == "google.protobuf.Any" {
			return c.any(obj, path)
		}
		c.message(obj, md, path)
	}
	return true
}

// typedStructs are the wrappers of a typed_config given as a type URL
// and a value (Istio's EnvoyFilters write them so).
var typedStructs = map[string]bool{"type.googleapis.com/udpa.type.v1.TypedStruct": true, "type.googleapis.com/xds.type.v3.TypedStruct": true}

// any checks a typed_config: its @type must be an extension shunt runs.
// A TypedStruct of an Envoy type is read as what it wraps, in place
// (Istio's own filters stay TypedStructs: their types are Istio's).
func (c *checker) any(obj map[string]any, path string) bool {
	url, _ := obj["@type"].(string)
	typeURL, _ := obj["type_url"].(string)
	if typeURL == "" {
		typeURL, _ = obj["typeUrl"].(string)
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL); typedStructs[url] && err == nil {
		inner, _ := obj["value"].(map[string]any)
		clear(obj)
		for k, v := range inner {
			obj[k] = v
		}
		obj["@type"], url = typeURL, typeURL
	}
	if url == "" {
		c.add(path, "no @type")
		return false
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		c.add(join(path, "@type"), fmt.Sprintf("%s is not an extension shunt runs", strings.TrimPrefix(url, "type.googleapis.com/")))
		return false
	}
	if _, ok := supported[string(mt.Descriptor().FullName())]; !ok {
		c.add(join(path, "@type"), fmt.Sprintf("%s is not an extension shunt runs", mt.Descriptor().FullName()))
		return false
	}
	c.message(obj, mt.Descriptor(), path)
	return true
}

// isNumber says v is a JSON number, or a string protojson reads as one
// (64-bit integers, "Infinity").
func isNumber(v any) bool {
	switch n := v.(type) {
	case float64:
		return true
	case string:
		_, err := strconv.ParseFloat(n, 64)
		return err == nil || n == "Infinity" || n == "-Infinity" || n == "NaN"
	}
	return false
}

// ParseTyped reads one typed_config (an object with its @type, or a
// TypedStruct of type_url and value) as Parse reads a bootstrap's:
// Problems (their paths under path) for every field shunt refuses or
// Envoy does not know and every invalid value.
func ParseTyped(obj map[string]any, path string) (proto.Message, error) {
	c := checker{}
	if !c.any(obj, path) {
		return nil, c.problems
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, Problems{{Path: path, Message: err.Error()}}
	}
	a := &anypb.Any{}
	if err := protojson.Unmarshal(js, a); err != nil {
		c.add(path, "invalid: "+strings.TrimPrefix(err.Error(), "proto: "))
		return nil, c.problems
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		c.add(path, "invalid: "+err.Error())
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok && err == nil {
		if err := v.ValidateAll(); err != nil {
			c.add(path, "invalid: "+err.Error())
		}
	}
	if len(c.problems) > 0 {
		return nil, c.problems
	}
	return m, nil
}
