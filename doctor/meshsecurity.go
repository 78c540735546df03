package doctor

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/shunt-dev/shunt/sidecar"
)

// meshSecurityCheck reads, from the sidecar's /config_dump, the mutual
// TLS mode its inbound side is in, per port, and the authorization
// policies it enforces.
func meshSecurityCheck(ns string) Check {
	return meshSecurityFrom(adminClient(ns), fmt.Sprintf("http://127.0.0.1:%d/config_dump", sidecar.AdminPort))
}

// inboundPort is what a port's inbound chains take.
type inboundPort struct{ mtls, plain, refused bool }

// policyName is Istio's RBAC policy naming: ns[NS]-policy[NAME]-rule[N].
var policyName = regexp.MustCompile(`^ns\[([^\]]*)\]-policy\[([^\]]*)\]-rule\[\d+\]$`)

func meshSecurityFrom(client *http.Client, url string) Check {
	c := Check{Name: "mesh security"}
	var dump map[string]any
	if !askAdmin(&c, client, url, "the sidecar has no /config_dump", &dump) {
		return c
	}
	var chains []any
	walk(dump, func(m map[string]any) {
		if m["name"] == "virtualInbound" {
			if fcs, ok := m["filter_chains"].([]any); ok {
				chains = fcs
			}
		}
	})
	if chains == nil {
		c.Status, c.Detail = Info, "no inbound listener (virtualInbound) in the sidecar's configuration"
		return c
	}
	ports := map[string]*inboundPort{}
	policies := map[string]string{} // namespace/name → action
	for _, fc := range chains {
		chain, _ := fc.(map[string]any)
		match, _ := chain["filter_chain_match"].(map[string]any)
		port := "the rest"
		if p, ok := match["destination_port"]; ok {
			port = fmt.Sprint(p)
		}
		st := ports[port]
		if st == nil {
			st = &inboundPort{}
			ports[port] = st
		}
		_, tlsSocket := chain["transport_socket"]
		name, _ := chain["name"].(string)
		switch {
		case tlsSocket:
			st.mtls = true
		case strings.Contains(name, "-refused-"):
			st.refused = true
		default:
			st.plain = true
		}
		walk(chain, func(m map[string]any) {
			rules, ok := m["rules"].(map[string]any)
			if !ok {
				return
			}
			action, _ := rules["action"].(string)
			if action == "" {
				action = "ALLOW"
			}
			pols, _ := rules["policies"].(map[string]any)
			for key := range pols {
				if g := policyName.FindStringSubmatch(key); g != nil {
					policies[g[1]+"/"+g[2]] = map[string]string{"DENY": "DENY", "ALLOW": "ALLOW", "LOG": "AUDIT"}[action]
				}
			}
		})
	}
	var modes []string
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		st := ports[port]
		mode := "DISABLE (plaintext)"
		switch {
		case st.mtls && st.plain:
			mode = "PERMISSIVE"
		case st.mtls:
			mode = "STRICT"
		}
		modes = append(modes, port+": "+mode)
	}
	var pols []string
	for _, key := range slices.Sorted(maps.Keys(policies)) {
		pols = append(pols, policies[key]+" "+key)
	}
	if len(pols) == 0 {
		pols = []string{"none"}
	}
	c.Status, c.Detail = Pass, fmt.Sprintf("inbound mutual TLS: %s; authorization policies: %s", strings.Join(modes, ", "), strings.Join(pols, ", "))
	return c
}

// walk calls fn on every object in v, depth first.
func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, k := range slices.Sorted(maps.Keys(x)) {
			walk(x[k], fn)
		}
	case []any:
		for _, e := range x {
			walk(e, fn)
		}
	}
}
