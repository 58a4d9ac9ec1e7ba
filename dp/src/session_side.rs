//! The session table's side parts ([`crate::session`]): what only few sessions need, kept out
//! of the table's entries so that an entry stays within its budget (256 bytes per session for
//! the whole table, see `ARCHITECTURE.md` "Memory per session"). Each part is allocated at
//! start, bounded, and has an answer when it is full that turns off no check (it only loses a
//! detail of a record, counted):
//!
//! - [`Wide`]: the high 32 bits of the counters of the sessions whose frames, bytes, dropped
//!   frames or dropped bytes in one direction passed 2^32 (an entry keeps the low 32 bits of
//!   each). Passing 2^32 takes 4 GiB (bytes) or 4 G frames through one worker per session, so
//!   an attacker who wants to fill the part has to push `capacity` × 4 GiB through sessions he
//!   keeps open. Full: the counter stops at 2^32 − 1 (never wraps), counted in
//!   [`SideStats::wide_full`].
//! - [`Tunnels`]: the tunnel ends (type, id, outer addresses) of inner flows of tunnels,
//!   shared by the sessions that ride the same tunnel (interned, with a reference count): a
//!   host with 10 000 sessions over VXLAN to 20 nodes holds 20 entries. Full (spoofed outer
//!   addresses can make each inner flow's ends different): the session's record has no
//!   `tunnel` object, counted in [`SideStats::tunnel_ends_full`]. The flow itself is keyed in
//!   its tunnel's segment ([`crate::flow::FlowKey::seg`]) and inspected as before.
//! - [`Reasons`]: the reasons (`&'static str`) of sessions' first threats, interned into one
//!   byte. They are string constants of the code, so the set is finite and no input grows it;
//!   past 255 distinct reasons the record's reason is empty, counted in
//!   [`SideStats::reasons_full`].
//!
//! Hash tables here are created with room for twice their entries, so hashbrown always
//! rehashes in place and never allocates after start (it allocates a bigger table when a
//! table with tombstones is more than half full).

use hashbrown::DefaultHashBuilder;
use hashbrown::{HashMap, HashTable};
use std::hash::BuildHasher;

/// Index of a counter in [`crate::session::Session`]'s counters and in a [`Wide`] entry:
/// `base + direction` ([`crate::session::Dir`] as usize).
pub mod counter {
    /// Frames seen.
    pub const PACKETS: usize = 0;
    /// Frame bytes seen (L2, no FCS).
    pub const BYTES: usize = 2;
    /// Frames Warden dropped (included in [`PACKETS`]).
    pub const DROPPED_PACKETS: usize = 4;
    /// Bytes of the frames Warden dropped (included in [`BYTES`]).
    pub const DROPPED_BYTES: usize = 6;
    /// Counters per session.
    pub const N: usize = 8;
}

/// Counters of the side parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideStats {
    /// Sessions holding a [`Wide`] entry now.
    pub wide: u64,
    /// Carries past 2^32 that found no free [`Wide`] entry: that counter stopped at 2^32 − 1.
    pub wide_full: u64,
    /// Distinct tunnel ends held now ([`Tunnels`]).
    pub tunnel_ends: u64,
    /// Inner-flow sessions whose tunnel ends found no free entry (no `tunnel` in their record).
    pub tunnel_ends_full: u64,
    /// First threats whose reason found no free entry (an empty reason in their record).
    pub reasons_full: u64,
}

/// High 32 bits of the counters of the sessions that passed 2^32 in one of them, by table
/// slot. See the module docs.
#[derive(Debug)]
pub struct Wide {
    map: HashMap<u32, [u32; counter::N]>,
    cap: usize,
}

impl Wide {
    /// Room for `cap` sessions (at least 1), allocated now.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Wide { map: HashMap::with_capacity(cap.saturating_mul(2)), cap }
    }

    /// Sessions it can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sessions it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.map.allocation_size()
    }

    /// Adds `carry` × 2^32 to counter `c` of slot `slot`, taking an entry for it if it has
    /// none. False when it has none and none is free (nothing added). Saturates at 2^64 − 1.
    pub fn carry(&mut self, slot: u32, c: usize, carry: u64) -> bool {
        if !self.map.contains_key(&slot) && self.map.len() >= self.cap {
            return false;
        }
        let hi = self.map.entry(slot).or_insert([0; counter::N]);
        hi[c] = u32::try_from(u64::from(hi[c]).saturating_add(carry)).unwrap_or(u32::MAX);
        true
    }

    /// The high words of slot `slot` (zeros when it has no entry).
    #[inline]
    pub fn get(&self, slot: u32) -> [u32; counter::N] {
        self.map.get(&slot).copied().unwrap_or_default()
    }

    /// Swaps the two directions of slot `slot`'s entry.
    pub fn swap_dirs(&mut self, slot: u32) {
        if let Some(hi) = self.map.get_mut(&slot) {
            for base in (0..counter::N).step_by(2) {
                hi.swap(base, base + 1);
            }
        }
    }

    /// Frees slot `slot`'s entry.
    pub fn remove(&mut self, slot: u32) {
        self.map.remove(&slot);
    }
}

/// A handle of [`Tunnels`] ([`NO_TUNNEL`]: none).
pub type TunnelHandle = u16;

/// The handle of no tunnel ends.
pub const NO_TUNNEL: TunnelHandle = u16::MAX;

/// Tunnel ends of inner-flow sessions, interned and counted by reference. See the module docs.
#[derive(Debug)]
pub struct Tunnels {
    /// (ends, sessions referring to them); 0 references: free.
    ends: Vec<(crate::tunnel::TunnelEnds, u32)>,
    free: Vec<TunnelHandle>,
    index: HashTable<TunnelHandle>,
    hasher: DefaultHashBuilder,
}

impl Tunnels {
    /// Largest capacity (handles are `u16`, one value means none).
    pub const MAX: usize = NO_TUNNEL as usize;

    /// Room for `cap` distinct ends (1..=[`Self::MAX`]), allocated now.
    pub fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, Self::MAX);
        let vacant = crate::tunnel::TunnelEnds {
            kind: crate::tunnel::Kind::Vxlan,
            id: 0,
            outer: [crate::flow::Addr([0; 16]); 2],
        };
        Tunnels {
            ends: vec![(vacant, 0); cap],
            free: (0..cap as TunnelHandle).rev().collect(),
            index: HashTable::with_capacity(cap * 2),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Distinct ends it can hold.
    pub fn capacity(&self) -> usize {
        self.ends.len()
    }

    /// Distinct ends held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.ends.capacity() * std::mem::size_of::<(crate::tunnel::TunnelEnds, u32)>()
            + self.free.capacity() * std::mem::size_of::<TunnelHandle>()
            + self.index.allocation_size()
    }

    fn hash(&self, e: &crate::tunnel::TunnelEnds) -> u64 {
        self.hasher.hash_one((e.kind as u8, e.id, e.outer[0].0, e.outer[1].0))
    }

    /// A reference to `e` for one more session: its handle, [`NO_TUNNEL`] when `e` is new and
    /// no entry is free.
    pub fn intern(&mut self, e: &crate::tunnel::TunnelEnds) -> TunnelHandle {
        let h = self.hash(e);
        let ends = &self.ends;
        if let Some(i) = self.index.find(h, |&i| ends[usize::from(i)].0 == *e).copied() {
            self.ends[usize::from(i)].1 += 1;
            return i;
        }
        let Some(i) = self.free.pop() else { return NO_TUNNEL };
        self.ends[usize::from(i)] = (*e, 1);
        let (ends, hasher) = (&self.ends, &self.hasher);
        self.index.insert_unique(h, i, |&j| {
            let e = &ends[usize::from(j)].0;
            hasher.hash_one((e.kind as u8, e.id, e.outer[0].0, e.outer[1].0))
        });
        i
    }

    /// The ends of handle `i` (`None` for [`NO_TUNNEL`]).
    #[inline]
    pub fn get(&self, i: TunnelHandle) -> Option<crate::tunnel::TunnelEnds> {
        self.ends.get(usize::from(i)).filter(|e| e.1 > 0).map(|e| e.0)
    }

    /// Drops one session's reference to handle `i`; the entry is free once none is left.
    pub fn release(&mut self, i: TunnelHandle) {
        let Some(e) = self.ends.get_mut(usize::from(i)) else { return };
        if e.1 == 0 {
            return;
        }
        e.1 -= 1;
        if e.1 > 0 {
            return;
        }
        let h = self.hash(&self.ends[usize::from(i)].0);
        if let Ok(entry) = self.index.find_entry(h, |&j| j == i) {
            entry.remove();
        }
        self.free.push(i);
    }
}

/// Reasons of sessions' first threats, interned into one byte (0: no reason). See the module
/// docs.
#[derive(Debug)]
pub struct Reasons {
    list: Vec<&'static str>,
}

impl Reasons {
    /// Distinct reasons it can hold, besides the empty one.
    pub const MAX: usize = 255;

    /// An empty set, allocated now.
    pub fn new() -> Self {
        let mut list = Vec::with_capacity(Self::MAX + 1);
        list.push("");
        Reasons { list }
    }

    /// The byte of `reason`, `None` when it is new and the set is full.
    pub fn intern(&mut self, reason: &'static str) -> Option<u8> {
        if let Some(i) = self.list.iter().position(|r| std::ptr::eq(*r, reason) || *r == reason) {
            return u8::try_from(i).ok();
        }
        if self.list.len() > Self::MAX {
            return None;
        }
        self.list.push(reason);
        u8::try_from(self.list.len() - 1).ok()
    }

    /// The reason of byte `i` (empty when unknown).
    #[inline]
    pub fn get(&self, i: u8) -> &'static str {
        self.list.get(usize::from(i)).copied().unwrap_or("")
    }
}

impl Default for Reasons {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;
    use crate::tunnel::Kind;

    fn ends(n: u8) -> crate::tunnel::TunnelEnds {
        crate::tunnel::TunnelEnds { kind: Kind::Vxlan, id: 42, outer: [Addr::v4([198, 18, 1, n]), Addr::v4([198, 18, 2, 1])] }
    }

    #[test]
    fn wide_holds_carries_up_to_its_capacity_then_refuses_without_allocating() {
        let mut w = Wide::new(4);
        let bytes = w.bytes();
        for slot in 0..4 {
            assert!(w.carry(slot, counter::BYTES, 1));
        }
        // Full: a fifth session gets no entry; the four keep theirs and carry on.
        assert!(!w.carry(4, counter::PACKETS, 1));
        assert_eq!(w.get(4), [0; counter::N]);
        assert!(w.carry(0, counter::BYTES, 2));
        assert_eq!(w.get(0)[counter::BYTES], 3);
        // Churn: entries freed and taken again many times, the table never grows.
        for round in 0..10_000u32 {
            w.remove(round % 4);
            assert!(w.carry(100 + round, counter::DROPPED_BYTES + 1, 1));
            w.remove(100 + round);
            assert!(w.carry(round % 4, counter::BYTES, 1));
        }
        assert_eq!((w.len(), w.bytes()), (4, bytes));
        // Saturates instead of wrapping.
        assert!(w.carry(1, counter::PACKETS, u64::MAX));
        assert_eq!(w.get(1)[counter::PACKETS], u32::MAX);
    }

    #[test]
    fn wide_swaps_directions() {
        let mut w = Wide::new(1);
        assert!(w.carry(7, counter::PACKETS, 1));
        assert!(w.carry(7, counter::DROPPED_BYTES + 1, 2));
        w.swap_dirs(7);
        let hi = w.get(7);
        assert_eq!((hi[counter::PACKETS], hi[counter::PACKETS + 1]), (0, 1));
        assert_eq!((hi[counter::DROPPED_BYTES], hi[counter::DROPPED_BYTES + 1]), (2, 0));
    }

    #[test]
    fn tunnel_ends_are_shared_counted_and_refused_when_full() {
        let mut t = Tunnels::new(2);
        let bytes = t.bytes();
        let a = t.intern(&ends(1));
        assert_eq!(t.intern(&ends(1)), a, "the same ends share one entry");
        let b = t.intern(&ends(2));
        assert_ne!(a, b);
        // Full: new ends get no handle; known ends still do.
        assert_eq!(t.intern(&ends(3)), NO_TUNNEL);
        assert_eq!(t.intern(&ends(2)), b);
        assert_eq!(t.get(a), Some(ends(1)));
        assert_eq!(t.get(NO_TUNNEL), None);
        // An entry is free only when its last session lets it go.
        t.release(a);
        assert_eq!(t.intern(&ends(3)), NO_TUNNEL);
        t.release(a);
        assert_eq!(t.get(a), None);
        let c = t.intern(&ends(3));
        assert_eq!((c, t.get(c)), (a, Some(ends(3))));
        // Churn through the freed entry never grows the table.
        for n in 0..10_000u32 {
            t.release(c);
            let e = crate::tunnel::TunnelEnds { id: n, ..ends(4) };
            let h = t.intern(&e);
            assert_ne!(h, NO_TUNNEL);
            assert_eq!(t.get(h), Some(e));
            t.release(h);
            assert_eq!(t.intern(&ends(3)), c);
        }
        assert_eq!((t.len(), t.bytes()), (2, bytes));
        // Releasing a free or unknown handle is ignored.
        t.release(NO_TUNNEL);
        t.release(c);
        t.release(c);
        t.release(c);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn reasons_intern_by_content_and_stop_at_their_limit() {
        let mut r = Reasons::new();
        let a = r.intern("syn_from_server").unwrap();
        assert_eq!(r.intern("syn_from_server"), Some(a));
        assert_eq!((r.get(a), r.get(0), r.get(200)), ("syn_from_server", "", ""));
        assert_eq!(r.intern(""), Some(0));
        let names: Vec<&'static str> = (0..300).map(|i| &*Box::leak(format!("r{i}").into_boxed_str())).collect();
        let got: Vec<Option<u8>> = names.iter().map(|n| r.intern(n)).collect();
        assert_eq!(got.iter().filter(|g| g.is_some()).count(), Reasons::MAX - 1);
        assert!(got[Reasons::MAX..].iter().all(|g| g.is_none()));
        assert_eq!(r.get(got[10].unwrap()), "r10");
        assert_eq!(r.intern("syn_from_server"), Some(a), "known reasons still resolve when full");
    }
}
