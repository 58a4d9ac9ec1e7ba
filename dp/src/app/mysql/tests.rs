use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, check_rejects_random,
};
use serde_json::json;

fn flows(file: &str) -> Vec<Flow> {
    corpus_flows(file)
}

fn parse(f: &Flow) -> Mysql {
    let mut m = Mysql::default();
    assert!(feed_all(&mut m, Dir::ToClient, &f.to_client).is_empty());
    assert!(feed_all(&mut m, Dir::ToServer, &f.to_server).is_empty());
    m
}

/// A packet: 3-byte length, sequence id, payload.
fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = n.to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

#[test]
fn mariadb_client_session() {
    let f = &flows("mysql.pcap")[0];
    let s = parse(f);
    let m = l7_of(&s);
    assert_eq!(m["protocol"], 10);
    assert_eq!(m["server_version"], "10.11.19-MariaDB-0+deb12u1");
    assert_eq!(m["connection_id"], 4);
    assert_eq!(m["server_auth_plugin"], "mysql_native_password");
    assert_eq!(m["user"], "app");
    assert_eq!(m["database"], "shop");
    assert_eq!(m["auth_plugin"], "mysql_native_password");
    assert_eq!(m["client_name"], "libmariadb");
    assert_eq!(m["client_version"], "3.3.20");
    assert_eq!(m["program_name"], "mysql");
    assert_eq!(m["tls"], false);
    assert_eq!(m["auth_ok"], true);
    assert_eq!(m["commands"], json!(["COM_QUERY", "COM_QUIT"]));
    assert_eq!(m["command_counts"], json!({"COM_QUERY": 8, "COM_QUIT": 1}));
    assert_eq!(m["query_count"], 8);
    assert_eq!(m["first_query"], "SELECT VERSION()");
    assert_eq!(m["last_query"], "DELETE FROM orders");
    assert_eq!(s.last_query(), Some("DELETE FROM orders"));
    assert_eq!(m["errors"], 0);
    assert!(m.get("violation").is_none());
}

#[test]
fn failed_login() {
    let f = &flows("mysql.pcap")[1];
    let s = parse(f);
    let m = l7_of(&s);
    assert_eq!(m["user"], "app");
    assert_eq!(m["auth_ok"], false);
    assert_eq!(m["errors"], 1);
    assert_eq!(m["first_error_code"], 1045);
    assert_eq!(m["first_error_sqlstate"], "28000");
    assert_eq!(m["first_error"], "Access denied for user 'app'@'198.18.0.1' (using password: YES)");
    assert_eq!(s.first_error().map(|e| e.code), Some(1045));
    assert_eq!(m["query_count"], 0);
}

#[test]
fn pymysql_session() {
    let f = &flows("mysql.pcap")[2];
    let m = l7_of(&parse(f));
    assert_eq!(m["client_name"], "pymysql");
    assert_eq!(m["client_version"], "1.2.4");
    assert_eq!(m["database"], "shop");
    assert_eq!(m["query_count"], 5);
    assert_eq!(m["first_query"], "SET NAMES utf8mb4");
    assert_eq!(m["last_query"], "COMMIT");
    assert_eq!(m["auth_ok"], true);
}

#[test]
fn sqlmap_flows_are_mysql_and_parse() {
    let fl = flows("sqlinjection-mysql.pcap");
    assert_eq!(fl.len(), 110);
    let mut errors = 0;
    for f in &fl {
        assert_eq!(Mysql::probe(Dir::ToClient, &f.to_client), Probe::Match);
        assert_eq!(Mysql::probe(Dir::ToServer, &f.to_server), Probe::Match);
        let s = parse(f);
        let m = l7_of(&s);
        assert!(m.get("violation").is_none(), "{m:?}");
        assert_eq!(m["user"], "app");
        assert_eq!(m["query_count"], 3);
        assert_eq!(s.first_query(), Some("SET NAMES utf8mb4"));
        assert!(s.last_query().is_some_and(|q| q.starts_with("SELECT id, name, price FROM items WHERE ")));
        errors += s.errors;
    }
    assert_eq!(errors, 15); // 1064 x4, 1690 x4, 1054 x4, 1305 x2, 1062 x1 (counted independently)
    let s = parse(&fl[4]);
    assert_eq!(s.last_query(), Some("SELECT id, name, price FROM items WHERE id=1\",()((,')("));
    let e = s.first_error().unwrap();
    assert_eq!((e.code, e.sql_state.as_ref().map(|t| t.as_str())), (1064, Some("42000")));
    assert!(e.message.starts_with("You have an error in your SQL syntax"));
    let u = l7_of(&parse(&fl[26]));
    assert!(u["last_query"].as_str().unwrap().contains("UNION ALL SELECT NULL,CONCAT(0x71786a6b71,"));
}

#[test]
fn segments_as_captured_give_the_same_result() {
    for file in ["mysql.pcap", "sqlinjection-mysql.pcap"] {
        for f in flows(file).iter().take(30) {
            let whole = l7_of(&parse(f));
            let mut s = Mysql::default();
            for d in [Dir::ToClient, Dir::ToServer] {
                let segs: Vec<&[u8]> =
                    f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
                feed_segments(&mut s, d, &segs);
            }
            assert_eq!(l7_of(&s), whole);
        }
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in flows("mysql.pcap") {
        check_every_prefix::<Mysql>(Dir::ToClient, &f.to_client);
        check_every_prefix::<Mysql>(Dir::ToServer, &f.to_server);
        check_every_split::<Mysql>(Dir::ToClient, &f.to_client);
        check_every_split::<Mysql>(Dir::ToServer, &f.to_server);
    }
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
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
    ] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Mysql::probe(d, neg), Probe::NoMatch, "{d:?} {neg:?}");
        }
    }
    // Connection refused before the handshake.
    let refused = packet(0, b"\xff\x6a\x04Host '198.18.0.1' is not allowed to connect to this MariaDB server");
    assert_eq!(Mysql::probe(Dir::ToClient, &refused), Probe::Match);
    let mut s = Mysql::default();
    feed_all(&mut s, Dir::ToClient, &refused);
    let m = l7_of(&s);
    assert_eq!(m["first_error_code"], 1130);
    assert!(m.get("first_error_sqlstate").is_none());
    assert!(m.get("violation").is_none());
}

#[test]
fn random_bytes_do_not_match() {
    check_rejects_random::<Mysql>(5000, 96);
}

#[test]
fn other_corpus_protocols_never_match() {
    check_rejects_other_corpus::<Mysql>(&["mysql"]);
}

#[test]
fn ssl_request_stops() {
    // The mariadb client's capability flags with CLIENT_SSL set, cut to the 32-byte SSLRequest.
    let f = &flows("mysql.pcap")[0];
    let mut p = f.to_server[4..36].to_vec();
    p[1] |= (parser::CLIENT_SSL >> 8) as u8;
    let mut bytes = packet(1, &p);
    bytes.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert_eq!(Mysql::probe(Dir::ToServer, &bytes), Probe::Match);
    let mut s = Mysql::default();
    feed_all(&mut s, Dir::ToClient, &f.to_client[..104]);
    assert_eq!(s.feed(Dir::ToServer, &bytes), Feed::Done);
    let m = l7_of(&s);
    assert_eq!(m["tls"], true);
    assert_eq!(m["server_version"], "10.11.19-MariaDB-0+deb12u1");
    assert!(m.get("user").is_none());
    assert_eq!(s.feed(Dir::ToClient, b"\x16\x03\x03\x00\x10"), Feed::Done);
}

#[test]
fn large_and_multi_packet_queries_are_skipped_not_buffered() {
    // A 16 MB COM_QUERY split into a full packet and a continuation, then COM_PING.
    let mut q = vec![0x03u8];
    q.extend_from_slice(b"INSERT INTO t VALUES ('");
    q.resize(MAX_PAYLOAD, b'a');
    let mut bytes = packet(0, &q);
    bytes.extend(packet(1, b"a')"));
    bytes.extend(packet(0, b"\x0e"));
    let mut s = Mysql::default();
    let mut pending = 0usize;
    let mut max_pending = 0usize;
    let mut buf: Vec<u8> = Vec::new();
    for seg in bytes.chunks(1448) {
        buf.extend_from_slice(seg);
        match s.feed(Dir::ToServer, &buf) {
            Feed::Consumed(n) => {
                buf.drain(..n);
            }
            Feed::Need { consumed, .. } => {
                buf.drain(..consumed);
            }
            Feed::Done | Feed::Invalid { .. } => panic!("done"),
        }
        pending = buf.len();
        max_pending = max_pending.max(pending);
    }
    assert_eq!(pending, 0);
    assert!(max_pending <= HEADER + WINDOW + 1448, "{max_pending}");
    let m = l7_of(&s);
    assert_eq!(m["command_counts"], json!({"COM_QUERY": 1, "COM_PING": 1}));
    assert_eq!(m["query_count"], 1);
    assert_eq!(s.last_query().map(str::len), Some(QUERY_TEXT));
    assert!(s.last_query().unwrap().starts_with("INSERT INTO t VALUES ('aaa"));
}

#[test]
fn gaps() {
    let f = &flows("mysql.pcap")[0];
    // A gap inside a skipped payload only shortens the skip.
    let mut q = vec![0x03u8];
    q.resize(10_000, b'x');
    let mut s = Mysql::default();
    let bytes = packet(0, &q);
    s.feed(Dir::ToServer, &bytes[..HEADER + WINDOW]);
    s.gap(Dir::ToServer, 5000);
    feed_all(&mut s, Dir::ToServer, &bytes[HEADER + WINDOW + 5000..]);
    feed_all(&mut s, Dir::ToServer, &packet(0, b"\x0e"));
    assert_eq!(l7_of(&s)["command_counts"], json!({"COM_QUERY": 1, "COM_PING": 1}));
    // A gap across packet boundaries stops that direction.
    let mut s = Mysql::default();
    feed_all(&mut s, Dir::ToServer, &f.to_server[..250]);
    s.gap(Dir::ToServer, 10);
    assert_eq!(s.feed(Dir::ToServer, &f.to_server[260..]), Feed::Consumed(f.to_server.len() - 260));
    let m = l7_of(&s);
    assert_eq!(m["gap"], true);
    assert_eq!(m["user"], "app");
    assert!(m.get("violation").is_none());
}

#[test]
fn mutated_real_bytes_never_panic() {
    let fl = flows("mysql.pcap");
    let seeds: [(Dir, &[u8]); 4] = [
        (Dir::ToServer, &fl[0].to_server),
        (Dir::ToClient, &fl[0].to_client),
        (Dir::ToServer, &fl[2].to_server),
        (Dir::ToClient, &fl[1].to_client),
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
                1 => buf[at] = [0u8, 1, 0xff, 0xfe, 0xfc, 0xfd, 0xfb, 0x0a][(rnd() % 8) as usize],
                2 => buf.truncate(at.max(1)),
                _ => buf.insert(at, rnd() as u8),
            }
        }
        let _ = Mysql::probe(d, &buf);
        let mut s = Mysql::default();
        let segs: Vec<&[u8]> = buf.chunks(1 + (rnd() % 700) as usize).collect();
        feed_segments(&mut s, d, &segs);
        let _ = l7_of(&s);
    }
}

/// Feeds a flow's segments in capture order (both directions interleaved, as the engine
/// does); returns the first `Invalid` answer, if any.
fn feed_in_capture_order(m: &mut Mysql, f: &Flow, then: &[u8]) -> Option<Feed> {
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let last = (Dir::ToServer, then.to_vec());
    for (dir, seg) in f.segments.iter().chain(std::iter::once(&last)) {
        let d = *dir as usize;
        pending[d].extend_from_slice(seg);
        match m.feed(*dir, &pending[d]) {
            Feed::Consumed(n) => drop(pending[d].drain(..n)),
            Feed::Need { consumed, .. } => drop(pending[d].drain(..consumed)),
            Feed::Done => pending[d].clear(),
            r @ Feed::Invalid { .. } => return Some(r),
        }
    }
    None
}

/// After authentication, bytes of another protocol read as a MySQL packet out of sequence
/// end the stream's MySQL; real sessions (commands, multi-packet exchanges) never do.
#[test]
fn packets_out_of_sequence_after_login_are_invalid() {
    let mut sessions = 0;
    for file in ["mysql.pcap", "sqlinjection-mysql.pcap"] {
        for f in flows(file).iter().take(40) {
            let mut m = Mysql::default();
            assert_eq!(feed_in_capture_order(&mut m, f, &packet(0, b"\x0e")), None, "{file} {}", f.client_port);
            if m.auth_ok != Some(true) || m.stopped() {
                continue;
            }
            sessions += 1;
            for bad in [&b"*1\r\n$4\r\nPING\r\n"[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"] {
                let mut m = Mysql::default();
                assert_eq!(feed_in_capture_order(&mut m, f, bad), Some(Feed::Invalid { consumed: 0 }), "{file}: {bad:?}");
            }
        }
    }
    assert!(sessions >= 2, "{sessions}");
}

#[test]
fn auth_failures_are_counted() {
    // The corpus' failed login (mariadb client, wrong password: ERR 1045, SQL state 28000) and
    // its successful sessions.
    let fs = flows("mysql.pcap");
    assert_eq!(parse(&fs[1]).auth_failures(), 1);
    assert_eq!(parse(&fs[0]).auth_failures(), 0);
    assert_eq!(parse(&fs[2]).auth_failures(), 0);
    for f in flows("sqlinjection-mysql.pcap").iter().filter(|f| !f.to_client.is_empty()) {
        assert_eq!(parse(f).auth_failures(), 0, "{}", f.client_port);
    }
    // Later in a session: a COM_CHANGE_USER refused (1045), one refused by the socket plugin
    // (1698, MySQL 5.7+), and errors that are no authentication failure (1044 database access
    // denied, 1146 no such table).
    let mut s = parse(&fs[0]);
    let err = |code: u16, state: &str, msg: &str| {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(msg.as_bytes());
        packet(1, &p)
    };
    for (code, state, failures) in [(1045, "28000", 1), (1698, "28000", 2), (1044, "42000", 2), (1146, "42S02", 2), (1045, "28000", 3)] {
        assert!(feed_all(&mut s, Dir::ToClient, &err(code, state, "Access denied")).is_empty());
        assert_eq!(s.auth_failures(), failures, "{code}");
    }
    // Segmented as captured: the same count.
    let mut t = Mysql::default();
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (dir, seg) in &fs[1].segments {
        let d = *dir as usize;
        pending[d].extend_from_slice(seg);
        match t.feed(*dir, &pending[d]) {
            Feed::Consumed(n) | Feed::Need { consumed: n, .. } => drop(pending[d].drain(..n)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(t.auth_failures(), 1);
}
