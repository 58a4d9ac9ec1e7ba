//! Attacks on protect mode through the whole pipeline ([`Inspector`]) on crafted frames, each
//! with a control case: direction spoofing (SYN|ACK first, bare ACK, SYN spoofed from a
//! workload's address, frames riding a session from the wrong side), addresses the policy does
//! not list behind a workload's interface, and the exception policy (mid-stream pickup, app
//! context pool and stream caps exhausted while the verdict needs the app).

use std::sync::Arc;

use crate::app::engine::EngineConfig;
use crate::exception::{ExceptionAction, ExceptionPolicy, ExceptionReason, PerMode};
use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::policy::{CompiledPolicy, Policy, PolicyVerdict};
use crate::session::{SessionSnapshot, Timeouts};
use crate::wire::tcpflag::*;

const OUT: u16 = 1;
const IN: u16 = 2;
const WEB: [u8; 4] = [198, 18, 0, 2];
const EVIL: [u8; 4] = [198, 18, 1, 9];
const WEB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EVIL_MAC: [u8; 6] = [2, 0, 0, 0, 1, 9];

/// Ethernet + IPv4 + TCP from `src:sport` to `dst:dport` with source MAC `mac`.
#[allow(clippy::too_many_arguments)]
fn tcp(mac: [u8; 6], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcpa(mac, src, sport, dst, dport, seq, 0, flags, payload)
}

/// As [`tcp`], acknowledging `ack`.
#[allow(clippy::too_many_arguments)]
fn tcpa(mac: [u8; 6], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xff];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    crate::wire::tests::fix_checksums(&mut f);
    f
}

fn policy(mode: &str) -> Arc<CompiledPolicy> {
    let text = format!(
        r#"
[[workload]]
id = "web"
ips = ["198.18.0.2"]
iface = "wd-in"
mode = "{mode}"

# Egress: web may open HTTPS connections anywhere.
[[rule]]
id = 1
from = "web"
to = "any"
ip_proto = "tcp"
ports = ["443"]
action = "allow"

# Ingress: only HTTP to web on 8080.
[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["8080"]
apps = ["http"]
action = "allow"
"#
    );
    Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap())
}

fn inspector(mode: &str, engine: EngineConfig) -> Inspector {
    let mut i = Inspector::with_engine(256, Timeouts::default(), MalformedPolicy::Drop, engine);
    i.set_policy(policy(mode), 1);
    i.set_pair((OUT, "wd-out"), (IN, "wd-in"));
    i
}

struct Run {
    i: Inspector,
    now: u64,
}

impl Run {
    fn new(mode: &str) -> Run {
        Run { i: inspector(mode, EngineConfig::default()), now: 1 }
    }

    fn send(&mut self, iface: u16, frame: &[u8]) -> Verdict {
        self.now += 1_000;
        self.i.process(frame, FrameMeta::new(0, iface, self.now))
    }

    fn snaps(&mut self) -> Vec<SessionSnapshot> {
        self.i.snapshot(usize::MAX)
    }
}

fn dropped(v: Verdict) -> bool {
    matches!(v, Verdict::Drop(_) | Verdict::Reset)
}

#[test]
fn syn_ack_first_cannot_make_the_workload_the_client() {
    let mut r = Run::new("protect");
    // The attacker's SYN|ACK from 443 to web's port 22 would look like web's own HTTPS
    // connection (allowed by rule 1) if its receiver were taken for the client.
    let v = r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 5000, SYN | ACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDenied));
    // Its data on that 5-tuple goes nowhere either.
    for _ in 0..3 {
        assert!(dropped(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 5001, ACK | PSH, b"SSH-2.0-x\r\n"))));
    }
    let snaps = r.snaps();
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    let e = s.session.policy.exception.unwrap();
    assert_eq!((e.reason, e.action), (ExceptionReason::Midstream, Some(ExceptionAction::DropFlow)));
    assert_eq!(s.session.dropped_packets.iter().sum::<u64>(), 4);
    let rec = crate::record::to_record(s, |_| String::new());
    assert_eq!(rec.verdict.as_deref(), Some("denied"));
    assert_eq!((rec.inspection.as_deref(), rec.inspection_reason.as_deref()), (Some("bypassed"), Some("midstream")));
    assert_eq!(rec.exception_action.as_deref(), Some("drop_flow"));
    assert_eq!(r.i.stats.exceptions[ExceptionReason::Midstream as usize], 1);
    // The real handshake of the same 5-tuple starts a new session, decided the right way
    // round: the attacker is the client, port 22 is not allowed in.
    assert!(dropped(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 9000, SYN, b""))));
    let snaps = r.snaps();
    assert_eq!(snaps.len(), 1);
    let rec = crate::record::to_record(&snaps[0], |_| String::new());
    assert_eq!((rec.client_ip.as_str(), rec.server_port), ("198.18.1.9", 22));
    assert_eq!((rec.verdict.as_deref(), rec.inspection.as_deref()), (Some("denied"), Some("none")));
    assert_eq!(rec.inspection_reason.as_deref(), Some("policy_denied"));
}

#[test]
fn bare_ack_and_data_first_are_midstream() {
    for flags in [ACK, ACK | PSH, FIN | ACK, RST, SYN | FIN] {
        let mut r = Run::new("protect");
        let v = r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, flags, b"x"));
        assert!(dropped(v), "{flags:#x}");
        // Web answering does not open it either.
        assert!(dropped(r.send(IN, &tcp(WEB_MAC, WEB, 22, EVIL, 443, 1, ACK, b""))), "{flags:#x}");
    }
}

#[test]
fn control_the_workloads_own_connection_passes() {
    let mut r = Run::new("protect");
    assert_eq!(r.send(IN, &tcp(WEB_MAC, WEB, 40000, EVIL, 443, 100, SYN, b"")), Verdict::Forward);
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 40000, 700, 101, SYN | ACK, b"")), Verdict::Forward);
    assert_eq!(r.send(IN, &tcpa(WEB_MAC, WEB, 40000, EVIL, 443, 101, 701, ACK, b"")), Verdict::Forward);
    assert_eq!(r.send(IN, &tcpa(WEB_MAC, WEB, 40000, EVIL, 443, 101, 701, ACK | PSH, b"\x16\x03\x01")), Verdict::Forward);
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 40000, 701, 104, ACK, b"")), Verdict::Forward);
    let s = &r.snaps()[0];
    assert_eq!(s.session.policy.verdict, Some(PolicyVerdict::Allowed));
    assert!(s.session.policy.exception.is_none());
    assert_eq!(s.session.dropped_packets, [0, 0]);
    assert_eq!(r.i.stats.spoofed, 0);
}

#[test]
fn a_syn_spoofed_from_the_workloads_address_is_dropped_and_opens_nothing() {
    let mut r = Run::new("protect");
    // From outside, claiming to be web opening an HTTPS connection to the attacker.
    let v = r.send(OUT, &tcp(EVIL_MAC, WEB, 22, EVIL, 443, 1, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    assert_eq!(r.i.sessions.len(), 0, "a spoofed frame created a session");
    assert_eq!(r.i.stats.spoofed, 1);
    // The attacker's own SYN to port 22 is then an ordinary denied connection.
    assert!(dropped(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, SYN, b""))));
    // In alert mode the spoofed frame is counted and goes on, but opens nothing either: the
    // attacker's own SYN then opens its session the right way round, reported as a violation.
    let mut r = Run::new("alert");
    assert_eq!(r.send(OUT, &tcp(EVIL_MAC, WEB, 22, EVIL, 443, 1, SYN, b"")), Verdict::Forward);
    assert_eq!(r.i.stats.spoofed, 1);
    assert_eq!(r.i.sessions.len(), 0, "a spoofed frame created a session in alert mode");
    assert_eq!(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, SYN, b"")), Verdict::Forward);
    let rec = crate::record::to_record(&r.snaps()[0], |_| String::new());
    assert_eq!((rec.client_ip.as_str(), rec.server_port), ("198.18.1.9", 22));
    assert_eq!(rec.verdict.as_deref(), Some("violation"));
}

#[test]
fn frames_of_a_session_from_the_wrong_side_are_spoofed() {
    let mut r = Run::new("protect");
    assert_eq!(r.send(IN, &tcp(WEB_MAC, WEB, 40000, EVIL, 443, 100, SYN, b"")), Verdict::Forward);
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 40000, 700, 101, SYN | ACK, b"")), Verdict::Forward);
    // A client frame arriving from outside rides nothing.
    let v = r.send(OUT, &tcpa(EVIL_MAC, WEB, 40000, EVIL, 443, 101, 701, ACK | PSH, b"injected"));
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    // A "server" frame arriving from the workload's side neither.
    let v = r.send(IN, &tcpa(WEB_MAC, EVIL, 443, WEB, 40000, 701, 101, ACK | PSH, b"injected"));
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    let s = &r.snaps()[0];
    assert_eq!(s.session.dropped_packets, [1, 1]);
    assert_eq!(s.session.packets, [2, 2], "seen and dropped");
    assert_eq!(r.i.stats.spoofed, 2);
}

#[test]
fn an_address_the_policy_does_not_list_behind_the_workloads_interface_is_the_workloads() {
    // 198.18.0.77 is not web's listed address, but it is on web's side of the pair.
    let mut r = Run::new("protect");
    let v = r.send(OUT, &tcp(EVIL_MAC, EVIL, 40000, [198, 18, 0, 77], 22, 1, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDenied));
    let rec = crate::record::to_record(&r.snaps()[0], |_| String::new());
    assert_eq!(rec.server_workload.as_deref(), Some("web"));
    // Control: without interfaces (as in `warden replay`), an unlisted address is nobody's.
    let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
    i.set_policy(policy("protect"), 1);
    let f = tcp(EVIL_MAC, EVIL, 40000, [198, 18, 0, 77], 22, 1, SYN, b"");
    assert_eq!(i.process(&f, FrameMeta::new(0, OUT, 1)), Verdict::Forward);
}

#[test]
fn alert_mode_passes_midstream_and_reports_it() {
    let mut r = Run::new("alert");
    assert_eq!(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, SYN | ACK, b"")), Verdict::Forward);
    assert_eq!(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, ACK | PSH, b"data")), Verdict::Forward);
    let mut ev = Vec::new();
    r.i.drain_events(&mut ev);
    assert_eq!(ev.len(), 1, "one exception event");
    let rec = crate::record::to_record(&ev[0], |_| String::new());
    assert_eq!(rec.exception_action.as_deref(), Some("pass_flow"));
    assert!(rec.midstream);
    // pass_flow: inspected mid-stream (`data` is nothing yet), not bypassed.
    assert_eq!((rec.inspection.as_deref(), rec.inspection_reason.as_deref()), (Some("active"), None));
    assert_ne!(r.snaps()[0].session.app_ctx, crate::session::NO_APP);
    // bypass: neither inspected nor evaluated again.
    let mut r = Run::new("alert");
    r.i.set_exceptions(ExceptionPolicy { midstream: PerMode::all(ExceptionAction::Bypass), ..Default::default() });
    assert_eq!(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, ACK | PSH, b"HTTP/1.1 200 OK\r\n\r\n")), Verdict::Forward);
    let snap = &r.snaps()[0];
    assert_eq!(snap.session.app_ctx, crate::session::NO_APP);
    let rec = crate::record::to_record(snap, |_| String::new());
    assert_eq!((rec.inspection.as_deref(), rec.inspection_reason.as_deref()), (Some("bypassed"), Some("midstream")));
    assert_eq!((rec.exception_action.as_deref(), rec.app.as_str(), rec.midstream), (Some("bypass"), "unknown", true));
    // Configured otherwise, alert drops it too.
    let mut r = Run::new("alert");
    r.i.set_exceptions(ExceptionPolicy { midstream: PerMode::all(ExceptionAction::DropFlow), ..Default::default() });
    assert!(dropped(r.send(OUT, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 1, SYN | ACK, b""))));
}

#[test]
fn exhausted_app_contexts_drop_sessions_whose_verdict_needs_the_app() {
    let engine = EngineConfig { max_sessions: 1, ..EngineConfig::default() };
    for (mode, want_drop) in [("protect", true), ("alert", false)] {
        let mut i = inspector(mode, engine);
        let mut now = 0;
        let mut send = |i: &mut Inspector, iface, f: &[u8]| {
            now += 1000;
            i.process(f, FrameMeta::new(0, iface, now))
        };
        // The one context goes to a first session to 8080 (pending on its app).
        assert_eq!(send(&mut i, OUT, &tcp(EVIL_MAC, EVIL, 40001, WEB, 8080, 1, SYN, b"")), Verdict::Forward);
        // The second one's verdict needs the app and nothing can inspect it.
        let v = send(&mut i, OUT, &tcp(EVIL_MAC, EVIL, 40002, WEB, 8080, 1, SYN, b""));
        assert_eq!(dropped(v), want_drop, "{mode}");
        let v = send(&mut i, OUT, &tcp(EVIL_MAC, EVIL, 40002, WEB, 8080, 2, ACK | PSH, b"SET k v\r\n"));
        assert_eq!(dropped(v), want_drop, "{mode}");
        assert_eq!(i.stats.exceptions[ExceptionReason::AppPoolFull as usize], 1, "{mode}");
        // A session the L3/L4 policy allows outright does not need the app: it passes.
        let v = send(&mut i, IN, &tcp(WEB_MAC, WEB, 40003, EVIL, 443, 1, SYN, b""));
        assert_eq!(v, Verdict::Forward, "{mode}");
    }
}

#[test]
fn stream_cap_before_detection_is_an_exception() {
    let engine = EngineConfig { stream_session_cap: 64, ..EngineConfig::default() };
    let mut i = inspector("protect", engine);
    let mut now = 0;
    let mut send = |i: &mut Inspector, f: &[u8]| {
        now += 1000;
        // Web's frames come from its side of the pair.
        let iface = if f[6..12] == WEB_MAC { IN } else { OUT };
        i.process(f, FrameMeta::new(0, iface, now))
    };
    assert_eq!(send(&mut i, &tcp(EVIL_MAC, EVIL, 40001, WEB, 8080, 1, SYN, b"")), Verdict::Forward);
    assert_eq!(send(&mut i, &tcpa(WEB_MAC, WEB, 8080, EVIL, 40001, 900, 2, SYN | ACK, b"")), Verdict::Forward);
    // An HTTP-looking line that never ends keeps detection waiting past the cap.
    let long = [b"GET /".as_slice(), &[b'a'; 40]].concat();
    assert_eq!(send(&mut i, &tcpa(EVIL_MAC, EVIL, 40001, WEB, 8080, 2, 901, ACK | PSH, &long)), Verdict::Forward);
    let v = send(&mut i, &tcpa(EVIL_MAC, EVIL, 40001, WEB, 8080, 2 + long.len() as u32, 901, ACK | PSH, &[b'b'; 40]));
    assert_eq!(v, Verdict::Reset, "forwarded before, so reset at both ends");
    assert!(dropped(send(&mut i, &tcpa(EVIL_MAC, EVIL, 40001, WEB, 8080, 200, 901, ACK | PSH, b"x"))));
    let rec = crate::record::to_record(&i.snapshot(1)[0], |_| String::new());
    assert_eq!(rec.inspection_reason.as_deref(), Some("stream_session_cap"));
    assert_eq!(rec.exception_action.as_deref(), Some("drop_flow"));
    assert_eq!((rec.packets_dropped_to_server, rec.packets_dropped_to_client), (2, 0));
}

#[test]
fn without_interfaces_a_workloads_macs_still_say_which_frames_are_its() {
    // As in `warden replay`: no pair registered; web sends only from WEB_MAC.
    let text = r#"
[[workload]]
id = "web"
ips = ["198.18.0.2"]
macs = ["02:00:00:00:00:02"]
mode = "MODE"

[[rule]]
id = 1
from = "web"
to = "any"
ip_proto = "tcp"
ports = ["443"]
action = "allow"
"#;
    for (mode, protect) in [("protect", true), ("alert", false)] {
        let p = CompiledPolicy::compile(&Policy::from_toml(&text.replace("MODE", mode)).unwrap()).unwrap();
        let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
        i.set_policy(Arc::new(p), 1);
        let mut now = 0;
        let mut send = |i: &mut Inspector, f: &[u8]| {
            now += 1000;
            i.process(f, FrameMeta::new(0, 0, now))
        };
        // A SYN claiming web's address from the attacker's MAC would open "web's HTTPS
        // connection" that the attacker's own handshake to port 22 then rides.
        let v = send(&mut i, &tcp(EVIL_MAC, WEB, 22, EVIL, 443, 1, SYN, b""));
        if protect {
            assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
            assert_eq!(i.sessions.len(), 0, "a spoofed frame created a session");
            assert!(dropped(send(&mut i, &tcp(EVIL_MAC, EVIL, 443, WEB, 22, 9, SYN, b""))), "the attacker's own SYN");
        } else {
            assert_eq!(v, Verdict::Forward);
        }
        assert_eq!(i.sessions.len(), usize::from(protect), "{mode}: the spoofed frame opened a session");
        assert_eq!(i.stats.spoofed, 1, "{mode}");
        // Control: web's own connection, from its MAC.
        assert_eq!(send(&mut i, &tcp(WEB_MAC, WEB, 40000, EVIL, 443, 100, SYN, b"")), Verdict::Forward);
        assert_eq!(send(&mut i, &tcpa(EVIL_MAC, EVIL, 443, WEB, 40000, 700, 101, SYN | ACK, b"")), Verdict::Forward);
        // Bytes injected into it with web's address from another MAC ride nothing.
        let v = send(&mut i, &tcpa(EVIL_MAC, WEB, 40000, EVIL, 443, 101, 701, ACK | PSH, b"injected"));
        assert_eq!(v == Verdict::Drop(DropReason::Spoofed), protect, "{mode}");
        assert_eq!(i.stats.spoofed, 2, "{mode}");
    }
}

/// Records of every session, with their snapshot.
fn records(r: &mut Run) -> Vec<warden_control::ConnectionRecord> {
    r.snaps().iter().map(|s| crate::record::to_record(s, |_| String::new())).collect()
}

#[test]
fn alert_mode_inspects_a_midstream_session_and_labels_it() {
    let mut r = Run::new("alert");
    // Picked up inside a response body from web:8080, then the client's next request: HTTP,
    // the request checked for SQL injection like any other.
    let body = vec![b'z'; 700];
    assert_eq!(r.send(IN, &tcpa(WEB_MAC, WEB, 8080, EVIL, 40001, 5000, 9000, ACK | PSH, &body)), Verdict::Forward);
    let req = b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: web\r\n\r\n";
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 40001, WEB, 8080, 9000, 5700, ACK | PSH, req)), Verdict::Forward);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(r.send(IN, &tcpa(WEB_MAC, WEB, 8080, EVIL, 40001, 5700, 9000 + req.len() as u32, ACK | PSH, resp)), Verdict::Forward);
    let rec = &records(&mut r)[0];
    assert_eq!((rec.app.as_str(), rec.midstream, rec.client_ip.as_str()), ("http", true, "198.18.1.9"));
    assert_eq!((rec.verdict.as_deref(), rec.rule_id), (Some("allowed"), Some(2)), "the apps rule decided: {rec:?}");
    assert_eq!(rec.exception_action.as_deref(), Some("pass_flow"));
    assert!(matches!(rec.inspection.as_deref(), Some("active" | "done")), "{rec:?}");
    assert_eq!(rec.inspection_reason, None);
    let l7 = rec.l7.as_ref().unwrap();
    assert_eq!((l7["path"].as_str(), l7["status"].as_u64()), (Some("/item?id=1%27%20OR%20%271%27%3D%271"), Some(200)), "{l7:?}");
    assert!(rec.threats.iter().any(|t| t.id == "sql_injection"), "{:?}", rec.threats);
    // Control: the same frames in protect mode are dropped uninspected (drop_flow).
    let mut r = Run::new("protect");
    assert!(dropped(r.send(IN, &tcpa(WEB_MAC, WEB, 8080, EVIL, 40001, 5000, 9000, ACK | PSH, &body))));
    assert!(dropped(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 40001, WEB, 8080, 9000, 5700, ACK | PSH, req))));
    let rec = &records(&mut r)[0];
    assert_eq!((rec.app.as_str(), rec.midstream, rec.verdict.as_deref()), ("unknown", true, Some("denied")));
    assert_eq!((rec.inspection.as_deref(), rec.inspection_reason.as_deref()), (Some("bypassed"), Some("midstream")));
    assert!(rec.threats.is_empty());
}

#[test]
fn a_response_fixes_which_end_is_the_server_once() {
    // web:100 talks to evil:443. Mid-stream, the higher port (evil's) is taken for the client:
    // "ingress to web:100", which no rule allows. Evil's status line says evil is the server:
    // web's own HTTPS-port connection, allowed by rule 1.
    let mut r = Run::new("alert");
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n";
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 100, 1, 1, ACK | PSH, resp)), Verdict::Forward);
    let rec = &records(&mut r)[0];
    assert_eq!((rec.client_ip.as_str(), rec.client_port, rec.server_port), ("198.18.0.2", 100, 443), "{rec:?}");
    assert_eq!((rec.app.as_str(), rec.verdict.as_deref(), rec.rule_id), ("http", Some("allowed"), Some(1)));
    assert_eq!((rec.packets_to_client, rec.packets_to_server), (1, 0), "the counters follow the ends");
    assert_eq!(r.i.stats.midstream_flips, 1);
    // Once: a request from evil afterwards does not swap them back.
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 100, 1 + resp.len() as u32 + 4000, 1, ACK | PSH, req));
    assert_eq!(r.i.stats.midstream_flips, 1);
    assert_eq!(records(&mut r)[0].client_ip, "198.18.0.2");
    // web's frames still arrive from web's side: not spoofed after the swap.
    assert_eq!(r.send(IN, &tcpa(WEB_MAC, WEB, 100, EVIL, 443, 1, 100, ACK, b"")), Verdict::Forward);
    assert_eq!(r.i.stats.spoofed, 0);
    // Protect mode: the same first frame is dropped, the guess stands, nothing is inspected.
    let mut r = Run::new("protect");
    assert!(dropped(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 443, WEB, 100, 1, 1, ACK | PSH, resp))));
    let rec = &records(&mut r)[0];
    assert_eq!((rec.client_ip.as_str(), rec.app.as_str()), ("198.18.1.9", "unknown"));
    assert_eq!(r.i.stats.midstream_flips, 0);
}

#[test]
fn protect_with_pass_flow_decides_midstream_sessions_by_their_detected_app() {
    // Configured to pass mid-stream sessions in protect mode: the apps rule still holds for
    // those whose app is found; one whose app stays unknown is passed as configured.
    let pass = || {
        let mut r = Run::new("protect");
        r.i.set_exceptions(ExceptionPolicy { midstream: PerMode::all(ExceptionAction::PassFlow), ..Default::default() });
        r
    };
    // TLS records to web:8080 (only HTTP allowed): denied once they prove TLS.
    let mut r = pass();
    let mut seq = 1;
    let mut verdicts = Vec::new();
    for _ in 0..4 {
        let mut rec = vec![23, 3, 3, 0, 200];
        rec.extend((0..200u32).map(|k| (k * 7919 % 251) as u8));
        verdicts.push(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 40002, WEB, 8080, seq, 1, ACK | PSH, &rec)));
        seq += rec.len() as u32;
    }
    assert_eq!(verdicts[..2], [Verdict::Forward, Verdict::Forward], "undecided: passed");
    assert!(dropped(verdicts[2]) && dropped(verdicts[3]), "{verdicts:?}");
    let rec = &records(&mut r)[0];
    assert_eq!((rec.app.as_str(), rec.verdict.as_deref(), rec.midstream), ("tls", Some("denied"), true));
    // HTTP to web:8080: allowed.
    let mut r = pass();
    let req = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n";
    assert_eq!(r.send(OUT, &tcpa(EVIL_MAC, EVIL, 40003, WEB, 8080, 1, 1, ACK | PSH, req)), Verdict::Forward);
    let rec = &records(&mut r)[0];
    assert_eq!((rec.app.as_str(), rec.verdict.as_deref()), ("http", Some("allowed")));
    // Bytes no framing recognises: unknown, passed as the exception says.
    let mut r = pass();
    for k in 0..3u32 {
        let v = r.send(OUT, &tcpa(EVIL_MAC, EVIL, 40004, WEB, 8080, 1 + k * 9, 1, ACK | PSH, b"\x01\x02SET k\n"));
        assert_eq!(v, Verdict::Forward);
    }
    let rec = &records(&mut r)[0];
    assert_eq!((rec.app.as_str(), rec.exception_action.as_deref()), ("unknown", Some("pass_flow")));
}
