#!/usr/bin/env python3
"""Scores Warden and nDPI on the public capture set against tshark's labels.

Usage: perf/public/score.py [--warden PATH] [--misses] [--markdown]

Replays every capture of dp/tests/captures/public/ with `warden replay` (PATH, else $WARDEN,
else target/release/warden, else target/debug/warden), matches sessions to the labelled flows
of labels.json exactly as dp/tests/public_captures.rs does (protocol and endpoints, the latest
flow that started before the session when several share them; a flow's verdict is the set of
its sessions' apps other than unknown), does the same with nDPI's flows of ndpi.json (written
by perf/public/ndpi.py), and prints per label: flows, Warden right, nDPI right. Then the flows
nDPI gets right and Warden does not (with the reason from misses.tsv), and Warden's false
labels. `--misses` prints instead every flow Warden gets wrong as misses.tsv lines (reason
column from misses.tsv where the flow is listed, else "?").
"""

import ipaddress
import json
import os
import subprocess
import sys
from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from label import ROOT, SET  # noqa: E402


def addr(a):
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return a


def key(proto, a, pa, b, pb):
    x, y = (addr(a), int(pa)), (addr(b), int(pb))
    return (proto,) + (x + y if x <= y else y + x)


def end(a, p):
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def rfc3339_us(t):
    # "2022-11-18T12:23:36.062868Z"
    d = datetime.strptime(t.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    return int((d - datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + d.microsecond


def warden_sessions(warden, rel):
    res = subprocess.run([warden, "replay", os.path.join(SET, rel)], capture_output=True, text=True,
                         env=dict(os.environ, RUST_LOG="error"))
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        # as dp/tests/public_captures.rs writes it: relative to the set, up to the first ';'
        last = last.removeprefix("warden: ").replace(SET + "/", "").split(";")[0]
        return None, last
    out = []
    for line in res.stdout.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        proto = {6: "tcp", 17: "udp"}.get(r["ip_proto"])
        if proto is None:
            continue
        c, s = addr(r["client_ip"]), addr(r["server_ip"])
        out.append((key(proto, c, r["client_port"], s, r["server_port"]),
                    f"{proto} {end(c, r['client_port'])} > {end(s, r['server_port'])}",
                    rfc3339_us(r["first_seen"]), r["app"]))
    return out, None


def assign(flows, sessions):
    """Per flow the set of apps of its sessions (None: no session), and the sessions of no flow."""
    apps = [None] * len(flows)
    extra = OrderedDict()
    for k, sid, first, app in sessions:
        cands = sorted((i for i, f in enumerate(flows) if f["key"] == k), key=lambda i: flows[i]["first_us"])
        if not cands:
            extra.setdefault(sid, set()).add(app)
            continue
        before = [i for i in cands if flows[i]["first_us"] <= first + 1]
        i = before[-1] if before else cands[0]
        if apps[i] is None:
            apps[i] = set()
        apps[i].add(app)
    return apps, extra


def verdict(apps):
    if apps is None:
        return "no record"
    known = sorted(a for a in apps if a != "unknown")
    return "+".join(known) if known else "unknown"


def right(label, got):
    return got in ("unknown", "no record") if label == "none" else got == label


def ndpi_verdicts(flows, rows):
    sess = [(key(r["proto"], r["src"], r["src_port"], r["dst"], r["dst_port"]), "", r["first_us"], r["app"])
            for r in rows]
    apps, _ = assign(flows, sess)
    out = []
    for a in apps:
        if a is None:
            out.append("unknown")
        else:
            known = sorted(x for x in a if x not in ("unknown", "other"))
            out.append("+".join(known) if known else ("other" if "other" in a else "unknown"))
    return out


def ndpi_right(label, got):
    return got in ("unknown", "other") if label == "none" else got == label


def read_misses():
    out = {}
    path = os.path.join(SET, "misses.tsv")
    if os.path.exists(path):
        for line in open(path):
            if line.strip() and not line.startswith("#"):
                f = line.rstrip("\n").split("\t")
                out[(f[0], f[1])] = f
    return out


def main(argv):
    warden = os.environ.get("WARDEN")
    if "--warden" in argv:
        warden = argv[argv.index("--warden") + 1]
    if not warden:
        for c in ("target/release/warden", "target/debug/warden"):
            if os.path.exists(os.path.join(ROOT, c)):
                warden = os.path.join(ROOT, c)
                break
    labels = json.load(open(os.path.join(SET, "labels.json")))["captures"]
    ndpi = json.load(open(os.path.join(SET, "ndpi.json")))["captures"]
    misses = read_misses()
    for flows in labels.values():
        for f in flows:
            f["key"] = key(f["proto"], f["client"], f["client_port"], f["server"], f["server_port"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(labels, pool.map(lambda rel: warden_sessions(warden, rel), labels)))
    rows = []  # (capture, flow, label, warden, ndpi, tunnel)
    for rel, flows in labels.items():
        sess, err = runs[rel]
        nd = ndpi_verdicts(flows, ndpi.get(rel, {}).get("flows", []))
        if sess is None:
            for f, n in zip(flows, nd):
                rows.append((rel, f["flow"], f["label"], f"error: {err}", n, f["tunnel"]))
            continue
        apps, extra = assign(flows, sess)
        for f, a, n in zip(flows, apps, nd):
            rows.append((rel, f["flow"], f["label"], verdict(a), n, f["tunnel"]))
        for sid, a in extra.items():
            rows.append((rel, sid, "none", verdict(a), "-", "(no labelled flow)"))
    if "--misses" in argv:
        for rel, flow, label, got, _, _ in rows:
            if not right(label, got):
                m = misses.get((rel, flow))
                print("\t".join([rel, flow, label, got, m[4] if m else "?"]))
        return 0
    table = defaultdict(lambda: [0, 0, 0])
    for rel, flow, label, got, nd, tunnel in rows:
        if nd == "-":
            continue  # a session of Warden's that is no labelled flow (outer tunnel flows)
        t = table[label]
        t[0] += 1
        t[1] += right(label, got)
        t[2] += ndpi_right(label, nd)
    md = "--markdown" in argv
    order = sorted(table, key=lambda x: (x == "none", x))
    tot = [sum(table[x][i] for x in table) for i in range(3)]
    if md:
        print("| label (tshark) | flows | Warden right | nDPI 4.2 right |")
        print("|---|---:|---:|---:|")
        for lab in order:
            n, w, d = table[lab]
            print(f"| {lab} | {n} | {w} | {d} |")
        print(f"| **all** | {tot[0]} | {tot[1]} ({100 * tot[1] / tot[0]:.1f} %) | {tot[2]} ({100 * tot[2] / tot[0]:.1f} %) |")
    else:
        print(f"{'label (tshark)':<16}{'flows':>7}{'warden':>8}{'ndpi':>7}")
        for lab in order:
            n, w, d = table[lab]
            print(f"{lab:<16}{n:>7}{w:>8}{d:>7}")
        print(f"{'all':<16}{tot[0]:>7}{tot[1]:>8}{tot[2]:>7}")
    tunnels = [r for r in rows if r[5] and r[4] != "-"]
    tw = sum(right(r[2], r[3]) for r in tunnels)
    tn = sum(ndpi_right(r[2], r[4]) for r in tunnels)
    print(f"\n{'(flows inside tunnels/VLAN/MPLS/PPPoE: ' if not md else '- Flows inside tunnels, VLAN, MPLS or PPPoE: '}"
          f"{len(tunnels)} flows, Warden {tw}, nDPI {tn}{')' if not md else ''}")
    extra_false = [r for r in rows if r[4] == "-" and not right("none", r[3])]
    print(f"{'- ' if md else ''}Warden sessions that are no labelled flow (outer tunnel flows, ...): "
          f"{sum(1 for r in rows if r[4] == '-')}, labelled as an app: {len(extra_false)}")
    print(f"\n{'### ' if md else ''}nDPI right, Warden not ({'capture, flow, label, Warden, reason' if md else ''})\n")
    for rel, flow, label, got, nd, _ in rows:
        if nd != "-" and ndpi_right(label, nd) and not right(label, got) and label != "none":
            m = misses.get((rel, flow))
            print(f"{'- ' if md else '  '}{rel} `{flow}`: {label}, Warden {got}; {m[4] if m else 'not in misses.tsv'}")
    print(f"\n{'### ' if md else ''}False labels (tshark: no app of Warden's; Warden: an app)\n")
    for rel, flow, label, got, nd, _ in rows:
        if label == "none" and not right(label, got):
            m = misses.get((rel, flow))
            print(f"{'- ' if md else '  '}{rel} `{flow}`: Warden {got}; {m[4] if m else 'not in misses.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
