#!/usr/bin/env bash
# Records own-vxlan.pcap (the underlay of a Linux VXLAN tunnel) and own-inner.pcap (the same
# traffic on the tunnel device) between two network namespaces: curl → python http.server
# (port 80) and redis-cli → redis-server (6379) over IPv4 and IPv6 inside VNI 42, plus one
# DNS query from dig to dnsmasq (53). Then wrap.py puts own-inner.pcap's frames into the
# encapsulations this kernel has no device for. Run as root from this directory; addresses:
# underlay 198.18.11.0/30, inner 198.19.11.0/24 and 2001:db8:11::/64.
set -euo pipefail
cd "$(dirname "$0")"
A=h11p-rec-a-$$
B=h11p-rec-b-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$tmp"
}
tmp=$(mktemp -d)
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add ua type veth peer name ub netns "$B"
ip -n "$A" addr add 198.18.11.1/30 dev ua
ip -n "$B" addr add 198.18.11.2/30 dev ub
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set ua up
ip -n "$B" link set ub up
ip -n "$A" link add vx type vxlan id 42 local 198.18.11.1 remote 198.18.11.2 dstport 4789 dev ua
ip -n "$B" link add vx type vxlan id 42 local 198.18.11.2 remote 198.18.11.1 dstport 4789 dev ub
ip -n "$A" link set vx address 02:00:c6:13:0b:01
ip -n "$B" link set vx address 02:00:c6:13:0b:02
ip -n "$A" addr add 198.19.11.1/24 dev vx
ip -n "$B" addr add 198.19.11.2/24 dev vx
ip -n "$A" addr add 2001:db8:11::1/64 dev vx nodad
ip -n "$B" addr add 2001:db8:11::2/64 dev vx nodad
ip -n "$A" link set vx up
ip -n "$B" link set vx up

mkdir -p "$tmp/www"
printf 'hello through the tunnel\n' > "$tmp/www/index.html"
ip netns exec "$B" /usr/bin/python3 -m http.server 80 --bind :: --directory "$tmp/www" >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$B" redis-server --port 6379 --bind "198.19.11.2 2001:db8:11::2" --protected-mode no \
  --save "" --appendonly no --dir "$tmp" >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$B" dnsmasq --no-daemon --no-resolv --no-hosts --listen-address=198.19.11.2 \
  --bind-interfaces --address=/tunnel.example/198.19.11.2 --pid-file="$tmp/dnsmasq.pid" >/dev/null 2>&1 &
pids+=($!)
sleep 1.5
ip netns exec "$A" tcpdump -i ua -w own-vxlan.pcap -U -s 0 udp port 4789 2>/dev/null &
pids+=($!)
ip netns exec "$A" tcpdump -i vx -w own-inner.pcap -U -s 0 'not arp and not icmp6' 2>/dev/null &
pids+=($!)
sleep 1
ip netns exec "$A" curl -s -o /dev/null http://198.19.11.2/
ip netns exec "$A" redis-cli -h 198.19.11.2 -p 6379 SET greeting tunnel >/dev/null
ip netns exec "$A" redis-cli -h 198.19.11.2 -p 6379 GET greeting >/dev/null
ip netns exec "$A" curl -s -o /dev/null 'http://[2001:db8:11::2]/'
ip netns exec "$A" redis-cli -h 2001:db8:11::2 -p 6379 PING >/dev/null
ip netns exec "$A" dig +short +tries=1 +time=2 @198.19.11.2 tunnel.example A >/dev/null
sleep 1
