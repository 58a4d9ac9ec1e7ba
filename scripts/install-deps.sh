#!/usr/bin/env bash
# Installs what building and testing Warden needs on Debian 12 (run as root). Idempotent and
# quiet when everything is present. Rust itself comes from rustup (stable) and is not installed here.
set -euo pipefail

PKGS=(
  clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc libbpf-dev linux-libc-dev   # XDP program + libbpf-sys
  iproute2 ethtool iputils-ping tcpdump curl python3 procps                         # topologies, real clients/servers
  redis-server redis-tools dnsmasq-base dnsutils openssh-server openssh-client openssl  # app detection end to end
  postgresql postgresql-client mariadb-server mariadb-client nginx socat
  sqlmap sysbench                                                                   # perf/sqli/dataset.py: SQL injection rates (payloads, OLTP statements)
)

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

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: cargo not found; install Rust with rustup (stable) first" >&2
    exit 1
  fi
fi
