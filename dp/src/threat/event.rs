//! Threat events: one detection as the worker hands it on ([`ThreatHit`]), and their merging
//! ([`Merger`]): at most one event per (threat, client, server) per [`MERGE_INTERVAL_NS`],
//! carrying how many detections it stands for, so that a flood produces a bounded stream of
//! events and none is silently lost.
//!
//! The merge key's client and server are the workload when the address belongs to one, the
//! address otherwise (flood detectors raise with an unspecified client: one key per victim).
//! Each worker merges into a fixed table of slots (direct-mapped by the key's hash; a slot
//! taken over by another key first hands on what it held), and the control thread merges the
//! workers' events the same way (a key's flows can be owned by different workers). The first
//! detection of a key is an event at once; later ones within the interval are counted into a
//! pending event (with the frame of the first of them), sent when the interval is over.

use crate::app::{Dir, Text};
use crate::detect::{Action, ThreatId, EVIDENCE};
use crate::flow::Addr;
use crate::policy::WorkloadIdx;

/// Events of one key are at most one per this many ns (10 s, as NeuVector merges them).
pub const MERGE_INTERVAL_NS: u64 = 10_000_000_000;
/// Bytes of the offending frame an event carries (from the Ethernet header on).
pub const FRAME_BYTES: usize = 256;

/// One side of a merge key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A workload of the policy.
    Workload(u32),
    /// An address no workload owns (`Addr([0; 16])`: unspecified, many sources).
    Addr(Addr),
}

/// What events are merged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MergeKey {
    /// The threat.
    pub id: ThreatId,
    /// The zone (VLAN or pair) of the flow.
    pub zone: u16,
    /// The client side.
    pub client: Side,
    /// The server side.
    pub server: Side,
}

impl MergeKey {
    /// A 64-bit hash (FNV-1a over the fields; the table is small and keys are not chosen to
    /// collide usefully: a collision only makes two keys share a slot, each handing on the
    /// other's pending count when it takes the slot over).
    fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= u64::from(x);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&[self.id as u8]);
        eat(&self.zone.to_le_bytes());
        for s in [self.client, self.server] {
            match s {
                Side::Workload(w) => eat(&w.to_le_bytes()),
                Side::Addr(a) => eat(&a.0),
            }
        }
        h
    }
}

/// One detection (or, once merged, several of one key), as the worker hands it to the control
/// thread. Plain data, fixed size: no heap.
#[derive(Debug, Clone, Copy)]
pub struct ThreatHit {
    /// The threat.
    pub id: ThreatId,
    /// Direction of the offending bytes within the session (None: no session, e.g. a flood).
    pub dir: Option<Dir>,
    /// The detector's reason (which form it saw).
    pub reason: &'static str,
    /// Text the detector kept (an app parser's evidence; empty for frame-level threats).
    pub evidence: Text<EVIDENCE>,
    /// The flow's zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Client address (the session's client; for frames without a session, the sender; for
    /// floods, unspecified).
    pub client: Addr,
    /// Client port (0 when none).
    pub client_port: u16,
    /// Server address (the victim for floods).
    pub server: Addr,
    /// Server port.
    pub server_port: u16,
    /// The client's and the server's workloads.
    pub workloads: [Option<WorkloadIdx>; 2],
    /// The session (slab index, session id), if the detection belongs to one.
    pub session: Option<(u32, u64)>,
    /// What was done: `Alert` (reported only: alert/learn mode, or the threat's action),
    /// `Drop` or `Reset`.
    pub action: Action,
    /// Detections this event stands for (1 when not merged).
    pub count: u32,
    /// Packet clock of the first and the latest detection merged in (ns).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// The first bytes of the (first) offending frame.
    pub frame: [u8; FRAME_BYTES],
    /// Valid bytes in `frame`.
    pub frame_len: u16,
    /// The whole frame's length (bytes).
    pub frame_total: u32,
}

impl ThreatHit {
    /// The merge key: workloads where known, else addresses.
    pub fn key(&self) -> MergeKey {
        let side = |w: Option<WorkloadIdx>, a: Addr| match w {
            Some(w) => Side::Workload(w.0),
            None => Side::Addr(a),
        };
        MergeKey {
            id: self.id,
            zone: self.zone,
            client: side(self.workloads[0], self.client),
            server: side(self.workloads[1], self.server),
        }
    }

    /// The offending frame's first bytes.
    pub fn frame(&self) -> &[u8] {
        &self.frame[..usize::from(self.frame_len)]
    }

    /// Copies the first [`FRAME_BYTES`] of `frame` in.
    pub fn set_frame(&mut self, frame: &[u8]) {
        let n = frame.len().min(FRAME_BYTES);
        self.frame[..n].copy_from_slice(&frame[..n]);
        self.frame_len = n as u16;
        self.frame_total = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    }

    /// Folds `later` (of the same key) into this pending event: counts add up, the latest time
    /// and the strongest action are kept, the first frame stays.
    fn absorb(&mut self, later: &ThreatHit) {
        self.count = self.count.saturating_add(later.count);
        self.last_ns = self.last_ns.max(later.last_ns);
        if rank(later.action) > rank(self.action) {
            self.action = later.action;
        }
    }
}

/// Order of actions by strength (merged events report the strongest taken).
fn rank(a: Action) -> u8 {
    match a {
        Action::Off => 0,
        Action::Alert => 1,
        Action::Drop => 2,
        Action::Reset => 3,
    }
}

#[derive(Clone, Copy)]
struct Slot {
    key: Option<MergeKey>,
    /// When the key's latest event was sent (ns).
    sent_ns: u64,
    pending: Option<ThreatHit>,
}

/// Counters of a [`Merger`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Events sent on.
    pub events: u64,
    /// Detections folded into an event instead of being one.
    pub merged: u64,
    /// Detections lost because the outgoing queue was full (counted, never silent).
    pub overflow: u64,
}

/// Merges detections into events (see the module doc). Memory is fixed at construction:
/// `slots` keys and a queue of `queue` events.
pub struct Merger {
    slots: Vec<Slot>,
    queue: Vec<ThreatHit>,
    cap: usize,
    interval_ns: u64,
    /// Counters.
    pub stats: MergeStats,
    last_flush_ns: u64,
}

impl Merger {
    /// A merger of `slots` keys (rounded up to a power of two, at least 1) with an outgoing
    /// queue of at most `queue` events, merging over `interval_ns`.
    pub fn new(slots: usize, queue: usize, interval_ns: u64) -> Self {
        let n = slots.max(1).next_power_of_two();
        Merger {
            slots: vec![Slot { key: None, sent_ns: 0, pending: None }; n],
            queue: Vec::with_capacity(queue),
            cap: queue,
            interval_ns,
            stats: MergeStats::default(),
            last_flush_ns: 0,
        }
    }

    fn send(&mut self, h: ThreatHit) {
        if self.queue.len() < self.cap {
            self.queue.push(h);
            self.stats.events += 1;
        } else {
            self.stats.overflow = self.stats.overflow.saturating_add(u64::from(h.count));
        }
    }

    /// Takes detection(s) `h` (its `count`), at packet-clock time `now_ns`.
    pub fn add(&mut self, h: &ThreatHit, now_ns: u64) {
        let key = h.key();
        let mask = self.slots.len() - 1;
        let i = (key.hash() as usize) & mask;
        let slot = self.slots[i];
        if slot.key == Some(key) {
            if now_ns.saturating_sub(slot.sent_ns) < self.interval_ns {
                let mut p = slot.pending.unwrap_or(ThreatHit { count: 0, ..*h });
                p.absorb(h);
                self.slots[i].pending = Some(p);
                self.stats.merged += u64::from(h.count);
                return;
            }
            // The interval is over: what was pending goes out with this one.
            let mut out = slot.pending.unwrap_or(ThreatHit { count: 0, ..*h });
            out.absorb(h);
            self.slots[i] = Slot { key: Some(key), sent_ns: now_ns, pending: None };
            self.send(out);
            return;
        }
        // Another key (or none) held the slot: hand on what it held, then take it over.
        if let Some(p) = slot.pending {
            self.send(p);
        }
        self.slots[i] = Slot { key: Some(key), sent_ns: now_ns, pending: None };
        self.send(*h);
    }

    /// Sends the pending events whose interval is over and frees idle slots. Cheap to call
    /// often: it walks the table at most once per second of packet clock.
    pub fn flush(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_flush_ns) < 1_000_000_000 {
            return;
        }
        self.last_flush_ns = now_ns;
        self.flush_all(now_ns, false);
    }

    /// Sends every pending event whose interval is over (`force`: every pending event).
    pub fn flush_all(&mut self, now_ns: u64, force: bool) {
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if s.key.is_none() || (!force && now_ns.saturating_sub(s.sent_ns) < self.interval_ns) {
                continue;
            }
            match s.pending {
                Some(p) => {
                    self.slots[i] = Slot { key: s.key, sent_ns: now_ns, pending: None };
                    self.send(p);
                }
                None if !force => self.slots[i].key = None,
                None => {}
            }
        }
    }

    /// Moves the queued events into `out` (at most `max`); true when some are left.
    pub fn drain_upto(&mut self, out: &mut Vec<ThreatHit>, max: usize) -> bool {
        let n = self.queue.len().min(max);
        out.extend(self.queue.drain(..n));
        !self.queue.is_empty()
    }

    /// Queued events.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: ThreatId, client: u8, server: u8) -> ThreatHit {
        let mut h = ThreatHit {
            id,
            dir: Some(Dir::ToServer),
            reason: "test",
            evidence: Text::new(),
            zone: 1,
            proto: 6,
            client: Addr::v4([198, 18, 0, client]),
            client_port: 40000,
            server: Addr::v4([198, 18, 1, server]),
            server_port: 80,
            workloads: [None, None],
            session: None,
            action: Action::Alert,
            count: 1,
            first_ns: 0,
            last_ns: 0,
            frame: [0; FRAME_BYTES],
            frame_len: 0,
            frame_total: 0,
        };
        h.set_frame(&[client; 300]);
        h
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_flood_of_one_key_is_one_event_per_interval_with_its_count() {
        let mut m = Merger::new(64, 100, MERGE_INTERVAL_NS);
        let mut out = Vec::new();
        // 10 000 detections over 25 s: the first at once, then one per 10 s carrying the rest.
        for i in 0..10_000u64 {
            let now = i * 25 * S / 10_000;
            let mut h = hit(ThreatId::TcpSynFlood, 1, 2);
            h.first_ns = now;
            h.last_ns = now;
            m.add(&h, now);
            m.flush(now);
        }
        m.flush_all(30 * S, true);
        m.drain_upto(&mut out, usize::MAX);
        assert_eq!(out.iter().map(|e| u64::from(e.count)).sum::<u64>(), 10_000);
        assert!(out.len() <= 4, "{} events", out.len());
        assert_eq!(out[0].count, 1);
        for w in out.windows(2) {
            assert!(w[1].first_ns >= w[0].first_ns);
        }
        // The frame is the first detection's, cut at FRAME_BYTES.
        assert_eq!((out[0].frame_len, out[0].frame_total), (256, 300));
        assert_eq!(m.stats.overflow, 0);
    }

    #[test]
    fn keys_are_separate_and_a_taken_slot_hands_on_its_pending_count() {
        // One slot: every key collides.
        let mut m = Merger::new(1, 100, MERGE_INTERVAL_NS);
        let (a, b) = (hit(ThreatId::BadPacket, 1, 2), hit(ThreatId::BadPacket, 3, 2));
        m.add(&a, 0);
        m.add(&a, S);
        m.add(&a, 2 * S);
        m.add(&b, 3 * S);
        let mut out = Vec::new();
        m.drain_upto(&mut out, usize::MAX);
        let counts: Vec<(u8, u32)> = out.iter().map(|e| (e.client.0[15], e.count)).collect();
        assert_eq!(counts, [(1, 1), (1, 2), (3, 1)]);
        // Another threat on the same pair is another key.
        assert_ne!(hit(ThreatId::BadPacket, 1, 2).key(), hit(ThreatId::IcmpFlood, 1, 2).key());
    }

    #[test]
    fn a_full_queue_counts_what_it_loses() {
        let mut m = Merger::new(1024, 2, MERGE_INTERVAL_NS);
        for c in 0..5 {
            m.add(&hit(ThreatId::BadPacket, c, 9), 0);
        }
        assert_eq!((m.queued(), m.stats.overflow, m.stats.events), (2, 3, 2));
    }

    #[test]
    fn merged_counts_from_workers_add_up() {
        let mut m = Merger::new(16, 100, MERGE_INTERVAL_NS);
        let mut h = hit(ThreatId::IcmpFlood, 0, 5);
        m.add(&h, 0);
        h.count = 41;
        h.action = Action::Drop;
        m.add(&h, S);
        m.flush(11 * S);
        let mut out = Vec::new();
        m.drain_upto(&mut out, usize::MAX);
        assert_eq!(out.iter().map(|e| (e.count, e.action)).collect::<Vec<_>>(), [(1, Action::Alert), (41, Action::Drop)]);
    }
}
