#!/usr/bin/env python3
"""Builds the SQL injection measurement set for `sqli-rates` (perf/RESULTS.md, "SQL injection
detection") as JSON lines, one item per line:

  {"kind": "http", "label": "attack"|"benign", "source": "...", "request": "<raw HTTP/1.1 request>"}
  {"kind": "sql",  "label": "attack"|"benign", "source": "...", "dialect": "mysql"|"ansi", "text": "..."}

Strings carry bytes as Latin-1 code points. Sources:
- sqlmap's own payloads (Debian package `sqlmap`, data/xml/payloads/*.xml + boundaries.xml),
  combined the way lib/controller/checks.py and lib/core/agent.py do (boundary prefix, test
  payload, comment or boundary suffix; <where> 1 = original value + payload, 2 = -RANDNUM +
  payload, 3 = payload replaces the value; [RANDNUM]/[RANDSTR]/[SLEEPTIME]/[DELIMITER_*]/
  [ORIGVALUE]/[GENERIC_SQL_COMMENT] substituted; quoted strings escaped per DBMS like
  plugins/dbms/*/syntax.py), plus UNION column probes like lib/techniques/union/test.py. Each
  value becomes an HTTP GET parameter and a form body; the values whose boundary fits a WHERE
  clause also become the statement a vulnerable application builds for the boundary's
  parameter type (numeric, '...', LIKE '%...%', "...", LIKE "%...%").
- the corpus captures (TCP reassembled here): sqlinjection-http.pcap (every request; attack
  when a parameter value is not a plain word/number), sqlinjection-mysql.pcap (COM_QUERY: the
  /item statements with a non-numeric id are attacks; the /search statements carry the payloads
  as correctly escaped literals and are benign at the SQL level; SET and plain-id statements
  are the benign baseline), http.pcap, mysql.pcap, postgresql.pcap, cassandra.pcap (benign).
- pgbench's built-in scripts (`pgbench --show-script`, Debian package postgresql) in simple
  (values) and extended ($n) form, sysbench's OLTP statement templates (Debian package
  sysbench, /usr/share/sysbench/oltp_common.lua) instantiated with values, and search-box text.

Usage: python3 perf/sqli/dataset.py [OUT.jsonl]   (default perf/out/sqli-dataset.jsonl)
"""

import glob
import json
import os
import random
import re
import struct
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET

SQLMAP = "/usr/share/sqlmap/data/xml"
CORPUS = os.environ.get("CORPUS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../corpus"))
rnd = random.Random(20261201)


def randint():
    return str(rnd.randint(1000, 9999))


def randstr(n=4):
    return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))


DELIM_ALPHA = "zqxjkvbp"  # sqlmap KB_CHARS_LOW_FREQUENCY_ALPHABET
DELIM_START = "q" + "".join(rnd.choice(DELIM_ALPHA) for _ in range(3)) + "q"
DELIM_STOP = "q" + "".join(rnd.choice(DELIM_ALPHA) for _ in range(3)) + "q"


def escaper(dbms):
    """The quoted-string escaper of sqlmap's DBMS plugin (plugins/dbms/*/syntax.py)."""
    if dbms == "MySQL":
        return lambda v: "0x" + v.encode().hex()
    if dbms in ("PostgreSQL",):
        return lambda v: "(" + "||".join("CHR(%d)" % ord(c) for c in v) + ")"
    if dbms in ("Microsoft SQL Server", "Sybase"):
        return lambda v: "+".join("CHAR(%d)" % ord(c) for c in v)
    if dbms == "Oracle":
        return lambda v: "||".join("CHR(%d)" % ord(c) for c in v)
    if dbms == "SQLite":
        return lambda v: "CHAR(%s)" % ",".join("%d" % ord(c) for c in v)
    return None


def escape(expr, dbms):
    esc = escaper(dbms)
    if esc is None:
        return expr
    out = expr
    for item in re.findall(r"'[^']*'+", expr):
        orig = item[1:-1]
        if orig and not re.search(r"\[(SLEEPTIME|RAND)", orig):
            out = out.replace(item, esc(orig))
    return out


def cleanup(payload, orig):
    rep = {
        "[DELIMITER_START]": DELIM_START,
        "[DELIMITER_STOP]": DELIM_STOP,
        "[AT_REPLACE]": "@",
        "[SPACE_REPLACE]": " ",
        "[DOLLAR_REPLACE]": "$",
        "[HASH_REPLACE]": "#",
        "[GENERIC_SQL_COMMENT]": "-- [RANDSTR]",
    }
    for k, v in rep.items():
        payload = payload.replace(k, v)
    for m in set(re.findall(r"(?i)\[RANDNUM(?:\d+)?\]", payload)):
        payload = payload.replace(m, randint())
    for m in set(re.findall(r"(?i)\[RANDSTR(?:\d+)?\]", payload)):
        payload = payload.replace(m, randstr())
    payload = payload.replace("[ORIGVALUE]", orig if orig.isdigit() else "'%s'" % orig)
    payload = payload.replace("[ORIGINAL]", orig)
    payload = payload.replace("[SLEEPTIME]", "5").replace("[SINGLE_QUOTE]", "'")
    return payload


def ints(s):
    """A sqlmap list: "1,2,3" or a range "1-8"."""
    out = []
    for x in s.split(",") if s else ["0"]:
        a, _, b = x.strip().partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def text(e, tag):
    x = e.find(tag)
    return (x.text or "") if x is not None else ""


def boundaries():
    out = []
    for b in ET.parse(os.path.join(SQLMAP, "boundaries.xml")).getroot().iter("boundary"):
        out.append(dict(level=int(text(b, "level")), clause=ints(text(b, "clause")), where=ints(text(b, "where")),
                        ptype=int(text(b, "ptype")), prefix=text(b, "prefix"), suffix=text(b, "suffix")))
    return out


def tests():
    for f in sorted(glob.glob(os.path.join(SQLMAP, "payloads", "*.xml"))):
        for t in ET.parse(f).getroot().iter("test"):
            req = t.find("request")
            dbms = ""
            d = t.find("details")
            if d is not None and d.find("dbms") is not None:
                dbms = (d.find("dbms").text or "").strip()
            yield dict(file=os.path.basename(f), title=text(t, "title"), clause=ints(text(t, "clause")),
                       where=ints(text(t, "where")), payload=text(req, "payload"), comment=text(req, "comment"),
                       columns=text(req, "columns"), char=text(req, "char"), dbms=dbms)


def bind(expr, b, comment, where):
    """agent.prefixQuery + agent.suffixQuery."""
    prefix, suffix = b["prefix"], b["suffix"]
    if where == 3:
        q = ""
    else:
        q = cleanup(prefix, "")
        if not (expr and expr[0] == ";") and not (q and q[-1] in "()" and expr and expr[0] in "()") and not (q and q[-1] == "("):
            q += " "
    q += expr
    if comment:
        q += cleanup(comment, "")
    elif where != 3 and suffix:
        suffix = cleanup(suffix, "")
        if re.search(r"\w\Z", q) and re.search(r"\A\w", suffix):
            q += " "
        q += suffix
    return re.sub(r";\W*;", ";", q)


def with_where(bound, where, orig):
    if where == 1:
        return orig + bound
    if where == 2:
        return "-" + randint() + bound
    return bound


def union_exprs(t):
    """UNION column probes (lib/techniques/union/test.py: ORDER BY n, then UNION ALL SELECT of n
    columns with a marker column)."""
    lo, hi = 1, 10
    m = re.match(r"(\d+)-(\d+)", t["columns"])
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
    char = t["char"]
    char = "NULL" if char in ("[CHAR]", "NULL") else randint()
    marker = {"MySQL": "CONCAT(0x%s,0x%s,0x%s)" % (DELIM_START.encode().hex(), randstr(8).encode().hex(),
                                                   DELIM_STOP.encode().hex()),
              "SQLite": "CHAR(%s)||CHAR(%s)" % (",".join(str(ord(c)) for c in DELIM_START),
                                                 ",".join(str(ord(c)) for c in randstr(8)))}
    for n in range(lo, hi + 1):
        yield "ORDER BY %d" % n
        yield "UNION ALL SELECT " + ",".join([char] * n)
        for dbms, mk in marker.items():
            pos = rnd.randrange(n)
            yield "UNION ALL SELECT " + ",".join(mk if i == pos else char for i in range(n))


STATEMENTS = {
    1: ("SELECT id, name, price FROM items WHERE id=%s", "1"),
    2: ("SELECT id, name, price FROM items WHERE name='%s'", "apple"),
    3: ("SELECT id, name, price FROM items WHERE name LIKE '%%%s%%'", "apple"),
    4: ('SELECT id, name, price FROM items WHERE name="%s"', "apple"),
    5: ('SELECT id, name, price FROM items WHERE name LIKE "%%%s%%"', "apple"),
}


def statement_type(b):
    """The parameter type a boundary's prefix breaks out of. sqlmap's <ptype> is not always
    consistent with its prefix (`")) AS x WHERE` is filed as ptype 2, single quoted), so the
    quote is taken from the prefix; identifier and backtick contexts get no statement."""
    pre = b["prefix"].lstrip("%")
    if b["ptype"] == 6 or pre.startswith(("`", "]")):
        return None
    like = b["ptype"] in (3, 5)
    if pre.startswith("'"):
        return 3 if like else 2
    if pre.startswith('"'):
        return 5 if like else 4
    return 1 if b["ptype"] == 1 else None


def sqlmap_items():
    seen = set()
    bs = boundaries()
    for t in tests():
        exprs = list(union_exprs(t)) if "union" in t["file"] else [t["payload"]]
        for b in bs:
            if t["clause"] != [0] and b["clause"] != [0] and not set(t["clause"]) & set(b["clause"]):
                continue
            for where in t["where"]:
                if where not in b["where"]:
                    continue
                for e in exprs:
                    if not e:
                        continue
                    stype = statement_type(b)
                    tmpl, orig = STATEMENTS.get(stype, (None, "apple" if b["ptype"] in (2, 3, 4, 5) else "1"))
                    expr = escape(cleanup(e, orig), t["dbms"])
                    comment = t["comment"] or None
                    value = with_where(bind(expr, b, comment, where), where, orig)
                    if value in seen:
                        continue
                    seen.add(value)
                    src = "sqlmap " + t["file"].replace(".xml", "")
                    q = urllib.parse.quote(value, safe="")
                    yield dict(kind="http", label="attack", source="sqlmap GET " + t["file"].replace(".xml", ""),
                               request="GET /item?id=%s HTTP/1.1\r\nHost: app\r\n\r\n" % q)
                    body = "id=" + q
                    yield dict(kind="http", label="attack", source="sqlmap POST " + t["file"].replace(".xml", ""),
                               request="POST /item HTTP/1.1\r\nHost: app\r\nContent-Type: application/x-www-form-urlencoded"
                                       "\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    if tmpl and (0 in b["clause"] or 1 in b["clause"]):
                        dialect = "mysql" if t["dbms"] in ("", "MySQL") or stype in (4, 5) else "ansi"
                        yield dict(kind="sql", label="attack", source=src, dialect=dialect, text=tmpl % value)


# ---------------------------------------------------------------- captures


def pcap_flows(path):
    """Client->server and server->client byte streams of each TCP flow (ordered by seq,
    retransmissions dropped). Returns [(client_port, server_port, c2s, s2c)]."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    flows = {}
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 1:
            if len(pkt) < 14:
                continue
            et = struct.unpack(">H", pkt[12:14])[0]
            pkt = pkt[14:]
            if et == 0x8100:
                et = struct.unpack(">H", pkt[2:4])[0]
                pkt = pkt[4:]
            if et != 0x0800:
                continue
        elif linktype == 113:
            pkt = pkt[16:]
        if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 6:
            continue
        ihl = (pkt[0] & 15) * 4
        tot = struct.unpack(">H", pkt[2:4])[0]
        src, dst = pkt[12:16], pkt[16:20]
        tcp = pkt[ihl:tot]
        sp, dp, seq = struct.unpack(">HHI", tcp[:8])
        flags = tcp[13]
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        key = tuple(sorted([(src, sp), (dst, dp)]))
        f = flows.setdefault(key, {"syn": None, "segs": {}})
        if flags & 0x02 and not flags & 0x10:
            f["syn"] = (src, sp)
        if payload:
            f["segs"].setdefault((src, sp), {}).setdefault(seq, payload)
    out = []
    for key, f in flows.items():
        client = f["syn"] or key[0]
        server = key[1] if key[0] == client else key[0]

        def stream(end):
            segs = f["segs"].get(end, {})
            b = b""
            nxt = None
            for seq in sorted(segs):
                p = segs[seq]
                if nxt is not None and seq < nxt:
                    p = p[nxt - seq:]
                b += p
                nxt = seq + len(segs[seq]) if nxt is None or seq + len(segs[seq]) > nxt else nxt
            return b

        out.append((client[1], server[1], stream(client), stream(server)))
    return out


def http_requests(stream):
    """Raw requests (head + Content-Length body) of a client stream."""
    i = 0
    while i < len(stream):
        e = stream.find(b"\r\n\r\n", i)
        if e < 0:
            break
        head = stream[i:e + 4]
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        yield stream[i:e + 4 + n]
        i = e + 4 + n


def param_values(req):
    line = req.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    target = parts[1] if len(parts) > 1 else ""
    vals = []
    if "?" in target:
        vals += [v for _, v in urllib.parse.parse_qsl(target.split("?", 1)[1], keep_blank_values=True)]
    body = req.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in req else b""
    if body:
        vals += [v for _, v in urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True)]
    return target, vals


def corpus_http(name, default_label=None):
    for cport, sport, c2s, _ in pcap_flows(os.path.join(CORPUS, name)):
        for req in http_requests(c2s):
            target, vals = param_values(req)
            if default_label:
                label, src = default_label, "pcap " + name
            else:
                attack = any(not re.fullmatch(r"[A-Za-z0-9]*", v) for v in vals)
                path = target.split("?")[0]
                label = "attack" if attack else "benign"
                src = "pcap %s %s%s" % (name, path, "" if attack else " (baseline)")
            yield dict(kind="http", label=label, source=src, request=req.decode("latin-1"))


def mysql_queries(stream):
    i = 0
    while i + 4 <= len(stream):
        n = stream[i] | stream[i + 1] << 8 | stream[i + 2] << 16
        seq = stream[i + 3]
        p = stream[i + 4:i + 4 + n]
        i += 4 + n
        if seq == 0 and p[:1] in (b"\x03", b"\x16"):
            yield p[1:]


def pg_queries(stream):
    # Start-up message (untyped), possibly after an SSLRequest answered 'N'.
    i = 0
    while i + 8 <= len(stream) and stream[i] == 0:
        n = struct.unpack(">I", stream[i:i + 4])[0]
        i += n
    while i + 5 <= len(stream):
        t = stream[i:i + 1]
        n = struct.unpack(">I", stream[i + 1:i + 5])[0]
        body = stream[i + 5:i + 1 + n]
        i += 1 + n
        if t == b"Q":
            yield body.split(b"\0")[0]
        elif t == b"P":
            yield body.split(b"\0")[1]


def cql_queries(stream):
    i = 0
    while i + 9 <= len(stream):
        ver = stream[i] & 0x7F
        if ver > 4:
            break  # v5 segment framing: not used by the capture's statements
        op = stream[i + 4]
        n = struct.unpack(">I", stream[i + 5:i + 9])[0]
        body = stream[i + 9:i + 9 + n]
        i += 9 + n
        if op in (0x07, 0x09) and len(body) >= 4:
            ln = struct.unpack(">i", body[:4])[0]
            yield body[4:4 + ln]


def corpus_sql():
    for cport, sport, c2s, _ in pcap_flows(os.path.join(CORPUS, "sqlinjection-mysql.pcap")):
        for q in mysql_queries(c2s):
            s = q.decode("latin-1")
            m = re.match(r"SELECT id, name, price FROM items WHERE id=(.*)$", s, re.S)
            if m:
                attack = not re.fullmatch(r"\d+", m.group(1))
                src = "pcap sqlinjection-mysql /item" + ("" if attack else " (baseline)")
                yield dict(kind="sql", label="attack" if attack else "benign", source=src, dialect="mysql", text=s)
            elif "WHERE name = " in s:
                yield dict(kind="sql", label="benign", source="pcap sqlinjection-mysql /search (escaped payloads)",
                           dialect="mysql", text=s)
            else:
                yield dict(kind="sql", label="benign", source="pcap sqlinjection-mysql (baseline)", dialect="mysql",
                           text=s)
    for name, fn, dialect in (("mysql.pcap", mysql_queries, "mysql"), ("postgresql.pcap", pg_queries, "ansi"),
                              ("cassandra.pcap", cql_queries, "cql")):
        for cport, sport, c2s, _ in pcap_flows(os.path.join(CORPUS, name)):
            for q in fn(c2s):
                yield dict(kind="sql", label="benign", source="pcap " + name, dialect=dialect, text=q.decode("latin-1"))


# ---------------------------------------------------------------- benign generators


def pgbench():
    for script in ("tpcb-like", "simple-update", "select-only"):
        try:
            out = subprocess.run(["pgbench", "--show-script=" + script], capture_output=True, text=True).stderr
            out += subprocess.run(["pgbench", "--show-script=" + script], capture_output=True, text=True).stdout
        except OSError:
            return
        stmts = [l.strip() for l in out.splitlines() if l.strip() and not l.startswith(("\\", "--"))]
        for k in range(20):
            vals = {"aid": str(rnd.randint(1, 100000)), "bid": "1", "tid": str(rnd.randint(1, 10)),
                    "delta": str(rnd.randint(-5000, 5000))}
            for s in stmts:
                simple = re.sub(r":(\w+)", lambda m: vals.get(m.group(1), m.group(0)), s)
                yield dict(kind="sql", label="benign", source="pgbench builtin (-M simple)", dialect="ansi", text=simple)
                if k == 0:
                    names = []
                    ext = re.sub(r":(\w+)", lambda m: "$%d" % (names.append(m.group(1)) or len(names)), s)
                    yield dict(kind="sql", label="benign", source="pgbench builtin (-M extended)", dialect="ansi",
                               text=ext)


def sysbench():
    path = "/usr/share/sysbench/oltp_common.lua"
    if not os.path.exists(path):
        return
    lua = open(path).read()
    tmpls = re.findall(r'"((?:SELECT|UPDATE|DELETE|INSERT)[^"]*)"', lua)
    create = ("CREATE TABLE sbtest%d(\n  id INTEGER NOT NULL AUTO_INCREMENT,\n  k INTEGER DEFAULT '0' NOT NULL,\n"
              "  c CHAR(120) DEFAULT '' NOT NULL,\n  pad CHAR(60) DEFAULT '' NOT NULL,\n  PRIMARY KEY (id)\n"
              ") /*! ENGINE = innodb */ ")

    def cval(groups):
        return "-".join("".join(rnd.choice("0123456789") for _ in range(11)) for _ in range(groups))

    for t in range(1, 5):
        yield dict(kind="sql", label="benign", source="sysbench oltp", dialect="mysql", text=create % t)
        yield dict(kind="sql", label="benign", source="sysbench oltp", dialect="mysql",
                   text="CREATE INDEX k_%d ON sbtest%d(k)" % (t, t))
        rows = ",".join("(%d, %d, '%s', '%s')" % (i, rnd.randint(1, 100000), cval(10), cval(5)) for i in range(1, 30))
        yield dict(kind="sql", label="benign", source="sysbench oltp", dialect="mysql",
                   text="INSERT INTO sbtest%d(id, k, c, pad) VALUES%s" % (t, rows))
    for k in range(25):
        for tm in tmpls:
            s = tm.replace("%u", str(rnd.randint(1, 16))).replace("%s", "sbtest1").replace("%%", "%")
            args = iter([str(rnd.randint(1, 100000)), str(rnd.randint(1, 100000)), "'%s'" % cval(10),
                         "'%s'" % cval(5)])
            if "c=?" in s:
                args = iter(["'%s'" % cval(10), str(rnd.randint(1, 100000))])
            if "BETWEEN" in s:
                a = rnd.randint(1, 99000)
                args = iter([str(a), str(a + 99)])
            s = re.sub(r"\?", lambda m: next(args, "1"), s)
            yield dict(kind="sql", label="benign", source="sysbench oltp", dialect="mysql", text=s)
    for s in ("BEGIN", "COMMIT", "SET tmp_table_size=2*1024*1024*1024", "ANALYZE TABLE sbtest1"):
        yield dict(kind="sql", label="benign", source="sysbench oltp", dialect="mysql", text=s)


SEARCH_BOX = [
    "O'Reilly books", "1=1 math", "select a product", "drop-down", "drop-down menu", "rock & roll", "AT&T",
    "john.doe@example.com", "o'connor@mail.example.org", '{"a": 1, "b": [2, 3]}', '{"q":"shoes","size":42}',
    "what's new", "it's 5 o'clock", "Tom's Diner", "C++ -- tutorial", "SQL UNION tutorial", "order by price",
    "1 or 2 items", "50% off", "/* comment */", "--help", "a;b;c", "(555) 123-4567", "where is my order?", "null",
    "true", "#hashtag", "3 > 2", "x=1 and y=2", "select", "union", "Union Station", "insert coin",
    "delete my account", "update firmware", "DROP TABLE tutorial", "Robert'); DROP TABLE Students;-- xkcd",
    "1' OR '1'='1 explained", "sleep apnea", "benchmark results", "char(10)", "concat strings", "version 2.0",
    "information schema", "mysql.user table", "SELECT * FROM users", "apples & oranges", "10/20/2024",
    "2024-01-01T10:00:00Z", "€100", "naïve café", "日本語", "-1", "3.14", "+33 1 23 45 67 89", "a+b=c", "100% cotton",
    "\"quoted phrase\"", "'single'", "it's", "don't stop", "I'm feeling lucky", "x' or y", "or else", "and/or",
    "black or white", "cats and dogs", "1 and 2", "not found", "is null", "like new", "in stock", "between 10 and 20",
    "top 10", "limit 5", "group by", "having fun", "exec summary", "waitfor it", "shutdown windows", "having",
    "1,2,3", "[1, 2, 3]", "key=value", "a=b", "path/to/file.txt", "C:\\Users\\me", "<b>bold</b>", "@mention",
    "user@host:~$", "~/.bashrc", "| grep", "`backticks`", "$HOME", "%", "_", "'", "\"", "--", "#", ";",
]


def search_box():
    for v in SEARCH_BOX:
        q = urllib.parse.quote_plus(v)
        yield dict(kind="http", label="benign", source="search-box text (GET)",
                   request="GET /search?q=%s&page=1 HTTP/1.1\r\nHost: shop\r\n\r\n" % q)
        body = "q=%s&lang=en" % q
        yield dict(kind="http", label="benign", source="search-box text (POST form)",
                   request="POST /search HTTP/1.1\r\nHost: shop\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                           "Content-Length: %d\r\n\r\n%s" % (len(body), body))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "out", "sqli-dataset.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    counts = {}
    with open(out, "w") as f:
        for gen in (sqlmap_items(), corpus_http("sqlinjection-http.pcap"), corpus_http("http.pcap", "benign"),
                    corpus_sql(), pgbench(), sysbench(), search_box()):
            for item in gen:
                f.write(json.dumps(item) + "\n")
                k = (item["kind"], item["label"], item["source"])
                counts[k] = counts.get(k, 0) + 1
    for k in sorted(counts):
        print("%-5s %-7s %6d  %s" % (k[0], k[1], counts[k], k[2]))
    print("wrote", out)


if __name__ == "__main__":
    main()
