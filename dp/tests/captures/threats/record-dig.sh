#!/usr/bin/env bash
# Records dig (Debian dnsutils) zone-transfer and NULL queries against dnsmasq (Debian
# dnsmasq-base) authoritative for corp.test, in two test-owned network namespaces
# (198.18.0.0/15 only; removed at the end). Usage: record-dig.sh OUT.pcap
#
# In order: `dig axfr corp.test` (TCP; dnsmasq answers the zone: the client is an auth-peer),
# `dig ixfr=1 corp.test +notcp` (UDP), `dig -t NULL null.corp.test` (UDP),
# `dig +tcp -t NULL null.corp.test` (TCP), `dig www.corp.test` (UDP, benign control).
set -euo pipefail
out=$(realpath -m "$1")
id=h15dig$$
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
ip -n "$c" addr add 198.18.51.2/24 dev "${id}a"; ip -n "$c" link set "${id}a" up; ip -n "$c" link set lo up
ip -n "$s" addr add 198.18.51.1/24 dev "${id}b"; ip -n "$s" link set "${id}b" up; ip -n "$s" link set lo up
ip netns exec "$c" ethtool -K "${id}a" tx off >/dev/null 2>&1 || true
ip netns exec "$s" ethtool -K "${id}b" tx off >/dev/null 2>&1 || true
ip netns exec "$s" dnsmasq -k --no-resolv --no-hosts --conf-file=/dev/null --listen-address=198.18.51.1 \
  --bind-interfaces --port=53 --auth-server=ns.corp.test,198.18.51.1 --auth-zone=corp.test \
  --auth-peer=198.18.51.2 --host-record=ns.corp.test,198.18.51.1 --host-record=www.corp.test,198.18.0.20 \
  --host-record=db.corp.test,198.18.0.21 --txt-record=corp.test,"v=spf1 -all" --pid-file="$tmp/dnsmasq.pid" \
  >"$tmp/dnsmasq.log" 2>&1 & pids+=($!)
sleep 1
ip netns exec "$c" tcpdump -i "${id}a" -s 0 -U -w "$out" 'port 53' >"$tmp/tcpdump.log" 2>&1 & pids+=($!)
sleep 1
d() { ip netns exec "$c" dig +tries=1 +time=2 @198.18.51.1 "$@" || true; }
d axfr corp.test | grep -c -v '^;' || true
d ixfr=1 corp.test +notcp | head -3
d -t NULL null.corp.test | grep -E 'status' || true
d +tcp -t NULL null.corp.test | grep -E 'status' || true
d www.corp.test +short
sleep 1
