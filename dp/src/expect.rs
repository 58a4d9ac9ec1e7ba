//! Expectations: flows announced by another flow, shared by all workers of the process.
//!
//! A TFTP request (RRQ/WRQ to port 69) is answered from a *new* server port: the transfer is a
//! new UDP 5-tuple, so a new session, whose first packet comes from the server and carries no
//! recognisable header (DATA/ACK are 4 bytes of numbers). When a parser sees such a request the
//! inspector registers an [`Expectation`] here: the client's address and port, the server's
//! address, the transport, an expiry, and what the related flow's parser needs
//! ([`Related`], opaque bytes the announcing parser wrote). When a worker creates a session it
//! looks the new flow up ([`ExpectTable::take`]); a hit says which end is the client and opens
//! the session's app context already decided, and consumes the expectation.
//!
//! The two flows may be owned by different workers (ownership hashes the 5-tuple), so the table
//! is shared: a fixed array of slots, each a sequence number and the entry's words, all atomics
//! (a seqlock per slot, [`crate::seqlock`]): a writer that loses the race for a slot tries
//! another, a reader discards copies a writer may have torn, and taking an entry is a write
//! (the claim makes sure only one worker consumes it).
//!
//! Bounded: `slots` entries (64 by default), nothing allocated after construction. An insert
//! refreshes an entry for the same request, else takes an empty slot, else an expired one,
//! else replaces the live entry closest to expiry (each case counted in [`ExpectStats`]).
//! Lookups only happen when a session is created and stop after one atomic load when no entry
//! can still be live (`horizon`, the latest expiry ever written, is in the past); otherwise
//! they scan the slots' first words.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::{Addr, End, FlowKey};
use crate::seqlock::SeqCell;

/// Bytes an announcing parser can pass to the related flow's parser.
pub const RELATED_BYTES: usize = 160;
/// Slots of a table built with [`ExpectTable::default`].
pub const DEFAULT_SLOTS: usize = 64;
/// Lifetime of an expectation in a table built with [`ExpectTable::default`] (ns): 10 s.
pub const DEFAULT_TTL_NS: u64 = 10_000_000_000;

const HEAD_WORDS: usize = 6;
const WORDS: usize = HEAD_WORDS + RELATED_BYTES / 8;
/// Times an insert retries after losing the race for its chosen slot.
const INSERT_RETRIES: usize = 4;

/// Opaque data for the related flow's parser (what the announcing parser wrote).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Related(pub [u8; RELATED_BYTES]);

impl Default for Related {
    fn default() -> Self {
        Related([0; RELATED_BYTES])
    }
}

impl std::fmt::Debug for Related {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Related({} bytes)", RELATED_BYTES)
    }
}

/// A flow announced by another one: the flow from `client:client_port` to `server` on any port
/// other than `server_port` (which is the announcing flow's), in `zone`, over `proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    /// Inline pair.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Index in [`crate::app::engine::CANDIDATES`] of the parser that opens the related flow
    /// (below 255).
    pub parser: u8,
    /// Client address of the announcing flow (also the related flow's client).
    pub client: Addr,
    /// Client port (the related flow uses the same one).
    pub client_port: u16,
    /// Server address (the related flow's server, on a new port).
    pub server: Addr,
    /// Server port of the announcing flow.
    pub server_port: u16,
    /// Unix time (ns) after which the expectation is void (set by [`ExpectTable::insert`]).
    pub expires_ns: u64,
    /// What the related flow's parser needs.
    pub data: Related,
}

impl Expectation {
    fn encode(&self) -> [u64; WORDS] {
        let mut w = [0u64; WORDS];
        w[0] = u64::from(self.zone) << 48
            | u64::from(self.proto) << 40
            | u64::from(self.parser.saturating_add(1)) << 32
            | u64::from(self.client_port) << 16
            | u64::from(self.server_port);
        let half = |a: &Addr, i: usize| u64::from_be_bytes(a.0[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        w[1] = half(&self.client, 0);
        w[2] = half(&self.client, 1);
        w[3] = half(&self.server, 0);
        w[4] = half(&self.server, 1);
        w[5] = self.expires_ns;
        for (word, chunk) in w[HEAD_WORDS..].iter_mut().zip(self.data.0.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        w
    }

    fn decode_head(w: &[u64]) -> Option<Expectation> {
        let tag = (w[0] >> 32) as u8;
        if tag == 0 {
            return None;
        }
        let addr = |a: u64, b: u64| {
            let mut o = [0u8; 16];
            o[..8].copy_from_slice(&a.to_be_bytes());
            o[8..].copy_from_slice(&b.to_be_bytes());
            Addr(o)
        };
        Some(Expectation {
            zone: (w[0] >> 48) as u16,
            proto: (w[0] >> 40) as u8,
            parser: tag - 1,
            client_port: (w[0] >> 16) as u16,
            server_port: w[0] as u16,
            client: addr(w[1], w[2]),
            server: addr(w[3], w[4]),
            expires_ns: w[5],
            data: Related::default(),
        })
    }

    fn decode(w: &[u64; WORDS]) -> Option<Expectation> {
        let mut e = Self::decode_head(w)?;
        for (chunk, word) in e.data.0.chunks_exact_mut(8).zip(&w[HEAD_WORDS..]) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Some(e)
    }

    fn same_request(&self, o: &Expectation) -> bool {
        (self.zone, self.proto, self.client, self.client_port, self.server, self.server_port)
            == (o.zone, o.proto, o.client, o.client_port, o.server, o.server_port)
    }

    /// The canonical end of `key` that is this expectation's client, when `key` is the related
    /// flow (same zone and protocol, the client's endpoint, the server's address on another port
    /// than the announcing flow's).
    pub fn client_end(&self, key: &FlowKey) -> Option<End> {
        if key.zone != self.zone || key.proto != self.proto {
            return None;
        }
        let is = |a: Addr, ap: u16, b: Addr, bp: u16| {
            a == self.client && ap == self.client_port && b == self.server && bp != self.server_port
        };
        if is(key.lo, key.lo_port, key.hi, key.hi_port) {
            Some(End::Lo)
        } else if is(key.hi, key.hi_port, key.lo, key.lo_port) {
            Some(End::Hi)
        } else {
            None
        }
    }
}

/// Counters of an [`ExpectTable`] (since start, all workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpectStats {
    /// Expectations written (new or refreshed).
    pub inserted: u64,
    /// Inserts that refreshed the entry of the same request (a retransmitted request).
    pub refreshed: u64,
    /// New sessions joined to their announcing flow.
    pub matched: u64,
    /// Entries overwritten after expiring unused.
    pub expired: u64,
    /// Live entries overwritten because every slot was in use (their flows stay unjoined).
    pub replaced: u64,
    /// Inserts abandoned after losing the race for a slot several times.
    pub failed: u64,
}

type Slot = SeqCell<WORDS>;

/// The shared expectation table. See the module docs.
pub struct ExpectTable {
    slots: Box<[Slot]>,
    ttl_ns: u64,
    horizon: AtomicU64,
    inserted: AtomicU64,
    refreshed: AtomicU64,
    matched: AtomicU64,
    expired: AtomicU64,
    replaced: AtomicU64,
    failed: AtomicU64,
}

impl Default for ExpectTable {
    fn default() -> Self {
        ExpectTable::new(DEFAULT_SLOTS, DEFAULT_TTL_NS)
    }
}

impl std::fmt::Debug for ExpectTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectTable").field("slots", &self.slots.len()).field("stats", &self.stats()).finish()
    }
}

impl ExpectTable {
    /// A table of `slots` entries (at least 1) whose expectations live `ttl_ns` nanoseconds.
    pub fn new(slots: usize, ttl_ns: u64) -> Self {
        ExpectTable {
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            ttl_ns,
            horizon: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters.
    pub fn stats(&self) -> ExpectStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExpectStats {
            inserted: l(&self.inserted),
            refreshed: l(&self.refreshed),
            matched: l(&self.matched),
            expired: l(&self.expired),
            replaced: l(&self.replaced),
            failed: l(&self.failed),
        }
    }

    /// Registers `e` at `now_ns` (its `expires_ns` becomes `now_ns` + the table's lifetime).
    /// Never blocks; counted when it had to drop a live entry or gave up.
    pub fn insert(&self, e: &Expectation, now_ns: u64) {
        let mut e = *e;
        e.expires_ns = now_ns.saturating_add(self.ttl_ns);
        let words = e.encode();
        self.horizon.fetch_max(e.expires_ns, Ordering::AcqRel);
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        enum Choice {
            Same,
            Empty,
            Expired,
            Live(u64),
        }
        for _ in 0..INSERT_RETRIES {
            let mut best: Option<(Choice, usize, u64)> = None;
            for (i, slot) in self.slots.iter().enumerate() {
                let Some((seq, head)) = slot.read::<HEAD_WORDS>() else { continue };
                let choice = match Expectation::decode_head(&head) {
                    None => Choice::Empty,
                    Some(old) if old.same_request(&e) => Choice::Same,
                    Some(old) if old.expires_ns <= now_ns => Choice::Expired,
                    Some(old) => Choice::Live(old.expires_ns),
                };
                if best.is_none_or(|(c, ..)| choice < c) {
                    best = Some((choice, i, seq));
                    if choice == Choice::Same {
                        break;
                    }
                }
            }
            let Some((choice, i, seq)) = best else { continue };
            if self.slots[i].write(seq, &words) {
                self.inserted.fetch_add(1, Ordering::Relaxed);
                let counter = match choice {
                    Choice::Same => Some(&self.refreshed),
                    Choice::Empty => None,
                    Choice::Expired => Some(&self.expired),
                    Choice::Live(_) => Some(&self.replaced),
                };
                if let Some(c) = counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The live expectation whose related flow is `key`, with the canonical end that is its
    /// client; the entry is consumed (a second lookup misses).
    pub fn take(&self, key: &FlowKey, now_ns: u64) -> Option<(Expectation, End)> {
        self.lookup(key, now_ns, true)
    }

    /// As [`Self::take`] without consuming the entry.
    pub fn peek(&self, key: &FlowKey, now_ns: u64) -> Option<(Expectation, End)> {
        self.lookup(key, now_ns, false)
    }

    fn lookup(&self, key: &FlowKey, now_ns: u64, consume: bool) -> Option<(Expectation, End)> {
        if self.horizon.load(Ordering::Acquire) <= now_ns {
            return None;
        }
        for slot in self.slots.iter() {
            let Some((_, head)) = slot.read::<HEAD_WORDS>() else { continue };
            let Some(h) = Expectation::decode_head(&head) else { continue };
            if h.expires_ns <= now_ns || h.client_end(key).is_none() {
                continue;
            }
            // A candidate: copy it whole, check it is still the same entry, and claim it.
            let Some((seq, words)) = slot.read::<WORDS>() else { continue };
            let Some(e) = Expectation::decode(&words) else { continue };
            let Some(end) = e.client_end(key).filter(|_| e.expires_ns > now_ns) else { continue };
            if consume {
                if !slot.write(seq, &[0]) {
                    continue;
                }
                self.matched.fetch_add(1, Ordering::Relaxed);
            }
            return Some((e, end));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;

    fn exp(client_port: u16, fill: u8) -> Expectation {
        Expectation {
            zone: 1,
            proto: 17,
            parser: 3,
            client: Addr::v4([198, 18, 0, 1]),
            client_port,
            server: Addr::v4([198, 18, 0, 2]),
            server_port: 69,
            expires_ns: 0,
            data: Related([fill; RELATED_BYTES]),
        }
    }

    /// The related flow's key, as a frame from the server's new port `sport` builds it.
    fn data_key(client_port: u16, sport: u16) -> (FlowKey, End) {
        FlowKey::new(1, 17, Addr::v4([198, 18, 0, 2]), sport, Addr::v4([198, 18, 0, 1]), client_port)
    }

    #[test]
    fn matches_the_related_flow_once_with_its_client_end() {
        let t = ExpectTable::new(8, 10 * SEC);
        t.insert(&exp(41234, 7), 100);
        let (k, server_end) = data_key(41234, 50000);
        // The server (198.18.0.2) sorts above the client: the client is the low end.
        assert_eq!(server_end, End::Hi);
        let (e, client) = t.peek(&k, 200).unwrap();
        assert_eq!(client, End::Lo);
        assert_eq!((e.parser, e.client_port, e.server_port, e.data.0[159]), (3, 41234, 69, 7));
        assert_eq!(e.expires_ns, 100 + 10 * SEC);
        assert!(t.take(&k, 200).is_some());
        assert!(t.take(&k, 200).is_none(), "consumed");
        assert_eq!(t.stats().matched, 1);
        // Other zone, protocol, client port, server address, or the request's own 5-tuple: no.
        t.insert(&exp(41235, 1), 100);
        let a = Addr::v4([198, 18, 0, 1]);
        let s = Addr::v4([198, 18, 0, 2]);
        for (zone, proto, cport, srv, sport) in [
            (2, 17, 41235, s, 5),
            (1, 6, 41235, s, 5),
            (1, 17, 41236, s, 5),
            (1, 17, 41235, a, 5),
            (1, 17, 41235, s, 69),
        ] {
            let k = FlowKey::new(zone, proto, srv, sport, a, cport).0;
            assert!(t.peek(&k, 200).is_none(), "{zone} {proto} {cport} {srv} {sport}");
        }
        assert!(t.peek(&data_key(41235, 5).0, 200).is_some());
    }

    #[test]
    fn entries_expire() {
        let t = ExpectTable::new(4, 10 * SEC);
        t.insert(&exp(1000, 0), SEC);
        let k = data_key(1000, 2000).0;
        assert!(t.peek(&k, 11 * SEC - 1).is_some());
        assert!(t.peek(&k, 11 * SEC).is_none());
        assert!(t.take(&k, 12 * SEC).is_none());
        // An expired entry is the first one reused (after empty slots), and counted.
        for p in 1..4 {
            t.insert(&exp(1000 + p, 0), 12 * SEC);
        }
        t.insert(&exp(2000, 0), 12 * SEC);
        let st = t.stats();
        assert_eq!((st.inserted, st.expired, st.replaced), (5, 1, 0));
        assert!(t.peek(&data_key(2000, 9).0, 12 * SEC).is_some());
        assert!(t.peek(&data_key(1001, 9).0, 12 * SEC).is_some());
    }

    #[test]
    fn capacity_is_bounded_and_the_oldest_live_entry_goes_first() {
        let t = ExpectTable::new(8, 10 * SEC);
        for p in 0..100u16 {
            t.insert(&exp(3000 + p, p as u8), u64::from(p) * 1000);
        }
        let st = t.stats();
        assert_eq!((st.inserted, st.replaced, st.failed), (100, 92, 0));
        let now = 100 * 1000;
        // The 8 newest survive, with their own data.
        for p in 0..100u16 {
            let hit = t.peek(&data_key(3000 + p, 7).0, now);
            assert_eq!(hit.is_some(), p >= 92, "{p}");
            if let Some((e, _)) = hit {
                assert_eq!(e.data.0, [p as u8; RELATED_BYTES]);
            }
        }
        // A retransmitted request refreshes its entry instead of taking another slot.
        t.insert(&exp(3099, 1), now);
        assert_eq!(t.stats().refreshed, 1);
        assert!(t.peek(&data_key(3098, 7).0, now).is_some());
        assert_eq!(t.peek(&data_key(3099, 7).0, now).unwrap().0.data.0[0], 1);
    }

    #[test]
    fn nothing_live_is_one_load() {
        let t = ExpectTable::new(4, SEC);
        assert!(t.peek(&data_key(1, 2).0, 0).is_none());
        t.insert(&exp(1, 0), 0);
        assert!(t.peek(&data_key(1, 2).0, SEC).is_none());
        assert!(t.peek(&data_key(1, 2).0, SEC - 1).is_some());
    }

    /// Writers keep overwriting a few entries with self-consistent contents (every data byte,
    /// the server port and the expiry derive from one stamp) while readers peek and take them:
    /// no reader ever sees a mixture of two writes.
    #[test]
    fn concurrent_readers_and_writers_never_see_a_torn_entry() {
        let t = Arc::new(ExpectTable::new(4, 1_000_000));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..2u16 {
            let (t, stop) = (t.clone(), stop.clone());
            handles.push(std::thread::spawn(move || {
                let mut stamp = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    stamp = stamp.wrapping_add(1);
                    let b = (stamp % 251) as u8;
                    let mut e = exp(5000 + (stamp % 6) as u16, b);
                    e.server_port = 100 + u16::from(b) + w * 1000;
                    t.insert(&e, u64::from(b));
                }
                0u64
            }));
        }
        for r in 0..2u16 {
            let (t, stop) = (t.clone(), stop.clone());
            handles.push(std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut i = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(1);
                    let k = data_key(5000 + i % 6, 9).0;
                    let hit = if i.wrapping_add(r) % 2 == 0 { t.take(&k, 0) } else { t.peek(&k, 0) };
                    if let Some((e, end)) = hit {
                        let b = e.data.0[0];
                        assert!(e.data.0.iter().all(|x| *x == b), "torn data {:?}", &e.data.0[..]);
                        assert_eq!(e.expires_ns, u64::from(b) + 1_000_000, "torn expiry");
                        assert_eq!(e.server_port % 1000, 100 + u16::from(b), "torn head");
                        assert_eq!((e.client_port, end), (5000 + i % 6, End::Lo));
                        seen += 1;
                    }
                }
                seen
            }));
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let reads: u64 = counts[2..].iter().sum();
        assert!(reads > 1000, "only {reads} entries read");
        let st = t.stats();
        assert!(st.matched > 100, "{st:?}");
    }
}
