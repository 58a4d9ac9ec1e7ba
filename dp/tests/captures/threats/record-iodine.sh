#!/usr/bin/env bash
# Records iodine (Debian iodine 0.7.0) DNS tunnels in two test-owned network namespaces
# (198.18.0.0/15 only, no default route; everything removed at the end).
#
#   client ns  198.18.50.2 ── veth ── 198.18.50.1  server ns
#                                     dnsmasq :53 (forwards t.test to iodined :5300)
#                                     iodined :5300, tunnel 198.19.10.1/27
#
# Usage: record-iodine.sh OUT.pcap [iodine client options...]
#   e.g. record-iodine.sh iodine-null.pcap -T NULL
#        record-iodine.sh iodine-direct.pcap direct   (client asks iodined itself on :53)
# The capture is taken on the client's veth: what Warden sees next to the workload. Through
# the tunnel the client pings the server (20 × 200 bytes) and uploads 6000 random bytes.
set -euo pipefail
out=$(realpath -m "$1"); shift
direct=""
if [ "${1:-}" = direct ]; then direct=1; shift; fi
id=h15dns$$
c=$id-c; s=$id-s
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$c"; ip netns add "$s"
ip link add "${id}a" netns "$c" type veth peer name "${id}b" netns "$s"
ip -n "$c" addr add 198.18.50.2/24 dev "${id}a"; ip -n "$c" link set "${id}a" up; ip -n "$c" link set lo up
ip -n "$s" addr add 198.18.50.1/24 dev "${id}b"; ip -n "$s" link set "${id}b" up; ip -n "$s" link set lo up
# Checksums as sent (no offload), so the capture replays as valid frames.
ip netns exec "$c" ethtool -K "${id}a" tx off >/dev/null 2>&1 || true
ip netns exec "$s" ethtool -K "${id}b" tx off >/dev/null 2>&1 || true

port=5300; [ -n "$direct" ] && port=53
ip netns exec "$s" iodined -f -c -P warden-test -l 198.18.50.1 -p "$port" -d "${id}t" 198.19.10.1/27 t.test \
  >"$tmp/iodined.log" 2>&1 & pids+=($!)
if [ -z "$direct" ]; then
  ip netns exec "$s" dnsmasq -k --no-resolv --no-hosts --conf-file=/dev/null --listen-address=198.18.50.1 \
    --bind-interfaces --port=53 --server=/t.test/198.18.50.1#5300 --pid-file="$tmp/dnsmasq.pid" \
    >"$tmp/dnsmasq.log" 2>&1 & pids+=($!)
fi
sleep 1
ip netns exec "$c" tcpdump -i "${id}a" -s 0 -U -w "$out" 'udp port 53' >"$tmp/tcpdump.log" 2>&1 & pids+=($!)
sleep 1
ip netns exec "$c" iodine -f -r -P warden-test -d "${id}u" "$@" 198.18.50.1 t.test >"$tmp/iodine.log" 2>&1 & pids+=($!)
for _ in $(seq 60); do
  grep -q "Connection setup complete" "$tmp/iodine.log" && break
  sleep 0.5
done
grep -q "Connection setup complete" "$tmp/iodine.log" || { cat "$tmp/iodine.log" "$tmp/iodined.log"; exit 1; }
ip netns exec "$c" ping -q -c 20 -i 0.2 -s 200 198.19.10.1 || true
ip netns exec "$s" socat -u TCP-LISTEN:9000,bind=198.19.10.1,reuseaddr OPEN:"$tmp/received",creat >/dev/null 2>&1 & pids+=($!)
sleep 0.5
head -c 6000 /dev/urandom > "$tmp/sent"
timeout 60 ip netns exec "$c" socat -u FILE:"$tmp/sent" TCP:198.19.10.1:9000 || true
sleep 1
echo "iodine: $(grep -E 'Using|Switching|encoding|fragsize' "$tmp/iodine.log" | tr '\n' ';')"
echo "received $(stat -c %s "$tmp/received" 2>/dev/null || echo 0) of 6000 bytes"
