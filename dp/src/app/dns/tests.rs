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
    assert_eq!(Dns::probe(Dir::ToServer, &q[..q.len() - 1]), Probe::NoMatch); // length inconsistent
    let mut longer = q.clone();
    longer.push(0);
    assert_eq!(Dns::probe(Dir::ToServer, &longer), Probe::NoMatch); // trailing byte
    assert_eq!(Dns::probe(Dir::ToServer, &with(12, 0xc0)), Probe::NoMatch); // pointer in first name
}

#[test]
fn compression_loops_are_bounded() {
    // A response whose answer owner points to itself, and one pointing forward.
    let q = flow(17, 34864).datagrams[1].1.clone();
    let qend = match parser::first_question(&q) {
        Parse::Ok(e, _) => e,
        other => panic!("{other:?}"),
    };
    for ptr in [qend as u16, qend as u16 + 2, 0x3fff] {
        let mut b = q.clone();
        b[qend..qend + 2].copy_from_slice(&(0xc000 | ptr).to_be_bytes());
        let mut t = Dns::default();
        assert_eq!(t.feed(Dir::ToClient, &b), Feed::Consumed(b.len()));
        let m = l7_of(&t);
        assert!(m.get("answers").is_none());
        assert_eq!(m["malformed"], 1);
        assert_eq!(m["query"], "www.corp.test");
        assert_eq!(Dns::probe(Dir::ToClient, &b), Probe::NoMatch);
    }
    // Chains of backward pointers in the answer section still terminate.
    let mut b = q[..qend].to_vec();
    b[7] = 1;
    b[11] = 0;
    for i in 0..200u16 {
        let here = b.len() as u16;
        let target = if i == 0 { 12 } else { here - 2 };
        b.extend_from_slice(&(0xc000 | target).to_be_bytes());
    }
    b.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
    let mut t = Dns::default();
    t.feed(Dir::ToClient, &b);
    let _ = l7_of(&t);
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
    }
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
