use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows,
    feed_all, feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

fn flow(port: u16) -> Flow {
    corpus_flows("mongodb.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

fn parse(dir: Dir, bytes: &[u8]) -> Mongodb {
    let mut m = Mongodb::default();
    assert!(feed_all(&mut m, dir, bytes).is_empty());
    m
}

/// `{ok: 1.0}` followed by `extra` elements.
fn ok_doc(extra: &[u8]) -> Vec<u8> {
    let mut e = vec![0x01];
    e.extend_from_slice(b"ok\0");
    e.extend_from_slice(&1.0f64.to_le_bytes());
    e.extend_from_slice(extra);
    let mut d = ((e.len() + 5) as i32).to_le_bytes().to_vec();
    d.extend(e);
    d.push(0);
    d
}

fn message(request_id: i32, response_to: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut b = ((16 + body.len()) as i32).to_le_bytes().to_vec();
    for v in [request_id, response_to, op] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(body);
    b
}

#[test]
fn op_msg_is_master_handshake() {
    let f = flow(51772);
    assert_eq!(f.to_server.len(), 365);
    let m = l7_of(&parse(Dir::ToServer, &f.to_server));
    assert_eq!(m["command"], "ismaster");
    assert_eq!(m["commands"], json!(["ismaster"]));
    assert_eq!(m["db"], "admin");
    assert_eq!(m["opcodes"], json!({"OP_MSG": 1}));
    assert_eq!(m["messages_to_server"], 1);
    assert_eq!(m["messages_to_client"], 0);
    assert!(m.get("violation").is_none());
    assert_eq!(l7_of(&parse(Dir::ToServer, &flow(51780).to_server)), m);
}

#[test]
fn op_msg_hello_with_server_api() {
    for port in [51792, 34098] {
        let f = flow(port);
        let m = l7_of(&parse(Dir::ToServer, &f.to_server));
        assert_eq!(m["command"], "hello");
        assert_eq!(m["db"], "admin");
        assert_eq!(m["opcodes"], json!({"OP_MSG": 1}));
    }
}

#[test]
fn corpus_segments_as_captured_and_every_prefix_and_split() {
    for f in corpus_flows("mongodb.pcap") {
        let mut p = Mongodb::default();
        let segs: Vec<&[u8]> = f.segments.iter().filter(|(d, _)| *d == Dir::ToServer).map(|(_, s)| &s[..]).collect();
        assert!(feed_segments(&mut p, Dir::ToServer, &segs).is_empty());
        assert_eq!(p.messages[0], 1);
        check_every_prefix::<Mongodb>(Dir::ToServer, &f.to_server);
        check_every_split::<Mongodb>(Dir::ToServer, &f.to_server);
    }
}

#[test]
fn server_replies_legacy_query_and_compressed() {
    // OP_MSG reply {ok: 1}, OP_REPLY with one document.
    let mut reply = message(9, 1, parser::OP_MSG, &[&[0, 0, 0, 0, 0][..], &ok_doc(&[])].concat());
    let mut legacy = vec![8, 0, 0, 0];
    legacy.extend_from_slice(&[0; 8]);
    legacy.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    legacy.extend(ok_doc(&[]));
    let legacy = message(10, 2, parser::OP_REPLY, &legacy);
    assert_eq!(Mongodb::probe(Dir::ToClient, &reply), Probe::Match);
    assert_eq!(Mongodb::probe(Dir::ToClient, &legacy), Probe::Match);
    assert_eq!(Mongodb::probe(Dir::ToServer, &reply), Probe::NoMatch, "responseTo set");
    reply.extend_from_slice(&legacy);
    check_every_prefix::<Mongodb>(Dir::ToClient, &reply);
    check_every_split::<Mongodb>(Dir::ToClient, &reply);
    let m = l7_of(&parse(Dir::ToClient, &reply));
    assert_eq!(m["opcodes"], json!({"OP_MSG": 1, "OP_REPLY": 1}));
    assert_eq!(m["messages_to_client"], 2);
    assert_eq!(m["commands"], json!([]));

    // Legacy OP_QUERY isMaster on admin.$cmd, then OP_COMPRESSED (zlib) of an OP_MSG.
    let mut q = vec![0, 0, 0, 0];
    q.extend_from_slice(b"admin.$cmd\0");
    q.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let mut doc = vec![0x10];
    doc.extend_from_slice(b"isMaster\0");
    doc.extend_from_slice(&1i32.to_le_bytes());
    let mut d = ((doc.len() + 5) as i32).to_le_bytes().to_vec();
    d.extend(doc);
    d.push(0);
    q.extend(d);
    let query = message(1, 0, parser::OP_QUERY, &q);
    assert_eq!(Mongodb::probe(Dir::ToServer, &query), Probe::Match);
    let mut c = parser::OP_MSG.to_le_bytes().to_vec();
    c.extend_from_slice(&100i32.to_le_bytes());
    c.push(2);
    c.extend_from_slice(&[0x78, 0x9c, 1, 2, 3]);
    let comp = message(2, 0, parser::OP_COMPRESSED, &c);
    assert_eq!(Mongodb::probe(Dir::ToServer, &comp), Probe::Match);
    let all = [query, comp].concat();
    check_every_prefix::<Mongodb>(Dir::ToServer, &all);
    check_every_split::<Mongodb>(Dir::ToServer, &all);
    let m = l7_of(&parse(Dir::ToServer, &all));
    assert_eq!(m["command"], "isMaster");
    assert_eq!(m["db"], "admin");
    assert_eq!(m["compressor"], "zlib");
    assert_eq!(m["opcodes"], json!({"OP_QUERY": 1, "OP_COMPRESSED": 1}));
}

fn big_insert() -> Vec<u8> {
    // An insert whose body document exceeds HEAD: command name yes, $db (at the end) no.
    let mut e = vec![0x02];
    e.extend_from_slice(b"insert\0");
    e.extend_from_slice(&6i32.to_le_bytes());
    e.extend_from_slice(b"items\0");
    e.push(0x05);
    e.extend_from_slice(b"blob\0");
    e.extend_from_slice(&40_000i32.to_le_bytes());
    e.push(0);
    e.extend(std::iter::repeat_n(0xabu8, 40_000));
    e.push(0x02);
    e.extend_from_slice(b"$db\0");
    e.extend_from_slice(&5i32.to_le_bytes());
    e.extend_from_slice(b"shop\0");
    let mut d = ((e.len() + 5) as i32).to_le_bytes().to_vec();
    d.extend(e);
    d.push(0);
    message(3, 0, parser::OP_MSG, &[&[0, 0, 0, 0, 0][..], &d].concat())
}

#[test]
fn large_message_is_skipped_and_name_still_read() {
    let big = big_insert();
    let all = [big, flow(51772).to_server].concat();
    let p = parse(Dir::ToServer, &all);
    let m = l7_of(&p);
    assert_eq!(m["commands"], json!(["insert", "ismaster"]));
    assert_eq!(m["db"], "admin");
    let chunks: Vec<&[u8]> = all.chunks(1400).collect();
    let mut q = Mongodb::default();
    assert!(feed_segments(&mut q, Dir::ToServer, &chunks).is_empty());
    assert_eq!(l7_of(&q), m);
}

#[test]
fn probe_rejects_others() {
    for junk in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n"] {
        assert_eq!(Mongodb::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
        assert_eq!(Mongodb::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    // Undefined OP_MSG flag bits, unknown section kind, unknown opcode.
    let mut b = flow(51772).to_server;
    b[17] = 0x10;
    assert_eq!(Mongodb::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = flow(51772).to_server;
    b[20] = 2;
    assert_eq!(Mongodb::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = flow(51772).to_server;
    b[12] = 0xde;
    assert_eq!(Mongodb::probe(Dir::ToServer, &b), Probe::NoMatch);
    check_rejects_random::<Mongodb>(20_000, 64);
    check_rejects_other_corpus::<Mongodb>(&["mongodb"]);
}

#[test]
fn mutated_input_never_panics() {
    let base = [flow(51772).to_server, flow(51792).to_server].concat();
    let mut rng = Rng(11);
    for _ in 0..4000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        b.truncate(rng.below(b.len() + 1));
        for d in [Dir::ToServer, Dir::ToClient] {
            let _ = Mongodb::probe(d, &b);
            let mut p = Mongodb::default();
            let cut = rng.below(b.len() + 1);
            feed_segments(&mut p, d, &[&b[..cut], &b[cut..]]);
            let _ = l7_of(&p);
        }
    }
}

#[test]
fn gaps() {
    let f = flow(51772);
    let big = big_insert();
    let mut p = Mongodb::default();
    assert_eq!(p.feed(Dir::ToServer, &big[..20_000]), Feed::Consumed(20_000));
    p.gap(Dir::ToServer, 1000);
    assert!(feed_all(&mut p, Dir::ToServer, &[&big[21_000..], &flow(51792).to_server[..]].concat()).is_empty());
    assert_eq!(p.command_names().collect::<Vec<_>>(), ["insert", "hello"]);
    p.gap(Dir::ToServer, 10);
    feed_all(&mut p, Dir::ToServer, &f.to_server);
    let m = l7_of(&p);
    assert_eq!(m["messages_to_server"], 2);
    assert_eq!(m["gap"], true);
    let mut p = Mongodb::default();
    p.feed(Dir::ToServer, &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(l7_of(&p)["violation"], true);
}
