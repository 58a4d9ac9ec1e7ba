#!/usr/bin/python3
"""Writes ntp-mode7.pcap: NTP mode 7 (private) monlist exchanges, crafted with python3-scapy.

Debian's NTP server (ntpsec) has no mode 7 at all and ntpdc is gone, so nothing on the test
machine answers a monlist query: the requests are the bytes real tools send, the responses
are what ntpd 4.2.6 and older sent (ntp_request.c: `resp_pkt` headers, `info_monitor_1`
items of 72 bytes, at most 500 bytes of items per packet, the "more" bit on all but the last),
built with scapy's NTP layers.

Flows (client 198.18.111.1, server 198.18.111.2:123):
- port 40001: the classic amplification probe (masscan, zmap's ntp monlist probe, nmap's
  ntp-monlist): 48 bytes `17 00 03 2a` + zeros (VN 2, implementation XNTPD 3, request
  MON_GETLIST_1 42); answered by 3 packets of 6 items each (more bit on the first two).
- port 40002: the same request with implementation XNTPD_OLD (2) and MON_GETLIST (20), 8-byte
  header only; answered by an error (INFO_ERR_IMPL, no items), as a server without it does.
- port 40003: an ntpdc-style `peers` request (REQ_PEER_LIST_SUM 1, implementation 3, the
  192-byte form ntpdc sends) with no answer.
"""
import sys
from scapy.all import Ether, IP, UDP, Raw, wrpcap
from scapy.layers.ntp import NTPPrivate, NTPInfoMonitor1

C, S = "198.18.111.1", "198.18.111.2"


def frame(sport, to_server, payload, t):
    src, dst = (C, S) if to_server else (S, C)
    sp, dp = (sport, 123) if to_server else (123, sport)
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(payload)
    p.time = t
    return p


def monitor_items(first, n):
    return [
        NTPInfoMonitor1(
            lasttime=7 * k, firsttime=900 + k, lastdrop=0, count=3 + k, addr="198.18.%d.%d" % (k // 200, 10 + k % 200),
            daddr=S, flags=0, port=30000 + k, mode=3, version=4, v6_flag=0, unused1=0,
            addr6="::", daddr6="::",
        )
        for k in range(first, first + n)
    ]


def main(out):
    frames = []
    t = 1_700_000_000.0
    # 1. The 48-byte probe and a 3-packet monlist answer.
    probe = bytes([0x17, 0x00, 0x03, 0x2A]) + bytes(44)
    frames.append(frame(40001, True, probe, t))
    for seq in range(3):
        more = 1 if seq < 2 else 0
        r = NTPPrivate(response=1, more=more, version=2, mode=7, auth=0, seq=seq, implementation=3,
                       request_code=42, err=0, nb_items=6, mbz=0, data_item_size=72)
        body = bytes(r)[:8] + b"".join(bytes(i) for i in monitor_items(6 * seq, 6))
        assert len(body) == 8 + 6 * 72
        frames.append(frame(40001, False, body, t + 0.001 * (seq + 1)))
    # 2. XNTPD_OLD MON_GETLIST, header only, answered by INFO_ERR_IMPL.
    req = bytes(NTPPrivate(response=0, more=0, version=2, mode=7, implementation=2, request_code=20))[:8]
    frames.append(frame(40002, True, req, t + 1))
    err = bytes(NTPPrivate(response=1, more=0, version=2, mode=7, implementation=2, request_code=20,
                           err=1, nb_items=0, mbz=0, data_item_size=0))[:8]
    frames.append(frame(40002, False, err, t + 1.001))
    # 3. An ntpdc-style request: header, 176 bytes of data, 8 bytes of timestamp, no MAC.
    peers = bytes(NTPPrivate(response=0, more=0, version=2, mode=7, implementation=3, request_code=1))[:8] + bytes(184)
    frames.append(frame(40003, True, peers, t + 2))
    wrpcap(out, frames)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ntp-mode7.pcap")
