#!/usr/bin/env bash
# Records the flood and ICMP captures of this directory (README, "Floods and ICMP") with real
# tools between two network namespaces made here: a client/attacker (198.18.151.1,
# 2001:db8:151::1) and a server (198.18.151.2, 2001:db8:151::2, nginx on port 80, socat on 9000,
# the ICMP tunnel proxies). tcpdump runs in the server namespace on its veth. The server routes
# 198.18.0.0/15 back through the client, so answers to spoofed sources cross the wire as they
# would on a real network. Root; needs hping3, ptunnel, ptunnel-ng, nmap (nping), busybox,
# apache2-utils (ab), nginx, socat, curl, tcpdump and python3-scapy (scripts/install-deps.sh).
#   sudo dp/tests/captures/threats/floods.sh
set -euo pipefail
cd "$(dirname "$0")"
# Steps to run (default all): floods.sh 5 7 records only those.
steps=" ${*:-1 2 3 4 5 6 7} "
want() { [[ "$steps" == *" $1 "* ]]; }
saved=()
here=$(pwd)
id="fl$$"
c="$id-c" s="$id-s"
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
stop() { # stop PIDs (ptunnel clients ignore SIGTERM while their tunnel is idle)
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  # ptunnel-ng forks: end whatever still runs in the two namespaces made here, by PID
  stop "${pids[@]}" $(ip netns pids "$c" 2>/dev/null) $(ip netns pids "$s" 2>/dev/null)
  wait 2>/dev/null || true
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$c"
ip netns add "$s"
ip link add "${id}c0" netns "$c" type veth peer name "${id}s0" netns "$s"
for x in "$c ${id}c0 198.18.151.1 2001:db8:151::1" "$s ${id}s0 198.18.151.2 2001:db8:151::2"; do
  set -- $x
  ip -n "$1" link set lo up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" addr add "$4/64" dev "$2" nodad
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
done
ip -n "$s" route add 198.18.0.0/15 via 198.18.151.1

mkdir -p "$tmp/www" "$tmp/ngx"
head -c 32768 /dev/urandom > "$tmp/www/blob.bin"
printf 'hello from the flood captures\n' > "$tmp/www/index.html"
cat > "$tmp/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log;
events {}
http {
 access_log off; client_body_temp_path $tmp/ngx/body; proxy_temp_path $tmp/ngx/proxy;
 fastcgi_temp_path $tmp/ngx/fcgi; uwsgi_temp_path $tmp/ngx/uwsgi; scgi_temp_path $tmp/ngx/scgi;
 server { listen 198.18.151.2:80 backlog=4096; listen [2001:db8:151::2]:80; root $tmp/www; }
}
EOF
ip netns exec "$s" nginx -c "$tmp/ngx/nginx.conf" &
pids+=($!)
until ip netns exec "$s" ss -ltnH | grep -q '198.18.151.2:80 '; do sleep 0.1; done
sleep 2 # let IPv6 link-up chatter (MLD, router solicitations) pass before recording

# record FILE COUNT FILTER: tcpdump on the server's veth until stop_record (at most COUNT frames).
record() {
  ip netns exec "$s" tcpdump -i "${id}s0" -U -s 0 -c "$2" -w "$tmp/$1" "$3" 2>"$tmp/$1.log" &
  rec=$!
  saved+=("$1")
  until grep -q listening "$tmp/$1.log"; do sleep 0.1; done
  sleep 0.5
}
stop_record() {
  sleep 0.5
  kill -INT "$rec" 2>/dev/null || true
  wait "$rec" 2>/dev/null || true
}
cin() { ip netns exec "$c" "$@"; }

# 1. hping3 SYN flood from one address (the client's own kernel resets the SYN-ACKs).
if want 1; then
  record syn-flood-hping3.pcap 3000 tcp
  cin timeout 0.3 hping3 --flood -S -p 80 198.18.151.2 >/dev/null 2>&1 || true
  stop_record

fi

# 2. SYNs from random sources in 198.18.0.0/15 (scapy), and a client that downloaded before
#    the flood downloading again during it.
if want 2; then
  record syn-flood-spoofed.pcap 4000 tcp
  cin curl -s -o /dev/null http://198.18.151.2/blob.bin
  cin /usr/bin/python3 "$here/spoof_syn.py" "${id}c0" &
  flood=$!
  sleep 1.0
  cin curl -s -o /dev/null http://198.18.151.2/blob.bin
  wait "$flood"
  stop_record

fi

# 3. ping -f over IPv4 and IPv6.
if want 3; then
  record icmp-flood-pingf.pcap 3000 'icmp or (icmp6 and ip6[40] < 130)'
  cin ping -q -f -c 700 198.18.151.2 >/dev/null
  cin ping -q -6 -f -c 700 2001:db8:151::2 >/dev/null
  stop_record

fi

# 4. ptunnel (0.72) carrying a TCP download (nginx) and upload (socat sink) over ICMP echo; the
#    proxy's kernel also answers the echo requests, as it does by default.
if want 4; then
  ip netns exec "$s" socat -u TCP-LISTEN:9000,bind=198.18.151.2,reuseaddr,fork OPEN:/dev/null &
  pids+=($!)
  ip netns exec "$s" ptunnel -v -1 &
  pids+=($!)
  cin ptunnel -p 198.18.151.2 -lp 8000 -da 198.18.151.2 -dp 80 -v -1 &
  pids+=($!)
  cin ptunnel -p 198.18.151.2 -lp 8001 -da 198.18.151.2 -dp 9000 -v -1 &
  pids+=($!)
  sleep 1
  record icmp-tunnel-ptunnel.pcap 400 icmp
  cin curl -s -m 20 -o /dev/null http://127.0.0.1:8000/blob.bin
  head -c 16384 /dev/urandom > "$tmp/up.bin"
  cin timeout 20 socat -u "OPEN:$tmp/up.bin" TCP:127.0.0.1:8001
  sleep 1
  stop_record
  stop "${pids[@]:2}"
  pids=("${pids[@]:0:2}")

fi

# 5. ptunnel-ng (1.42) carrying a TCP download.
if want 5; then
  ip netns exec "$s" ptunnel-ng -v-1 -r198.18.151.2 -R80 -o"$tmp/ng-proxy.log" &
  pids+=($!)
  cin ptunnel-ng -p198.18.151.2 -l8002 -r198.18.151.2 -R80 -v-1 -o"$tmp/ng-client.log" &
  pids+=($!)
  sleep 1
  record icmp-tunnel-ptunnel-ng.pcap 400 icmp
  cin curl -s -m 20 -o /dev/null http://127.0.0.1:8002/blob.bin
  stop_record

fi

# 6. Benign pings: iputils (IPv4, IPv6, -s 1400, -p pattern), busybox, hping3 -1, nping, nmap -PE.
if want 6; then
  record icmp-benign.pcap 400 'icmp or (icmp6 and ip6[40] < 130)'
  cin ping -c 3 -i 0.2 198.18.151.2 >/dev/null
  cin ping -6 -c 3 -i 0.2 2001:db8:151::2 >/dev/null
  cin ping -c 3 -i 0.2 -s 1400 198.18.151.2 >/dev/null
  cin ping -c 3 -i 0.2 -p a5c3 198.18.151.2 >/dev/null
  cin busybox ping -c 3 198.18.151.2 >/dev/null
  cin busybox ping -c 2 -s 500 198.18.151.2 >/dev/null
  cin hping3 -1 -c 3 -i u200000 198.18.151.2 >/dev/null 2>&1 || true
  cin hping3 -1 -c 3 -d 100 -i u200000 198.18.151.2 >/dev/null 2>&1 || true
  cin nping --icmp -c 3 --delay 200ms 198.18.151.2 >/dev/null 2>&1 || true
  cin nmap -sn -PE -n --send-ip 198.18.151.2 >/dev/null 2>&1 || true
  cin nmap -sn -PE -n --send-ip --data-length 40 198.18.151.2 >/dev/null 2>&1 || true
  stop_record

fi

# 7. Benign TCP: curl downloads and many short connections (ab).
if want 7; then
  record http-downloads.pcap 2000 tcp
  for i in 1 2 3; do cin curl -s -o /dev/null http://198.18.151.2/blob.bin; done
  cin curl -s -o /dev/null "http://[2001:db8:151::2]/blob.bin"
  stop_record
  record http-ab.pcap 3000 tcp
  cin ab -q -n 300 -c 10 http://198.18.151.2/index.html >/dev/null
  stop_record
fi

for f in "${saved[@]}"; do
  cp "$tmp/$f" "$here/$f"
done
ls -l "$here"/*.pcap
