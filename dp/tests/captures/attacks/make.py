#!/usr/bin/python3
"""Writes the attack captures of this directory (see README.md): one pcap per attack on a
protect-mode workload, each with a control connection the policy allows.

Run from anywhere with Debian's python3-scapy: /usr/bin/python3 dp/tests/captures/attacks/make.py
The output is deterministic (fixed addresses, ports, sequence numbers and timestamps), so
running it again rewrites the same files.

Cast (198.18.0.0/15 and 2001:db8::/32 only):
  web   198.18.0.2 / 2001:db8::2     MAC 02:00:00:00:00:02  the workload; 2222 is a port no rule
                                                           allows, 8080 is allowed in, 443 out
  evil  198.18.1.9 / 2001:db8:1::9   MAC 02:00:00:00:01:09  the attacker, outside
"""

import os

from scapy.all import IP, TCP, Ether, IPv6, Raw, wrpcap

WEB_MAC = "02:00:00:00:00:02"
EVIL_MAC = "02:00:00:00:01:09"
ADDRS = {4: ("198.18.0.2", "198.18.1.9"), 6: ("2001:db8::2", "2001:db8:1::9")}
DENIED = 2222
EGRESS = 443
ALLOWED = 8080
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


class Capture:
    """Frames of one capture, with a clock advancing 1 ms per frame unless told otherwise."""

    def __init__(self, version):
        self.v = version
        self.t = float(T0)
        self.frames = []

    def frame(self, who, sport, dport, flags, seq, ack=0, data=b"", at=None, claim=None):
        """`who` sends (its MAC and, unless `claim` names another end, its address)."""
        web, evil = ADDRS[self.v]
        ips = {"web": web, "evil": evil}
        src_ip = ips[claim or who]
        dst_ip = evil if (claim or who) == "web" else web
        smac, dmac = (WEB_MAC, EVIL_MAC) if who == "web" else (EVIL_MAC, WEB_MAC)
        l3 = IP(src=src_ip, dst=dst_ip, ttl=64, id=len(self.frames) + 1) if self.v == 4 else IPv6(src=src_ip, dst=dst_ip, hlim=64)
        p = Ether(src=smac, dst=dmac) / l3 / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
        if data:
            p = p / Raw(load=data)
        self.t = at if at is not None else self.t + 0.001
        p.time = self.t
        self.frames.append(p)

    def connection(self, client, cport, server, sport, request, response, close=True, at=None):
        """A whole TCP connection: handshake, one request, one response, FIN both ways."""
        c, s = 1000, 700000
        self.frame(client, cport, sport, SYN, c, at=at)
        self.frame(server, sport, cport, SYN | ACK, s, c + 1)
        c, s = c + 1, s + 1
        self.frame(client, cport, sport, ACK, c, s)
        self.frame(client, cport, sport, PSH | ACK, c, s, request)
        c += len(request)
        self.frame(server, sport, cport, PSH | ACK, s, c, response)
        s += len(response)
        self.frame(client, cport, sport, ACK, c, s)
        if close:
            self.frame(client, cport, sport, FIN | ACK, c, s)
            self.frame(server, sport, cport, FIN | ACK, s, c + 1)
            self.frame(client, cport, sport, ACK, c + 1, s + 1)

    def write(self, name):
        here = os.path.dirname(os.path.abspath(__file__))
        suffix = "" if self.v == 4 else "-v6"
        wrpcap(os.path.join(here, f"{name}{suffix}.pcap"), self.frames)


HTTP_REQ = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
HTTP_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TLS_HELLO = bytes.fromhex("16030100050100000100")
TLS_REPLY = bytes.fromhex("16030300050200000100")
PAYLOAD = [b"ATTACK-1 config set dir /tmp\r\n", b"ATTACK-2 flushall\r\n"]


def the_attackers_handshake(cap, seq):
    """After its opening trick, the attacker connects from 443 to web's denied port for real
    (web's SYN|ACK included, as it would answer if the SYN got through) and sends its data."""
    a, w = seq, 900000
    cap.frame("evil", EGRESS, DENIED, SYN, a)
    cap.frame("web", DENIED, EGRESS, SYN | ACK, w, a + 1)
    a, w = a + 1, w + 1
    cap.frame("evil", EGRESS, DENIED, ACK, a, w)
    for d in PAYLOAD:
        cap.frame("evil", EGRESS, DENIED, PSH | ACK, a, w, d)
        a += len(d)


def synack_first(v):
    """A SYN|ACK from the attacker's 443 to web's 2222 would make web look like the client of
    an HTTPS connection (allowed out); data and the attacker's real handshake follow. Control:
    web's own HTTPS connection to the attacker's 443."""
    cap = Capture(v)
    cap.frame("evil", EGRESS, DENIED, SYN | ACK, 5000, 1)
    a = 5001
    for d in PAYLOAD:
        cap.frame("evil", EGRESS, DENIED, PSH | ACK, a, 1, d)
        a += len(d)
    the_attackers_handshake(cap, 20000)
    cap.connection("web", 40000, "evil", EGRESS, TLS_HELLO, TLS_REPLY)
    cap.write("synack-first")


def bare_ack(v):
    """A bare ACK from 443 to 2222: picked up mid-stream, the side on the higher port (web)
    would be taken for the client. Data and the real handshake follow. Control: the attacker's
    allowed HTTP connection to web's 8080."""
    cap = Capture(v)
    cap.frame("evil", EGRESS, DENIED, ACK, 5000, 1)
    a = 5000
    for d in PAYLOAD:
        cap.frame("evil", EGRESS, DENIED, PSH | ACK, a, 1, d)
        a += len(d)
    the_attackers_handshake(cap, 20000)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP)
    cap.write("bare-ack")


def data_first(v):
    """Data with no handshake at all from 443 to 2222. Control: HTTP to 8080."""
    cap = Capture(v)
    a = 5000
    for d in PAYLOAD:
        cap.frame("evil", EGRESS, DENIED, PSH | ACK, a, 1, d)
        a += len(d)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP)
    cap.write("data-first")


def ack_after_denied_syn(v):
    """The attacker's SYN to 2222 is denied; 10 s later (after the denied session's 5 s
    linger) a bare ACK on the same 5-tuple would revive it the other way round. Control: an
    HTTP connection to 8080, closed, and the same client port used again at 8 s (port reuse,
    RFC 9293 3.10.7.4), which also makes `warden replay` expire the lingering denied session
    as the live workers would."""
    cap = Capture(v)
    cap.frame("evil", EGRESS, DENIED, SYN, 5000, at=T0)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP, at=T0 + 1)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP, at=T0 + 8)
    cap.frame("evil", EGRESS, DENIED, ACK, 5001, 1, at=T0 + 10)
    a = 5001
    for d in PAYLOAD:
        cap.frame("evil", EGRESS, DENIED, PSH | ACK, a, 1, d)
        a += len(d)
    cap.write("ack-after-denied-syn")


def spoofed_syn(v):
    """A SYN claiming web's address, from the attacker's MAC, 2222 -> the attacker's 443: it
    would open "web's HTTPS connection", which the attacker's real handshake to 2222 then
    rides. Control: web's own HTTPS connection from its MAC."""
    cap = Capture(v)
    cap.frame("evil", DENIED, EGRESS, SYN, 3000, claim="web")
    the_attackers_handshake(cap, 20000)
    cap.connection("web", 40000, "evil", EGRESS, TLS_HELLO, TLS_REPLY)
    cap.write("spoofed-syn")


def handshake(cap, client, cport, server, sport):
    """SYN, SYN|ACK, ACK; returns the next sequence numbers (client, server)."""
    c, s = 1000, 700000
    cap.frame(client, cport, sport, SYN, c)
    cap.frame(server, sport, cport, SYN | ACK, s, c + 1)
    cap.frame(client, cport, sport, ACK, c + 1, s + 1)
    return c + 1, s + 1


REDIS = b"*1\r\n$8\r\nFLUSHALL\r\n"


def pool_full(v):
    """For `[inspection] max_sessions = 4` and an `apps = ["http"]` rule on 8080: the control
    HTTP connection and three idle handshakes hold the four app contexts; the attacker's
    Redis connection from its port 2222 to 8080 then finds none, so nothing could tell that it
    is not HTTP (web's SYN|ACK included, as it would answer if the SYN got through)."""
    cap = Capture(v)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP)
    for port in (3000, 3001, 3002):
        handshake(cap, "evil", port, "web", ALLOWED)
    c, s = handshake(cap, "evil", DENIED, "web", ALLOWED)
    for _ in range(2):
        cap.frame("evil", DENIED, ALLOWED, PSH | ACK, c, s, REDIS)
        c += len(REDIS)
    cap.write("pool-full")


def stream_cap(v):
    """For `[inspection] stream_session_cap = 4096` and an `apps = ["http"]` rule on 8080: from
    its port 2222 the attacker sends an HTTP request line that never ends (4 x 1400 bytes, no
    CRLF), so detection waits while the buffer grows past the cap, then Redis commands.
    Control: an HTTP connection to 8080."""
    cap = Capture(v)
    cap.connection("evil", 40001, "web", ALLOWED, HTTP_REQ, HTTP_RESP)
    c, s = handshake(cap, "evil", DENIED, "web", ALLOWED)
    line = b"GET /" + b"a" * (4 * 1400 - 5)
    for i in range(4):
        seg = line[i * 1400:(i + 1) * 1400]
        cap.frame("evil", DENIED, ALLOWED, PSH | ACK, c, s, seg)
        c += len(seg)
    cap.frame("evil", DENIED, ALLOWED, PSH | ACK, c, s, REDIS)
    cap.write("stream-cap")


if __name__ == "__main__":
    for version in (4, 6):
        for make in (synack_first, bare_ack, data_first, ack_after_denied_syn, spoofed_syn, pool_full, stream_cap):
            make(version)
