#!/usr/bin/python3
"""Puts the frames of own-inner.pcap (real curl/redis-cli/dig traffic recorded by record.sh on a
VXLAN device) into the encapsulations this kernel has no device for, one capture per kind, with
the original timestamps. The tunnel headers are written here (python3-scapy for the outer
Ethernet/IP/UDP, the rest by the RFCs and vendor formats cited below); the inner frames are the
recorded bytes. Outer addresses: 198.18.11.1 ↔ 198.18.11.2, 2001:db8:ff::1 ↔ 2001:db8:ff::2; the
inner client (198.19.11.1, 2001:db8:11::1) is on the .1 side.
"""

import struct
import zlib

from scapy.all import GRE, IP, UDP, Ether, IPv6, Raw, rdpcap, wrpcap  # noqa: E402

INNER = rdpcap("own-inner.pcap")
MAC1, MAC2 = "02:00:c6:12:0b:01", "02:00:c6:12:0b:02"
V4 = ("198.18.11.1", "198.18.11.2")
V6 = ("2001:db8:ff::1", "2001:db8:ff::2")
CLIENT_MAC = "02:00:c6:13:0b:01"


def from_client(fr):
    return fr[Ether].src == CLIENT_MAC


def l3(fr):
    """The inner IP packet (bytes) and its version."""
    pl = bytes(fr[Ether].payload)
    return pl, (6 if fr[Ether].type == 0x86DD else 4)


def flow_port(fr):
    """A stable outer UDP source port per inner flow (both directions), as tunnel ends derive it
    from the inner flow hash (RFC 7348 §5, RFC 8926 §3.3)."""
    pl, _ = l3(fr)
    a, b = (pl[12:16], pl[16:20]) if fr[Ether].type == 0x0800 else (pl[8:24], pl[24:40])
    key = b"".join(sorted([a, b]))
    return 49152 + zlib.crc32(key) % 16384


def outer4(fr, proto_payload, ident, **ip):
    c = from_client(fr)
    eth = Ether(src=MAC1 if c else MAC2, dst=MAC2 if c else MAC1)
    return eth / IP(src=V4[0] if c else V4[1], dst=V4[1] if c else V4[0], id=ident, ttl=64, **ip) / proto_payload


def outer6(fr, proto_payload, nh):
    c = from_client(fr)
    eth = Ether(src=MAC1 if c else MAC2, dst=MAC2 if c else MAC1)
    return eth / IPv6(src=V6[0] if c else V6[1], dst=V6[1] if c else V6[0], nh=nh, hlim=64) / proto_payload


def write(name, make, only=None):
    out = []
    for i, fr in enumerate(INNER):
        if only and l3(fr)[1] != only:
            continue
        p = make(i, fr)
        if p is None:
            continue
        p.time = fr.time
        out.append(p)
    wrpcap(name, out)


def gre_plain(i, fr):  # RFC 2784: no optional fields
    pl, v = l3(fr)
    return outer4(fr, GRE(proto=0x86DD if v == 6 else 0x0800) / Raw(pl), i + 1, proto=47)


def gre_keyed(i, fr):  # RFC 2890: key 42 and sequence numbers per direction
    pl, v = l3(fr)
    return outer4(fr, GRE(proto=0x86DD if v == 6 else 0x0800, key_present=1, key=42, seqnum_present=1,
                          sequence_number=i + 1) / Raw(pl), i + 1, proto=47)


def gretap_keyed(i, fr):  # Transparent Ethernet Bridging (0x6558) with key 0x0100 (NVGRE-style VSID)
    return outer4(fr, GRE(proto=0x6558, key_present=1, key=0x0100 << 8) / Raw(bytes(fr)), i + 1, proto=47)


def erspan2(i, fr):
    # ERSPAN type II (draft-foschiano-erspan §4.1): GRE with sequence number, protocol 0x88be;
    # 8 bytes: ver 1 | vlan 0; cos 0, en 0 (untagged), t 0, session 7; reserved, index 0.
    hdr = struct.pack("!HHI", (1 << 12) | 0, 7, 0)
    return outer4(fr, GRE(proto=0x88BE, seqnum_present=1, sequence_number=i) / Raw(hdr + bytes(fr)), i + 1, proto=47)


def erspan3(i, fr):
    # ERSPAN type III (draft-foschiano-erspan §4.2): protocol 0x22eb, 12 bytes: ver 2 | vlan 0;
    # cos, bso, t, session 7; timestamp (100 µs units, low 32 bits); sgt 0, p 0, ft 0, hw id 5,
    # d 0 (ingress), gra 1, o 0.
    ts = int(float(fr.time) * 10000) & 0xFFFFFFFF
    hdr = struct.pack("!HHIH H", (2 << 12) | 0, 7, ts, 0, (5 << 4) | (1 << 1))
    return outer4(fr, GRE(proto=0x22EB, seqnum_present=1, sequence_number=i) / Raw(hdr + bytes(fr)), i + 1, proto=47)


def ipip(i, fr):  # RFC 2003
    pl, _ = l3(fr)
    return outer4(fr, Raw(pl), i + 1, proto=4)


def sixin4(i, fr):  # RFC 4213 §3.5: IPv4 protocol 41
    pl, _ = l3(fr)
    return outer4(fr, Raw(pl), i + 1, proto=41)


def fourin6(i, fr):  # RFC 2473: IPv6 next header 4
    pl, _ = l3(fr)
    return outer6(fr, Raw(pl), 4)


def geneve(i, fr):  # RFC 8926 §3.4: ver 0, no options, protocol 0x6558, VNI 0x2a2a, then Ethernet
    hdr = struct.pack("!BBHI", 0, 0, 0x6558, 0x2A2A << 8)
    p = UDP(sport=flow_port(fr), dport=6081, chksum=0) / Raw(hdr + bytes(fr))
    return outer4(fr, p, i + 1, proto=17)


def gtpu(i, fr):  # 3GPP TS 29.281 §5.1: version 1, PT 1, G-PDU (255), TEID per direction
    pl, _ = l3(fr)
    teid = 0x1000_0001 if from_client(fr) else 0x2000_0002
    hdr = struct.pack("!BBHI", 0x30, 0xFF, len(pl), teid)
    p = UDP(sport=2152, dport=2152, chksum=0) / Raw(hdr + pl)
    return outer4(fr, p, i + 1, proto=17)


def pppoe_frame(fr, session=0x0011):  # RFC 2516 §4 session stage, PPP protocol 0x0021 / 0x0057
    pl, v = l3(fr)
    ppp = struct.pack("!H", 0x0057 if v == 6 else 0x0021) + pl
    return struct.pack("!BBHH", 0x11, 0x00, session, len(ppp)) + ppp


def eth_hdr(fr, ethertype):
    c = from_client(fr)
    return Ether(src=MAC1 if c else MAC2, dst=MAC2 if c else MAC1, type=ethertype)


def pppoe(i, fr):
    return eth_hdr(fr, 0x8864) / Raw(pppoe_frame(fr))


def mpls(i, fr):  # RFC 3032: two labels (1000, then 2000 bottom of stack), TTL 64
    pl, v = l3(fr)
    stack = struct.pack("!II", (1000 << 12) | 64, (2000 << 12) | (1 << 8) | 64)
    return eth_hdr(fr, 0x8847) / Raw(stack + pl)


def qinq(i, fr):  # IEEE 802.1ad S-tag 100 (0x88a8), then 802.1Q C-tag 200
    pl, v = l3(fr)
    tags = struct.pack("!HHH", 100, 0x8100, 200) + struct.pack("!H", 0x86DD if v == 6 else 0x0800)
    return eth_hdr(fr, 0x88A8) / Raw(tags + pl)


def qinq_pppoe(i, fr):  # S-tag 300 (0x88a8), C-tag 400, then a PPPoE session
    tags = struct.pack("!HHHH", 300, 0x8100, 400, 0x8864)
    return eth_hdr(fr, 0x88A8) / Raw(tags + pppoe_frame(fr, 0x0022))


write("own-gre.pcap", gre_plain)
write("own-gre-keyed.pcap", gre_keyed)
write("own-gretap-keyed.pcap", gretap_keyed)
write("own-erspan2.pcap", erspan2)
write("own-erspan3.pcap", erspan3)
write("own-ipip.pcap", ipip, only=4)
write("own-6in4.pcap", sixin4, only=6)
write("own-4in6.pcap", fourin6, only=4)
write("own-geneve.pcap", geneve)
write("own-gtpu.pcap", gtpu)
write("own-pppoe.pcap", pppoe)
write("own-mpls.pcap", mpls)
write("own-qinq.pcap", qinq)
write("own-qinq-pppoe.pcap", qinq_pppoe)
