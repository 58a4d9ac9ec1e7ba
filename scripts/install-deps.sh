#!/usr/bin/env bash
# Installs what building and testing Warden needs on Debian 12 (run as root). Idempotent and
# quiet when everything is present. Rust itself comes from rustup (stable) and is not installed here.
set -euo pipefail

PKGS=(
  clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc libbpf-dev linux-libc-dev   # XDP program + libbpf-sys
  libpcap-dev                          # capture filters: tcpdump expressions compiled by libpcap (the pcap crate links it)
  iproute2 ethtool iputils-ping tcpdump curl python3 procps                         # topologies, real clients/servers
  redis-server redis-tools dnsmasq-base dnsutils openssh-server openssh-client openssl  # app detection end to end
  postgresql postgresql-client mariadb-server mariadb-client nginx socat
  # e2e_apps2: memcached binary protocol (server, libmemcached tools), NTP (chronyd as server
  # and `chronyd -Q` as client; chrony replaces systemd-timesyncd where that is installed),
  # DHCP (busybox udhcpc against dnsmasq-base; busybox-static, which conflicts with busybox,
  # has the same /bin/busybox and is what container images are made of, below), and the python
  # client libraries of Kafka (kafka-python), MongoDB (pymongo) and Cassandra (DataStax
  # driver), run with /usr/bin/python3
  memcached libmemcached-tools chrony busybox-static python3-kafka python3-pymongo python3-cassandra
  zookeeper zookeeper-bin libslf4j-java default-jre-headless   # ZooKeeper server, Java CLI and C cli_mt (e2e_zookeeper)
  python3-venv python3-pip                                                    # venvs for PyPI test clients (oracledb)
  freetds-bin                                                                       # tsql: TDS client (e2e_tds)
  default-jre-headless python3-venv                                                # Spark end to end (pyspark venv below)
  tftpd-hpa tftp-hpa                                     # TFTP end to end (in.tftpd run by the test, not the service)
  sqlmap sysbench                                                                   # perf/sqli/dataset.py: SQL injection rates (payloads, OLTP statements)
  python3-scapy                        # crafted attack frames (e2e_attacks, e2e_icmp; tests/captures/attacks/make.py)
  hping3 ptunnel ptunnel-ng nmap apache2-utils  # threat captures: floods, ICMP tunnels, ab (dp/tests/captures/threats/floods.sh)
  slowhttptest apache2-utils           # tests/captures/threats/make.sh: slowloris (slow headers) and ab as the benign load
  iodine                               # DNS tunnel recordings (dp/tests/captures/threats/record-iodine.sh)
  python3-yaml                         # dp/tests/packaging.rs reads deploy/warden-daemonset.yaml
  nftables                             # e2e_evasion: at the server's ingress, a segment lost after Warden, IP fragments counted
  nfdump                               # IPFIX collector nfcapd and reader nfdump (e2e_ipfix)
  prometheus                           # e2e_metrics: a real Prometheus server scrapes `warden run --metrics` in the test's namespace
  systemd util-linux                   # systemd-analyze verify of conf/warden.service; setpriv for the non-root control client (e2e_service)
  podman runc busybox-static containernetworking-plugins  # e2e_attach, e2e_identity: Podman containers from a busybox-static rootfs (podman import), attached by name and discovered; e2e_cni: bridge + host-local CNI plugins (/usr/lib/cni) chained with warden-cni
  tshark libndpi-bin                   # perf/public: labels of the public capture set (tshark) and nDPI's verdicts (ndpiReader); e2e_capture opens Warden's pcapng with it
)

# `WARDEN_DEPS=demo`: only what building Warden and running scripts/demo.sh need (the test
# suite's servers, clients and venvs come with scripts/test.sh).
DEPS=${WARDEN_DEPS:-all}
if [ "$DEPS" = demo ]; then
  PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc libbpf-dev linux-libc-dev libpcap-dev iproute2 ethtool iputils-ping curl python3 procps)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Servers are installed for the tests to run inside their own namespaces: keep the packages
  # from starting system services on the host.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
fi

if [ "$DEPS" != demo ]; then
# Python test clients that Debian does not package, each in its own venv from PyPI.
# python-oracledb (thin mode, pure Python + cryptography wheels): the TNS end-to-end test's client.
ORACLEDB_VENV=/opt/warden-venv/oracledb
if ! "$ORACLEDB_VENV/bin/python" -c "import oracledb" >/dev/null 2>&1; then
  echo "install-deps: creating $ORACLEDB_VENV (pip install oracledb)"
  mkdir -p "$(dirname "$ORACLEDB_VENV")"
  /usr/bin/python3 -m venv "$ORACLEDB_VENV"
  "$ORACLEDB_VENV/bin/pip" install -q --disable-pip-version-check oracledb
fi

# Spark end to end: a real standalone Master and Worker from pyspark's jars (PyPI, ~400 MB),
# in a venv of their own. Override the location with WARDEN_TEST_VENV.
venv="${WARDEN_TEST_VENV:-/opt/warden-test-venv}"
if ! "$venv/bin/python" -c 'import pyspark' >/dev/null 2>&1; then
  echo "install-deps: installing pyspark into $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pyspark >/dev/null
fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: cargo not found; install Rust with rustup (stable) first" >&2
    exit 1
  fi
fi

# cargo-deb builds the Debian package (scripts/package.sh; dp/tests/packaging.rs builds it,
# installs it with apt and purges it). `cargo install` compiles it: about 2 minutes.
if [ "$DEPS" != demo ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-deb (cargo install, about 2 minutes)"
  cargo install --locked --quiet cargo-deb
fi
