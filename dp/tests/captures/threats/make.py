#!/usr/bin/python3
"""Crafts the DNS threat captures of this directory with Debian's python3-scapy.

Deterministic (fixed addresses, ports, ids, timestamps and a seeded generator): running it again
rewrites the same bytes. Usage: /usr/bin/python3 make.py (writes into this directory).

- dns-attacks.pcap: what attacks on DNS decoders send, one flow each (client 198.18.53.2, server
  198.18.53.1:53; the client port names the case, see CASES).
- dnscat-style.pcap: query shapes of dnscat2 (not packaged by Debian): hex-encoded dnscat2
  packets (packet id, type, session id, seq, ack, data) in the labels before the tunnel domain,
  TXT/CNAME/MX queries at random, one poll a second when idle, a new source port per query (the
  client asks through the system resolver), with hex answers; and the "no domain" mode
  (dnscat.<hex>, sent straight to the dnscat2 server).
"""
import os
import random
import struct

from scapy.all import IP, UDP, Ether, Raw, wrpcap

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT, SERVER = "198.18.53.2", "198.18.53.1"
C_MAC, S_MAC = "02:00:00:00:53:02", "02:00:00:00:53:01"


def frame(src, dst, sport, dport, payload, t):
    p = Ether(src=C_MAC if src == CLIENT else S_MAC, dst=S_MAC if src == CLIENT else C_MAC)
    p = p / IP(src=src, dst=dst, id=sport & 0xFFFF) / UDP(sport=sport, dport=dport) / Raw(payload)
    p = Ether(bytes(p))  # checksums filled in
    p.time = t
    return p


def header(qid, flags, qd, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def name(*labels):
    out = b""
    for l in labels:
        l = l.encode() if isinstance(l, str) else l
        out += bytes([len(l)]) + l
    return out + b"\x00"


def ptr(offset):
    return bytes([0xC0 | (offset >> 8), offset & 0xFF])


def rr(owner, rtype, rdata, ttl=60, rdlen=None):
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata) if rdlen is None else rdlen) + rdata


Q_WWW = name("www", "corp", "test") + struct.pack("!HH", 1, 1)  # www.corp.test A IN, at offset 12


def query(qid, question=Q_WWW):
    return header(qid, 0x0100, 1) + question


def response(qid, answers, an=None, question=Q_WWW, flags=0x8180):
    body = b"".join(answers)
    return header(qid, flags, 1, len(answers) if an is None else an) + question + body


def cases():
    """(client port, reason, datagrams client->server / server->client as (from_client, bytes))."""
    out = []
    # 1. The question's name is a pointer to itself.
    out.append((40001, "pointer_to_itself", [(True, header(0x0101, 0x0100, 1) + ptr(12) + struct.pack("!HH", 1, 1))]))
    # 2. Two pointers pointing at each other (the first forward).
    out.append((40002, "pointer_forward", [(True, header(0x0102, 0x0100, 1) + ptr(14) + ptr(12) + struct.pack("!HH", 1, 1))]))
    # 3. A cycle through a label: an answer owner at 31 points back to 23, where a label of
    #    length 9 spans that pointer, and the pointer after it goes back to 23 again.
    q = query(0x0103)
    ans_at = len(q)  # 31
    # At 31: pointer to 33 would be forward; instead lay out: 31: label len 3 'abc', 35: ptr->31
    # (backward from 35 but the walk already passed 31 in place: not before the last target).
    owner = b"\x03abc" + ptr(ans_at) + b""  # in place: label at 31, pointer at 35 -> 31
    out.append((40003, "pointer_loop", [(True, q), (False, response(0x0103, [rr(owner, 1, bytes([198, 18, 0, 20]))]))]))
    # 4. A chain of 100 pointers, each to the one before it.
    q = query(0x0104)
    chain = b""
    start = len(q) + 0  # the chain sits in an answer's RDATA (a TXT record nobody reads)
    txt_owner = ptr(12)
    txt_rdata_at = start + len(txt_owner) + 10
    chain = ptr(12)
    for i in range(1, 100):
        chain += ptr(txt_rdata_at + 2 * (i - 1))
    first = rr(txt_owner, 16, chain)
    last_ptr = txt_rdata_at + 2 * 99
    second = rr(ptr(last_ptr), 1, bytes([198, 18, 0, 20]))
    out.append((40004, "pointer_chain", [(True, q), (False, response(0x0104, [first, second]))]))
    # 5. A label of 64 bytes in the question.
    out.append((40005, "label_over_63", [(True, header(0x0105, 0x0100, 1) + name(b"a" * 64, "corp", "test") + struct.pack("!HH", 1, 1))]))
    # 6. A question name of 256 bytes in wire form (63+63+63+62 byte labels).
    out.append((40006, "name_over_255", [(True, header(0x0106, 0x0100, 1) + name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62) + struct.pack("!HH", 1, 1))]))
    # 7. A response whose answer owner decompresses to more than 255 bytes: labels of 63, 63,
    #    63 and 50 bytes in place (244 bytes), then a pointer to the question's www.corp.test
    #    (15 bytes).
    q = query(0x0107)
    owner = bytes([63]) + b"x" * 63 + bytes([63]) + b"y" * 63 + bytes([63]) + b"z" * 63 + bytes([50]) + b"w" * 50 + ptr(12)
    out.append((40007, "name_over_255", [(True, q), (False, response(0x0107, [rr(owner, 1, bytes([198, 18, 0, 20]))]))]))
    # 8. RDLENGTH 0xffff on a 4-byte address.
    q = query(0x0108)
    out.append((40008, "rdata_past_end", [(True, q), (False, response(0x0108, [rr(ptr(12), 1, bytes([198, 18, 0, 20]), rdlen=0xFFFF)]))]))
    # 9. ANCOUNT 200 with one answer.
    q = query(0x0109)
    out.append((40009, "counts_past_end", [(True, q), (False, response(0x0109, [rr(ptr(12), 1, bytes([198, 18, 0, 20]))], an=200))]))
    # 10. CVE-2015-7547 (glibc getaddrinfo): a query without EDNS0 answered over UDP by a
    #     2000-byte response (here: 120 A records, all well-formed).
    q = query(0x010A)
    big = [rr(ptr(12), 1, bytes([198, 18, 1, i])) for i in range(120)]
    out.append((40010, "udp_over_512", [(True, q), (False, response(0x010A, big))]))
    # 11. More than 1024 bytes after the last counted record.
    q = query(0x010B)
    out.append((40011, "trailing_bytes", [(True, q), (False, response(0x010B, [rr(ptr(12), 1, bytes([198, 18, 0, 20]))]) + b"\x41" * 1100)]))
    return out


def attacks():
    pkts = []
    t = 1_700_000_000.0
    for port, _, dgrams in cases():
        for from_client, payload in dgrams:
            if from_client:
                pkts.append(frame(CLIENT, SERVER, port, 53, payload, t))
            else:
                pkts.append(frame(SERVER, CLIENT, 53, port, payload, t))
            t += 0.01
        t += 1
    wrpcap(os.path.join(HERE, "dns-attacks.pcap"), pkts)


def dnscat():
    rng = random.Random(0xD45CA7)
    pkts = []
    t = 1_700_000_100.0
    session = rng.randrange(0x10000)
    seq, ack = rng.randrange(0x10000), rng.randrange(0x10000)
    domain = ("tunnel", "c2-example", "test")

    def labels(hexdata, size=63):
        return [hexdata[i:i + size] for i in range(0, len(hexdata), size)]

    qid = 0x2000
    for i in range(200):
        # dnscat2 packet: packet_id, type (0x01 MSG; 0x00 SYN first), session, seq, ack, data.
        kind = 0x00 if i == 0 else 0x01
        data = b"" if rng.random() < 0.55 else rng.randbytes(rng.randrange(8, 90))
        pkt = struct.pack("!HBHHH", rng.randrange(0x10000), kind, session, seq, ack) + data
        seq = (seq + len(data)) & 0xFFFF
        hexd = pkt.hex()
        no_domain = i >= 160  # the last 40: "dnscat." prefix, no tunnel domain
        qname = name("dnscat", *labels(hexd)) if no_domain else name(*labels(hexd), *domain)
        qtype = rng.choice([16, 5, 15])  # TXT, CNAME, MX
        port = 20000 + rng.randrange(40000)
        qid += 1
        q = header(qid, 0x0100, 1) + qname + struct.pack("!HH", qtype, 1)
        pkts.append(frame(CLIENT, SERVER, port, 53, q, t))
        reply = struct.pack("!HBHHH", rng.randrange(0x10000), 0x01, session, ack, seq) + rng.randbytes(rng.randrange(0, 60))
        ack = (ack + len(reply) - 9) & 0xFFFF
        if qtype == 16:
            txt = reply.hex().encode()[:255]
            rdata = bytes([len(txt)]) + txt
        elif qtype == 5:
            rdata = name(*labels(reply.hex()), *(("dnscat",) if no_domain else domain))
        else:
            rdata = struct.pack("!H", 10) + name(*labels(reply.hex()), *(("dnscat",) if no_domain else domain))
        resp = header(qid, 0x8180, 1, 1) + qname + struct.pack("!HH", qtype, 1) + rr(ptr(12), qtype, rdata, ttl=1)
        pkts.append(frame(SERVER, CLIENT, 53, port, resp, t + 0.02))
        t += 0.25 if data else 1.0
    wrpcap(os.path.join(HERE, "dnscat-style.pcap"), pkts)


if __name__ == "__main__":
    attacks()
    dnscat()
