#!/usr/bin/env bash
# Warden demo on real traffic (run as root on Debian 12):
#   client namespace --veth-- [ a | Warden | b ] --veth-- server namespace
# A real HTTP server (python3 http.server) runs in the server namespace, real curl downloads run
# in the client namespace over IPv4 and IPv6, and Warden forwards every frame between a and b
# and prints connection reports; then a protect-mode policy is applied at runtime: HTTP on 8080
# still passes, a connection to another port is dropped and reported denied. Everything it
# creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (it creates network namespaces and attaches XDP)" >&2
  exit 1
fi
echo "== installing what the demo needs (build tools, iproute2, curl; the test suite's servers come with scripts/test.sh)"
WARDEN_DEPS=demo source ./scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building Warden (release)"
cargo build --release --quiet -p warden-dp -p warden-control
WARDEN=$PWD/target/release/warden
CTL=$PWD/target/release/wardenctl

ID="wdemo$$"
C="$ID-c" M="$ID-m" S="$ID-s"
TMP=$(mktemp -d /tmp/warden-demo.XXXXXX)
SOCK="$TMP/warden.sock"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for ns in "$C" "$M" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "== topology: $C (198.18.0.1, 2001:db8::1) -- [${ID}a | warden | ${ID}b] -- $S (198.18.0.2, 2001:db8::2)"
for ns in "$C" "$M" "$S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "${ID}c0" netns "$C" type veth peer name "${ID}a" netns "$M"
ip link add "${ID}s0" netns "$S" type veth peer name "${ID}b" netns "$M"
ip -n "$C" addr add 198.18.0.1/24 dev "${ID}c0"; ip -n "$C" addr add 2001:db8::1/64 dev "${ID}c0" nodad
ip -n "$S" addr add 198.18.0.2/24 dev "${ID}s0"; ip -n "$S" addr add 2001:db8::2/64 dev "${ID}s0" nodad
for x in "$C:${ID}c0" "$S:${ID}s0"; do
  ns=${x%%:*} dev=${x#*:}
  ip -n "$ns" link set "$dev" up
  # AF_XDP copies frames as they are: the hosts must put complete checksums on the wire.
  ip netns exec "$ns" ethtool -K "$dev" tx off >/dev/null
done
ip -n "$M" link set "${ID}a" up; ip -n "$M" link set "${ID}b" up

mkdir -p "$TMP/www"
head -c 20000000 /dev/urandom > "$TMP/www/20MB.bin"
echo "hello from the server namespace" > "$TMP/www/index.html"
ip netns exec "$S" python3 -m http.server 8080 --bind :: -d "$TMP/www" >/dev/null 2>&1 &
PIDS+=($!)

cat > "$TMP/warden.toml" <<EOT
[dataplane]
report_interval = 2
[sessions]
tcp_closed_timeout = 1
EOT
echo "== starting: warden run --inline ${ID}a:${ID}b"
ip netns exec "$M" "$WARDEN" run --config "$TMP/warden.toml" --inline "${ID}a:${ID}b" --socket "$SOCK" 2>"$TMP/warden.log" &
WPID=$!
PIDS+=($WPID)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$TMP/warden.log"; exit 1; }
"$CTL" --socket "$SOCK" interfaces

"$CTL" --socket "$SOCK" connections --follow > "$TMP/reports.txt" 2>/dev/null &
PIDS+=($!)
sleep 1

echo "== real traffic through Warden"
ip netns exec "$C" ping -c 2 -q 198.18.0.2 | tail -2
for url in http://198.18.0.2:8080/ http://198.18.0.2:8080/20MB.bin "http://[2001:db8::2]:8080/20MB.bin"; do
  ip netns exec "$C" curl -s -o /dev/null -w "curl $url -> HTTP %{http_code}, %{size_download} bytes, %{speed_download} B/s\n" "$url"
done
echo "== waiting for the connection reports"
sleep 5

echo "== wardenctl connections (report batches received while the traffic ran)"
cat "$TMP/reports.txt"
echo
echo "== policy: the server becomes workload 'web' in protect mode, only HTTP on 8080 allowed"
printf '%s\n' '[[workload]]' 'id = "web"' 'ips = ["198.18.0.2", "2001:db8::2"]' 'mode = "protect"' '' \
  '[[rule]]' 'id = 10' 'from = "any"' 'to = "web"' 'ip_proto = "tcp"' 'ports = ["8080"]' 'apps = ["http"]' \
  'action = "allow"' > "$TMP/policy.toml"
"$CTL" --socket "$SOCK" policy apply "$TMP/policy.toml"
"$CTL" --socket "$SOCK" connections --follow > "$TMP/events.txt" 2>/dev/null &
EPID=$!
ip netns exec "$S" python3 -m http.server 9090 --bind :: -d "$TMP/www" >/dev/null 2>&1 &
SPID=$!
sleep 1
ip netns exec "$C" curl -s -o /dev/null -w "curl http://198.18.0.2:8080/ (rule 10 allows it) -> HTTP %{http_code}\n" http://198.18.0.2:8080/
ip netns exec "$C" curl -s -o /dev/null --max-time 3 -w "curl http://198.18.0.2:9090/ (no rule: denied) -> HTTP %{http_code} (000: no answer)\n" http://198.18.0.2:9090/ || true
sleep 2
kill "$EPID" "$SPID" 2>/dev/null || true
grep -E "^(DENIED|VIOLATION)" "$TMP/events.txt" || echo "(no policy event seen)"
"$CTL" --socket "$SOCK" policy stats
echo
echo "== wardenctl counters"
"$CTL" --socket "$SOCK" counters
echo
echo "== stopping Warden (SIGTERM detaches XDP from both interfaces)"
kill -TERM "$WPID"; wait "$WPID" || true
tail -n 3 "$TMP/warden.log"
if ip -n "$M" -d link show "${ID}a" | grep -q prog/xdp; then echo "XDP still attached!"; exit 1; fi
echo "== done"
