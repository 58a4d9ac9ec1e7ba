#!/usr/bin/env bash
# Records the own-* captures of this directory (README.md): real clients and servers (Debian
# packages, scripts/install-deps.sh) in two network namespaces joined by a veth pair, client
# 198.18.12.1, server 198.18.12.2, tcpdump at the client's end. One capture per protocol, for
# the apps Zeek's and Arkime's traces do not cover. Run as root from anywhere:
#   dp/tests/captures/public/own/record.sh [name...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixtures=$(cd "$here/../../../fixtures" && pwd)
C=198.18.12.1
S=198.18.12.2
A=h11p-own-c-$$
B=h11p-own-s-$$
PY=/usr/bin/python3
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add c0 type veth peer name s0 netns "$B"
ip -n "$A" addr add $C/30 dev c0
ip -n "$B" addr add $S/30 dev s0
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set c0 up
ip -n "$B" link set s0 up
ip netns exec "$A" ping -c1 -W2 $S >/dev/null

inc() { ip netns exec "$A" "$@"; }
ins() { ip netns exec "$B" "$@"; }
bg_s() { ip netns exec "$B" "$@" >>"$tmp/server.log" 2>&1 & pids+=($!); }
wait_port() { # port [udp]
  for _ in $(seq 1 240); do
    if ins ss -Hln${2:+u}${2:-t} "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.25
  done
  echo "port $1 did not open" >&2; cat "$tmp/server.log" >&2; return 1
}
capture() { # name filter
  ip netns exec "$A" tcpdump -i c0 -s 0 -U -w "$here/own-$1.pcap" "$2" 2>/dev/null &
  tcpdump_pid=$!
  sleep 1
}
stop() { sleep 1; kill "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true; }
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

rec_echo() { # RFC 862 echo on TCP and UDP port 7: socat servers, socat clients
  bg_s socat TCP-LISTEN:7,bind=$S,reuseaddr,fork EXEC:cat
  bg_s socat UDP-RECVFROM:7,bind=$S,reuseaddr,fork EXEC:cat
  wait_port 7
  capture echo "port 7"
  printf 'hello echo server, this is a line of text\n' | inc timeout 3 socat -t1 - TCP:$S:7 >/dev/null
  printf 'a second connection with other words in it\nand a second line\n' | inc timeout 3 socat -t1 - TCP:$S:7 >/dev/null
  printf 'one datagram to the udp echo service\n' | inc timeout 3 socat -t1 - UDP:$S:7 >/dev/null
  stop; stop_servers
}

rec_couchbase() { # memcached (binary protocol only) and libmemcached's tools with --binary
  bg_s memcached -u root -l $S -p 11211 -B binary -U 0
  wait_port 11211
  capture couchbase "port 11211"
  local srv="--servers=$S:11211"
  echo "public capture value" > "$tmp/pkey"
  (cd "$tmp" && inc memccp --binary "$srv" pkey)
  inc memccat --binary "$srv" pkey >/dev/null
  inc memcstat --binary "$srv" >/dev/null
  inc memcrm --binary "$srv" pkey
  stop; stop_servers
}

rec_memcached_text() { # the same server in its text protocol: not Warden's couchbase (a negative)
  bg_s memcached -u root -l $S -p 11211 -B ascii -U 0
  wait_port 11211
  capture memcached-text "port 11211"
  echo "text protocol value" > "$tmp/tkey"
  (cd "$tmp" && inc memccp "--servers=$S:11211" tkey)
  inc memccat "--servers=$S:11211" tkey >/dev/null
  stop; stop_servers
}

rec_zookeeper() { # ZooKeeper server (Debian), the C client cli_mt, four-letter words with socat
  mkdir -p "$tmp/zk"
  printf 'tickTime=2000\ndataDir=%s\nclientPort=2181\nclientPortAddress=%s\nadmin.enableServer=false\n4lw.commands.whitelist=*\n' \
    "$tmp/zk" $S > "$tmp/zk.cfg"
  bg_s java -Xmx128m -Dzookeeper.admin.enableServer=false \
    -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$tmp/zk.cfg"
  wait_port 2181
  for _ in $(seq 1 120); do
    ins timeout 5 /usr/lib/zookeeper/bin/cli_mt $S:2181 "cmd:ls /" 2>&1 | grep -q '/: rc = 0' && break
    sleep 0.5
  done
  capture zookeeper "port 2181"
  inc timeout 20 /usr/lib/zookeeper/bin/cli_mt $S:2181 "cmd:create /public-capture" >/dev/null 2>&1
  inc timeout 20 /usr/lib/zookeeper/bin/cli_mt $S:2181 "cmd:ls /" >/dev/null 2>&1
  inc timeout 20 /usr/lib/zookeeper/bin/cli_mt $S:2181 "cmd:get /public-capture" >/dev/null 2>&1
  stop
  capture zookeeper-4lw "port 2181"
  for w in ruok srvr mntr; do printf '%s' $w | inc timeout 3 socat -t2 - TCP:$S:2181 >/dev/null; done
  stop; stop_servers
}

rec_spark() { # a Spark standalone Master and a Worker registering with it (pyspark's jars)
  local venv=${WARDEN_TEST_VENV:-/opt/warden-test-venv}
  local home
  home=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  local env=(env SPARK_HOME="$home" SPARK_LOG_DIR="$tmp/spark" SPARK_WORKER_DIR="$tmp/spark/work" SPARK_NO_DAEMONIZE=1)
  bg_s "${env[@]}" SPARK_LOCAL_IP=$S "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host $S --port 7077 --webui-port 18080
  wait_port 7077
  capture spark "port 7077"
  ip netns exec "$A" "${env[@]}" SPARK_LOCAL_IP=$C "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
    spark://$S:7077 --host $C --cores 1 --memory 512m --port 7078 --webui-port 18081 >>"$tmp/worker.log" 2>&1 &
  local worker=$!
  pids+=($worker)
  for _ in $(seq 1 240); do grep -q 'Successfully registered with master' "$tmp/worker.log" && break; sleep 0.5; done
  sleep 3
  kill "$worker"; wait "$worker" 2>/dev/null || true
  stop; stop_servers
}

sink() { bg_s socat -u TCP-LISTEN:$1,bind=$S,reuseaddr,fork OPEN:/dev/null; wait_port "$1"; }

rec_clients() { # Kafka, MongoDB and Cassandra clients (Debian's python3-* libraries) against a
  # TCP sink that never answers: the flows hold the clients' first requests only
  sink 9092; sink 27017; sink 9042
  capture clients "port 9092 or port 27017 or port 9042"
  inc timeout 20 $PY -c "
from kafka import KafkaConsumer
from kafka.errors import NoBrokersAvailable
try:
    KafkaConsumer(bootstrap_servers='$S:9092', client_id='public-capture', api_version_auto_timeout_ms=2000, request_timeout_ms=3000)
except NoBrokersAvailable:
    pass
" || true
  inc timeout 20 $PY -c "
import pymongo
c = pymongo.MongoClient('$S', 27017, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, appname='public-capture')
try:
    c.admin.command('ping')
except Exception:
    pass
" || true
  # the driver's default first frame is DSE protocol v2 (0x42); then protocol v4 as asked
  for kw in "" ", protocol_version=4"; do
    inc timeout 20 $PY -c "
from cassandra.cluster import Cluster
try:
    Cluster(['$S'], port=9042, connect_timeout=1, control_connection_timeout=1 $kw).connect()
except Exception:
    pass
" 2>/dev/null || true
  done
  stop; stop_servers
}

rec_tds() { # FreeTDS tsql (TDS 7.4, no encryption) to the project's fake SQL Server
  bg_s $PY -u "$fixtures/fake_tds_server.py" $S 1433
  wait_port 1433
  printf '[global]\n\ttds version = 7.4\n\tencryption = off\n' > "$tmp/freetds.conf"
  capture tds "port 1433"
  printf 'SELECT name FROM sys.databases\ngo\nSELECT 1\ngo\nexit\n' |
    inc env FREETDSCONF="$tmp/freetds.conf" timeout 20 tsql -H $S -p 1433 -U public -P 'pw' -D master >/dev/null 2>&1 || true
  stop; stop_servers
}

rec_tns() { # python-oracledb (thin) to the project's fake TNS listener, refused
  local py=/opt/warden-venv/oracledb/bin/python
  bg_s $PY -u "$fixtures/fake_tns_listener.py" refuse $S 1521
  wait_port 1521
  capture tns "port 1521"
  inc timeout 20 $py -c "
import oracledb
try:
    oracledb.connect(user='scott', password='tiger', dsn='$S:1521/ORCLPDB1', program='public-capture', tcp_connect_timeout=3)
except Exception:
    pass
" || true
  stop; stop_servers
}

rec_tftp() { # tftp-hpa: in.tftpd in the foreground, the tftp client reads a file
  mkdir -p "$tmp/tftp"
  head -c 3000 /usr/share/common-licenses/GPL-3 > "$tmp/tftp/notes.txt"
  bg_s in.tftpd -L -a $S:69 -s "$tmp/tftp"
  wait_port 69 u
  capture tftp "udp and host $S"
  (cd "$tmp" && inc timeout 10 tftp $S -m octet -c get notes.txt)
  stop; stop_servers
}

all=(echo couchbase memcached_text zookeeper clients tds tns tftp spark)
for r in "${@:-${all[@]}}"; do
  echo "recording $r"
  "rec_$r"
done
