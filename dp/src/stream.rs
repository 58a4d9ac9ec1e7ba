//! TCP stream tracking for one direction of a session: in-order delivery to a parser, bounded
//! out-of-order buffering, retransmissions and overlaps delivered once, overlaps with
//! *different* data counted in bytes and reported to the caller (which drops such segments in
//! protect mode, [`crate::normalize`]), gaps reported, urgent data taken out of band.
//!
//! Conflicts after parsing: the bytes delivered to the parser are kept until the receiver
//! acknowledges them ([`Stream::acked`]), in a ring of at most the per-session cap, charged to
//! a per-core budget of its own (so a receiver that never acknowledges can only lose Warden
//! the comparison, never the inspection of other sessions). A retransmission is compared with
//! them whether or not the parser consumed them; bytes it covers that were not kept (ring or
//! budget full) are counted as `unverified`. Acknowledged bytes are never compared: the
//! receiver drops their retransmissions.
//!
//! Zero-copy when possible: an in-order segment goes straight from the frame to the parser;
//! only the bytes the parser did not consume, and out-of-order segments, are copied into
//! buffers taken from the core's [`BufPool`]. Every buffer is bounded by the per-session cap and
//! the pool by the per-core cap, both counted in bytes actually held (a stream holding 10 bytes
//! charges 10 bytes, not its cap, so idle or trickling sessions cannot exhaust the pool);
//! exceeding either ends inspection of the session with a [`Bypass`] reason, and the
//! inspector's exception policy ([`crate::exception`]) decides what happens to the session.
//!
//! Sequence arithmetic is modulo 2^32 (RFC 9293 §3.4).

use arrayvec::ArrayVec;

use crate::app::Feed;

/// Why a stream stopped being inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The per-session buffer cap was exceeded.
    SessionCap,
    /// The per-core buffer cap was exceeded.
    CoreCap,
    /// Too many out-of-order segments were waiting.
    OutOfOrder,
}

impl Bypass {
    /// Name used in connection records.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::SessionCap => "stream_session_cap",
            Bypass::CoreCap => "stream_core_cap",
            Bypass::OutOfOrder => "out_of_order_limit",
        }
    }
}

/// Where in-order bytes go.
pub trait Sink {
    /// In-order bytes; the answer says how many were consumed (see [`Feed`]).
    fn data(&mut self, bytes: &[u8]) -> Feed;
    /// `len` bytes were lost before the next [`Sink::data`].
    fn gap(&mut self, len: usize);
}

/// Per-core pool of reusable byte buffers, bounded by a total byte cap. Bytes are charged as
/// a stream holds them and credited as it lets them go; buffers are reused (capacity
/// `session_cap` each, allocated once and kept on a free list while the pool has room).
pub struct BufPool {
    free: Vec<Vec<u8>>,
    held: Budget,
    kept: Budget,
    session_cap: usize,
}

/// Bytes charged against a cap.
#[derive(Debug, Clone, Copy)]
struct Budget {
    used: usize,
    cap: usize,
}

impl Budget {
    /// Charges `n` more bytes; false (nothing charged) when the cap would be passed.
    fn charge(&mut self, n: usize) -> bool {
        if self.used + n > self.cap {
            return false;
        }
        self.used += n;
        true
    }

    fn credit(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

impl BufPool {
    /// A pool allowing `core_cap` bytes held in total, `session_cap` per buffer; bytes kept
    /// for conflict checks have a budget of `core_cap` of their own.
    pub fn new(core_cap: usize, session_cap: usize) -> Self {
        BufPool {
            free: Vec::new(),
            held: Budget { used: 0, cap: core_cap },
            kept: Budget { used: 0, cap: core_cap },
            session_cap,
        }
    }

    /// Bytes held by live buffers (unconsumed and out-of-order bytes).
    pub fn in_use(&self) -> usize {
        self.held.used
    }

    /// Bytes kept for conflict checks (delivered, not yet acknowledged).
    pub fn kept(&self) -> usize {
        self.kept.used
    }

    fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(self.session_cap))
    }

    /// Charges `n` more held bytes; false (nothing charged) when the core cap would be passed.
    fn charge(&mut self, n: usize) -> bool {
        self.held.charge(n)
    }

    fn credit(&mut self, n: usize) {
        self.held.credit(n);
    }

    /// Returns a buffer (its bytes already credited) to the free list.
    fn recycle(&mut self, mut b: Vec<u8>) {
        b.clear();
        // Keep at most enough buffers to reach the cap again; the rest is freed.
        if self.free.len() * self.session_cap < self.held.cap {
            self.free.push(b);
        }
    }

    fn give(&mut self, b: Vec<u8>) {
        self.credit(b.len());
        self.recycle(b);
    }
}

const MAX_OOO: usize = 8;

/// Delivered bytes not yet acknowledged: a ring over a pool buffer (grown up to its
/// capacity, then wrapped), the oldest byte at sequence number `seq`.
#[derive(Debug, Default)]
struct Kept {
    buf: Option<Vec<u8>>,
    head: usize,
    len: usize,
    seq: u32,
}

impl Kept {
    /// Drops the `n` oldest bytes.
    fn drop_front(&mut self, n: usize, pool: &mut BufPool) {
        let n = n.min(self.len);
        self.seq = self.seq.wrapping_add(n as u32);
        self.len -= n;
        pool.kept.credit(n);
        if self.len == 0 {
            if let Some(b) = self.buf.take() {
                pool.recycle(b);
            }
            self.head = 0;
        } else if let Some(b) = &self.buf {
            self.head = (self.head + n) % b.len().max(1);
        }
    }

    /// Forgets everything and restarts at `seq`.
    fn reset(&mut self, seq: u32, pool: &mut BufPool) {
        self.drop_front(self.len, pool);
        self.seq = seq;
    }

    /// Appends `data` (which starts at `seq + len`), dropping the oldest bytes for room.
    fn push(&mut self, data: &[u8], pool: &mut BufPool) {
        let cap = pool.session_cap;
        if data.is_empty() {
            return;
        }
        if cap == 0 {
            // Nothing can be kept: the kept range stays empty, at the stream's next byte.
            self.seq = self.seq.wrapping_add(data.len() as u32);
            return;
        }
        let data = if data.len() > cap {
            self.drop_front(self.len, pool);
            self.seq = self.seq.wrapping_add((data.len() - cap) as u32);
            &data[data.len() - cap..]
        } else {
            data
        };
        let over = (self.len + data.len()).saturating_sub(cap);
        if over > 0 {
            self.drop_front(over, pool);
        }
        if !pool.kept.charge(data.len()) {
            // Out of budget: nothing kept; the bytes after are kept again once it frees up.
            self.drop_front(self.len, pool);
            self.seq = self.seq.wrapping_add(data.len() as u32);
            return;
        }
        if self.buf.is_none() {
            self.buf = Some(pool.take());
            self.head = 0;
        }
        let Some(b) = self.buf.as_mut() else { return };
        let mut rest = data;
        if b.len() < cap {
            // Still growing: the kept bytes are `b[head..]`, contiguous up to the end.
            let n = (cap - b.len()).min(rest.len());
            b.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        let mut at = (self.head + self.len + data.len() - rest.len()) % cap;
        while !rest.is_empty() {
            let n = (cap - at).min(rest.len());
            b[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at = (at + n) % cap;
        }
        self.len += data.len();
    }

    /// The kept byte at sequence number `s`, if kept.
    #[inline]
    fn at(&self, s: u32) -> Option<u8> {
        let i = s.wrapping_sub(self.seq) as usize;
        let b = self.buf.as_ref()?;
        (i < self.len).then(|| b[(self.head + i) % b.len()])
    }
}

/// One direction of a TCP stream.
#[derive(Debug, Default)]
pub struct Stream {
    next: u32,
    started: bool,
    done: bool,
    pending: Option<Vec<u8>>,
    need: usize,
    ooo: ArrayVec<(u32, Vec<u8>), MAX_OOO>,
    kept: Kept,
    /// Everything before this was acknowledged by the receiver.
    acked: u32,
    /// The urgent byte to take out of band when delivered (Linux: `urg_seq`, pending).
    urgent: Option<u32>,
    /// The latest urgent mark seen (older marks are ignored).
    urgent_mark: Option<u32>,
    /// Segments entirely retransmitted (already delivered).
    pub retransmissions: u32,
    /// Overlapping bytes that differed from the bytes seen first (an evasion signal), in
    /// bytes: retransmissions compared with the bytes delivered and not yet acknowledged,
    /// overlapping out-of-order segments with each other.
    pub overlaps_differ: u32,
    /// Retransmitted bytes that could not be compared (not kept: ring or budget full).
    pub unverified: u32,
    /// Urgent bytes taken out of band.
    pub urgent_bytes: u32,
    /// Gaps reported to the parser.
    pub gaps: u32,
    /// Set when inspection stopped.
    pub bypass: Option<Bypass>,
    /// Bytes up to this sequence number may have been forwarded by the XDP fast path without
    /// Warden seeing them (an opaque run the parser skips by count, [`Stream::skip_until`]).
    skip_to: Option<u32>,
}

impl Stream {
    /// Starts the stream at `seq` (the first data byte: ISN + 1 after a SYN).
    pub fn start(&mut self, seq: u32) {
        if !self.started {
            self.next = seq;
            self.acked = seq;
            self.kept.seq = seq;
            self.started = true;
        }
    }

    /// The first sequence number not yet delivered, once started.
    pub fn next(&self) -> Option<u32> {
        self.started.then_some(self.next)
    }

    /// True when nothing is held: no unconsumed bytes, no out-of-order segment, no urgent
    /// byte pending, no skip pending ([`Self::skip_until`]), so the parser has seen every byte
    /// before [`Self::next`].
    pub fn idle(&self) -> bool {
        self.started
            && !self.finished()
            && self.pending.as_ref().is_none_or(|p| p.is_empty())
            && self.need == 0
            && self.ooo.is_empty()
            && self.urgent.is_none()
            && self.skip_to.is_none()
    }

    /// The XDP fast path may have forwarded this direction's payload up to sequence number
    /// `hi` (an opaque run the parser skips by count, [`crate::fastpath`]): the next segment
    /// that starts past [`Self::next`], at most at `hi`, continues the stream there, the
    /// bytes in between announced to the parser as skipped ([`Sink::gap`], inside its body:
    /// it keeps its framing; not counted as a gap). A segment past `hi` continues it at `hi`
    /// (what lies beyond is a hole as ever). Bytes before the new start are retransmissions.
    pub fn skip_until(&mut self, hi: u32) {
        if self.started {
            self.skip_to = Some(hi);
        }
    }

    /// Applies a pending [`Self::skip_until`] for a segment at `seq`.
    fn skip(&mut self, seq: u32, pool: &mut BufPool, sink: &mut dyn Sink) {
        let Some(hi) = self.skip_to.take() else { return };
        let limit = hi.wrapping_sub(self.next);
        if (limit as i32) <= 0 {
            return;
        }
        let to = seq.wrapping_sub(self.next);
        if (to as i32) <= 0 {
            return;
        }
        let n = to.min(limit);
        sink.gap(n as usize);
        self.next = self.next.wrapping_add(n);
        self.acked = self.next;
        let next = self.next;
        self.kept.reset(next, pool);
    }

    /// The receiver acknowledged everything before `ack`: kept bytes before it are let go.
    pub fn acked(&mut self, ack: u32, pool: &mut BufPool) {
        if !self.started || (ack.wrapping_sub(self.acked) as i32) <= 0 {
            return;
        }
        // Never past what was delivered (an ACK Warden let through for bytes it holds).
        let ack = if (ack.wrapping_sub(self.next) as i32) > 0 { self.next } else { ack };
        self.acked = ack;
        let n = ack.wrapping_sub(self.kept.seq);
        if (n as i32) > 0 {
            self.kept.drop_front(n as usize, pool);
            if (self.kept.seq.wrapping_sub(ack) as i32) < 0 {
                self.kept.seq = ack;
            }
        }
    }

    /// An urgent mark: the byte at `seq` is urgent (the segment's sequence number plus its
    /// urgent pointer minus one, RFC 6093 §3). Read as Linux does (`tcp_check_urg`): a mark on
    /// bytes already delivered, or not after the latest mark, is ignored; a newer mark
    /// replaces a pending one, whose byte then stays in band.
    pub fn urgent(&mut self, seq: u32) {
        if !self.takes_mark(seq) {
            return;
        }
        self.urgent_mark = Some(seq);
        self.urgent = Some(seq);
    }

    /// Whether an urgent mark on `seq` would be taken ([`Stream::urgent`]).
    fn takes_mark(&self, seq: u32) -> bool {
        let delivered = self.started && (seq.wrapping_sub(self.next) as i32) < 0;
        let older = self.urgent_mark.is_some_and(|m| (seq.wrapping_sub(m) as i32) <= 0);
        !delivered && !older
    }

    /// True when an urgent mark on `seq` would move an earlier mark: whether Linux then reads
    /// the earlier urgent byte in band depends on when the application read it, which the
    /// wire does not show ([`crate::normalize::Anomaly::TcpUrgentAmbiguous`]).
    pub fn urgent_moves_mark(&self, seq: u32) -> bool {
        self.urgent_mark.is_some() && self.takes_mark(seq)
    }

    /// True once the parser said it is done or inspection was bypassed.
    pub fn finished(&self) -> bool {
        self.done || self.bypass.is_some()
    }

    /// Returns every buffer to the pool (session end, or inspection over).
    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(b) = self.pending.take() {
            pool.give(b);
        }
        for (_, b) in self.ooo.drain(..) {
            pool.give(b);
        }
        let next = self.next;
        self.kept.reset(next, pool);
    }

    fn stop(&mut self, why: Bypass, pool: &mut BufPool) {
        self.bypass = Some(why);
        self.release(pool);
    }

    /// Accepts a segment with sequence number `seq` and `payload`; returns how many of its
    /// bytes differ from bytes Warden already inspected (delivered and not yet acknowledged)
    /// or holds (out of order). Those bytes are never delivered: the first copy counts.
    pub fn segment(&mut self, seq: u32, payload: &[u8], pool: &mut BufPool, sink: &mut dyn Sink) -> u32 {
        if payload.is_empty() || self.finished() {
            return 0;
        }
        if self.skip_to.is_some() {
            self.skip(seq, pool, sink);
        }
        self.start(seq);
        let off = seq.wrapping_sub(self.next) as i32;
        let mut data = payload;
        let mut differ = 0;
        if off < 0 {
            let already = off.unsigned_abs() as usize;
            differ = self.compare_kept(seq, &data[..already.min(data.len())]);
            if already >= data.len() {
                self.retransmissions += 1;
                return differ;
            }
            data = &data[already..];
        } else if off > 0 {
            return self.store_ooo(seq, data, pool, sink);
        }
        self.deliver_in_order(data, pool, sink);
        self.drain_ooo(pool, sink);
        differ
    }

    /// Compares retransmitted bytes `data` (at `seq`, all before `next`) with the kept ones;
    /// returns the differing count and counts those that could not be compared.
    fn compare_kept(&mut self, seq: u32, data: &[u8]) -> u32 {
        let mut differ = 0u32;
        for (i, &b) in data.iter().enumerate() {
            let s = seq.wrapping_add(i as u32);
            if (s.wrapping_sub(self.acked) as i32) < 0 {
                continue; // acknowledged: the receiver drops it
            }
            match self.kept.at(s) {
                Some(k) if k != b => differ += 1,
                Some(_) => {}
                None => self.unverified = self.unverified.saturating_add(1),
            }
        }
        self.overlaps_differ = self.overlaps_differ.saturating_add(differ);
        differ
    }

    fn store_ooo(&mut self, seq: u32, data: &[u8], pool: &mut BufPool, sink: &mut dyn Sink) -> u32 {
        // Overlap with a segment already waiting: keep the first, count differing bytes.
        let mut differ = 0u32;
        for (s, b) in &self.ooo {
            let rel = seq.wrapping_sub(*s) as i32;
            if rel >= 0 && (rel as usize) < b.len() {
                let start = rel as usize;
                let n = (b.len() - start).min(data.len());
                differ += b[start..start + n].iter().zip(&data[..n]).filter(|(x, y)| x != y).count() as u32;
                if n == data.len() {
                    self.overlaps_differ = self.overlaps_differ.saturating_add(differ);
                    self.retransmissions += 1;
                    return differ;
                }
            }
        }
        self.overlaps_differ = self.overlaps_differ.saturating_add(differ);
        self.store_ooo_new(seq, data, pool, sink);
        differ
    }

    fn store_ooo_new(&mut self, seq: u32, data: &[u8], pool: &mut BufPool, sink: &mut dyn Sink) {
        if self.ooo.is_full() {
            // Give up waiting for the hole: report it and continue from the oldest segment.
            let first = self.ooo.iter().map(|(s, _)| s.wrapping_sub(self.next)).min().unwrap_or(0);
            self.gaps += 1;
            sink.gap(first as usize);
            self.next = self.next.wrapping_add(first);
            // The hole was never delivered: what is kept restarts after it.
            let next = self.next;
            self.kept.reset(next, pool);
            if let Some(p) = &mut self.pending {
                pool.credit(p.len());
                p.clear();
            }
            self.need = 0;
            self.drain_ooo(pool, sink);
            if self.ooo.is_full() {
                self.stop(Bypass::OutOfOrder, pool);
                return;
            }
            // The hole moved: this segment may now be in order.
            let already = self.next.wrapping_sub(seq) as i32;
            if already >= 0 {
                if (already as usize) < data.len() {
                    self.deliver_in_order(&data[already as usize..], pool, sink);
                    self.drain_ooo(pool, sink);
                }
                return;
            }
        }
        let mut b = pool.take();
        if data.len() > b.capacity() {
            pool.give(b);
            self.stop(Bypass::SessionCap, pool);
            return;
        }
        if !pool.charge(data.len()) {
            pool.give(b);
            self.stop(Bypass::CoreCap, pool);
            return;
        }
        b.extend_from_slice(data);
        self.ooo.push((seq, b));
    }

    fn drain_ooo(&mut self, pool: &mut BufPool, sink: &mut dyn Sink) {
        while !self.finished() {
            let Some(i) = self.ooo.iter().position(|(s, _)| (s.wrapping_sub(self.next) as i32) <= 0) else {
                return;
            };
            let (s, b) = self.ooo.swap_remove(i);
            let already = self.next.wrapping_sub(s) as usize;
            if already < b.len() {
                self.deliver_in_order(&b[already..], pool, sink);
            }
            pool.give(b);
        }
    }

    /// Delivers in-order bytes `data` (starting at `next`): kept for conflict checks, the
    /// pending urgent byte among them taken out.
    fn deliver_in_order(&mut self, data: &[u8], pool: &mut BufPool, sink: &mut dyn Sink) {
        if self.finished() {
            self.next = self.next.wrapping_add(data.len() as u32);
            return;
        }
        self.kept.push(data, pool);
        let at = self.urgent.map(|u| u.wrapping_sub(self.next) as usize).filter(|&i| i < data.len());
        match at {
            Some(i) => {
                self.urgent = None;
                self.urgent_bytes += 1;
                if i > 0 {
                    self.deliver(&data[..i], pool, sink);
                }
                self.next = self.next.wrapping_add(1);
                if i + 1 < data.len() && !self.finished() {
                    self.deliver(&data[i + 1..], pool, sink);
                } else {
                    self.next = self.next.wrapping_add((data.len() - i - 1) as u32);
                }
            }
            None => self.deliver(data, pool, sink),
        }
    }

    fn deliver(&mut self, data: &[u8], pool: &mut BufPool, sink: &mut dyn Sink) {
        self.next = self.next.wrapping_add(data.len() as u32);
        if self.done {
            return;
        }
        let holding = self.pending.as_ref().is_some_and(|p| !p.is_empty());
        if !holding {
            if data.len() < self.need {
                self.keep(data, pool);
                return;
            }
            let r = sink.data(data);
            self.after_feed(r, data, pool);
            return;
        }
        let Some(p) = self.pending.as_mut() else { return };
        if p.len() + data.len() > p.capacity() {
            self.stop(Bypass::SessionCap, pool);
            return;
        }
        if !pool.charge(data.len()) {
            self.stop(Bypass::CoreCap, pool);
            return;
        }
        p.extend_from_slice(data);
        if p.len() < self.need {
            return;
        }
        let r = sink.data(p);
        let (consumed, need, done) = match r {
            Feed::Consumed(n) => (n, 0, false),
            Feed::Need { consumed, at_least } => (consumed, at_least, false),
            // The engine answers a parser's `Invalid` itself (detection runs again).
            Feed::Done | Feed::Invalid { .. } => (0, 0, true),
        };
        if done {
            self.done = true;
            self.release(pool);
            return;
        }
        let consumed = consumed.min(p.len());
        p.drain(..consumed);
        pool.credit(consumed);
        self.need = need;
        if self.need > p.capacity() {
            self.stop(Bypass::SessionCap, pool);
        }
    }

    fn after_feed(&mut self, r: Feed, data: &[u8], pool: &mut BufPool) {
        let (consumed, need) = match r {
            Feed::Consumed(n) => (n, 0),
            Feed::Need { consumed, at_least } => (consumed, at_least),
            Feed::Done | Feed::Invalid { .. } => {
                self.done = true;
                self.release(pool);
                return;
            }
        };
        self.need = need;
        let rest = data.get(consumed..).unwrap_or(&[]);
        if !rest.is_empty() || need > 0 {
            self.keep(rest, pool);
        }
    }

    fn keep(&mut self, bytes: &[u8], pool: &mut BufPool) {
        if self.pending.is_none() {
            self.pending = Some(pool.take());
        }
        let Some(p) = self.pending.as_mut() else { return };
        if p.len() + bytes.len() > p.capacity() || self.need > p.capacity() {
            return self.stop(Bypass::SessionCap, pool);
        }
        if !pool.charge(bytes.len()) {
            return self.stop(Bypass::CoreCap, pool);
        }
        p.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumes whole lines; records them and gaps.
    #[derive(Default)]
    struct Lines {
        lines: Vec<String>,
        gaps: Vec<usize>,
    }

    impl Sink for Lines {
        fn data(&mut self, bytes: &[u8]) -> Feed {
            let mut off = 0;
            while let Some(i) = bytes[off..].iter().position(|&b| b == b'\n') {
                self.lines.push(String::from_utf8_lossy(&bytes[off..off + i]).into_owned());
                off += i + 1;
            }
            Feed::Need { consumed: off, at_least: bytes.len() - off + 1 }
        }
        fn gap(&mut self, len: usize) {
            self.gaps.push(len);
        }
    }

    fn run(segs: &[(u32, &[u8])]) -> (Lines, Stream) {
        let mut pool = BufPool::new(1 << 20, 4096);
        let mut s = Stream::default();
        s.start(1000);
        let mut sink = Lines::default();
        for (seq, d) in segs {
            s.segment(*seq, d, &mut pool, &mut sink);
        }
        s.release(&mut pool);
        assert_eq!(pool.in_use(), 0);
        (sink, s)
    }

    #[test]
    fn in_order_split_lines() {
        let (l, s) = run(&[(1000, b"hel"), (1003, b"lo\nwor"), (1009, b"ld\n")]);
        assert_eq!(l.lines, ["hello", "world"]);
        assert_eq!((s.gaps, s.retransmissions), (0, 0));
    }

    #[test]
    fn out_of_order_and_retransmission_delivered_once() {
        let (l, s) = run(&[(1006, b"two\n"), (1000, b"one\n"), (1000, b"one\n"), (1004, b"xxtwo\n")]);
        // "one\n" (4) then "xx" at 1004 arrives late, "two\n" waited at 1006.
        assert_eq!(l.lines, ["one", "xxtwo"]);
        assert!(s.retransmissions >= 1);
    }

    #[test]
    fn overlap_with_different_data_is_counted() {
        let (_, s) = run(&[(1004, b"abcd"), (1004, b"abXd"), (1000, b"12")]);
        assert_eq!(s.overlaps_differ, 1);
    }

    #[test]
    fn a_hole_that_never_fills_becomes_a_gap() {
        let mut segs: Vec<(u32, Vec<u8>)> = Vec::new();
        for i in 0..(MAX_OOO as u32 + 1) {
            segs.push((1010 + i * 2, b"a\n".to_vec()));
        }
        let refs: Vec<(u32, &[u8])> = segs.iter().map(|(s, d)| (*s, d.as_slice())).collect();
        let (l, s) = run(&refs);
        assert_eq!(l.gaps, [10]);
        assert_eq!(s.gaps, 1);
        assert_eq!(l.lines.len(), MAX_OOO + 1);
    }

    #[test]
    fn caps_bypass_instead_of_growing() {
        let mut pool = BufPool::new(8192, 16);
        let mut s = Stream::default();
        s.start(0);
        let mut sink = Lines::default();
        s.segment(0, b"no newline here and longer than sixteen", &mut pool, &mut sink);
        assert_eq!(s.bypass, Some(Bypass::SessionCap));
        assert_eq!(pool.in_use(), 0);
        // Per-core cap, in bytes held: two streams holding 7 bytes each fit a pool of 16, a
        // third does not; nothing is charged for the cap a stream could grow to.
        let mut pool = BufPool::new(16, 16);
        let (mut a, mut b, mut c) = (Stream::default(), Stream::default(), Stream::default());
        for x in [&mut a, &mut b, &mut c] {
            x.start(0);
        }
        a.segment(0, b"partial", &mut pool, &mut sink);
        b.segment(0, b"partial", &mut pool, &mut sink);
        assert_eq!(pool.in_use(), 14);
        c.segment(0, b"partial", &mut pool, &mut sink);
        assert_eq!((a.bypass, b.bypass, c.bypass), (None, None, Some(Bypass::CoreCap)));
        // Consumed bytes are credited back.
        a.segment(7, b"\n", &mut pool, &mut sink);
        assert_eq!(pool.in_use(), 7);
        a.release(&mut pool);
        b.release(&mut pool);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn conflicts_are_found_after_the_parser_consumed_the_bytes() {
        let mut pool = BufPool::new(1 << 20, 4096);
        let mut s = Stream::default();
        s.start(1000);
        let mut sink = Lines::default();
        assert_eq!(s.segment(1000, b"one\ntwo\n", &mut pool, &mut sink), 0);
        assert_eq!(sink.lines, ["one", "two"], "consumed: nothing pending");
        // Differing bytes, counted one by one; the first copy is what was delivered.
        assert_eq!(s.segment(1002, b"X\ntwX", &mut pool, &mut sink), 2);
        assert_eq!(s.overlaps_differ, 2);
        assert_eq!(s.segment(1000, b"one\n", &mut pool, &mut sink), 0);
        // Acknowledged bytes are the receiver's to drop: never compared, and let go.
        s.acked(1004, &mut pool);
        assert_eq!(pool.kept(), 4);
        assert_eq!(s.segment(1000, b"ZZZZtwo\n", &mut pool, &mut sink), 0);
        s.acked(1008, &mut pool);
        assert_eq!(pool.kept(), 0);
        // A retransmission that also brings new bytes delivers only those.
        assert_eq!(s.segment(1004, b"twY\nthree\n", &mut pool, &mut sink), 0, "acknowledged");
        assert_eq!(sink.lines, ["one", "two", "three"]);
        s.release(&mut pool);
        assert_eq!((pool.in_use(), pool.kept()), (0, 0));
    }

    #[test]
    fn kept_bytes_wrap_in_their_ring_and_respect_the_budget() {
        // Ring of 16 bytes per stream (the session cap), core budget 20.
        let mut pool = BufPool::new(20, 16);
        let mut s = Stream::default();
        s.start(0);
        let mut sink = Lines::default();
        for i in 0..10u32 {
            s.segment(i * 5, b"abcd\n", &mut pool, &mut sink);
            if i % 3 == 0 && i < 9 {
                s.acked(i * 5 + 2, &mut pool);
            }
        }
        // Acknowledged up to 32; the last 16 bytes (34..50) are kept and compared, 32 and 33
        // are neither acknowledged nor kept.
        assert_eq!(pool.kept(), 16);
        assert_eq!(s.segment(45, b"abcX\n", &mut pool, &mut sink), 1);
        let unverified = s.unverified;
        assert_eq!(s.segment(30, b"abcd\n", &mut pool, &mut sink), 0);
        assert_eq!(s.unverified - unverified, 2, "bytes 32 and 33 were no longer kept");
        // A second stream finds the budget nearly spent: it keeps nothing, inspects everything.
        let mut t = Stream::default();
        t.start(0);
        let mut sink2 = Lines::default();
        t.segment(0, b"0123456789\n", &mut pool, &mut sink2);
        assert_eq!(sink2.lines, ["0123456789"]);
        assert!(pool.kept() <= 20);
        assert_eq!(t.bypass, None);
        s.release(&mut pool);
        t.release(&mut pool);
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn urgent_bytes_leave_the_stream_as_linux_reads_them() {
        let (mut pool, mut sink) = (BufPool::new(1 << 20, 4096), Lines::default());
        let mut s = Stream::default();
        s.start(0);
        s.urgent(6);
        s.segment(0, b"/malicXious\n", &mut pool, &mut sink);
        assert_eq!(sink.lines, ["/malicious"]);
        // A mark on bytes already delivered, or older than the last one, is ignored.
        s.urgent(3);
        s.segment(12, b"ab\n", &mut pool, &mut sink);
        assert_eq!(sink.lines[1], "ab");
        // A newer mark replaces a pending one: the older byte stays in band.
        s.urgent(16);
        s.urgent(18);
        s.segment(15, b"0123456\n", &mut pool, &mut sink);
        assert_eq!(sink.lines[2], "012456");
        assert_eq!(s.urgent_bytes, 2);
        // The urgent byte in a later segment than its mark, and at a segment's last byte.
        s.urgent(27);
        s.segment(23, b"wxyz", &mut pool, &mut sink);
        s.segment(27, b"Q\n", &mut pool, &mut sink);
        assert_eq!(sink.lines[3], "wxyz");
        s.release(&mut pool);
    }

    #[test]
    fn sequence_wraps() {
        let mut pool = BufPool::new(1 << 20, 4096);
        let mut s = Stream::default();
        s.start(u32::MAX - 2);
        let mut sink = Lines::default();
        s.segment(u32::MAX - 2, b"ab", &mut pool, &mut sink);
        s.segment(u32::MAX, b"c\nd\n", &mut pool, &mut sink);
        assert_eq!(sink.lines, ["abc", "d"]);
    }
}
