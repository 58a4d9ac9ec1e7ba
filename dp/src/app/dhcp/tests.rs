use super::*;
use crate::app::testutil::{check_every_prefix, check_rejects_other_corpus, check_rejects_random, corpus_flows, l7_of, Rng};

fn all() -> Vec<(Dir, Vec<u8>)> {
    corpus_flows("dhcp.pcap").into_iter().flat_map(|f| f.datagrams).collect()
}

#[test]
fn corpus_messages() {
    let flows = corpus_flows("dhcp.pcap");
    for f in &flows {
        for (d, dg) in &f.datagrams {
            assert_eq!(Dhcp::probe(*d, dg), Probe::Match);
        }
    }
    // All datagrams through one state: the whole exchange of the capture.
    let mut t = Dhcp::default();
    for (d, dg) in all() {
        assert_eq!(t.feed(d, &dg), Feed::Consumed(dg.len()));
    }
    let m = l7_of(&t);
    assert_eq!(m["message_types"][0], "DISCOVER");
    assert_eq!(m["client_mac"], "f2:bd:02:3e:dc:97");
    assert_eq!(m["requested_address"], "198.18.0.132");
    assert_eq!(m["assigned_address"], "198.18.0.132");
    assert_eq!(m["server_id"], "198.18.0.2");
    assert_eq!(m["hostname"], "corpus-udhcpc");
    assert_eq!(m["lease_seconds"], 3600);
    assert_eq!(m["messages_to_server"], 11);
    assert!(m.get("malformed").is_none());
    let types: Vec<&str> = m["message_types"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(types.contains(&"OFFER") && types.contains(&"REQUEST") && types.contains(&"ACK"), "{types:?}");
}

#[test]
fn every_prefix() {
    for (d, dg) in all() {
        check_every_prefix::<Dhcp>(d, &dg);
    }
}

#[test]
fn strict_checks() {
    let q = all()[0].1.clone();
    let with = |at: usize, v: u8| {
        let mut b = q.clone();
        b[at] = v;
        b
    };
    assert_eq!(Dhcp::probe(Dir::ToServer, &with(0, 3)), Probe::NoMatch); // op
    assert_eq!(Dhcp::probe(Dir::ToServer, &with(2, 17)), Probe::NoMatch); // hlen
    assert_eq!(Dhcp::probe(Dir::ToServer, &with(236, 98)), Probe::NoMatch); // cookie
    assert_eq!(Dhcp::probe(Dir::ToServer, &q[..200]), Probe::NeedMore);
    assert_eq!(Dhcp::probe(Dir::ToServer, &q[..241]), Probe::NeedMore);
    // Options overrunning the datagram or a missing end option: undecided (a prefix), and
    // counted as malformed when fed as a whole datagram.
    let mut cut = q.clone();
    let end = cut.iter().rposition(|c| *c == 255).unwrap();
    cut.truncate(end);
    assert_eq!(Dhcp::probe(Dir::ToServer, &cut), Probe::NeedMore);
    let mut t = Dhcp::default();
    t.feed(Dir::ToServer, &cut);
    assert_eq!(l7_of(&t)["malformed"], 1);
    // Garbage after the end option.
    let mut trail = q.clone();
    trail.push(7);
    assert_eq!(Dhcp::probe(Dir::ToServer, &trail), Probe::NoMatch);
    // Plain BOOTP (no message type option) is not DHCP.
    let mut bootp = q[..240].to_vec();
    bootp.push(255);
    bootp.resize(300, 0);
    assert_eq!(Dhcp::probe(Dir::ToServer, &bootp), Probe::NoMatch);
}

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Dhcp::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Dhcp>(&["dhcp"]);
    check_rejects_random::<Dhcp>(20_000, 300);
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0xd4c9);
    let seeds = all();
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
        let _ = Dhcp::probe(*d, &b);
        let mut t = Dhcp::default();
        // A datagram is taken whole, or found not to be DHCP (the engine detects again).
        let want = match parser::message(&b) {
            Parse::Ok(..) => Feed::Consumed(b.len()),
            _ => Feed::Invalid { consumed: 0 },
        };
        assert_eq!(t.feed(*d, &b), want);
        let _ = l7_of(&t);
    }
}
