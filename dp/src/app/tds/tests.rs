//! Tests over real bytes: the corpus capture `tds.pcap` (client side only: FreeTDS `tsql` and
//! python-tds PRELOGINs, Attentions, a TDS 5.0 LOGIN) and `dp/tests/captures/tds-login7.pcap`
//! (FreeTDS `tsql` 1.3.17, TDS 7.4 without encryption, against `dp/tests/fixtures/
//! fake_tds_server.py`: PRELOGIN, LOGIN7, SQL batches, one of them spanning two packets, and
//! the server's PRELOGIN response, login response and an ERROR token).

use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows, feed_all,
    feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

fn corpus_flow(port: u16) -> Flow {
    corpus_flows("tds.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

/// Flows of the committed capture (an absolute path: `corpus_flows` joins it onto the corpus
/// directory, which an absolute path replaces).
fn login7_flows() -> Vec<Flow> {
    let flows = corpus_flows(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures/tds-login7.pcap"));
    assert_eq!(flows.len(), 2);
    flows
}

fn parse(f: &Flow) -> Tds {
    let mut t = Tds::default();
    assert!(feed_all(&mut t, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut t, Dir::ToClient, &f.to_client).is_empty());
    t
}

/// One TDS packet.
fn packet(ptype: u8, status: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![ptype, status];
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0, 1, 0]);
    b.extend_from_slice(payload);
    b
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// ALL_HEADERS with one transaction descriptor header (22 bytes), as tsql sends it.
fn all_headers() -> Vec<u8> {
    let mut h = 22u32.to_le_bytes().to_vec();
    h.extend_from_slice(&18u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// The messages (type, payload offset, total payload length) of one direction, by headers.
fn messages(b: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let (mut p, mut start) = (0, None);
    while let Parse::Ok(h, _) = parser::header(&b[p..]) {
        start.get_or_insert(p);
        p += h.length;
        if h.eom() {
            out.push((h.ptype, start.take().unwrap()));
        }
    }
    assert_eq!(p, b.len(), "trailing bytes");
    out
}

#[test]
fn tsql_prelogin_tds74() {
    let f = corpus_flow(48328);
    assert_eq!(f.to_server.len(), 58);
    let t = parse(&f);
    let m = l7_of(&t);
    assert_eq!(m["client_version"], "9.0.0.0");
    assert_eq!(m["encryption"], "off");
    assert_eq!(m["instance"], "MSSQLServer");
    assert_eq!(m["mars"], false);
    assert_eq!(m["encrypted"], false);
    assert_eq!(m["messages_to_server"], 1);
    assert_eq!(m["packets_to_server"], 1);
    assert!(m.get("violation").is_none() && m.get("tds_version").is_none());
}

#[test]
fn pytds_prelogin_then_attention() {
    for port in [50166, 50168, 50182, 50194] {
        let f = corpus_flow(port);
        assert_eq!(f.to_server.len(), 66);
        let m = l7_of(&parse(&f));
        assert_eq!(m["client_version"], "1.0.0.0", "{port}");
        assert_eq!(m["encryption"], "not_supported");
        assert_eq!(m["instance"], "MSSQLServer");
        assert_eq!(m["attentions"], 1);
        assert_eq!(m["messages_to_server"], 2);
        assert!(m.get("violation").is_none());
    }
}

#[test]
fn tds5_login_across_two_packets() {
    let f = corpus_flow(50198);
    // 512-byte first packet without EOM, then 107 bytes with EOM.
    assert_eq!(&f.to_server[..8], &[2, 0, 2, 0, 0, 0, 0, 0]);
    let m = l7_of(&parse(&f));
    assert_eq!(m["tds_version"], "5.0");
    assert_eq!(m["host"], "vm");
    assert_eq!(m["user"], "sa");
    assert_eq!(m["app"], "TSQL");
    assert_eq!(m["server_name"], "198.18.0.2");
    assert_eq!(m["library"], "TDS-Librar"); // the field is 10 bytes wide
    assert_eq!(m["language"], "us_english");
    assert_eq!(m["packet_size"], 512);
    assert_eq!(m["packets_to_server"], 2);
    assert_eq!(m["messages_to_server"], 1);
    // The password (plain in TDS 5.0 LOGIN) is never reported.
    assert!(!serde_json::to_string(&m).unwrap().contains("Passw0rd"));
    assert!(m.get("violation").is_none());
}

#[test]
fn login7_batches_and_login_response() {
    let f = &login7_flows()[0];
    let t = parse(f);
    let m = l7_of(&t);
    let want = json!({
        "tds_version": "7.4",
        "client_version": "9.0.0.0",
        "encryption": "not_supported",
        "instance": "MSSQLServer",
        "mars": false,
        "server_version": "16.0.1000.6",
        "server_encryption": "not_supported",
        "encrypted": false,
        "packet_size": 4096,
        "negotiated_packet_size": 4096,
        "client_prog_version": "6.131.62200",
        "host": "vm",
        "user": "warden_user",
        "app": "TSQL",
        "server_name": "198.18.0.2",
        "library": "TDS-Library",
        "language": "us_english",
        "database": "inventory",
        "server_program": "Warden fake TDS",
        "server_program_version": "16.0.1000",
        "login_ok": true,
        "query_count": 2,
        "first_query": "SELECT name FROM sys.databases\n",
        "last_query": "SELECT * FROM users WHERE name = '' OR '1'='1'\n",
        "rpcs": 0,
        "attentions": 0,
        "messages_to_server": 4,
        "messages_to_client": 4,
        "packets_to_server": 4,
        "packets_to_client": 4,
        "errors": 1,
        "first_error_number": 208,
        "first_error_class": 16,
        "first_error": "Invalid object name 'users'.",
    });
    assert_eq!(serde_json::Value::Object(m.clone()), want);
    assert!(!serde_json::to_string(&m).unwrap().contains("S3cret"), "password leaked");
    // The injection in the second batch is a threat, the first batch is not.
    let th = t.threats().unwrap();
    assert_eq!(th.count, 1);
    let first = th.first.unwrap();
    assert_eq!(first.id, crate::detect::ThreatId::SqlInjection);
    assert_eq!(first.dir, Dir::ToServer);
    assert_eq!(first.evidence.as_str(), "SELECT * FROM users WHERE name = '' OR '1'='1'\n");
}

#[test]
fn sql_batch_spanning_packets_is_decoded_whole() {
    let f = &login7_flows()[1];
    let m = l7_of(&parse(f));
    assert_eq!(m["user"], "report");
    assert_eq!(m["database"], "sales");
    assert_eq!(m["query_count"], 1);
    assert_eq!(m["packets_to_server"], 4); // PRELOGIN, LOGIN7, batch in two packets
    assert_eq!(m["messages_to_server"], 3);
    assert!(m.get("violation").is_none());
    // The statement tsql was given (how the capture was made: fake_tds_server.py's docstring).
    let items: Vec<String> = (0..300).map(|i| format!("'n{i:04}'")).collect();
    let want = format!("SELECT id, total FROM orders WHERE note IN ({})\n", items.join(", "));
    assert_eq!(m["first_query"], want[..QUERY_TEXT]);
    // Whole text across both packets, as handed to the detector.
    let (ty, at) = messages(&f.to_server)[2];
    assert_eq!(ty, parser::SQL_BATCH);
    let Parse::Ok(g, _) = parser::gather(&f.to_server[at..], SQL_WINDOW) else { panic!() };
    assert_eq!(g.packets, 2);
    let mut out = [0u8; SQL_TEXT];
    let n = parser::sql_batch_text(Chunks::new(&f.to_server[at..at + g.consumed]), &mut out);
    assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
}

#[test]
fn every_prefix_and_every_split() {
    let mut flows: Vec<Flow> = corpus_flows("tds.pcap");
    flows.extend(login7_flows());
    for f in &flows {
        check_every_prefix::<Tds>(Dir::ToServer, &f.to_server);
        check_every_split::<Tds>(Dir::ToServer, &f.to_server);
        if !f.to_client.is_empty() {
            check_every_prefix::<Tds>(Dir::ToClient, &f.to_client);
            check_every_split::<Tds>(Dir::ToClient, &f.to_client);
        }
    }
}

#[test]
fn captured_segmentation_gives_the_same_result() {
    for f in login7_flows().iter().chain(corpus_flows("tds.pcap").iter()) {
        let whole = l7_of(&parse(f));
        let mut t = Tds::default();
        let segs =
            |dir: Dir| f.segments.iter().filter(|(d, _)| *d == dir).map(|(_, s)| s.as_slice()).collect::<Vec<_>>();
        assert!(feed_segments(&mut t, Dir::ToServer, &segs(Dir::ToServer)).is_empty());
        assert!(feed_segments(&mut t, Dir::ToClient, &segs(Dir::ToClient)).is_empty());
        assert_eq!(l7_of(&t), whole, "{}", f.client_port);
    }
    // The long batch arrived in three segments, its second packet header inside the third.
    let f = &login7_flows()[1];
    assert!(f.segments.iter().filter(|(d, s)| *d == Dir::ToServer && s.len() == 1448).count() >= 2);
}

#[test]
fn other_protocols_and_random_bytes_never_match() {
    check_rejects_other_corpus::<Tds>(&["tds"]);
    check_rejects_random::<Tds>(20000, 64);
    check_rejects_random::<Tds>(2000, 600);
}

#[test]
fn tls_in_prelogin_stops_parsing() {
    // A real ClientHello (from the corpus) wrapped in a PRELOGIN packet, as TDS 7.x sends the
    // TLS handshake once encryption was negotiated.
    let tls = corpus_flows("tls.pcap").into_iter().find(|f| f.to_server.first() == Some(&0x16)).unwrap();
    let rec_len = usize::from(u16::from_be_bytes([tls.to_server[3], tls.to_server[4]]));
    let hello = &tls.to_server[..5 + rec_len];
    let f = corpus_flow(48328);
    let mut t = Tds::default();
    assert!(feed_all(&mut t, Dir::ToServer, &f.to_server).is_empty());
    let mut bytes = packet(parser::PRELOGIN, 1, hello);
    bytes.extend_from_slice(&packet(parser::SQL_BATCH, 1, &utf16("SELECT 1' OR '1'='1")));
    assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Done);
    assert_eq!(t.feed(Dir::ToClient, &packet(parser::TABULAR, 1, &[0xfd, 0, 0])), Feed::Done);
    let m = l7_of(&t);
    assert_eq!(m["encrypted"], true);
    assert_eq!(m["tls_packets"], 1);
    assert_eq!(m["query_count"], 0);
    assert!(t.encrypted());
}

#[test]
fn rpc_sp_executesql_statement_is_checked() {
    let sql = "SELECT * FROM users WHERE name = '' OR '1'='1'";
    let text = utf16(sql);
    let mut p = all_headers();
    p.extend_from_slice(&[0xff, 0xff, 10, 0, 0, 0]); // ProcID sp_executesql, OptionFlags
    p.extend_from_slice(&[0, 0, 0xe7]); // unnamed, status 0, NVARCHAR
    p.extend_from_slice(&8000u16.to_le_bytes());
    p.extend_from_slice(&[0x09, 0x04, 0xd0, 0x00, 0x34]); // collation
    p.extend_from_slice(&(text.len() as u16).to_le_bytes());
    p.extend_from_slice(&text);
    let mut t = Tds::default();
    let b = packet(parser::RPC, 1, &p);
    assert!(feed_all(&mut t, Dir::ToServer, &b).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["rpcs"], 1);
    assert_eq!(m["first_rpc"], "sp_executesql");
    assert_eq!(m["first_query"], sql);
    assert_eq!(t.threats().unwrap().count, 1);
    // Split across two packets (and every TCP split) gives the same.
    let (a, c) = p.split_at(40);
    let mut two = packet(parser::RPC, 0, a);
    two.extend_from_slice(&packet(parser::RPC, 1, c));
    let mut t2 = Tds::default();
    assert!(feed_all(&mut t2, Dir::ToServer, &two).is_empty());
    assert_eq!(l7_of(&t2)["first_query"], sql);
    assert_eq!(l7_of(&t2)["packets_to_server"], 2);
    check_every_split::<Tds>(Dir::ToServer, &two);
    // A named procedure.
    let mut q = all_headers();
    q.extend_from_slice(&6u16.to_le_bytes());
    q.extend_from_slice(&utf16("getOne"));
    q.extend_from_slice(&[0, 0]);
    let mut t3 = Tds::default();
    feed_all(&mut t3, Dir::ToServer, &packet(parser::RPC, 1, &q));
    assert_eq!(l7_of(&t3)["first_rpc"], "getOne");
    assert_eq!(t3.threats().unwrap().count, 0);
}

#[test]
fn large_batch_is_skipped_by_count_and_checked_on_its_window() {
    // A 40 000-character batch in 4096-byte packets: the engine is asked for at most the
    // window, the rest is skipped packet by packet.
    let sql: String = std::iter::once("SELECT 1 -- ").chain(std::iter::repeat_n("x", 40_000)).collect();
    let mut payload = all_headers();
    payload.extend_from_slice(&utf16(&sql));
    let chunks: Vec<&[u8]> = payload.chunks(4088).collect();
    let mut bytes = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        bytes.extend_from_slice(&packet(parser::SQL_BATCH, u8::from(i + 1 == chunks.len()), c));
    }
    bytes.extend_from_slice(&packet(parser::ATTENTION, 1, &[]));
    // Through 1000-byte segments the way the engine presents them, recording what is asked.
    let mut t = Tds::default();
    let (mut pending, mut need, mut max_need) = (Vec::new(), 0usize, 0usize);
    for seg in bytes.chunks(1000) {
        pending.extend_from_slice(seg);
        if pending.len() < need {
            continue;
        }
        match t.feed(Dir::ToServer, &pending) {
            Feed::Consumed(n) => {
                pending.drain(..n);
                need = 0;
            }
            Feed::Need { consumed, at_least } => {
                pending.drain(..consumed);
                need = at_least;
                max_need = max_need.max(at_least);
            }
            Feed::Done | Feed::Invalid { .. } => panic!("stopped"),
        }
        assert!(pending.len() <= SQL_WINDOW + 8 * 5 + 1000, "holding {}", pending.len());
    }
    assert!(pending.is_empty());
    assert_eq!(l7_of(&t)["attentions"], 1);
    assert!(max_need <= SQL_WINDOW + 8 * 5, "asked for {max_need}");
    let mut t = Tds::default();
    assert!(feed_all(&mut t, Dir::ToServer, &bytes).is_empty());
    let m = l7_of(&t);
    assert_eq!(m["query_count"], 1);
    assert_eq!(m["attentions"], 1);
    assert_eq!(m["messages_to_server"], 2);
    assert_eq!(m["packets_to_server"], chunks.len() + 1);
    assert_eq!(m["first_query"].as_str().unwrap(), &sql[..QUERY_TEXT]);
    assert!(m.get("violation").is_none());
}

#[test]
fn gap_inside_a_skipped_payload_keeps_parsing() {
    // A batch whose first packet is longer than the window: bytes lost past the window are
    // payload being skipped anyway.
    let mut payload = all_headers();
    payload.extend_from_slice(&utf16(&"y".repeat(20_000)));
    let mut bytes = packet(parser::SQL_BATCH, 0, &payload[..30_000]);
    bytes.extend_from_slice(&packet(parser::SQL_BATCH, 1, &payload[30_000..]));
    let attention = packet(parser::ATTENTION, 1, &[]);
    let first = 8 + SQL_WINDOW + 100;
    let mut t = Tds::default();
    assert!(feed_all(&mut t, Dir::ToServer, &bytes[..first]).is_empty());
    t.gap(Dir::ToServer, 1000);
    assert!(feed_all(&mut t, Dir::ToServer, &bytes[first + 1000..]).is_empty());
    assert!(feed_all(&mut t, Dir::ToServer, &attention).is_empty());
    let m = l7_of(&t);
    assert_eq!(
        (m["gap"].clone(), m["attentions"].clone(), m["query_count"].clone()),
        (json!(true), json!(1), json!(1))
    );
    // A gap at a packet boundary stops the direction quietly.
    let mut t = Tds::default();
    t.gap(Dir::ToServer, 10);
    assert_eq!(t.feed(Dir::ToServer, &attention), Feed::Done);
    let m = l7_of(&t);
    assert_eq!(m["attentions"], 0);
    assert!(m.get("violation").is_none());
}

#[test]
fn violations_are_invalid_without_panics() {
    for bad in [
        &[0x12, 0x01, 0xff, 0xff, 0, 0, 1, 0][..], // length above 32768
        &[0x12, 0x41, 0x00, 0x10, 0, 0, 1, 0],     // unknown status bit
        &[0x30, 0x01, 0x00, 0x08, 0, 0, 1, 0],     // unknown type
        &[0x04, 0x01, 0x00, 0x08, 0, 0, 1, 0],     // tabular result from the client
    ] {
        let mut t = Tds::default();
        assert_eq!(t.feed(Dir::ToServer, bad), Feed::Invalid { consumed: 0 });
        assert_eq!(l7_of(&t)["violation"], true);
    }
    // A continuation packet of another type.
    let mut b = packet(parser::SQL_BATCH, 0, &utf16("SELECT"));
    b.extend_from_slice(&packet(parser::RPC, 1, &[0; 4]));
    let mut t = Tds::default();
    assert_eq!(t.feed(Dir::ToServer, &b), Feed::Invalid { consumed: 0 });
    assert_eq!(l7_of(&t)["violation"], true);
    // MARS: SMP-wrapped packets stop parsing quietly.
    let mut t = Tds::default();
    assert_eq!(t.feed(Dir::ToServer, &[0x53, 0x01, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Feed::Done);
    let m = l7_of(&t);
    assert_eq!(m["mars_smp"], true);
    assert!(m.get("violation").is_none());
}

#[test]
fn probe_decides_by_content() {
    let f = corpus_flow(48328);
    assert_eq!(Tds::probe(Dir::ToServer, &f.to_server), Probe::Match);
    // A PRELOGIN whose option offset points past the packet is not TDS.
    let mut bad = f.to_server.clone();
    bad[8 + 6] = 0xff;
    assert_eq!(Tds::probe(Dir::ToServer, &bad), Probe::NoMatch);
    // Missing terminator: the table runs into the data.
    let mut bad = f.to_server.clone();
    bad[8 + 25] = 0x07;
    assert_eq!(Tds::probe(Dir::ToServer, &bad), Probe::NoMatch);
    // A PRELOGIN from the server side is not a first server message.
    assert_eq!(Tds::probe(Dir::ToClient, &f.to_server), Probe::NoMatch);
    assert_eq!(Tds::probe(Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::NoMatch);
    assert_eq!(Tds::probe(Dir::ToServer, &[0x12, 0x01]), Probe::NeedMore);
    // LOGIN7 whose Length disagrees with the packet.
    let l = &login7_flows()[0];
    let (_, at) = messages(&l.to_server)[1];
    let login = &l.to_server[at..];
    assert_eq!(Tds::probe(Dir::ToServer, login), Probe::Match);
    let mut bad = login.to_vec();
    bad[8] ^= 1;
    assert_eq!(Tds::probe(Dir::ToServer, &bad), Probe::NoMatch);
    let mut bad = login.to_vec();
    bad[8 + 7] = 0x42; // TDS version 0x42000004
    assert_eq!(Tds::probe(Dir::ToServer, &bad), Probe::NoMatch);
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0x7d5_0001);
    let flows: Vec<Flow> = corpus_flows("tds.pcap").into_iter().chain(login7_flows()).collect();
    for _ in 0..3000 {
        let f = &flows[rng.below(flows.len())];
        let mut cs = f.to_server.clone();
        let mut sc = f.to_client.clone();
        for b in [&mut cs, &mut sc] {
            for _ in 0..1 + rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
        }
        let mut t = Tds::default();
        let cut = rng.below(cs.len() + 1);
        feed_segments(&mut t, Dir::ToServer, &[&cs[..cut], &cs[cut..]]);
        feed_all(&mut t, Dir::ToClient, &sc);
        let _ = Tds::probe(Dir::ToServer, &cs);
        let _ = Tds::probe(Dir::ToClient, &sc);
        let _ = l7_of(&t);
    }
}

#[test]
fn state_is_small_and_fixed() {
    let n = std::mem::size_of::<Tds>();
    assert!(n <= 2048, "{n}");
}

#[test]
fn a_message_cut_into_tiny_packets_is_walked_once() {
    // The capture's SQL batch re-cut into packets of one payload byte each (a header per
    // byte), n bytes of packets in all, trickled one byte per segment: the same record as the
    // batch in its two packets, and packet headers read stay <= c * n (every packet used to
    // walk all the packets before it again: n²/2).
    let f = &login7_flows()[1];
    let (_, at) = messages(&f.to_server)[2];
    let Parse::Ok(g, _) = parser::gather(&f.to_server[at..], usize::MAX) else { panic!() };
    let payload: Vec<u8> = Chunks::new(&f.to_server[at..at + g.consumed]).flat_map(|c| c.to_vec()).collect();
    let want = l7_of(&parse(f));
    let mut ratios = Vec::new();
    for cut in [payload.len(), payload.len() / 4, 64] {
        let mut recut = f.to_server[..at].to_vec();
        for (i, b) in payload[..cut].iter().enumerate() {
            recut.extend_from_slice(&packet(parser::SQL_BATCH, u8::from(i + 1 == cut), &[*b]));
        }
        let mut whole = Tds::default();
        assert!(feed_all(&mut whole, Dir::ToServer, &recut).is_empty());
        let mut t = Tds::default();
        let segs: Vec<&[u8]> = recut.chunks(1).collect();
        assert!(feed_segments(&mut t, Dir::ToServer, &segs).is_empty());
        let m = l7_of(&t);
        assert_eq!(m, l7_of(&whole));
        assert_eq!(m["query_count"], 1);
        if cut == payload.len() {
            assert_eq!(m["first_query"], want["first_query"]);
        }
        let r = t.examined() as f64 / recut.len() as f64;
        assert!(r <= 3.0, "{cut}: {} for {}", t.examined(), recut.len());
        ratios.push(r);
    }
    // Linear: the longest message costs no more per byte than the shortest.
    assert!(ratios[0] <= ratios[2] * 1.5 + 0.5, "{ratios:?}");
}
