package control

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// AuthorizationPolicy is Istio's (security.istio.io): who may do what to
// a namespace's pods (its root namespace's: the mesh's), or with a
// selector some pods'.
type AuthorizationPolicy struct {
	Name, Namespace string
	Selector        map[string]string // matchLabels; nil: every pod of the namespace
	Action          string            // ALLOW, DENY, AUDIT or CUSTOM
	Rules           []AuthzRule       // ALLOW with none allows nothing
	// Problems are the fields it sets that shunt does not run.
	Problems []string
}

// AuthzRule matches a request when one of its sources, one of its
// operations and all its conditions do (a missing part matches all).
type AuthzRule struct {
	From []AuthzSource
	To   []AuthzOperation
	When []AuthzCondition
	// Unrun: it sets a field shunt does not run (a JWT's). Left out of
	// an ALLOW policy (it allows nothing, rather than more); a DENY
	// policy denies without the field (more, rather than less).
	Unrun bool
}

// AuthzSource is a rule's from.source.
type AuthzSource struct {
	Principals, NotPrincipals, Namespaces, NotNamespaces     []string
	IPBlocks, NotIPBlocks, RemoteIPBlocks, NotRemoteIPBlocks []string
}

// AuthzOperation is a rule's to.operation.
type AuthzOperation struct {
	Hosts, NotHosts, Ports, NotPorts, Methods, NotMethods, Paths, NotPaths []string
}

// AuthzCondition is a rule's when: a key and the values it must (not)
// have.
type AuthzCondition struct {
	Key               string
	Values, NotValues []string
}

var authzSchema = schema{
	"selector": schema{"matchLabels": nil}, "action": nil, "provider": nil,
	"rules": listOf{schema{
		"from": listOf{schema{"source": schema{"principals": nil, "notPrincipals": nil, "namespaces": nil, "notNamespaces": nil,
			"ipBlocks": nil, "notIpBlocks": nil, "remoteIpBlocks": nil, "notRemoteIpBlocks": nil}}},
		"to": listOf{schema{"operation": schema{"hosts": nil, "notHosts": nil, "ports": nil, "notPorts": nil,
			"methods": nil, "notMethods": nil, "paths": nil, "notPaths": nil}}},
		"when": listOf{schema{"key": nil, "values": nil, "notValues": nil}},
	}},
}

// conditionKeys are the when keys shunt runs: the request's headers
// (request.headers[name]), and the connection's source and destination.
var conditionKeys = []string{"source.ip", "remote.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"}

// AuthorizationPolicyFrom reads an AuthorizationPolicy manifest, refusing
// what Istio's validation refuses.
func AuthorizationPolicyFrom(doc []byte) (*AuthorizationPolicy, error) {
	o, problems, err := decodeObject(doc, authzSchema)
	if err != nil {
		return nil, err
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	var spec struct {
		Selector *workloadSelector
		Action   string
		Provider any
		Rules    []struct {
			From []struct{ Source AuthzSource }
			To   []struct{ Operation AuthzOperation }
			When []AuthzCondition
		}
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("AuthorizationPolicy %s: %v", name, err)
	}
	ap := &AuthorizationPolicy{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Action: spec.Action, Selector: spec.Selector.labels(), Problems: problems}
	if ap.Action == "" {
		ap.Action = "ALLOW"
	}
	switch ap.Action {
	case "ALLOW", "DENY", "AUDIT":
	case "CUSTOM":
		// An external authorizer shunt does not run: its requests are
		// denied (as Istio denies them when the provider is unknown).
		ap.Problems = append(ap.Problems, "spec.action: CUSTOM (an external authorizer) is not run: the requests it would check are denied")
	default:
		return nil, fmt.Errorf("AuthorizationPolicy %s: spec.action: %q is not ALLOW, DENY, AUDIT or CUSTOM", name, ap.Action)
	}
	for i, r := range spec.Rules {
		rule := AuthzRule{When: r.When}
		for _, f := range r.From {
			rule.From = append(rule.From, f.Source)
		}
		for j, t := range r.To {
			for k, p := range slices.Concat(t.Operation.Ports, t.Operation.NotPorts) {
				if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
					return nil, fmt.Errorf("AuthorizationPolicy %s: spec.rules[%d].to[%d].operation.ports[%d]: %q is not a port", name, i, j, k, p)
				}
			}
			rule.To = append(rule.To, t.Operation)
		}
		for j, w := range r.When {
			if !slices.Contains(conditionKeys, w.Key) && !isHeaderKey(w.Key) {
				return nil, fmt.Errorf("AuthorizationPolicy %s: spec.rules[%d].when[%d].key: %q is not a key shunt runs (request.headers[...], %s)",
					name, i, j, w.Key, strings.Join(conditionKeys, ", "))
			}
			if len(w.Values) == 0 && len(w.NotValues) == 0 {
				return nil, fmt.Errorf("AuthorizationPolicy %s: spec.rules[%d].when[%d]: values or notValues is needed", name, i, j)
			}
		}
		rule.Unrun = slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, fmt.Sprintf("spec.rules[%d].", i)) })
		ap.Rules = append(ap.Rules, rule)
	}
	return ap, nil
}

func isHeaderKey(k string) bool {
	return strings.HasPrefix(k, "request.headers[") && strings.HasSuffix(k, "]") && len(k) > len("request.headers[]")
}

// PutAuthorizationPolicy adds or replaces an AuthorizationPolicy.
func (w *World) PutAuthorizationPolicy(ap *AuthorizationPolicy) {
	w.AuthorizationPolicies[ap.Namespace+"/"+ap.Name] = ap
}

// authzFor are the policies that apply to a pod, by name: its
// namespace's (with a selector that selects it, or none), and the root
// namespace's (likewise, for pods of every namespace).
func (w *World) authzFor(pod *Pod, root string) []*AuthorizationPolicy {
	var out []*AuthorizationPolicy
	for _, key := range slices.Sorted(maps.Keys(w.AuthorizationPolicies)) {
		ap := w.AuthorizationPolicies[key]
		if (ap.Namespace == pod.Namespace || ap.Namespace == root) && labelsMatch(pod.Labels, ap.Selector) {
			out = append(out, ap)
		}
	}
	return out
}
