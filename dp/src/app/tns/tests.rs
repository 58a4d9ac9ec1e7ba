use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows, feed_all,
    feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

const DESCRIPTOR: &str =
    "(DESCRIPTION=(TRANSPORT_CONNECT_TIMEOUT=3)(ADDRESS=(PROTOCOL=tcp)(HOST=198.18.0.2)(PORT=1521))\
(CONNECT_DATA=(SERVICE_NAME=ORCLPDB1)(CID=(PROGRAM=/tmp/corpus/venv/bin/python)(HOST=vm)(USER=root))\
(CONNECTION_ID=eZUzPXVxqHmhnKizxLEgFA==)))";

const REFUSE_DATA: &[u8] = b"(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))";

fn corpus_flow() -> Flow {
    let flows = corpus_flows("tns.pcap");
    assert_eq!(flows.len(), 1);
    flows.into_iter().next().unwrap()
}

fn header(len: usize, ptype: u8, flags: u8) -> Vec<u8> {
    let mut b = (len as u16).to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, ptype, flags, 0, 0]);
    b
}

fn large_header(len: usize, ptype: u8) -> Vec<u8> {
    let mut b = (len as u32).to_be_bytes().to_vec();
    b.extend_from_slice(&[ptype, 0, 0, 0]);
    b
}

fn data(payload: &[u8]) -> Vec<u8> {
    [header(10 + payload.len(), parser::DATA, 0), vec![0, 0], payload.to_vec()].concat()
}

fn refuse(user: u8, system: u8, d: &[u8]) -> Vec<u8> {
    let mut b = header(12 + d.len(), parser::REFUSE, 0);
    b.extend_from_slice(&[user, system]);
    b.extend_from_slice(&(d.len() as u16).to_be_bytes());
    b.extend_from_slice(d);
    b
}

/// A REDIRECT the way listeners of version 315 and later send it: length only, then the data in
/// a DATA packet.
fn redirect(d: &[u8]) -> Vec<u8> {
    [header(10, parser::REDIRECT, 0), (d.len() as u16).to_be_bytes().to_vec(), data(d)].concat()
}

/// An ACCEPT of `version` with large SDU `sdu` (the layout python-oracledb reads).
fn accept(version: u16, sdu: u32) -> Vec<u8> {
    let mut b = header(45, parser::ACCEPT, 0);
    for v in [version, 1, 8192, 0xffff, 0x0100, 0, 45] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&[4, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&sdu.to_be_bytes());
    b.extend_from_slice(&[0; 9]);
    assert_eq!(b.len(), 45);
    b
}

/// A CONNECT with inline connect data (descriptors up to 230 bytes), built from the corpus
/// CONNECT's fixed part.
fn inline_connect(desc: &[u8]) -> Vec<u8> {
    let f = corpus_flow();
    let mut b = f.to_server[..74].to_vec();
    b[..2].copy_from_slice(&((74 + desc.len()) as u16).to_be_bytes());
    b[24..26].copy_from_slice(&(desc.len() as u16).to_be_bytes());
    b.extend_from_slice(desc);
    b
}

fn parse(dir: Dir, bytes: &[u8]) -> Tns {
    let mut t = Tns::default();
    assert!(feed_all(&mut t, dir, bytes).is_empty());
    t
}

#[test]
fn corpus_connect_with_descriptor_in_a_data_packet() {
    let f = corpus_flow();
    assert_eq!(f.server_port, 1521);
    assert_eq!(f.to_server.len(), 74 + 246);
    assert!(f.to_client.is_empty());
    // The CONNECT packet: 74 bytes, version 319, connect data (236 bytes) at offset 74, i.e.
    // in the DATA packet that follows.
    assert_eq!(&f.to_server[..10], &[0x00, 0x4a, 0, 0, 1, 0, 0, 0, 0x01, 0x3f]);
    assert_eq!(&f.to_server[24..28], &[0x00, 0xec, 0x00, 0x4a]);
    assert_eq!(&f.to_server[74..84], &[0x00, 0xf6, 0, 0, 6, 0, 0, 0, 0, 0]);
    let m = l7_of(&parse(Dir::ToServer, &f.to_server));
    assert_eq!(m["version"], 319);
    assert_eq!(m["version_compatible"], 300);
    assert_eq!(m["service_options"], 0x0401);
    assert_eq!(m["sdu"], 8192);
    assert_eq!(m["tdu"], 8192);
    assert_eq!(m["connect_data_length"], 236);
    assert_eq!(m["descriptor"], DESCRIPTOR);
    assert_eq!(DESCRIPTOR.len(), 236);
    assert_eq!(m["service_name"], "ORCLPDB1");
    assert!(m.get("sid").is_none());
    assert_eq!(m["program"], "/tmp/corpus/venv/bin/python");
    assert_eq!(m["client_host"], "vm");
    assert_eq!(m["client_user"], "root");
    assert_eq!(m["address_host"], "198.18.0.2");
    assert_eq!(m["address_port"], 1521);
    assert_eq!(m["address_protocol"], "tcp");
    assert_eq!(m["packet_types"], json!(["CONNECT", "DATA"]));
    assert_eq!(m["packets_to_server"], 2);
    assert_eq!(m["data_packets_to_server"], 1);
    assert_eq!(m["data_packets_to_client"], 0);
    for k in ["violation", "gap", "large_sdu", "accept_version", "refuse_err", "client_banner"] {
        assert!(m.get(k).is_none(), "{k}: {m:?}");
    }
}

#[test]
fn corpus_probe_prefixes_splits_and_segments() {
    let f = corpus_flow();
    // The CONNECT alone is not enough: its connect data is in the next packet.
    assert_eq!(Tns::probe(Dir::ToServer, &f.to_server[..74]), Probe::NeedMore);
    assert_eq!(Tns::probe(Dir::ToServer, &f.to_server[..85]), Probe::Match);
    check_every_prefix::<Tns>(Dir::ToServer, &f.to_server);
    check_every_split::<Tns>(Dir::ToServer, &f.to_server);
    let segs: Vec<&[u8]> = f.segments.iter().filter(|(d, _)| *d == Dir::ToServer).map(|(_, s)| &s[..]).collect();
    assert_eq!(segs.iter().map(|s| s.len()).collect::<Vec<_>>(), [74, 246]);
    let mut t = Tns::default();
    assert!(feed_segments(&mut t, Dir::ToServer, &segs).is_empty());
    assert_eq!(l7_of(&t), l7_of(&parse(Dir::ToServer, &f.to_server)));
}

#[test]
fn inline_connect_data() {
    let desc = b"(DESCRIPTION=(CONNECT_DATA=(SID=ORCL)(CID=(PROGRAM=sqlplus)(HOST=db-client)(USER=scott)))\
(ADDRESS=(PROTOCOL=TCP)(HOST=db.example)(PORT=1522)))";
    let b = inline_connect(desc);
    check_every_prefix::<Tns>(Dir::ToServer, &b);
    check_every_split::<Tns>(Dir::ToServer, &b);
    let m = l7_of(&parse(Dir::ToServer, &b));
    assert_eq!(m["sid"], "ORCL");
    assert!(m.get("service_name").is_none());
    assert_eq!(m["program"], "sqlplus");
    assert_eq!(m["client_host"], "db-client");
    assert_eq!(m["client_user"], "scott");
    assert_eq!(m["address_host"], "db.example");
    assert_eq!(m["address_port"], 1522);
    assert_eq!(m["address_protocol"], "TCP");
    assert_eq!(m["connect_data_length"], desc.len());
    assert_eq!(m["packets_to_server"], 1);
    assert_eq!(m["data_packets_to_server"], 0);
}

#[test]
fn refuse_with_err_code() {
    let r = refuse(0x22, 0, REFUSE_DATA);
    check_every_prefix::<Tns>(Dir::ToClient, &r);
    check_every_split::<Tns>(Dir::ToClient, &r);
    let f = corpus_flow();
    let mut t = parse(Dir::ToServer, &f.to_server);
    assert!(feed_all(&mut t, Dir::ToClient, &r).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["refuse_user_reason"], 0x22);
    assert_eq!(m["refuse_system_reason"], 0);
    assert_eq!(m["refuse_data"], std::str::from_utf8(REFUSE_DATA).unwrap());
    assert_eq!(m["refuse_err"], 12514);
    assert_eq!(m["vsnnum"], 0);
    assert_eq!(m["service_name"], "ORCLPDB1");
    assert_eq!(m["packet_types"], json!(["CONNECT", "REFUSE", "DATA"]));
    assert_eq!(m["packets_to_client"], 1);
    // Long refuse data is truncated, the ERR code still read from the whole packet start.
    let long = [b"(DESCRIPTION=(TMP=", &[b'x'; 300][..], b")(VSNNUM=318767104)(ERR=12505))"].concat();
    let m = l7_of(&parse(Dir::ToClient, &refuse(4, 0, &long)));
    assert_eq!(m["refuse_data"].as_str().unwrap().len(), MAX_REFUSE);
    assert_eq!(m["refuse_err"], 12505);
    assert_eq!(m["vsnnum"], 318767104);
}

#[test]
fn redirect_address_in_the_following_data_packet_or_inline() {
    let d = b"(ADDRESS=(PROTOCOL=tcp)(HOST=198.18.0.2)(PORT=15211))\0(DESCRIPTION=(ADDRESS=(HOST=x)(PORT=1)))";
    let r = redirect(d);
    check_every_prefix::<Tns>(Dir::ToClient, &r);
    check_every_split::<Tns>(Dir::ToClient, &r);
    let m = l7_of(&parse(Dir::ToClient, &r));
    assert_eq!(m["redirects"], 1);
    assert_eq!(m["redirect_host"], "198.18.0.2");
    assert_eq!(m["redirect_port"], 15211);
    assert_eq!(m["packet_types"], json!(["REDIRECT", "DATA"]));
    assert_eq!(m["data_packets_to_client"], 1);
    assert_eq!(Tns::probe(Dir::ToClient, &r[..10]), Probe::NeedMore);
    // Older listeners: the data inside the REDIRECT packet.
    let d = b"(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=10.9.8.7)(PORT=1600)))";
    let r = [header(10 + d.len(), parser::REDIRECT, 0), (d.len() as u16).to_be_bytes().to_vec(), d.to_vec()].concat();
    check_every_prefix::<Tns>(Dir::ToClient, &r);
    let m = l7_of(&parse(Dir::ToClient, &r));
    assert_eq!(m["redirect_host"], "10.9.8.7");
    assert_eq!(m["redirect_port"], 1600);
}

/// A session that negotiates large SDU: after the ACCEPT of version 319 both directions use
/// 4-byte lengths (the client's first DATA packet is the one python-oracledb 26.1 sends).
#[test]
fn accept_switches_to_four_byte_lengths() {
    let f = corpus_flow();
    let a = accept(319, 2 << 20);
    check_every_prefix::<Tns>(Dir::ToClient, &a);
    let mut t = parse(Dir::ToServer, &f.to_server);
    let pro = [&[0x00, 0x00, 0x00, 0x1d, 0x06, 0, 0, 0, 0, 0, 0x01, 0x06, 0x00][..], b"python-oracledb\0"].concat();
    let big = [large_header(100_000, parser::DATA), vec![0u8; 100_000 - 8]].concat();
    let marker = [large_header(11, parser::MARKER), vec![0, 0, 1]].concat();
    let banner = [&[0, 0, 1, 6, 0][..], b"x86_64/Linux 2.4.xx\0"].concat();
    let server_pro = [large_header(8 + banner.len(), parser::DATA), banner].concat();
    assert!(feed_all(&mut t, Dir::ToClient, &a).is_empty());
    assert!(feed_segments(&mut t, Dir::ToServer, &[&pro, &big[..5000], &big[5000..], &marker]).is_empty());
    assert!(feed_all(&mut t, Dir::ToClient, &server_pro).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["accept_version"], 319);
    assert_eq!(m["accept_sdu"], 2 << 20);
    assert_eq!(m["accept_tdu"], 0xffff);
    assert_eq!(m["accept_service_options"], 1);
    assert_eq!(m["large_sdu"], true);
    assert_eq!(m["client_banner"], "python-oracledb");
    assert_eq!(m["server_banner"], "x86_64/Linux 2.4.xx");
    assert_eq!(m["data_packets_to_server"], 3);
    assert_eq!(m["data_packets_to_client"], 1);
    assert_eq!(m["markers"], 1);
    assert_eq!(m["packets_to_server"], 5);
    assert_eq!(m["packet_types"], json!(["CONNECT", "ACCEPT", "DATA", "MARKER"]));
    assert!(m.get("violation").is_none(), "{m:?}");
    // ANO negotiation is recognised by its magic.
    let ano = [large_header(20, parser::DATA), vec![0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 10, 0, 0, 0, 0]].concat();
    assert!(feed_all(&mut t, Dir::ToServer, &ano).is_empty());
    assert_eq!(l7_of(&t)["ano_negotiation"], true);
}

#[test]
fn resend_then_connect_again() {
    let f = corpus_flow();
    let mut t = parse(Dir::ToServer, &f.to_server);
    assert!(feed_all(&mut t, Dir::ToClient, &header(8, parser::RESEND, 0)).is_empty());
    let desc = b"(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME=OTHER)))";
    assert!(feed_all(&mut t, Dir::ToServer, &inline_connect(desc)).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["resends"], 1);
    assert_eq!(m["connects"], 2);
    assert_eq!(m["service_name"], "OTHER");
    assert!(m.get("program").is_none());
}

#[test]
fn nv_values() {
    let d = DESCRIPTOR.as_bytes();
    assert_eq!(parser::nv_value(d, &[b"CID", b"HOST"]), Some(&b"vm"[..]));
    assert_eq!(parser::nv_value(d, &[b"address", b"host"]), Some(&b"198.18.0.2"[..]));
    assert_eq!(parser::nv_value(d, &[b"HOST"]), Some(&b"198.18.0.2"[..]));
    assert_eq!(parser::nv_value(d, &[b"CONNECTION_ID"]), Some(&b"eZUzPXVxqHmhnKizxLEgFA=="[..]));
    assert_eq!(parser::nv_value(d, &[b"SID"]), None);
    assert_eq!(parser::nv_value(REFUSE_DATA, &[b"TMP"]), Some(&b""[..]));
    assert_eq!(parser::nv_value(REFUSE_DATA, &[b"ERROR", b"CODE"]), Some(&b"12514"[..]));
    let q =
        b"( DESCRIPTION = (CONNECT_DATA = (SERVICE_NAME = \"sales.example\" ) (CID=(PROGRAM=C:\\a\\(x86\\) b.exe))))";
    assert_eq!(parser::nv_value(q, &[b"SERVICE_NAME"]), Some(&b"sales.example"[..]));
    assert_eq!(parser::nv_value(q, &[b"PROGRAM"]), Some(&b"C:\\a\\(x86\\) b.exe"[..]));
    for bad in [&b"((((("[..], b")))(=", b"(A=(B=(C=", b"(A=\"x)", b"(=)", b"(A"] {
        let _ = parser::nv_value(bad, &[b"A"]);
        let _ = parser::nv_value(bad, &[b"B", b"C"]);
    }
    assert_eq!(parser::decimal(b" 12514 "), Some(12514));
    assert_eq!(parser::decimal(b"99999999999"), None);
    assert_eq!(parser::decimal(b"12a"), None);
}

#[test]
fn probe_rejects_others() {
    let f = corpus_flow();
    // A CONNECT from the server, an answer from the client, bad versions and lengths.
    assert_eq!(Tns::probe(Dir::ToClient, &f.to_server), Probe::NoMatch);
    assert_eq!(Tns::probe(Dir::ToServer, &refuse(0x22, 0, REFUSE_DATA)), Probe::NoMatch);
    let mut b = f.to_server.clone();
    b[9] = 0x20; // version 288
    assert_eq!(Tns::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = f.to_server.clone();
    b[84] = b'D'; // connect data not starting with '('
    assert_eq!(Tns::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = f.to_server.clone();
    b[27] = 0x40; // offset inside the packet but data overrunning it
    assert_eq!(Tns::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = f.to_server.clone();
    b[78] = 1; // the following packet is not DATA
    assert_eq!(Tns::probe(Dir::ToServer, &b), Probe::NoMatch);
    let mut b = refuse(0x22, 0, REFUSE_DATA);
    b[1] += 1; // refuse data not ending at the packet end
    assert_eq!(Tns::probe(Dir::ToClient, &b), Probe::NoMatch);
    assert_eq!(Tns::probe(Dir::ToClient, &header(8, parser::RESEND, 0)), Probe::NoMatch);
    let mut a = accept(319, 8192);
    a[20..22].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(Tns::probe(Dir::ToClient, &a), Probe::NoMatch);
    for junk in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-x\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
    ] {
        assert_eq!(Tns::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
        assert_eq!(Tns::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    check_rejects_random::<Tns>(20_000, 64);
    check_rejects_random::<Tns>(2_000, 400);
    check_rejects_other_corpus::<Tns>(&["tns"]);
}

#[test]
fn bad_framing_is_invalid() {
    let mut t = Tns::default();
    assert_eq!(t.feed(Dir::ToServer, &[0, 4, 0, 0, 1, 0, 0, 0]), Feed::Invalid { consumed: 0 });
    assert_eq!(l7_of(&t)["violation"], true);
    let mut t = Tns::default();
    feed_all(&mut t, Dir::ToClient, &header(12, 0x42, 0));
    let m = l7_of(&t);
    assert_eq!(m["violation"], true);
    assert_eq!(m["packets_to_client"], 0);
    // Oversized 4-byte length.
    let mut t = Tns { large: true, ..Tns::default() };
    feed_all(&mut t, Dir::ToServer, &large_header(parser::MAX_LARGE_PACKET + 1, parser::DATA));
    assert_eq!(l7_of(&t)["violation"], true);
}

#[test]
fn gaps() {
    let f = corpus_flow();
    let big = [header(60_000, parser::DATA, 0), vec![b'z'; 60_000 - 8]].concat();
    let mut t = Tns::default();
    assert_eq!(t.feed(Dir::ToServer, &big[..3000]), Feed::Consumed(3000));
    t.gap(Dir::ToServer, 1000);
    assert!(feed_all(&mut t, Dir::ToServer, &[&big[4000..], &f.to_server[..]].concat()).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["packets_to_server"], 3);
    assert_eq!(m["service_name"], "ORCLPDB1");
    assert_eq!(m["gap"], true);
    t.gap(Dir::ToServer, 3);
    feed_all(&mut t, Dir::ToServer, &f.to_server);
    assert_eq!(l7_of(&t)["packets_to_server"], 3);
}

#[test]
fn mutated_input_never_panics() {
    let f = corpus_flow();
    let server =
        [refuse(0x22, 0, REFUSE_DATA), redirect(b"(ADDRESS=(HOST=h)(PORT=1))\0(D=1)"), accept(319, 8192)].concat();
    let mut rng = Rng(29);
    for _ in 0..4000 {
        for (d, base) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &server)] {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            b.truncate(rng.below(b.len() + 1));
            let _ = Tns::probe(d, &b);
            let mut t = Tns { large: rng.below(2) == 0, ..Tns::default() };
            let cut = rng.below(b.len() + 1);
            feed_segments(&mut t, d, &[&b[..cut], &b[cut..]]);
            let _ = l7_of(&t);
        }
    }
}

#[test]
fn state_is_small_and_fixed() {
    let n = std::mem::size_of::<Tns>();
    // Within the engine's per-session context bound (4 KiB, engine.rs), like the other SQL parsers.
    assert!(n <= 2048, "{n}");
}

/// SQL text in client DATA packets (the statement string inside a TTC call, here framed the way
/// OALL8 carries it: call bytes, a length byte, the text, more call bytes) is reported and
/// checked for injection; the TTC negotiation banner and server data are not taken for SQL.
#[test]
fn sql_text_in_client_data_is_reported_and_checked() {
    let f = corpus_flow();
    let mut t = parse(Dir::ToServer, &f.to_server);
    assert!(feed_all(&mut t, Dir::ToClient, &accept(319, 8192)).is_empty());
    let call = |sql: &[u8]| {
        let body = [&[0, 0, 0x03, 0x5e, 0x12, 0x61, 0x80, 0, 0, 0, 0, 0, 0, 0x01, sql.len() as u8][..], sql, &[0x01, 0x01, 0, 0, 0]].concat();
        [large_header(8 + 2 + body.len() - 2, parser::DATA), body].concat()
    };
    let benign = b"SELECT id, name FROM items WHERE id = :1";
    let injected = b"select * from users where name = '' or '1'='1'";
    let pro = [&[0x00, 0x00, 0x00, 0x1d, 0x06, 0, 0, 0, 0, 0, 0x01, 0x06, 0x00][..], b"python-oracledb\0"].concat();
    assert!(feed_segments(&mut t, Dir::ToServer, &[&pro, &call(benign)]).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["sql"], std::str::from_utf8(benign).unwrap());
    assert_eq!(m["statements"], 1);
    assert!(t.threats().unwrap().is_empty(), "benign statement flagged");
    assert!(feed_all(&mut t, Dir::ToServer, &call(injected)).is_empty());
    assert_eq!(l7_of(&t)["statements"], 2);
    let th = t.threats().unwrap().first.expect("injection not flagged");
    assert_eq!(th.dir, Dir::ToServer);
    assert!(th.evidence.starts_with("select * from users"));
    // Server data with SQL-looking text is not a client statement.
    let mut t2 = parse(Dir::ToServer, &f.to_server);
    assert!(feed_all(&mut t2, Dir::ToClient, &accept(319, 8192)).is_empty());
    assert!(feed_all(&mut t2, Dir::ToClient, &call(injected)).is_empty());
    assert!(l7_of(&t2).get("sql").is_none());
    // Keywords only count at a word boundary and with enough text after them.
    assert_eq!(parser::sql_text(b"\x01xSELECT a FROM b\x00"), None);
    assert_eq!(parser::sql_text(b"\x05UPDATE\x00"), None);
    assert_eq!(parser::sql_text(b"\x07update t set a = 1\x00"), Some(&b"update t set a = 1"[..]));
}
