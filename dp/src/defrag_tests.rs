//! IP fragments through the whole pipeline ([`Inspector`]) on crafted frames: an SQL injection
//! whose URL is split across fragments, sessions denied and allowed while carried in
//! fragments (with tiny first fragments), the verdict of a datagram applied to all its
//! fragments, a reset decided on a reassembled segment, the exception policy when reassembly
//! runs out of room or time, conflicting overlaps in protect and alert mode, and two pipelines
//! standing in for two workers, owning flows as the workers do.

use std::sync::Arc;

use crate::defrag::tests::{frag4, frag6, ip4, ip6, tcp, udp, A4, A6, B4, B6};
use crate::defrag::DefragConfig;
use crate::exception::ExceptionReason;
use crate::inspect::{flow_of, DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::policy::{CompiledPolicy, Policy};
use crate::rst::RstFrame;
use crate::session::Timeouts;
use crate::wire::{self, ipproto, tcpflag::*};

const CLIENT: u16 = 1;
const SERVER: u16 = 2;

/// `srv` (198.18.0.2, 2001:db8::2) in `mode`: TCP 8080 allowed, TCP 8081 allowed for `http`
/// only, UDP 53 allowed; anything else gets the mode's default.
fn policy(mode: &str) -> Arc<CompiledPolicy> {
    let text = format!(
        r#"
[[workload]]
id = "srv"
ips = ["198.18.0.2", "2001:db8::2"]
mode = "{mode}"

[[rule]]
id = 1
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["8080"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["8081"]
apps = ["http"]
action = "allow"

[[rule]]
id = 3
from = "any"
to = "srv"
ip_proto = "udp"
ports = ["53"]
action = "allow"
"#
    );
    Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap())
}

/// One pipeline and the frames it holds, as a worker keeps them.
struct Net {
    i: Inspector,
    now: u64,
    token: u64,
    resets: Vec<[RstFrame; 2]>,
}

impl Net {
    fn new(mode: Option<&str>) -> Net {
        let mut i = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
        if let Some(m) = mode {
            i.set_policy(policy(m), 1);
        }
        Net {
            i,
            now: 1_000_000_000,
            token: 0,
            resets: Vec::new(),
        }
    }

    /// Sends `frames` received on `iface`, one token each; returns each frame's fate: its own
    /// verdict, or the verdict its datagram was released with (`Hold` while still held).
    fn send(&mut self, iface: u16, frames: &[Vec<u8>]) -> Vec<Verdict> {
        let first = self.token + 1;
        let mut fate = vec![Verdict::Hold; frames.len()];
        for (n, f) in frames.iter().enumerate() {
            self.now += 1_000;
            self.token += 1;
            let v = self.i.process_frame(
                f,
                FrameMeta::new(0, iface, self.now),
                self.token,
            );
            if v != Verdict::Hold {
                fate[n] = v;
            }
            self.collect(first, &mut fate);
        }
        fate
    }

    /// Applies released verdicts to the fates of tokens `first..`.
    fn collect(&mut self, first: u64, fate: &mut [Verdict]) {
        for (r, tokens) in self.i.releases().iter() {
            for &t in tokens {
                if let Some(slot) = t.checked_sub(first).and_then(|k| fate.get_mut(k as usize)) {
                    *slot = r.verdict;
                }
            }
            if let Some(rs) = r.resets {
                self.resets.push(rs);
            }
        }
        self.i.clear_releases();
    }

    /// Sends one whole frame and returns its verdict.
    fn one(&mut self, iface: u16, frame: Vec<u8>) -> Verdict {
        self.send(iface, &[frame])[0]
    }

    fn record(&mut self) -> warden_control::ConnectionRecord {
        let snaps = self.i.snapshot(usize::MAX);
        assert_eq!(snaps.len(), 1, "one session: {snaps:?}");
        crate::record::to_record(&snaps[0], |_| String::new())
    }
}

/// Ethernet + IP (`v6` or not) from the client (198.18.0.1 / 2001:db8::1) to the server with
/// TCP `sport -> dport`.
#[allow(clippy::too_many_arguments)]
fn seg(
    v6: bool,
    to_server: bool,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let t = tcp(sport, dport, seq, ack, flags, payload);
    match (v6, to_server) {
        (false, true) => ip4(ipproto::TCP, A4, B4, &t),
        (false, false) => ip4(ipproto::TCP, B4, A4, &t),
        (true, true) => ip6(ipproto::TCP, A6, B6, &[], &t),
        (true, false) => ip6(ipproto::TCP, B6, A6, &[], &t),
    }
}

/// Splits a frame made by [`seg`] (or [`ip4`]/[`ip6`] without extension headers) into
/// fragments of its IP payload at `pieces`.
fn split(v6: bool, frame: &[u8], id: u32, pieces: &[(usize, usize)]) -> Vec<Vec<u8>> {
    if v6 {
        frag6(frame, id, 40, pieces)
    } else {
        frag4(frame, id as u16, pieces)
    }
}

fn payload_len(v6: bool, frame: &[u8]) -> usize {
    frame.len() - 14 - if v6 { 40 } else { 20 }
}

fn handshake(n: &mut Net, v6: bool, dport: u16) -> Vec<Verdict> {
    vec![
        n.one(CLIENT, seg(v6, true, 40000, dport, 100, 0, SYN, b"")),
        n.one(
            SERVER,
            seg(v6, false, dport, 40000, 500, 101, SYN | ACK, b""),
        ),
        n.one(CLIENT, seg(v6, true, 40000, dport, 101, 501, ACK, b"")),
    ]
}

#[test]
fn an_sql_injection_in_a_url_split_across_fragments_is_detected() {
    let request: &[u8] = b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: x\r\n\r\n";
    for v6 in [false, true] {
        let mut n = Net::new(None);
        assert!(handshake(&mut n, v6, 80)
            .iter()
            .all(|v| *v == Verdict::Forward));
        let whole = seg(v6, true, 40000, 80, 101, 501, ACK | PSH, request);
        // TCP header and "GET /item?id=1%27%20OR%20%27" first; "1%27%3D%271 HTTP/1.1..." later.
        let frags = split(
            v6,
            &whole,
            0x4242,
            &[(0, 48), (48, payload_len(v6, &whole) - 48)],
        );
        let (a, b) = (&frags[0][frags[0].len() - 28..], &frags[1]);
        assert!(
            a.ends_with(b"%20%27") && !a.windows(3).any(|w| w == b"%3D"),
            "the split hides the tautology"
        );
        assert!(b.windows(7).any(|w| w == b"%3D%271"));
        // Out of order, as an evader would send them.
        let fate = n.send(CLIENT, &[frags[1].clone(), frags[0].clone()]);
        assert_eq!(fate, vec![Verdict::Forward; 2], "v6 {v6}");
        let rec = n.record();
        assert_eq!(rec.app, "http", "v6 {v6}");
        let t = rec
            .threats
            .first()
            .unwrap_or_else(|| panic!("v6 {v6}: no threat in {rec:?}"));
        assert_eq!(
            (t.id.as_str(), t.evidence.as_str()),
            ("sql_injection", "1' OR '1'='1")
        );
        // One packet of the session, with the bytes of both fragment frames.
        assert_eq!(rec.packets_to_server, 3);
        let handshake_bytes = 2 * seg(v6, true, 40000, 80, 0, 0, 0, b"").len() as u64;
        assert_eq!(
            rec.bytes_to_server,
            handshake_bytes + (frags[0].len() + frags[1].len()) as u64
        );
        let d = n.i.defrag_stats();
        assert_eq!((d.fragments, d.reassembled, d.held), (2, 1, 0));
    }
}

#[test]
fn a_denied_session_carried_in_fragments_is_denied() {
    for v6 in [false, true] {
        let mut n = Net::new(Some("protect"));
        // A SYN to port 22 whose first fragment carries only 8 bytes of the TCP header (the
        // flags are in the second): reassembled before any decision, then denied.
        let syn = seg(v6, true, 40000, 22, 100, 0, SYN, b"");
        let frags = split(v6, &syn, 7, &[(0, 8), (8, 12)]);
        assert_eq!(
            n.send(CLIENT, &frags),
            vec![Verdict::Drop(DropReason::PolicyDenied); 2],
            "v6 {v6}"
        );
        // Data on it, fragmented, is dropped as a whole too.
        let data = seg(v6, true, 40000, 22, 101, 0, ACK | PSH, &[b'x'; 100]);
        let frags = split(v6, &data, 8, &[(0, 64), (64, 56)]);
        assert_eq!(
            n.send(CLIENT, &frags),
            vec![Verdict::Drop(DropReason::PolicyDenied); 2]
        );
        let rec = n.record();
        assert_eq!(
            (rec.server_port, rec.verdict.as_deref()),
            (22, Some("denied"))
        );
        assert_eq!(
            (rec.packets_to_server, rec.packets_dropped_to_server),
            (2, 2)
        );
        assert_eq!(
            n.i.stats.malformed.iter().sum::<u64>(),
            0,
            "a tiny first fragment is not malformed"
        );
    }
}

#[test]
fn an_allowed_session_carried_in_fragments_is_forwarded() {
    for v6 in [false, true] {
        let mut n = Net::new(Some("protect"));
        let syn = seg(v6, true, 40000, 8080, 100, 0, SYN, b"");
        assert_eq!(
            n.send(CLIENT, &split(v6, &syn, 7, &[(0, 8), (8, 12)])),
            vec![Verdict::Forward; 2]
        );
        assert_eq!(
            n.one(
                SERVER,
                seg(v6, false, 8080, 40000, 500, 101, SYN | ACK, b"")
            ),
            Verdict::Forward
        );
        let data = seg(v6, true, 40000, 8080, 101, 501, ACK | PSH, &[b'y'; 3000]);
        let len = payload_len(v6, &data);
        let frags = split(v6, &data, 9, &[(0, 1480), (1480, 1480), (2960, len - 2960)]);
        // Nothing leaves before the last fragment; then all three, together.
        let fate = n.send(CLIENT, &frags);
        assert_eq!(fate, vec![Verdict::Forward; 3], "v6 {v6}");
        let rec = n.record();
        assert_eq!(
            (rec.verdict.as_deref(), rec.rule_id),
            (Some("allowed"), Some(1))
        );
        assert_eq!(
            (
                rec.packets_to_server,
                rec.packets_to_client,
                rec.packets_dropped_to_server
            ),
            (2, 1, 0)
        );
        assert_eq!(rec.state, "established");
    }
}

/// Held fragments are not forwarded one by one: the first two wait for the third.
#[test]
fn fragments_are_held_until_their_datagram_is_decided() {
    let mut n = Net::new(Some("protect"));
    let dgram = ip4(ipproto::UDP, A4, B4, &udp(5353, 53, &[7; 3000]));
    let frags = frag4(&dgram, 1, &[(0, 1480), (1480, 1480), (2960, 48)]);
    assert_eq!(n.send(CLIENT, &frags[..2]), vec![Verdict::Hold; 2]);
    assert_eq!(n.i.defrag_stats().held, 2);
    let first = n.token - 1;
    n.now += 1_000;
    n.token += 1;
    let v = n.i.process_frame(
        &frags[2],
        FrameMeta::new(0, CLIENT, n.now),
        n.token,
    );
    assert_eq!(v, Verdict::Hold);
    let rel: Vec<_> =
        n.i.releases()
            .iter()
            .map(|(r, t)| (r.verdict, t.to_vec()))
            .collect();
    assert_eq!(
        rel,
        vec![(Verdict::Forward, vec![first, first + 1, first + 2])]
    );
}

/// A segment that makes an app rule deny its session, carried in fragments: the fragments
/// are dropped together and the resets are built from the reassembled segment.
#[test]
fn a_reset_decided_on_a_reassembled_segment_is_built_from_it() {
    for v6 in [false, true] {
        let mut n = Net::new(Some("protect"));
        assert!(handshake(&mut n, v6, 8081)
            .iter()
            .all(|v| *v == Verdict::Forward));
        let data = seg(
            v6,
            true,
            40000,
            8081,
            101,
            501,
            ACK | PSH,
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        );
        let len = payload_len(v6, &data);
        let fate = n.send(CLIENT, &split(v6, &data, 3, &[(0, 24), (24, len - 24)]));
        assert_eq!(fate, vec![Verdict::Reset; 2], "v6 {v6}");
        assert_eq!(n.resets.len(), 1);
        for (r, (sport, dport, seq)) in n.resets[0]
            .iter()
            .zip([(40000u16, 8081u16, 101u32), (8081, 40000, 501)])
        {
            let f = wire::decode(r.bytes()).unwrap();
            let ip = f.ip.unwrap();
            assert_eq!((ip.sport, ip.dport), (sport, dport));
            assert!(
                matches!(ip.l4, wire::L4::Tcp { flags, seq: s, .. } if flags & RST != 0 && s == seq),
                "{:?}",
                ip.l4
            );
        }
        let rec = n.record();
        assert_eq!(
            (rec.app.as_str(), rec.verdict.as_deref()),
            ("ssh", Some("denied"))
        );
    }
}

/// Reassembly out of room or time: the exception policy of the strictest workload end
/// decides the fragments (drop in protect, forward in alert), counted; traffic of no workload
/// is forwarded.
#[test]
fn the_exception_policy_decides_datagrams_that_cannot_be_reassembled() {
    let first = |id: u16| {
        frag4(
            &ip4(ipproto::UDP, A4, B4, &udp(5353, 53, &[1; 3000])),
            id,
            &[(0, 1480)],
        )
    };
    for (mode, want) in [
        (Some("protect"), Verdict::Drop(DropReason::PolicyDenied)),
        (Some("alert"), Verdict::Forward),
        (None, Verdict::Forward),
    ] {
        let mut n = Net::new(mode);
        assert!(n.i.set_defrag(DefragConfig {
            max_datagrams: 1,
            timeout_ns: 5_000_000_000,
            ..DefragConfig::default()
        }));
        // Room: a second datagram evicts the first.
        let a = n.token + 1;
        let mut fate = vec![Verdict::Hold; 2];
        for f in [first(1), first(2)] {
            n.now += 1_000;
            n.token += 1;
            n.i.process_frame(
                &f[0],
                FrameMeta::new(0, CLIENT, n.now),
                n.token,
            );
            n.collect(a, &mut fate);
        }
        assert_eq!(fate, vec![want, Verdict::Hold], "{mode:?}");
        // Time: the second never completes.
        n.i.expire_fragments(n.now + 4_000_000_000);
        n.collect(a, &mut fate);
        assert_eq!(fate[1], Verdict::Hold);
        n.i.expire_fragments(n.now + 5_000_000_000);
        n.collect(a, &mut fate);
        assert_eq!(fate[1], want, "{mode:?}");
        let policed = u64::from(mode.is_some());
        assert_eq!(
            n.i.stats.exceptions[ExceptionReason::DefragFull as usize],
            policed,
            "{mode:?}"
        );
        assert_eq!(
            n.i.stats.exceptions[ExceptionReason::DefragTimeout as usize],
            policed,
            "{mode:?}"
        );
        let d = n.i.defrag_stats();
        assert_eq!(
            (d.full, d.timeouts, d.exceptions, d.held),
            (1, 1, 2, 0),
            "{mode:?}"
        );
        assert_eq!(
            n.i.sessions.len(),
            0,
            "nothing uninspected reached a session"
        );
    }
}

/// Overlapping fragments that disagree (teardrop-style): counted in every mode; dropped whole
/// in protect mode even where policy allows the flow; forwarded in alert mode.
#[test]
fn conflicting_overlaps_are_dropped_in_protect_and_flagged_in_alert() {
    for (mode, want) in [
        ("protect", Verdict::Drop(DropReason::PolicyDenied)),
        ("alert", Verdict::Forward),
    ] {
        let mut n = Net::new(Some(mode));
        let dgram = ip4(ipproto::UDP, A4, B4, &udp(5353, 53, &[3; 2000]));
        let mut frags = frag4(&dgram, 1, &[(0, 1000), (992, 1016)]);
        frags[1][34] ^= 0x55; // the 8 overlapping bytes differ
        assert_eq!(n.send(CLIENT, &frags), vec![want; 2], "{mode}");
        assert_eq!(n.i.defrag_stats().overlaps, 1);
        // Reported as `ip_teardrop`.
        assert_eq!(n.i.threats.stats.hits[crate::detect::ThreatId::IpTeardrop as usize], 1, "{mode}");
        // The same datagram without the conflict is allowed by rule 3.
        let frags = frag4(&dgram, 2, &[(0, 1000), (992, 1016)]);
        assert_eq!(n.send(CLIENT, &frags), vec![Verdict::Forward; 2], "{mode}");
        assert_eq!(n.i.defrag_stats().overlaps, 1);
        assert_eq!(n.i.threats.stats.hits[crate::detect::ThreatId::IpTeardrop as usize], 1, "{mode}");
    }
}

/// A fragment reaching past 65535 bytes (ping of death): dropped in every mode, reported as
/// `ping_of_death`; the fragments of a normal large ping are not.
#[test]
fn a_datagram_over_65535_bytes_is_a_ping_of_death() {
    for mode in ["protect", "alert"] {
        let mut n = Net::new(Some(mode));
        // A last fragment at offset 65528 carrying 100 bytes: the datagram would end at 65648.
        let mut last = frag4(&ip4(ipproto::ICMP, A4, B4, &[0u8; 65_536 + 200][..65_628]), 9, &[(65_528, 100)]);
        let v = n.send(CLIENT, &last);
        assert!(v.iter().all(|v| *v != Verdict::Forward), "{mode}: {v:?}");
        assert_eq!(n.i.threats.stats.hits[crate::detect::ThreatId::PingOfDeath as usize], 1, "{mode}");
        last.clear();
        let big = ip4(ipproto::ICMP, A4, B4, &[&[8u8, 0, 0, 0, 0, 1, 0, 2][..], &[7; 3000]].concat());
        let frags = frag4(&big, 10, &[(0, 1480), (1480, 1480), (2960, 48)]);
        n.send(CLIENT, &frags);
        assert_eq!(n.i.threats.stats.hits[crate::detect::ThreatId::PingOfDeath as usize], 1, "{mode}");
    }
}

/// Two pipelines own flows as two workers do (`owner_spread % 2`): the fragments of a flow's
/// datagrams reach the pipeline that also owns its whole packets, and the reassembled
/// datagram is a packet of the same session. With the 5-tuple hash (`spread`) they would not
/// meet: the flow below is chosen so that they would not.
#[test]
fn fragments_and_whole_packets_of_a_flow_meet_in_one_session_across_workers() {
    let key = |f: &[u8]| flow_of(&wire::decode(f).unwrap(), 0).unwrap().0;
    // A client port whose 5-tuple and port-less keys land on different workers by `spread`.
    let sport = (1024u16..)
        .find(|&p| {
            let whole = ip4(ipproto::UDP, A4, B4, &udp(p, 53, b"q"));
            let later = frag4(
                &ip4(ipproto::UDP, A4, B4, &udp(p, 53, &[0; 100])),
                1,
                &[(8, 100)],
            );
            key(&whole).spread() % 2 != key(&later[0]).spread() % 2
        })
        .unwrap();
    let mut w = [Net::new(None), Net::new(None)];
    let query = ip4(ipproto::UDP, A4, B4, &udp(sport, 53, b"small query"));
    let big = ip4(ipproto::UDP, A4, B4, &udp(sport, 53, &[9; 3000]));
    let answer = ip4(ipproto::UDP, B4, A4, &udp(53, sport, b"answer"));
    let frags = frag4(&big, 77, &[(0, 1480), (1480, 1480), (2960, 48)]);
    // The query, the later fragments (held), the first fragment (which completes the
    // datagram: all three released), the answer.
    let plan = [
        (query, CLIENT, vec![Verdict::Forward]),
        (frags[1].clone(), CLIENT, vec![Verdict::Hold]),
        (frags[2].clone(), CLIENT, vec![Verdict::Hold]),
        (frags[0].clone(), CLIENT, vec![Verdict::Forward]),
        (answer, SERVER, vec![Verdict::Forward]),
    ];
    for (f, iface, want) in plan {
        let o = key(&f).owner_spread() as usize % 2;
        assert_eq!(w[o].send(iface, &[f]), want);
    }
    let recs: Vec<_> = w
        .iter_mut()
        .flat_map(|n| n.i.snapshot(usize::MAX))
        .map(|s| crate::record::to_record(&s, |_| String::new()))
        .collect();
    assert_eq!(
        recs.len(),
        1,
        "one session for whole packets and the reassembled datagram: {recs:#?}"
    );
    let r = &recs[0];
    assert_eq!(
        (
            r.client_port,
            r.server_port,
            r.packets_to_server,
            r.packets_to_client
        ),
        (sport, 53, 2, 1)
    );
    let reassembled: Vec<u64> = w.iter().map(|n| n.i.defrag_stats().reassembled).collect();
    assert_eq!(reassembled.iter().sum::<u64>(), 1);
}

/// An IPv6 atomic fragment (Fragment header with offset 0 and no M flag, RFC 6946) is an
/// ordinary packet: decoded through the Fragment header, decided at once, never held.
#[test]
fn atomic_fragments_are_ordinary_packets() {
    let mut n = Net::new(Some("protect"));
    let seg = tcp(40000, 8080, 100, 0, SYN, b"");
    let mut ext = vec![ipproto::TCP, 0, 0, 0];
    ext.extend_from_slice(&0x1234u32.to_be_bytes());
    let atomic = ip6(44, A6, B6, &ext, &seg);
    let ip = wire::decode(&atomic).unwrap().ip.unwrap();
    assert_eq!((ip.frag, ip.sport, ip.dport), (None, 40000, 8080));
    assert_eq!(n.one(CLIENT, atomic), Verdict::Forward);
    let denied = ip6(44, A6, B6, &ext, &tcp(40000, 22, 100, 0, SYN, b""));
    assert_eq!(
        n.one(CLIENT, denied),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    assert_eq!(n.i.defrag_stats().fragments, 0);
}
