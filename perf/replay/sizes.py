#!/usr/bin/env python3
"""Synthetic captures for the per-frame cost of `warden replay` by frame size (issue 10).

Usage: sizes.py OUT_DIR [FRAMES]   (FRAMES per capture, default 300000)

Writes four classic pcap files, every checksum as a sender computes it (so Warden's checksum
verification does its full work), addresses in 198.18.0.0/15:
  udp-64.pcap     one UDP flow 198.18.0.1:1024 -> 198.19.0.1:9, 64-byte frames (the rig's flow)
  udp-1500.pcap   the same flow, 1500-byte frames
  tcp-64.pcap     one TCP connection to port 80: handshake, an HTTP POST announcing a body
                  larger than the capture, then body segments filling 64-byte frames, the
                  server acknowledging every second segment (the HTTP parser stays active, so
                  stream reassembly and the kept bytes of normalisation do their full work)
  tcp-1500.pcap   the same with 1500-byte frames
"""

import os
import struct
import sys


def csum(data: bytes, start: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = start + sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4(src, dst, proto, payload, ident=0):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, bytes(src), bytes(dst))
    c = (~csum(hdr)) & 0xFFFF
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def pseudo(src, dst, proto, length):
    return bytes(src) + bytes(dst) + struct.pack("!BBH", 0, proto, length)


def eth(ip, to_server=True):
    a, b = b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\x02"
    return (b + a if to_server else a + b) + b"\x08\x00" + ip


def udp_frame(size):
    src, dst = [198, 18, 0, 1], [198, 19, 0, 1]
    body = bytes(size - 14 - 20 - 8)
    seg = struct.pack("!HHHH", 1024, 9, 8 + len(body), 0) + body
    c = (~csum(seg, csum(pseudo(src, dst, 17, len(seg))))) & 0xFFFF or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    return eth(ipv4(src, dst, 17, seg))


def tcp_frame(to_server, seq, ack, flags, payload, psum=None):
    cli, srv = [198, 18, 0, 1], [198, 19, 0, 1]
    src, dst = (cli, srv) if to_server else (srv, cli)
    sport, dport = (40000, 80) if to_server else (80, 40000)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    base = csum(pseudo(src, dst, 6, 20 + len(payload)))
    base = csum(hdr, base)
    base = csum(payload, base) if psum is None else csum(b"", base + psum)
    c = (~base) & 0xFFFF
    return eth(ipv4(src, dst, 6, hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload), to_server)


class Pcap:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.t = 1_700_000_000_000_000

    def write(self, frame):
        self.t += 10
        self.f.write(struct.pack("<IIII", self.t // 1_000_000, self.t % 1_000_000, len(frame), len(frame)))
        self.f.write(frame)

    def close(self):
        self.f.close()


def udp_capture(path, size, n):
    p = Pcap(path)
    f = udp_frame(size)
    for _ in range(n):
        p.write(f)
    p.close()


def tcp_capture(path, size, n):
    syn, ack, psh = 0x02, 0x10, 0x08
    p = Pcap(path)
    c, s = 1000, 5000
    p.write(tcp_frame(True, c, 0, syn, b""))
    p.write(tcp_frame(False, s, c + 1, syn | ack, b""))
    c, s = c + 1, s + 1
    p.write(tcp_frame(True, c, s, ack, b""))
    head = b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000000000\r\n\r\n"
    p.write(tcp_frame(True, c, s, ack | psh, head))
    c += len(head)
    body = bytes(b % 26 + 97 for b in range(size - 54))
    psum = csum(body)
    for i in range(n):
        p.write(tcp_frame(True, c & 0xFFFFFFFF, s, ack, body, psum))
        c += len(body)
        if i % 2:
            p.write(tcp_frame(False, s, c & 0xFFFFFFFF, ack, b""))
    p.close()


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
    os.makedirs(out, exist_ok=True)
    for size in (64, 1500):
        udp_capture(os.path.join(out, f"udp-{size}.pcap"), size, n)
        tcp_capture(os.path.join(out, f"tcp-{size}.pcap"), size, n)
        print(f"sizes.py: {size}-byte captures written ({n} frames each)", file=sys.stderr)


if __name__ == "__main__":
    main()
