#!/usr/bin/env bash
# Capture demo: in throwaway network namespaces, the seed's istio-init args
# make an app's connection to backend-service:10000 land on the proxy port.
# Run as root. Everything it makes is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
pod=shunt-demo-pod-$$ peer=shunt-demo-peer-$$
bin=$(mktemp -d /tmp/shunt-demo-XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$pod" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  rm -rf "$bin"
}
trap cleanup EXIT INT TERM
go build -o "$bin/shunt" ./cmd/shunt

ip netns add "$pod"; ip netns add "$peer"
ip -n "$pod" link set lo up; ip -n "$peer" link set lo up
ip -n "$pod" link add eth0 type veth peer name eth0 netns "$peer"
ip -n "$pod" addr add 10.1.0.5/24 dev eth0; ip -n "$pod" link set eth0 up
ip -n "$peer" addr add 10.1.0.1/24 dev eth0; ip -n "$peer" link set eth0 up
ip -n "$pod" route add default via 10.1.0.1
ip -n "$peer" route add local 10.96.0.0/12 dev lo     # the "cluster": backend-service is 10.96.0.10

say() { printf '\n== %s\n' "$*"; }
serve() { # serve NETNS PORT TEXT: answer every connection with TEXT
  ip netns exec "$1" python3 -c '
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("0.0.0.0",int(sys.argv[1]))); s.listen()
while True:
    c,_=s.accept(); c.sendall(sys.argv[2].encode()+b"\n"); c.close()' "$2" "$3" &
  pids+=($!)
}
serve "$peer" 10000 "backend-service answered directly"
serve "$pod" 15001 "the sidecar's port 15001 answered (captured)"
sleep 0.5
ask() { ip netns exec "$pod" python3 -c 'import socket; print(socket.create_connection(("10.96.0.10",10000),2).recv(100).decode().strip())'; }

say "before capture, the app reaches backend-service:10000 itself"
ask
say "shunt redirect -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020"
"$bin/shunt" redirect --network-namespace "/var/run/netns/$pod" -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020
say "after capture, the same connection lands on the sidecar"
ask
say "why: shunt trace of that connection"
"$bin/shunt" trace -u 1337 -i '*' -b '*' -d 15090,15021,15020 --dst 10.96.0.10 --dport 10000 --uid 101
say "the rules in the pod, each with its purpose"
ip netns exec "$pod" iptables-save -t nat | grep SHUNT_OUTPUT | head -4
say "cleanup removes exactly shunt's rules"
"$bin/shunt" redirect --network-namespace "/var/run/netns/$pod" --cleanup-only
ask
