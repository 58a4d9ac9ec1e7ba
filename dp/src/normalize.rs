//! TCP normalisation: Warden reads only the segments the receiving host accepts.
//!
//! An inline engine that parses a byte the host drops, or skips one the host keeps, can be
//! walked around (*insertion* and *evasion*, Ptacek & Newsham 1998). This stage judges every
//! TCP segment of a known session against what Warden knows of the connection
//! ([`crate::tcpseq::TcpSeq`]) before the segment may move session state or reach the
//! streams and parsers, following what a Linux receiver does:
//!
//! | check | host behaviour followed | [`Anomaly`] |
//! |---|---|---|
//! | IPv4 header / TCP / UDP / ICMP checksum | dropped ([`crate::checksum`]) | `bad_checksum` |
//! | no ACK flag on a segment other than SYN or RST | dropped (RFC 9293 §3.10.7.4, fifth check) | `tcp_no_ack` |
//! | ACK of bytes the other end never sent, or older than its send window allows | dropped (RFC 9293 §3.10.7.4; RFC 5961 §5.2) | `tcp_ack_unsent` |
//! | data starting at or past the receiver's advertised window edge | dropped (RFC 9293 §3.10.7.4 first check; Linux `tcp_data_queue` "out of window") | `tcp_out_of_window` |
//! | RST outside the receiver's window | dropped silently (RFC 5961 §3.2) | `tcp_rst_out_of_window` |
//! | RST in the receiver's window but past what its sender sent (never exact) | challenge ACK, no reset (RFC 5961 §3.2) | `tcp_rst_challenged` (always forwarded) |
//! | SYN on a synchronized connection (not a retransmission of its handshake) | challenge ACK, no reset (RFC 5961 §4.2) | `tcp_syn_established` (always forwarded) |
//! | a second urgent mark (the first urgent byte's fate depends on when the application reads) | — | `tcp_urgent_ambiguous` (read as Linux most likely does in alert) |
//! | retransmitted bytes that differ from what Warden already inspected | the first copy counts (Linux keeps what it queued) | `tcp_conflict` |
//!
//! Segments entirely before what the receiver acknowledged (old retransmissions, keepalives)
//! are forwarded but never fed: the host drops their bytes too, and the duplicate ACK it
//! answers with is what repairs a lost ACK, so they are not anomalies.
//!
//! A segment with an anomaly is counted (per reason and on its session), never fed to state,
//! streams or parsers, and forwarded unchanged — or, when the session (or, for a frame with a
//! bad checksum, the strictest workload end) is in protect mode, dropped unless
//! `[normalization] invalid = "forward"`. RSTs and SYNs that the receiver answers with a
//! challenge ACK are always forwarded ([`Anomaly::host_answers`]): that answer is the host's
//! business. A RST that may be exact (inside what its sender sent and did not have
//! acknowledged) is accepted: the session is `reset` until data flows again. Dropping in protect is the safe side: what Warden did
//! not read never reaches the workload, and the host would have dropped it anyway.
//!
//! Where Warden cannot know the receiver's exact state (its `RCV.NXT` lies somewhere in what
//! was sent and not yet acknowledged) the checks err towards acceptance, and the conflict check
//! in [`crate::stream`] is the backstop: a decoy Warden read and the host dropped only matters
//! when the real bytes follow at the same sequence numbers, and those are compared with what
//! was inspected (kept until acknowledged, bounded per stream and per core).
//!
//! Sessions picked up mid-stream skip the ACK check (bytes sent before Warden saw the session
//! may be acknowledged) and the window check until the receiver's window is known. So do
//! sessions back from the XDP fast path whose sequence state had to be forgotten
//! ([`TcpSeq::resync_all`]: inspection was over, both directions went unseen), until both
//! windows are known again; a session whose one direction was forwarded only within a known
//! sequence range keeps its state, widened to what that range allows
//! ([`TcpSeq::resync_sent`], [`TcpSeq::resync_quiet`]). Segments the kernel would have
//! forwarded that reach Warden while the session is on the fast path (queued before its
//! entry) are not judged ([`crate::fastpath`]).
//!
//! Urgent data ([`UrgentPolicy`]): by default read as a Linux receiver does by default
//! (`SO_OOBINLINE` off, `tcp_stdurg` 0): the byte before the urgent pointer is taken out of
//! band, one byte per urgent mark, the latest mark winning (RFC 6093 §3, §4).

use serde::Deserialize;

use crate::session::Dir;
use crate::tcpseq::{Segment, TcpSeq};
use crate::wire::tcpflag;

/// Why a frame was not fed to session state, streams and parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// An IPv4 header, TCP, UDP or ICMP checksum failed ([`crate::checksum`]).
    BadChecksum = 0,
    /// A TCP segment other than SYN or RST without the ACK flag.
    TcpNoAck = 1,
    /// A TCP segment acknowledging bytes the other end never sent, or older than the other
    /// end's send window allows (RFC 5961 §5.2).
    TcpAckUnsent = 2,
    /// TCP data starting at or past the right edge of the receiver's advertised window.
    TcpOutOfWindow = 3,
    /// A TCP RST whose sequence number lies outside what its sender sent and did not have
    /// acknowledged.
    TcpRstOutOfWindow = 4,
    /// A SYN on a synchronized connection that is not a retransmission of its handshake.
    TcpSynEstablished = 5,
    /// Retransmitted TCP bytes that differ from the bytes Warden already inspected.
    TcpConflict = 6,
    /// A TCP RST inside the receiver's window but past what its sender sent, so never at the
    /// receiver's RCV.NXT: the receiver answers with a challenge ACK and keeps the connection
    /// (RFC 5961 §3.2). Forwarded, never read.
    TcpRstChallenged = 7,
    /// A second urgent mark: Linux moves its mark, and whether the earlier urgent byte is read
    /// in band or not depends on when the application reads, which nothing on the wire shows.
    TcpUrgentAmbiguous = 8,
}

impl Anomaly {
    /// Every anomaly, for counter arrays indexed by `anomaly as usize`.
    pub const ALL: [Anomaly; 9] = [
        Anomaly::BadChecksum,
        Anomaly::TcpNoAck,
        Anomaly::TcpAckUnsent,
        Anomaly::TcpOutOfWindow,
        Anomaly::TcpRstOutOfWindow,
        Anomaly::TcpSynEstablished,
        Anomaly::TcpConflict,
        Anomaly::TcpRstChallenged,
        Anomaly::TcpUrgentAmbiguous,
    ];

    /// Name used in counters and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::BadChecksum => "bad_checksum",
            Anomaly::TcpNoAck => "tcp_no_ack",
            Anomaly::TcpAckUnsent => "tcp_ack_unsent",
            Anomaly::TcpOutOfWindow => "tcp_out_of_window",
            Anomaly::TcpRstOutOfWindow => "tcp_rst_out_of_window",
            Anomaly::TcpSynEstablished => "tcp_syn_established",
            Anomaly::TcpConflict => "tcp_conflict",
            Anomaly::TcpRstChallenged => "tcp_rst_challenged",
            Anomaly::TcpUrgentAmbiguous => "tcp_urgent_ambiguous",
        }
    }

    /// This anomaly's bit in a session's anomaly set ([`names`]).
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Whether frames with this anomaly are forwarded even in protect mode: the receiver
    /// answers them (a challenge ACK, RFC 5961 §3.2, §4.2) and changes nothing else, so
    /// dropping them would only hide that answer.
    pub fn host_answers(self) -> bool {
        matches!(self, Anomaly::TcpRstChallenged | Anomaly::TcpSynEstablished)
    }
}

/// The names of the anomalies in bit set `bits` ([`Anomaly::bit`]), in [`Anomaly::ALL`] order.
pub fn names(bits: u16) -> impl Iterator<Item = &'static str> {
    Anomaly::ALL.into_iter().filter(move |a| bits & a.bit() != 0).map(Anomaly::as_str)
}

/// Whether checksums are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumPolicy {
    /// Verify every checksum (default for live traffic).
    #[default]
    Verify,
    /// Do not verify (traffic whose checksums a NIC fills in later, captures of it).
    Ignore,
    /// Decide from the traffic (`warden replay` default): the first [`AUTO_SAMPLE`]
    /// checksummed packets are not judged by their checksums; then checksums are verified
    /// if at most one in [`AUTO_BAD_SHARE`] of those failed, else ignored (captures taken on
    /// the sending host hold checksums its NIC filled in later; Suricata's
    /// `checksum-validation: auto` decides the same way). A capture that needs its decoys
    /// judged from the first packet on says `verify`.
    Auto,
}

/// Checksummed packets `auto` looks at before it decides.
pub const AUTO_SAMPLE: u32 = 64;
/// `auto` verifies when at most `1 / AUTO_BAD_SHARE` of its sample failed.
pub const AUTO_BAD_SHARE: u32 = 10;

/// What a protect-mode session's anomalous frames get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidAction {
    /// Drop them (default).
    #[default]
    Drop,
    /// Forward them unchanged (still never fed to inspection).
    Forward,
}

/// How urgent data is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UrgentPolicy {
    /// The urgent byte is out of band, as a Linux receiver reads it by default.
    #[default]
    Oob,
    /// The urgent byte stays in the stream (receivers with `SO_OOBINLINE`).
    Inline,
}

/// `[normalization]` settings of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Normalization {
    /// Checksum verification.
    pub checksums: ChecksumPolicy,
    /// Protect mode's action on anomalous frames.
    pub invalid: InvalidAction,
    /// Urgent data.
    pub urgent: UrgentPolicy,
}

/// The checksum verdict of one worker under a [`ChecksumPolicy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksums {
    policy: ChecksumPolicy,
    seen: u32,
    bad: u32,
}

impl Checksums {
    /// A verifier under `policy`.
    pub fn new(policy: ChecksumPolicy) -> Self {
        Checksums { policy, seen: 0, bad: 0 }
    }

    /// Whether checksums are computed at all for the next packet.
    #[inline]
    pub fn active(&self) -> bool {
        self.policy != ChecksumPolicy::Ignore
    }

    /// Accounts the result of one verified packet; true when a failure must be acted on.
    pub fn judge(&mut self, ok: bool) -> bool {
        match self.policy {
            ChecksumPolicy::Verify => !ok,
            ChecksumPolicy::Ignore => false,
            ChecksumPolicy::Auto => {
                self.seen += 1;
                self.bad += u32::from(!ok);
                if self.seen == AUTO_SAMPLE {
                    self.policy = if self.bad * AUTO_BAD_SHARE <= AUTO_SAMPLE {
                        ChecksumPolicy::Verify
                    } else {
                        ChecksumPolicy::Ignore
                    };
                }
                false
            }
        }
    }

    /// The policy in force (`auto` until it decided).
    pub fn policy(&self) -> ChecksumPolicy {
        self.policy
    }
}

/// Judges TCP segment `seg` sent in direction `dir` of a session whose sequence state is `t`
/// (before `seg` is accounted). `midstream`: the session was picked up without its handshake.
///
/// # Errors
/// The [`Anomaly`] that makes the receiver drop or ignore the segment.
pub fn judge(t: &TcpSeq, dir: Dir, seg: &Segment, midstream: bool) -> Result<(), Anomaly> {
    // State being re-learnt after the fast path forwarded segments unseen: judged as a
    // mid-stream pickup until both windows are known again ([`TcpSeq::resync_all`]).
    let midstream = midstream || t.lenient();
    let f = seg.flags;
    let (syn, ack, rst) = (f & tcpflag::SYN != 0, f & tcpflag::ACK != 0, f & tcpflag::RST != 0);
    let Some((una, next)) = t.range(dir) else {
        // The first segment of this direction: nothing to judge it against but the other
        // end's state (an ACK of what the other end sent).
        return match (ack, t.range(dir.flip())) {
            (true, Some((o_una, o_next))) if !midstream && !seq_within(seg.ack, o_una, o_next) => {
                // RFC 9293 §3.10.7.3 (SYN-SENT): a SYN|ACK or RST|ACK must acknowledge the SYN.
                Err(if rst { Anomaly::TcpRstOutOfWindow } else { Anomaly::TcpAckUnsent })
            }
            (false, Some(_)) if !syn && !rst => Err(Anomaly::TcpNoAck),
            _ => Ok(()),
        };
    };
    if syn {
        // A retransmitted SYN (or SYN|ACK) carries the same ISN: `una` is still the ISN, or
        // ISN + 1 once the SYN was acknowledged.
        if seg.seq == una || seg.seq.wrapping_add(1) == una || t.closing() {
            return Ok(());
        }
        return Err(Anomaly::TcpSynEstablished);
    }
    if rst {
        // RFC 5961 §3.2: a RST resets only when it is in the window; what the sender sent and
        // did not have acknowledged is where the receiver's RCV.NXT lies. A RST answering a
        // SYN (SYN-SENT: no sequence state of the server yet) is judged by its ACK instead.
        if seq_within(seg.seq, una, next) {
            return Ok(());
        }
        let in_window = t.window_edge(dir).is_some_and(|edge| seq_within(seg.seq, una, edge) && seg.seq != edge);
        return Err(if in_window { Anomaly::TcpRstChallenged } else { Anomaly::TcpRstOutOfWindow });
    }
    if !ack {
        return Err(Anomaly::TcpNoAck);
    }
    match t.range(dir.flip()) {
        // RFC 9293 §3.10.7.4: an ACK of something not yet sent is dropped. Old ACKs (before
        // what was acknowledged) are duplicates and fine.
        Some((o_una, o_next)) if !midstream && after(seg.ack, o_next) && !seq_within(seg.ack, o_una, o_next) => {
            return Err(Anomaly::TcpAckUnsent);
        }
        // RFC 5961 §5.2 (Linux `tcp_ack`): an ACK older than what the other end had
        // acknowledged minus the largest window it was ever offered is dropped too.
        Some((o_una, _))
            if !midstream
                && t.max_window(dir.flip()) > 0
                && before(seg.ack, o_una.wrapping_sub(t.max_window(dir.flip()))) =>
        {
            return Err(Anomaly::TcpAckUnsent);
        }
        None if !midstream => return Err(Anomaly::TcpAckUnsent),
        _ => {}
    }
    if seg.len > 0 {
        if let Some(edge) = t.window_edge(dir) {
            // Linux drops data that starts at or past RCV.NXT + window; a one-byte zero-window
            // probe sits exactly at the edge and is answered, so it is let through (its byte,
            // if Warden reads it and the host does not, is checked when the real one comes).
            let probe = seg.len == 1 && seg.seq == edge;
            if !before(seg.seq, edge) && !probe {
                return Err(Anomaly::TcpOutOfWindow);
            }
        }
    }
    Ok(())
}

/// `a` comes after `b` in sequence space (RFC 9293 §3.4).
#[inline]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `a` comes before `b` in sequence space.
#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `x` in `lo..=hi` walking up from `lo`.
#[inline]
fn seq_within(x: u32, lo: u32, hi: u32) -> bool {
    let span = hi.wrapping_sub(lo);
    span < 1 << 31 && x.wrapping_sub(lo) <= span
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpflag::*;

    const C: Dir = Dir::ToServer;
    const S: Dir = Dir::ToClient;

    fn seg(seq: u32, ack: u32, flags: u8, window: u16, len: u32) -> Segment {
        Segment { seq, ack, flags, window, wscale: if flags & SYN != 0 { Some(7) } else { None }, len }
    }

    /// Client ISN 1000, server ISN 5000, both scale 7, client window 502 << 7, server 509 << 7.
    fn established() -> TcpSeq {
        let mut t = TcpSeq::default();
        for (d, s) in [
            (C, seg(1000, 0, SYN, 64240, 0)),
            (S, seg(5000, 1001, SYN | ACK, 65160, 0)),
            (C, seg(1001, 5001, ACK, 502, 0)),
        ] {
            assert_eq!(judge(&t, d, &s, false), Ok(()));
            t.update(d, &s);
        }
        t
    }

    #[test]
    fn a_normal_exchange_is_accepted() {
        let mut t = established();
        for (d, s) in [
            (C, seg(1001, 5001, ACK | PSH, 502, 100)),
            (S, seg(5001, 1101, ACK, 509, 0)),
            (S, seg(5001, 1101, ACK | PSH, 509, 3000)),
            (C, seg(1101, 8001, ACK, 502, 0)),
            (C, seg(1101, 8001, FIN | ACK, 502, 0)),
            (S, seg(8001, 1102, FIN | ACK, 509, 0)),
            (C, seg(1102, 8002, ACK, 502, 0)),
        ] {
            assert_eq!(judge(&t, d, &s, false), Ok(()), "{d:?} {s:?}");
            t.update(d, &s);
        }
    }

    #[test]
    fn insertions_the_host_drops_are_anomalies() {
        let t = established();
        // Data without ACK.
        assert_eq!(judge(&t, C, &seg(1001, 0, PSH, 502, 10), false), Err(Anomaly::TcpNoAck));
        // Data acknowledging bytes the server never sent, or far older than the server's send
        // window (the client offered at most 502 << 7 = 64256 bytes).
        assert_eq!(judge(&t, C, &seg(1001, 9000, ACK, 502, 10), false), Err(Anomaly::TcpAckUnsent));
        assert_eq!(judge(&t, C, &seg(1001, 5001u32.wrapping_sub(64257), ACK, 502, 10), false), Err(Anomaly::TcpAckUnsent));
        assert_eq!(judge(&t, C, &seg(1001, 5001u32.wrapping_sub(64256), ACK, 502, 10), false), Ok(()));
        // Data past the window the server advertised in its SYN|ACK (65160, never scaled).
        assert_eq!(judge(&t, C, &seg(1001 + 65160, 5001, ACK, 502, 10), false), Err(Anomaly::TcpOutOfWindow));
        assert_eq!(judge(&t, C, &seg(1001 + 65159, 5001, ACK, 502, 10), false), Ok(()));
        // A RST far from what the client sent; one at its next sequence number resets.
        assert_eq!(judge(&t, C, &seg(900, 0, RST, 0, 0), false), Err(Anomaly::TcpRstOutOfWindow));
        assert_eq!(judge(&t, C, &seg(1001, 0, RST, 0, 0), false), Ok(()));
        // A SYN with a new ISN in the middle of the connection.
        assert_eq!(judge(&t, C, &seg(77, 0, SYN, 64240, 0), false), Err(Anomaly::TcpSynEstablished));
        // The retransmitted SYN and SYN|ACK of the handshake are fine.
        assert_eq!(judge(&t, C, &seg(1000, 0, SYN, 64240, 0), false), Ok(()));
        assert_eq!(judge(&t, S, &seg(5000, 1001, SYN | ACK, 65160, 0), false), Ok(()));
    }

    #[test]
    fn old_retransmissions_and_midstream_sessions() {
        let mut t = established();
        let d = seg(1001, 5001, ACK, 502, 100);
        t.update(C, &d);
        t.update(S, &seg(5001, 1101, ACK, 509, 0));
        // Acknowledged already: judged fine (forwarded; the stream never feeds it again).
        assert_eq!(judge(&t, C, &d, false), Ok(()));
        // Mid-stream: ACKs of bytes Warden did not see are the norm, the window unknown.
        let mut m = TcpSeq::default();
        m.update(C, &seg(70_000, 90_000, ACK, 1000, 100));
        assert_eq!(judge(&m, S, &seg(90_000, 70_100, ACK, 1000, 10), true), Ok(()));
        assert_eq!(judge(&m, S, &seg(90_000, 99_999_999, ACK, 1000, 10), true), Ok(()));
        // Not mid-stream: the client answering before the server's SYN|ACK acknowledges
        // nothing the server sent.
        let mut h = TcpSeq::default();
        h.update(C, &seg(1000, 0, SYN, 64240, 0));
        assert_eq!(judge(&h, C, &seg(1001, 4242, ACK, 502, 10), false), Err(Anomaly::TcpAckUnsent));
    }

    #[test]
    fn zero_window_probe_passes_and_data_at_the_edge_does_not() {
        // No window scaling; the server advertises 100 bytes, then closes its window.
        let mut t = TcpSeq::default();
        let unscaled = |seq, ack, flags, window, len| Segment { seq, ack, flags, window, wscale: None, len };
        t.update(C, &unscaled(1000, 0, SYN, 64240, 0));
        t.update(S, &unscaled(5000, 1001, SYN | ACK, 100, 0));
        t.update(C, &unscaled(1001, 5001, ACK, 64240, 0));
        assert_eq!(judge(&t, C, &unscaled(1001, 5001, ACK, 64240, 100), false), Ok(()));
        assert_eq!(judge(&t, C, &unscaled(1101, 5001, ACK, 64240, 10), false), Err(Anomaly::TcpOutOfWindow));
        t.update(C, &unscaled(1001, 5001, ACK, 64240, 100));
        t.update(S, &unscaled(5001, 1101, ACK, 0, 0));
        assert_eq!(t.window_edge(C), Some(1101));
        assert_eq!(judge(&t, C, &unscaled(1101, 5001, ACK, 64240, 1), false), Ok(()), "probe");
        assert_eq!(judge(&t, C, &unscaled(1101, 5001, ACK, 64240, 2), false), Err(Anomaly::TcpOutOfWindow));
    }

    #[test]
    fn auto_checksums_decide_from_a_sample() {
        // Half bad (a capture taken before the NIC filled them in): ignored from then on.
        let mut a = Checksums::new(ChecksumPolicy::Auto);
        for i in 0..AUTO_SAMPLE {
            assert!(!a.judge(i % 2 == 0), "not acted on while sampling");
        }
        assert_eq!(a.policy(), ChecksumPolicy::Ignore);
        assert!(!a.active() && !a.judge(false));
        // One in twenty bad: verified, and acted on, from then on.
        let mut a = Checksums::new(ChecksumPolicy::Auto);
        for i in 0..AUTO_SAMPLE {
            assert!(!a.judge(i % 20 != 0));
        }
        assert_eq!(a.policy(), ChecksumPolicy::Verify);
        assert!(a.judge(false) && !a.judge(true));
        assert_eq!(names(Anomaly::TcpNoAck.bit() | Anomaly::TcpConflict.bit()).collect::<Vec<_>>(), ["tcp_no_ack", "tcp_conflict"]);
    }
}
