use super::*;
use crate::app::testutil::{
    capture_flows, check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random,
    corpus_flows, feed_all, feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

fn flow(port: u16) -> Flow {
    corpus_flows("cassandra.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

fn frame(version: u8, stream: i16, op: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![version, 0];
    b.extend_from_slice(&stream.to_be_bytes());
    b.push(op);
    b.extend_from_slice(&(body.len() as i32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn string_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (pairs.len() as u16).to_be_bytes().to_vec();
    for (k, v) in pairs {
        for s in [k, v] {
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

fn query_body(q: &str) -> Vec<u8> {
    let mut b = (q.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(q.as_bytes());
    b.extend_from_slice(&[0, 1, 0]); // consistency ONE, no flags
    b
}

/// An uncompressed v5 segment (CRCs zero: not verified).
fn segment(payload: &[u8], self_contained: bool) -> Vec<u8> {
    let v = payload.len() as u32 | u32::from(self_contained) << 17;
    let mut b = v.to_le_bytes()[..3].to_vec();
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(payload);
    b.extend_from_slice(&[0; 4]);
    b
}

fn parse(dir: Dir, bytes: &[u8]) -> Cassandra {
    let mut c = Cassandra::default();
    assert!(feed_all(&mut c, dir, bytes).is_empty());
    c
}

#[test]
fn options_v4_and_v5() {
    for (port, v) in [(43030, 4), (43036, 5)] {
        let f = flow(port);
        assert_eq!(f.to_server, [v, 0, 0, 0, 5, 0, 0, 0, 0]);
        let m = l7_of(&parse(Dir::ToServer, &f.to_server));
        assert_eq!(m["request_version"], v);
        assert_eq!(m["request_first_stream"], 0);
        assert_eq!(m["opcodes"], json!(["OPTIONS"]));
        assert_eq!(m["frames_to_server"], 1);
        assert!(m.get("violation").is_none());
        check_every_prefix::<Cassandra>(Dir::ToServer, &f.to_server);
        check_every_split::<Cassandra>(Dir::ToServer, &f.to_server);
        let mut c = Cassandra::default();
        let segs: Vec<&[u8]> = f.segments.iter().filter(|(d, _)| *d == Dir::ToServer).map(|(_, s)| &s[..]).collect();
        assert!(feed_segments(&mut c, Dir::ToServer, &segs).is_empty());
        assert_eq!(c.side[0].frames, 1);
    }
}

/// The DataStax python driver's first frame with its default protocol version (DSE_V2, 0x42)
/// and with DSE_V1 (0x41), from `dp/tests/captures/cassandra-dse-options.pcap`: both are
/// OPTIONS in the v4 frame layout and must be recognised (they were not before: an end-to-end
/// test with the real driver left these sessions `unknown`).
#[test]
fn dse_options_from_the_python_driver() {
    let flows = capture_flows("cassandra-dse-options.pcap");
    assert_eq!(flows.len(), 2);
    for (f, v) in flows.iter().zip([0x42, 0x41]) {
        assert_eq!(f.server_port, 9042);
        assert_eq!(f.to_server, [v, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert!(f.to_client.is_empty());
        assert_eq!(Cassandra::probe(Dir::ToServer, &f.to_server), Probe::Match);
        let m = l7_of(&parse(Dir::ToServer, &f.to_server));
        assert_eq!(m["request_version"], v);
        assert_eq!(m["request_first_stream"], 0);
        assert_eq!(m["opcodes"], json!(["OPTIONS"]));
        assert_eq!(m["frames_to_server"], 1);
        assert!(m.get("violation").is_none());
        check_every_prefix::<Cassandra>(Dir::ToServer, &f.to_server);
        check_every_split::<Cassandra>(Dir::ToServer, &f.to_server);
    }
}

/// A DSE_V2 session keeps the legacy framing after STARTUP and READY (no v5 segments), and an
/// Apache Cassandra server's refusal of 0x42 (a v4 ERROR, protocol error 0x000a) is read too.
#[test]
fn dse_session_keeps_legacy_framing() {
    let client = [
        frame(0x42, 0, 5, &[]),
        frame(0x42, 1, 1, &string_map(&[("CQL_VERSION", "3.4.5"), ("DRIVER_NAME", "DataStax Python Driver")])),
        frame(0x42, 2, 7, &query_body("SELECT now() FROM system.local")),
    ]
    .concat();
    let server = [
        frame(0xc2, 0, 6, &string_map(&[("CQL_VERSION", "3.4.5")])),
        frame(0xc2, 1, 2, &[]),
        frame(0xc2, 2, 8, &[0, 0, 0, 1]),
    ]
    .concat();
    let mut c = Cassandra::default();
    assert!(feed_all(&mut c, Dir::ToServer, &client).is_empty());
    assert!(feed_all(&mut c, Dir::ToClient, &server).is_empty());
    assert!(!c.side[0].segmented && !c.side[1].segmented);
    let m = l7_of(&c);
    assert_eq!(m["request_version"], 0x42);
    assert_eq!(m["response_version"], 0x42);
    assert_eq!(m["opcodes"], json!(["OPTIONS", "STARTUP", "QUERY", "SUPPORTED", "READY", "RESULT"]));
    assert_eq!(m["query"], "SELECT now() FROM system.local");
    assert_eq!(m["frames_to_server"], 3);
    assert_eq!(m["frames_to_client"], 3);
    assert!(m.get("violation").is_none() && m.get("segments").is_none());

    // ERROR body: [int] code, [string] message.
    let refusal = frame(0x84, 0, 0, &[&0x000a_i32.to_be_bytes()[..], &[0, 5], b"proto"].concat());
    assert_eq!(Cassandra::probe(Dir::ToClient, &refusal), Probe::Match);
    assert_eq!(Cassandra::probe(Dir::ToClient, &frame(0x42, 0, 6, &[])), Probe::NoMatch, "no direction bit");
    assert_eq!(Cassandra::probe(Dir::ToServer, &frame(0xc2, 0, 5, &[])), Probe::NoMatch, "direction bit");
    assert_eq!(Cassandra::probe(Dir::ToServer, &frame(0x43, 0, 5, &[])), Probe::NoMatch, "unknown DSE version");
    // Server streams: a request's (non-negative) or -1 for events, never below.
    assert_eq!(Cassandra::probe(Dir::ToClient, &frame(0xc2, -1, 0x0c, &[0, 1, b'x'])), Probe::Match);
    assert_eq!(Cassandra::probe(Dir::ToClient, &frame(0xc2, -2, 0x0c, &[0, 1, b'x'])), Probe::NoMatch);
    // A DNS response from the corpus (id 0xc207, QR set: stream 0x8580) is not a DSE_V2 frame.
    let dns = corpus_flows("dns.pcap")
        .into_iter()
        .flat_map(|f| f.datagrams)
        .find(|(d, g)| *d == Dir::ToClient && g.starts_with(&[0xc2, 0x07]))
        .expect("dns response 0xc207");
    assert_eq!(Cassandra::probe(Dir::ToClient, &dns.1), Probe::NoMatch);
    let mut c = Cassandra::default();
    assert!(feed_all(&mut c, Dir::ToServer, &frame(0x42, 0, 5, &[])).is_empty());
    assert!(feed_all(&mut c, Dir::ToClient, &refusal).is_empty());
    let m = l7_of(&c);
    assert_eq!(m["response_version"], 4);
    assert_eq!(m["errors"], 1);
    assert_eq!(m["error_code"], 0x000a);
}

#[test]
fn v4_session_startup_query_and_replies() {
    let client = [
        flow(43030).to_server,
        frame(4, 1, 1, &string_map(&[("CQL_VERSION", "3.0.0"), ("DRIVER_NAME", "DataStax Python Driver")])),
        frame(4, 2, 7, &query_body("SELECT release_version FROM system.local WHERE key='local'")),
        frame(4, 3, 9, &query_body("INSERT INTO ks.t (k, v) VALUES (?, ?)")),
    ]
    .concat();
    let server = [
        // SUPPORTED: a string multimap {CQL_VERSION: [3.4.5]}.
        frame(0x84, 0, 6, &[0, 1, 0, 11, b'C', b'Q', b'L', b'_', b'V', b'E', b'R', b'S', b'I', b'O', b'N', 0, 1, 0, 5, b'3', b'.', b'4', b'.', b'5']),
        frame(0x84, 1, 2, &[]),
        frame(0x84, 2, 8, &[0, 0, 0, 1]),
        frame(0x84, 3, 0, &[0, 0, 0x22, 0, 0, 4, b'b', b'a', b'd', b'!']),
    ]
    .concat();
    for (d, b) in [(Dir::ToServer, &client), (Dir::ToClient, &server)] {
        assert_eq!(Cassandra::probe(d, b), Probe::Match);
        check_every_prefix::<Cassandra>(d, b);
        check_every_split::<Cassandra>(d, b);
    }
    let mut c = parse(Dir::ToServer, &client);
    assert!(feed_all(&mut c, Dir::ToClient, &server).is_empty());
    let m = l7_of(&c);
    assert_eq!(m["opcodes"], json!(["OPTIONS", "STARTUP", "QUERY", "PREPARE", "SUPPORTED", "READY", "RESULT", "ERROR"]));
    assert_eq!(m["query"], "SELECT release_version FROM system.local WHERE key='local'");
    assert_eq!(m["queries"], 2);
    assert_eq!(m["cql_version"], "3.0.0");
    assert_eq!(m["driver_name"], "DataStax Python Driver");
    assert_eq!(m["frames_to_server"], 4);
    assert_eq!(m["frames_to_client"], 4);
    assert_eq!(m["response_version"], 4);
    assert_eq!(m["errors"], 1);
    assert_eq!(m["error_code"], 0x2200);
    assert!(m.get("segments").is_none());
}

#[test]
fn v5_switches_to_segments() {
    let long = "SELECT * FROM ks.big WHERE k = 1 ".repeat(40);
    let big_frame = frame(5, 4, 7, &query_body(&long));
    let client = [
        flow(43036).to_server,
        frame(5, 1, 1, &string_map(&[("CQL_VERSION", "3.0.0")])),
        segment(&[frame(5, 2, 7, &query_body("SELECT now() FROM system.local")), frame(5, 3, 0x0b, &[0, 0])].concat(), true),
        segment(&big_frame[..700], false),
        segment(&big_frame[700..], false),
        segment(&frame(5, 5, 5, &[]), true),
    ]
    .concat();
    let server = [frame(0x85, 1, 2, &[]), segment(&frame(0x85, 2, 8, &[0, 0, 0, 1]), true)].concat();
    check_every_split::<Cassandra>(Dir::ToServer, &client);
    check_every_split::<Cassandra>(Dir::ToClient, &server);
    let mut c = parse(Dir::ToServer, &client);
    assert!(feed_all(&mut c, Dir::ToClient, &server).is_empty());
    let m = l7_of(&c);
    assert_eq!(m["request_version"], 5);
    assert_eq!(m["opcodes"], json!(["OPTIONS", "STARTUP", "QUERY", "REGISTER", "READY", "RESULT"]));
    assert_eq!(m["query"], "SELECT now() FROM system.local");
    assert_eq!(m["queries"], 2);
    assert_eq!(m["frames_to_server"], 6);
    assert_eq!(m["frames_to_client"], 2);
    assert_eq!(m["segments"], 5);
    assert!(m.get("violation").is_none(), "{m:?}");
}

#[test]
fn query_text_is_capped() {
    let q = "x".repeat(2000);
    let m = l7_of(&parse(Dir::ToServer, &frame(4, 0, 7, &query_body(&q))));
    assert_eq!(m["query"].as_str().unwrap().len(), MAX_QUERY);
}

#[test]
fn probe_rejects_others() {
    for junk in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n"] {
        assert_eq!(Cassandra::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
        assert_eq!(Cassandra::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    // OPTIONS with a body, a response opcode from the client, a request frame from the server.
    assert_eq!(Cassandra::probe(Dir::ToServer, &frame(4, 0, 5, &[0])), Probe::NoMatch);
    assert_eq!(Cassandra::probe(Dir::ToServer, &frame(4, 0, 8, &[0])), Probe::NoMatch);
    assert_eq!(Cassandra::probe(Dir::ToClient, &flow(43030).to_server), Probe::NoMatch);
    assert_eq!(Cassandra::probe(Dir::ToServer, &frame(2, 0, 5, &[])), Probe::NoMatch);
    check_rejects_random::<Cassandra>(20_000, 64);
    check_rejects_other_corpus::<Cassandra>(&["cassandra"]);
}

#[test]
fn mutated_input_never_panics() {
    let base = [
        frame(5, 1, 1, &string_map(&[("CQL_VERSION", "3.0.0")])),
        segment(&frame(5, 2, 7, &query_body("SELECT now() FROM system.local")), true),
        segment(&frame(5, 3, 7, &query_body("SELECT 1")), false),
    ]
    .concat();
    let mut rng = Rng(13);
    for _ in 0..4000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        b.truncate(rng.below(b.len() + 1));
        for d in [Dir::ToServer, Dir::ToClient] {
            let _ = Cassandra::probe(d, &b);
            let mut c = Cassandra::default();
            let cut = rng.below(b.len() + 1);
            feed_segments(&mut c, d, &[&b[..cut], &b[cut..]]);
            let _ = l7_of(&c);
        }
    }
}

#[test]
fn gaps() {
    let big = frame(4, 0, 7, &query_body(&"y".repeat(5000)));
    let mut c = Cassandra::default();
    assert_eq!(c.feed(Dir::ToServer, &big[..2000]), Feed::Consumed(2000));
    c.gap(Dir::ToServer, 1000);
    assert!(feed_all(&mut c, Dir::ToServer, &[&big[3000..], &flow(43030).to_server[..]].concat()).is_empty());
    assert_eq!(c.side[0].frames, 2);
    c.gap(Dir::ToServer, 3);
    feed_all(&mut c, Dir::ToServer, &flow(43030).to_server);
    let m = l7_of(&c);
    assert_eq!(m["frames_to_server"], 2);
    assert_eq!(m["gap"], true);
    let mut c = Cassandra::default();
    c.feed(Dir::ToServer, &[4, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(l7_of(&c)["violation"], true);
}
