package control_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/control"
)

// conds is a status's conditions as TYPE=STATUS/REASON, in order.
func conds(cs []control.Condition) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Type+"="+c.Status+"/"+c.Reason)
	}
	return strings.Join(out, " ")
}

// TestGatewayStatuses: the statuses shunt gives gateway.yaml's Gateway
// and routes, as Gateway API's conformance reads them: listeners
// accepted or not by protocol, their certificates resolved or not, the
// routes attached counted; a route accepted or not by its listeners, its
// backends resolved or not permitted.
func TestGatewayStatuses(t *testing.T) {
	mesh, _ := os.ReadFile("testdata/mesh.yaml")
	gw, _ := os.ReadFile("testdata/gateway.yaml")
	w, err := control.LoadWorld(append(append(mesh, "\n---\n"...), gw...), control.DefaultDomain)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := w.GatewayStatuses()["default/public"]
	if !ok || len(w.GatewayStatuses()) != 1 {
		t.Fatalf("statuses %v, want default/public's alone", w.GatewayStatuses())
	}
	if got := conds(st.Conditions); got != "Accepted=True/Accepted Programmed=True/Programmed" {
		t.Errorf("the Gateway: %s", got)
	}
	var listeners []string
	for _, l := range st.Listeners {
		listeners = append(listeners, fmt.Sprintf("%s %v %d: %s", l.Name, l.SupportedKinds, l.AttachedRoutes, conds(l.Conditions)))
	}
	want := []string{
		"http [HTTPRoute GRPCRoute] 1: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed",
		"https [HTTPRoute GRPCRoute] 2: Accepted=True/Accepted ResolvedRefs=False/InvalidCertificateRef Programmed=True/Programmed",
		"tls [TLSRoute] 1: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed",
		"tcp [] 0: Accepted=False/UnsupportedProtocol ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid",
	}
	if strings.Join(listeners, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners:\n%s\nwant:\n%s", strings.Join(listeners, "\n"), strings.Join(want, "\n"))
	}
	routes := w.RouteStatuses()
	for key, want := range map[string]string{
		"HTTPRoute default/shop":    "Accepted=True/Accepted ResolvedRefs=False/RefNotPermitted",
		"HTTPRoute other/elsewhere": "Accepted=False/NotAllowedByListeners ResolvedRefs=False/BackendNotFound",
		"HTTPRoute default/secure":  "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
		"GRPCRoute default/cart":    "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
		"TLSRoute default/db":       "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs",
	} {
		if ps := routes[key]; len(ps) != 1 || conds(ps[0].Conditions) != want {
			t.Errorf("%s: %v, want %s", key, ps, want)
		}
	}
}
