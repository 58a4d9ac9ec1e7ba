use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows, feed_all, feed_segments, l7_of, Rng,
};

fn parse(file: &str, i: usize) -> (Map<String, Value>, crate::app::testutil::Flow) {
    let f = corpus_flows(file).into_iter().filter(|f| !f.to_server.is_empty()).nth(i).unwrap();
    let mut t = Couchbase::default();
    assert!(feed_all(&mut t, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut t, Dir::ToClient, &f.to_client).is_empty());
    (l7_of(&t), f)
}

#[test]
fn sdk_bootstrap() {
    let (m, _) = parse("couchbase-sdk.pcap", 0);
    assert_eq!(m["opcodes"], serde_json::json!(["HELLO", "SASL_LIST_MECHS", "SASL_AUTH"]));
    assert_eq!(m["sasl_mechanism"], "SCRAM-SHA512");
    assert!(m["agent"].as_str().unwrap().starts_with("{\"a\":\"python/4.6.3 (cxx/1.3.2;"));
    assert_eq!(m["hello_features"], 20);
    assert_eq!(m["requests"], 3);
    assert_eq!(m["responses"], 0);
}

#[test]
fn memcached_binary_session() {
    let (m, _) = parse("couchbase-memcached-binary.pcap", 0);
    assert!(m.get("lost_sync").is_none());
    assert_eq!(
        m["opcodes"],
        serde_json::json!(["SET", "GET", "SETQ", "NOOP", "GETKQ", "GETK", "INCREMENT", "DELETE"])
    );
    // STAT answers with one response per statistic, hence more responses than requests.
    assert_eq!(m["requests"], 25);
    assert_eq!(m["responses"], 107);
    assert_eq!(m["errors"], 4);
    assert_eq!(m["first_error_status"], 1); // Key not found
    assert!(m.get("sasl_mechanism").is_none());
}

#[test]
fn every_prefix_and_every_split() {
    for file in ["couchbase-sdk.pcap", "couchbase-memcached-binary.pcap"] {
        for f in corpus_flows(file).iter().filter(|f| !f.to_server.is_empty()) {
            for (d, b) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
                if b.is_empty() {
                    continue;
                }
                let b = &b[..b.len().min(2000)];
                check_every_prefix::<Couchbase>(d, b);
                check_every_split::<Couchbase>(d, b);
                let segs: Vec<&[u8]> = f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
                let mut t = Couchbase::default();
                feed_segments(&mut t, d, &segs);
                let mut w = Couchbase::default();
                feed_all(&mut w, d, if d == Dir::ToServer { &f.to_server } else { &f.to_client });
                assert_eq!(l7_of(&t), l7_of(&w));
            }
        }
    }
}

#[test]
fn large_value_is_skipped_without_buffering() {
    let (_, f) = parse("couchbase-sdk.pcap", 0);
    let mut b = f.to_server.clone();
    // Make the first message (HELLO) claim 1 MiB more body, then feed in pieces.
    let body = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) + (1 << 20);
    b[8..12].copy_from_slice(&body.to_be_bytes());
    let mut t = Couchbase::default();
    assert_eq!(t.feed(Dir::ToServer, &b[..300]), Feed::Consumed(300));
    let filler = vec![0u8; 1 << 20];
    assert!(feed_all(&mut t, Dir::ToServer, &filler[..(1 << 20) - 300 + 219]).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["requests"], 1);
    assert!(m.get("lost_sync").is_none());
}

#[test]
fn gap_stops_and_garbage_is_invalid() {
    let (_, f) = parse("couchbase-sdk.pcap", 0);
    let mut t = Couchbase::default();
    t.gap(Dir::ToServer, 10);
    assert_eq!(t.feed(Dir::ToServer, &f.to_server), Feed::Done);
    assert_eq!(l7_of(&t)["lost_sync"], true);
    let mut t = Couchbase::default();
    assert_eq!(t.feed(Dir::ToServer, b"\x80\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00\x01xxxxxxxxxxxx"), Feed::Invalid { consumed: 0 });
    // After the real requests, RESP is not the binary protocol.
    let mut t = Couchbase::default();
    let mut bytes = f.to_server.clone();
    bytes.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Invalid { consumed: f.to_server.len() });
}

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n", b"get foo\r\n"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Couchbase::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Couchbase>(&["couchbase"]);
    check_rejects_random::<Couchbase>(100_000, 24);
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0xc0c0);
    let seeds: Vec<(Dir, Vec<u8>)> = ["couchbase-sdk.pcap", "couchbase-memcached-binary.pcap"]
        .iter()
        .flat_map(|f| corpus_flows(f))
        .flat_map(|f| [(Dir::ToServer, f.to_server), (Dir::ToClient, f.to_client)])
        .filter(|(_, b)| !b.is_empty())
        .collect();
    for i in 0..5000 {
        let (d, seed) = &seeds[i % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + rng.below(6) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] = rng.next() as u8,
                1 => b[at] = 0xff,
                2 => b[at] ^= 0x01,
                _ => b.truncate(at),
            }
        }
        let _ = Couchbase::probe(*d, &b);
        let mut t = Couchbase::default();
        let cut = rng.below(b.len());
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
    }
}
