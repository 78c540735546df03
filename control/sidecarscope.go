package control

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Sidecar is Istio's networking.istio.io/v1 Sidecar without a workload
// selector: what a namespace's sidecars are sent, by egress hosts
// ("namespace/dnsName", "*" and "." and "~" as Istio reads them). The
// root namespace's is every namespace's default.
type Sidecar struct {
	Name, Namespace string
	Hosts           []string
	Problems        []string
	// Selected: it has a workload selector (for some pods only), which
	// shunt does not run; it is kept for its problem.
	Selected bool
}

var sidecarSchema = schema{
	"egress": listOf{schema{"hosts": nil}},
}

// SidecarFrom reads a Sidecar manifest (YAML or JSON).
func SidecarFrom(doc []byte) (*Sidecar, error) {
	o, problems, err := decodeObject(doc, sidecarSchema)
	if err != nil {
		return nil, err
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	sc := &Sidecar{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Problems: problems}
	if slices.Contains(problems, "spec.workloadSelector") {
		sc.Selected = true
		sc.Problems = []string{"spec.workloadSelector: a Sidecar for some pods is not run; give the namespace's without one"}
		return sc, nil
	}
	var spec struct {
		Egress []struct{ Hosts []string }
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("Sidecar %s: %v", name, err)
	}
	for i, e := range spec.Egress {
		for j, h := range e.Hosts {
			ns, host, ok := strings.Cut(h, "/")
			if !ok || ns == "" || host == "" {
				return nil, fmt.Errorf("Sidecar %s: spec.egress[%d].hosts[%d]: %q is not namespace/host", name, i, j, h)
			}
			sc.Hosts = append(sc.Hosts, h)
		}
	}
	return sc, nil
}

// sidecarFor is the Sidecar that scopes ns's sidecars: ns's own, else
// the root namespace's; nil: every service they see.
func (w *World) sidecarFor(ns, root string) *Sidecar {
	var rootSC *Sidecar
	for _, sc := range w.Sidecars {
		switch sc.Namespace {
		case ns:
			return sc
		case root:
			rootSC = sc
		}
	}
	return rootSC
}

// admits says whether the egress hosts let a sidecar of namespace ns
// reach s: the namespace part "*" any, "." ns, "~" none, else by name;
// the host by its FQDN, or a wildcard ("*", "*.example.com").
func (sc *Sidecar) admits(s *Service, ns string) bool {
	for _, h := range sc.Hosts {
		hns, host, _ := strings.Cut(h, "/")
		switch hns {
		case "~":
			continue
		case ".":
			hns = ns
		}
		if hns != "*" && hns != s.Namespace {
			continue
		}
		if ok, _ := path.Match(host, s.Hostname); ok {
			return true
		}
	}
	return false
}
