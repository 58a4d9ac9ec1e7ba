#!/usr/bin/env python3
"""Builds a large mixed capture from the corpus for the replay benchmark.

Usage: mkpcap.py CORPUS_DIR OUT.pcap [MIN_BYTES]

Repeats every corpus pcap (Ethernet, IPv4) in passes until the output reaches MIN_BYTES
(default 1 GiB). Pass k re-addresses each flow inside 198.18.0.0/15 (client 198.18.x.y,
server 198.19.x.y, with x.y derived from k), fixes the IPv4 header checksum, and shifts
timestamps by two hours per pass so each pass's sessions are idle-expired before the next.
Prints a progress line per 100 MiB on stderr.
"""
import glob
import os
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    link = struct.unpack(end + "I", data[20:24])[0]
    if link != 1:
        return []
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(end + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        usec = frac // 1000 if nano else frac
        out.append((sec, usec, pkt))
    return out


def csum(hdr):
    s = 0
    for i in range(0, len(hdr), 2):
        s += (hdr[i] << 8) + hdr[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def readdress(pkt, k):
    if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
        return pkt
    ihl = (pkt[14] & 0x0F) * 4
    if ihl < 20 or len(pkt) < 14 + ihl:
        return pkt
    p = bytearray(pkt)
    hi, lo = (k >> 8) & 0xFF, k & 0xFF
    for at in (26, 30):
        # 198.18.0.1 (corpus client) -> 198.18.hi.lo ; 198.18.0.2 (server) -> 198.19.hi.lo
        if p[at:at + 2] == b"\xc6\x12":
            second = 0x12 if p[at + 3] != 2 else 0x13
            p[at + 1:at + 4] = bytes([second, hi, lo])
    p[24:26] = b"\x00\x00"
    p[24:26] = struct.pack(">H", csum(bytes(p[14:14 + ihl])))
    return bytes(p)


def main():
    corpus, out = sys.argv[1], sys.argv[2]
    target = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 30
    files = sorted(glob.glob(os.path.join(corpus, "*.pcap")))
    packets = [p for f in files for p in load(f)]
    if not packets:
        sys.exit("no Ethernet packets in " + corpus)
    base = min(s for s, _, _ in packets)
    written, k, frames, mark = 24, 0, 0, 0
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while written < target:
            shift = k * 7200
            for sec, usec, pkt in packets:
                p = readdress(pkt, k)
                f.write(struct.pack("<IIII", sec - base + 1_700_000_000 + shift, usec, len(p), len(p)))
                f.write(p)
                written += 16 + len(p)
                frames += 1
            k += 1
            if written - mark >= 100 << 20:
                mark = written
                print(f"mkpcap: {written >> 20} MiB, {frames} frames, {k} passes", file=sys.stderr)
    print(f"mkpcap: wrote {out}: {written} bytes, {frames} frames, {k} passes of {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
