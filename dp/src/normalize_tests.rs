//! TCP normalisation through the whole [`Inspector`]: each insertion or evasion form of the
//! issue, on crafted frames, with what a Linux receiver reads as the truth; each with its
//! control (the same bytes sent the honest way).

use std::sync::Arc;

use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::normalize::{Normalization, UrgentPolicy};
use crate::policy::{CompiledPolicy, Policy};
use crate::session::Timeouts;
use crate::wire::tcpflag::*;
use warden_control::ConnectionRecord;

const CLIENT_ISN: u32 = 1000;
const SERVER_ISN: u32 = 5000;

/// One TCP session 198.18.0.1:40000 -> 198.18.0.2:80 (the workload `srv`, in `mode`, when
/// given) through an inspector; client frames arrive on interface 1, server frames on 2.
struct Conn {
    i: Inspector,
    n: u64,
}

/// A TCP frame of the session: from the client (`to_server`) or the server.
#[allow(clippy::too_many_arguments)]
fn frame(to_server: bool, flags: u8, seq: u32, ack: u32, window: u16, urgent: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = crate::wire::tests::tcp4(&[], flags, payload);
    let (mut src, mut dst) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let (mut sport, mut dport) = (40000u16, 80u16);
    if !to_server {
        std::mem::swap(&mut src, &mut dst);
        std::mem::swap(&mut sport, &mut dport);
    }
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[48..50].copy_from_slice(&window.to_be_bytes());
    f[52..54].copy_from_slice(&urgent.to_be_bytes());
    crate::wire::tests::fix_checksums(&mut f);
    f
}

impl Conn {
    fn new(mode: Option<&str>, norm: Normalization) -> Conn {
        let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
        if let Some(mode) = mode {
            let text = format!(
                "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"{mode}\"\n\
                 [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n"
            );
            let p = CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap();
            i.set_policy(Arc::new(p), 1);
        }
        i.set_normalization(norm);
        Conn { i, n: 0 }
    }

    /// A session past its handshake; the server advertises `window` bytes (no scaling).
    fn open(mode: Option<&str>, window: u16) -> Conn {
        let mut c = Conn::new(mode, Normalization::default());
        assert_eq!(c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, b"")), Verdict::Forward);
        assert_eq!(c.send(&frame(false, SYN | ACK, SERVER_ISN, CLIENT_ISN + 1, window, 0, b"")), Verdict::Forward);
        assert_eq!(c.send(&frame(true, ACK, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 0, b"")), Verdict::Forward);
        c
    }

    fn send(&mut self, f: &[u8]) -> Verdict {
        self.n += 1;
        let to_server = f[26..30] == [198, 18, 0, 1];
        self.i.process(f, FrameMeta::new(0, if to_server { 1 } else { 2 }, self.n * 1000))
    }

    /// Client data at `seq` (acknowledging the server's SYN).
    fn data(&mut self, seq: u32, payload: &[u8]) -> Verdict {
        self.send(&frame(true, ACK | PSH, seq, SERVER_ISN + 1, 64240, 0, payload))
    }

    /// The server acknowledges the client's bytes up to `ack`, advertising `window`.
    fn ack(&mut self, ack: u32, window: u16) -> Verdict {
        self.send(&frame(false, ACK, SERVER_ISN + 1, ack, window, 0, b""))
    }

    fn record(&mut self) -> ConnectionRecord {
        let v = self.i.snapshot(4);
        assert_eq!(v.len(), 1, "one session");
        crate::record::to_record(&v[0], |_| String::new())
    }
}

fn path(r: &ConnectionRecord) -> Option<String> {
    r.l7.as_ref()?.get("path")?.as_str().map(String::from)
}

fn sqli(r: &ConnectionRecord) -> bool {
    r.threats.iter().any(|t| t.id == "sql_injection")
}

const EVIL: &[u8] = b"GET /item?id=1'%20OR%20'1'='1 HTTP/1.1\r\nHost: a\r\n\r\n";
const BENIGN: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";

/// The verdict for the frame that completes [`EVIL`] in `mode`: read, so reset in protect
/// mode (`sql_injection`'s default action), forwarded otherwise.
fn evil_verdict(mode: Option<&str>) -> Verdict {
    if mode == Some("protect") {
        Verdict::Reset
    } else {
        Verdict::Forward
    }
}

/// Pads the benign decoy to the length of the real request, so both cover the same bytes.
fn decoy() -> Vec<u8> {
    let mut d = BENIGN.to_vec();
    d.truncate(BENIGN.len() - 4);
    d.resize(EVIL.len() - 4, b'x');
    d.extend_from_slice(b"\r\n\r\n");
    d
}

#[test]
fn a_decoy_with_a_bad_checksum_is_never_read() {
    for mode in [None, Some("alert"), Some("protect")] {
        let mut c = Conn::open(mode, 65535);
        let mut bad = frame(true, ACK | PSH, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 0, &decoy());
        bad[50] ^= 0x55; // the TCP checksum
        let v = c.send(&bad);
        let protect = mode == Some("protect");
        assert_eq!(v == Verdict::Drop(DropReason::Normalization), protect, "{mode:?}");
        // The injection is read: protect mode resets the session (`sql_injection`'s action).
        assert_eq!(c.data(CLIENT_ISN + 1, EVIL), evil_verdict(mode));
        let r = c.record();
        assert_eq!(path(&r).as_deref(), Some("/item?id=1'%20OR%20'1'='1"), "{mode:?}");
        assert!(sqli(&r), "{mode:?}");
        assert_eq!(r.anomalies, ["bad_checksum"]);
        assert_eq!(r.tcp_overlap_conflicts, None, "the decoy was never read, so nothing conflicts");
        assert_eq!(c.i.stats.anomalies[crate::normalize::Anomaly::BadChecksum as usize], 1);
    }
    // Control: the same decoy with its checksum right is what the host reads (and Warden too).
    let mut c = Conn::open(None, 65535);
    c.data(CLIENT_ISN + 1, &decoy());
    assert_eq!(path(&c.record()).as_deref(), Some("/index.html"));
}

#[test]
fn a_bad_ipv4_header_checksum_is_never_read() {
    let mut c = Conn::open(Some("protect"), 65535);
    let mut bad = frame(true, ACK | PSH, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 0, &decoy());
    bad[24] ^= 1;
    assert_eq!(c.send(&bad), Verdict::Drop(DropReason::Normalization));
    c.data(CLIENT_ISN + 1, EVIL);
    assert!(sqli(&c.record()));
}

#[test]
fn decoys_the_receiver_drops_for_their_sequence_or_flags_are_never_read() {
    // Each decoy precedes the real request at the same sequence number.
    let decoys: [(&str, Vec<u8>); 3] = [
        ("tcp_no_ack", frame(true, PSH, CLIENT_ISN + 1, 0, 64240, 0, &decoy())),
        ("tcp_ack_unsent", frame(true, ACK | PSH, CLIENT_ISN + 1, SERVER_ISN + 100_000, 64240, 0, &decoy())),
        ("tcp_rst_out_of_window", frame(true, RST | ACK, CLIENT_ISN + 1 + 70_000, SERVER_ISN + 1, 0, 0, &decoy())),
    ];
    for (anomaly, d) in decoys {
        for mode in [Some("alert"), Some("protect")] {
            let mut c = Conn::open(mode, 65535);
            let v = c.send(&d);
            assert_eq!(v == Verdict::Drop(DropReason::Normalization), mode == Some("protect"), "{anomaly} {mode:?}");
            assert_eq!(c.data(CLIENT_ISN + 1, EVIL), evil_verdict(mode), "{anomaly} {mode:?}");
            let r = c.record();
            assert!(sqli(&r), "{anomaly} {mode:?}: {r:?}");
            assert_eq!(r.anomalies, [anomaly]);
            assert_eq!(r.state, "established", "{anomaly}: the session goes on");
        }
    }
}

#[test]
fn data_past_the_advertised_window_is_never_read() {
    // The server advertises 20 bytes: the decoy fills the bytes after them, the host drops it.
    let mut c = Conn::open(Some("alert"), 20);
    let (head, tail) = EVIL.split_at(20);
    let mut fake_tail = decoy()[20..].to_vec();
    fake_tail[0] = b'Z';
    c.send(&frame(true, ACK | PSH, CLIENT_ISN + 21, SERVER_ISN + 1, 64240, 0, &fake_tail));
    c.data(CLIENT_ISN + 1, head);
    // The server reads the 20 bytes, opens its window; the real tail comes.
    c.ack(CLIENT_ISN + 21, 65535);
    c.data(CLIENT_ISN + 21, tail);
    let r = c.record();
    assert!(sqli(&r), "{r:?}");
    assert_eq!(r.anomalies, ["tcp_out_of_window"]);
    // Control: the same tail inside the window is read (first copy wins, then conflicts).
    let mut c = Conn::open(Some("alert"), 65535);
    c.send(&frame(true, ACK | PSH, CLIENT_ISN + 21, SERVER_ISN + 1, 64240, 0, &fake_tail));
    c.data(CLIENT_ISN + 1, head);
    c.data(CLIENT_ISN + 21, tail);
    assert!(!sqli(&c.record()));
}

#[test]
fn an_in_window_rst_that_the_host_ignores_does_not_end_inspection() {
    let mut c = Conn::open(Some("protect"), 65535);
    let one = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    c.data(CLIENT_ISN + 1, one);
    let sent = CLIENT_ISN + 1 + one.len() as u32;
    // A RST inside what the client sent but not at the server's RCV.NXT: the server answers
    // with a challenge ACK and keeps the connection (RFC 5961 §3.2). Warden believes it for
    // now (the exact RST looks the same from the middle)...
    c.send(&frame(true, RST | ACK, sent - 5, SERVER_ISN + 1, 0, 0, b""));
    assert_eq!(c.record().state, "reset");
    // ...until the connection carries on: same session, same app state.
    c.send(&frame(false, ACK | PSH, SERVER_ISN + 1, sent, 65535, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(c.data(sent, EVIL), evil_verdict(Some("protect")));
    let r = c.record();
    assert_eq!(r.state, "established");
    assert_eq!(r.app, "http");
    assert!(sqli(&r), "the second request is still inspected: {r:?}");
    assert_eq!(c.i.sessions.len(), 1);
}

#[test]
fn retransmissions_that_differ_from_inspected_bytes_are_dropped_in_protect() {
    for mode in ["alert", "protect"] {
        let mut c = Conn::open(Some(mode), 65535);
        let first = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        c.data(CLIENT_ISN + 1, first);
        // Parsed already (the request is complete), not yet acknowledged: a copy with two
        // different bytes is a conflict, counted in bytes.
        let mut other = first.to_vec();
        other[5] = b'b';
        other[18] = b'B';
        let v = c.data(CLIENT_ISN + 1, &other);
        assert_eq!(v == Verdict::Drop(DropReason::Normalization), mode == "protect", "{mode}");
        // The identical retransmission is fine.
        assert_eq!(c.data(CLIENT_ISN + 1, first), Verdict::Forward);
        let r = c.record();
        assert_eq!(r.tcp_overlap_conflicts, Some(2), "{mode}");
        assert_eq!(r.anomalies, ["tcp_conflict"]);
        assert_eq!(path(&r).as_deref(), Some("/a"), "the first copy counts");
        // Once acknowledged, a differing copy is the receiver's to drop: not compared.
        c.ack(CLIENT_ISN + 1 + first.len() as u32, 65535);
        assert_eq!(c.data(CLIENT_ISN + 1, &other), Verdict::Forward);
        assert_eq!(c.record().tcp_overlap_conflicts, Some(2));
        assert_eq!(c.i.engine.kept(), 0, "acknowledged bytes are let go");
    }
}

#[test]
fn syn_data_is_read_at_isn_plus_one_and_again_when_the_server_ignores_it() {
    // The server takes the SYN data (TCP Fast Open): its SYN|ACK acknowledges it.
    let mut c = Conn::new(None, Normalization::default());
    c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, EVIL));
    let after = CLIENT_ISN + 1 + EVIL.len() as u32;
    c.send(&frame(false, SYN | ACK, SERVER_ISN, after, 65535, 0, b""));
    c.send(&frame(true, ACK, after, SERVER_ISN + 1, 64240, 0, b""));
    let r = c.record();
    assert_eq!(r.app, "http", "not one byte off");
    assert_eq!(path(&r).as_deref(), Some("/item?id=1'%20OR%20'1'='1"));
    assert!(sqli(&r));
    assert_eq!(c.i.stats.syn_data_resyncs, 0);
    // The server ignores the SYN data: the client sends its bytes again at ISN + 1, maybe
    // others; those are what the server reads.
    let mut c = Conn::new(None, Normalization::default());
    c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, &decoy()));
    c.send(&frame(false, SYN | ACK, SERVER_ISN, CLIENT_ISN + 1, 65535, 0, b""));
    c.send(&frame(true, ACK, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 0, b""));
    c.data(CLIENT_ISN + 1, EVIL);
    let r = c.record();
    assert_eq!(path(&r).as_deref(), Some("/item?id=1'%20OR%20'1'='1"));
    assert!(sqli(&r));
    assert_eq!(r.tcp_overlap_conflicts, None, "a new start, not a conflict");
    assert_eq!(c.i.stats.syn_data_resyncs, 1);
}

#[test]
fn urgent_data_is_out_of_band_as_linux_reads_it() {
    let req = b"GET /malicXious HTTP/1.1\r\nHost: a\r\n\r\n";
    // The urgent pointer points past the X (offset 10): pointer 11.
    for (policy, want) in [(UrgentPolicy::Oob, "/malicious"), (UrgentPolicy::Inline, "/malicXious")] {
        let mut c = Conn::new(None, Normalization { urgent: policy, ..Normalization::default() });
        c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, b""));
        c.send(&frame(false, SYN | ACK, SERVER_ISN, CLIENT_ISN + 1, 65535, 0, b""));
        c.send(&frame(true, ACK | PSH | URG, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 11, req));
        let r = c.record();
        assert_eq!(path(&r).as_deref(), Some(want), "{policy:?}");
        assert_eq!(r.tcp_urgent_bytes, (policy == UrgentPolicy::Oob).then_some(1));
    }
    // The urgent byte in a later segment than the mark; an older mark is ignored.
    let mut c = Conn::open(None, 65535);
    c.send(&frame(true, ACK | URG, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 11, b"GET /malic"));
    c.data(CLIENT_ISN + 11, b"Xious HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(path(&c.record()).as_deref(), Some("/malicious"));
}

#[test]
fn a_syn_inside_an_established_connection_changes_nothing() {
    let mut c = Conn::open(Some("protect"), 65535);
    // Forwarded (the server answers it with a challenge ACK, RFC 5961 §4.2), never read.
    let v = c.send(&frame(true, SYN, 777_777, 0, 64240, 0, b""));
    assert_eq!(v, Verdict::Forward);
    c.data(CLIENT_ISN + 1, EVIL);
    let r = c.record();
    assert!(sqli(&r));
    assert_eq!(r.anomalies, ["tcp_syn_established"]);
    // The handshake's own SYN, retransmitted, is no anomaly.
    let mut c = Conn::open(Some("protect"), 65535);
    assert_eq!(c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, b"")), Verdict::Forward);
    assert!(c.record().anomalies.is_empty());
}

#[test]
fn invalid_forward_lets_protect_mode_pass_what_it_does_not_read() {
    let mut c = Conn::open(Some("protect"), 65535);
    c.i.set_normalization(Normalization { invalid: crate::normalize::InvalidAction::Forward, ..Normalization::default() });
    assert_eq!(c.send(&frame(true, PSH, CLIENT_ISN + 1, 0, 64240, 0, &decoy())), Verdict::Forward);
    c.data(CLIENT_ISN + 1, EVIL);
    assert!(sqli(&c.record()));
}

#[test]
fn a_blind_ack_does_not_complete_a_handshake() {
    // A SYN sent in someone's name, the server's SYN|ACK going to them: the sender cannot see
    // the server's ISN, so its ACK acknowledges something the server never sent.
    let mut c = Conn::new(Some("protect"), Normalization::default());
    c.send(&frame(true, SYN, CLIENT_ISN, 0, 64240, 0, b""));
    c.send(&frame(false, SYN | ACK, SERVER_ISN, CLIENT_ISN + 1, 65535, 0, b""));
    let v = c.send(&frame(true, ACK, CLIENT_ISN + 1, SERVER_ISN + 77_777, 64240, 0, b""));
    assert_eq!(v, Verdict::Drop(DropReason::Normalization));
    let r = c.record();
    assert_eq!(r.state, "syn_received");
    assert_eq!(r.anomalies, ["tcp_ack_unsent"]);
    // The real client's ACK completes it.
    c.send(&frame(true, ACK, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 0, b""));
    assert_eq!(c.record().state, "established");
}

#[test]
fn a_rst_the_host_answers_with_a_challenge_ack_is_forwarded_and_changes_nothing() {
    let mut c = Conn::open(Some("protect"), 65535);
    let one = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    c.data(CLIENT_ISN + 1, one);
    let sent = CLIENT_ISN + 1 + one.len() as u32;
    // Inside the server's window, past what the client sent: never exact.
    assert_eq!(c.send(&frame(true, RST | ACK, sent + 5, SERVER_ISN + 1, 0, 0, b"")), Verdict::Forward);
    let r = c.record();
    assert_eq!(r.state, "established");
    assert_eq!(r.anomalies, ["tcp_rst_challenged"]);
    c.data(sent, EVIL);
    assert!(sqli(&c.record()));
}

#[test]
fn a_second_urgent_mark_is_not_read_in_protect_and_flagged_in_alert() {
    // Linux moves its mark when a second one comes: whether the first urgent byte is read
    // in band depends on when the application read it.
    for mode in ["alert", "protect"] {
        let mut c = Conn::open(Some(mode), 65535);
        let first = b"GET /item?id=1%20UNION%20SELEC";
        c.send(&frame(true, ACK | URG, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, first.len() as u16, first));
        let rest = b"T%20password HTTP/1.1\r\nX-Pad: aZb\r\n\r\n";
        let at = first.len() as u32;
        let v = c.send(&frame(true, ACK | PSH | URG, CLIENT_ISN + 1 + at, SERVER_ISN + 1, 64240, 32, rest));
        assert_eq!(v == Verdict::Drop(DropReason::Normalization), mode == "protect", "{mode}");
        assert_eq!(c.record().anomalies, ["tcp_urgent_ambiguous"], "{mode}");
    }
    // One mark is not ambiguous.
    let mut c = Conn::open(Some("protect"), 65535);
    let v = c.send(&frame(true, ACK | PSH | URG, CLIENT_ISN + 1, SERVER_ISN + 1, 64240, 11, b"GET /malicXious HTTP/1.1\r\n\r\n"));
    assert_eq!(v, Verdict::Forward);
    assert!(c.record().anomalies.is_empty());
}
