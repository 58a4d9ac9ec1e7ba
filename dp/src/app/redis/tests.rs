use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, check_rejects_random,
};

fn flows() -> Vec<Flow> {
    corpus_flows("redis.pcap")
}

fn flow(port: u16) -> Flow {
    flows().into_iter().find(|f| f.client_port == port).unwrap()
}

fn parse(f: &Flow) -> Redis {
    let mut r = Redis::default();
    assert!(feed_all(&mut r, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut r, Dir::ToClient, &f.to_client).is_empty());
    r
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

#[test]
fn ping_flow() {
    let m = l7_of(&parse(&flow(43188)));
    assert_eq!(m["commands"], serde_json::json!(["PING"]));
    assert_eq!(m["command_count"], 1);
    assert_eq!(m["replies"], 1);
    assert_eq!(m["errors"], 0);
    assert_eq!(m["resp3"], false);
    assert!(m.get("violation").is_none());
}

#[test]
fn interactive_flow_with_nested_command_docs_reply() {
    let f = flow(43212);
    assert!(f.to_client.len() > 100_000);
    let r = parse(&f);
    let m = l7_of(&r);
    assert_eq!(
        m["commands"],
        serde_json::json!(["COMMAND", "INCR", "LPUSH", "LRANGE", "HSET", "HGETALL", "MULTI", "EXEC"])
    );
    // COMMAND DOCS, INCR, LPUSH, LRANGE, HSET, HGETALL, MULTI, INCR, INCR, EXEC, INFO,
    // CLIENT SETNAME, KEYS.
    assert_eq!(m["command_count"], 13);
    assert_eq!(m["replies"], 13);
    assert_eq!(m["errors"], 0);
    assert!(m.get("violation").is_none(), "{m:?}");
}

#[test]
fn hello3_switches_to_resp3() {
    let f = flow(43218);
    let m = l7_of(&parse(&f));
    assert_eq!(m["resp3"], true);
    assert_eq!(m["commands"], serde_json::json!(["HELLO"]));
    assert_eq!(m["command_count"], 2);
    assert_eq!(m["replies"], 2);
    let r = {
        let mut r = Redis::default();
        feed_all(&mut r, Dir::ToServer, &f.to_server);
        r
    };
    assert!(r.hello3 && r.resp3());
}

#[test]
fn every_flow_parses_and_commands_match_replies() {
    for f in flows() {
        let r = parse(&f);
        let m = l7_of(&r);
        assert!(m.get("violation").is_none(), "{}: {m:?}", f.client_port);
        assert_eq!(r.commands, r.replies, "{}", f.client_port);
        let arrays = count(&f.to_server, b"*1\r\n$")
            + count(&f.to_server, b"*2\r\n$")
            + count(&f.to_server, b"*3\r\n$")
            + count(&f.to_server, b"*4\r\n$")
            + count(&f.to_server, b"*5\r\n$")
            + count(&f.to_server, b"*6\r\n$");
        assert_eq!(r.commands, arrays, "{}", f.client_port);
    }
}

#[test]
fn benchmark_flows_count_pipelined_commands() {
    let f = flow(43246);
    let r = parse(&f);
    let m = l7_of(&r);
    assert_eq!(m["commands"], serde_json::json!(["SET"]));
    let sets = count(&f.to_server, b"*3\r\n$3\r\nSET\r\n");
    assert!(sets > 100);
    assert_eq!(r.commands, sets);
    assert_eq!(r.replies, count(&f.to_client, b"+OK\r\n"));
}

#[test]
fn segments_as_captured_give_the_same_result() {
    for f in flows() {
        let whole = l7_of(&parse(&f));
        let mut r = Redis::default();
        for d in [Dir::ToServer, Dir::ToClient] {
            let segs: Vec<&[u8]> = f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
            feed_segments(&mut r, d, &segs);
        }
        assert_eq!(l7_of(&r), whole, "{}", f.client_port);
    }
}

#[test]
fn every_prefix_and_every_split() {
    let f = flow(43212);
    check_every_prefix::<Redis>(Dir::ToServer, &f.to_server);
    check_every_split::<Redis>(Dir::ToServer, &f.to_server);
    let h = flow(43218);
    check_every_prefix::<Redis>(Dir::ToClient, &h.to_client);
    check_every_split::<Redis>(Dir::ToClient, &h.to_client);
    check_every_split::<Redis>(Dir::ToClient, &f.to_client[..6000]);
    for port in [43188, 43194, 43202, 43232, 43272, 43290] {
        let g = flow(port);
        check_every_prefix::<Redis>(Dir::ToServer, &g.to_server[..g.to_server.len().min(400)]);
        // A lone `+OK` (43194) is deliberately undecided by the server-side probe.
        if port != 43194 {
            check_every_prefix::<Redis>(Dir::ToClient, &g.to_client[..g.to_client.len().min(400)]);
        }
    }
}

#[test]
fn probe_by_content() {
    let f = flow(43194);
    assert_eq!(Redis::probe(Dir::ToServer, &f.to_server), Probe::Match);
    assert_eq!(Redis::probe(Dir::ToServer, b"*"), Probe::NeedMore);
    assert_eq!(Redis::probe(Dir::ToServer, b"PING\r\n"), Probe::Match);
    assert_eq!(Redis::probe(Dir::ToServer, b"ping\r\n"), Probe::Match);
    assert_eq!(Redis::probe(Dir::ToServer, b"PI"), Probe::NeedMore);
    assert_eq!(Redis::probe(Dir::ToClient, b"+PONG\r\n"), Probe::Match);
    assert_eq!(Redis::probe(Dir::ToClient, b"-NOAUTH Authentication required.\r\n"), Probe::Match);
    // Ambiguous server lines stay undecided; two replies decide.
    assert_eq!(Redis::probe(Dir::ToClient, b"+OK\r\n"), Probe::NeedMore);
    assert_eq!(Redis::probe(Dir::ToClient, b"-ERR bad\r\n"), Probe::NeedMore);
    assert_eq!(Redis::probe(Dir::ToClient, b"+OK\r\n+OK\r\n"), Probe::Match);
    for neg in [
        &b"HELLO\r\n"[..],
        b"EHLO x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get key\r\n",
        b"set k 0 0 1\r\nx\r\n",
        b"{\"a\":1}\n",
        b"[1,2]\n",
        b"QUIT\r\n",
        b"AUTH PLAIN x\r\n",
        b"PING :irc.example\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"*\x00\x01",
        b"*2\r\n$3\r\n123\r\n",
        b"*2\r\n:1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
    ] {
        assert_eq!(Redis::probe(Dir::ToServer, neg), Probe::NoMatch, "{:?}", String::from_utf8_lossy(neg));
    }
    for neg in [
        &b"220 mail ESMTP\r\n"[..],
        b"HTTP/1.1 200 OK\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"{\"a\":1}\n",
        b"+OK POP3 ready\r\n\x00",
        b"*x\r\n",
        b"$abc\r\n",
    ] {
        assert_ne!(Redis::probe(Dir::ToClient, neg), Probe::Match, "{:?}", String::from_utf8_lossy(neg));
    }
    assert_eq!(Redis::probe(Dir::ToClient, b"HTTP/1.1 200 OK\r\n"), Probe::NoMatch);
}

#[test]
fn random_bytes_do_not_match() {
    check_rejects_random::<Redis>(5000, 64);
}

#[test]
fn other_corpus_protocols_never_match() {
    check_rejects_other_corpus::<Redis>(&["redis"]);
}

#[test]
fn resp3_types_and_errors() {
    let reply: &[u8] = b"%1\r\n+a\r\n~2\r\n#t\r\n,1.5\r\n>2\r\n(123\r\n_\r\n|1\r\n+k\r\n+v\r\n=7\r\ntxt:abc\r\n\
!9\r\nERR blob!\r\n*?\r\n:1\r\n$?\r\n;2\r\nab\r\n;0\r\n.\r\n-ERR unknown command 'FOO'\r\n*2\r\n-WRONGTYPE x\r\n$-1\r\n";
    let mut r = Redis::default();
    assert!(feed_all(&mut r, Dir::ToClient, reply).is_empty());
    let m = l7_of(&r);
    // %1 map, >2 push, | attribute (not a reply) then =7, !9, *? streamed, -ERR, *2.
    assert_eq!(m["replies"], 7, "{m:?}");
    assert_eq!(m["errors"], 3);
    assert_eq!(m["first_error"], "ERR blob!");
    assert_eq!(m["resp3"], true);
    assert!(m.get("violation").is_none());
    check_every_split::<Redis>(Dir::ToClient, reply);
    check_every_prefix::<Redis>(Dir::ToClient, reply);
}

#[test]
fn huge_bulk_is_skipped_without_buffering() {
    let mut r = Redis::default();
    let hdr = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n";
    assert_eq!(r.feed(Dir::ToServer, hdr), Feed::Consumed(hdr.len()));
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..512 {
        assert_eq!(r.feed(Dir::ToServer, &chunk), Feed::Consumed(chunk.len()));
    }
    let tail = b"\r\n*1\r\n$4\r\nPING\r\n";
    assert_eq!(r.feed(Dir::ToServer, tail), Feed::Consumed(tail.len()));
    let m = l7_of(&r);
    assert_eq!(m["command_count"], 2);
    assert_eq!(m["commands"], serde_json::json!(["SET", "PING"]));
    // The same from the server side, fed MTU-sized: nothing is left pending.
    let mut r = Redis::default();
    let mut reply = b"$100000\r\n".to_vec();
    reply.extend(std::iter::repeat_n(b'y', 100_000));
    reply.extend_from_slice(b"\r\n:1\r\n");
    let segs: Vec<&[u8]> = reply.chunks(1448).collect();
    assert!(feed_segments(&mut r, Dir::ToClient, &segs).is_empty());
    assert_eq!(l7_of(&r)["replies"], 2);
}

#[test]
fn gaps() {
    // A gap inside a skipped bulk only shortens the skip.
    let mut r = Redis::default();
    let hdr = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n";
    r.feed(Dir::ToServer, hdr);
    r.feed(Dir::ToServer, &[b'v'; 1000]);
    r.gap(Dir::ToServer, 50_000);
    let mut rest = vec![b'v'; 49_000];
    rest.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
    feed_all(&mut r, Dir::ToServer, &rest);
    let m = l7_of(&r);
    assert_eq!(m["command_count"], 2);
    assert!(m.get("violation").is_none());
    assert_eq!(m["gap"], true);

    // A gap elsewhere in the client direction: resynchronise on the next command.
    let f = flow(43212);
    let mut r = Redis::default();
    feed_all(&mut r, Dir::ToServer, &f.to_server[..30]);
    r.gap(Dir::ToServer, 20);
    feed_all(&mut r, Dir::ToServer, &f.to_server[50..]);
    let m = l7_of(&r);
    assert!(m.get("violation").is_none(), "{m:?}");
    // COMMAND DOCS before the gap; INCR and LPUSH are lost (the resync point is the `\r\n*`
    // after LPUSH); the 10 commands after it are counted.
    assert_eq!(m["command_count"], 11);
    assert_eq!(
        m["commands"],
        serde_json::json!(["COMMAND", "LRANGE", "HSET", "HGETALL", "MULTI", "INCR", "EXEC", "INFO"])
    );
    // The server direction stops after a gap.
    let mut r2 = Redis::default();
    feed_all(&mut r2, Dir::ToClient, &f.to_client[..3000]);
    r2.gap(Dir::ToClient, 100);
    assert_eq!(r2.feed(Dir::ToClient, &f.to_client[3100..4000]), Feed::Consumed(900));
    assert!(l7_of(&r2).get("violation").is_none());
}

#[test]
fn depth_and_lengths_are_capped() {
    let mut r = Redis::default();
    let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
    r.feed(Dir::ToClient, &deep);
    assert_eq!(l7_of(&r)["violation"], true);
    let mut r = Redis::default();
    r.feed(Dir::ToServer, b"*1\r\n$99999999999\r\n");
    assert_eq!(l7_of(&r)["violation"], true);
    let mut r = Redis::default();
    r.feed(Dir::ToClient, b"*-5\r\n");
    assert_eq!(l7_of(&r)["violation"], true);
    // Bytes that are no RESP: the stream stopped being Redis from the bad token on.
    let mut r = Redis::default();
    assert_eq!(r.feed(Dir::ToClient, b"@@@\r\n"), Feed::Invalid { consumed: 0 });
    assert_eq!(r.feed(Dir::ToServer, b"*1\r\n@\r\n"), Feed::Invalid { consumed: 4 });
}

/// After detection: a valid command, then what Redis itself refuses, answers `Invalid` after
/// the valid bytes; what Redis accepts (inline lines, any bulk content) does not.
#[test]
fn what_redis_refuses_after_detection_is_invalid() {
    let ping = b"*1\r\n$4\r\nPING\r\n";
    for bad in [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], b"POST / HTTP/1.1\r\n", b"*x\r\n", b"*1\r\n$-7\r\n"] {
        let mut r = Redis::default();
        let mut bytes = ping.to_vec();
        bytes.extend_from_slice(bad);
        match r.feed(Dir::ToServer, &bytes) {
            Feed::Invalid { consumed } => assert!(consumed >= ping.len(), "{consumed}: {bad:?}"),
            other => panic!("{other:?}: {bad:?}"),
        }
    }
    let mut r = Redis::default();
    let ok = b"*1\r\n$4\r\nPING\r\nGET k\r\n*2\r\n$3\r\nGET\r\n$5\r\n\x00\x01\xff\r\n\r\n";
    assert_eq!(r.feed(Dir::ToServer, ok), Feed::Consumed(ok.len()));
    let mut r = Redis::default();
    assert_eq!(r.feed(Dir::ToClient, b"+PONG\r\n"), Feed::Consumed(7));
    assert_eq!(r.feed(Dir::ToClient, b"HTTP/1.1 200 OK\r\n"), Feed::Invalid { consumed: 0 });
}

#[test]
fn inline_commands() {
    let mut r = Redis::default();
    feed_all(&mut r, Dir::ToServer, b"PING\r\n\r\nhello 3\nset k v\r\n*1\r\n$4\r\nINFO\r\n");
    let m = l7_of(&r);
    assert_eq!(m["commands"], serde_json::json!(["PING", "HELLO", "SET", "INFO"]));
    assert_eq!(m["command_count"], 4);
    assert_eq!(m["inline_commands"], 3);
    assert_eq!(m["resp3"], true);
    // An overlong inline line is skipped, not buffered.
    let mut r = Redis::default();
    let mut long = b"SET k ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 10_000));
    long.extend_from_slice(b"\r\nPING\r\n");
    let segs: Vec<&[u8]> = long.chunks(1000).collect();
    assert!(feed_segments(&mut r, Dir::ToServer, &segs).is_empty());
    assert_eq!(l7_of(&r)["command_count"], 2);
}

#[test]
fn mutated_real_bytes_never_panic() {
    let f = flow(43212);
    let h = flow(43218);
    let seeds: [(Dir, &[u8]); 3] =
        [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client[..3000]), (Dir::ToClient, &h.to_client)];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let (d, seed) = seeds[i % seeds.len()];
        let mut buf = seed.to_vec();
        for _ in 0..(1 + rnd() % 8) {
            let at = (rnd() as usize) % buf.len();
            match rnd() % 4 {
                0 => buf[at] = rnd() as u8,
                1 => buf[at] = b"*$:-+\r\n0123456789?;.%|"[(rnd() % 22) as usize],
                2 => buf.truncate(at.max(1)),
                _ => buf.insert(at, rnd() as u8),
            }
        }
        let _ = Redis::probe(d, &buf);
        let mut r = Redis::default();
        let segs: Vec<&[u8]> = buf.chunks(1 + (rnd() % 700) as usize).collect();
        feed_segments(&mut r, d, &segs);
        let _ = l7_of(&r);
    }
}

#[test]
fn trickled_lines_are_searched_once() {
    // Inline commands and RESP header lines up to MAX_LINE, n bytes in all (1 KiB to 60 KiB),
    // trickled one byte per segment: the record of the whole stream, and bytes examined
    // searching for line ends <= 2 n (it was n²/2 per line).
    for n in [1024usize, 4096, 16 * 1024, 60 * 1024] {
        let len = n.min(parser::MAX_LINE) - 2;
        let mut cmd = b"SET k ".to_vec();
        cmd.resize(len, b'v');
        cmd.extend_from_slice(b"\r\n");
        let mut reply = b"+".to_vec();
        reply.resize(len, b'o');
        reply.extend_from_slice(b"\r\n");
        for (dir, unit) in [(Dir::ToServer, &cmd), (Dir::ToClient, &reply)] {
            let mut bytes = Vec::new();
            while bytes.len() + unit.len() <= n {
                bytes.extend_from_slice(unit);
            }
            let mut whole = Redis::default();
            feed_all(&mut whole, dir, &bytes);
            let m = l7_of(&whole);
            assert!(!m.contains_key("violation"), "{m:?}");
            let mut t = Redis::default();
            let segs: Vec<&[u8]> = bytes.chunks(1).collect();
            feed_segments(&mut t, dir, &segs);
            assert_eq!(l7_of(&t), m, "{dir:?} {n}");
            assert!(t.examined() <= 2 * bytes.len() as u64, "{dir:?} {n}: {} for {}", t.examined(), bytes.len());
        }
        let mut t = Redis::default();
        let segs: Vec<&[u8]> = cmd.chunks(1).collect();
        feed_segments(&mut t, Dir::ToServer, &segs);
        assert_eq!(l7_of(&t)["inline_commands"], 1, "{:?}", l7_of(&t));
    }
}

/// Inline `SET` and `AUTH` in Redis's forms (Zeek's traces, redis-cli's inline mode) are Redis;
/// memcached's storage command and the SASL `AUTH` of mail protocols are not.
#[test]
fn inline_set_and_auth_only_in_redis_forms() {
    use crate::app::Probe;
    let probe = |b: &[u8]| <Redis as crate::app::AppParser>::probe(Dir::ToServer, b);
    for redis in [
        &b"SET key \"my value with spaces\"\r\n"[..],
        b"SET sanity_check you_are_sane\r\n",
        b"SET k v EX 10\n",
        b"AUTH hunter2\r\n",
        b"AUTH default hunter2\r\n",
        b"auth s3cret\r\n",
    ] {
        assert_eq!(probe(redis), Probe::Match, "{}", String::from_utf8_lossy(redis));
    }
    for other in [
        &b"set key 0 900 5\r\nhello\r\n"[..],
        b"set key 1 0 5 noreply\r\n",
        b"AUTH PLAIN AGpvZQBwYXNz\r\n",
        b"AUTH LOGIN\r\n",
        b"AUTH\r\n",
        b"AUTH a b c\r\n",
        b"SET\r\n",
        b"SET onlykey\r\n",
    ] {
        assert_eq!(probe(other), Probe::NoMatch, "{}", String::from_utf8_lossy(other));
    }
}
