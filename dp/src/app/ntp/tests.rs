use super::*;
use crate::app::testutil::{
    check_every_prefix, check_rejects_other_corpus, check_rejects_random, corpus_flows, l7_of, Flow, Rng,
};

fn flows() -> Vec<Flow> {
    corpus_flows("ntp.pcap")
}

fn parse(f: &Flow) -> Map<String, Value> {
    let mut t = Ntp::default();
    for (d, dg) in &f.datagrams {
        assert_eq!(t.feed(*d, dg), Feed::Consumed(dg.len()));
    }
    l7_of(&t)
}

#[test]
fn every_exchange_of_the_corpus() {
    let fl = flows();
    assert_eq!(fl.len(), 6);
    // (client port, version) for ntpdig, ntplib, ntplib v3, chronyd -Q, busybox...
    let want: &[(u16, u8)] = &[(57014, 4), (36236, 4), (45667, 3), (51518, 4), (53059, 4), (33620, 4)];
    for (f, &(port, version)) in fl.iter().zip(want) {
        assert_eq!(f.client_port, port);
        assert_eq!(f.server_port, 123);
        for (d, dg) in &f.datagrams {
            assert_eq!(Ntp::probe(*d, dg), Probe::Match, "{port} {d:?}");
        }
        let m = parse(f);
        assert_eq!(m["version"], version, "{port}");
        assert_eq!(m["mode"], "client");
        assert_eq!(m["reply_mode"], "server");
        assert_eq!(m["stratum"], 8);
        assert_eq!(m["refid"], "127.127.1.1");
        assert_eq!(m["packets_to_server"], 1);
        assert_eq!(m["packets_to_client"], 1);
        assert_eq!(m["origin_matched"], 1, "{port}");
        assert_eq!(m["origin_mismatched"], 0);
        assert!(m.get("malformed").is_none());
    }
}

/// Every prefix of a datagram is probed `NeedMore` (never `NoMatch`) and never panics.
/// (Splitting does not apply: each UDP datagram is fed whole.)
#[test]
fn every_prefix() {
    for f in flows() {
        for (d, dg) in &f.datagrams {
            check_every_prefix::<Ntp>(*d, dg);
        }
    }
}

#[test]
fn origin_mismatch_and_kiss_code() {
    let f = &flows()[0];
    let req = f.datagrams[0].1.clone();
    let mut reply = f.datagrams[1].1.clone();
    reply[31] ^= 1; // origin timestamp no longer echoes the request
    let mut t = Ntp::default();
    t.feed(Dir::ToServer, &req);
    t.feed(Dir::ToClient, &reply);
    let m = l7_of(&t);
    assert_eq!((m["origin_matched"].clone(), m["origin_mismatched"].clone()), (0.into(), 1.into()));
    // A kiss-o'-death: stratum 0 with an ASCII code in the reference id.
    let mut kod = f.datagrams[1].1.clone();
    kod[1] = 0;
    kod[12..16].copy_from_slice(b"RATE");
    assert_eq!(Ntp::probe(Dir::ToClient, &kod), Probe::Match);
    let mut t = Ntp::default();
    t.feed(Dir::ToClient, &kod);
    let m = l7_of(&t);
    assert_eq!(m["kiss_code"], "RATE");
    assert_eq!(m["stratum"], 0);
}

#[test]
fn strict_header_checks() {
    let f = &flows()[0];
    let q = f.datagrams[0].1.clone();
    let r = f.datagrams[1].1.clone();
    let with = |b: &[u8], at: usize, v: u8| {
        let mut b = b.to_vec();
        b[at] = v;
        b
    };
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&q, 0, 0x26)), Probe::NoMatch); // control (mode 6)
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&q, 0, 0x27)), Probe::NoMatch); // private (mode 7)
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&q, 0, 0x2b)), Probe::NoMatch); // version 5
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&q, 0, 0x03)), Probe::NoMatch); // version 0
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&r, 1, 17)), Probe::NoMatch); // stratum 17
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&r, 1, 0)), Probe::NoMatch); // stratum 0, refid not ASCII
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&r, 4, 1)), Probe::NoMatch); // root delay 256 s
    assert_eq!(Ntp::probe(Dir::ToServer, &q[..47]), Probe::NeedMore);
    let mut longer = q.clone();
    longer.push(0);
    assert_eq!(Ntp::probe(Dir::ToServer, &longer), Probe::NoMatch);
    // A MAC (key id + 20-byte digest) and an extension field are accepted.
    let mut mac = q.clone();
    mac.extend_from_slice(&[0u8; 24]);
    assert_eq!(Ntp::probe(Dir::ToServer, &mac), Probe::Match);
    let mut ext = q.clone();
    ext.extend_from_slice(&[0x01, 0x04, 0x00, 0x10]);
    ext.extend_from_slice(&[0u8; 12]);
    assert_eq!(Ntp::probe(Dir::ToServer, &ext), Probe::Match);
    ext[HEADER_PLUS_3] = 0x11; // extension length beyond the packet
    assert_eq!(Ntp::probe(Dir::ToServer, &ext), Probe::NoMatch);
    let mut zero_tx = q.clone();
    zero_tx[40..48].fill(0);
    assert_eq!(Ntp::probe(Dir::ToServer, &zero_tx), Probe::NoMatch);
}

const HEADER_PLUS_3: usize = parser::HEADER + 3;

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Ntp::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Ntp>(&["ntp"]);
    for len in [48, 68, 72, 96, 300] {
        check_rejects_random::<Ntp>(50_000, len);
    }
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0x4e70);
    let seeds: Vec<(Dir, Vec<u8>)> = flows().into_iter().flat_map(|f| f.datagrams).collect();
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
                1 => b.extend_from_slice(&[rng.next() as u8; 4]),
                2 => b[at] ^= 0x01,
                _ => b.truncate(at),
            }
        }
        let _ = Ntp::probe(*d, &b);
        let mut t = Ntp::default();
        // A datagram is taken whole, or found not to be NTP (the engine detects again).
        let want = match parser::packet(&b) {
            Parse::Ok(..) => Feed::Consumed(b.len()),
            _ => Feed::Invalid { consumed: 0 },
        };
        assert_eq!(t.feed(*d, &b), want);
        let _ = l7_of(&t);
    }
    // Garbage counts as malformed, nothing else.
    let mut t = Ntp::default();
    t.feed(Dir::ToServer, b"\xff\xff");
    assert_eq!(l7_of(&t)["malformed"], 1);
}
