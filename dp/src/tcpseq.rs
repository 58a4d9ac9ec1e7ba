//! Per-direction TCP sequence tracking, so that Warden can tell whether a sequence number
//! quoted in an ICMP error belongs to what a session's end has really sent (RFC 5927 §4.1:
//! a TCP accepts an ICMP error only when the quoted sequence number lies in
//! `SND.UNA..=SND.NXT`; an off-path attacker then has to guess it).
//!
//! For each direction (the sender's sequence space) a session keeps:
//! - `una`: the lowest unacknowledged sequence number as Warden sees it (the first sequence
//!   number seen, then the highest acceptable ACK of the other side);
//! - `next`: the end of the highest data sent (`SND.NXT`: seq + payload + SYN + FIN);
//! - `edge`: the right edge of the window the receiver advertised (its ACK plus its window
//!   scaled by the shift its SYN offered, RFC 7323 §2.2; a receiver whose SYN Warden did not
//!   see is assumed to scale by 14, the largest shift).
//!
//! Segments are not validated here (they are forwarded whatever this says), but they move the
//! state only when plausible, the way conntrack's `tcp_in_window` does: `next` advances only up
//! to `edge` (plus 64 KiB of slack for zero-window probes and rounding), and an ACK counts only
//! when it lies between `una` and that limit. So blind forged segments cannot widen the range a
//! quote is accepted in beyond one receive window. A SYN starts a direction over only when it
//! is the first segment seen in it, or after an acceptable FIN or RST (a new connection on the
//! same 4-tuple).
//!
//! Plain `Copy` data, 36 bytes, part of [`crate::session::Session`]; updated once per TCP
//! segment by [`crate::session::SessionTable::track`]. No allocation, no panics.

use crate::session::Dir;
use crate::wire::{tcpflag, Ip, L4};

/// The TCP fields of one segment that session tracking uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`tcpflag::ACK`]).
    pub ack: u32,
    /// Flag bits ([`tcpflag`]).
    pub flags: u8,
    /// Receive window field (unscaled).
    pub window: u16,
    /// Window Scale shift offered by a SYN (RFC 7323 §2.2), at most 14.
    pub wscale: Option<u8>,
    /// Payload bytes (after the TCP header).
    pub len: u32,
}

impl Segment {
    /// The segment of a decoded TCP packet; `None` for other protocols.
    #[inline]
    pub fn of(ip: &Ip<'_>) -> Option<Segment> {
        match ip.l4 {
            L4::Tcp { seq, ack, flags, window, wscale, .. } => Some(Segment {
                seq,
                ack,
                flags,
                window,
                wscale,
                len: ip.payload.len().min(u32::MAX as usize) as u32,
            }),
            _ => None,
        }
    }

    /// A segment with only `flags` set (tests and callers without sequence numbers).
    pub fn flags(flags: u8) -> Segment {
        Segment { seq: 0, ack: 0, flags, window: 0, wscale: None, len: 0 }
    }
}

/// `a` comes after `b` in sequence space (RFC 9293 §3.4, serial number arithmetic).
#[inline]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `x` lies in `lo..=hi`, walking sequence space up from `lo` (so a range is never ambiguous,
/// even when `x` is 2^31 away from both ends, where [`after`] is undefined). False when `hi`
/// is not ahead of `lo` by less than 2^31 (an empty or inverted range).
#[inline]
fn within(x: u32, lo: u32, hi: u32) -> bool {
    let span = hi.wrapping_sub(lo);
    span < 1 << 31 && x.wrapping_sub(lo) <= span
}

/// Largest window scale shift (RFC 7323 §2.3), assumed when the receiver's SYN was not seen.
const MAX_SCALE: u8 = 14;
/// Slack beyond the receiver's advertised edge a sender's data may reach (zero-window probes,
/// window rounding by the scale), and the limit before any edge is known, in bytes.
const SLACK: u32 = 65_535;

/// Bits of [`TcpSeq::bits`].
const KNOWN: [u8; 2] = [1, 2];
const EDGE: [u8; 2] = [4, 8];
const SCALED: [u8; 2] = [16, 32];
const CLOSING: u8 = 64;
/// Re-learning after frames Warden did not see (the XDP fast path, [`TcpSeq::resync_all`]):
/// ACKs are judged as for a session picked up mid-stream until both windows are known again.
const LENIENT: u8 = 128;

/// Sequence state of one TCP session, both directions (index [`Dir`] `as usize`: the
/// sender's direction). See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSeq {
    una: [u32; 2],
    next: [u32; 2],
    edge: [u32; 2],
    /// The largest window the receiver of each direction advertised (bytes, scaled): Linux's
    /// `max_window` of that direction's sender.
    maxwin: [u32; 2],
    scale: [u8; 2],
    bits: u8,
}

impl TcpSeq {
    /// Window scale shift of the windows sent in direction `dir` (0 until both SYNs agreed).
    pub fn scale(&self, dir: Dir) -> u8 {
        self.scale[dir as usize]
    }

    /// Swaps the two directions (a mid-stream session whose ends were swapped,
    /// [`crate::session::SessionTable::flip_client`]).
    pub fn swap_dirs(&mut self) {
        self.una.swap(0, 1);
        self.next.swap(0, 1);
        self.edge.swap(0, 1);
        self.maxwin.swap(0, 1);
        self.scale.swap(0, 1);
        let mut bits = self.bits & CLOSING;
        for pair in [KNOWN, EDGE, SCALED] {
            if self.bits & pair[0] != 0 {
                bits |= pair[1];
            }
            if self.bits & pair[1] != 0 {
                bits |= pair[0];
            }
        }
        self.bits = bits;
    }

    /// True while the state is re-learnt after segments Warden did not see
    /// ([`Self::resync_all`]): the ACK checks of [`crate::normalize::judge`] are skipped as
    /// for a mid-stream pickup.
    pub fn lenient(&self) -> bool {
        self.bits & LENIENT != 0
    }

    /// Forgets both directions' sequence state (kept: the window scales, the largest windows,
    /// the closing bit) after segments Warden did not see passed (the XDP fast path forwarded
    /// them, [`crate::fastpath`]): each direction is learnt again from its next segment, ACKs
    /// are judged leniently until both receivers' windows are known again, and the window
    /// check applies from then. An ICMP error quoting the session is rejected until its
    /// direction was seen again.
    pub fn resync_all(&mut self) {
        self.bits = (self.bits & !(KNOWN[0] | KNOWN[1] | EDGE[0] | EDGE[1])) | LENIENT;
    }

    /// Direction `dir`'s sender may have sent up to `hi` without Warden seeing it (the fast
    /// path forwarded only payload below `hi` in that direction, [`crate::fastpath`]): `next`
    /// moves up to `hi`, and the receiver's window edge to the largest it can be, `hi` plus
    /// the largest window that receiver ever advertised (it acknowledged at most `hi`). A
    /// direction never seen is left to be learnt.
    pub fn resync_sent(&mut self, dir: Dir, hi: u32) {
        let d = dir as usize;
        if self.bits & KNOWN[d] == 0 {
            return;
        }
        if after(hi, self.next[d]) {
            self.next[d] = hi;
        }
        self.widen_edge(d);
    }

    /// Direction `dir`'s sender sent no payload Warden did not see, but its receiver's ACKs
    /// (and windows) went by unseen: the window edge moves to the largest it can be, `next`
    /// plus the largest window that receiver ever advertised.
    pub fn resync_quiet(&mut self, dir: Dir) {
        let d = dir as usize;
        if self.bits & KNOWN[d] != 0 {
            self.widen_edge(d);
        }
    }

    fn widen_edge(&mut self, d: usize) {
        if self.maxwin[d] == 0 {
            self.bits &= !EDGE[d];
            return;
        }
        let e = self.next[d].wrapping_add(self.maxwin[d]);
        if self.bits & EDGE[d] == 0 || after(e, self.edge[d]) {
            self.edge[d] = e;
        }
        self.bits |= EDGE[d];
    }

    /// Accounts segment `seg` sent in direction `dir`.
    pub fn update(&mut self, dir: Dir, seg: &Segment) {
        let (d, o) = (dir as usize, 1 - dir as usize);
        let syn = seg.flags & tcpflag::SYN != 0;
        let ack = seg.flags & tcpflag::ACK != 0;
        if syn && !ack && self.bits & CLOSING != 0 {
            // A new connection on a 4-tuple whose previous one ended: start over.
            *self = TcpSeq::default();
        }
        let end = seg
            .seq
            .wrapping_add(seg.len)
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(seg.flags & tcpflag::FIN != 0));
        if syn {
            self.scale[d] = seg.wscale.unwrap_or(0).min(MAX_SCALE);
            self.bits |= SCALED[d];
            if ack && seg.wscale.is_none() {
                // Scaling is on only when both SYNs offer it (RFC 7323 §2.2).
                self.scale[o] = 0;
            }
        }
        if self.bits & KNOWN[d] == 0 {
            self.una[d] = seg.seq;
            self.next[d] = end;
            self.bits |= KNOWN[d];
        } else {
            let plausible = within(seg.seq, self.una[d], self.limit(d));
            if end != self.next[d] && within(end, self.next[d], self.limit(d)) {
                self.next[d] = end;
            }
            if plausible && seg.flags & (tcpflag::FIN | tcpflag::RST) != 0 {
                self.bits |= CLOSING;
            }
        }
        if ack && self.bits & KNOWN[o] != 0 {
            let a = seg.ack;
            let una = self.una[o];
            if within(a, una, self.limit(o)) {
                self.una[o] = a;
                if a.wrapping_sub(una) > self.next[o].wrapping_sub(una) {
                    // The receiver holds bytes Warden did not see pass: they were sent.
                    self.next[o] = a;
                }
                let shift = if self.bits & SCALED[d] != 0 { self.scale[d] } else { MAX_SCALE };
                // The window of a SYN segment is never scaled (RFC 7323 §2.2).
                let win = if syn { u32::from(seg.window) } else { u32::from(seg.window) << shift };
                let e = a.wrapping_add(win);
                self.maxwin[o] = self.maxwin[o].max(win);
                if self.bits & EDGE[o] == 0 || after(e, self.edge[o]) {
                    self.edge[o] = e;
                    self.bits |= EDGE[o];
                }
            }
        }
        if self.bits & (EDGE[0] | EDGE[1]) == EDGE[0] | EDGE[1] {
            // Both receivers' windows known again after a resync: judged strictly again.
            self.bits &= !LENIENT;
        }
    }

    /// How far the sender of direction `d` can plausibly have sent.
    fn limit(&self, d: usize) -> u32 {
        if self.bits & EDGE[d] != 0 {
            self.edge[d].wrapping_add(SLACK)
        } else {
            self.next[d].wrapping_add(SLACK)
        }
    }

    /// Whether `seq`, quoted in an ICMP error about a segment sent in direction `dir`, lies in
    /// what that direction's sender has sent and not yet had acknowledged (`una..=next`,
    /// inclusive as Linux's check: a quoted zero-length segment carries `next`). False when
    /// Warden has seen no segment in that direction.
    pub fn quoted_in_window(&self, dir: Dir, seq: u32) -> bool {
        let d = dir as usize;
        self.bits & KNOWN[d] != 0 && within(seq, self.una[d], self.next[d])
    }

    /// The right edge of the window the receiver of direction `dir` advertised (the sequence
    /// number past the last byte it accepts), once one of its ACKs was seen.
    pub fn window_edge(&self, dir: Dir) -> Option<u32> {
        let d = dir as usize;
        (self.bits & EDGE[d] != 0).then_some(self.edge[d])
    }

    /// The largest window the receiver of direction `dir` advertised (bytes; 0 before any).
    pub fn max_window(&self, dir: Dir) -> u32 {
        self.maxwin[dir as usize]
    }

    /// True once an acceptable FIN or RST was seen (a new SYN may start a new connection).
    pub fn closing(&self) -> bool {
        self.bits & CLOSING != 0
    }

    /// `(una, next)` of direction `dir`, when Warden has seen a segment in it.
    pub fn range(&self, dir: Dir) -> Option<(u32, u32)> {
        let d = dir as usize;
        (self.bits & KNOWN[d] != 0).then_some((self.una[d], self.next[d]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpflag::*;

    const C: Dir = Dir::ToServer;
    const S: Dir = Dir::ToClient;

    fn seg(seq: u32, ack: u32, flags: u8, window: u16, wscale: Option<u8>, len: u32) -> Segment {
        Segment { seq, ack, flags, window, wscale, len }
    }

    /// A handshake with window scale 7 both ways, client ISN 1000, server ISN 5000.
    fn handshake() -> TcpSeq {
        let mut t = TcpSeq::default();
        t.update(C, &seg(1000, 0, SYN, 64240, Some(7), 0));
        t.update(S, &seg(5000, 1001, SYN | ACK, 65160, Some(7), 0));
        t.update(C, &seg(1001, 5001, ACK, 502, None, 0));
        t
    }

    #[test]
    fn the_window_follows_data_and_acks() {
        let mut t = TcpSeq::default();
        t.update(C, &seg(1000, 0, SYN, 64240, Some(7), 0));
        // The SYN itself may be quoted.
        assert!(t.quoted_in_window(C, 1000));
        assert!(!t.quoted_in_window(C, 999) && !t.quoted_in_window(C, 1002));
        assert!(!t.quoted_in_window(S, 5000), "nothing seen from the server yet");
        t.update(S, &seg(5000, 1001, SYN | ACK, 65160, Some(7), 0));
        t.update(C, &seg(1001, 5001, ACK, 502, None, 0));
        // Client sends 3 segments of 1000 bytes; the server acks the first.
        for i in 0..3 {
            t.update(C, &seg(1001 + i * 1000, 5001, ACK, 502, None, 1000));
        }
        assert_eq!(t.range(C), Some((1001, 4001)));
        t.update(S, &seg(5001, 2001, ACK, 509, None, 0));
        assert_eq!(t.range(C), Some((2001, 4001)));
        assert!(t.quoted_in_window(C, 3001));
        assert!(t.quoted_in_window(C, 4001), "next itself (a quoted zero-length segment)");
        assert!(!t.quoted_in_window(C, 1001), "already acknowledged");
        assert!(!t.quoted_in_window(C, 4002));
        assert!(!t.quoted_in_window(C, 3001 ^ 0x8000_0000));
        // Everything acknowledged (una == next): only next itself, and never the number
        // 2^31 away, where serial number comparison is undefined.
        t.update(S, &seg(5001, 4001, ACK, 509, None, 0));
        assert_eq!(t.range(C), Some((4001, 4001)));
        assert!(t.quoted_in_window(C, 4001));
        assert!(!t.quoted_in_window(C, 4001 ^ 0x8000_0000));
        assert!(!t.quoted_in_window(C, 4000) && !t.quoted_in_window(C, 4002));
    }

    #[test]
    fn forged_segments_cannot_widen_the_range_past_the_receive_window() {
        let mut t = handshake();
        // Server window 502 << 7 = 64256 bytes past 1001: a blind segment far ahead is ignored.
        t.update(C, &seg(1001 + 10_000_000, 5001, ACK, 502, None, 1000));
        assert_eq!(t.range(C), Some((1001, 1001)));
        // A forged ACK for bytes never sent (beyond the limit) is ignored too.
        t.update(S, &seg(5001, 1001 + 10_000_000, ACK, 65535, None, 0));
        assert_eq!(t.range(C), Some((1001, 1001)));
        // Within the window (and its slack) data moves next.
        t.update(C, &seg(1001, 5001, ACK, 502, None, 60_000));
        assert_eq!(t.range(C), Some((1001, 61_001)));
        // Each step is bounded by the window: reaching the far end takes real ACKs.
        let (_, next) = t.range(C).unwrap();
        t.update(C, &seg(next, 5001, ACK, 502, None, 200_000));
        assert_eq!(t.range(C).unwrap().1, next, "segment ending past edge + slack");
        // A receiver advertising a zero window while more than the slack is in flight: the
        // limit falls behind next, and no segment moves it (rather than every one).
        let mut t = TcpSeq::default();
        t.update(C, &seg(0, 0, ACK, 0, None, 9000));
        for i in 1..10 {
            t.update(C, &seg(i * 9000, 0, ACK, 0, None, 9000));
        }
        // Before any ACK each segment may reach one slack past the last.
        assert_eq!(t.range(C), Some((0, 90_000)));
        t.update(S, &seg(0, 0, ACK, 0, None, 0));
        t.update(C, &seg(90_000, 0, ACK, 0, None, 9000));
        t.update(C, &seg(3_000_000_000, 0, ACK, 0, None, 10));
        assert_eq!(t.range(C), Some((0, 90_000)));
    }

    #[test]
    fn wraparound_and_midstream_pickup() {
        let mut t = TcpSeq::default();
        // Picked up mid-stream near the top of sequence space: no SYN, scale assumed 14.
        t.update(C, &seg(u32::MAX - 100, 7, ACK, 1000, None, 300));
        assert_eq!(t.range(C), Some((u32::MAX - 100, 199)));
        assert!(t.quoted_in_window(C, u32::MAX));
        assert!(t.quoted_in_window(C, 10));
        assert!(!t.quoted_in_window(C, 200));
        t.update(S, &seg(7, 100, ACK, 10, None, 0));
        assert_eq!(t.range(C), Some((100, 199)));
    }

    #[test]
    fn a_new_syn_starts_over_only_after_the_old_connection_ended() {
        let mut t = handshake();
        // A SYN with another ISN in the middle of the connection changes nothing.
        t.update(C, &seg(900_000, 0, SYN, 64240, Some(7), 0));
        assert_eq!(t.range(C), Some((1001, 1001)));
        // A FIN from the client (acceptable sequence), then a SYN: a new connection.
        t.update(C, &seg(1001, 5001, FIN | ACK, 502, None, 0));
        t.update(C, &seg(900_000, 0, SYN, 64240, Some(7), 0));
        assert_eq!(t.range(C), Some((900_000, 900_001)));
        assert_eq!(t.range(S), None);
        // A blind RST far out of window does not end anything.
        let mut t = handshake();
        t.update(S, &seg(5001 ^ 0x8000_0000, 0, RST, 0, None, 0));
        t.update(C, &seg(777, 0, SYN, 64240, None, 0));
        assert_eq!(t.range(C), Some((1001, 1001)));
    }

    #[test]
    fn a_syn_ack_without_window_scale_turns_scaling_off() {
        let mut t = TcpSeq::default();
        t.update(C, &seg(1000, 0, SYN, 64240, Some(7), 0));
        t.update(S, &seg(5000, 1001, SYN | ACK, 65160, None, 0));
        t.update(C, &seg(1001, 5001, ACK, 100, None, 0));
        // The client advertises 100 bytes unscaled: the server can send at most 100 + slack.
        t.update(S, &seg(5001, 1001, ACK, 100, None, 100 + SLACK));
        assert_eq!(t.range(S), Some((5001, 5101 + SLACK)));
        t.update(S, &seg(5101 + SLACK, 1001, ACK, 100, None, 1));
        assert_eq!(t.range(S).unwrap().1, 5101 + SLACK);
    }
}
