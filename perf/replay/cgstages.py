#!/usr/bin/env python3
"""Instructions per frame by pipeline stage, from a callgrind profile of `warden replay`.

Usage: cgstages.py FRAMES CALLGRIND_OUT[=LABEL]... [--json]

Reads the call graph of a callgrind output file (`--dump-instr=no`, the default) and gives
every instruction to a stage: a function that is the entry of a stage (ENTRIES, matched on
the start of its demangled name) is in that stage; any other function is in the stages of
its callers, in proportion to the instructions each caller's calls to it cost (callgrind's
inclusive cost per call edge). A function reached by no entry is `start-up and rest` (argument
parsing, allocating the per-core tables, freeing them). Entries must not be inlined: the
pipeline's stage functions are `#[inline(never)]` for this.

Prints a Markdown table: per stage, instructions per frame and share of each profile (one
column pair per file, labelled LABEL or the file name), and the totals.
"""
import json
import re
import sys
from collections import defaultdict

# (stage, name prefixes of its entry functions), in pipeline order. A more specific entry
# nested in another stage's entry wins for what it calls (e.g. the threat checks parsers call).
STAGES = [
    ("read (pcap, link layer)", ["warden_dp::replay::read_capture", "warden_dp::replay::replay_file"]),
    ("decode", ["warden_dp::wire::decode"]),
    ("defrag", ["warden_dp::inspect::Inspector::fragment", "warden_dp::inspect::Inspector::expire_fragments",
                "warden_dp::defrag::"]),
    ("sessions (lookup, state, expiry, origin, ICMP)", [
        "warden_dp::session::SessionTable::track", "warden_dp::session::SessionTable::expire",
        "warden_dp::session::SessionTable::find", "warden_dp::inspect::Inspector::check_origin",
        "warden_dp::icmp::stage"]),
    ("normalisation (checksums, TCP judging)", [
        "warden_dp::checksum::", "warden_dp::normalize::judge", "warden_dp::inspect::Inspector::header_checksum"]),
    ("streams (TCP reassembly, kept bytes)", ["warden_dp::stream::Stream::"]),
    ("app detection and parsers", [
        "warden_dp::inspect::Inspector::inspect_payload", "warden_dp::app::engine::",
        "<warden_dp::app::engine::Detector as warden_dp::stream::Sink>"]),
    ("threats", [
        "warden_dp::detect::", "warden_dp::threat::", "warden_dp::inspect::Inspector::frame_threats",
        "warden_dp::inspect::Inspector::tcp_session_threats", "warden_dp::inspect::Inspector::parser_threats",
        "warden_dp::inspect::Inspector::cross_session_threats", "warden_dp::inspect::Inspector::dns_tunnel",
        "warden_dp::inspect::Inspector::source_limit", "warden_dp::inspect::Inspector::flush_threats",
        "warden_dp::inspect::Inspector::raise_parser_threats", "warden_dp::inspect::Inspector::session_threat",
        "libinjectionrs::"]),
    ("policy", ["warden_dp::inspect::Inspector::enforce", "warden_dp::inspect::Inspector::learn_names",
                "warden_dp::enforce::", "warden_dp::policy::"]),
    ("records (snapshots, JSON)", [
        "warden_dp::replay::Pipeline<C>::drain", "warden_dp::replay::Pipeline<C>::take_events",
        "warden_dp::replay::Pipeline<C>::finish", "warden_dp::record::",
        "warden_dp::inspect::Inspector::drain_ended", "warden_dp::inspect::Inspector::snapshot",
        "warden_control::types::_::<impl serde_core::ser::Serialize for warden_control::types::ConnectionRecord>",
        "core::ptr::drop_in_place<warden_control::types::ConnectionRecord>",
        "alloc::slice::<impl [T]>::sort_by_key"]),
    ("pipeline glue (frame loop, dispatch, verdicts)", [
        "warden_dp::replay::Pipeline<C>::frame", "warden_dp::replay::Pipeline<C>::tick",
        "warden_dp::inspect::Inspector::process_frame", "warden_dp::replay::replay_file::{{closure}}"]),
]
REST = "start-up and rest"


def stage_of(name):
    """The stage `name` is an entry of (the longest matching prefix), or None."""
    best, best_len = None, -1
    for stage, prefixes in STAGES:
        for p in prefixes:
            if name.startswith(p) and len(p) > best_len:
                best, best_len = stage, len(p)
    return best


def parse(path):
    """(self cost per function, {(caller, callee): inclusive cost of its calls}, total)."""
    names = {}
    selfc = defaultdict(int)
    edges = defaultdict(int)
    total = 0
    fn = None
    callee = None
    pending_call = False

    def name_of(spec):
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if line.startswith("fn="):
                fn = name_of(line[3:])
                continue
            if line.startswith("cfn="):
                callee = name_of(line[4:])
                continue
            if line.startswith("calls="):
                pending_call = True
                continue
            if line.startswith("summary:"):
                total = int(line.split()[1])
                continue
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call:
                    edges[(fn, callee)] += cost
                    pending_call = False
                else:
                    selfc[fn] += cost
    return selfc, edges, total


def attribute(selfc, edges):
    """Instructions per stage."""
    funcs = set(selfc) | {a for a, _ in edges} | {b for _, b in edges}
    into = defaultdict(list)  # callee -> [(caller, cost)]
    for (a, b), cost in edges.items():
        if a != b:
            into[b].append((a, cost))
    own = {f: stage_of(f) for f in funcs}
    dist = {}

    def distribution(f, depth=0):
        if f in dist:
            return dist[f]
        if own[f] is not None:
            dist[f] = {own[f]: 1.0}
            return dist[f]
        dist[f] = {REST: 1.0}  # cycles: provisional
        callers = into.get(f, [])
        weight = sum(c for _, c in callers)
        if weight == 0 or depth > 200:
            return dist[f]
        d = defaultdict(float)
        for g, c in callers:
            for s, share in distribution(g, depth + 1).items():
                d[s] += share * c / weight
        dist[f] = dict(d)
        return dist[f]

    sys.setrecursionlimit(10000)
    out = defaultdict(float)
    for f, cost in selfc.items():
        for s, share in distribution(f).items():
            out[s] += cost * share
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    frames = int(args[0])
    order = [s for s, _ in STAGES] + [REST]
    cols = []
    for spec in args[1:]:
        path, _, label = spec.partition("=")
        selfc, edges, total = parse(path)
        per = attribute(selfc, edges)
        cols.append((label or path, total, {s: per.get(s, 0.0) for s in order}))
    if "--json" in sys.argv:
        print(json.dumps([{"label": l, "frames": frames, "total": t, "stages": {s: round(v) for s, v in d.items()}}
                          for l, t, d in cols], indent=1))
        return
    print("| stage | " + " | ".join(f"{l}: instr./frame | share" for l, _, _ in cols) + " |")
    print("|---|" + "---:|---:|" * len(cols))
    for s in order:
        cells = " | ".join(f"{d[s] / frames:,.0f} | {100 * d[s] / t:.1f} %" for _, t, d in cols)
        print(f"| {s} | {cells} |")
    cells = " | ".join(f"**{t / frames:,.0f}** | 100 %" for _, t, _ in cols)
    print(f"| **total** | {cells} |")


if __name__ == "__main__":
    main()
