use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows, feed_all,
    feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

/// The Java CLI flow (create, create, ls, get, set, stat, get of a missing node, delete,
/// delete, close) and the C `cli_mt` flow (ls /, close) of zookeeper.pcap.
fn flow(port: u16) -> Flow {
    corpus_flows("zookeeper.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

const JAVA: u16 = 34470;
const C_CLI: u16 = 34484;

fn both(f: &Flow) -> Zookeeper {
    let mut z = Zookeeper::default();
    assert!(feed_all(&mut z, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut z, Dir::ToClient, &f.to_client).is_empty());
    z
}

/// A request packet: length, xid, op, then `body`.
fn request(xid: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut b = ((8 + body.len()) as i32).to_be_bytes().to_vec();
    b.extend_from_slice(&xid.to_be_bytes());
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(body);
    b
}

/// A reply packet: length, xid, zxid, err, then `body`.
fn reply(xid: i32, zxid: i64, err: i32, body: &[u8]) -> Vec<u8> {
    let mut b = ((16 + body.len()) as i32).to_be_bytes().to_vec();
    b.extend_from_slice(&xid.to_be_bytes());
    b.extend_from_slice(&zxid.to_be_bytes());
    b.extend_from_slice(&err.to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn ustr(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

#[test]
fn java_cli_connect_fields() {
    let f = flow(JAVA);
    // ConnectRequest: 45 bytes, 16-byte zero password, readOnly false.
    assert_eq!(&f.to_server[..4], &[0, 0, 0, 45]);
    let Parse::Ok(q, 49) = parser::connect(Side::Request, &f.to_server) else { panic!() };
    assert_eq!(
        q,
        Connect {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30000,
            session_id: 0,
            passwd_len: 16,
            read_only: Some(false)
        }
    );
    let Parse::Ok(r, 41) = parser::connect(Side::Response, &f.to_client) else { panic!() };
    assert_eq!(r.timeout_ms, 30000);
    assert_eq!(r.session_id, 0x0100_0045_aed1_0000);
    assert_eq!((r.passwd_len, r.read_only), (16, Some(false)));
}

#[test]
fn java_cli_session() {
    let m = l7_of(&both(&flow(JAVA)));
    assert_eq!(m["protocol_version"], 0);
    assert_eq!(m["requested_timeout_ms"], 30000);
    assert_eq!(m["session_timeout_ms"], 30000);
    assert_eq!(m["session_id"], "0x1000045aed10000");
    assert_eq!(m["read_only"], false);
    assert_eq!(m["can_be_read_only"], false);
    assert_eq!(m["last_zxid_seen"], "0x0");
    assert!(m.get("reconnect").is_none());
    assert_eq!(m["ops"], json!(["create", "getChildren2", "getData", "setData", "exists", "delete", "closeSession"]));
    assert_eq!(m["paths"], json!(["/corpus", "/corpus/cfg", "/", "/nonexistent"]));
    // Ten requests (xids 1..=10), ten replies, each matched by xid.
    assert_eq!(m["requests"], 10);
    assert_eq!(m["responses"], 10);
    assert_eq!(m["matched"], 10);
    assert_eq!(m["pings"], 0);
    assert_eq!(m["watch_events"], 0);
    // getData of /nonexistent (xid 7) fails with -101.
    assert_eq!(m["errors"], 1);
    assert_eq!(m["last_error"], "NONODE");
    assert_eq!(m["last_error_code"], -101);
    assert_eq!(m["last_error_op"], "getData");
    // The last reply (closeSession, xid 10) carries zxid 7.
    assert_eq!(m["last_zxid"], "0x7");
    assert!(m.get("violation").is_none() && m.get("gap").is_none(), "{m:?}");
}

#[test]
fn c_cli_session() {
    let f = flow(C_CLI);
    let m = l7_of(&both(&f));
    assert_eq!(m["session_id"], "0x1000045aed10001");
    assert_eq!(m["requested_timeout_ms"], 30000);
    assert_eq!(m["ops"], json!(["getChildren", "closeSession"]));
    assert_eq!(m["paths"], json!(["/"]));
    // The C client's xids start from a time-based value: 0x6b023ef5, 0x6b023ef6.
    assert_eq!(&f.to_server[53..57], &0x6b02_3ef5_i32.to_be_bytes());
    assert_eq!((m["requests"].clone(), m["responses"].clone(), m["matched"].clone()), (json!(2), json!(2), json!(2)));
    assert_eq!(m["errors"], 0);
    assert!(m.get("last_error").is_none());
    assert_eq!(m["last_zxid"], "0x9");
}

#[test]
fn corpus_segments_as_captured() {
    for f in corpus_flows("zookeeper.pcap") {
        let whole = l7_of(&both(&f));
        let mut z = Zookeeper::default();
        for dir in [Dir::ToServer, Dir::ToClient] {
            let segs: Vec<&[u8]> = f.segments.iter().filter(|(d, _)| *d == dir).map(|(_, s)| &s[..]).collect();
            assert!(feed_segments(&mut z, dir, &segs).is_empty());
        }
        assert_eq!(l7_of(&z), whole);
        assert_eq!(Zookeeper::probe(Dir::ToServer, &f.to_server), Probe::Match);
        assert_eq!(Zookeeper::probe(Dir::ToClient, &f.to_client), Probe::Match);
        // The C client sends its length prefix in a segment of its own.
        if f.client_port == C_CLI {
            assert_eq!(f.segments[0].1.len(), 4);
            assert_eq!(Zookeeper::probe(Dir::ToServer, &f.segments[0].1), Probe::NeedMore);
        }
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in corpus_flows("zookeeper.pcap") {
        for (dir, bytes) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
            check_every_prefix::<Zookeeper>(dir, bytes);
            check_every_split::<Zookeeper>(dir, bytes);
        }
    }
}

#[test]
fn connect_variants() {
    let f = flow(JAVA);
    // Without the readOnly byte (pre-3.4 peers): 44 and 36 bytes.
    let mut old = f.to_server[..48].to_vec();
    old[3] = 44;
    let Parse::Ok(q, 48) = parser::connect(Side::Request, &old) else { panic!() };
    assert_eq!(q.read_only, None);
    let mut old_r = f.to_client[..40].to_vec();
    old_r[3] = 36;
    assert!(matches!(parser::connect(Side::Response, &old_r), Parse::Ok(Connect { read_only: None, .. }, 40)));
    // A reconnect carries the session id; a read-only-capable client sets the last byte.
    let mut re = f.to_server.clone();
    re[20..28].copy_from_slice(&0x0100_0045_aed1_0000_i64.to_be_bytes());
    re[48] = 1;
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToServer, &re);
    let m = l7_of(&z);
    assert_eq!(m["reconnect"], true);
    assert_eq!(m["can_be_read_only"], true);
    assert_eq!(m["session_id"], "0x1000045aed10000");
    // The server's answer to an expired session: timeout 0, session 0.
    let mut exp = f.to_client[..41].to_vec();
    exp[8..20].fill(0);
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToClient, &exp);
    assert_eq!(l7_of(&z)["session_expired"], true);
    assert_eq!(Zookeeper::probe(Dir::ToClient, &exp), Probe::Match);
}

#[test]
fn probe_rejects_inconsistent_connect_frames() {
    let req = flow(JAVA).to_server[..49].to_vec();
    let resp = flow(JAVA).to_client[..41].to_vec();
    let bad = |b: &[u8], i: usize, v: u8| {
        let mut b = b.to_vec();
        b[i] = v;
        b
    };
    for (b, why) in [
        (bad(&req, 3, 46), "frame length"),
        (bad(&req, 7, 1), "protocol version"),
        (bad(&req, 8, 0x80), "negative last zxid"),
        (bad(&req, 16, 0x06), "timeout above 24 h"),
        (bad(&req, 31, 8), "password length 8"),
        (bad(&req, 31, 0), "password length inconsistent with the frame"),
        (bad(&req, 48, 2), "readOnly byte"),
    ] {
        assert_eq!(Zookeeper::probe(Dir::ToServer, &b), Probe::NoMatch, "{why}");
    }
    assert_eq!(Zookeeper::probe(Dir::ToClient, &bad(&resp, 8, 0x80)), Probe::NoMatch);
    assert_eq!(Zookeeper::probe(Dir::ToClient, &bad(&resp, 23, 15)), Probe::NoMatch);
    // Each side's frame is not the other's.
    assert_eq!(Zookeeper::probe(Dir::ToClient, &req), Probe::NoMatch);
    assert_eq!(Zookeeper::probe(Dir::ToServer, &resp), Probe::NoMatch);
    for junk in [&b"ruok"[..], b"mntr\n", b"HELLO\r\n", b"GET / HTTP/1.1\r\n", b"\0\0\0\x2d\0\0\0\0\xff"] {
        assert_eq!(Zookeeper::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    // Four-letter words are the client's (four_letter_words below); other text is not.
    for junk in [&b"HELLO\r\n"[..], b"GET / HTTP/1.1\r\n", b"\0\0\0\x2d\0\0\0\0\xff", b"ruok ok\n", b"rubs", b"stats\n", b"kill\n\n"] {
        assert_eq!(Zookeeper::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
    }
    check_rejects_random::<Zookeeper>(20_000, 64);
    check_rejects_other_corpus::<Zookeeper>(&["zookeeper"]);
}

#[test]
fn pings_watch_events_auth_multi_and_set_watches() {
    let f = flow(JAVA);
    let mut to_server = f.to_server[..49].to_vec();
    to_server.extend(request(-2, 11, &[]));
    to_server.extend(request(-4, 100, &[&0i32.to_be_bytes()[..], &ustr(b"digest"), &ustr(b"user:secret")].concat()));
    to_server.extend(request(-8, 101, &[0; 20]));
    // multi: MultiHeader {type 2 (delete), done false, err -1}, DeleteRequest {"/a/b", -1}, end.
    let mut multi = vec![0, 0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff];
    multi.extend(ustr(b"/a/b"));
    multi.extend_from_slice(&[0xff; 4]);
    multi.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff]);
    to_server.extend(request(1, 14, &multi));
    // addWatch with a long path: only the first 128 bytes are kept.
    let long = [b"/".as_slice(), &[b'x'; 300]].concat();
    to_server.extend(request(2, 106, &[&ustr(&long)[..], &[0, 0, 0, 1]].concat()));
    to_server.extend(request(-2, 11, &[]));
    let mut to_client = f.to_client[..41].to_vec();
    to_client.extend(reply(-2, 7, 0, &[]));
    to_client.extend(reply(-4, 0, -115, &[]));
    to_client.extend(reply(-8, 0, 0, &[]));
    to_client.extend(reply(1, 8, 0, &[0; 30]));
    // A watch event: NodeDeleted (2) in SyncConnected (3) for /a/b.
    to_client.extend(reply(-1, -1, 0, &[&[0, 0, 0, 2, 0, 0, 0, 3][..], &ustr(b"/a/b")].concat()));
    to_client.extend(reply(2, 9, -121, &[]));
    to_client.extend(reply(-2, 9, 0, &[]));
    let mut z = Zookeeper::default();
    assert!(feed_all(&mut z, Dir::ToServer, &to_server).is_empty());
    assert!(feed_all(&mut z, Dir::ToClient, &to_client).is_empty());
    let m = l7_of(&z);
    assert_eq!(m["ops"], json!(["ping", "auth", "setWatches", "multi", "delete", "addWatch"]));
    assert_eq!(m["pings"], 2);
    assert_eq!(m["requests"], 4);
    assert_eq!(m["responses"], 4);
    assert_eq!(m["matched"], 2);
    assert_eq!(m["watch_events"], 1);
    assert_eq!(m["auth_scheme"], "digest");
    assert!(!serde_json::to_string(&m).unwrap().contains("secret"));
    let paths = m["paths"].as_array().unwrap();
    assert_eq!(paths[0], "/a/b");
    assert_eq!(paths[1].as_str().unwrap(), &String::from_utf8_lossy(&long)[..128]);
    assert_eq!(m["errors"], 2);
    assert_eq!(m["last_error"], "NOWATCHER");
    assert_eq!(m["last_error_op"], "addWatch");
    assert_eq!(m["last_zxid"], "0x9");
    check_every_split::<Zookeeper>(Dir::ToServer, &to_server);
    check_every_split::<Zookeeper>(Dir::ToClient, &to_client);
    check_every_prefix::<Zookeeper>(Dir::ToServer, &to_server);
}

#[test]
fn large_packets_are_skipped_by_count() {
    let f = flow(JAVA);
    // setData with 1 MB of data, then a getData: both seen, nothing buffered.
    let mut set = ustr(b"/big");
    set.extend(ustr(&vec![7u8; 1 << 20]));
    set.extend_from_slice(&[0xff; 4]);
    let all = [&f.to_server[..49], &request(1, 5, &set), &request(2, 4, &[&ustr(b"/big")[..], &[0]].concat())].concat();
    let mut z = Zookeeper::default();
    let segs: Vec<&[u8]> = all.chunks(1460).collect();
    assert!(feed_segments(&mut z, Dir::ToServer, &segs).is_empty());
    let m = l7_of(&z);
    assert_eq!(m["ops"], json!(["setData", "getData"]));
    assert_eq!(m["paths"], json!(["/big"]));
    assert_eq!(m["requests"], 2);
}

#[test]
fn mutated_input_never_panics() {
    let f = flow(JAVA);
    let bases = [f.to_server.clone(), f.to_client.clone()];
    let mut rng = Rng(11);
    for _ in 0..3000 {
        for (i, base) in bases.iter().enumerate() {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(4) {
                let j = rng.below(b.len());
                b[j] = rng.next() as u8;
            }
            b.truncate(rng.below(b.len() + 1));
            let dir = if i == 0 { Dir::ToServer } else { Dir::ToClient };
            let _ = Zookeeper::probe(dir, &b);
            for d in [Dir::ToServer, Dir::ToClient] {
                let mut z = Zookeeper::default();
                let cut = rng.below(b.len() + 1);
                feed_segments(&mut z, d, &[&b[..cut], &b[cut..]]);
                let _ = l7_of(&z);
            }
        }
    }
}

#[test]
fn gaps_and_violations() {
    let f = flow(JAVA);
    // A gap inside a skipped body shortens the skip; the next packet still parses.
    let mut set = ustr(b"/g");
    set.extend(ustr(&[0u8; 3000]));
    let big = request(1, 5, &set);
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToServer, &f.to_server[..49]);
    assert_eq!(z.feed(Dir::ToServer, &big[..1500]), Feed::Consumed(1500));
    z.gap(Dir::ToServer, 1000);
    let rest = [&big[2500..], &request(2, 3, &[&ustr(b"/h")[..], &[0]].concat())[..]].concat();
    assert!(feed_all(&mut z, Dir::ToServer, &rest).is_empty());
    assert_eq!(z.requests, 2);
    // A gap at a packet boundary stops the direction.
    z.gap(Dir::ToServer, 10);
    feed_all(&mut z, Dir::ToServer, &request(3, 4, &ustr(b"/i")));
    let m = l7_of(&z);
    assert_eq!(m["requests"], 2);
    assert_eq!(m["paths"], json!(["/g", "/h"]));
    assert_eq!(m["gap"], true);
    // An oversized length is a violation, not a panic; a first frame that is no connect frame
    // is read as a packet and flagged.
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToClient, &f.to_client[..41]);
    z.feed(Dir::ToClient, &[0x7f, 0xff, 0xff, 0xff, 0, 0]);
    assert_eq!(l7_of(&z)["violation"], true);
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToServer, &request(5, 3, &[&ustr(b"/x")[..], &[0]].concat()));
    let m = l7_of(&z);
    assert_eq!((m["violation"].clone(), m["paths"].clone()), (json!(true), json!(["/x"])));
}

#[test]
fn names() {
    assert_eq!(parser::op_name(-11), Some("closeSession"));
    assert_eq!(parser::op_name(22), Some("multiRead"));
    assert_eq!(parser::op_name(10), None);
    assert_eq!(parser::err_name(-110), Some("NODEEXISTS"));
    assert_eq!(parser::err_name(-126), None);
    let mut z = Zookeeper::default();
    feed_all(&mut z, Dir::ToServer, &[&flow(JAVA).to_server[..49], &request(1, 555, &[])].concat());
    let m = l7_of(&z);
    assert_eq!((m["ops"].clone(), m["op_codes"].clone()), (json!(["unknown"]), json!([555])));
}

/// Four-letter-word admin commands against ZooKeeper 3.8.0 (Debian), sent with socat as
/// `printf ruok | nc` and `echo stat | nc` send them: `ruok`, `stat`, `mntr`, `srvr` (in
/// `4lw.commands.whitelist`) and `dump` (not: refused in text).
#[test]
fn four_letter_words() {
    let fl = crate::app::testutil::capture_flows("zookeeper/zk-4lw-socat.pcap");
    let want = [("ruok", false), ("stat", false), ("mntr", false), ("srvr", false), ("dump", true)];
    assert_eq!(fl.len(), want.len());
    for (f, (word, refused)) in fl.iter().zip(want) {
        check_every_prefix::<Zookeeper>(Dir::ToServer, &f.to_server);
        let mut z = Zookeeper::default();
        assert!(feed_all(&mut z, Dir::ToServer, &f.to_server).is_empty());
        assert!(feed_all(&mut z, Dir::ToClient, &f.to_client).is_empty());
        let m = l7_of(&z);
        assert_eq!(m["four_letter_word"], word);
        assert_eq!(m["four_letter_answer_bytes"], f.to_client.len() as u64);
        assert_eq!(m.get("four_letter_refused").is_some(), refused, "{word}");
        assert!(m.get("violation").is_none());
        // Anything the client sends after the word is not ZooKeeper.
        let mut z = Zookeeper::default();
        feed_all(&mut z, Dir::ToServer, &f.to_server);
        assert_eq!(z.feed(Dir::ToServer, b"more\n"), Feed::Invalid { consumed: 0 });
    }
    // The answer alone is no evidence (text), the word is.
    assert_eq!(Zookeeper::probe(Dir::ToClient, &fl[0].to_client), Probe::NoMatch);
    for w in parser::FOUR_LETTER_WORDS {
        assert_eq!(Zookeeper::probe(Dir::ToServer, &w[..]), Probe::Match);
        assert_eq!(Zookeeper::probe(Dir::ToServer, &[&w[..], b"\r\n"].concat()), Probe::Match);
        assert_eq!(Zookeeper::probe(Dir::ToServer, &w[..2]), Probe::NeedMore);
    }
}
