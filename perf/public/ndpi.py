#!/usr/bin/env python3
"""nDPI's verdicts on the public capture set, for comparison with Warden's.

Usage: perf/public/ndpi.py [--check]

Runs `ndpiReader` (Debian's libndpi-bin) over every capture of dp/tests/captures/public/ with
`-d` (no guessing by port or address: only what its dissectors detect, as Warden does) and `-t`
(decapsulate GTP, as far as this version goes), reads its CSV flows and writes
dp/tests/captures/public/ndpi.json: per capture, each flow nDPI reports with the Warden app its
protocol maps to (NDPI_TO_APP; "other" for a protocol Warden does not parse, "unknown" when nDPI
detected nothing). nDPI 4.2 lists only flows it has a verdict for in its CSV; a labelled flow
without a row there is unknown to nDPI. `--check` compares instead of writing.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from label import LABELS, ROOT, SET, captures  # noqa: E402

OUT = os.path.join(SET, "ndpi.json")

# nDPI protocol names (master or application part of "Master.App") -> Warden app.
NDPI_TO_APP = {
    "HTTP": "http",
    "HTTP_Connect": "http",
    "HTTP_Proxy": "http",
    "TLS": "tls",
    "DNS": "dns",
    "MDNS": "dns",
    "LLMNR": "dns",
    "SSH": "ssh",
    "Redis": "redis",
    "MySQL": "mysql",
    "PostgreSQL": "postgresql",
    "MongoDB": "mongodb",
    "Cassandra": "cassandra",
    "Memcached": "couchbase",
    "NTP": "ntp",
    "DHCP": "dhcp",
    "TFTP": "tftp",
    "MsSQL-TDS": "tds",
    "Oracle": "tns",
}


def verdict(name):
    """Warden app of an nDPI protocol string ("TLS.Google", "DNS", "Google", "Unknown")."""
    parts = name.split(".")
    for p in parts:
        if p in NDPI_TO_APP:
            return NDPI_TO_APP[p]
    if parts == ["Unknown"] or not name:
        return "unknown"
    return "other"


def run(rel):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "flows.csv")
        res = subprocess.run(["ndpiReader", "-d", "-t", "-q", "-i", os.path.join(SET, rel), "-C", out],
                             capture_output=True, text=True)
        if not os.path.exists(out):
            return {"error": (res.stderr or res.stdout).strip()[-300:]}
        rows = []
        with open(out, newline="") as fh:
            for r in csv.DictReader(fh):
                proto = {"6": "tcp", "17": "udp"}.get(r["protocol"])
                if proto is None:
                    continue
                rows.append(OrderedDict([
                    ("proto", proto),
                    ("src", r["src_ip"]), ("src_port", int(r["src_port"])),
                    ("dst", r["dst_ip"]), ("dst_port", int(r["dst_port"])),
                    ("first_us", round(float(r["first_seen"]) * 1_000_000) if r["first_seen"] else 0),
                    ("ndpi", r["ndpi_proto"]),
                    ("app", verdict(r["ndpi_proto"])),
                ]))
        return {"flows": rows}


def main(argv):
    ver = subprocess.run(["ndpiReader", "-h"], capture_output=True, text=True)
    version = next((l.strip() for l in (ver.stdout + ver.stderr).splitlines() if "nDPI" in l), "nDPI")
    data = OrderedDict()
    for rel in captures():
        data[rel] = run(rel)
    text = json.dumps({"ndpi": version, "captures": data}, indent=1) + "\n"
    if argv and argv[0] == "--check":
        old = open(OUT).read() if os.path.exists(OUT) else ""
        return 0 if old == text else 1
    with open(OUT, "w") as fh:
        fh.write(text)
    n = sum(len(v.get("flows", [])) for v in data.values())
    print(f"{len(data)} captures, {n} nDPI flows -> {os.path.relpath(OUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
