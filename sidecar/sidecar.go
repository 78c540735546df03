// Package sidecar holds the ports and identities that the capture rules, the
// proxy and the injector must agree on. They are Istio's, so that users and
// tools can move between the two without relearning them.
package sidecar

const (
	// OutboundPort is where captured outbound connections land (istio-iptables -p).
	OutboundPort = 15001
	// InboundPort is where captured inbound connections land (istio-iptables -z).
	InboundPort = 15006
	// TunnelPort is the inbound tunnel port that is never captured (istio-iptables -e).
	TunnelPort = 15008
	// AdminPort serves the proxy's admin API, on loopback only.
	AdminPort = 15000
	// ProbePort is where the capture validation probe listens (--iptables-probe-port).
	ProbePort = 15002
	// AgentPort serves merged metrics and the agent's endpoints.
	AgentPort = 15020
	// HealthPort serves /healthz/ready.
	HealthPort = 15021
	// DNSPort is where captured DNS queries land.
	DNSPort = 15053
	// PrometheusPort serves /stats/prometheus.
	PrometheusPort = 15090

	// ProxyUID and ProxyGID are the identity the proxy runs as; its own
	// traffic is recognised by them and never captured again.
	ProxyUID = 1337
	ProxyGID = 1337

	// InboundPassthroughSource is the address the proxy uses as the source
	// when it hands an inbound connection to the app, so that the app's side
	// of that connection is not captured again.
	InboundPassthroughSource = "127.0.0.6"
)
