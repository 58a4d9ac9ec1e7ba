#!/usr/bin/env python3
"""Labels every flow of the public capture set with the protocol tshark decodes.

Usage: perf/public/label.py [--check] [--summary FILE...]

Reads every capture under dp/tests/captures/public/ (pcap, pcapng), runs tshark over it (with the
per-capture arguments of dp/tests/captures/public/tshark-args.tsv: decode-as rules for servers
on ports tshark does not know, preferences) and groups frames into flows by their innermost 5-tuple (after VLAN, MPLS, PPPoE and
every tunnel tshark decodes; an ICMP error's quoted packet is not a flow of its own). A flow's
label is the Warden app whose tshark dissector(s) decoded any frame of the flow (TSHARK_TO_APP
below), or "none" when tshark decodes no protocol Warden parses. Writes
dp/tests/captures/public/labels.json (sorted, stable), which dp/tests/public_captures.rs reads;
`--check` compares instead of writing (exit 1 when it differs). `--summary FILE...` prints the
flows of the given captures with their labels (used for the READMEs).
"""

import json
import os
import subprocess
import sys
from collections import OrderedDict

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SET = os.path.join(ROOT, "dp", "tests", "captures", "public")
LABELS = os.path.join(SET, "labels.json")
TSHARK_ARGS = os.path.join(SET, "tshark-args.tsv")
OVERRIDES = os.path.join(SET, "overrides.tsv")

# tshark protocol names (frame.protocols) -> Warden app. Dissectors of the same wire format under
# another name are mapped too (mDNS and LLMNR are DNS messages, RFC 6762 §18 / RFC 4795 §2.1.1;
# BOOTP is DHCP's message format). Where several apply, choose() below decides.
TSHARK_TO_APP = {
    "http": "http",
    "http2": "http2",
    "grpc": "grpc",
    "tls": "tls",
    "ssl": "tls",
    "dns": "dns",
    "mdns": "dns",
    "llmnr": "dns",
    "ssh": "ssh",
    "resp": "redis",
    "mysql": "mysql",
    "pgsql": "postgresql",
    "echo": "echo",
    "kafka": "kafka",
    "mongo": "mongodb",
    "cql": "cassandra",
    "couchbase": "couchbase",
    "ntp": "ntp",
    "dhcp": "dhcp",
    "bootp": "dhcp",
    "tftp": "tftp",
    "zookeeper": "zookeeper",
    "tds": "tds",
    "tns": "tns",
}


def choose(apps):
    """The flow's label from the Warden apps tshark decoded in it, in the order of the frames
    they first appear in: the first one (MySQL or PostgreSQL switching to TLS stays mysql /
    postgresql; SMTP STARTTLS, which Warden does not parse, is tls), refined where one app runs
    on another: gRPC over HTTP/2, HTTP/2 after an HTTP/1.1 upgrade (h2c)."""
    if not apps:
        return "none"
    first = apps[0]
    if first in ("http", "http2") and "grpc" in apps:
        return "grpc"
    if first == "http" and "http2" in apps:
        return "http2"
    return first


def epoch_us(text):
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def flow_id(proto, client, server, vlan):
    """"tcp 10.0.0.1:1234 > 10.0.0.2:80" (IPv6 in brackets), with " vlan 10,20" when tagged."""
    def end(addr, port):
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    v = f" vlan {vlan}" if vlan else ""
    return f"{proto} {end(*client)} > {end(*server)}{v}"


def read_overrides():
    """(capture, flow) -> (label, reason) from overrides.tsv: flows where tshark is wrong."""
    out = {}
    if os.path.exists(OVERRIDES):
        for line in open(OVERRIDES):
            if not line.strip() or line.startswith("#"):
                continue
            cap, flow, label, reason = line.rstrip("\n").split("\t")
            out[(cap, flow)] = (label, reason)
    return out


L3 = ("ip", "ipv6")
L4 = ("tcp", "udp", "sctp")
STOP = ("icmp", "icmpv6")  # what follows is a quoted packet
TUNNELS = ("vxlan", "geneve", "gre", "gtp", "erspan", "pppoes", "mpls", "eth", "vlan", "ieee8021ad")
FIELDS = ["frame.number", "frame.time_epoch", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags.syn",
          "tcp.flags.ack", "ieee8021ad.id", "vlan.id", "vxlan.vni", "geneve.vni", "gre.key", "gtp.teid",
          "mpls.label", "pppoe.session_id", "erspan.spanid", "memcache.magic"]


def captures():
    out = []
    for d, _, files in os.walk(SET):
        for f in files:
            if f.endswith((".pcap", ".pcapng", ".cap")):
                out.append(os.path.relpath(os.path.join(d, f), SET))
    return sorted(out)


def tshark_args():
    """capture path (relative to the set) -> extra tshark arguments (tab, then arguments
    separated by spaces; a path may have several lines)."""
    rules = {}
    if os.path.exists(TSHARK_ARGS):
        for line in open(TSHARK_ARGS):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path, args = line.split("\t", 1)
            rules.setdefault(path, []).extend(args.split())
    return rules


def occ(value, i):
    parts = value.split(",") if value else []
    return parts[i] if i < len(parts) else ""


def frames(path, extra):
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=,"] + extra
    for f in FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and not res.stdout:
        raise SystemExit(f"tshark failed on {path}: {res.stderr}")
    for line in res.stdout.splitlines():
        vals = line.split("\t")
        vals += [""] * (len(FIELDS) - len(vals))
        yield dict(zip(FIELDS, vals))


def inner(fr):
    """(proto, a, pa, b, pb, tokens after the L4, tunnel path) of the innermost 5-tuple, or None."""
    toks = fr["frame.protocols"].split(":")
    cut = len(toks)
    for i, t in enumerate(toks):
        if t in STOP:
            cut = i + 1
            break
    toks = toks[:cut]
    l3 = max((i for i, t in enumerate(toks) if t in L3), default=None)
    if l3 is None:
        return None
    kind = toks[l3]
    idx = toks[:l3].count(kind)
    fld = "ip" if kind == "ip" else "ipv6"
    a, b = occ(fr[fld + ".src"], idx), occ(fr[fld + ".dst"], idx)
    rest = toks[l3 + 1:]
    if any(t in TUNNELS for t in rest):
        return None  # a tunnel whose inner packet is not IP (ARP, LCP, ...)
    if rest and rest[0] in ("tcp", "udp"):
        l4 = rest[0]
        j = toks[:l3 + 1].count(l4)
        pa, pb = occ(fr[l4 + ".srcport"], j), occ(fr[l4 + ".dstport"], j)
        above = rest[1:]
    else:
        l4 = rest[0] if rest else "ip"
        pa = pb = ""
        above = rest[1:]
    return l4, a, pa, b, pb, above, toks[:l3]


def tunnel_of(prefix):
    """What carries the inner IP packet, outermost first: VLAN tags (802.1ad S-tags as
    "vlan-s"), MPLS, PPPoE and every outer IP header with the tunnel protocol on it ("ip/gre",
    "ip/vxlan", "ipv6" for 4in6, "ip" for IP-in-IP or 6in4); empty for a plain packet."""
    names = {"vlan": "vlan", "ieee8021ad": "vlan-s", "mpls": "mpls", "pppoes": "pppoe", "gre": "gre",
             "erspan": "erspan", "vxlan": "vxlan", "geneve": "geneve", "gtp": "gtp-u", "ip": "ip",
             "ipv6": "ipv6"}
    return [names[t] for t in prefix if t in names]


def canon(l4, a, pa, b, pb):
    ka = (a, int(pa) if pa else 0)
    kb = (b, int(pb) if pb else 0)
    return (l4,) + (ka + kb if ka <= kb else kb + ka)


def label_capture(rel, extra, overrides, used):
    flows = OrderedDict()
    for fr in frames(os.path.join(SET, rel), extra):
        got = inner(fr)
        if got is None:
            continue
        l4, a, pa, b, pb, above, prefix = got
        if l4 not in L4:
            continue
        vlans = ",".join(v for v in (fr["ieee8021ad.id"], fr["vlan.id"]) if v)
        key = canon(l4, a, pa, b, pb) + (vlans,)
        f = flows.get(key)
        if f is None:
            f = flows[key] = {"proto": l4, "first": (a, pa, b, pb), "client": None, "apps": [],
                              "frames": 0, "tunnel": tunnel_of(prefix), "vlan": vlans,
                              "tshark": set(), "first_us": epoch_us(fr["frame.time_epoch"]),
                              "first_frame": int(fr["frame.number"])}
        f["frames"] += 1
        if l4 == "tcp" and f["client"] is None and occ(fr["tcp.flags.syn"], 0) == "1":
            syn = fr["tcp.flags.syn"].split(",")[-1] == "1"
            ack = fr["tcp.flags.ack"].split(",")[-1] == "1"
            if syn and not ack:
                f["client"] = (a, pa)
            elif syn and ack:
                f["client"] = (b, pb)
        for t in above:
            app = TSHARK_TO_APP.get(t)
            if t == "memcache" and fr["memcache.magic"]:
                app = "couchbase"  # the binary protocol (magic 0x80/0x81); the text one is not
            if app:
                if app not in f["apps"]:
                    f["apps"].append(app)
                f["tshark"].add(t)
    out = []
    for key, f in flows.items():
        label = choose(f["apps"])
        a, pa, b, pb = f["first"]
        client = f["client"] or (a, pa)
        server = (b, pb) if client == (a, pa) else (a, pa)
        flow = flow_id(f["proto"], client, server, f["vlan"])
        over = overrides.get((rel, flow))
        out.append(OrderedDict([
            ("flow", flow),
            ("proto", f["proto"]),
            ("client", client[0]), ("client_port", int(client[1])),
            ("server", server[0]), ("server_port", int(server[1])),
            ("vlan", f["vlan"]),
            ("tunnel", "/".join(f["tunnel"])),
            ("frames", f["frames"]),
            ("first_frame", f["first_frame"]),
            ("first_us", f["first_us"]),
            ("label", over[0] if over else label),
            ("tshark", ":".join(sorted(f["tshark"])) or "-"),
        ]))
        if over:
            out[-1]["tshark_label"] = label
            out[-1]["override"] = over[1]
        used.add((rel, flow))
    return out


def main(argv):
    rules = tshark_args()
    overrides = read_overrides()
    used = set()
    if argv and argv[0] == "--summary":
        for p in argv[1:]:
            rel = os.path.relpath(os.path.abspath(p), SET)
            for fl in label_capture(rel, rules.get(rel, []), overrides, used):
                t = f" [{fl['tunnel']}]" if fl["tunnel"] else ""
                o = f" (tshark: {fl['tshark_label']}; {fl['override']})" if "override" in fl else ""
                print(f"{rel}: {fl['flow']}{t} {fl['frames']} frames: {fl['label']} ({fl['tshark']}){o}")
        return 0
    labels = OrderedDict()
    for rel in captures():
        labels[rel] = label_capture(rel, rules.get(rel, []), overrides, used)
    stale = set(overrides) - used
    if stale:
        raise SystemExit(f"overrides.tsv names flows that are not in the set: {sorted(stale)}")
    text = json.dumps({"tshark": tshark_version(), "captures": labels}, indent=1) + "\n"
    if argv and argv[0] == "--check":
        old = open(LABELS).read() if os.path.exists(LABELS) else ""
        if old != text:
            print("labels.json differs from what tshark says now", file=sys.stderr)
            return 1
        return 0
    with open(LABELS, "w") as fh:
        fh.write(text)
    n = sum(len(v) for v in labels.values())
    print(f"{len(labels)} captures, {n} flows -> {os.path.relpath(LABELS, ROOT)}")
    return 0


def tshark_version():
    res = subprocess.run(["tshark", "--version"], capture_output=True, text=True)
    return res.stdout.splitlines()[0].strip() if res.stdout else "tshark"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
