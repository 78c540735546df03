package install_test

import (
	"github.com/shunt-dev/shunt/internal/kernelpod"
	"net/netip"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/install"
)

// kubeProxyTable is a kube-proxy-like nftables table the pod holds before
// shunt runs.
const kubeProxyTable = `table ip kube-proxy {
	chain services {
		type nat hook output priority -110; policy accept;
		ip daddr 10.96.0.1 tcp dport 443 dnat to 10.1.0.1:6443
	}
}
`

// userRules are a user's iptables rules, in the backend's iptables (or
// iptables-nft's for the native backend), both families.
const userRules = `*nat
:USER-CHAIN - [0:0]
-A OUTPUT -d 198.51.100.0/24 -j USER-CHAIN
-A USER-CHAIN -j RETURN
COMMIT
*mangle
-A PREROUTING -i eth1 -j MARK --set-xmark 0x7/0xffffffff
COMMIT
`

// wide is a configuration with every axis on: TPROXY, DNS, dual-stack,
// drop-invalid, exclusions.
func wide() capture.Config {
	c := kernelpod.DualSeed()
	c.InboundMode = capture.ModeTProxy
	c.RedirectDNS = true
	c.DNSServers = []netip.Addr{kernelpod.PeerIP, kernelpod.PeerIP6}
	c.DropInvalid = true
	c.ExcludeInterfaces = []string{"eth1"}
	c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32"), netip.MustParsePrefix("fd00:96::1/128")}
	return c
}

// TestKernelLifecycle: apply, re-apply (a no-op), a different
// configuration (refused untouched without --reconcile, replaced with it),
// and cleanup, with a kube-proxy-like nftables table, a user's iptables
// rules and a user's policy rule in the pod: afterwards the kernel holds
// exactly what it held before.
func TestKernelLifecycle(t *testing.T) {
	for _, b := range kernelpod.Backends {
		t.Run(b, func(t *testing.T) {
			p := kernelpod.New(t, b)
			ipt := b
			if b == "nft" {
				ipt = "iptables-nft"
			}
			p.NS.Run(t, "sh", "-c", "nft -f - <<'EOF'\n"+kubeProxyTable+"EOF")
			p.NS.Run(t, "sh", "-c", ipt+"-restore --noflush <<'EOF'\n"+userRules+"EOF")
			p.NS.Run(t, "sh", "-c", "ip6"+ipt[2:]+"-restore --noflush <<'EOF'\n"+
				strings.ReplaceAll(userRules, "198.51.100.0/24", "2001:db8::/32")+"EOF")
			p.NS.Run(t, "ip", "rule", "add", "fwmark", "7", "lookup", "77")
			before := p.State(t)

			a, other := wide(), wide()
			other.InboundMode, other.RedirectDNS = capture.ModeRedirect, false
			if res := p.MustSync(t, a, false, false); !res.Changed {
				t.Fatal("the first apply changed nothing")
			}
			applied := p.State(t)
			if res := p.MustSync(t, a, false, false); res.Changed {
				t.Errorf("re-apply was not a no-op; it ran:\n%s", res.Transaction)
			}
			if _, err := p.Sync(t, other, false, false); !install.IsDrift(err) {
				t.Fatalf("a different configuration without --reconcile: got %v, want a drift error", err)
			}
			if now := p.State(t); now != applied {
				t.Fatalf("a refused apply changed the kernel:\n%s", now)
			}
			if res := p.MustSync(t, other, false, true); !res.Changed {
				t.Fatal("reconcile changed nothing")
			}
			kernelpod.ExpectReply(t, p.Peer, netip.Addr{}, kernelpod.AP("10.1.0.5", 8080), 0, 0, "in 10.1.0.5:8080")
			if res := p.MustSync(t, other, false, false); res.Changed {
				t.Errorf("re-apply after reconcile was not a no-op:\n%s", res.Transaction)
			}
			p.MustSync(t, a, false, true)
			if res := p.MustSync(t, a, true, false); !res.Changed {
				t.Fatal("cleanup changed nothing")
			}
			if after := p.State(t); after != before {
				t.Errorf("cleanup did not restore the kernel:\n%s", kernelpod.LineDiff(before, after))
			}
			if res := p.MustSync(t, a, true, false); res.Changed {
				t.Errorf("a second cleanup was not a no-op:\n%s", res.Transaction)
			}
		})
	}
}
