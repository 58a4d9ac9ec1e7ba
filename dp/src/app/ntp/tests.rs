use super::*;
use crate::app::testutil::{
    capture_flows, check_every_prefix, check_rejects_other_corpus, check_rejects_random, corpus_flows, l7_of, Flow, Rng,
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
    assert_eq!(parser::packet(&with(&q, 0, 0x26)), Parse::Invalid); // control (mode 6): not a time packet
    assert_eq!(parser::packet(&with(&q, 0, 0x27)), Parse::Invalid); // private (mode 7)
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&q, 0, 0x26)), Probe::NoMatch); // nor a control message
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
    zero_tx[2] = 6; // poll 6: not the all-zero SNTP form (RFC 4330 §5)
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
    for len in [8, 12, 16, 48, 56, 68, 72, 96, 192, 300, 440] {
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
        let want = match parser::datagram(&b) {
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

/// The flows of a capture of `dp/tests/captures/ntp/` (README there).
fn ntp_capture(name: &str) -> Vec<Flow> {
    capture_flows(&format!("ntp/{name}"))
}

/// Every datagram of `f` is probed NTP and consumed whole; its prefixes are never rejected.
fn parse_all(f: &Flow) -> Map<String, Value> {
    for (d, dg) in &f.datagrams {
        check_every_prefix::<Ntp>(*d, dg);
    }
    parse(f)
}

/// `ntpq` (ntpsec 1.2.2, Debian) against ntpd (ntpsec): `rv`, `peers`, `rv 0 version` and
/// `mrulist` on one socket, mode 6 both ways, the long answers in several fragments.
#[test]
fn control_messages_of_ntpq() {
    let fl = ntp_capture("ntp-mode6-ntpq.pcap");
    assert_eq!(fl.len(), 1);
    let m = parse_all(&fl[0]);
    assert_eq!(m["mode"], "control");
    assert_eq!(m["reply_mode"], "control");
    assert_eq!(m["version"], 2);
    assert_eq!(m["control_opcode"], "read_variables");
    assert_eq!(m["control_opcode_id"], 2);
    assert_eq!(m["control_requests"], 6);
    assert_eq!(m["control_responses"], 7);
    assert!(m.get("control_errors").is_none());
    assert!(m.get("malformed").is_none() && m.get("stratum").is_none());
    // Each message alone, in either order (a response seen first is NTP too).
    for (d, dg) in &fl[0].datagrams {
        let Parse::Ok(parser::Packet::Control(c), _) = parser::datagram(dg) else { panic!("{dg:?}") };
        assert_eq!(c.response, *d == Dir::ToClient);
        assert_eq!(dg.len(), (parser::CONTROL_HEADER + usize::from(c.count) + 3) & !3);
    }
}

/// Zeek's `ntpmode67.pcap`: ntpq and ntpdc requests (ntpdc `peers` and `monlist`) with no
/// answers.
#[test]
fn zeek_mode_6_and_7_requests() {
    let fl = ntp_capture("zeek-ntpmode67.pcap");
    let got: Vec<(String, Option<u64>, bool)> = fl
        .iter()
        .map(|f| {
            let m = parse_all(f);
            assert_eq!(m["packets_to_client"], 0);
            let code = m.get("request_code").and_then(|v| v.as_u64());
            (m["mode"].as_str().unwrap().to_string(), code, m.get("monlist").is_some())
        })
        .collect();
    let want = [("control", None, false), ("private", Some(1), false), ("private", Some(42), true), ("control", None, false), ("private", Some(1), false)];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1, g.2), w);
    }
    let m = parse(&fl[0]);
    assert_eq!((m["control_opcode"].clone(), m["control_requests"].clone()), ("read_status".into(), 3.into()));
    let m = parse(&fl[2]);
    assert_eq!((m["implementation"].clone(), m["private_requests"].clone()), (3.into(), 1.into()));
}

/// The `monlist` probe real scanners send and what an ntpd that has it answers (crafted with
/// scapy: no Debian server speaks mode 7, README); an error answer; a request alone.
#[test]
fn private_messages_and_monlist() {
    let fl = ntp_capture("ntp-mode7.pcap");
    assert_eq!(fl.len(), 3);
    let m = parse_all(&fl[0]);
    assert_eq!((m["mode"].clone(), m["reply_mode"].clone()), ("private".into(), "private".into()));
    assert_eq!(m["monlist"], true);
    assert_eq!((m["implementation"].clone(), m["request_code"].clone()), (3.into(), 42.into()));
    assert_eq!((m["private_requests"].clone(), m["private_responses"].clone()), (1.into(), 3.into()));
    assert_eq!(m["items"], 18);
    let m = parse_all(&fl[1]);
    assert_eq!(m["monlist"], true);
    assert_eq!((m["implementation"].clone(), m["request_code"].clone()), (2.into(), 20.into()));
    assert_eq!(m["private_error"], 1);
    assert_eq!(m["items"], 0);
    let m = parse_all(&fl[2]);
    assert_eq!(m["request_code"], 1);
    assert!(m.get("monlist").is_none());
    // The responses alone are NTP (a reflected answer reaching its victim).
    let mut t = Ntp::default();
    for (d, dg) in fl[0].datagrams.iter().filter(|(d, _)| *d == Dir::ToClient) {
        assert_eq!(t.feed(*d, dg), Feed::Consumed(dg.len()));
    }
    assert_eq!(l7_of(&t)["monlist"], true);
}

/// Zeroed SNTP requests (lwIP's form, VN 4 and VN 3) answered by ntpd, and `ntpdig`.
#[test]
fn zeroed_sntp_requests() {
    let fl = ntp_capture("ntp-sntp-zeroed.pcap");
    assert_eq!(fl.len(), 3);
    for (f, (zeroed, version)) in fl.iter().zip([(true, 4), (true, 3), (false, 4)]) {
        let m = parse_all(f);
        assert_eq!(m["version"], version);
        assert_eq!((m["mode"].clone(), m["reply_mode"].clone()), ("client".into(), "server".into()));
        assert_eq!(m.get("sntp_zeroed").is_some(), zeroed);
        assert_eq!(m["origin_matched"], 1, "the server copies the (zero) transmit timestamp");
    }
    // Zeroed but one byte: not the RFC 4330 form, and its transmit timestamp is zero.
    let q = fl[0].datagrams[0].1.clone();
    assert!(q[1..].iter().all(|&b| b == 0));
    for at in [1, 2, 12, 30] {
        let mut b = q.clone();
        b[at] = 1;
        assert_eq!(Ntp::probe(Dir::ToServer, &b), Probe::NoMatch, "{at}");
    }
    let mut server_mode = q.clone();
    server_mode[0] = 0x24;
    assert_eq!(Ntp::probe(Dir::ToClient, &server_mode), Probe::NoMatch, "a zeroed reply is not");
}

/// What the mode 6 and 7 checks reject, each from a real message.
#[test]
fn control_and_private_checks() {
    let ctl = ntp_capture("ntp-mode6-ntpq.pcap").remove(0);
    let req = ctl.datagrams[0].1.clone();
    let resp = ctl.datagrams[1].1.clone();
    let with = |b: &[u8], at: usize, v: u8| {
        let mut b = b.to_vec();
        b[at] = v;
        b
    };
    assert_eq!(Ntp::probe(Dir::ToServer, &req), Probe::Match);
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 1, 0x00)), Probe::NoMatch); // opcode 0
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 1, 0x0d)), Probe::NoMatch); // opcode 13
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 1, 0x42)), Probe::NoMatch); // request with E
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 0, 0x16)), Probe::Match); // LI 0 (Zeek's ntpq)
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 9, 4)), Probe::NoMatch); // request at an offset
    assert_ne!(Ntp::probe(Dir::ToServer, &with(&req, 11, 4)), Probe::Match); // count past the end
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&req, 0, 0x36)), Probe::NoMatch); // version 6
    assert_eq!(Ntp::probe(Dir::ToClient, &resp), Probe::Match);
    let mut longer = resp.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_ne!(Ntp::probe(Dir::ToClient, &longer), Probe::Match); // 4 bytes past the padding
    assert_eq!(Ntp::default().feed(Dir::ToClient, &longer), Feed::Invalid { consumed: 0 });
    longer.extend_from_slice(&[0; 40]);
    assert_eq!(Ntp::probe(Dir::ToClient, &longer), Probe::NoMatch);
    let mut mac = resp.clone();
    mac.extend_from_slice(&[7; 20]);
    assert_eq!(Ntp::probe(Dir::ToClient, &mac), Probe::Match); // key id and SHA-1 digest
    let mut binary = resp.clone();
    binary[20..40].fill(0x01);
    assert_eq!(Ntp::probe(Dir::ToClient, &binary), Probe::NoMatch); // read variables: text
    let mut error = resp.clone();
    error[1] |= 0x40;
    assert_eq!(Ntp::probe(Dir::ToClient, &error), Probe::NoMatch); // an error response with data
    assert_eq!(Ntp::probe(Dir::ToServer, &req[..11]), Probe::NeedMore);

    let pv = ntp_capture("ntp-mode7.pcap");
    let probe = pv[0].datagrams[0].1.clone();
    let answer = pv[0].datagrams[1].1.clone();
    assert_eq!(Ntp::probe(Dir::ToServer, &probe), Probe::Match);
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 2, 1)), Probe::NoMatch); // implementation 1
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 3, 46)), Probe::NoMatch); // request code 46
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 1, 1)), Probe::NoMatch); // request sequence 1
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 4, 0x10)), Probe::NoMatch); // request with err
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 6, 0x10)), Probe::NoMatch); // MBZ
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&probe, 0, 0x57)), Probe::NoMatch); // request with M
    assert_ne!(Ntp::probe(Dir::ToServer, &with(&with(&probe, 5, 9), 7, 8)), Probe::Match); // 9 × 8 past the end
    assert_eq!(Ntp::probe(Dir::ToServer, &with(&with(&probe, 5, 5), 7, 8)), Probe::Match); // 5 × 8 within
    assert_eq!(Ntp::probe(Dir::ToServer, &probe[..7]), Probe::NeedMore);
    assert_eq!(Ntp::probe(Dir::ToClient, &answer), Probe::Match);
    assert_ne!(Ntp::probe(Dir::ToClient, &answer[..answer.len() - 1]), Probe::Match); // cut
    let mut t = Ntp::default();
    assert_eq!(t.feed(Dir::ToClient, &answer[..answer.len() - 1]), Feed::Invalid { consumed: 0 });
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&answer, 4, 0x60)), Probe::NoMatch); // err 6
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&answer, 4, 0x10)), Probe::NoMatch); // err with items
    assert_eq!(Ntp::probe(Dir::ToClient, &with(&answer, 7, 90)), Probe::NoMatch); // 6 × 90 > 500
}

/// Made-up line protocols and random bytes on port 123 stay unknown through the engine (the
/// probe is strict for every mode).
#[test]
fn made_up_protocols_on_port_123_stay_unknown() {
    use crate::app::engine::{Engine, EngineConfig};
    use crate::wire::ipproto;
    let mut rng = Rng(0x123);
    let mut datagrams: Vec<Vec<u8>> = [&b"HELLO 1\r\n"[..], b"TIME?\n", b"STATUS ntp\r\n", b"\x16\x02time please\n", b"\x17\x00\x03*monlist\n"]
        .iter()
        .map(|b| b.to_vec())
        .collect();
    for len in [8, 12, 48, 200] {
        for _ in 0..200 {
            datagrams.push((0..len).map(|_| rng.next() as u8).collect());
        }
    }
    for dg in &datagrams {
        let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
        let i = e.open(ipproto::UDP, 123).unwrap();
        e.datagram(i, Dir::ToServer, dg, 123, 1);
        e.datagram(i, Dir::ToClient, dg, 123, 2);
        assert_ne!(e.ctx(i).app, App::Ntp, "{dg:?}");
    }
}
