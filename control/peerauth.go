package control

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// MTLSMode is a PeerAuthentication's mutual TLS mode for inbound
// traffic: "" (UNSET) takes the parent's.
type MTLSMode string

// Istio's modes.
const (
	MTLSUnset      MTLSMode = ""
	MTLSDisable    MTLSMode = "DISABLE"
	MTLSPermissive MTLSMode = "PERMISSIVE"
	MTLSStrict     MTLSMode = "STRICT"
)

// PeerAuthentication is Istio's (security.istio.io): the mutual TLS mode
// of the inbound traffic of a namespace's pods (its root namespace's:
// the whole mesh's), or with a selector of some pods, per port if it
// says.
type PeerAuthentication struct {
	Name, Namespace string
	Selector        map[string]string // matchLabels; nil: every pod of the namespace
	Mode            MTLSMode
	PortModes       map[uint16]MTLSMode
	// Problems are the fields it sets that shunt does not run.
	Problems []string
}

var peerAuthSchema = schema{"selector": schema{"matchLabels": nil}, "mtls": schema{"mode": nil}, "portLevelMtls": nil}

// PeerAuthenticationFrom reads a PeerAuthentication manifest, refusing
// what Istio's validation refuses.
func PeerAuthenticationFrom(doc []byte) (*PeerAuthentication, error) {
	o, problems, err := decodeObject(doc, peerAuthSchema)
	if err != nil {
		return nil, err
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	var spec struct {
		Selector *workloadSelector
		MTLS     *struct{ Mode string }
		// PortLevelMtls is by port number.
		PortLevelMtls map[string]struct{ Mode string } `json:"portLevelMtls"`
	}
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("PeerAuthentication %s: %v", name, err)
	}
	pa := &PeerAuthentication{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Selector: spec.Selector.labels(), Problems: problems}
	if spec.MTLS != nil {
		if pa.Mode, err = mtlsMode(spec.MTLS.Mode, "spec.mtls.mode"); err != nil {
			return nil, fmt.Errorf("PeerAuthentication %s: %v", name, err)
		}
	}
	if len(spec.PortLevelMtls) > 0 && len(pa.Selector) == 0 {
		return nil, fmt.Errorf("PeerAuthentication %s: spec.portLevelMtls: needs a selector (Istio's validation: port-level modes are a workload's)", name)
	}
	for _, k := range slices.Sorted(maps.Keys(spec.PortLevelMtls)) {
		port, err := strconv.ParseUint(k, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("PeerAuthentication %s: spec.portLevelMtls.%s: not a port number", name, k)
		}
		m, err := mtlsMode(spec.PortLevelMtls[k].Mode, "spec.portLevelMtls."+k+".mode")
		if err != nil {
			return nil, fmt.Errorf("PeerAuthentication %s: %v", name, err)
		}
		if pa.PortModes == nil {
			pa.PortModes = map[uint16]MTLSMode{}
		}
		pa.PortModes[uint16(port)] = m
	}
	return pa, nil
}

// workloadSelector is a security policy's selector.
type workloadSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// labels are the labels it selects by: nil with no selector (every pod
// of the namespace), none for one that names none.
func (s *workloadSelector) labels() map[string]string {
	switch {
	case s == nil:
		return nil
	case s.MatchLabels == nil:
		return map[string]string{}
	}
	return s.MatchLabels
}

func mtlsMode(s, path string) (MTLSMode, error) {
	switch m := MTLSMode(s); m {
	case "UNSET":
		return MTLSUnset, nil
	case MTLSUnset, MTLSDisable, MTLSPermissive, MTLSStrict:
		return m, nil
	}
	return "", fmt.Errorf("%s: %q is not UNSET, DISABLE, PERMISSIVE or STRICT", path, s)
}

// PutPeerAuthentication adds or replaces a PeerAuthentication.
func (w *World) PutPeerAuthentication(pa *PeerAuthentication) {
	w.PeerAuthentications[pa.Namespace+"/"+pa.Name] = pa
}

// inboundMTLS is the mode of a pod's inbound traffic to port, as Istio
// resolves it: the pod's own policy (a selector that selects it; of
// several, the first by name, where Istio takes the oldest) for the
// port, else for all its ports; else the namespace's; else the root
// namespace's (the mesh's); else PERMISSIVE. UNSET defers each time to
// the next.
func (w *World) inboundMTLS(pod *Pod, port uint16, root string) MTLSMode {
	var workload, namespace, mesh *PeerAuthentication
	for _, key := range slices.Sorted(maps.Keys(w.PeerAuthentications)) {
		pa := w.PeerAuthentications[key]
		switch {
		case pa.Namespace == pod.Namespace && pa.Selector != nil:
			if workload == nil && labelsMatch(pod.Labels, pa.Selector) {
				workload = pa
			}
		case pa.Namespace == pod.Namespace:
			if namespace == nil {
				namespace = pa
			}
		case pa.Namespace == root && pa.Selector == nil:
			if mesh == nil {
				mesh = pa
			}
		}
	}
	if workload != nil {
		if m := workload.PortModes[port]; m != MTLSUnset {
			return m
		}
	}
	for _, pa := range []*PeerAuthentication{workload, namespace, mesh} {
		if pa != nil && pa.Mode != MTLSUnset {
			return pa.Mode
		}
	}
	return MTLSPermissive
}
