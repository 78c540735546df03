package iptables

import (
	"github.com/shunt-dev/shunt/capture"
)

// Rules is shunt's iptables rules for both families: V4 for iptables, V6
// for ip6tables (empty without dual-stack).
type Rules struct{ V4, V6 *Ruleset }

// RenderAll renders a Plan for both families.
func RenderAll(p *capture.Plan) (Rules, error) {
	v4, err := Render(p, capture.IPv4)
	if err != nil {
		return Rules{}, err
	}
	v6, err := Render(p, capture.IPv6)
	return Rules{v4, v6}, err
}

// String is the iptables-restore input of both families, each under a
// "# iptables" or "# ip6tables" line when there is IPv6 to show.
func (r Rules) String() string {
	if r.V6 == nil || r.V6.Empty() {
		return r.V4.String()
	}
	return "# iptables-restore\n" + r.V4.String() + "# ip6tables-restore\n" + r.V6.String()
}
