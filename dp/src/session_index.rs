//! The session table's key index ([`crate::session`]): flow key → slot number.
//!
//! Robin Hood hashing with linear probing over 4-byte buckets, each the slot number (26 bits)
//! and the entry's distance from its home bucket (6 bits), and backward-shift deletion. So:
//! - 4 bytes per bucket and at most 7 of 10 buckets full: 5.7 to 11.4 bytes per session
//!   (8 at 2^20 sessions), allocated at start, never grown;
//! - no tombstones, so no rehash and no stall however long a flood churns a full table
//!   (hashbrown, used before, left tombstones that eventually forced it to rehash or allocate a
//!   bigger table on the packet path);
//! - insertion and deletion read and write buckets only; a lookup compares the key of the
//!   slots whose entry has the probe's home bucket (entries at the probe's distance), on
//!   average 0.35 of them on a miss at the highest load, and stops at the first entry closer to
//!   its home than the probe is to the key's (Robin Hood's order), so a miss scans a few
//!   buckets, mostly in one cache line.
//!
//! The hash is seeded at random per table (foldhash through hashbrown's default hasher), so an
//! attacker cannot choose keys that land together. A probe distance of 63 buckets is the
//! bound; an insertion that would pass it is refused (the flow gets no session, counted in
//! [`crate::session::TableStats::index_refused`]; at 70 % load with random hashes this does
//! not happen in practice).

use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

use crate::flow::FlowKey;

/// Bits of a bucket that hold the slot number.
const SLOT_BITS: u32 = 26;
/// Mask of the slot number.
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Largest distance from the home bucket.
pub const MAX_DIST: u32 = (1 << (32 - SLOT_BITS)) - 1;
/// An empty bucket (no slot number is `SLOT_MASK`).
const EMPTY: u32 = u32::MAX;

/// Most slots an index can name.
pub const MAX_SLOTS: usize = SLOT_MASK as usize;

/// Flow key → slot number, for a table of at most [`MAX_SLOTS`] sessions. See the module docs.
#[derive(Debug)]
pub struct Index {
    buckets: Box<[u32]>,
    mask: usize,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl Index {
    /// An index for `max` keys (1..=[`MAX_SLOTS`]), allocated now: the power of two of buckets
    /// that keeps it at most 70 % full (at least 128).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, MAX_SLOTS);
        let n = (max.saturating_mul(10) / 7 + 1).next_power_of_two().max(128);
        Index { buckets: vec![EMPTY; n].into_boxed_slice(), mask: n - 1, len: 0, hasher: DefaultHashBuilder::default() }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<u32>()
    }

    /// The hash of `key` (to pass to [`Self::find`], [`Self::insert`] and [`Self::remove`]).
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // foldhash mixes into every bit; the high half is its strongest.
        (hash >> 32 ^ hash) as usize & self.mask
    }

    /// The slot of the key whose hash is `hash`, when `key_of(slot)` is that key.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut p = self.home(hash);
        let mut d = 0u32;
        loop {
            let b = self.buckets[p];
            if b == EMPTY || b >> SLOT_BITS < d {
                return None;
            }
            if b >> SLOT_BITS == d && is_key(b & SLOT_MASK) {
                return Some(b & SLOT_MASK);
            }
            d += 1;
            if d > MAX_DIST {
                return None;
            }
            p = (p + 1) & self.mask;
        }
    }

    /// Adds slot `slot` (< [`MAX_SLOTS`]) under `hash` (its key must not be in the index).
    /// False, with nothing changed, when the index is full or an entry would move past
    /// [`MAX_DIST`] from its home.
    pub fn insert(&mut self, hash: u64, slot: u32) -> bool {
        debug_assert!(slot < SLOT_MASK);
        if self.len >= self.mask {
            return false;
        }
        // Where the new entry goes: the first bucket that is empty or whose entry is closer to
        // its home than the new one would be (Robin Hood).
        let mut p = self.home(hash);
        let mut d = 0u32;
        loop {
            let b = self.buckets[p];
            if b == EMPTY || b >> SLOT_BITS < d {
                break;
            }
            d += 1;
            if d > MAX_DIST {
                return false;
            }
            p = (p + 1) & self.mask;
        }
        // The entries from there to the next empty bucket move one bucket on: none may pass
        // the bound.
        let at = p;
        let mut q = p;
        while self.buckets[q] != EMPTY {
            if self.buckets[q] >> SLOT_BITS >= MAX_DIST {
                return false;
            }
            q = (q + 1) & self.mask;
        }
        while q != at {
            let prev = (q + self.mask) & self.mask;
            self.buckets[q] = self.buckets[prev] + (1 << SLOT_BITS);
            q = prev;
        }
        self.buckets[at] = d << SLOT_BITS | slot;
        self.len += 1;
        true
    }

    /// Removes slot `slot`, held under `hash`. False when it is not there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let mut p = self.home(hash);
        let mut d = 0u32;
        loop {
            let b = self.buckets[p];
            if b == EMPTY || b >> SLOT_BITS < d {
                return false;
            }
            if b & SLOT_MASK == slot {
                break;
            }
            d += 1;
            if d > MAX_DIST {
                return false;
            }
            p = (p + 1) & self.mask;
        }
        // Backward shift: the entries after it that are not at home move one bucket back.
        loop {
            let n = (p + 1) & self.mask;
            let b = self.buckets[n];
            if b == EMPTY || b >> SLOT_BITS == 0 {
                self.buckets[p] = EMPTY;
                break;
            }
            self.buckets[p] = b - (1 << SLOT_BITS);
            p = n;
        }
        self.len -= 1;
        true
    }

    /// The slot numbers held, in bucket order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets.iter().filter(|&&b| b != EMPTY).map(|&b| b & SLOT_MASK)
    }

    /// The largest distance of an entry from its home (for tests and benchmarks).
    pub fn max_dist(&self) -> u32 {
        self.buckets.iter().filter(|&&b| b != EMPTY).map(|&b| b >> SLOT_BITS).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;

    fn key(i: u32) -> FlowKey {
        FlowKey::new(0, 6, Addr::v4([198, 18, (i >> 8) as u8, i as u8]), (i >> 16) as u16 + 1024, Addr::v4([198, 19, 0, 1]), 80).0
    }

    /// An index and the keys of its slots (slot i holds `keys[i]`).
    struct Rig {
        ix: Index,
        keys: Vec<Option<FlowKey>>,
    }

    impl Rig {
        fn new(max: usize) -> Self {
            Rig { ix: Index::new(max), keys: vec![None; max] }
        }

        fn find(&self, k: &FlowKey) -> Option<u32> {
            let keys = &self.keys;
            self.ix.find(self.ix.hash(k), |s| keys[s as usize] == Some(*k))
        }

        fn insert(&mut self, slot: u32, k: FlowKey) -> bool {
            let ok = self.ix.insert(self.ix.hash(&k), slot);
            if ok {
                self.keys[slot as usize] = Some(k);
            }
            ok
        }

        fn remove(&mut self, slot: u32) {
            let k = self.keys[slot as usize].take().unwrap();
            assert!(self.ix.remove(self.ix.hash(&k), slot));
        }
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else_through_heavy_churn() {
        // 1000 slots, each replaced 200 times by a new key: every live key is found at its
        // slot, every removed one is not, the buckets never fill up with leftovers.
        let mut r = Rig::new(1000);
        let bytes = r.ix.bytes();
        let mut next = 0u32;
        for s in 0..1000u32 {
            assert!(r.insert(s, key(next)));
            next += 1;
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let s = x % 1000;
            let old = r.keys[s as usize].unwrap();
            r.remove(s);
            assert_eq!(r.find(&old), None);
            assert!(r.insert(s, key(next)));
            assert_eq!(r.find(&key(next)), Some(s));
            next += 1;
        }
        assert_eq!((r.ix.len(), r.ix.bytes()), (1000, bytes));
        for s in 0..1000u32 {
            let k = r.keys[s as usize].unwrap();
            assert_eq!(r.find(&k), Some(s));
        }
        assert_eq!(r.ix.slots().count(), 1000);
        assert!(r.ix.max_dist() < 32, "{}", r.ix.max_dist());
        // Removing what is not there changes nothing.
        assert!(!r.ix.remove(r.ix.hash(&key(0)), 7));
        assert_eq!(r.ix.len(), 1000);
    }

    #[test]
    fn a_full_index_refuses_without_changing_anything() {
        // 200 keys at most 70 % full: 512 buckets.
        assert_eq!(Index::new(200).bytes(), 512 * 4);
        // 128 buckets (the least) offered 200 keys: at most 127 fit (one bucket stays empty),
        // fewer when probes would pass the bound; the refused ones leave the rest as it was.
        let mut r2 = Rig { ix: Index::new(1), keys: vec![None; 200] };
        assert_eq!(r2.ix.bytes(), 128 * 4);
        let mut held = 0;
        for s in 0..200u32 {
            if r2.insert(s, key(s)) {
                held += 1;
            }
        }
        assert!((100..=127).contains(&held), "{held}");
        for s in 0..200u32 {
            if let Some(k) = r2.keys[s as usize] {
                assert_eq!(r2.find(&k), Some(s));
            } else {
                assert_eq!(r2.find(&key(s)), None);
            }
        }
        assert_eq!(r2.ix.len(), held);
        // At its 70 % load, a table of a million keys keeps its probes short.
        let mut big = Index::new(1 << 20);
        for s in 0..(1u32 << 20) {
            assert!(big.insert(big.hash(&key(s)), s));
        }
        assert!(big.max_dist() < 48, "{}", big.max_dist());
    }
}
