//! The threat stage through the whole [`Inspector`] on crafted frames: each TCP header threat
//! in protect and alert mode with its control, actions from `[threats]`, session blocks, and
//! event merging with the offending frame.

use std::sync::Arc;

use crate::detect::{Action, ThreatId};
use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::policy::{CompiledPolicy, Policy};
use crate::session::Timeouts;
use crate::threat::ThreatPolicy;
use crate::wire::tcpflag::*;

const C: [u8; 4] = [198, 18, 0, 1];
const S: [u8; 4] = [198, 18, 0, 2];
const SEC: u64 = 1_000_000_000;

/// A TCP frame `src:sport -> dst:dport` with TCP `options` (padded to 4 bytes), checksums set.
#[allow(clippy::too_many_arguments)]
fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, seq: u32, ack: u32, window: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while opts.len() % 4 != 0 {
        opts.push(1);
    }
    let thl = 20 + opts.len();
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + thl + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.push(((thl / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&window.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&opts);
    f.extend_from_slice(payload);
    crate::wire::tests::fix_checksums(&mut f);
    f
}

/// From the client 198.18.0.1:40000 (`to_server`) or the server 198.18.0.2:80.
fn seg(to_server: bool, flags: u8, seq: u32, ack: u32, window: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    if to_server {
        tcp(C, 40000, S, 80, flags, seq, ack, window, options, payload)
    } else {
        tcp(S, 80, C, 40000, flags, seq, ack, window, options, payload)
    }
}

struct Rig {
    i: Inspector,
    now: u64,
}

impl Rig {
    /// The server 198.18.0.2 is workload `srv` in `mode` (port 80 allowed), with `threats`.
    fn new(mode: &str, threats: ThreatPolicy) -> Rig {
        let mut i = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
        let text = format!(
            "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"{mode}\"\n\
             [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n"
        );
        i.set_policy(Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap()), 1);
        i.threats.set_policy(threats);
        Rig { i, now: SEC }
    }

    fn send(&mut self, f: &[u8]) -> Verdict {
        self.now += 1_000_000;
        self.send_now(f)
    }

    /// Sends `f` at the current packet clock (the caller advances it).
    fn send_now(&mut self, f: &[u8]) -> Verdict {
        let to_server = f[26..30] != S;
        self.i.process(f, FrameMeta::new(0, if to_server { 1 } else { 2 }, self.now))
    }

    /// Handshake with the client's last ACK advertising `window` (no scaling).
    fn handshake(&mut self, window: u16) -> [Verdict; 3] {
        [
            self.send(&seg(true, SYN, 100, 0, 64240, &[2, 4, 5, 0xb4], b"")),
            self.send(&seg(false, SYN | ACK, 500, 101, 65160, &[2, 4, 5, 0xb4], b"")),
            self.send(&seg(true, ACK, 101, 501, window, &[], b"")),
        ]
    }

    fn hits(&self, id: ThreatId) -> u64 {
        self.i.threats.stats.hits[id as usize]
    }

    fn events(&mut self) -> Vec<crate::threat::event::ThreatHit> {
        self.i.flush_threats(u64::MAX / 2);
        let mut out = Vec::new();
        self.i.drain_threats_upto(&mut out, usize::MAX);
        out.into_iter().map(|(h, _)| h).collect()
    }

    fn record(&mut self) -> warden_control::ConnectionRecord {
        let v = self.i.snapshot(4);
        assert_eq!(v.len(), 1, "one session");
        crate::record::to_record(&v[0], |_| String::new())
    }
}

fn threat_ids(r: &warden_control::ConnectionRecord) -> Vec<&str> {
    r.threats.iter().map(|t| t.id.as_str()).collect()
}

#[test]
fn impossible_flag_combinations_are_bad_packets_dropped_before_any_session() {
    for flags in [SYN | FIN, SYN | RST, 0, FIN | PSH | URG] {
        let mut r = Rig::new("protect", ThreatPolicy::default());
        assert_eq!(r.send(&seg(true, flags, 100, 0, 1024, &[], b"")), Verdict::Drop(DropReason::Threat), "{flags:#x}");
        assert_eq!(r.i.sessions.len(), 0, "no session for {flags:#x}");
        assert_eq!(r.hits(ThreatId::BadPacket), 1);
        let mut r = Rig::new("alert", ThreatPolicy::default());
        assert_eq!(r.send(&seg(true, flags, 100, 0, 1024, &[], b"")), Verdict::Forward, "{flags:#x}");
        let ev = r.events();
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].id, ev[0].action, ev[0].count), (ThreatId::BadPacket, Action::Alert, 1));
        // The event carries the frame as sent.
        assert_eq!(ev[0].frame(), seg(true, flags, 100, 0, 1024, &[], b"").as_slice());
    }
    // Control: a plain handshake raises nothing.
    let mut r = Rig::new("protect", ThreatPolicy::default());
    assert_eq!(r.handshake(64240), [Verdict::Forward; 3]);
    assert!(r.events().is_empty());
    assert!(r.record().threats.is_empty());
}

#[test]
fn a_tiny_mss_is_dropped_in_protect_and_reported_in_alert() {
    let syn = |mss: u16| seg(true, SYN, 100, 0, 64240, &[2, 4, (mss >> 8) as u8, mss as u8], b"");
    let mut r = Rig::new("protect", ThreatPolicy::default());
    assert_eq!(r.send(&syn(48)), Verdict::Drop(DropReason::Threat));
    assert_eq!(r.i.threats.stats.dropped[ThreatId::TcpSmallMss as usize], 1);
    // Control: the smallest real-world MSS (576-byte datagrams) passes.
    assert_eq!(r.send(&syn(536)), Verdict::Forward);
    let mut r = Rig::new("alert", ThreatPolicy::default());
    assert_eq!(r.send(&syn(48)), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSmallMss), 1);
    // A configured threshold.
    let mut p = ThreatPolicy::default();
    p.limits.min_mss = 600;
    let mut r = Rig::new("protect", p);
    assert_eq!(r.send(&syn(536)), Verdict::Drop(DropReason::Threat));
}

#[test]
fn a_server_syn_without_ack_is_a_split_handshake_and_blocks_the_session() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[], b"")), Verdict::Forward);
    assert_eq!(r.send(&seg(false, SYN, 500, 0, 64240, &[], b"")), Verdict::Drop(DropReason::Threat));
    // Every later frame of the session is dropped.
    assert_eq!(r.send(&seg(true, SYN | ACK, 100, 501, 64240, &[], b"")), Verdict::Drop(DropReason::Threat));
    let rec = r.record();
    assert_eq!(threat_ids(&rec), ["tcp_split_handshake"]);
    assert_eq!(rec.threat_block.as_deref(), Some("tcp_split_handshake"));
    // Alert: forwarded, reported once.
    let mut r = Rig::new("alert", ThreatPolicy::default());
    r.send(&seg(true, SYN, 100, 0, 64240, &[], b""));
    assert_eq!(r.send(&seg(false, SYN, 500, 0, 64240, &[], b"")), Verdict::Forward);
    assert_eq!(r.send(&seg(false, SYN, 500, 0, 64240, &[], b"")), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSplitHandshake), 1);
}

#[test]
fn a_zero_window_completing_the_handshake_is_a_small_window() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    let v = r.handshake(0);
    assert_eq!(v, [Verdict::Forward, Verdict::Forward, Verdict::Drop(DropReason::Threat)]);
    assert_eq!(threat_ids(&r.record()), ["tcp_small_window"]);
    // Control: a normal window, and a zero window later in the session (a full receiver).
    let mut r = Rig::new("protect", ThreatPolicy::default());
    assert_eq!(r.handshake(64240), [Verdict::Forward; 3]);
    assert_eq!(r.send(&seg(true, ACK | PSH, 101, 501, 0, &[], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")), Verdict::Forward);
    assert!(r.record().threats.is_empty());
}

#[test]
fn syn_data_without_a_cookie_is_reported_and_a_cookie_is_not() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    // Default action alert: forwarded and reported.
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[], b"hello")), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSynData), 1);
    // With a Fast Open cookie: not a threat by itself.
    let mut r = Rig::new("protect", ThreatPolicy::default());
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[34, 10, 1, 2, 3, 4, 5, 6, 7, 8], b"hello")), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSynData), 0);
    // Configured to drop.
    let mut p = ThreatPolicy::default();
    p.actions[ThreatId::TcpSynData as usize] = Action::Drop;
    let mut r = Rig::new("protect", p);
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[], b"hello")), Verdict::Drop(DropReason::Threat));
}

#[test]
fn a_client_that_never_talks_to_a_talking_server_is_reported_on_the_packet_clock() {
    let mut r = Rig::new("alert", ThreatPolicy::default());
    r.handshake(64240);
    r.send(&seg(false, ACK | PSH, 501, 101, 65160, &[], b"SSH-2.0-OpenSSH_9.2\r\n"));
    r.send(&seg(true, ACK, 101, 522, 64240, &[], b""));
    assert_eq!(r.hits(ThreatId::TcpNoClientData), 0);
    // 31 s later (packet clock), the client still only ACKs.
    r.now += 31 * SEC;
    r.send(&seg(true, ACK, 101, 522, 64240, &[], b""));
    assert_eq!(r.hits(ThreatId::TcpNoClientData), 1);
    // Control: a client that answers.
    let mut r = Rig::new("alert", ThreatPolicy::default());
    r.handshake(64240);
    r.send(&seg(false, ACK | PSH, 501, 101, 65160, &[], b"SSH-2.0-OpenSSH_9.2\r\n"));
    r.send(&seg(true, ACK | PSH, 101, 522, 64240, &[], b"SSH-2.0-OpenSSH_9.2\r\n"));
    r.now += 31 * SEC;
    r.send(&seg(true, ACK, 122, 522, 64240, &[], b""));
    assert_eq!(r.hits(ThreatId::TcpNoClientData), 0);
}

#[test]
fn a_session_that_goes_idle_with_a_silent_client_is_judged_when_it_ends() {
    let mut r = Rig::new("alert", ThreatPolicy::default());
    r.handshake(64240);
    r.send(&seg(false, ACK | PSH, 501, 101, 65160, &[], b"220 smtp ready\r\n"));
    // Nothing more: the session expires idle after its timeout.
    let far = r.now + 3600 * SEC;
    r.i.sessions.expire(far, usize::MAX);
    let mut out = Vec::new();
    r.i.drain_ended(&mut out);
    assert_eq!(out.len(), 1);
    let rec = crate::record::to_record(&out[0], |_| String::new());
    assert_eq!(threat_ids(&rec), ["tcp_no_client_data"]);
    assert_eq!(r.hits(ThreatId::TcpNoClientData), 1);
}

#[test]
fn actions_follow_the_config_and_off_detects_nothing() {
    let mut p = ThreatPolicy::default();
    p.actions[ThreatId::BadPacket as usize] = Action::Alert;
    p.actions[ThreatId::TcpSmallMss as usize] = Action::Alert;
    let syn48 = seg(true, SYN, 100, 0, 64240, &[2, 4, 0, 48], b"");
    let mut r = Rig::new("protect", p);
    // Not dropped by the threat (the mid-stream exception policy still drops a SYN|FIN).
    assert_ne!(r.send(&seg(true, SYN | FIN, 100, 0, 1024, &[], b"")), Verdict::Drop(DropReason::Threat));
    assert_eq!(r.hits(ThreatId::BadPacket), 1);
    let mut r = Rig::new("protect", p);
    assert_eq!(r.send(&syn48), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSmallMss), 1);
    p.actions[ThreatId::TcpSmallMss as usize] = Action::Off;
    let mut r = Rig::new("protect", p);
    assert_eq!(r.send(&syn48), Verdict::Forward);
    assert_eq!(r.hits(ThreatId::TcpSmallMss), 0);
    assert!(r.events().is_empty());
}

#[test]
fn sql_injection_resets_an_allowed_session_in_protect_and_not_in_alert() {
    let req = b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: a\r\n\r\n";
    for (mode, want) in [("protect", Verdict::Reset), ("alert", Verdict::Forward)] {
        let mut r = Rig::new(mode, ThreatPolicy::default());
        r.handshake(64240);
        assert_eq!(r.send(&seg(true, ACK | PSH, 101, 501, 64240, &[], req)), want, "{mode}");
        let ev = r.events();
        assert_eq!(ev.len(), 1, "{mode}");
        assert_eq!(ev[0].id, ThreatId::SqlInjection);
        assert_eq!(ev[0].evidence.as_str(), "1' OR '1'='1");
        assert_eq!(ev[0].action, if mode == "protect" { Action::Reset } else { Action::Alert });
        if mode == "protect" {
            // Later frames of the session: dropped, no second reset.
            let more = seg(true, ACK | PSH, 101 + req.len() as u32, 501, 64240, &[], b"x");
            assert_eq!(r.send(&more), Verdict::Drop(DropReason::Threat));
        }
    }
    // Configured `drop`: no reset, the frame is dropped.
    let mut p = ThreatPolicy::default();
    p.actions[ThreatId::SqlInjection as usize] = Action::Drop;
    let mut r = Rig::new("protect", p);
    r.handshake(64240);
    assert_eq!(r.send(&seg(true, ACK | PSH, 101, 501, 64240, &[], req)), Verdict::Drop(DropReason::Threat));
}

#[test]
fn a_flood_of_bad_packets_is_a_bounded_stream_of_merged_events() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    // 5000 SYN|FIN frames from one source over 25 s of packet clock.
    for i in 0..5000u32 {
        r.now = SEC + u64::from(i) * 5_000_000;
        let f = seg(true, SYN | FIN, i, 0, 1024, &[], b"");
        let to_server = true;
        let v = r.i.process(&f, FrameMeta::new(0, if to_server { 1 } else { 2 }, r.now));
        assert_eq!(v, Verdict::Drop(DropReason::Threat));
        r.i.flush_threats(r.now);
    }
    let ev = r.events();
    assert!(ev.len() <= 4, "{} events", ev.len());
    assert_eq!(ev.iter().map(|e| u64::from(e.count)).sum::<u64>(), 5000);
    assert!(ev.iter().all(|e| e.action == Action::Drop));
    assert_eq!(r.i.threats.merge_stats().overflow, 0);
    assert_eq!(r.i.threats.stats.dropped[ThreatId::BadPacket as usize], 5000);
}

#[test]
fn a_syn_flood_from_many_sources_drops_the_excess_and_spares_established_sessions() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    // An established session before the flood.
    r.handshake(64240);
    let mut dropped = 0;
    // 15 000 SYNs in 3 s from spoofed sources in 198.18.128.0/17.
    for i in 0..15_000u32 {
        r.now += 200_000;
        let src = [198, 18, 128 + ((i >> 8) & 127) as u8, i as u8];
        let v = r.send_now(&tcp(src, 1024 + (i % 60000) as u16, S, 80, SYN, i, 0, 64240, &[2, 4, 5, 0xb4], b""));
        dropped += usize::from(v == Verdict::Drop(DropReason::Threat));
        if i % 1000 == 999 {
            // The established session's data still flows.
            let d = seg(true, ACK | PSH, 101, 501, 64240, &[], b"x");
            assert_eq!(r.send_now(&d), Verdict::Forward, "at SYN {i}");
        }
    }
    assert!(dropped > 9000, "{dropped} of 15000 SYNs dropped; {:?} {:?}", r.i.threats.syn_flood.stats(), r.i.stats.frames);
    assert_eq!(r.i.threats.stats.dropped[ThreatId::TcpSynFlood as usize], dropped as u64);
    let ev: Vec<_> = r.events().into_iter().filter(|e| e.id == ThreatId::TcpSynFlood).collect();
    assert_eq!(ev.len(), 1, "one event per victim and episode");
    assert_eq!(ev[0].server, crate::flow::Addr::v4(S));
    // In alert mode nothing is dropped, the flood is still reported.
    let mut r = Rig::new("alert", ThreatPolicy::default());
    for i in 0..10_000u32 {
        r.now += 200_000;
        let src = [198, 18, 128 + ((i >> 8) & 127) as u8, i as u8];
        assert_eq!(r.send_now(&tcp(src, 2000, S, 80, SYN, i, 0, 64240, &[], b"")), Verdict::Forward);
    }
    assert_eq!(r.hits(ThreatId::TcpSynFlood), 1);
}

#[test]
fn a_source_over_its_session_limit_is_refused_until_one_closes() {
    let mut p = ThreatPolicy::default();
    p.limits.session_limit.max_sessions = 5;
    p.actions[ThreatId::IpSrcSessionLimit as usize] = Action::Drop;
    let mut r = Rig::new("protect", p);
    let syn = |port: u16| tcp(C, port, S, 80, SYN, 1, 0, 64240, &[], b"");
    for port in 0..5 {
        assert_eq!(r.send(&syn(30000 + port)), Verdict::Forward, "session {port}");
    }
    assert_eq!(r.send(&syn(30005)), Verdict::Drop(DropReason::Threat));
    assert_eq!(r.hits(ThreatId::IpSrcSessionLimit), 1);
    // One session is reset: its place is free at once.
    assert_eq!(r.send(&tcp(C, 30000, S, 80, RST, 2, 0, 0, &[], b"")), Verdict::Forward);
    assert_eq!(r.send(&syn(30006)), Verdict::Forward);
    // Another source is not affected.
    assert_eq!(r.send(&tcp([198, 18, 0, 9], 30000, S, 80, SYN, 1, 0, 64240, &[], b"")), Verdict::Forward);
}

#[test]
fn an_echo_flood_is_cut_to_the_allowed_rate() {
    let echo = |seq: u16| {
        let mut f = crate::defrag::tests::ip4(1, C, S, &[8, 0, 0, 0, 0, 7, (seq >> 8) as u8, seq as u8, 1, 2, 3, 4]);
        crate::wire::tests::fix_checksums(&mut f);
        f
    };
    let mut r = Rig::new("protect", ThreatPolicy::default());
    let mut dropped = 0;
    for i in 0..2000u16 {
        r.now += 500_000; // 2000 requests/s
        dropped += usize::from(r.send_now(&echo(i)) == Verdict::Drop(DropReason::Threat));
    }
    assert!(dropped > 1500, "{dropped}");
    assert_eq!(r.hits(ThreatId::IcmpFlood), 1);
    // Control: one ping a second.
    let mut r = Rig::new("protect", ThreatPolicy::default());
    for i in 0..20u16 {
        r.now += SEC;
        // (The policy allows no ICMP to `srv`: denied by policy, not by the threat.)
        assert_ne!(r.send(&echo(i)), Verdict::Drop(DropReason::Threat));
    }
    assert_eq!(r.hits(ThreatId::IcmpFlood), 0);
}

#[test]
fn traffic_to_an_external_ip_another_workload_owns_is_a_k8s_mitm() {
    // `pay` claims 198.18.0.2 (the workload `srv`) as externalIP; a client workload's
    // connection to it is the threat, dropped in protect mode from its first frame.
    let text = "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"protect\"\n\
                [[workload]]\nid = \"cli\"\nips = [\"198.18.0.1\"]\nmode = \"protect\"\n\
                [[workload]]\nid = \"pay\"\nips = [\"198.18.0.7\"]\nmode = \"protect\"\n\
                [[service]]\nname = \"pay\"\nnamespace = \"shop\"\nexternal_ips = [\"198.18.0.2\"]\nworkloads = [\"pay\"]\n\
                [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n";
    let mut r = Rig::new("protect", ThreatPolicy::default());
    r.i.set_policy(Arc::new(CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap()), 2);
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[], b"")), Verdict::Drop(DropReason::Threat));
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].id, ev[0].reason, ev[0].evidence.as_str()), (ThreatId::K8sExternalIpMitm, "external_ip_of_workload", "shop/pay"));
    // Control: the same policy without the Service.
    let text = text.replace("[[service]]\nname = \"pay\"\nnamespace = \"shop\"\nexternal_ips = [\"198.18.0.2\"]\nworkloads = [\"pay\"]\n", "");
    let mut r = Rig::new("protect", ThreatPolicy::default());
    r.i.set_policy(Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap()), 2);
    assert_eq!(r.send(&seg(true, SYN, 100, 0, 64240, &[], b"")), Verdict::Forward);
}

#[test]
fn a_frame_that_does_not_decode_is_a_bad_packet_under_the_malformed_policy() {
    let mut r = Rig::new("protect", ThreatPolicy::default());
    let mut f = seg(true, SYN, 100, 0, 64240, &[], b"");
    f[14] = 0x43; // IHL 3: shorter than an IPv4 header
    assert_eq!(r.send(&f), Verdict::Drop(DropReason::Malformed));
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].id, ev[0].action, ev[0].frame()), (ThreatId::BadPacket, Action::Alert, f.as_slice()));
    assert!(!ev[0].reason.is_empty());
}

/// A DNS-over-TCP segment (RFC 7766) carrying `n` pipelined A queries for short, plain names.
fn dns_tcp_queries(n: u16) -> Vec<u8> {
    let mut out = Vec::new();
    for id in 0..n {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x03www\x07example\x03com\x00");
        m.extend_from_slice(&[0, 1, 0, 1]);
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(&m);
    }
    out
}

#[test]
fn dns_queries_past_what_the_tunnel_detector_is_handed_are_a_finding() {
    // More pipelined queries in one segment than the detector is handed per frame: the ones
    // it does not see could carry a tunnel behind plain decoys.
    for (n, want) in [(3u16, 0u64), (12, 1)] {
        let mut i = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
        let text = "[[workload]]\nid = \"dns\"\nips = [\"198.18.0.2\"]\nmode = \"protect\"\n\
                    [[rule]]\nid = 1\nfrom = \"any\"\nto = \"dns\"\nip_proto = \"tcp\"\nports = [\"53\"]\naction = \"allow\"\n";
        i.set_policy(Arc::new(CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap()), 1);
        let mut p = ThreatPolicy::default();
        p.actions[ThreatId::DnsTunneling as usize] = Action::Reset;
        i.threats.set_policy(p);
        let mut now = SEC;
        let mut send = |i: &mut Inspector, to_server: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]| {
            now += 1_000_000;
            let f = if to_server { tcp(C, 40000, S, 53, flags, seq, ack, 64240, &[], payload) } else { tcp(S, 53, C, 40000, flags, seq, ack, 64240, &[], payload) };
            i.process(&f, FrameMeta::new(0, if to_server { 1 } else { 2 }, now))
        };
        send(&mut i, true, SYN, 100, 0, b"");
        send(&mut i, false, SYN | ACK, 500, 101, b"");
        send(&mut i, true, ACK, 101, 501, b"");
        let v = send(&mut i, true, ACK | PSH, 101, 501, &dns_tcp_queries(n));
        assert_eq!(i.threats.stats.hits[ThreatId::DnsTunneling as usize], want, "{n} queries");
        if want > 0 {
            assert_eq!(v, Verdict::Reset, "protect with reset");
            i.flush_threats(u64::MAX / 2);
            let mut out = Vec::new();
            i.drain_threats_upto(&mut out, usize::MAX);
            assert_eq!(out[0].0.reason, "queries_not_checked");
            assert!(out[0].0.evidence.as_str().contains("queries in one frame not checked"), "{}", out[0].0.evidence.as_str());
        } else {
            assert_eq!(v, Verdict::Forward);
        }
    }
}
