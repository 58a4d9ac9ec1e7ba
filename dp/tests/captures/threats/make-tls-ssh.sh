#!/usr/bin/env bash
# Records the TLS and SSH threat captures (README.md, "TLS and SSH") between two network
# namespaces made here (client 198.18.0.1, server 198.18.0.2, one veth pair, offloads off), one
# tcpdump per capture on the server's veth. Real tools where Debian has them (openssl s_server /
# s_client 3.0, OpenSSH's ssh), tls_ssh_peers.py (python3 sockets) for the forms no packaged tool
# sends. Root; needs openssl, openssh-client, python3, tcpdump. Run from anywhere:
#   sudo dp/tests/captures/threats/make-tls-ssh.sh
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
id="tt$$"
c="$id-c" s="$id-s"
tmp=$(mktemp -d)
pids=()
spid='' tpid=
cleanup() {
  for p in "${pids[@]}" $spid $tpid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$c"
ip netns add "$s"
ip link add "${id}c0" netns "$c" type veth peer name "${id}s0" netns "$s"
for x in "$c ${id}c0 198.18.0.1" "$s ${id}s0 198.18.0.2"; do
  set -- $x
  ip -n "$1" link set lo up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
done

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 \
  -subj /CN=server.warden.test 2>/dev/null
openssl x509 -in "$tmp/cert.pem" -outform DER -out "$tmp/cert.der"
peers="/usr/bin/python3 $here/tls_ssh_peers.py"
# Debian's OpenSSL 3.0 refuses TLS 1.0/1.1 at its default security level 2 (SHA-1 signatures):
# both ends need level 0. It has no SSL 3.0 at all (built without ssl3; no -ssl3 option).
legacy='DEFAULT:@SECLEVEL=0'

server() { # PORT CMD...: starts a server in the server namespace, waits for its port
  local port=$1
  shift
  ip netns exec "$s" "$@" >"$tmp/server.log" 2>&1 &
  spid=$!
  until ip netns exec "$s" ss -ltnH | grep -q ":$port "; do sleep 0.1; done
}
record() { # FILE: starts tcpdump for the next capture
  ip netns exec "$s" tcpdump -i "${id}s0" -U -s 0 -w "$tmp/$1" tcp 2>/dev/null &
  tpid=$!
  sleep 0.5
}
finish() { # FILE: stops the server and tcpdump, keeps the capture
  sleep 0.5
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  kill -INT "$tpid"
  wait "$tpid" 2>/dev/null || true
  cp "$tmp/$1" "$here/$1"
  echo "$1: $(tcpdump -nr "$here/$1" 2>/dev/null | wc -l) frames"
}
client() { ip netns exec "$c" "$@"; }

for v in tls1 tls1_1; do
  f="openssl-$v.pcap"
  record "$f"
  server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -"$v" -cipher "$legacy" -naccept 1 -www
  printf 'GET / HTTP/1.0\r\n\r\n' | client timeout 5 openssl s_client -connect 198.18.0.2:443 -"$v" -cipher "$legacy" \
    -servername server.warden.test >"$tmp/client.log" 2>&1 || true
  grep -q "Protocol  *: TLSv1\(\.1\)\?$" "$tmp/client.log" || { cat "$tmp/client.log"; exit 1; }
  finish "$f"
done

# SSL 3.0: no packaged tool speaks it; a crafted ClientHello to OpenSSL (which refuses it), and a
# crafted SSL 3.0 server answering it.
record sslv3-hello-openssl.pcap
server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -cipher "$legacy" -naccept 1 -www
client $peers sslv3-client 198.18.0.2 443
finish sslv3-hello-openssl.pcap

record sslv3-session.pcap
server 443 $peers sslv3-server 443 "$tmp/cert.der"
client $peers sslv3-client 198.18.0.2 443
finish sslv3-session.pcap

# SSLv2-format CLIENT-HELLOs: offering TLS 1.0 (OpenSSL 3.0 still answers the SSLv2 format with a
# TLS ServerHello) and offering SSL 2.0 only.
record sslv2-format-hello-openssl.pcap
server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -tls1 -cipher "$legacy" -naccept 1 -www
client $peers sslv2-client 198.18.0.2 443 0x0301
finish sslv2-format-hello-openssl.pcap

record sslv2-hello-openssl.pcap
server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -cipher "$legacy" -naccept 1 -www
client $peers sslv2-client 198.18.0.2 443 0x0002
finish sslv2-hello-openssl.pcap

# Heartbleed request after ServerHelloDone (OpenSSL 3.0 has no heartbeat support: it answers with
# an alert).
record heartbleed-openssl.pcap
server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -tls1_1 -cipher "$legacy" -naccept 1 -www
client $peers heartbleed 198.18.0.2 443
finish heartbleed-openssl.pcap

for k in ciphers record sslv2; do
  f="overflow-$k-openssl.pcap"
  record "$f"
  server 443 openssl s_server -accept 443 -cert "$tmp/cert.pem" -key "$tmp/key.pem" -cipher "$legacy" -naccept 1 -www
  client $peers overflow 198.18.0.2 443 "$k"
  finish "$f"
done

# SSH: a 1.x-only client and a compatible ("1.99") server negotiate protocol 1; OpenSSH's ssh
# (2.0 only) against a 1.5-only server negotiates nothing.
record ssh1-compat.pcap
server 22 $peers ssh1-server 22 SSH-1.99-OpenSSH_3.9p1
client $peers ssh1-client 198.18.0.2 22 SSH-1.5-PuTTY_Release_0.52
finish ssh1-compat.pcap

record ssh1-server-openssh-client.pcap
server 22 $peers ssh1-server 22 SSH-1.5-OpenSSH_2.9p2
client timeout 5 ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -p 22 nobody@198.18.0.2 true >"$tmp/ssh.log" 2>&1 || true
grep -q "major versions differ\|Protocol major" "$tmp/ssh.log" || { cat "$tmp/ssh.log"; exit 1; }
finish ssh1-server-openssh-client.pcap
