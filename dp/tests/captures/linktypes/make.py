"""Converts ethernet.pcap (recorded by make.sh) into the other link types `warden replay`
reads, then reads every file back with scapy's readers (an independent implementation) and
checks that each holds the original's IP packets, in order, with their timestamps.

Run with Debian's python3-scapy: `/usr/bin/python3 make.py` in this directory. Deterministic:
the same ethernet.pcap gives the same bytes.
"""

import io
import struct

from scapy.utils import RawPcapNgReader, RawPcapReader

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD


def read_pcap(name):
    """(seconds, microseconds, frame) of every record of a little-endian microsecond pcap."""
    data = open(name, "rb").read()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and link == 1, (name, hex(magic), link)
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack("<IIII", data[off : off + 16])
        out.append((sec, usec, data[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    return out


def ethertype(frame):
    return struct.unpack(">H", frame[12:14])[0]


def write_pcap(name, link, records, endian="<"):
    """records: (sec, usec, bytes); microsecond pcap in the given byte order."""
    with open(name, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link))
        for sec, usec, b in records:
            f.write(struct.pack(endian + "IIII", sec, usec, len(b), len(b)))
            f.write(b)


def block(endian, btype, body):
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def option(endian, code, value):
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian):
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(endian, link, name, tsresol=None):
    opts = option(endian, 2, name.encode())  # if_name
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))  # if_tsresol
    opts += option(endian, 0, b"")  # opt_endofopt
    return block(endian, 1, struct.pack(endian + "HHI", link, 0, 262144) + opts)


def units(tsresol):
    """Timestamp units per second of an if_tsresol value (default 10^-6)."""
    if tsresol is None:
        return 10**6
    return 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol


def ts(sec, usec, tsresol):
    """The timestamp in the interface's units, rounded up, so that a reader truncating to
    microseconds gets the original back."""
    return -(-(sec * 10**6 + usec) * units(tsresol) // 10**6)


def epb(endian, iface, t, data):
    body = struct.pack(endian + "IIIII", iface, t >> 32, t & 0xFFFFFFFF, len(data), len(data))
    return block(endian, 6, body + data)


def sll2(frame, ifindex=2):
    """A Linux cooked v2 header for an Ethernet frame: protocol, reserved, interface index,
    ARPHRD_ETHER, packet type (0: to us), address length, address padded to 8 bytes."""
    return (
        struct.pack(">HHIHBB", ethertype(frame), 0, ifindex, 1, 0, 6)
        + frame[6:12]
        + b"\0\0"
        + frame[14:]
    )


def main():
    frames = read_pcap("ethernet.pcap")
    ip = [(s, u, f[14:]) for s, u, f in frames if ethertype(f) in (ETH_IPV4, ETH_IPV6)]
    v4 = [(s, u, p) for s, u, p in ip if p[0] >> 4 == 4]
    v6 = [(s, u, p) for s, u, p in ip if p[0] >> 4 == 6]
    assert v4 and v6, "the recording has no IPv4 or no IPv6 packets"

    def fam(p, inet6):
        return 2 if p[0] >> 4 == 4 else inet6

    files = {}  # name -> (link type, [(sec, usec, link header length, IP packet)])

    def pcap(name, link, records, header=lambda p: b"", endian="<"):
        recs = [(s, u, header(p) + p) for s, u, p in records]
        write_pcap(name, link, recs, endian)
        files[name] = [(link, s, u, len(header(p)), p) for s, u, p in records]

    pcap("raw.pcap", 101, ip)
    pcap("raw-dlt12.pcap", 12, ip)
    pcap("raw-dlt14.pcap", 14, ip)
    pcap("ipv4.pcap", 228, v4)
    pcap("ipv6.pcap", 229, v6)
    # DLT_NULL: the family in the capturing host's byte order. FreeBSD on amd64 (AF_INET6 28,
    # little-endian) and macOS on PowerPC (AF_INET6 30, big-endian file and family).
    pcap("null-le.pcap", 0, ip, lambda p: struct.pack("<I", fam(p, 28)))
    pcap("null-be.pcap", 0, ip, lambda p: struct.pack(">I", fam(p, 30)), endian=">")
    # LINKTYPE_LOOP (OpenBSD): network byte order whatever the host; AF_INET6 is 24.
    pcap("loop.pcap", 108, ip, lambda p: struct.pack(">I", fam(p, 24)))

    # pcapng, one section, three interfaces of different link types: IPv4 and non-IP frames on
    # an Ethernet interface (microseconds), IPv6 packets on a raw-IP interface (nanoseconds),
    # and two frames on an interface of a link type replay does not read (147, USER0).
    out = shb("<") + idb("<", 1, "eth-s0") + idb("<", 101, "tun0", 9) + idb("<", 147, "usb0")
    expect = []
    for s, u, f in frames:
        if ethertype(f) == ETH_IPV6:
            out += epb("<", 1, ts(s, u, 9), f[14:])
            expect.append((101, s, u, 0, f[14:]))
        else:
            out += epb("<", 0, ts(s, u, None), f)
            expect.append((1, s, u, 0, f))
    s, u, _ = frames[-1]
    for junk in (b"\x01\x02\x03\x04 not a frame", b"\xff" * 40):
        out += epb("<", 2, ts(s, u, None), junk)
        expect.append((147, s, u, 0, junk))
    open("interfaces.pcapng", "wb").write(out)
    files["interfaces.pcapng"] = expect

    # pcapng, two sections (each numbers its interfaces from 0): the first half of the IP
    # packets in a little-endian section on an SLL2 interface, the rest in a big-endian section
    # on a DLT_NULL interface with 2^-20 s timestamps.
    half = len(ip) // 2
    ip_frames = [(s, u, f) for s, u, f in frames if ethertype(f) in (ETH_IPV4, ETH_IPV6)]
    first = shb("<") + idb("<", 276, "any")
    expect = []
    for s, u, f in ip_frames[:half]:
        first += epb("<", 0, ts(s, u, None), sll2(f))
        expect.append((276, s, u, 20, f[14:]))
    second = shb(">") + idb(">", 0, "lo0", 0x80 | 20)
    for s, u, f in ip_frames[half:]:
        second += epb(">", 0, ts(s, u, 0x80 | 20), struct.pack(">I", fam(f[14:], 30)) + f[14:])
        expect.append((0, s, u, 4, f[14:]))
    open("sections.pcapng", "wb").write(first + second)
    # scapy 2.5 keeps numbering interfaces across sections: check each section on its own.
    files[io.BytesIO(first)] = expect[:half]
    files[io.BytesIO(second)] = expect[half:]

    # Read everything back with scapy.
    for name, want in files.items():
        ng = not isinstance(name, str) or name.endswith(".pcapng")
        reader = RawPcapNgReader if ng else RawPcapReader
        got = []
        r = reader(name)
        for data, meta in r:
            if ng:
                t = (meta.tshigh << 32 | meta.tslow) * 10**6 // meta.tsresol
                got.append((meta.linktype, t, data))
            else:
                got.append((r.linktype, meta.sec * 10**6 + meta.usec, data))
        r.close()
        assert len(got) == len(want), (name, len(got), len(want))
        for (link, t, data), (wlink, s, u, hl, p) in zip(got, want):
            assert link == wlink and t == s * 10**6 + u, (name, link, wlink, t, s, u)
            assert data[hl:] == p, name
        print(f"{name if isinstance(name, str) else 'a section of sections.pcapng'}: {len(got)} frames")


main()
