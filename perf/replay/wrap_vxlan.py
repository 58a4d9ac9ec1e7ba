#!/usr/bin/env python3
"""Wraps every Ethernet frame of a pcap in VXLAN (outer Ethernet + IPv4 + UDP 4789 + VXLAN,
VNI 42, outer 198.18.0.1 -> 198.18.0.2, UDP checksum 0 as Linux sends it over IPv4), for
`warden replay` throughput with tunnel decapsulation (perf/RESULTS.md, issue 11).

Usage: wrap_vxlan.py IN.pcap OUT.pcap
"""
import struct
import sys


def ip_checksum(h: bytes) -> int:
    s = sum(struct.unpack("!10H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    vxlan = bytes([0x08, 0, 0, 0, 0, 0, 42, 0])
    with open(src, "rb") as f, open(dst, "wb") as out:
        gh = f.read(24)
        magic = gh[:4]
        endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        if struct.unpack(endian + "I", gh[20:24])[0] != 1:
            sys.exit("not an Ethernet capture")
        snap = struct.unpack(endian + "I", gh[16:20])[0]
        out.write(gh[:16] + struct.pack(endian + "I", snap + 50) + gh[20:])
        ident = 0
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                break
            ts, tsf, incl, orig = struct.unpack(endian + "IIII", rh)
            frame = f.read(incl)
            if incl != orig:
                continue  # a cut frame cannot be wrapped whole
            udp_len = 8 + 8 + len(frame)
            ident = (ident + 1) & 0xFFFF
            ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident, 0x4000, 64, 17, 0,
                                       bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])))
            ip[10:12] = struct.pack("!H", ip_checksum(bytes(ip)))
            # Source port from the inner addresses, the same both ways (Linux hashes the inner
            # flow): IPv4 at 26..34, IPv6 at 22..54 of an untagged frame.
            a, b = (frame[26:30], frame[30:34]) if frame[12:14] == b"\x08\x00" else (frame[22:38], frame[38:54])
            sport = 49152 + (hash(min(a, b) + max(a, b)) & 0x3FFF)
            udp = struct.pack("!HHHH", sport, 4789, udp_len, 0)
            wrapped = eth + bytes(ip) + udp + vxlan + frame
            out.write(struct.pack(endian + "IIII", ts, tsf, len(wrapped), len(wrapped)) + wrapped)


if __name__ == "__main__":
    main()
