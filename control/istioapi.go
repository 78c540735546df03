package control

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"sigs.k8s.io/yaml"
)

// DestinationRule is Istio's networking.istio.io/v1 DestinationRule:
// the traffic policy of a host's clusters and its subsets.
type DestinationRule struct {
	Name, Namespace string
	Host            string
	ExportTo        []string
	Policy          *TrafficPolicy
	Subsets         []Subset
	Problems        []string
}

// Subset is a named group of a host's endpoints, by pod labels.
type Subset struct {
	Name   string
	Labels map[string]string
	Policy *TrafficPolicy // over the rule's
}

// TrafficPolicy is load balancing, connection pool limits (Envoy's
// circuit breakers) and outlier detection.
type TrafficPolicy struct {
	LoadBalancer     string // ROUND_ROBIN, LEAST_REQUEST, RANDOM; "" Istio's default
	ConnectTimeout   time.Duration
	MaxConnections   uint32
	MaxPending       uint32 // http1MaxPendingRequests
	MaxRequests      uint32 // http2MaxRequests
	MaxRetries       uint32
	Pool             bool   // connectionPool is set: its limits replace the rule's
	Consecutive5xx   uint32 // outlierDetection.consecutive5xxErrors
	ConsecutiveGwErr uint32 // consecutiveGatewayErrors
	Interval         time.Duration
	BaseEjectionTime time.Duration
	MaxEjectionPct   uint32
	Outlier          bool // outlierDetection is set
	// Hash is loadBalancer.consistentHash, instead of simple.
	Hash *ConsistentHash
	// TLS is tls: the transport to the host's endpoints (nil: auto mTLS).
	TLS *ClientTLS
	// Ports are portLevelSettings: each port's policy over this one.
	Ports map[uint16]*TrafficPolicy
}

// ConsistentHash picks a request's endpoint by a hash of one of its
// header, cookie, query parameter or source IP, on a ring (Envoy's
// RING_HASH) or a Maglev table.
type ConsistentHash struct {
	Header, Cookie, QueryParam string
	SourceIP                   bool
	Maglev                     bool
	MinRingSize, TableSize     uint64
}

// schema names the fields shunt runs: a nested schema for an object,
// listOf for a list of objects, mapOf for a map of objects, nil for a
// value.
type schema map[string]any
type listOf struct{ of schema }
type mapOf struct{ of schema }

var stringMatch = schema{"exact": nil, "prefix": nil, "regex": nil}

// portPolicySchema is a traffic policy's fields for one port.
var portPolicySchema = schema{
	"port": schema{"number": nil},
	"loadBalancer": schema{"simple": nil, "consistentHash": schema{"httpHeaderName": nil, "httpCookie": schema{"name": nil},
		"useSourceIp": nil, "httpQueryParameterName": nil, "ringHash": schema{"minimumRingSize": nil},
		"maglev": schema{"tableSize": nil}, "minimumRingSize": nil}},
	"connectionPool": schema{
		"tcp":  schema{"maxConnections": nil, "connectTimeout": nil},
		"http": schema{"http1MaxPendingRequests": nil, "http2MaxRequests": nil, "maxRetries": nil}},
	"outlierDetection": schema{"consecutive5xxErrors": nil, "consecutiveGatewayErrors": nil, "interval": nil,
		"baseEjectionTime": nil, "maxEjectionPercent": nil},
	"tls": clientTLSSchema,
}

// policySchema is a traffic policy's: a port's fields, and
// portLevelSettings.
var policySchema = func() schema {
	s := schema{"portLevelSettings": listOf{portPolicySchema}}
	for k, v := range portPolicySchema {
		if k != "port" {
			s[k] = v
		}
	}
	return s
}()

var destinationRuleSchema = schema{
	"host": nil, "exportTo": nil, "trafficPolicy": policySchema,
	"subsets": listOf{schema{"name": nil, "labels": nil, "trafficPolicy": policySchema}},
}

// prune removes from v what s does not name, noting each path.
func prune(v any, s schema, path string, problems *[]string) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		sub, known := s[k]
		p := path + "." + k
		if !known {
			*problems = append(*problems, p)
			delete(m, k)
			continue
		}
		switch sub := sub.(type) {
		case schema:
			prune(m[k], sub, p, problems)
		case listOf:
			if list, ok := m[k].([]any); ok {
				for i, item := range list {
					prune(item, sub.of, fmt.Sprintf("%s[%d]", p, i), problems)
				}
			}
		case mapOf:
			if mm, ok := m[k].(map[string]any); ok {
				for key, item := range mm {
					prune(item, sub.of, p+"."+key, problems)
				}
			}
		}
	}
}

// object is a manifest's metadata and its spec, pruned to a schema.
type object struct {
	Metadata struct {
		Name, Namespace string
		Generation      int64 // the spec's version, as the API server counts them (0 from a file)
	}
	Spec json.RawMessage
}

func decodeObject(doc []byte, s schema) (object, []string, error) {
	var raw struct {
		Metadata struct {
			Name, Namespace string
			Generation      int64
		}
		Spec map[string]any
	}
	if err := yaml.Unmarshal(doc, &raw); err != nil {
		return object{}, nil, err
	}
	var problems []string
	prune(raw.Spec, s, "spec", &problems)
	spec, err := json.Marshal(raw.Spec)
	if err != nil {
		return object{}, nil, err
	}
	o := object{Spec: spec}
	o.Metadata.Name, o.Metadata.Namespace, o.Metadata.Generation = raw.Metadata.Name, raw.Metadata.Namespace, raw.Metadata.Generation
	if o.Metadata.Namespace == "" {
		o.Metadata.Namespace = "default"
	}
	return o, problems, nil
}

// parseDuration reads an Istio duration ("5s", "100ms", "1.5s").
func parseDuration(s, path string) (*time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%s: %q is not a duration", path, s)
	}
	return &d, nil
}

type jsonPolicy struct {
	LoadBalancer struct {
		Simple         string
		ConsistentHash *struct {
			HTTPHeaderName, HTTPQueryParameterName string
			HTTPCookie                             *struct{ Name string }
			UseSourceIP                            bool
			RingHash                               *struct{ MinimumRingSize uint64 }
			Maglev                                 *struct{ TableSize uint64 }
			MinimumRingSize                        uint64
		}
	}
	PortLevelSettings []struct {
		Port struct{ Number uint16 }
		jsonPolicy
	}
	ConnectionPool *struct {
		TCP struct {
			MaxConnections uint32
			ConnectTimeout string
		}
		HTTP struct {
			HTTP1MaxPendingRequests, HTTP2MaxRequests, MaxRetries uint32
		}
	}
	OutlierDetection *struct {
		Consecutive5xxErrors, ConsecutiveGatewayErrors *uint32
		Interval, BaseEjectionTime                     string
		MaxEjectionPercent                             *uint32
	}
	TLS *jsonClientTLS
}

func (p *jsonPolicy) model(path string) (*TrafficPolicy, error) {
	if p == nil {
		return nil, nil
	}
	tp := &TrafficPolicy{LoadBalancer: p.LoadBalancer.Simple}
	var err error
	if tp.TLS, err = p.TLS.model(path + ".tls"); err != nil {
		return nil, err
	}
	if cp := p.ConnectionPool; cp != nil {
		tp.Pool, tp.MaxConnections, tp.MaxPending, tp.MaxRequests, tp.MaxRetries = true, cp.TCP.MaxConnections,
			cp.HTTP.HTTP1MaxPendingRequests, cp.HTTP.HTTP2MaxRequests, cp.HTTP.MaxRetries
		d, err := parseDuration(cp.TCP.ConnectTimeout, path+".connectionPool.tcp.connectTimeout")
		if err != nil {
			return nil, err
		}
		if d != nil {
			tp.ConnectTimeout = *d
		}
	}
	switch tp.LoadBalancer {
	case "", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM":
	default:
		return nil, fmt.Errorf("%s.loadBalancer.simple: %q is not ROUND_ROBIN, LEAST_REQUEST or RANDOM", path, tp.LoadBalancer)
	}
	if ch := p.LoadBalancer.ConsistentHash; ch != nil {
		if tp.LoadBalancer != "" {
			return nil, fmt.Errorf("%s.loadBalancer: simple and consistentHash are exclusive", path)
		}
		h := &ConsistentHash{Header: ch.HTTPHeaderName, QueryParam: ch.HTTPQueryParameterName, SourceIP: ch.UseSourceIP,
			MinRingSize: ch.MinimumRingSize}
		if ch.HTTPCookie != nil {
			h.Cookie = ch.HTTPCookie.Name
		}
		if ch.RingHash != nil {
			h.MinRingSize = ch.RingHash.MinimumRingSize
		}
		if ch.Maglev != nil {
			h.Maglev, h.TableSize = true, ch.Maglev.TableSize
		}
		keys := 0
		for _, set := range []bool{h.Header != "", h.Cookie != "", h.QueryParam != "", h.SourceIP} {
			if set {
				keys++
			}
		}
		if keys != 1 {
			return nil, fmt.Errorf("%s.loadBalancer.consistentHash: one of httpHeaderName, httpCookie.name, useSourceIp and httpQueryParameterName is needed", path)
		}
		tp.Hash = h
	}
	for i, pl := range p.PortLevelSettings {
		ppath := fmt.Sprintf("%s.portLevelSettings[%d]", path, i)
		if pl.Port.Number == 0 {
			return nil, fmt.Errorf("%s.port.number: missing", ppath)
		}
		pp, err := pl.jsonPolicy.model(ppath)
		if err != nil {
			return nil, err
		}
		if tp.Ports == nil {
			tp.Ports = map[uint16]*TrafficPolicy{}
		}
		tp.Ports[pl.Port.Number] = pp
	}
	if od := p.OutlierDetection; od != nil {
		tp.Outlier = true
		// Istio's defaults: 5 consecutive 5xx, every 10s, 30s out, at most 10%.
		tp.Consecutive5xx, tp.Interval, tp.BaseEjectionTime, tp.MaxEjectionPct = 5, 10*time.Second, 30*time.Second, 10
		if od.Consecutive5xxErrors != nil {
			tp.Consecutive5xx = *od.Consecutive5xxErrors
		}
		if od.ConsecutiveGatewayErrors != nil {
			tp.ConsecutiveGwErr = *od.ConsecutiveGatewayErrors
		}
		if od.MaxEjectionPercent != nil {
			tp.MaxEjectionPct = *od.MaxEjectionPercent
		}
		for _, f := range []struct {
			s    string
			into *time.Duration
			name string
		}{{od.Interval, &tp.Interval, "interval"}, {od.BaseEjectionTime, &tp.BaseEjectionTime, "baseEjectionTime"}} {
			d, err := parseDuration(f.s, path+".outlierDetection."+f.name)
			if err != nil {
				return nil, err
			}
			if d != nil {
				*f.into = *d
			}
		}
	}
	return tp, nil
}

// DestinationRuleFrom reads a DestinationRule manifest (YAML or JSON).
func DestinationRuleFrom(doc []byte) (*DestinationRule, error) {
	o, problems, err := decodeObject(doc, destinationRuleSchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		Host          string
		ExportTo      []string
		TrafficPolicy *jsonPolicy
		Subsets       []struct {
			Name          string
			Labels        map[string]string
			TrafficPolicy *jsonPolicy
		}
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("DestinationRule %s/%s: %v", o.Metadata.Namespace, o.Metadata.Name, err)
	}
	dr := &DestinationRule{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Host: spec.Host, ExportTo: spec.ExportTo, Problems: problems}
	fail := func(err error) (*DestinationRule, error) {
		return nil, fmt.Errorf("DestinationRule %s/%s: %v", dr.Namespace, dr.Name, err)
	}
	if dr.Host == "" {
		return fail(fmt.Errorf("spec.host: missing"))
	}
	if dr.Policy, err = spec.TrafficPolicy.model("spec.trafficPolicy"); err != nil {
		return fail(err)
	}
	for i, s := range spec.Subsets {
		path := fmt.Sprintf("spec.subsets[%d]", i)
		if s.Name == "" {
			return fail(fmt.Errorf("%s.name: missing", path))
		}
		p, err := s.TrafficPolicy.model(path + ".trafficPolicy")
		if err != nil {
			return fail(err)
		}
		dr.Subsets = append(dr.Subsets, Subset{Name: s.Name, Labels: s.Labels, Policy: p})
	}
	return dr, nil
}
