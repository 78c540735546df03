package control

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// IstioGateway is Istio's networking.istio.io Gateway: the servers the
// gateway pods its selector picks (in any namespace, as Istio's default)
// open, and the hosts VirtualServices bound to it may route there.
type IstioGateway struct {
	Name, Namespace string
	Selector        map[string]string
	Servers         []IstioServer
	// Problems are what of it is not run, with why.
	Problems []string
}

// IstioServer is one of a Gateway's servers: a port, its protocol and
// the hosts it admits (host, *.domain, *, each maybe behind ns/, ./ or
// */).
type IstioServer struct {
	Index    int // in spec.servers
	Port     uint16
	Name     string
	Protocol string
	Hosts    []string
	// An HTTPS server terminates TLS (mode SIMPLE) with the TLS Secret
	// Credential of the gateway pod's namespace, or the gateway's files
	// CertFile and KeyFile.
	Credential, CertFile, KeyFile string
	// ClientCA: a MUTUAL server requires a client certificate, checked
	// against the Secret's ca.crt or the file CAFile.
	ClientCA bool
	CAFile   string
	// Mesh: the server takes the mesh's mutual TLS (ISTIO_MUTUAL): the
	// gateway's workload certificate, the client's checked against the
	// mesh's trust bundle (sidecars sending to an egress gateway).
	Mesh bool
	// HTTPSRedirect: an HTTP server answers every request with a 301 to
	// its https:// URL.
	HTTPSRedirect bool
	// Passthrough: a TLS (or HTTPS) server in mode PASSTHROUGH sends a
	// connection on unopened by its SNI, as the VirtualServices' tls
	// routes bound to it say; a TCP server (L4) as their tcp routes say.
	Passthrough bool
}

// l4 says a server routes connections, not requests: by tls or tcp
// routes.
func (s IstioServer) l4() bool { return s.Passthrough || s.Protocol == "TCP" }

var istioGatewaySchema = schema{
	"selector": nil,
	"servers": listOf{schema{"port": schema{"number": nil, "name": nil, "protocol": nil, "targetPort": nil},
		"hosts": nil, "name": nil, "bind": nil, "defaultEndpoint": nil,
		"tls": schema{"httpsRedirect": nil, "mode": nil, "credentialName": nil, "serverCertificate": nil, "privateKey": nil, "caCertificates": nil}}},
}

// IstioGatewayFrom reads an Istio Gateway manifest.
func IstioGatewayFrom(doc []byte) (*IstioGateway, error) {
	o, problems, err := decodeObject(doc, istioGatewaySchema)
	if err != nil {
		return nil, err
	}
	var spec struct {
		Selector map[string]string
		Servers  []struct {
			Port struct {
				Number         uint16
				Name, Protocol string
				TargetPort     uint16
			}
			Hosts           []string
			Name            string
			TLS             *istioServerTLS
			Bind            string
			DefaultEndpoint string
		}
	}
	name := o.Metadata.Namespace + "/" + o.Metadata.Name
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return nil, fmt.Errorf("Gateway %s: %v", name, err)
	}
	g := &IstioGateway{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Selector: spec.Selector, Problems: problems}
	for i, s := range spec.Servers {
		path := fmt.Sprintf("spec.servers[%d]", i)
		if s.Port.Number == 0 || len(s.Hosts) == 0 {
			return nil, fmt.Errorf("Gateway %s: %s: a server needs a port number and hosts", name, path)
		}
		srv := IstioServer{Index: i, Port: s.Port.Number, Name: s.Port.Name, Protocol: strings.ToUpper(s.Port.Protocol), Hosts: s.Hosts}
		if problem := srv.readTLS(s.TLS); problem != "" {
			g.Problems = append(g.Problems, path+"."+problem)
			continue
		}
		for _, f := range []struct{ field, value string }{{"bind", s.Bind}, {"defaultEndpoint", s.DefaultEndpoint}} {
			if f.value != "" {
				g.Problems = append(g.Problems, fmt.Sprintf("%s.%s: not run by shunt", path, f.field))
			}
		}
		if s.Port.TargetPort != 0 {
			g.Problems = append(g.Problems, fmt.Sprintf("%s.port.targetPort: not run by shunt (the gateway listens on the port's number)", path))
		}
		g.Servers = append(g.Servers, srv)
	}
	return g, nil
}

// istioServerTLS is a server's tls, the fields shunt runs.
type istioServerTLS struct {
	HTTPSRedirect                                       bool `json:"httpsRedirect"`
	Mode, CredentialName, ServerCertificate, PrivateKey string
	CACertificates                                      string
}

// readTLS takes a server's tls settings, as Istio reads them: an HTTP
// server's httpsRedirect; an HTTPS server's certificate (SIMPLE), and
// its clients' CA (MUTUAL), or the mesh's (ISTIO_MUTUAL). What
// shunt does not run is the problem returned (field: why), the server
// then left out.
func (srv *IstioServer) readTLS(t *istioServerTLS) string {
	switch {
	case srv.Protocol == "HTTP" || srv.Protocol == "HTTP2" || srv.Protocol == "GRPC":
		srv.HTTPSRedirect = t != nil && t.HTTPSRedirect
		if t != nil && (t.Mode != "" || t.CredentialName != "" || t.ServerCertificate != "") {
			return "tls: an HTTP server takes httpsRedirect alone"
		}
	case srv.Protocol == "TCP":
		if t != nil {
			return "tls: a TCP server takes none"
		}
	case srv.Protocol != "HTTPS" && srv.Protocol != "TLS":
		return fmt.Sprintf("port.protocol: %s is not run by shunt yet (HTTP, HTTP2, GRPC, HTTPS, TLS and TCP are)", srv.Protocol)
	case t == nil:
		return fmt.Sprintf("tls: an %s server needs its tls settings", srv.Protocol)
	case t.Mode == "" || t.Mode == "PASSTHROUGH":
		srv.Passthrough = true
	case srv.Protocol == "TLS":
		return fmt.Sprintf("tls.mode: %s on a TLS server (TLS terminated, then tcp routes) is not run by shunt yet (PASSTHROUGH is)", t.Mode)
	case t.Mode == "ISTIO_MUTUAL":
		srv.Mesh = true
	case t.Mode != "SIMPLE" && t.Mode != "MUTUAL":
		return fmt.Sprintf("tls.mode: %s is not run by shunt yet (SIMPLE, MUTUAL, ISTIO_MUTUAL and PASSTHROUGH are)", t.Mode)
	case t.CredentialName != "":
		srv.Credential = t.CredentialName
	case t.ServerCertificate != "" && t.PrivateKey != "" && (t.Mode == "SIMPLE" || t.CACertificates != ""):
		srv.CertFile, srv.KeyFile, srv.CAFile = t.ServerCertificate, t.PrivateKey, t.CACertificates
	case t.Mode == "MUTUAL":
		return "tls: MUTUAL needs credentialName, or serverCertificate, privateKey and caCertificates"
	default:
		return "tls: SIMPLE needs credentialName, or serverCertificate and privateKey"
	}
	srv.ClientCA = t != nil && t.Mode == "MUTUAL"
	return ""
}

// PutIstioGateway adds or replaces an Istio Gateway.
func (w *World) PutIstioGateway(g *IstioGateway) { w.IstioGateways[g.Namespace+"/"+g.Name] = g }

// istioGatewaysOf are the Istio Gateways (namespace/name, in order) whose
// selector picks a gateway's pod, labelled labels.
func (w *World) istioGatewaysOf(labels map[string]string) []string {
	var out []string
	for _, key := range slices.Sorted(maps.Keys(w.IstioGateways)) {
		if g := w.IstioGateways[key]; len(g.Selector) > 0 && labelsMatch(labels, g.Selector) {
			out = append(out, key)
		}
	}
	return out
}

// admitsHost says a server takes a VirtualService's host from namespace
// ns, as Istio reads its hosts: [NS/]HOST, NS "*" any, "." the
// Gateway's own; HOST exact, *.DOMAIN a suffix, * any.
func (s IstioServer) admitsHost(host, vsNamespace, gwNamespace string) bool {
	return slices.ContainsFunc(s.Hosts, func(h string) bool {
		ns, name, qualified := strings.Cut(h, "/")
		if !qualified {
			name, ns = ns, "*"
		}
		if ns == "." {
			ns = gwNamespace
		}
		if ns != "*" && ns != vsNamespace {
			return false
		}
		return hostCovers(name, host)
	})
}

// hostCovers says a (maybe wildcard) host admits another: * any,
// *.domain a host under it (or a narrower wildcard), else the same.
func hostCovers(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

// forMesh says the sidecars take a VirtualService (gateways names
// "mesh").
func (vs *VirtualService) forMesh() bool {
	return len(vs.Gateways) == 0 || slices.Contains(vs.Gateways, "mesh")
}

// gatewayRules are a VirtualService's rules as gateway gw (namespace/
// name) takes them: the matches bound to it (by their gateways, else the
// VirtualService's); a rule left with none is left out.
func (vs *VirtualService) gatewayRules(gw string) []RouteRule {
	var out []RouteRule
	for _, r := range vs.GatewayHTTP {
		var ms []HTTPMatch
		for _, m := range r.Match {
			if slices.Contains(m.Gateways, gw) || len(m.Gateways) == 0 && slices.Contains(vs.Gateways, gw) {
				ms = append(ms, m)
			}
		}
		if len(r.Match) == 0 && slices.Contains(vs.Gateways, gw) {
			out = append(out, r)
		} else if len(ms) > 0 {
			r.Match = ms
			out = append(out, r)
		}
	}
	return out
}

// qualifyGateways are a VirtualService's gateways as namespace/name
// (a bare name is in its namespace), "mesh" kept.
func qualifyGateways(gws []string, ns string) []string {
	out := make([]string, 0, len(gws))
	for _, g := range gws {
		if g != "mesh" && !strings.Contains(g, "/") {
			g = ns + "/" + g
		}
		out = append(out, g)
	}
	return out
}
