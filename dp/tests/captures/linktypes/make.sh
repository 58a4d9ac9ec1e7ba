#!/usr/bin/env bash
# Records real traffic between two network namespaces made here (198.18.0.1/2, 2001:db8::1/2)
# three ways at once with tcpdump in the server namespace: on the server's veth (Ethernet,
# ethernet.pcap), and on the "any" device as Linux cooked v1 (sll.pcap) and v2 (sll2.pcap).
# Then make.py converts ethernet.pcap into the other link types. Root; needs curl, python3,
# dnsmasq, dig, tcpdump and python3-scapy (scripts/install-deps.sh). Run from anywhere:
#   sudo dp/tests/captures/linktypes/make.sh
set -euo pipefail
cd "$(dirname "$0")"
id="lt$$"
c="$id-c" s="$id-s"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$c"
ip netns add "$s"
ip link add "${id}c0" netns "$c" type veth peer name "${id}s0" netns "$s"
for x in "$c ${id}c0 198.18.0.1 2001:db8::1" "$s ${id}s0 198.18.0.2 2001:db8::2"; do
  set -- $x
  ip -n "$1" link set lo up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" addr add "$4/64" dev "$2" nodad
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
done
printf 'link types\n' > "$tmp/index.html"
ip netns exec "$s" python3 -m http.server 8080 --bind :: -d "$tmp" >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$s" dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces \
  --listen-address=198.18.0.2 --listen-address=2001:db8::2 --port=5300 \
  --address=/svc.test/198.18.0.77 --address=/svc.test/2001:db8::77 --pid-file= >/dev/null 2>&1 &
pids+=($!)
until ip netns exec "$s" ss -ltnH | grep -q ':8080 ' && ip netns exec "$s" ss -lunH | grep -q ':5300 '; do
  sleep 0.1
done
sleep 2 # let IPv6 link-up chatter (MLD, router solicitations) pass before recording
ip netns exec "$s" tcpdump -i "${id}s0" -U -s 0 -w "$tmp/ethernet.pcap" 2>/dev/null &
pids+=($!)
ip netns exec "$s" tcpdump -i any -U -s 0 -w "$tmp/sll.pcap" 2>/dev/null &
pids+=($!)
ip netns exec "$s" tcpdump -i any -y LINUX_SLL2 -U -s 0 -w "$tmp/sll2.pcap" 2>/dev/null &
pids+=($!)
sleep 1
ip netns exec "$c" curl -s -o /dev/null http://198.18.0.2:8080/index.html
ip netns exec "$c" curl -s -o /dev/null "http://[2001:db8::2]:8080/index.html"
ip netns exec "$c" dig +short +time=2 +tries=1 -p 5300 @198.18.0.2 web.svc.test A >/dev/null
ip netns exec "$c" dig +short +time=2 +tries=1 -p 5300 @2001:db8::2 web.svc.test AAAA >/dev/null
sleep 1
for p in "${pids[@]:2}"; do kill -INT "$p"; done
wait "${pids[@]:2}" 2>/dev/null || true
cp "$tmp/ethernet.pcap" "$tmp/sll.pcap" "$tmp/sll2.pcap" .
/usr/bin/python3 make.py
