use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, check_rejects_random,
};

fn flows() -> Vec<Flow> {
    corpus_flows("postgresql.pcap")
}

fn parse(f: &Flow) -> Postgresql {
    let mut p = Postgresql::default();
    assert!(feed_all(&mut p, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut p, Dir::ToClient, &f.to_client).is_empty());
    p
}

const SSL_REQUEST: &[u8] = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";

#[test]
fn psql_simple_queries_and_error() {
    let f = &flows()[0];
    let p = parse(f);
    let m = l7_of(&p);
    assert_eq!(m["protocol"], "3.0");
    assert_eq!(m["user"], "app");
    assert_eq!(m["database"], "shop");
    assert_eq!(m["application_name"], "corpus");
    assert_eq!(m["server_version"], "15.18 (Debian 15.18-0+deb12u1)");
    assert_eq!(m["ssl_requested"], false);
    assert_eq!(m["encrypted"], false);
    assert_eq!(m["auth_method"], "sasl");
    assert_eq!(m["sasl_mechanism"], "SCRAM-SHA-256");
    assert_eq!(m["auth_ok"], true);
    assert_eq!(m["queries"], 6);
    assert_eq!(m["parses"], 0);
    assert_eq!(m["first_query"], "CREATE TABLE IF NOT EXISTS items (id int primary key, name text, price numeric)");
    assert_eq!(m["last_query"], "SELECT nosuchcol FROM items");
    assert_eq!(p.last_query(), Some("SELECT nosuchcol FROM items"));
    assert_eq!(m["commands_completed"], 5);
    assert_eq!(m["messages_to_server"], 9);
    assert_eq!(m["messages_to_client"], 35);
    assert_eq!(m["errors"], 1);
    assert_eq!(m["first_error_severity"], "ERROR");
    assert_eq!(m["first_error_code"], "42703");
    assert_eq!(m["first_error"], "column \"nosuchcol\" does not exist");
    assert!(m.get("violation").is_none());
}

#[test]
fn pgbench_extended_protocol() {
    let f = &flows()[2];
    let p = parse(f);
    let m = l7_of(&p);
    assert_eq!(m["application_name"], "pgbench");
    assert_eq!(m["queries"], 0);
    assert_eq!(m["parses"], 20);
    assert_eq!(p.query_count(), 20);
    assert_eq!(m["first_query"], "SELECT name, price FROM items WHERE id = $1;");
    assert_eq!(m["last_query"], "SELECT name, price FROM items WHERE id = $1;");
    assert_eq!(m["commands_completed"], 20);
    assert_eq!(m["errors"], 0);
}

#[test]
fn failed_authentication() {
    let f = &flows()[4];
    let p = parse(f);
    let m = l7_of(&p);
    assert_eq!(m["application_name"], "psql");
    assert_eq!(m["auth_ok"], false);
    assert_eq!(m["first_error_severity"], "FATAL");
    assert_eq!(m["first_error_code"], "28P01");
    assert_eq!(m["first_error"], "password authentication failed for user \"app\"");
    assert_eq!(p.first_error().map(|e| e.code.as_str()), Some("28P01"));
    assert_eq!(p.user(), Some("app"));
}

#[test]
fn every_flow_parses_the_same_in_captured_segments() {
    for f in flows() {
        let whole = l7_of(&parse(&f));
        assert!(whole.get("violation").is_none(), "{whole:?}");
        let mut p = Postgresql::default();
        for d in [Dir::ToServer, Dir::ToClient] {
            let segs: Vec<&[u8]> = f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
            feed_segments(&mut p, d, &segs);
        }
        assert_eq!(l7_of(&p), whole);
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in flows() {
        check_every_prefix::<Postgresql>(Dir::ToServer, &f.to_server);
        check_every_prefix::<Postgresql>(Dir::ToClient, &f.to_client);
        check_every_split::<Postgresql>(Dir::ToServer, &f.to_server);
        check_every_split::<Postgresql>(Dir::ToClient, &f.to_client);
    }
    // SSL refused, then the real start-up in clear.
    let f = &flows()[0];
    let mut c = SSL_REQUEST.to_vec();
    c.extend_from_slice(&f.to_server);
    let mut s = b"N".to_vec();
    s.extend_from_slice(&f.to_client);
    check_every_prefix::<Postgresql>(Dir::ToServer, &c);
    check_every_prefix::<Postgresql>(Dir::ToClient, &s);
    check_every_split::<Postgresql>(Dir::ToServer, &c);
    check_every_split::<Postgresql>(Dir::ToClient, &s);
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, &c);
    feed_all(&mut p, Dir::ToClient, &s);
    let m = l7_of(&p);
    assert_eq!(m["ssl_requested"], true);
    assert_eq!(m["encrypted"], false);
    assert_eq!(m["queries"], 6);
    assert_eq!(m["server_version"], "15.18 (Debian 15.18-0+deb12u1)");
}

#[test]
fn ssl_accepted_stops() {
    let mut c = SSL_REQUEST.to_vec();
    c.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert_eq!(Postgresql::probe(Dir::ToServer, &c), Probe::Match);
    assert_eq!(Postgresql::probe(Dir::ToClient, b"S"), Probe::NeedMore);
    assert_eq!(Postgresql::probe(Dir::ToClient, b"S\x16\x03\x03\x00\x7a"), Probe::Match);
    let mut p = Postgresql::default();
    assert_eq!(p.feed(Dir::ToServer, &c), Feed::Done);
    let m = l7_of(&p);
    assert_eq!(m["ssl_requested"], true);
    assert_eq!(m["encrypted"], true);
    let mut p = Postgresql::default();
    assert_eq!(p.feed(Dir::ToClient, b"S\x16\x03\x03\x00\x7a"), Feed::Done);
    assert_eq!(l7_of(&p)["encrypted"], true);
}

#[test]
fn cancel_and_gssenc_requests() {
    let cancel = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\x12\x34\x56\x78";
    assert_eq!(Postgresql::probe(Dir::ToServer, cancel), Probe::Match);
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, cancel);
    assert_eq!(l7_of(&p)["cancel_request"], true);
    let gss = b"\x00\x00\x00\x08\x04\xd2\x16\x30";
    assert_eq!(Postgresql::probe(Dir::ToServer, gss), Probe::Match);
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, gss);
    feed_all(&mut p, Dir::ToClient, b"N");
    let m = l7_of(&p);
    assert_eq!(m["gssenc_requested"], true);
    assert_eq!(m["encrypted"], false);
}

#[test]
fn probe_by_content() {
    for neg in [
        &b"HELLO\r\n"[..],
        b"EHLO x\r\n",
        b"+OK\r\n",
        b"{\"a\":1}\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x00\x00\x08\x00\x02\x00\x00",
        b"\x00\x00\x00\x09\x04\xd2\x16\x2f\x00",
    ] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Postgresql::probe(d, neg), Probe::NoMatch, "{d:?} {neg:?}");
        }
    }
    assert_eq!(Postgresql::probe(Dir::ToClient, b"N"), Probe::NeedMore);
    assert_eq!(Postgresql::probe(Dir::ToClient, b"NR\x00\x00\x00\x08\x00\x00\x00\x00"), Probe::Match);
    assert_eq!(Postgresql::probe(Dir::ToServer, SSL_REQUEST), Probe::Match);
}

#[test]
fn random_bytes_do_not_match() {
    check_rejects_random::<Postgresql>(5000, 64);
}

#[test]
fn other_corpus_protocols_never_match() {
    check_rejects_other_corpus::<Postgresql>(&["postgresql"]);
}

#[test]
fn large_messages_are_skipped_not_buffered() {
    let f = &flows()[0];
    let startup_len = 0x38;
    let mut c = f.to_server[..startup_len].to_vec();
    // A 5 MB query, then a small one.
    let mut q = b"INSERT INTO t VALUES ('".to_vec();
    q.resize(5 << 20, b'a');
    q.push(0);
    c.push(b'Q');
    c.extend_from_slice(&(q.len() as u32 + 4).to_be_bytes());
    c.extend_from_slice(&q);
    c.extend_from_slice(b"Q\x00\x00\x00\x0dSELECT 1\x00");
    let mut p = Postgresql::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut max_pending = 0;
    for seg in c.chunks(1448) {
        buf.extend_from_slice(seg);
        match p.feed(Dir::ToServer, &buf) {
            Feed::Consumed(n) => drop(buf.drain(..n)),
            Feed::Need { consumed, .. } => drop(buf.drain(..consumed)),
            Feed::Done | Feed::Invalid { .. } => panic!("done"),
        }
        max_pending = max_pending.max(buf.len());
    }
    assert!(buf.is_empty());
    assert!(max_pending <= 5 + WINDOW + 1448, "{max_pending}");
    let m = l7_of(&p);
    assert_eq!(m["queries"], 2);
    assert_eq!(m["first_query"].as_str().map(str::len), Some(QUERY_TEXT));
    assert_eq!(m["last_query"], "SELECT 1");
    // Oversized length fields are violations.
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, &f.to_server[..startup_len]);
    p.feed(Dir::ToServer, b"Q\x7f\xff\xff\xff");
    assert_eq!(l7_of(&p)["violation"], true);
    let mut p = Postgresql::default();
    p.feed(Dir::ToServer, b"\x00\x01\x00\x00\x00\x03\x00\x00");
    assert_eq!(l7_of(&p)["violation"], true);
}

#[test]
fn gaps() {
    let f = &flows()[0];
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, &f.to_server[..100]);
    p.gap(Dir::ToServer, 10);
    assert_eq!(p.feed(Dir::ToServer, &f.to_server[110..]), Feed::Consumed(f.to_server.len() - 110));
    feed_all(&mut p, Dir::ToClient, &f.to_client);
    let m = l7_of(&p);
    assert_eq!(m["gap"], true);
    assert_eq!(m["user"], "app");
    assert_eq!(m["queries"], 0);
    assert_eq!(m["errors"], 1);
    assert!(m.get("violation").is_none());
    // Both directions lost: done.
    p.gap(Dir::ToClient, 10);
    assert_eq!(p.feed(Dir::ToClient, b"Z\x00\x00\x00\x05I"), Feed::Done);
    // A gap inside a skipped body only shortens the skip.
    let mut p = Postgresql::default();
    feed_all(&mut p, Dir::ToServer, &f.to_server[..0x38]);
    let mut q = vec![b'Q'];
    q.extend_from_slice(&(10_004u32).to_be_bytes());
    q.extend(std::iter::repeat_n(b'x', 9_999));
    q.push(0);
    p.feed(Dir::ToServer, &q[..5 + WINDOW]);
    p.gap(Dir::ToServer, 1000);
    feed_all(&mut p, Dir::ToServer, &q[5 + WINDOW + 1000..]);
    feed_all(&mut p, Dir::ToServer, b"Q\x00\x00\x00\x0dSELECT 1\x00");
    assert_eq!(l7_of(&p)["queries"], 2);
    assert_eq!(p.last_query(), Some("SELECT 1"));
}

#[test]
fn mutated_real_bytes_never_panic() {
    let fl = flows();
    let seeds: [(Dir, &[u8]); 4] = [
        (Dir::ToServer, &fl[0].to_server),
        (Dir::ToClient, &fl[0].to_client),
        (Dir::ToServer, &fl[2].to_server),
        (Dir::ToClient, &fl[4].to_client),
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..4000 {
        let (d, seed) = seeds[i % seeds.len()];
        let mut buf = seed.to_vec();
        for _ in 0..(1 + rnd() % 8) {
            let at = (rnd() as usize) % buf.len();
            match rnd() % 4 {
                0 => buf[at] = rnd() as u8,
                1 => buf[at] = b"\x00\xffQPESRNv"[(rnd() % 8) as usize],
                2 => buf.truncate(at.max(1)),
                _ => buf.insert(at, rnd() as u8),
            }
        }
        let _ = Postgresql::probe(d, &buf);
        let mut p = Postgresql::default();
        let segs: Vec<&[u8]> = buf.chunks(1 + (rnd() % 700) as usize).collect();
        feed_segments(&mut p, d, &segs);
        let _ = l7_of(&p);
    }
}

/// After a real session, bytes whose message type the protocol does not define end the
/// stream's PostgreSQL (the server closes on them); a known type is still PostgreSQL.
#[test]
fn unknown_message_types_after_detection_are_invalid() {
    for f in flows() {
        let mut p = Postgresql::default();
        assert!(feed_all(&mut p, Dir::ToServer, &f.to_server).is_empty());
        if p.d[0].phase != Phase::Typed {
            continue;
        }
        for bad in [&b"*1\r\n$4\r\nPING\r\n"[..], b"GET / HTTP/1.1\r\n", b"R\x00\x00\x00\x08\x00\x00\x00\x00", b"Q\x00\x00\x00\x02"] {
            let mut q = p.clone();
            assert_eq!(q.feed(Dir::ToServer, bad), Feed::Invalid { consumed: 0 }, "{bad:?}");
        }
        let mut q = p.clone();
        assert_eq!(q.feed(Dir::ToServer, b"Q\x00\x00\x00\x0dSELECT 1\x00"), Feed::Consumed(14));
        let mut q = p.clone();
        assert!(feed_all(&mut q, Dir::ToClient, &f.to_client).is_empty());
        assert_eq!(q.feed(Dir::ToClient, b"Q\x00\x00\x00\x0dSELECT 1\x00"), Feed::Invalid { consumed: 0 }, "a frontend type from the server");
    }
    // A start-up packet that is none.
    let mut p = Postgresql::default();
    assert_eq!(p.feed(Dir::ToServer, b"\x00\x00\x00\x08\x00\x09\x00\x00"), Feed::Invalid { consumed: 0 });
}
