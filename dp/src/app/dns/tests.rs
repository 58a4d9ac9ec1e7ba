use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, Rng,
};

fn flow(proto: u8, client_port: u16) -> Flow {
    corpus_flows("dns.pcap")
        .into_iter()
        .find(|f| f.proto == proto && f.client_port == client_port)
        .expect("flow in corpus")
}

/// Feeds a flow the way the engine would (datagrams, or both TCP directions).
fn parse(f: &Flow) -> Map<String, Value> {
    let mut t = Dns::default();
    if f.proto == 17 {
        for (d, dg) in &f.datagrams {
            assert_eq!(t.feed(*d, dg), Feed::Consumed(dg.len()));
        }
    } else {
        assert!(feed_all(&mut t, Dir::ToServer, &f.to_server).is_empty());
        assert!(feed_all(&mut t, Dir::ToClient, &f.to_client).is_empty());
    }
    l7_of(&t)
}

#[test]
fn udp_queries_and_answers() {
    // (client port, query, qtype, qtype id, rcode, answers)
    let cases: &[(u16, &str, &str, u16, &str, &[&str])] = &[
        (34864, "www.corp.test", "A", 1, "NOERROR", &["198.18.0.20"]),
        (50310, "www.corp.test", "AAAA", 28, "NOERROR", &["2001:db8::20"]),
        (53774, "corp.test", "MX", 15, "NOERROR", &[]),
        (47735, "corp.test", "TXT", 16, "NOERROR", &[]),
        (44095, "_ldap._tcp.corp.test", "SRV", 33, "NOERROR", &[]),
        (60155, "alias.corp.test", "A", 1, "NOERROR", &["198.18.0.20"]),
        (45481, "nonexistent.corp.test", "A", 1, "NXDOMAIN", &[]),
        (41746, "20.0.18.198.in-addr.arpa", "PTR", 12, "NOERROR", &[]),
        (37825, "mail.corp.test", "A", 1, "NOERROR", &["198.18.0.25"]),
    ];
    for &(port, query, qtype, qtype_id, rcode, answers) in cases {
        let f = flow(17, port);
        for (d, dg) in &f.datagrams {
            assert_eq!(Dns::probe(*d, dg), Probe::Match, "{port}");
        }
        let m = parse(&f);
        assert_eq!(m["query"], query, "{port}");
        assert_eq!(m["qtype"], qtype, "{port}");
        assert_eq!(m["qtype_id"], qtype_id, "{port}");
        assert_eq!(m["rcode"], rcode, "{port}");
        assert_eq!(m["queries"], 1);
        assert_eq!(m["responses"], 1);
        let got: Vec<&str> = m.get("answers").map(|a| a.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()).unwrap_or_default();
        assert_eq!(got, answers, "{port}");
        assert!(m.get("malformed").is_none());
    }
    let m = parse(&flow(17, 45481));
    assert_eq!(m["rcode_id"], 3);
}

#[test]
fn two_queries_on_one_socket() {
    let m = parse(&flow(17, 37312));
    assert_eq!(m["queries"], 2);
    assert_eq!(m["responses"], 2);
    assert_eq!(m["query"], "www.corp.test");
    assert_eq!(m["qtype"], "A");
    assert_eq!(m["answers"], serde_json::json!(["198.18.0.20", "2001:db8::20"]));
}

#[test]
fn tcp_messages() {
    let m = parse(&flow(6, 45877));
    assert_eq!(m["query"], "www.corp.test");
    assert_eq!(m["qtype"], "ANY");
    assert_eq!(m["qtype_id"], 255);
    assert_eq!(m["rcode"], "NOERROR");
    assert_eq!(m["answers"], serde_json::json!(["198.18.0.20", "2001:db8::20"]));
    let m = parse(&flow(6, 38240));
    assert_eq!(m["qtype"], "A");
    assert_eq!(m["answers"], serde_json::json!(["198.18.0.20"]));
    // Two length-prefixed queries in one stream (RFC 7766 §6.2.1 pipelining).
    let mut both = flow(6, 39021).to_server;
    both.extend_from_slice(&flow(6, 45877).to_server);
    let mut t = Dns::default();
    assert!(feed_all(&mut t, Dir::ToServer, &both).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["queries"], 2);
    assert_eq!(m["qtype"], "A");
    check_every_split::<Dns>(Dir::ToServer, &both);
}

#[test]
fn tcp_every_prefix_and_every_split() {
    for f in corpus_flows("dns.pcap").iter().filter(|f| f.proto == 6) {
        for (d, b) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
            check_every_prefix::<Dns>(d, b);
            check_every_split::<Dns>(d, b);
            let mut t = Dns::default();
            let segs: Vec<&[u8]> = f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
            feed_segments(&mut t, d, &segs);
            let mut whole = Dns::default();
            feed_all(&mut whole, d, b);
            assert_eq!(l7_of(&t), l7_of(&whole));
        }
    }
}

#[test]
fn names_are_lowercased() {
    let f = flow(17, 34864);
    let mut q = f.datagrams[0].1.clone();
    let at = q.windows(3).position(|w| w == b"www").unwrap();
    q[at..at + 3].copy_from_slice(b"WwW");
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &q);
    assert_eq!(l7_of(&t)["query"], "www.corp.test");
}

#[test]
fn strict_header_checks() {
    let q = flow(17, 34864).datagrams[0].1.clone();
    assert_eq!(Dns::probe(Dir::ToServer, &q), Probe::Match);
    let with = |at: usize, v: u8| {
        let mut b = q.clone();
        b[at] = v;
        b
    };
    assert_eq!(Dns::probe(Dir::ToServer, &with(3, q[3] | 0x40)), Probe::NoMatch); // Z bit
    assert_eq!(Dns::probe(Dir::ToServer, &with(2, (q[2] & 0x87) | (3 << 3))), Probe::NoMatch); // opcode 3
    assert_eq!(Dns::probe(Dir::ToServer, &with(5, 0)), Probe::NoMatch); // QDCOUNT 0
    assert_eq!(Dns::probe(Dir::ToServer, &with(5, 17)), Probe::NoMatch); // QDCOUNT 17
    assert_eq!(Dns::probe(Dir::ToServer, &with(3, q[3] | 0x03)), Probe::NoMatch); // query with rcode
    // Header and question sound, the additional section (the OPT record) cut: DNS, flagged.
    let cut = &q[..q.len() - 1];
    assert_eq!(Dns::probe(Dir::ToServer, cut), Probe::Match);
    let mut t = Dns::default();
    assert_eq!(t.feed(Dir::ToServer, cut), Feed::Consumed(cut.len()));
    let m = l7_of(&t);
    assert_eq!((m["violation"].clone(), m["violation_reason"].clone(), m["malformed"].clone()), (true.into(), "rdata_past_end".into(), 1.into()));
    assert_eq!(m["query"], "www.corp.test");
    // Cut inside the question: not DNS.
    let Parse::Ok(qend, _) = parser::first_question(&q) else { panic!() };
    assert_eq!(Dns::probe(Dir::ToServer, &q[..qend - 1]), Probe::NoMatch);
    // A byte after the last record: DNS, flagged.
    let mut longer = q.clone();
    longer.push(0);
    assert_eq!(Dns::probe(Dir::ToServer, &longer), Probe::Match);
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &longer);
    assert_eq!(l7_of(&t)["violation_reason"], "trailing_bytes");
    assert_eq!(Dns::probe(Dir::ToServer, &with(12, 0xc0)), Probe::NoMatch); // pointer in first name
}

#[test]
fn compression_loops_are_reported_and_bounded() {
    // The corpus answer to www.corp.test A with its answer owner pointing to itself, forward,
    // and past the message: each is a loop pointer, the answer teaches nothing, and the probe
    // matches such a message even as a flow's first one (so the attack is seen).
    let f = flow(17, 34864);
    let (query, q) = (f.datagrams[0].1.clone(), f.datagrams[1].1.clone());
    let qend = match parser::first_question(&q) {
        Parse::Ok(e, _) => e,
        other => panic!("{other:?}"),
    };
    for (ptr, reason) in [(qend as u16, "pointer_to_itself"), (qend as u16 + 2, "pointer_forward"), (0x3fff, "pointer_forward")] {
        let mut b = q.clone();
        b[qend..qend + 2].copy_from_slice(&(0xc000 | ptr).to_be_bytes());
        let mut t = Dns::default();
        assert_eq!(t.feed(Dir::ToServer, &query), Feed::Consumed(query.len()));
        assert_eq!(t.feed(Dir::ToClient, &b), Feed::Consumed(b.len()));
        let m = l7_of(&t);
        assert!(m.get("answers").is_none());
        assert_eq!(m["malformed"], 1);
        assert_eq!(m["query"], "www.corp.test");
        assert_eq!(Dns::probe(Dir::ToClient, &b), Probe::Match);
        assert_eq!(kinds(&t), [(ThreatId::DnsLoopPointer, reason)], "{ptr}");
        assert!(t.learned().0.is_empty());
    }
    // Chains of backward pointers: `pointer_chains_are_bounded_per_name_and_per_message`.
}

#[test]
fn tcp_gap_and_bad_length_stop() {
    let f = flow(6, 39021);
    let mut t = Dns::default();
    assert_eq!(t.feed(Dir::ToServer, &f.to_server[..10]), Feed::Need { consumed: 0, at_least: f.to_server.len() });
    t.gap(Dir::ToServer, 5);
    assert_eq!(t.feed(Dir::ToServer, &f.to_server), Feed::Done);
    let mut t = Dns::default();
    assert_eq!(t.feed(Dir::ToServer, &f.to_server), Feed::Consumed(f.to_server.len()));
    assert_eq!(t.feed(Dir::ToServer, b"\x00\x05hello"), Feed::Invalid { consumed: 0 });
    assert_eq!(l7_of(&t)["malformed"], 1);
}

/// After detection, messages that cannot be DNS end the stream's DNS (the engine detects
/// again): a datagram shorter than the header, questions that do not parse, a TCP length
/// shorter than a header. A message without questions `domain` cannot read stays DNS.
#[test]
fn non_dns_messages_after_detection_are_rejected() {
    let f = corpus_flows("dns.pcap").into_iter().find(|f| f.proto == 17).unwrap();
    let query = f.datagrams[0].1.clone();
    for bad in [&b"\x01"[..], b"*1\r\n$4\r\nPING\r\n", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff"] {
        let mut t = Dns::default();
        assert_eq!(t.feed(Dir::ToServer, &query), Feed::Consumed(query.len()));
        assert_eq!(t.feed(Dir::ToServer, bad), Feed::Invalid { consumed: 0 }, "{bad:?}");
    }
    // FORMERR without a question section and a truncated answer record: DNS.
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &query);
    let formerr = [query[0], query[1], 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(t.feed(Dir::ToClient, &formerr), Feed::Consumed(12));
    // TCP: a message after a valid one whose length cannot hold a header.
    let tcp = flow(6, 39021);
    let mut t = Dns::default();
    let mut bytes = tcp.to_server.clone();
    bytes.extend_from_slice(b"\x00\x03abc");
    assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Invalid { consumed: tcp.to_server.len() });
}

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n", b"SSH-2.0-x\r\n"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Dns::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Dns>(&["dns"]);
}

#[test]
fn random_datagrams_do_not_match_and_mutations_never_panic() {
    let mut rng = Rng(0xd05_d05);
    for _ in 0..50_000 {
        let len = (rng.next() % 600) as usize;
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert_ne!(Dns::probe(Dir::ToServer, &b), Probe::Match);
    }
    let seeds: Vec<(Dir, Vec<u8>)> = corpus_flows("dns.pcap")
        .into_iter()
        .flat_map(|f| {
            let mut v = f.datagrams.clone();
            v.push((Dir::ToServer, f.to_server.clone()));
            v.push((Dir::ToClient, f.to_client.clone()));
            v
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let mut tunnel = crate::detect::dns_tunnel::DnsTunnel::new(crate::detect::dns_tunnel::Config { buckets: 64, ..Default::default() });
    for i in 0..5000 {
        let (d, seed) = &seeds[i % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + rng.next() % 6 {
            if b.is_empty() {
                break;
            }
            let at = (rng.next() as usize) % b.len();
            match rng.next() % 4 {
                0 => b[at] = rng.next() as u8,
                1 => b[at] |= 0xc0,
                2 => b[at] ^= 0x01,
                _ => b.truncate(at),
            }
        }
        let _ = Dns::probe(*d, &b);
        let mut t = Dns::default();
        let cut = if b.is_empty() { 0 } else { (rng.next() as usize) % b.len() };
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
        let mut t = Dns::default();
        t.feed(*d, &b);
        let _ = l7_of(&t);
        // The scan stays within its budget; a message with an unsafe name teaches nothing; the
        // queries handed out are valid names for the tunnel detector.
        let s = parser::scan(&b, |_, _| {});
        let mut t = Dns::default();
        t.feed(Dir::ToServer, &seeds[(i + 1) % seeds.len()].1);
        t.feed(Dir::ToClient, &b);
        if s.names_unsafe {
            assert!(t.learned().0.is_empty());
        }
        t.feed(Dir::ToServer, &b);
        for (name, qtype) in t.queries().iter() {
            assert!(name.len() <= parser::MAX_NAME && name.last() == Some(&0));
            tunnel.observe(0, crate::flow::Addr::v4([198, 18, 0, 1]), name, qtype, i as u64);
        }
        tunnel.observe(0, crate::flow::Addr::v4([198, 18, 0, 2]), &b, 16, i as u64);
    }
    assert!(tunnel.stats().observed >= 5000, "{:?}", tunnel.stats());
}

/// What a flow teaches `fqdn` rules: each answer to one of its own queries, the question's
/// name for the addresses the chain ends at, with their TTL (the capture's are 0).
#[test]
fn answers_for_policy_come_from_the_flows_own_queries() {
    let learned = |f: &Flow| {
        let mut t = Dns::default();
        if f.proto == 17 {
            for (d, dg) in &f.datagrams {
                t.feed(*d, dg);
            }
        } else {
            feed_all(&mut t, Dir::ToServer, &f.to_server);
            feed_all(&mut t, Dir::ToClient, &f.to_client);
        }
        let (answers, refused) = t.learned();
        let v: Vec<(String, Vec<String>)> = answers
            .iter()
            .map(|a| (a.name.to_string(), a.addrs.iter().map(|(ip, ttl)| format!("{ip}/{ttl}")).collect()))
            .collect();
        (v, refused)
    };
    let one = |n: &str, a: &[&str]| (n.to_string(), a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let (v, r) = learned(&flow(17, 60155));
    assert_eq!(v, [one("alias.corp.test", &["198.18.0.20/0"])], "through the CNAME");
    assert_eq!(r, Refusals::default());
    let (v, _) = learned(&flow(17, 37312));
    assert_eq!(v, [one("www.corp.test", &["198.18.0.20/0"]), one("www.corp.test", &["2001:db8::20/0"])]);
    let (v, _) = learned(&flow(6, 45877));
    assert_eq!(v, [one("www.corp.test", &["198.18.0.20/0", "2001:db8::20/0"])]);
    assert!(learned(&flow(17, 53774)).0.is_empty(), "MX: no addresses");
    assert!(learned(&flow(17, 45481)).0.is_empty(), "NXDOMAIN");
    // The answers alone (no query seen), or fed as if the client sent them: nothing.
    let f = flow(17, 34864);
    let mut t = Dns::default();
    t.feed(Dir::ToClient, &f.datagrams[1].1);
    t.feed(Dir::ToServer, &f.datagrams[0].1);
    t.feed(Dir::ToServer, &f.datagrams[1].1);
    assert!(t.learned().0.is_empty());
    assert_eq!(t.learned().1.unsolicited, 2);
    // Taken once.
    let mut t = Dns::default();
    for (d, dg) in &f.datagrams {
        t.feed(*d, dg);
    }
    assert_eq!(t.learned().0.len(), 1);
    t.clear_learned();
    t.feed(Dir::ToClient, &f.datagrams[1].1);
    assert!(t.learned().0.is_empty());
    assert_eq!(t.learned().1.unsolicited, 1, "a query is answered once");
}

// ---- threats -------------------------------------------------------------------------------

use crate::app::testutil::{capture_flows, pcap_flows};
use crate::detect::ThreatId;

/// Every pcap of a directory under `dp/tests/captures/`.
fn captures_in(dir: &str) -> Vec<std::path::PathBuf> {
    let root = crate::app::testutil::capture(dir);
    let mut v: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    v.sort();
    v
}

/// Runs a flow through the parser as the engine would: from the first datagram (UDP) or
/// direction (TCP) the probe matches; `None` when it never matches.
fn run(f: &Flow) -> Option<Dns> {
    let mut t = Dns::default();
    if f.proto == 17 {
        let from = f.datagrams.iter().position(|(d, dg)| Dns::probe(*d, dg) == Probe::Match)?;
        for (d, dg) in &f.datagrams[from..] {
            if t.feed(*d, dg) == Feed::Done {
                break;
            }
        }
    } else {
        let first = if f.to_server.is_empty() { Dir::ToClient } else { Dir::ToServer };
        let bytes = if first == Dir::ToServer { &f.to_server } else { &f.to_client };
        if Dns::probe(first, bytes) != Probe::Match {
            return None;
        }
        feed_all(&mut t, Dir::ToServer, &f.to_server);
        feed_all(&mut t, Dir::ToClient, &f.to_client);
    }
    Some(t)
}

/// The threats a parser recorded: (kind, reason) of the first and of each further kind.
fn kinds(t: &Dns) -> Vec<(ThreatId, &'static str)> {
    let th = t.threats().unwrap();
    th.first.iter().map(|x| (x.id, x.reason)).chain(th.others.iter().flatten().map(|(id, _, r)| (*id, *r))).collect()
}

/// A message: header (id 0x4242, `flags`, QDCOUNT `qd`, ANCOUNT `an`, no other records unless
/// `ar`), then `body`.
fn msg(flags: u16, qd: u16, an: u16, ar: u16, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0x42, 0x42];
    for v in [flags, qd, an, 0, ar] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(body);
    m
}

/// A name in wire form.
fn wire(labels: &[&[u8]]) -> Vec<u8> {
    let mut n = Vec::new();
    for l in labels {
        n.push(l.len() as u8);
        n.extend_from_slice(l);
    }
    n.push(0);
    n
}

/// A question (type, class IN) after `name`.
fn question(name: &[u8], qtype: u16) -> Vec<u8> {
    [name, &qtype.to_be_bytes(), &[0, 1]].concat()
}

/// A record: owner, type, class IN, TTL 60, RDATA (RDLENGTH from it unless `rdlen`).
fn record(owner: &[u8], rtype: u16, rdata: &[u8], rdlen: Option<u16>) -> Vec<u8> {
    let len = rdlen.unwrap_or(rdata.len() as u16);
    [owner, &rtype.to_be_bytes(), &[0, 1, 0, 0, 0, 60], &len.to_be_bytes(), rdata].concat()
}

const QUERY: u16 = 0x0100;
const RESPONSE: u16 = 0x8180;

/// www.corp.test A IN at offset 12 (19 bytes).
fn www() -> Vec<u8> {
    question(&wire(&[b"www", b"corp", b"test"]), 1)
}

/// The threats of one message fed to a fresh parser (after `before`, fed in order) as UDP.
fn threats_of(before: &[(Dir, Vec<u8>)], d: Dir, m: &[u8]) -> Vec<(ThreatId, &'static str)> {
    let mut t = Dns::default();
    for (bd, b) in before {
        assert_eq!(t.feed(*bd, b), Feed::Consumed(b.len()));
    }
    assert_eq!(t.feed(d, m), Feed::Consumed(m.len()), "{m:?}");
    kinds(&t)
}

/// (case, message, the threats expected).
type Case = (&'static str, Vec<u8>, Vec<(ThreatId, &'static str)>);

#[test]
fn crafted_loops_and_overflows() {
    use ThreatId::{DnsLoopPointer as Loop, DnsOverflow as Over};
    let a = [198, 18, 0, 20];
    let q = msg(QUERY, 1, 0, 0, &www());
    let ask = || vec![(Dir::ToServer, q.clone())];
    // (case, message as the flow's first, expected)
    let mut cases: Vec<Case> = vec![
        ("pointer to itself", msg(QUERY, 1, 0, 0, &[0xc0, 12, 0, 1, 0, 1]), vec![(Loop, "pointer_to_itself")]),
        // Two pointers naming each other: 12 -> 14 -> 12 (the first necessarily forward).
        ("two-pointer cycle", msg(QUERY, 1, 0, 0, &[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]), vec![(Loop, "pointer_forward")]),
        ("label 63", msg(QUERY, 1, 0, 0, &question(&wire(&[&[b'a'; 63], b"test"]), 1)), vec![]),
        ("label 64", msg(QUERY, 1, 0, 0, &question(&wire(&[&[b'a'; 64], b"test"]), 1)), vec![(Over, "label_over_63")]),
        ("label type 0b10", msg(QUERY, 1, 0, 0, &question(&wire(&[&[b'a'; 0x80], b"test"]), 1)), vec![(Over, "label_over_63")]),
        ("name 255", msg(QUERY, 1, 0, 0, &question(&wire(&[&[b'a'; 63], &[b'b'; 63], &[b'c'; 63], &[b'd'; 61]]), 1)), vec![]),
        ("name 256", msg(QUERY, 1, 0, 0, &question(&wire(&[&[b'a'; 63], &[b'b'; 63], &[b'c'; 63], &[b'd'; 62]]), 1)), vec![(Over, "name_over_255")]),
        ("AXFR over UDP", msg(QUERY, 1, 0, 0, &question(&wire(&[b"corp", b"test"]), 252)), vec![(ThreatId::DnsZoneTransfer, "axfr")]),
        ("IXFR", msg(QUERY, 1, 0, 0, &question(&wire(&[b"corp", b"test"]), 251)), vec![(ThreatId::DnsZoneTransfer, "ixfr")]),
        ("NULL", msg(QUERY, 1, 0, 0, &question(&wire(&[b"x", b"corp", b"test"]), 10)), vec![(ThreatId::DnsNullType, "null_query")]),
        (
            "AXFR second question",
            msg(QUERY, 2, 0, 0, &[www(), question(&wire(&[b"corp", b"test"]), 252)].concat()),
            vec![(ThreatId::DnsZoneTransfer, "axfr")],
        ),
        ("counts past end", msg(QUERY, 1, 3, 0, &www()), vec![(Over, "counts_past_end")]),
        ("trailing 1024", [q.clone(), vec![0x41; 1024]].concat(), vec![]),
        ("trailing 1025", [q.clone(), vec![0x41; 1025]].concat(), vec![(Over, "trailing_bytes")]),
    ];
    // Answers (after the query).
    let answers: Vec<Case> = vec![
        ("plain answer", msg(RESPONSE, 1, 1, 0, &[www(), record(&[0xc0, 12], 1, &a, None)].concat()), vec![]),
        // The answer owner at 31: label "abc", then a pointer back to 31, which the walk has
        // passed in place: backward from itself, not before the previous target (a cycle).
        ("cycle through a label", msg(RESPONSE, 1, 1, 0, &[www(), record(&[3, b'a', b'b', b'c', 0xc0, 31], 1, &a, None)].concat()), vec![(Loop, "pointer_loop")]),
        (
            "decompressed name 258",
            msg(RESPONSE, 1, 1, 0, &[www(), record(&[&wire(&[&[b'x'; 63], &[b'y'; 63], &[b'z'; 63], &[b'w'; 50]])[..243], &[0xc0, 12]].concat(), 1, &a, None)].concat()),
            vec![(Over, "name_over_255")],
        ),
        ("RDLENGTH past end", msg(RESPONSE, 1, 1, 0, &[www(), record(&[0xc0, 12], 1, &a, Some(0xffff))].concat()), vec![(Over, "rdata_past_end")]),
        ("ANCOUNT past end", msg(RESPONSE, 1, 200, 0, &[www(), record(&[0xc0, 12], 1, &a, None)].concat()), vec![(Over, "counts_past_end")]),
        ("record cut", msg(RESPONSE, 1, 1, 0, &[www(), vec![0xc0, 12, 0, 1, 0]].concat()), vec![(Over, "record_past_end")]),
        // A CNAME whose RDLENGTH (2) ends inside its target name.
        ("name past RDATA", msg(RESPONSE, 1, 1, 0, &[www(), record(&[0xc0, 12], 5, &wire(&[b"web", b"corp", b"test"]), Some(2))].concat()), vec![(Over, "name_past_rdata")]),
        ("CNAME with a loop", msg(RESPONSE, 1, 1, 0, &[www(), record(&[0xc0, 12], 5, &[0xc0, 43], None)].concat()), vec![(Loop, "pointer_to_itself")]),
        // An UPDATE that deletes an RRset: class ANY, no RDATA where a name would be.
        ("empty RDATA", msg(RESPONSE, 1, 1, 0, &[www(), record(&[0xc0, 12], 5, &[], None)].concat()), vec![]),
    ];
    for (name, m, want) in cases.drain(..) {
        assert_eq!(threats_of(&[], Dir::ToServer, &m), want, "{name}");
        // Every one is DNS even as a flow's first message: its header and first question are
        // sound (name attacks in the question are taken so that the attack is seen; records
        // counted past the end and bytes after them are malformed later sections).
        assert_eq!(Dns::probe(Dir::ToServer, &m), Probe::Match, "{name}");
    }
    for (name, m, want) in answers {
        assert_eq!(threats_of(&ask(), Dir::ToClient, &m), want, "{name}");
        // The answers of a message with an unsafe name teach nothing.
        let mut t = Dns::default();
        t.feed(Dir::ToServer, &q);
        t.feed(Dir::ToClient, &m);
        assert_eq!(t.learned().0.is_empty(), !want.is_empty() || name == "empty RDATA", "{name}");
    }
    // A response NULL or AXFR question is no query.
    let r = msg(RESPONSE, 1, 0, 0, &question(&wire(&[b"corp", b"test"]), 252));
    assert_eq!(threats_of(&[], Dir::ToClient, &r), []);
}

#[test]
fn pointer_chains_are_bounded_per_name_and_per_message() {
    // 63 pointers in one name are followed, 64 are a loop.
    for (hops, want) in [(63usize, vec![]), (64, vec![(ThreatId::DnsLoopPointer, "pointer_chain")])] {
        // A TXT record whose RDATA is the chain (nobody decodes TXT as names), then an A record
        // whose owner enters the chain at its end.
        let mut chain = vec![0xc0, 12];
        let rdata_at = 12 + 19 + 2 + 10;
        for i in 1..hops - 1 {
            chain.extend_from_slice(&(0xc000 | (rdata_at + 2 * (i - 1)) as u16).to_be_bytes());
        }
        let last = (0xc000 | (rdata_at + 2 * (hops - 2)) as u16).to_be_bytes();
        let m = msg(RESPONSE, 1, 2, 0, &[www(), record(&[0xc0, 12], 16, &chain, None), record(&last, 1, &[198, 18, 0, 20], None)].concat());
        let q = msg(QUERY, 1, 0, 0, &www());
        assert_eq!(threats_of(&[(Dir::ToServer, q)], Dir::ToClient, &m), want, "{hops}");
    }
    // Each name valid alone, the message a decompression bomb: a name of 127 one-byte labels
    // at the end of a 62-pointer chain, named by both names of 4000 CNAME records (2-byte
    // owner and RDATA): 380 steps per 14 bytes, past the budget of 16 a byte.
    let long = wire(&[&b"a"[..]; 127]);
    let mut body = [www(), record(&[0xc0, 12], 16, &[], None)].concat();
    let long_at = 12 + body.len() + 2 + 10;
    body = [www(), record(&[0xc0, 12], 99, &long, None)].concat();
    let chain_at = 12 + body.len() + 2 + 10;
    let mut chain = vec![0xc0 | (long_at >> 8) as u8, long_at as u8];
    for i in 1..62 {
        chain.extend_from_slice(&(0xc000 | (chain_at + 2 * (i - 1)) as u16).to_be_bytes());
    }
    let entry = (0xc000 | (chain_at + 2 * 60) as u16).to_be_bytes();
    body.extend_from_slice(&record(&[0xc0, 12], 99, &chain, None));
    let n = 4000u16;
    for _ in 0..n {
        body.extend_from_slice(&record(&entry, 5, &entry, None));
    }
    let m = msg(RESPONSE, 1, 2 + n, 0, &body);
    assert!(m.len() < 65535);
    let s = parser::scan(&m, |_, _| {});
    assert_eq!(s.loop_pointer.map(|a| a.reason), Some("pointer_work"));
    let mut tcp = (m.len() as u16).to_be_bytes().to_vec();
    tcp.extend_from_slice(&m);
    let mut t = Dns::default();
    t.feed(Dir::ToClient, &tcp);
    assert_eq!(kinds(&t), [(ThreatId::DnsLoopPointer, "pointer_work")]);
}

#[test]
fn oversized_responses() {
    use ThreatId::DnsOverflow as Over;
    let ask = |opt: Option<u16>| {
        let mut q = msg(QUERY, 1, 0, u16::from(opt.is_some()), &www());
        if let Some(size) = opt {
            // OPT: root owner, type 41, CLASS = payload size, TTL 0, no options.
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    };
    // A response of exactly `len` bytes: A records, then a TXT record padding it.
    let answer = |len: usize| {
        let mut body = www();
        let mut an = 0;
        while 12 + body.len() + 16 + 12 + 255 < len {
            body.extend_from_slice(&record(&[0xc0, 12], 1, &[198, 18, 1, an as u8], None));
            an += 1;
        }
        let pad = len - 12 - body.len() - 12;
        body.extend_from_slice(&record(&[0xc0, 12], 16, &[&[(pad - 1) as u8][..], &vec![b'x'; pad - 1]].concat(), None));
        let m = msg(RESPONSE, 1, an + 1, 0, &body);
        assert_eq!(m.len(), len);
        m
    };
    for (opt, len, want) in [
        (None, 512, vec![]),
        (None, 513, vec![(Over, "udp_over_512")]),
        (Some(1232), 1232, vec![]),
        (Some(1232), 1233, vec![(Over, "udp_over_edns_size")]),
        (Some(100), 512, vec![]),
        (Some(100), 513, vec![(Over, "udp_over_512")]),
    ] {
        let q = ask(opt);
        let mut r = answer(len);
        r[..2].copy_from_slice(&q[..2]);
        assert_eq!(threats_of(&[(Dir::ToServer, q.clone())], Dir::ToClient, &r), want, "{opt:?} {len}");
        let mut t = Dns::default();
        t.feed(Dir::ToServer, &q);
        t.feed(Dir::ToClient, &r);
        assert_eq!(t.learned().0.is_empty(), !want.is_empty(), "an oversized answer teaches nothing");
    }
    // A response that answers no query of the flow is not measured (mDNS answers unasked).
    assert_eq!(threats_of(&[], Dir::ToClient, &answer(2000)), []);
    // TCP: near 64 KiB (CVE-2020-1350) only when no zone transfer was asked.
    let big = answer(TCP_MAX_RESPONSE + 1);
    let framed = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    let mut t = Dns::default();
    feed_all(&mut t, Dir::ToServer, &framed(&msg(QUERY, 1, 0, 0, &www())));
    feed_all(&mut t, Dir::ToClient, &framed(&answer(TCP_MAX_RESPONSE)));
    assert_eq!(kinds(&t), []);
    feed_all(&mut t, Dir::ToClient, &framed(&big));
    assert_eq!(kinds(&t), [(Over, "tcp_over_65280")]);
    // Without a question section too.
    let txt = [&[255u8][..], &[b'x'; 255]].concat();
    let bare = msg(RESPONSE, 0, 245, 0, &record(&[0], 16, &txt, None).repeat(245));
    assert!(bare.len() > TCP_MAX_RESPONSE);
    let mut t = Dns::default();
    feed_all(&mut t, Dir::ToServer, &framed(&msg(QUERY, 1, 0, 0, &www())));
    feed_all(&mut t, Dir::ToClient, &framed(&bare));
    assert_eq!(kinds(&t), [(Over, "tcp_over_65280")]);
    let mut t = Dns::default();
    feed_all(&mut t, Dir::ToServer, &framed(&msg(QUERY, 1, 0, 0, &question(&wire(&[b"corp", b"test"]), 252))));
    feed_all(&mut t, Dir::ToClient, &framed(&big));
    assert_eq!(kinds(&t), [(ThreatId::DnsZoneTransfer, "axfr")]);
}

#[test]
fn threats_under_the_stream_contract() {
    // A TCP stream of an AXFR query and a looping query, split at every byte and trickled:
    // the same threats, each message counted once.
    let axfr = msg(QUERY, 1, 0, 0, &question(&wire(&[b"corp", b"test"]), 252));
    let looped = msg(QUERY, 1, 0, 0, &[0xc0, 12, 0, 1, 0, 1]);
    let mut stream = Vec::new();
    for m in [&axfr, &looped] {
        stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
        stream.extend_from_slice(m);
    }
    let want = [(ThreatId::DnsZoneTransfer, "axfr"), (ThreatId::DnsLoopPointer, "pointer_to_itself")];
    let mut whole = Dns::default();
    assert!(feed_all(&mut whole, Dir::ToServer, &stream).is_empty());
    assert_eq!(kinds(&whole), want);
    assert_eq!(whole.threats().unwrap().count, 2);
    for cut in 0..stream.len() {
        let mut t = Dns::default();
        feed_segments(&mut t, Dir::ToServer, &[&stream[..cut], &stream[cut..]]);
        assert_eq!(kinds(&t), want, "{cut}");
        assert_eq!(t.threats().unwrap().count, 2, "{cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let mut t = Dns::default();
    feed_segments(&mut t, Dir::ToServer, &bytes);
    assert_eq!(kinds(&t), want);
    assert_eq!(t.threats().unwrap().count, 2);
}

#[test]
fn threat_captures() {
    use ThreatId::*;
    // Crafted attacks (make.py), by client port.
    let want: &[(u16, ThreatId, &str)] = &[
        (40001, DnsLoopPointer, "pointer_to_itself"),
        (40002, DnsLoopPointer, "pointer_forward"),
        (40003, DnsLoopPointer, "pointer_loop"),
        (40004, DnsLoopPointer, "pointer_chain"),
        (40005, DnsOverflow, "label_over_63"),
        (40006, DnsOverflow, "name_over_255"),
        (40007, DnsOverflow, "name_over_255"),
        (40008, DnsOverflow, "rdata_past_end"),
        (40009, DnsOverflow, "counts_past_end"),
        (40010, DnsOverflow, "udp_over_512"),
        (40011, DnsOverflow, "trailing_bytes"),
    ];
    let flows = capture_flows("threats/dns-attacks.pcap");
    assert_eq!(flows.len(), want.len());
    for f in &flows {
        let &(_, id, reason) = want.iter().find(|w| w.0 == f.client_port).unwrap();
        let t = run(f).unwrap_or_else(|| panic!("{}: not DNS", f.client_port));
        assert_eq!(kinds(&t), [(id, reason)], "{}", f.client_port);
    }
    // Real tools: dig against dnsmasq (record-dig.sh), in order: AXFR (TCP), IXFR (UDP), NULL
    // (UDP, TCP), a plain A query.
    let got: Vec<_> = capture_flows("threats/dig-axfr-null.pcap").iter().map(|f| (f.proto, kinds(&run(f).unwrap()))).collect();
    assert_eq!(
        got,
        [
            (6, vec![(DnsZoneTransfer, "axfr")]),
            (17, vec![(DnsZoneTransfer, "ixfr")]),
            (17, vec![(DnsNullType, "null_query")]),
            (6, vec![(DnsNullType, "null_query")]),
            (17, vec![]),
        ]
    );
    let t = run(&capture_flows("threats/dig-axfr-null.pcap")[0]).unwrap();
    assert_eq!(t.threats().unwrap().first.unwrap().evidence.as_str(), "AXFR corp.test");
    // iodine with NULL queries (its default).
    let f = capture_flows("threats/iodine-null.pcap");
    assert_eq!(f.len(), 1);
    let t = run(&f[0]).unwrap();
    assert_eq!(kinds(&t), [(DnsNullType, "null_query")]);
    assert!(t.threats().unwrap().count > 100, "every NULL query counted");
    // Zeek's trace of a query whose name is a pointer to itself.
    let loops: Vec<_> = capture_flows("threats/zeek/dns-dns-invalid-names.pcap").iter().filter_map(run).map(|t| kinds(&t)).collect();
    assert_eq!(loops, [vec![(DnsLoopPointer, "pointer_to_itself")]]);
}

/// Captures whose messages must raise no DNS threat: the corpus (every protocol), the link
/// type recordings, Zeek's DNS traces (but the one crafted with a pointer loop), and the
/// tunnels and exfiltration recorded with real tools (tunnelling is the detector's business,
/// not a malformed message).
#[test]
fn benign_captures_raise_no_threat() {
    let mut files: Vec<std::path::PathBuf> = crate::app::testutil::other_corpus_files(&[])
        .iter()
        .map(|f| crate::app::testutil::corpus(f))
        .collect();
    files.extend(captures_in("linktypes"));
    files.extend(captures_in("threats/zeek").into_iter().filter(|p| !p.ends_with("dns-dns-invalid-names.pcap")));
    for f in ["iodine-txt", "iodine-cname", "iodine-mx", "exfil-dig", "dnscat-style"] {
        files.push(crate::app::testutil::capture(&format!("threats/{f}.pcap")));
    }
    let (mut flows, mut messages) = (0, 0);
    for p in &files {
        for f in pcap_flows(p) {
            let Some(t) = run(&f) else { continue };
            assert_eq!(kinds(&t), [], "{} {}:{}", p.display(), f.proto, f.client_port);
            flows += 1;
            messages += t.queries + t.responses;
        }
    }
    eprintln!("{} files, {flows} DNS flows, {messages} messages: no threat", files.len());
    assert!(flows > 100 && messages > 1000, "{flows} {messages}");
}

#[test]
fn queries_for_the_tunnel_detector_are_handed_once() {
    let list = |t: &Dns| t.queries().iter().map(|(n, q)| (n.to_vec(), q)).collect::<Vec<_>>();
    // UDP: the client's query, once; not the response, not a query from the server's side.
    let f = flow(17, 34864);
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &f.datagrams[0].1);
    assert_eq!(list(&t), [(b"\x03www\x04corp\x04test\x00".to_vec(), 1)]);
    assert_eq!(t.queries().missed(), 0);
    t.clear_queries();
    t.feed(Dir::ToClient, &f.datagrams[1].1);
    t.feed(Dir::ToClient, &f.datagrams[0].1);
    assert!(t.queries().is_empty());
    // Case is kept as sent (encodings use it); a name with a loop is not handed out.
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &msg(QUERY, 1, 0, 0, &question(&wire(&[b"aB3", b"x", b"test"]), 16)));
    t.feed(Dir::ToServer, &msg(QUERY, 1, 0, 0, &[0xc0, 12, 0, 1, 0, 1]));
    assert_eq!(list(&t), [(b"\x03aB3\x01x\x04test\x00".to_vec(), 16)]);
    // TCP: pipelined queries in one segment, in order; past MAX_SEEN they are counted.
    let framed = |names: &mut dyn Iterator<Item = Vec<u8>>| {
        let mut stream = Vec::new();
        for n in names {
            let m = msg(QUERY, 1, 0, 0, &question(&n, 1));
            stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
            stream.extend_from_slice(&m);
        }
        stream
    };
    let mut t = Dns::default();
    feed_all(&mut t, Dir::ToServer, &framed(&mut (0..MAX_SEEN + 2).map(|i| wire(&[format!("q{i}").as_bytes(), b"test"]))));
    assert_eq!((t.queries().len(), t.queries().missed()), (MAX_SEEN, 2));
    assert_eq!(list(&t)[1].0, b"\x02q1\x04test\x00");
    t.clear_queries();
    assert!(t.queries().is_empty() && t.queries().missed() == 0);
    // ... and past SEEN_BYTES: two names of 255 bytes fit, the third is counted.
    let long = wire(&[&[b'a'; 63], &[b'b'; 63], &[b'c'; 63], &[b'd'; 61]]);
    assert_eq!(long.len(), 255);
    let mut t = Dns::default();
    feed_all(&mut t, Dir::ToServer, &framed(&mut std::iter::repeat_n(long.clone(), 3)));
    assert_eq!((t.queries().len(), t.queries().missed()), (2, 1));
    assert!(t.queries().iter().all(|(n, _)| n == long));
    // As the inspector does (take after each frame): every query of a real tunnel once.
    let f = &capture_flows("threats/iodine-txt.pcap")[0];
    let mut t = Dns::default();
    let (mut taken, mut sent) = (0, 0);
    for (d, dg) in &f.datagrams {
        t.feed(*d, dg);
        sent += usize::from(*d == Dir::ToServer && dg[2] & 0x80 == 0);
        taken += t.queries().len();
        assert_eq!(t.queries().missed(), 0);
        t.clear_queries();
    }
    assert_eq!(taken, sent);
    assert!(sent > 100);
}

/// The captures through `warden replay` (the whole pipeline, the threat stage included): each
/// DNS threat in the summary and in its record; the benign captures raise no DNS threat.
#[test]
fn threats_through_replay() {
    use crate::config::Config;
    use crate::replay::replay_file;
    let dns_threats = |file: std::path::PathBuf| {
        let (records, summary) = replay_file(&file, &Config::default()).unwrap();
        let counts: Vec<(&str, u64)> = summary.threats.iter().filter(|t| t.0.starts_with("dns_")).map(|t| (t.0, t.1)).collect();
        let events = summary.threat_events.len();
        (records, counts, events)
    };
    let (records, counts, events) = dns_threats(crate::app::testutil::capture("threats/dig-axfr-null.pcap"));
    assert_eq!(counts, [("dns_zone_transfer", 2), ("dns_null_type", 2)]);
    assert!(events >= 2);
    let axfr = records.iter().find(|r| r.threats.iter().any(|t| t.id == "dns_zone_transfer" && t.evidence == "AXFR corp.test"));
    assert!(axfr.is_some(), "{records:#?}");
    let (_, counts, _) = dns_threats(crate::app::testutil::capture("threats/dns-attacks.pcap"));
    assert_eq!(counts, [("dns_loop_pointer", 4), ("dns_overflow", 7)]);
    // (Replay reads Ethernet, cooked, raw IP and loopback captures: not the FDDI one.)
    let mut replayed = 0;
    for p in captures_in("threats/zeek").into_iter().filter(|p| !p.ends_with("dns-dns-invalid-names.pcap")) {
        let Ok((_, summary)) = replay_file(&p, &Config::default()) else { continue };
        let dns: Vec<_> = summary.threats.iter().filter(|t| t.0.starts_with("dns_")).collect();
        assert!(dns.is_empty(), "{}: {dns:?}", p.display());
        replayed += 1;
    }
    assert!(replayed >= 50, "{replayed}");
}

// ---- opcodes other than QUERY, malformed later sections (issue 11) -------------------------

/// The flows of a capture of `dp/tests/captures/dns/` (README there).
fn dns_capture(name: &str) -> Vec<Flow> {
    crate::app::testutil::capture_flows(&format!("dns/{name}"))
}

/// Feeds a captured flow (datagrams, or both TCP directions) and returns its `l7`; every
/// first message of a direction is probed DNS.
fn parse_probed(f: &Flow) -> Map<String, Value> {
    if f.proto == 17 {
        for (d, dg) in &f.datagrams {
            assert_eq!(Dns::probe(*d, dg), Probe::Match, "{dg:?}");
        }
    } else {
        for (d, b) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
            if !b.is_empty() {
                check_every_prefix::<Dns>(d, b);
            }
        }
    }
    parse(f)
}

/// `dig +opcode=iquery|status|notify` (BIND 9.18) to dnsmasq over UDP (dnsmasq does not
/// answer them), `dig +tcp +opcode=status` (answered REFUSED), `nsupdate` (UPDATE).
#[test]
fn opcodes_of_dig_and_nsupdate() {
    let fl = dns_capture("dns-opcodes-dig.pcap");
    let got: Vec<(String, u64, u64)> = fl
        .iter()
        .map(|f| {
            let m = parse_probed(f);
            assert!(m.get("malformed").is_none() && m.get("violation").is_none(), "{m:?}");
            (m["opcode"].as_str().unwrap().to_string(), m["queries"].as_u64().unwrap(), m["responses"].as_u64().unwrap())
        })
        .collect();
    let want = [("IQUERY", 1, 0), ("STATUS", 1, 0), ("NOTIFY", 1, 0), ("STATUS", 1, 1), ("UPDATE", 2, 0)];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1, g.2), w);
    }
    let m = parse(&fl[3]);
    assert_eq!((m["rcode"].clone(), m["opcode_id"].clone(), m["query"].clone()), ("REFUSED".into(), 2.into(), "www.corp.test".into()));
    // Their question names reach the tunnelling detector like a QUERY's.
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &fl[1].datagrams[0].1);
    assert_eq!(t.queries().len(), 1);
}

/// Zeek's traces: an inverse query in RFC 1035 §6.4.2's form (no question, one answer
/// record) and its answer over TCP, NOTIFY and its REFUSED answer, UPDATE with TSIG.
#[test]
fn zeek_inverse_query_notify_update() {
    let fl = dns_capture("zeek-dns-inverse-query.pcap");
    assert_eq!(fl.len(), 1);
    let m = parse_probed(&fl[0]);
    assert_eq!((m["opcode"].clone(), m["queries"].clone(), m["responses"].clone()), ("IQUERY".into(), 1.into(), 1.into()));
    assert!(m.get("malformed").is_none() && m.get("violation").is_none(), "{m:?}");
    assert_eq!(m["query"], "[4.3.2.1]", "the answer's question: the name found");
    // The request alone, as a flow's first message.
    assert_eq!(Dns::probe(Dir::ToServer, &fl[0].to_server), Probe::Match);
    let notify = dns_capture("zeek-dns-notify.pcap");
    let m = parse_probed(&notify[1]);
    assert_eq!((m["opcode"].clone(), m["rcode"].clone(), m["qtype"].clone()), ("NOTIFY".into(), "REFUSED".into(), "SOA".into()));
    for f in dns_capture("zeek-dynamic-update.pcap") {
        let m = parse_probed(&f);
        assert_eq!((m["opcode"].clone(), m["opcode_id"].clone()), ("UPDATE".into(), 5.into()));
        assert!(m.get("violation").is_none());
    }
    // An ordinary query says QUERY.
    assert_eq!(parse(&flow(17, 34864))["opcode"], "QUERY");
}

/// DSO (RFC 8490) over TCP, built from §5.4 and §7.1's layout (no implementation in Debian
/// sends it): a Keepalive request (inactivity and keepalive intervals, ms) and its answer, a
/// unidirectional Retry Delay; and what is not DSO.
#[test]
fn dso_messages() {
    let header = |id: u16, flags: u16| [&id.to_be_bytes()[..], &flags.to_be_bytes(), &[0; 8]].concat();
    let tlv = |t: u16, v: &[u8]| [&t.to_be_bytes()[..], &(v.len() as u16).to_be_bytes(), v].concat();
    let keepalive = tlv(1, &[0, 0, 0x3a, 0x98, 0, 0, 0x3a, 0x98]);
    let request = [header(7, 0x3000), keepalive.clone()].concat();
    let answer = [header(7, 0xb000), keepalive.clone()].concat();
    let retry = [header(0, 0x3000), tlv(2, &[0, 0, 0x27, 0x10])].concat();
    let framed = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    let stream = [framed(&request), framed(&retry)].concat();
    check_every_prefix::<Dns>(Dir::ToServer, &stream);
    check_every_prefix::<Dns>(Dir::ToClient, &framed(&answer));
    let mut t = Dns::default();
    assert!(feed_all(&mut t, Dir::ToServer, &stream).is_empty());
    assert!(feed_all(&mut t, Dir::ToClient, &framed(&answer)).is_empty());
    let m = l7_of(&t);
    assert_eq!((m["opcode"].clone(), m["queries"].clone(), m["responses"].clone()), ("DSO".into(), 2.into(), 1.into()));
    assert!(m.get("malformed").is_none() && m.get("query").is_none(), "{m:?}");
    // Padding as the primary TLV, a TLV past the end, a request without TLVs, a count set.
    let bad = [
        [header(7, 0x3000), tlv(3, &[0; 4])].concat(),
        [header(7, 0x3000), keepalive[..10].to_vec()].concat(),
        header(7, 0x3000),
        [header(7, 0x3000)[..11].to_vec(), vec![1], keepalive.clone()].concat(),
    ];
    for b in &bad {
        assert_eq!(Dns::probe(Dir::ToServer, &framed(b)), Probe::NoMatch, "{b:?}");
    }
    // An answer without TLVs is one.
    assert_eq!(Dns::probe(Dir::ToClient, &framed(&header(7, 0xb000))), Probe::Match);
}

/// The corpus answer to `www.corp.test A` with its later sections broken: still DNS (the
/// header and question are sound, also as a flow's first message), flagged, counted, and
/// nothing of it is learned for `fqdn` rules (a resolver would not take it, or not as Warden
/// reads it), while the intact answer teaches.
#[test]
fn malformed_later_sections_are_dns_flagged_and_teach_nothing() {
    let f = flow(17, 34864);
    let (query, answer) = (f.datagrams[0].1.clone(), f.datagrams[1].1.clone());
    let s = parser::scan(&answer, |_, _| {});
    let after_q = s.questions_end.unwrap();
    let an_rdlen = {
        // The first answer record: owner (a pointer), type, class, TTL, RDLENGTH.
        assert_eq!(answer[after_q] & 0xc0, 0xc0);
        after_q + 2 + 8
    };
    assert_eq!(&answer[an_rdlen..an_rdlen + 2], &[0, 4], "an A record");
    let mut bad_a = answer.clone();
    bad_a[an_rdlen + 1] = 5; // A with 5 bytes of data: the next record's bytes shift
    bad_a.insert(an_rdlen + 2 + 4, 0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut in the answer", answer[..after_q + 6].to_vec(), "record_past_end"),
        ("cut in the address", answer[..an_rdlen + 4].to_vec(), "rdata_past_end"),
        ("trailing bytes", [answer.clone(), b"exfiltrated".to_vec()].concat(), "trailing_bytes"),
        ("A with 5 bytes", bad_a, "bad_record"),
    ];
    for (name, m, reason) in cases {
        assert_eq!(Dns::probe(Dir::ToClient, &m), Probe::Match, "{name}: a flow's first message");
        let mut t = Dns::default();
        assert_eq!(t.feed(Dir::ToServer, &query), Feed::Consumed(query.len()));
        assert_eq!(t.feed(Dir::ToClient, &m), Feed::Consumed(m.len()), "{name}");
        let (learned, refused) = t.learned();
        assert!(learned.is_empty(), "{name}: learned {learned:?}");
        assert_eq!(refused.malformed, 1, "{name}");
        let l7 = l7_of(&t);
        assert_eq!((l7["violation"].clone(), l7["violation_reason"].clone()), (true.into(), reason.into()), "{name}");
        assert_eq!((l7["malformed"].clone(), l7["responses"].clone()), (1.into(), 1.into()), "{name}");
        assert_eq!(l7["query"], "www.corp.test");
    }
    // The intact answer teaches.
    let mut t = Dns::default();
    t.feed(Dir::ToServer, &query);
    t.feed(Dir::ToClient, &answer);
    assert_eq!(t.learned().0.len(), 1);
    assert!(l7_of(&t).get("violation").is_none());
}

/// Made-up line protocols and random bytes on port 53 stay unknown through the engine, over
/// UDP and TCP (the probe needs a sound header and a whole question at offset 12).
#[test]
fn made_up_protocols_on_port_53_stay_unknown() {
    use crate::app::engine::{Engine, EngineConfig};
    use crate::wire::ipproto;
    let mut rng = Rng(0x53);
    let mut inputs: Vec<Vec<u8>> = [
        &b"HELLO dns\r\n"[..],
        b"QUERY www.example.com A\r\n",
        b"+OK\r\n",
        b"\x00\x10RESOLVE example.com\n",
        b"STATUS\tOK\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    for len in [12, 17, 40, 100, 512] {
        for _ in 0..200 {
            inputs.push((0..len).map(|_| rng.next() as u8).collect());
        }
    }
    for b in &inputs {
        for proto in [ipproto::UDP, ipproto::TCP] {
            let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
            let i = e.open(proto, 53).unwrap();
            if proto == ipproto::UDP {
                e.datagram(i, Dir::ToServer, b, 53, 1);
                e.datagram(i, Dir::ToClient, b, 53, 2);
            } else {
                e.tcp_syn(i, Dir::ToServer, 0);
                e.tcp_syn(i, Dir::ToClient, 0);
                e.tcp_segment(i, Dir::ToServer, 1, b, 53, 3);
                e.tcp_segment(i, Dir::ToClient, 1, &b[..b.len() / 2], 53, 4);
            }
            assert_ne!(e.ctx(i).app, App::Dns, "{proto} {b:?}");
        }
    }
    for len in [12, 17, 40, 100, 512] {
        crate::app::testutil::check_rejects_random::<Dns>(20_000, len);
    }
}

/// NetBIOS name service (RFC 1002) borrows DNS's format on port 137: its queries and answers
/// are not DNS (tshark: NBNS; they were labelled `dns` before), while DNS SRV (type 0x21 like
/// NBSTAT) stays DNS.
#[test]
fn netbios_name_service_is_not_dns() {
    use crate::app::{AppParser, Probe};
    // "WORKGROUP" padded with spaces, suffix 0x1d, first-level encoded (RFC 1001 §14.1).
    let mut name = b"WORKGROUP      ".to_vec();
    name.push(0x1d);
    let encoded: Vec<u8> = name.iter().flat_map(|c| [b'A' + (c >> 4), b'A' + (c & 0x0f)]).collect();
    let nbns = |qd: u16, an: u16, qtype: u16| {
        let mut m = vec![0x80, 0x01, 0x01, 0x10];
        m.extend_from_slice(&qd.to_be_bytes());
        m.extend_from_slice(&an.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.push(32);
        m.extend_from_slice(&encoded);
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        if an > 0 {
            m.extend_from_slice(&[0, 0, 0, 0, 0, 6, 0, 0, 198, 18, 0, 7]);
        }
        m
    };
    for m in [nbns(1, 0, 0x20), nbns(1, 0, 0x21), nbns(0, 1, 0x20)] {
        assert!(crate::app::dns::parser::netbios_name_service(&m));
        assert_eq!(Dns::probe(Dir::ToServer, &m), Probe::NoMatch);
    }
    // A DNS SRV query and a query for an ordinary name of type 0x20 stay DNS.
    let mut srv = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["_ldap", "_tcp", "example", "com"] {
        srv.push(l.len() as u8);
        srv.extend_from_slice(l.as_bytes());
    }
    srv.extend_from_slice(&[0, 0, 0x21, 0, 1]);
    assert_eq!(Dns::probe(Dir::ToServer, &srv), Probe::Match);
}
