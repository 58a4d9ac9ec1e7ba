use super::*;
use crate::app::testutil::{
    check_every_prefix, check_rejects_other_corpus, check_rejects_random, corpus_flows, l7_of, Flow, Rng,
};
use crate::flow::Addr;

fn flows() -> Vec<Flow> {
    corpus_flows("tftp.pcap")
}

/// The request flows (client → 69) and, for each, the data flow that follows it (the flow of
/// the capture whose first sender is the server, towards the request's client port).
fn pairs() -> Vec<(Flow, Flow)> {
    let fl = flows();
    let reqs: Vec<&Flow> = fl.iter().filter(|f| f.server_port == 69).collect();
    reqs.iter()
        .map(|r| {
            // corpus_flows takes the first sender as the client: for a data flow, the server.
            let d = fl.iter().find(|f| f.server_port == r.client_port && f.client_port != 69).unwrap();
            ((*r).clone(), d.clone())
        })
        .collect()
}

fn request_state(f: &Flow) -> Tftp {
    let mut t = Tftp::default();
    for (d, dg) in &f.datagrams {
        assert_eq!(t.feed(*d, dg), Feed::Consumed(dg.len()));
    }
    t
}

fn expectation(t: &mut Tftp, client_port: u16) -> Expectation {
    Expectation {
        zone: 0,
        proto: 17,
        parser: 0,
        client: Addr::v4([198, 18, 0, 1]),
        client_port,
        server: Addr::v4([198, 18, 0, 2]),
        server_port: 69,
        expires_ns: 0,
        data: t.take_related().expect("a request announces its transfer"),
    }
}

/// The data flow's state, opened from the request's announcement as the engine does, fed with
/// the flow's datagrams (directions as the TFTP client sees them).
fn transfer(req: &Flow, data: &Flow) -> (Tftp, Map<String, Value>) {
    let mut r = request_state(req);
    let e = expectation(&mut r, req.client_port);
    assert!(r.take_related().is_none(), "announced once");
    let mut t = Tftp::from_related(&e).unwrap();
    for (d, dg) in &data.datagrams {
        let d = if *d == Dir::ToServer { Dir::ToClient } else { Dir::ToServer };
        assert_eq!(t.feed(d, dg), Feed::Consumed(dg.len()));
    }
    let m = l7_of(&t);
    (t, m)
}

/// Sum of DATA payload bytes of a flow and the number of DATA datagrams, read directly.
fn data_totals(f: &Flow) -> (u64, u64) {
    let data: Vec<&Vec<u8>> = f.datagrams.iter().map(|(_, d)| d).filter(|d| d.starts_with(&[0, 3])).collect();
    (data.iter().map(|d| d.len() as u64 - 4).sum(), data.len() as u64)
}

#[test]
fn every_request_of_the_corpus() {
    let fl = flows();
    assert_eq!(fl.len(), 10);
    // (client port, op, file, mode, options requested) as in the capture.
    let want: &[(u16, &str, &str, &str, Option<Value>)] = &[
        (44328, "read", "firmware.bin", "octet", None),
        (56862, "read", "router.cfg", "netascii", None),
        (32813, "write", "upload.txt", "octet", Some(serde_json::json!({"tsize": 307}))),
        (56373, "read", "firmware.bin", "octet", Some(serde_json::json!({"blksize": 1024, "tsize": 0}))),
        (53630, "read", "nosuchfile", "octet", Some(serde_json::json!({"tsize": 0}))),
    ];
    let reqs: Vec<&Flow> = fl.iter().filter(|f| f.server_port == 69).collect();
    assert_eq!(reqs.len(), want.len());
    for (f, (port, op, file, mode, opts)) in reqs.iter().zip(want) {
        assert_eq!(f.client_port, *port);
        assert_eq!(f.datagrams.len(), 1);
        let (d, dg) = &f.datagrams[0];
        assert_eq!(*d, Dir::ToServer);
        assert_eq!(Tftp::probe(Dir::ToServer, dg), Probe::Match);
        assert_eq!(Tftp::probe(Dir::ToClient, dg), Probe::NoMatch);
        let m = l7_of(&request_state(f));
        assert_eq!(m["op"], *op, "{port}");
        assert_eq!(m["file"], *file);
        assert_eq!(m["mode"], *mode);
        assert_eq!(m.get("options_requested"), opts.as_ref(), "{port}");
        assert_eq!(m["requests"], 1);
        // Nothing of a transfer in the request session.
        assert!(m.get("data_blocks").is_none() && m.get("request_flow").is_none());
    }
}

#[test]
fn every_transfer_of_the_corpus_joined_to_its_request() {
    let p = pairs();
    assert_eq!(p.len(), 5);
    for (req, data) in &p {
        let (_, m) = transfer(req, data);
        let rm = l7_of(&request_state(req));
        for k in ["op", "file", "mode"] {
            assert_eq!(m[k], rm[k], "{k}");
        }
        assert_eq!(m["request_flow"], format!("198.18.0.1:{} -> 198.18.0.2:69", req.client_port));
        let (bytes, blocks) = data_totals(data);
        assert_eq!(m["data_bytes"], bytes, "{m:?}");
        assert_eq!(m["data_blocks"], blocks);
        assert_eq!(m["retransmitted"], 0);
        let acks = data.datagrams.iter().filter(|(_, d)| d.starts_with(&[0, 4])).count();
        assert_eq!(m["acks"], acks);
    }
    // The values, as read from the capture: firmware.bin in 79 blocks of 512 (the last 64
    // bytes), router.cfg in one, the WRQ's 307 bytes after an OACK, the blksize 1024 read in 40
    // blocks after an OACK and its ACK 0, and the error.
    let m: Vec<Map<String, Value>> = p.iter().map(|(r, d)| transfer(r, d).1).collect();
    assert_eq!(
        (m[0]["data_bytes"].clone(), m[0]["last_block"].clone(), m[0]["completed"].clone()),
        (40000.into(), 79.into(), true.into())
    );
    assert_eq!((m[1]["data_bytes"].clone(), m[1]["completed"].clone()), (24.into(), true.into()));
    assert_eq!(m[2]["op"], "write");
    assert_eq!((m[2]["data_bytes"].clone(), m[2]["completed"].clone()), (307.into(), true.into()));
    assert_eq!(m[2]["options_acknowledged"], serde_json::json!({"tsize": 307}));
    assert_eq!(m[3]["options_acknowledged"], serde_json::json!({"blksize": 1024, "tsize": 40000}));
    assert_eq!(
        (m[3]["data_blocks"].clone(), m[3]["acks"].clone(), m[3]["completed"].clone()),
        (40.into(), 41.into(), true.into())
    );
    assert_eq!((m[4]["error_code"].clone(), m[4]["error"].clone()), (1.into(), "file_not_found".into()));
    assert_eq!(m[4]["error_message"], "File not found");
    assert_eq!((m[4]["data_blocks"].clone(), m[4]["completed"].clone()), (0.into(), false.into()));
}

/// The server's side (OACK, DATA, ACK, ERROR) and the client's ACKs and DATA are never
/// recognised by content: only requests are.
#[test]
fn transfer_packets_never_match() {
    for (_, data) in pairs() {
        for (_, dg) in &data.datagrams {
            for d in [Dir::ToServer, Dir::ToClient] {
                assert_eq!(Tftp::probe(d, dg), Probe::NoMatch, "{:?}", &dg[..dg.len().min(8)]);
            }
        }
    }
}

/// Every prefix of a request is `NeedMore`, never `NoMatch`, and never panics. (Splitting does
/// not apply: each UDP datagram is fed whole.)
#[test]
fn every_prefix() {
    for f in flows().iter().filter(|f| f.server_port == 69) {
        for (d, dg) in &f.datagrams {
            check_every_prefix::<Tftp>(*d, dg);
        }
    }
}

#[test]
fn rejects_other_corpus_and_random_bytes() {
    check_rejects_other_corpus::<Tftp>(&["tftp"]);
    for len in [2, 3, 4, 8, 16, 64, 516, 1500] {
        check_rejects_random::<Tftp>(4000, len);
    }
}

#[test]
fn strict_request_checks() {
    let ok: &[&[u8]] = &[
        b"\0\x01a\0octet\0",
        b"\0\x02dir/f i l e\0NetASCII\0",
        b"\0\x01f\0MAIL\0",
        b"\0\x01f\0octet\0BLKSIZE\x001428\0TSize\x000\0timeout\x001\0windowsize\x0016\0",
        b"\0\x01f\0octet\0multicast\0\0",
        "\0\x01caf\u{e9}.bin\0octet\0".as_bytes(),
    ];
    for r in ok {
        assert_eq!(Tftp::probe(Dir::ToServer, r), Probe::Match, "{r:?}");
    }
    let bad: &[&[u8]] = &[
        b"\0\x03\0\x01hello",              // DATA
        b"\0\x01\0octet\0",                // empty file name
        b"\0\x01a\tb\0octet\0",            // control character
        b"\0\x01a\0binary\0",              // not a mode
        b"\0\x01a\0octets\0",              // not a mode
        b"\0\x01a\0octet\0blksize\x007\0", // blksize below 8
        b"\0\x01a\0octet\0blksize\x0065465\0",
        b"\0\x01a\0octet\0timeout\x000\0",
        b"\0\x01a\0octet\0windowsize\x000\0",
        b"\0\x01a\0octet\0tsize\x00abc\0",
        b"\0\x01a\0octet\0\0x\0",      // empty option name
        b"\0\x01a\0octet\0na me\0x\0", // space in a name
        b"\0\x01a\0octet\0x\0\x01\0",  // control character in a value
        b"\0\x01\xff\xfe\0octet\0",    // not UTF-8
        b"\x01\x01a\0octet\0",
    ];
    for r in bad {
        assert_eq!(Tftp::probe(Dir::ToServer, r), Probe::NoMatch, "{r:?}");
    }
    // Truncated inside a field: a prefix, not a verdict.
    for r in [&b"\0\x01a\0oc"[..], b"\0\x01a\0octet\0blksize", b"\0\x01a\0octet\0blksize\x0014", b"\0\x01caf\xc3"] {
        assert_eq!(Tftp::probe(Dir::ToServer, r), Probe::NeedMore, "{r:?}");
    }
    let mut t = Tftp::default();
    t.feed(Dir::ToServer, ok[3]);
    let m = l7_of(&t);
    assert_eq!(
        m["options_requested"],
        serde_json::json!({"blksize": 1428, "tsize": 0, "timeout": 1, "windowsize": 16})
    );
    assert_eq!(m["mode"], "octet");
    let mut t = Tftp::default();
    t.feed(Dir::ToServer, ok[4]);
    assert_eq!(l7_of(&t)["options_requested"], serde_json::json!({"unknown": 1}));
}

/// Retransmitted blocks are counted once as data; the transfer completes only when the short
/// last block is acknowledged; block numbers wrap.
#[test]
fn retransmissions_completion_and_wrap() {
    let data = |block: u16, n: usize| {
        let mut v = vec![0, 3];
        v.extend_from_slice(&block.to_be_bytes());
        v.extend(std::iter::repeat_n(b'x', n));
        v
    };
    let ack = |block: u16| [0u8, 4, (block >> 8) as u8, block as u8];
    let mut t = Tftp::default();
    for (d, p) in [
        (Dir::ToClient, data(1, 512)),
        (Dir::ToClient, data(1, 512)), // retransmitted
        (Dir::ToServer, ack(1).to_vec()),
        (Dir::ToClient, data(2, 100)),    // short: the last block
        (Dir::ToServer, ack(1).to_vec()), // duplicate ACK
    ] {
        t.feed(d, &p);
    }
    let m = l7_of(&t);
    assert_eq!(
        (m["data_blocks"].clone(), m["data_bytes"].clone(), m["retransmitted"].clone()),
        (2.into(), 612.into(), 1.into())
    );
    assert_eq!(
        (m["acks"].clone(), m["last_block"].clone(), m["completed"].clone()),
        (2.into(), 2.into(), false.into())
    );
    t.feed(Dir::ToServer, &ack(2));
    assert_eq!(l7_of(&t)["completed"], true);
    // Wrapping: 65535 then 0 is new, 65534 afterwards is a retransmission.
    let mut t = Tftp::default();
    for b in [65534u16, 65535, 0, 65534] {
        t.feed(Dir::ToClient, &data(b, 512));
    }
    let m = l7_of(&t);
    assert_eq!(
        (m["data_blocks"].clone(), m["retransmitted"].clone(), m["last_block"].clone()),
        (3.into(), 1.into(), 0.into())
    );
    // With an acknowledged blksize, a 512-byte block is short.
    let mut t = Tftp::default();
    t.feed(Dir::ToClient, b"\0\x06blksize\x001024\0");
    t.feed(Dir::ToClient, &data(1, 512));
    t.feed(Dir::ToServer, &ack(1));
    assert_eq!(l7_of(&t)["completed"], true);
    // Malformed packets are counted.
    t.feed(Dir::ToClient, b"\0\x09zz");
    t.feed(Dir::ToClient, b"\0");
    assert_eq!(l7_of(&t)["malformed"], 2);
}

#[test]
fn announcement_round_trips_long_and_utf8_names() {
    let long = format!("\0\x01{}\0octet\0blksize\x008\0timeout\x00255\0windowsize\x0065535\0x\0y\0", "é".repeat(100));
    assert_eq!(Tftp::probe(Dir::ToServer, long.as_bytes()), Probe::Match);
    let mut t = Tftp::default();
    t.feed(Dir::ToServer, long.as_bytes());
    let rm = l7_of(&t);
    assert_eq!(rm["file_truncated"], true);
    assert_eq!(rm["file"].as_str().unwrap().len(), 128);
    let e = expectation(&mut t, 1234);
    let d = Tftp::from_related(&e).unwrap();
    let m = l7_of(&d);
    for k in ["op", "file", "file_truncated", "mode", "options_requested"] {
        assert_eq!(m[k], rm[k], "{k}");
    }
    assert_eq!(
        m["options_requested"],
        serde_json::json!({"blksize": 8, "timeout": 255, "windowsize": 65535, "unknown": 1})
    );
    // Data that is not a TFTP announcement opens nothing.
    let mut e = e;
    e.data.0[0] = 9;
    assert!(Tftp::from_related(&e).is_none());
}

/// Mutations of the corpus datagrams through probe and feed never panic.
#[test]
fn mutation_never_panics() {
    let mut rng = Rng(0x7f4a_7c15_9e37_79b9);
    let seeds: Vec<Vec<u8>> = flows().iter().flat_map(|f| f.datagrams.iter().take(4).map(|(_, d)| d.clone())).collect();
    let mut t = Tftp::default();
    for seed in &seeds {
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(m.len());
                match rng.below(4) {
                    0 => m[i] = rng.next() as u8,
                    1 => m.truncate(i),
                    2 => m[i] = 0,
                    _ => m.insert(i, rng.next() as u8),
                }
                if m.is_empty() {
                    break;
                }
            }
            for d in [Dir::ToServer, Dir::ToClient] {
                let _ = Tftp::probe(d, &m);
                let _ = t.feed(d, &m);
            }
            let _ = t.take_related();
        }
    }
    let _ = l7_of(&t);
}

/// Through the engine: a request on a port no parser lists is TFTP by content and announces
/// its transfer once; the transfer's context opens decided, with the request's file.
#[test]
fn engine_detects_announces_and_opens_the_transfer() {
    use crate::app::engine::{Engine, EngineConfig, CANDIDATES};
    let (req, data) = pairs().remove(0);
    let mut e = Engine::new(EngineConfig { max_sessions: 2, ..EngineConfig::default() });
    let i = e.open(17, 6969).unwrap();
    e.datagram(i, Dir::ToServer, &req.datagrams[0].1, 6969, 1);
    assert_eq!(e.ctx(i).app, App::Tftp);
    let (parser, related) = e.take_related(i).unwrap();
    assert_eq!(CANDIDATES[usize::from(parser)].app, App::Tftp);
    assert!(e.take_related(i).is_none());
    let exp =
        Expectation { parser, data: related, client_port: req.client_port, ..expectation(&mut request_state(&req), 0) };
    let j = e.open_related(17, data.client_port, &exp).unwrap();
    assert_eq!((e.ctx(j).app, e.ctx(j).detected_after), (App::Tftp, 1));
    for (n, (d, dg)) in data.datagrams.iter().enumerate() {
        let d = if *d == Dir::ToServer { Dir::ToClient } else { Dir::ToServer };
        e.datagram(j, d, dg, data.client_port, n as u32 + 1);
    }
    let mut m = Map::new();
    e.ctx(j).state.l7(&mut m);
    assert_eq!(
        (m["file"].clone(), m["data_bytes"].clone(), m["completed"].clone()),
        ("firmware.bin".into(), 40000.into(), true.into())
    );
}

#[test]
fn request_flow_of_an_ipv6_request() {
    let mut t = Tftp::default();
    t.feed(Dir::ToServer, b"\0\x01pxelinux.0\0octet\0");
    let v6 = |last: u8| {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = last;
        Addr::v6(a)
    };
    let e = Expectation { client: v6(1), server: v6(2), ..expectation(&mut t, 40000) };
    let m = l7_of(&Tftp::from_related(&e).unwrap());
    assert_eq!(m["request_flow"], "[2001:db8::1]:40000 -> [2001:db8::2]:69");
    assert_eq!(m["file"], "pxelinux.0");
}
