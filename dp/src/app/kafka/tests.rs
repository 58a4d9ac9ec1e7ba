use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows,
    feed_all, feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

fn flow(port: u16) -> Flow {
    corpus_flows("kafka.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

fn parse(bytes: &[u8]) -> Kafka {
    let mut k = Kafka::default();
    assert!(feed_all(&mut k, Dir::ToServer, bytes).is_empty());
    k
}

/// A non-flexible request (header v1) with `body`.
fn request(key: i16, version: i16, corr: i32, client: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&key.to_be_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&corr.to_be_bytes());
    m.extend_from_slice(&(client.len() as i16).to_be_bytes());
    m.extend_from_slice(client);
    m.extend_from_slice(body);
    let mut b = (m.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(&m);
    b
}

fn response(corr: i32, body_len: usize) -> Vec<u8> {
    let mut b = ((4 + body_len) as i32).to_be_bytes().to_vec();
    b.extend_from_slice(&corr.to_be_bytes());
    b.extend(std::iter::repeat_n(0u8, body_len));
    b
}

#[test]
fn api_versions_v3_flexible_request() {
    let f = flow(35672);
    assert_eq!(f.to_server.len(), 51);
    assert!(f.to_client.is_empty());
    let m = l7_of(&parse(&f.to_server));
    assert_eq!(m["api_keys"], json!([18]));
    assert_eq!(m["api_names"], json!(["ApiVersions"]));
    assert_eq!(m["api_version"], 3);
    assert_eq!(m["correlation_id"], 1);
    assert_eq!(m["client_id"], "corpus-consumer");
    assert_eq!(m["requests"], 1);
    assert_eq!(m["responses"], 0);
    assert_eq!(m["matched"], 0);
    assert!(m.get("violation").is_none());
    assert_eq!(l7_of(&parse(&flow(44100).to_server)), m);
}

#[test]
fn metadata_v0_request() {
    let f = flow(44110);
    let m = l7_of(&parse(&f.to_server));
    assert_eq!(m["api_keys"], json!([3]));
    assert_eq!(m["api_names"], json!(["Metadata"]));
    assert_eq!(m["api_version"], 0);
    assert_eq!(m["correlation_id"], 1);
    assert_eq!(m["client_id"], "corpus-consumer");
    assert!(m.get("topics").is_none());
}

#[test]
fn corpus_segments_as_captured() {
    for f in corpus_flows("kafka.pcap") {
        let mut k = Kafka::default();
        let segs: Vec<&[u8]> = f.segments.iter().filter(|(d, _)| *d == Dir::ToServer).map(|(_, s)| &s[..]).collect();
        assert!(feed_segments(&mut k, Dir::ToServer, &segs).is_empty());
        assert_eq!(k.requests, 1);
        assert_eq!(Kafka::probe(Dir::ToServer, &f.to_server), Probe::Match);
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in corpus_flows("kafka.pcap") {
        check_every_prefix::<Kafka>(Dir::ToServer, &f.to_server);
        check_every_split::<Kafka>(Dir::ToServer, &f.to_server);
    }
    let mut two = response(1, 20);
    two.extend(response(2, 3000));
    check_every_split::<Kafka>(Dir::ToClient, &two);
}

#[test]
fn responses_match_requests_by_correlation_id() {
    let mut k = parse(&[flow(35672).to_server, request(3, 1, 2, b"x", &[0, 0, 0, 0])].concat());
    let mut resp = response(1, 10);
    resp.extend(response(7, 0));
    resp.extend(response(2, 5000));
    assert!(feed_all(&mut k, Dir::ToClient, &resp).is_empty());
    let m = l7_of(&k);
    assert_eq!(m["requests"], 2);
    assert_eq!(m["responses"], 3);
    assert_eq!(m["matched"], 2);
    assert_eq!(m["api_names"], json!(["ApiVersions", "Metadata"]));
    assert_eq!(Kafka::probe(Dir::ToClient, &resp), Probe::NoMatch);
}

#[test]
fn produce_and_fetch_topics() {
    // Produce v2: acks, timeout, [topic ...].
    let mut body = vec![0xff, 0xff, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 6];
    body.extend_from_slice(b"orders");
    body.extend(std::iter::repeat_n(0u8, 4000)); // partitions and records, skipped
    let produce = request(0, 2, 5, b"p", &body);
    // Produce v9 (flexible): tags, compact null transactional_id, acks, timeout, compact array.
    let mut body9 = vec![0, 0, 0, 1, 0, 0, 0x75, 0x30, 2, 7];
    body9.extend_from_slice(b"events");
    body9.extend_from_slice(&[0, 0]);
    let produce9 = request(0, 9, 6, b"p", &body9);
    // Fetch v4: replica_id, max_wait, min_bytes, max_bytes, isolation, [topic ...].
    let mut fetch = vec![0xff; 4];
    fetch.extend_from_slice(&[0, 0, 1, 0xf4, 0, 0, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 6]);
    fetch.extend_from_slice(b"orders");
    fetch.extend_from_slice(&[0; 8]);
    let fetch = request(1, 4, 7, b"c", &fetch);
    let all = [produce, produce9, fetch].concat();
    let m = l7_of(&parse(&all));
    assert_eq!(m["topics"], json!(["orders", "events"]));
    assert_eq!(m["api_names"], json!(["Produce"]).as_array().unwrap().iter().cloned().chain([json!("Fetch")]).collect::<Value>());
    assert_eq!(m["requests"], 3);
    check_every_prefix::<Kafka>(Dir::ToServer, &all);
    check_every_split::<Kafka>(Dir::ToServer, &all);
}

#[test]
fn probe_rejects_others() {
    for junk in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n"] {
        assert_eq!(Kafka::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
        assert_eq!(Kafka::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    // api key out of range, non-printable client id, negative correlation id.
    assert_eq!(Kafka::probe(Dir::ToServer, &request(75, 0, 1, b"x", &[])), Probe::NoMatch);
    assert_eq!(Kafka::probe(Dir::ToServer, &request(3, 0, 1, b"\x01x", &[])), Probe::NoMatch);
    assert_eq!(Kafka::probe(Dir::ToServer, &request(3, 0, -1, b"x", &[])), Probe::NoMatch);
    assert_eq!(Kafka::probe(Dir::ToServer, &request(3, 21, 1, b"x", &[])), Probe::NoMatch);
    check_rejects_random::<Kafka>(20_000, 64);
    check_rejects_other_corpus::<Kafka>(&["kafka"]);
}

#[test]
fn mutated_input_never_panics() {
    let base = [flow(35672).to_server, flow(44110).to_server].concat();
    let mut rng = Rng(7);
    for _ in 0..4000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        b.truncate(rng.below(b.len() + 1));
        let _ = Kafka::probe(Dir::ToServer, &b);
        for d in [Dir::ToServer, Dir::ToClient] {
            let mut k = Kafka::default();
            let cut = rng.below(b.len() + 1);
            feed_segments(&mut k, d, &[&b[..cut], &b[cut..]]);
            let _ = l7_of(&k);
        }
    }
}

#[test]
fn gaps() {
    // A gap inside a skipped body shortens the skip; the next request still parses.
    let big = request(0, 2, 1, b"p", &[0u8; 3000]);
    let mut k = Kafka::default();
    assert_eq!(k.feed(Dir::ToServer, &big[..1500]), Feed::Consumed(1500));
    k.gap(Dir::ToServer, 1000);
    let rest = [&big[2500..], &flow(44110).to_server[..]].concat();
    assert!(feed_all(&mut k, Dir::ToServer, &rest).is_empty());
    assert_eq!(k.requests, 2);
    // A gap at a message boundary stops the direction.
    k.gap(Dir::ToServer, 10);
    feed_all(&mut k, Dir::ToServer, &flow(44110).to_server);
    let m = l7_of(&k);
    assert_eq!(m["requests"], 2);
    assert_eq!(m["gap"], true);
    // Oversized length is a violation, not a panic.
    let mut k = Kafka::default();
    k.feed(Dir::ToServer, &[0x7f, 0xff, 0xff, 0xff, 0, 0]);
    assert_eq!(l7_of(&k)["violation"], true);
}
