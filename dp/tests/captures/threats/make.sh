#!/bin/bash
# make.sh [OUTDIR] — records the HTTP and MySQL threat captures of this directory (README.md,
# section "HTTP and MySQL") with real servers and clients in two network namespaces made here
# (client 198.18.0.1 and 198.18.0.3, server 198.18.0.2, /24 on one veth pair, no route
# elsewhere), removed at the end; every process started is ended by its PID.
#
# ONLY="http-slow-link mysql-benign ..." records only those captures.
#
# Needs (Debian 12): nginx, mariadb-server, mariadb-client, slowhttptest, apache2-utils (ab),
# curl, tcpdump, iproute2, python3. Run as root.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-$HERE}")
W=$(mktemp -d /tmp/w15http.XXXXXX)
chmod 755 "$W"
C_NS=w15h-c-$$; S_NS=w15h-s-$$
C_IF=w15hc$$; S_IF=w15hs$$
CLI=198.18.0.1; CLI2=198.18.0.3; SRV=198.18.0.2
PIDS=()
say() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  ip netns del "$C_NS" 2>/dev/null; ip netns del "$S_NS" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT INT TERM

ip netns add "$C_NS"; ip netns add "$S_NS"
ip link add "$C_IF" netns "$C_NS" type veth peer name "$S_IF" netns "$S_NS"
ip -n "$C_NS" addr add $CLI/24 dev "$C_IF"
ip -n "$C_NS" addr add $CLI2/24 dev "$C_IF"
ip -n "$S_NS" addr add $SRV/24 dev "$S_IF"
for ns in "$C_NS" "$S_NS"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
done
ip -n "$C_NS" link set "$C_IF" up; ip -n "$S_NS" link set "$S_IF" up
# No offloads: wire-sized segments with valid checksums in the captures.
ip netns exec "$C_NS" ethtool -K "$C_IF" tx off tso off gso off gro off >/dev/null 2>&1
ip netns exec "$S_NS" ethtool -K "$S_IF" tx off tso off gso off gro off >/dev/null 2>&1
sleep 0.5

srv_bg() { ip netns exec "$S_NS" "$@" >>"$W/server.log" 2>&1 & PIDS+=($!); }
C() { ip netns exec "$C_NS" timeout 120 "$@"; }
stop_pid() { kill -TERM "$1" 2>/dev/null; for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$1" 2>/dev/null; }
wait_listen() { for _ in $(seq 300); do [ -n "$(ip netns exec "$S_NS" ss -Hltn "sport = :$1")" ] && return 0; sleep 0.1; done; say "nothing on $1"; return 1; }

ONLY=${ONLY:-}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
CAP=""; CAPNAME=""
cap_start() { # cap_start NAME FILTER
  CAPNAME=$1; rm -f "$OUT/$1.pcap"
  ip netns exec "$S_NS" tcpdump -Z root -i "$S_IF" -s 0 -U -n -w "$OUT/$1.pcap" "$2" >"$W/tcpdump.log" 2>&1 &
  CAP=$!; PIDS+=($CAP)
  for _ in $(seq 50); do grep -q "listening on" "$W/tcpdump.log" && break; sleep 0.1; done
  sleep 0.3
}
cap_stop() { sleep "${1:-1}"; kill -INT "$CAP" 2>/dev/null; sleep 0.5; stop_pid "$CAP"; say "$CAPNAME.pcap: $(stat -c %s "$OUT/$CAPNAME.pcap") bytes"; }

# ---------------------------------------------------------------- HTTP (nginx)
mkdir -p "$W/www" "$W/nginx/tmp"
printf '<!DOCTYPE html><html><head><title>threat captures</title></head><body><p>Served by nginx.</p></body></html>\n' >"$W/www/index.html"
chmod -R a+rX "$W/www"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 512; }
http {
  access_log $W/nginx/access.log;
  client_body_temp_path $W/nginx/tmp/body; proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fcgi; uwsgi_temp_path $W/nginx/tmp/uwsgi; scgi_temp_path $W/nginx/tmp/scgi;
  keepalive_timeout 5;
  server {
    listen $SRV:80;
    root $W/www;
    location /api/ { default_type application/json; return 200 '{"ok":true}\n'; }
    location /upload { client_max_body_size 2m; return 201 "stored\n"; }
  }
}
EOF
srv_bg nginx -c "$W/nginx/nginx.conf"; NGINX=${PIDS[-1]}
wait_listen 80

if want http-smuggling; then
say "http-smuggling"
cap_start http-smuggling "tcp port 80"
C python3 "$HERE/http_client.py" $SRV 80 smuggling
cap_stop
fi

if want http-struts; then
say "http-struts"
cap_start http-struts "tcp port 80"
C python3 "$HERE/http_client.py" $SRV 80 struts
cap_stop
fi

if want http-slowloris; then
say "http-slowloris (slowhttptest slow headers, 40 connections, 30 s)"
cap_start http-slowloris "tcp port 80"
C slowhttptest -H -c 40 -r 40 -i 10 -x 24 -p 3 -l 30 -u "http://$SRV/" -t GET >"$W/slowhttptest.log" 2>&1
cap_stop 2
fi

if want http-benign; then
say "http-benign (curl, ab)"
cap_start http-benign "tcp port 80"
C curl -s -o /dev/null "http://$SRV/"
C curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data '{"id":1,"q":"${user}"}' "http://$SRV/api/orders"
C curl -s -o /dev/null -T "$W/nginx/nginx.conf" "http://$SRV/upload"
C curl -s -o /dev/null -H 'Transfer-Encoding: chunked' --data-binary @"$W/nginx/nginx.conf" "http://$SRV/upload"
C curl -s -o /dev/null -F "file=@$W/www/index.html" "http://$SRV/upload"
C curl -s -o /dev/null -o /dev/null --http1.0 "http://$SRV/" "http://$SRV/api/x"
C ab -q -n 100 -c 10 "http://$SRV/" >/dev/null
C ab -q -k -n 100 -c 5 "http://$SRV/api/status" >/dev/null
cap_stop
fi

if want http-slow-link; then
say "http-slow-link (12 concurrent 8 KB heads over a 64 kbit/s link: slow, not slowloris)"
ip netns exec "$C_NS" tc qdisc add dev "$C_IF" root tbf rate 64kbit burst 1600 latency 5s
A=$(head -c 4000 /dev/zero | tr '\0' 'a'); B=$(head -c 4000 /dev/zero | tr '\0' 'b')
cap_start http-slow-link "tcp port 80"
CURLS=()
for i in $(seq 12); do C curl -s -o /dev/null -H "Cookie: session=$A" -H "X-Prefs: $B" -H "X-Request: $i" "http://$SRV/api/slow" & CURLS+=($!); done
wait "${CURLS[@]}"
cap_stop
ip netns exec "$C_NS" tc qdisc del dev "$C_IF" root
fi
stop_pid "$NGINX"

# ---------------------------------------------------------------- MySQL (MariaDB)
if want mysql-access-denied || want mysql-benign; then
mkdir -p "$W/mysql"; chown mysql:mysql "$W/mysql"
mariadb-install-db --no-defaults --user=mysql --datadir="$W/mysql/data" --auth-root-authentication-method=normal --skip-test-db >"$W/mariadb-install.log" 2>&1
cat >"$W/mysql/init.sql" <<'EOF'
CREATE DATABASE IF NOT EXISTS shop;
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'apppass';
GRANT ALL ON shop.* TO 'app'@'%';
CREATE TABLE IF NOT EXISTS shop.items (id INT PRIMARY KEY, name VARCHAR(64));
INSERT IGNORE INTO shop.items VALUES (1,'apple'),(2,'banana');
EOF
chmod 644 "$W/mysql/init.sql"
srv_bg mariadbd --no-defaults --user=mysql --datadir="$W/mysql/data" --socket="$W/mysql/mysqld.sock" \
  --pid-file="$W/mysql/mysqld.pid" --bind-address=$SRV --port=3306 --skip-name-resolve --init-file="$W/mysql/init.sql" \
  --log-error="$W/mariadb-error.log"
MARIADB=${PIDS[-1]}
wait_listen 3306

if want mysql-access-denied; then
say "mysql-access-denied (a wrong-password loop from $CLI)"
cap_start mysql-access-denied "tcp port 3306"
for i in $(seq 20); do C mariadb -h $SRV -u app -p"wrong$i" --skip-ssl -e 'SELECT 1' shop >/dev/null 2>&1; done
cap_stop
fi

if want mysql-benign; then
say "mysql-benign (from $CLI2: two typos, then work)"
# The benign client's address: a host route to the server with $CLI2 as source.
ip -n "$C_NS" route add $SRV/32 dev "$C_IF" src $CLI2
cap_start mysql-benign "tcp port 3306"
C mariadb -h $SRV -u app -papppas --skip-ssl -e 'SELECT 1' shop >/dev/null 2>&1
C mariadb -h $SRV -u app -pappass --skip-ssl -e 'SELECT 1' shop >/dev/null 2>&1
for q in 'SELECT * FROM items' 'SELECT name FROM items WHERE id=2' 'SHOW TABLES' 'SELECT COUNT(*) FROM items'; do
  C mariadb -h $SRV -u app -papppass --skip-ssl -e "$q" shop >/dev/null
done
cap_stop
fi
stop_pid "$MARIADB"
fi
say "done: $(cd "$OUT" && ls -l ./*.pcap | awk '{print $5, $9}' | tr '\n' ' ')"
