//! IP reassembly (RFC 791 §3.2 for IPv4, RFC 8200 §4.5 for IPv6), per core, for inspection and
//! policy: the stage between decoding and the session pipeline.
//!
//! A fragment ([`crate::wire::Ip::frag`]) is not decided on its own. Its data is copied into the
//! core's reassembly memory and the frame itself is *held* by the caller (the worker keeps its
//! UMEM descriptor, [`crate::inspect::Verdict::Hold`]) under an opaque token. When the datagram
//! is complete, [`Defrag::assemble`] writes it, as one Ethernet frame, into a buffer: the first
//! fragment's L2 header and unfragmentable part (IPv4 header with options; IPv6 header and the
//! extension headers before the Fragment header, RFC 8200 §4.5), lengths patched, the
//! Fragment header removed, then the data. The inspector decodes that frame with the ordinary
//! decoder and runs it through the pipeline once; [`Defrag::release`] then hands every held
//! token of the datagram back with that one verdict ([`Releases`]). A datagram that fails
//! (budget full, too many fragments, timed out, inconsistent or too big) is released the same
//! way with the verdict the inspector gives its [`Failure`].
//!
//! Datagrams are keyed by zone, receiving interface, IP version, source, destination,
//! identification and, for IPv4, protocol (RFC 791). IPv6 fragments are matched without the
//! Next Header value, which RFC 8200 §4.5 takes from the offset-0 fragment only (as Linux
//! does): otherwise differing values would split a datagram the host reassembles whole. The
//! interface is part of the key, so a fragment sent from the other side of the pair cannot
//! complete (or overwrite part of) a datagram.
//!
//! What hosts do, and what is done here (Linux `ip_fragment.c`, `reassembly.c`, RFC 5722):
//! - the data of a non-last IPv4 fragment is used in whole 8-byte blocks (the rest ignored);
//!   a non-last IPv6 fragment whose length is not a multiple of 8 is discarded (RFC 8200);
//! - an empty fragment, a last fragment ending before data already seen or disagreeing with an
//!   earlier last fragment, and data beyond the end fail the datagram as malformed;
//! - a datagram longer than 65535 bytes (IPv4 total length; IPv6 payload length) fails as
//!   *too big* (counted: the future `ping_of_death` threat);
//! - overlapping fragments: bytes are compared; the first copy is kept. Identical overlaps
//!   and duplicates are harmless. Different bytes flag the datagram as *conflicting* (counted:
//!   the future `ip_teardrop` threat); the inspector drops it in protect mode. Linux discards
//!   partially overlapping datagrams and keeps the first copy of a contained duplicate, so
//!   what is inspected is never something a host delivers differently.
//!
//! Memory, per core, all allocated once in [`Defrag::new`] and reused: `max_datagrams` slots
//! (a hash map with its final capacity and an age list), per slot arrays for `max_fragments`
//! tokens and pieces, and `max_bytes` of data in [`CHUNK`]-byte chunks, charged as held
//! (a fragment takes `ceil(len / CHUNK)` chunks; the first fragment's headers take their own),
//! plus one assembly buffer of [`MAX_ASSEMBLED`] bytes kept by the inspector. Held frames are
//! bounded by `max_frames`. When a new datagram, a frame or data does not fit, the oldest
//! datagram is failed ([`Failure::Full`]) to make room; datagrams older than `timeout_ns`
//! fail with [`Failure::Timeout`] at [`Defrag::expire`]. Nothing is allocated per packet.

use hashbrown::HashMap;

use crate::flow::Addr;
use crate::inspect::Verdict;
use crate::rst::RstFrame;
use crate::wire::Frame;

/// Bytes per reassembly chunk.
pub const CHUNK: usize = 512;

/// Largest reassembled frame, in bytes: Ethernet with two VLAN tags (22), an IPv6 header (40)
/// and a payload of 65535 bytes.
pub const MAX_ASSEMBLED: usize = 22 + 40 + 65535;

const NIL: u32 = u32::MAX;

/// Limits of one core's reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragConfig {
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Fragments (frames, duplicates included) of one datagram.
    pub max_fragments: usize,
    /// Fragment frames held over all datagrams (each holds one UMEM frame in a worker).
    pub max_frames: usize,
    /// Bytes of fragment data and headers held, charged in [`CHUNK`]s.
    pub max_bytes: usize,
    /// A datagram not complete this long after its first fragment arrived fails (ns).
    pub timeout_ns: u64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 512,
            max_fragments: 128,
            max_frames: 1024,
            max_bytes: 4 << 20,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// Why a datagram (or a lone fragment) is released without being reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Fragments that no host reassembles: empty, inconsistent ends, data beyond the end, or a
    /// non-last IPv6 fragment not a multiple of 8 bytes long.
    Malformed,
    /// The datagram would be longer than 65535 bytes.
    TooBig,
    /// No room: datagrams, held frames or bytes, or fragments of this datagram.
    Full,
    /// Not complete within the timeout.
    Timeout,
    /// Its inline pair is being removed.
    Flushed,
}

/// Counters of one core's reassembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragment frames received.
    pub fragments: u64,
    /// Datagrams reassembled (each decided and inspected as one packet).
    pub reassembled: u64,
    /// Fragment frames held now.
    pub held: u64,
    /// Datagrams failed because they were not complete in time.
    pub timeouts: u64,
    /// Datagrams whose overlapping fragments carried different bytes (`ip_teardrop`).
    pub overlaps: u64,
    /// Datagrams longer than 65535 bytes (`ping_of_death`).
    pub too_big: u64,
    /// Datagrams failed for lack of room (evicted as the oldest, or over `max_fragments`).
    pub full: u64,
    /// Fragments or datagrams failed as malformed.
    pub malformed: u64,
    /// Datagrams released by the exception policy (room or timeout), forwarded or dropped.
    pub exceptions: u64,
}

/// Frames the pipeline held and now releases with one verdict: the fragments of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// What to do with every frame of the release.
    pub verdict: Verdict,
    /// With [`Verdict::Reset`]: the two resets built from the reassembled segment.
    pub resets: Option<[RstFrame; 2]>,
    /// Why the datagram was not reassembled (`None`: it was).
    pub failure: Option<Failure>,
    /// Source of the datagram.
    pub src: Addr,
    /// Destination of the datagram.
    pub dst: Addr,
    /// Zone (inline pair) it was received on.
    pub zone: u16,
    /// Interface slot it was received on.
    pub iface: u16,
    start: u32,
    end: u32,
}

/// Releases since the caller last cleared them: each with the tokens of its frames, in the
/// order the frames arrived. Capacity is reserved up front for everything that can be
/// released between two clears of a caller that clears at least once per 1024 frames.
#[derive(Debug)]
pub struct Releases {
    list: Vec<Release>,
    tokens: Vec<u64>,
}

impl Releases {
    fn new(datagrams: usize, frames: usize) -> Self {
        Releases {
            list: Vec::with_capacity(datagrams + 64),
            tokens: Vec::with_capacity(frames + 1024),
        }
    }

    /// No releases and no capacity (allocates nothing).
    pub(crate) fn empty() -> Self {
        Releases {
            list: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Each release with its frames' tokens.
    pub fn iter(&self) -> impl Iterator<Item = (&Release, &[u64])> + '_ {
        self.list
            .iter()
            .map(|r| (r, &self.tokens[r.start as usize..r.end as usize]))
    }

    /// True when nothing was released.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Frames released.
    pub fn frames(&self) -> usize {
        self.tokens.len()
    }

    /// Forgets every release (the caller has acted on them).
    pub fn clear(&mut self) {
        self.list.clear();
        self.tokens.clear();
    }

    /// Releases whose verdict is still to be decided (failed datagrams), for the inspector.
    pub(crate) fn undecided(&mut self) -> impl Iterator<Item = &mut Release> + '_ {
        self.list.iter_mut().filter(|r| r.verdict == Verdict::Hold)
    }
}

/// What became of a pushed fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Held (its datagram is incomplete, or failed and released with the fragment in it).
    Held,
    /// Held, and its datagram (slot) is complete: [`Defrag::assemble`], decide, then
    /// [`Defrag::release`].
    Complete(u32),
    /// Not held and in no release: the caller decides the frame alone for this reason.
    Refused(Failure),
}

/// What [`Defrag::assemble`] tells about a complete datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assembled {
    /// L2 bytes of all its fragment frames (what the session counts).
    pub frame_bytes: u32,
    /// Fragment frames.
    pub frames: usize,
    /// Overlapping fragments disagreed ([`DefragStats::overlaps`]).
    pub conflict: bool,
    /// Source.
    pub src: Addr,
    /// Destination.
    pub dst: Addr,
    /// Zone it was received on.
    pub zone: u16,
    /// Interface slot it was received on.
    pub iface: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Key {
    src: Addr,
    dst: Addr,
    id: u32,
    zone: u16,
    iface: u16,
    version: u8,
    /// IPv4 protocol; 0 for IPv6 (see the module docs).
    proto: u8,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: Key,
    live: bool,
    first_ns: u64,
    /// Age list (oldest first).
    prev: u32,
    next: u32,
    /// Length of the fragmentable part, once the last fragment was seen.
    total: Option<u32>,
    /// Highest end of data seen.
    max_end: u32,
    frame_bytes: u64,
    tokens: u32,
    pieces: u32,
    /// Chain holding the offset-0 fragment's L2 header and unfragmentable part.
    head: u32,
    head_len: u32,
    l2_len: u32,
    /// Offset of the PPPoE header in the L2 header (0: none), whose length field is set for
    /// the assembled datagram.
    pppoe_at: u32,
    header_len: u32,
    next_at: u32,
    /// Protocol (IPv4) or Next Header of the offset-0 fragment's Fragment header (IPv6).
    next_header: u8,
    conflict: bool,
}

/// One core's reassembly state (see the module docs).
#[derive(Debug)]
pub struct Defrag {
    cfg: DefragConfig,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    map: HashMap<Key, u32>,
    oldest: u32,
    newest: u32,
    /// Per slot `max_fragments` entries each.
    tokens: Vec<u64>,
    piece_start: Vec<u32>,
    piece_len: Vec<u32>,
    piece_chain: Vec<u32>,
    data: Vec<u8>,
    chunk_next: Vec<u32>,
    free_chunks: Vec<u32>,
    held_frames: usize,
    scratch: Vec<(u32, u32)>,
    /// Counters.
    pub stats: DefragStats,
    /// Releases not yet cleared by the caller.
    pub releases: Releases,
}

impl Defrag {
    /// Allocates everything for `cfg` (values below 1 are taken as 1; `max_bytes` is rounded
    /// down to whole chunks, at least one datagram's worth).
    pub fn new(cfg: DefragConfig) -> Self {
        let cfg = DefragConfig {
            max_datagrams: cfg.max_datagrams.max(1),
            max_fragments: cfg.max_fragments.max(1),
            max_frames: cfg.max_frames.max(1),
            max_bytes: cfg.max_bytes.max(2 * MAX_ASSEMBLED),
            timeout_ns: cfg.timeout_ns,
        };
        let per = cfg.max_datagrams * cfg.max_fragments;
        let chunks = cfg.max_bytes / CHUNK;
        Defrag {
            cfg,
            slots: vec![Slot::default(); cfg.max_datagrams],
            free_slots: (0..cfg.max_datagrams as u32).rev().collect(),
            map: HashMap::with_capacity(cfg.max_datagrams),
            oldest: NIL,
            newest: NIL,
            tokens: vec![0; per],
            piece_start: vec![0; per],
            piece_len: vec![0; per],
            piece_chain: vec![0; per],
            data: vec![0; chunks * CHUNK],
            chunk_next: vec![NIL; chunks],
            free_chunks: (0..chunks as u32).rev().collect(),
            held_frames: 0,
            scratch: Vec::with_capacity(cfg.max_fragments),
            stats: DefragStats::default(),
            releases: Releases::new(cfg.max_datagrams, cfg.max_frames),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> DefragConfig {
        self.cfg
    }

    /// Datagrams being reassembled.
    pub fn datagrams(&self) -> usize {
        self.map.len()
    }

    /// Fragment frames held.
    pub fn held_frames(&self) -> usize {
        self.held_frames
    }

    /// Bytes of reassembly memory held (whole chunks).
    pub fn held_bytes(&self) -> usize {
        (self.chunk_next.len() - self.free_chunks.len()) * CHUNK
    }

    /// Counters, with `held` filled in.
    pub fn stats(&self) -> DefragStats {
        DefragStats {
            held: self.held_frames as u64,
            ..self.stats
        }
    }

    /// Takes fragment frame `f` (a decoded frame whose `ip.frag` is set; `len` L2 bytes)
    /// received on `zone`/`iface` at `now_ns`, held by the caller under `token`.
    ///
    /// Failed datagrams (this fragment's, or older ones evicted to make room) are appended to
    /// [`Defrag::releases`] with [`Verdict::Hold`] as a placeholder verdict for the caller to
    /// decide.
    pub fn push(
        &mut self,
        f: &Frame<'_>,
        zone: u16,
        iface: u16,
        now_ns: u64,
        token: u64,
        len: u32,
    ) -> Push {
        let Some(ip) = f.ip.as_ref() else {
            return Push::Refused(Failure::Malformed);
        };
        let Some(fi) = ip.frag else {
            return Push::Refused(Failure::Malformed);
        };
        self.stats.fragments += 1;
        let v6 = ip.version == 6;
        let mut dlen = ip.payload.len();
        if fi.more && dlen % 8 != 0 {
            if v6 {
                self.stats.malformed += 1;
                return Push::Refused(Failure::Malformed);
            }
            dlen &= !7;
        }
        let data = &ip.payload[..dlen];
        let (start, end) = (fi.offset, fi.offset + dlen as u32);
        let key = Key {
            src: ip.src,
            dst: ip.dst,
            id: fi.id,
            zone,
            iface,
            version: ip.version,
            proto: if v6 { 0 } else { ip.proto },
        };
        let idx = match self.map.get(&key) {
            Some(&i) => i,
            None => match self.create(key, now_ns) {
                Some(i) => i,
                None => {
                    self.stats.full += 1;
                    return Push::Refused(Failure::Full);
                }
            },
        };
        // Room for the frame: in the datagram, then in the core's budget.
        if self.slots[idx as usize].tokens as usize >= self.cfg.max_fragments {
            self.stats.full += 1;
            self.fail(idx, Failure::Full);
            return Push::Refused(Failure::Full);
        }
        while self.held_frames >= self.cfg.max_frames {
            if !self.evict_oldest(idx) {
                self.stats.full += 1;
                self.fail(idx, Failure::Full);
                return Push::Refused(Failure::Full);
            }
        }
        {
            let base = idx as usize * self.cfg.max_fragments;
            let s = &mut self.slots[idx as usize];
            self.tokens[base + s.tokens as usize] = token;
            s.tokens += 1;
            s.frame_bytes += u64::from(len);
            self.held_frames += 1;
        }
        // Consistency (what hosts reassemble at all).
        let s = self.slots[idx as usize];
        let bad_end = if fi.more {
            s.total.is_some_and(|t| end > t)
        } else {
            end < s.max_end || s.total.is_some_and(|t| t != end)
        };
        if end == start || bad_end {
            self.stats.malformed += 1;
            self.fail(idx, Failure::Malformed);
            return Push::Held;
        }
        if !fi.more {
            self.slots[idx as usize].total = Some(end);
        }
        let header_len = if s.head != NIL {
            s.header_len
        } else {
            u32::from(fi.header_len)
        };
        if too_big(v6, header_len, end) {
            self.stats.too_big += 1;
            self.fail(idx, Failure::TooBig);
            return Push::Held;
        }
        self.slots[idx as usize].max_end = s.max_end.max(end);
        if start == 0 && s.head == NIL {
            let l2 = usize::from(f.l3);
            let hl = usize::from(fi.header_len);
            let Some(head) = f.raw.get(..l2 + hl) else {
                self.stats.malformed += 1;
                self.fail(idx, Failure::Malformed);
                return Push::Held;
            };
            let s = self.slots[idx as usize];
            if too_big(v6, hl as u32, s.total.unwrap_or(s.max_end)) {
                self.stats.too_big += 1;
                self.fail(idx, Failure::TooBig);
                return Push::Held;
            }
            let Some(chain) = self.store(idx, head) else {
                self.stats.full += 1;
                self.fail(idx, Failure::Full);
                return Push::Held;
            };
            let s = &mut self.slots[idx as usize];
            s.head = chain;
            s.head_len = head.len() as u32;
            s.l2_len = l2 as u32;
            s.pppoe_at = match f.shim {
                crate::wire::Shim::Pppoe(_) => 14 + 4 * u32::from(f.vlans),
                _ => 0,
            };
            s.header_len = hl as u32;
            s.next_at = u32::from(fi.next_at);
            s.next_header = ip.proto;
        }
        // Overlaps: compare with what is held; keep the first copy.
        let (conflict, covered) = self.compare(idx, start, data);
        if conflict && !self.slots[idx as usize].conflict {
            self.slots[idx as usize].conflict = true;
            self.stats.overlaps += 1;
        }
        if !covered {
            let Some(chain) = self.store(idx, data) else {
                self.stats.full += 1;
                self.fail(idx, Failure::Full);
                return Push::Held;
            };
            let base = idx as usize * self.cfg.max_fragments;
            let s = &mut self.slots[idx as usize];
            let p = base + s.pieces as usize;
            self.piece_start[p] = start;
            self.piece_len[p] = dlen as u32;
            self.piece_chain[p] = chain;
            s.pieces += 1;
        }
        if self.complete(idx) {
            Push::Complete(idx)
        } else {
            Push::Held
        }
    }

    /// Writes complete datagram `idx` as one Ethernet frame into `out` (cleared; its capacity
    /// should be [`MAX_ASSEMBLED`], so nothing is allocated).
    pub fn assemble(&self, idx: u32, out: &mut Vec<u8>) -> Assembled {
        let s = self.slots[idx as usize];
        out.clear();
        self.read(s.head, s.head_len as usize, |b| out.extend_from_slice(b));
        let total = s.total.unwrap_or(0) as usize;
        let hl = s.head_len as usize;
        out.resize(hl + total, 0);
        let base = idx as usize * self.cfg.max_fragments;
        // Latest first, so the first copy of overlapping bytes is what stays.
        for p in (base..base + s.pieces as usize).rev() {
            let mut at = hl + self.piece_start[p] as usize;
            self.read(self.piece_chain[p], self.piece_len[p] as usize, |b| {
                out[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            });
        }
        let l = s.l2_len as usize;
        let ihl = s.header_len as usize;
        if s.pppoe_at != 0 {
            // The PPPoE length covers the PPP protocol field and the packet (RFC 2516 §4).
            let at = s.pppoe_at as usize;
            let len = (l - at - 6 + ihl + total) as u16;
            out[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
        }
        if s.key.version == 4 {
            let ip = &mut out[l..l + ihl];
            ip[2..4].copy_from_slice(&((ihl + total) as u16).to_be_bytes());
            ip[6] &= 0x40; // keep DF; clear MF and the offset
            ip[7] = 0;
            ip[10] = 0;
            ip[11] = 0;
            let sum = checksum(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            out[l + 4..l + 6].copy_from_slice(&((ihl - 40 + total) as u16).to_be_bytes());
            out[l + s.next_at as usize] = s.next_header;
        }
        Assembled {
            frame_bytes: s.frame_bytes.min(u64::from(u32::MAX)) as u32,
            frames: s.tokens as usize,
            conflict: s.conflict,
            src: s.key.src,
            dst: s.key.dst,
            zone: s.key.zone,
            iface: s.key.iface,
        }
    }

    /// Releases datagram `idx`'s frames with `verdict` (and `resets`) and frees its slot.
    pub fn release(&mut self, idx: u32, verdict: Verdict, resets: Option<[RstFrame; 2]>) {
        if self.slots[idx as usize].live {
            self.stats.reassembled += 1;
            self.free(idx, verdict, resets, None);
        }
    }

    /// Fails every datagram whose first fragment arrived `timeout_ns` or more before `now_ns`.
    /// Returns how many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        while self.oldest != NIL {
            let s = &self.slots[self.oldest as usize];
            if s.first_ns.saturating_add(self.cfg.timeout_ns) > now_ns {
                break;
            }
            self.stats.timeouts += 1;
            self.fail(self.oldest, Failure::Timeout);
            n += 1;
        }
        n
    }

    /// Fails every datagram received on zone `zone` ([`Failure::Flushed`]).
    pub fn flush_zone(&mut self, zone: u16) {
        let mut i = self.oldest;
        while i != NIL {
            let next = self.slots[i as usize].next;
            if self.slots[i as usize].key.zone == zone {
                self.fail(i, Failure::Flushed);
            }
            i = next;
        }
    }

    fn create(&mut self, key: Key, now_ns: u64) -> Option<u32> {
        if self.free_slots.is_empty() && !self.evict_oldest(NIL) {
            return None;
        }
        let idx = self.free_slots.pop()?;
        self.slots[idx as usize] = Slot {
            key,
            live: true,
            first_ns: now_ns,
            prev: self.newest,
            next: NIL,
            head: NIL,
            ..Slot::default()
        };
        if self.newest != NIL {
            self.slots[self.newest as usize].next = idx;
        } else {
            self.oldest = idx;
        }
        self.newest = idx;
        self.map.insert(key, idx);
        Some(idx)
    }

    /// Fails the oldest datagram other than `keep` for lack of room. False when there is none.
    fn evict_oldest(&mut self, keep: u32) -> bool {
        let mut i = self.oldest;
        if i == keep && i != NIL {
            i = self.slots[i as usize].next;
        }
        if i == NIL {
            return false;
        }
        self.stats.full += 1;
        self.fail(i, Failure::Full);
        true
    }

    fn fail(&mut self, idx: u32, why: Failure) {
        self.free(idx, Verdict::Hold, None, Some(why));
    }

    fn free(
        &mut self,
        idx: u32,
        verdict: Verdict,
        resets: Option<[RstFrame; 2]>,
        failure: Option<Failure>,
    ) {
        let s = self.slots[idx as usize];
        if !s.live {
            return;
        }
        let base = idx as usize * self.cfg.max_fragments;
        let start = self.releases.tokens.len() as u32;
        self.releases
            .tokens
            .extend_from_slice(&self.tokens[base..base + s.tokens as usize]);
        self.releases.list.push(Release {
            verdict,
            resets,
            failure,
            src: s.key.src,
            dst: s.key.dst,
            zone: s.key.zone,
            iface: s.key.iface,
            start,
            end: self.releases.tokens.len() as u32,
        });
        self.held_frames -= s.tokens as usize;
        for p in base..base + s.pieces as usize {
            self.free_chain(self.piece_chain[p]);
        }
        if s.head != NIL {
            self.free_chain(s.head);
        }
        if s.prev != NIL {
            self.slots[s.prev as usize].next = s.next;
        } else {
            self.oldest = s.next;
        }
        if s.next != NIL {
            self.slots[s.next as usize].prev = s.prev;
        } else {
            self.newest = s.prev;
        }
        self.map.remove(&s.key);
        self.slots[idx as usize].live = false;
        self.free_slots.push(idx);
    }

    /// Copies `bytes` into fresh chunks charged to datagram `idx`, making room by failing older
    /// datagrams. `None` when even that is not enough.
    fn store(&mut self, idx: u32, bytes: &[u8]) -> Option<u32> {
        let need = bytes.len().div_ceil(CHUNK);
        while self.free_chunks.len() < need {
            if !self.evict_oldest(idx) {
                return None;
            }
        }
        let mut first = NIL;
        let mut prev = NIL;
        for part in bytes.chunks(CHUNK) {
            let c = self.free_chunks.pop()?;
            let at = c as usize * CHUNK;
            self.data[at..at + part.len()].copy_from_slice(part);
            self.chunk_next[c as usize] = NIL;
            if prev == NIL {
                first = c;
            } else {
                self.chunk_next[prev as usize] = c;
            }
            prev = c;
        }
        Some(first)
    }

    fn free_chain(&mut self, mut c: u32) {
        while c != NIL {
            let next = self.chunk_next[c as usize];
            self.free_chunks.push(c);
            c = next;
        }
    }

    /// Calls `f` with the stored bytes of chain `c`, `len` bytes in all, in order.
    fn read(&self, mut c: u32, mut len: usize, mut f: impl FnMut(&[u8])) {
        while c != NIL && len > 0 {
            let n = len.min(CHUNK);
            let at = c as usize * CHUNK;
            f(&self.data[at..at + n]);
            len -= n;
            c = self.chunk_next[c as usize];
        }
    }

    /// Compares `data` (at fragment offset `start`) with the held pieces of datagram `idx`:
    /// (some overlapping byte differs, every byte of `data` is already held).
    fn compare(&mut self, idx: u32, start: u32, data: &[u8]) -> (bool, bool) {
        let end = start + data.len() as u32;
        let base = idx as usize * self.cfg.max_fragments;
        let n = self.slots[idx as usize].pieces as usize;
        let mut conflict = false;
        self.scratch.clear();
        for p in base..base + n {
            let (ps, pe) = (self.piece_start[p], self.piece_start[p] + self.piece_len[p]);
            let (a, b) = (start.max(ps), end.min(pe));
            if a >= b {
                continue;
            }
            self.scratch.push((a, b));
            if conflict {
                continue;
            }
            // Walk the piece's chunks over [a, b).
            let mut c = self.piece_chain[p];
            let mut pos = ps;
            while c != NIL && pos < b {
                let chunk_end = pos + CHUNK as u32;
                let (x, y) = (a.max(pos), b.min(chunk_end));
                if x < y {
                    let at = c as usize * CHUNK + (x - pos) as usize;
                    let held = &self.data[at..at + (y - x) as usize];
                    let new = &data[(x - start) as usize..(y - start) as usize];
                    if held != new {
                        conflict = true;
                        break;
                    }
                }
                pos = chunk_end;
                c = self.chunk_next[c as usize];
            }
        }
        self.scratch.sort_unstable();
        let mut at = start;
        for &(a, b) in &self.scratch {
            if a > at {
                break;
            }
            at = at.max(b);
        }
        (conflict, at >= end)
    }

    /// True when datagram `idx` has its last fragment, its first fragment's headers and every
    /// byte in between.
    fn complete(&mut self, idx: u32) -> bool {
        let s = self.slots[idx as usize];
        let Some(total) = s.total else { return false };
        if s.head == NIL {
            return false;
        }
        let base = idx as usize * self.cfg.max_fragments;
        self.scratch.clear();
        for p in base..base + s.pieces as usize {
            self.scratch
                .push((self.piece_start[p], self.piece_start[p] + self.piece_len[p]));
        }
        self.scratch.sort_unstable();
        let mut at = 0;
        for &(a, b) in &self.scratch {
            if a > at {
                return false;
            }
            at = at.max(b);
        }
        at >= total
    }
}

/// True when a datagram whose fragmentable part ends at `end`, after an unfragmentable part of
/// `header_len` bytes, exceeds 65535 bytes (IPv4 total length, RFC 791; IPv6 payload length,
/// RFC 8200 §3, which does not count the 40-byte fixed header).
fn too_big(v6: bool, header_len: u32, end: u32) -> bool {
    let len = if v6 {
        header_len.saturating_sub(40) + end
    } else {
        header_len + end
    };
    len > 65535
}

/// The Internet checksum of `b` (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{self, ipproto, Fragment, L4};

    const MAC: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

    /// Ethernet + IPv4 (198.18.0.1 -> 198.18.0.2 unless given) + `l4` (a whole L4 segment, its
    /// header included) with protocol `proto`.
    pub(crate) fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(l4);
        crate::wire::tests::fix_checksums(&mut f);
        f
    }

    /// Ethernet + IPv6 (2001:db8::1 -> ::2 unless given) + `ext` (extension headers; their
    /// first byte chain must end in `proto`) + `l4`; `first` is the Next Header of the fixed
    /// header (`proto` when `ext` is empty).
    pub(crate) fn ip6(first: u8, src: [u8; 16], dst: [u8; 16], ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(ext);
        f.extend_from_slice(l4);
        crate::wire::tests::fix_checksums(&mut f);
        f
    }

    /// A UDP segment (checksum 0) `sport -> dport` carrying `payload` (the wire tests' builder).
    pub(crate) use crate::wire::tests::udp;

    /// A TCP segment (no options, checksum 0).
    pub(crate) fn tcp(
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    pub(crate) const A4: [u8; 4] = [198, 18, 0, 1];
    pub(crate) const B4: [u8; 4] = [198, 18, 0, 2];
    pub(crate) const A6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pub(crate) const B6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// Splits the IPv4 packet of `frame` (Ethernet, no tags) into fragments with id `id`; each
    /// `(offset, len)` of the IP payload becomes one fragment (offsets multiples of 8; MF set
    /// unless it reaches the end).
    pub(crate) fn frag4(frame: &[u8], id: u16, pieces: &[(usize, usize)]) -> Vec<Vec<u8>> {
        let ihl = usize::from(frame[14] & 15) * 4;
        let data = &frame[14 + ihl..];
        pieces
            .iter()
            .map(|&(off, len)| {
                let mut f = frame[..14 + ihl].to_vec();
                f[16..18].copy_from_slice(&((ihl + len) as u16).to_be_bytes());
                f[18..20].copy_from_slice(&id.to_be_bytes());
                let more = if off + len < data.len() { 0x2000 } else { 0 };
                f[20..22].copy_from_slice(&((off / 8) as u16 | more).to_be_bytes());
                crate::checksum::fill_ipv4_header(&mut f[14..14 + ihl]);
                f.extend_from_slice(&data[off..off + len]);
                f
            })
            .collect()
    }

    /// Splits the IPv6 packet of `frame` after its first `unfrag` bytes (fixed header and
    /// unfragmentable extension headers) into fragments with id `id`, as [`frag4`].
    pub(crate) fn frag6(
        frame: &[u8],
        id: u32,
        unfrag: usize,
        pieces: &[(usize, usize)],
    ) -> Vec<Vec<u8>> {
        let ip = &frame[14..];
        let mut next_at = 6;
        let mut pos = 40;
        while pos < unfrag {
            next_at = pos;
            pos += (usize::from(ip[pos + 1]) + 1) * 8;
        }
        let nh = ip[next_at];
        let data = &ip[unfrag..];
        pieces
            .iter()
            .map(|&(off, len)| {
                let mut f = frame[..14 + unfrag].to_vec();
                f[14 + next_at] = 44;
                f[18..20].copy_from_slice(&((unfrag - 40 + 8 + len) as u16).to_be_bytes());
                let more = u16::from(off + len < data.len());
                f.extend_from_slice(&[nh, 0]);
                f.extend_from_slice(&((off as u16) | more).to_be_bytes());
                f.extend_from_slice(&id.to_be_bytes());
                f.extend_from_slice(&data[off..off + len]);
                f
            })
            .collect()
    }

    /// Pushes `frames` (tokens 1, 2, ...) at time `now`; returns each push's outcome.
    fn push_all(d: &mut Defrag, frames: &[Vec<u8>], now: u64) -> Vec<Push> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let dec = wire::decode(f).unwrap();
                d.push(&dec, 0, 1, now, i as u64 + 1, f.len() as u32)
            })
            .collect()
    }

    /// Assembles and releases (Forward) the datagram `Complete` named; returns the frame.
    fn finish(d: &mut Defrag, p: Push) -> (Vec<u8>, Assembled) {
        let Push::Complete(idx) = p else {
            panic!("not complete: {p:?}")
        };
        let mut out = Vec::with_capacity(MAX_ASSEMBLED);
        let a = d.assemble(idx, &mut out);
        d.release(idx, Verdict::Forward, None);
        (out, a)
    }

    fn released(d: &Defrag) -> Vec<(Verdict, Option<Failure>, Vec<u64>)> {
        d.releases
            .iter()
            .map(|(r, t)| (r.verdict, r.failure, t.to_vec()))
            .collect()
    }

    /// True when `asm` is the unfragmented `whole` (Ethernet + IPv4, checksum 0) with the
    /// fragments' identification `id` and a valid header checksum.
    fn same4(asm: &[u8], whole: &[u8], id: u16) -> bool {
        let mut want = whole.to_vec();
        want[18..20].copy_from_slice(&id.to_be_bytes());
        want[24..26].copy_from_slice(&asm[24..26]);
        checksum(&asm[14..34]) == 0 && asm == want
    }

    fn blob(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn in_order_reverse_and_shuffled_give_the_original_datagram() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        let pieces = [(0, 1480), (1480, 1480), (2960, 48)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let frags = frag4(&whole, 77, &pieces);
            let frames: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
            let mut d = Defrag::new(DefragConfig::default());
            let out = push_all(&mut d, &frames, 1);
            assert_eq!(&out[..2], &[Push::Held, Push::Held], "{order:?}");
            assert_eq!((d.datagrams(), d.held_frames()), (1, 3));
            let (asm, a) = finish(&mut d, out[2]);
            assert!(
                same4(&asm, &whole, 77),
                "{order:?}: the reassembled frame is the unfragmented one"
            );
            let total: usize = frames.iter().map(Vec::len).sum();
            assert_eq!(
                (a.frame_bytes as usize, a.frames, a.conflict),
                (total, 3, false)
            );
            let ip = wire::decode(&asm).unwrap().ip.unwrap();
            assert_eq!(
                (ip.fragment, ip.sport, ip.dport, ip.payload.len()),
                (Fragment::No, 5000, 53, 3000)
            );
            // All three frames come back together, in arrival order.
            assert_eq!(released(&d), vec![(Verdict::Forward, None, vec![1, 2, 3])]);
            assert_eq!((d.datagrams(), d.held_frames(), d.held_bytes()), (0, 0, 0));
            assert_eq!((d.stats.reassembled, d.stats.fragments), (1, 3));
        }
    }

    #[test]
    fn duplicates_and_identical_overlaps_are_harmless() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        // A duplicate of the middle fragment, and a fragment overlapping two others.
        let frags = frag4(
            &whole,
            9,
            &[
                (0, 1480),
                (1480, 1480),
                (1480, 1480),
                (1000, 1000),
                (2960, 48),
            ],
        );
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        assert!(out[..4].iter().all(|p| *p == Push::Held), "{out:?}");
        // Duplicates add no data: only the three distinct pieces are charged.
        assert_eq!(
            d.held_bytes(),
            (1 + 3 + 3 + 1) * CHUNK,
            "head, two data pieces of 3 chunks, last"
        );
        let (asm, a) = finish(&mut d, out[4]);
        assert!(same4(&asm, &whole, 9));
        assert!(!a.conflict);
        assert_eq!(d.stats.overlaps, 0);
        assert_eq!(
            released(&d)[0].2,
            vec![1, 2, 3, 4, 5],
            "every frame, duplicates too, is released"
        );
    }

    #[test]
    fn overlaps_with_different_bytes_are_flagged_and_the_first_copy_kept() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        let mut frags = frag4(&whole, 9, &[(0, 1480), (1472, 1536)]);
        // The second fragment's first 8 bytes overlap the first's last 8: change them.
        let at = 34;
        frags[1][at] ^= 0xff;
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        let (asm, a) = finish(&mut d, out[1]);
        assert!(a.conflict);
        assert_eq!(d.stats.overlaps, 1);
        assert!(
            same4(&asm, &whole, 9),
            "the first copy of the overlapping bytes is kept"
        );
        // Reversed: the altered fragment came first, so its bytes are kept.
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &[frags[1].clone(), frags[0].clone()], 1);
        let (asm, a) = finish(&mut d, out[1]);
        assert!(a.conflict);
        assert!(!same4(&asm, &whole, 9));
        assert_eq!(asm[14 + 20 + 1472], frags[1][at]);
    }

    #[test]
    fn a_first_fragment_splitting_the_tcp_header_is_reassembled() {
        let whole = ip4(
            ipproto::TCP,
            A4,
            B4,
            &tcp(40000, 80, 1000, 5, 0x18, b"GET /x HTTP/1.1\r\n\r\n"),
        );
        // 8 bytes of TCP header (ports and sequence) in the first fragment.
        let frags = frag4(&whole, 3, &[(0, 8), (8, whole.len() - 34 - 8)]);
        let first = wire::decode(&frags[0]).expect("a tiny first fragment is not malformed");
        let ip = first.ip.unwrap();
        assert_eq!(
            (ip.fragment, ip.l4, ip.sport),
            (Fragment::First, L4::Other, 0)
        );
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        let (asm, _) = finish(&mut d, out[1]);
        let ip = wire::decode(&asm).unwrap().ip.unwrap();
        assert!(matches!(
            ip.l4,
            L4::Tcp {
                seq: 1000,
                ack: 5,
                ..
            }
        ));
        assert_eq!(
            (ip.sport, ip.dport, ip.payload),
            (40000, 80, &b"GET /x HTTP/1.1\r\n\r\n"[..])
        );
    }

    #[test]
    fn datagrams_over_65535_bytes_are_rejected() {
        let whole = ip4(ipproto::ICMP, A4, B4, &blob(2000));
        let mut frags = frag4(&whole, 1, &[(0, 1000), (1000, 1000)]);
        // The last fragment at offset 65528 (field 8191): 65528 + 1000 + 20 > 65535.
        frags[1][20..22].copy_from_slice(&8191u16.to_be_bytes());
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        assert_eq!(out, vec![Push::Held, Push::Held]);
        assert_eq!(d.stats.too_big, 1);
        assert_eq!(
            released(&d),
            vec![(Verdict::Hold, Some(Failure::TooBig), vec![1, 2])]
        );
        assert_eq!((d.datagrams(), d.held_frames(), d.held_bytes()), (0, 0, 0));
        // IPv6 counts the payload length: 65528 + 8 bytes is just over.
        let whole = ip6(ipproto::UDP, A6, B6, &[], &udp(1, 2, &blob(100)));
        let mut frags = frag6(&whole, 5, 40, &[(0, 64), (64, 44)]);
        frags[1][56..58].copy_from_slice(&(8191u16 << 3).to_be_bytes());
        let mut d = Defrag::new(DefragConfig::default());
        push_all(&mut d, &frags, 1);
        assert_eq!(d.stats.too_big, 1);
        // Exactly 65535 is fine: offset 65528 and 7 bytes.
        let mut frags = frag6(&whole, 6, 40, &[(0, 64), (64, 44)]);
        frags[1][56..58].copy_from_slice(&(8191u16 << 3).to_be_bytes());
        frags[1].truncate(14 + 48 + 7);
        frags[1][18..20].copy_from_slice(&15u16.to_be_bytes());
        let mut d = Defrag::new(DefragConfig::default());
        push_all(&mut d, &frags, 1);
        assert_eq!(d.stats.too_big, 0);
    }

    #[test]
    fn incomplete_datagrams_time_out() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        let frags = frag4(&whole, 1, &[(0, 1480), (1480, 1528)]);
        let cfg = DefragConfig {
            timeout_ns: 1_000,
            ..DefragConfig::default()
        };
        let mut d = Defrag::new(cfg);
        push_all(&mut d, &frags[..1], 10_000);
        assert_eq!(d.expire(10_999), 0);
        assert_eq!(d.datagrams(), 1);
        assert_eq!(d.expire(11_000), 1);
        assert_eq!(
            released(&d),
            vec![(Verdict::Hold, Some(Failure::Timeout), vec![1])]
        );
        assert_eq!(
            (
                d.stats.timeouts,
                d.datagrams(),
                d.held_frames(),
                d.held_bytes()
            ),
            (1, 0, 0, 0)
        );
        // The late fragment starts a new datagram, which never completes either.
        d.releases.clear();
        let out = push_all(&mut d, &frags[1..], 11_500);
        assert_eq!(out, vec![Push::Held]);
        assert_eq!(d.expire(12_500), 1);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_datagram_gives_way() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        // Datagrams: at most 4 in reassembly.
        let cfg = DefragConfig {
            max_datagrams: 4,
            ..DefragConfig::default()
        };
        let mut d = Defrag::new(cfg);
        for id in 0..6u16 {
            let f = frag4(&whole, id, &[(0, 1480)]);
            assert_eq!(push_all(&mut d, &f, u64::from(id)), vec![Push::Held]);
            assert!(d.datagrams() <= 4);
        }
        let r = released(&d);
        assert_eq!(r.len(), 2);
        assert!(r
            .iter()
            .all(|(v, f, _)| (*v, *f) == (Verdict::Hold, Some(Failure::Full))));
        assert_eq!(d.stats.full, 2);
        // Frames: 8 held at most; fragments of one datagram: 3 at most.
        let cfg = DefragConfig {
            max_frames: 8,
            max_fragments: 3,
            ..DefragConfig::default()
        };
        let mut d = Defrag::new(cfg);
        let dup = frag4(&whole, 50, &[(0, 8)]);
        let out = push_all(
            &mut d,
            &[
                dup[0].clone(),
                dup[0].clone(),
                dup[0].clone(),
                dup[0].clone(),
            ],
            1,
        );
        assert_eq!(
            out[3],
            Push::Refused(Failure::Full),
            "a fourth fragment of one datagram"
        );
        assert_eq!(
            released(&d),
            vec![(Verdict::Hold, Some(Failure::Full), vec![1, 2, 3])]
        );
        d.releases.clear();
        for id in 0..20u16 {
            let f = frag4(&whole, id, &[(8, 8)]);
            push_all(&mut d, &f, 2 + u64::from(id));
            assert!(d.held_frames() <= 8);
        }
        assert_eq!(d.held_frames(), 8);
        // Bytes: the smallest budget holds two whole datagrams' worth of chunks.
        let cfg = DefragConfig::default();
        let mut d = Defrag::new(DefragConfig {
            max_bytes: 0,
            max_frames: 4096,
            max_datagrams: 4096,
            ..cfg
        });
        let limit = (2 * MAX_ASSEMBLED) / CHUNK * CHUNK;
        let mut evicted = 0;
        for id in 0..400u16 {
            let f = frag4(&whole, id, &[(0, 1480)]);
            push_all(&mut d, &f, u64::from(id));
            assert!(d.held_bytes() <= limit, "{} held", d.held_bytes());
            evicted += d.releases.iter().count();
            d.releases.clear();
        }
        assert!(
            evicted > 0 && d.held_bytes() > limit - 4 * CHUNK,
            "{evicted} evicted, {} held",
            d.held_bytes()
        );
    }

    #[test]
    fn inconsistent_fragments_fail_as_malformed_and_ipv4_data_is_used_in_8_byte_blocks() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        // Two different last fragments.
        let mut frags = frag4(&whole, 1, &[(0, 1480), (2960, 48)]);
        let mut other = frags[1].clone();
        other[20..22].copy_from_slice(&(2968u16 / 8).to_be_bytes());
        frags.push(other);
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        assert_eq!(out[2], Push::Held);
        assert_eq!(
            released(&d),
            vec![(Verdict::Hold, Some(Failure::Malformed), vec![1, 2, 3])]
        );
        // A non-last IPv4 fragment of 1483 bytes: its last 3 bytes are ignored (as Linux does).
        let mut frags = frag4(&whole, 2, &[(0, 1480), (1480, 1528)]);
        frags[0].extend_from_slice(&[0xee; 3]);
        frags[0][16..18].copy_from_slice(&(20u16 + 1483).to_be_bytes());
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        assert!(same4(&finish(&mut d, out[1]).0, &whole, 2));
        // A non-last IPv6 fragment that is not a multiple of 8 bytes is refused alone.
        let whole6 = ip6(ipproto::UDP, A6, B6, &[], &udp(1, 2, &blob(100)));
        let frags = frag6(&whole6, 1, 40, &[(0, 60), (64, 44)]);
        let mut d = Defrag::new(DefragConfig::default());
        assert_eq!(
            push_all(&mut d, &frags[..1], 1),
            vec![Push::Refused(Failure::Malformed)]
        );
        assert_eq!(d.held_frames(), 0);
    }

    /// Hop-by-Hop (unfragmentable) before the Fragment header; Destination Options, then TCP,
    /// after it, with the first fragment carrying only the Destination Options header: nothing
    /// after the Fragment header is read until the datagram is whole.
    #[test]
    fn ipv6_headers_after_the_fragment_header_are_read_from_the_datagram() {
        let hbh = [60, 0, 1, 4, 0, 0, 0, 0]; // -> Destination Options, PadN
        let dst_opts = [ipproto::TCP, 0, 1, 4, 0, 0, 0, 0]; // -> TCP, PadN
        let seg = tcp(40000, 443, 7, 9, 0x18, b"hello over fragments");
        let mut frag_part = dst_opts.to_vec();
        frag_part.extend_from_slice(&seg);
        let whole = ip6(0, A6, B6, &hbh, &frag_part);
        let frags = frag6(&whole, 0xabcd, 48, &[(0, 8), (8, frag_part.len() - 8)]);
        let first = wire::decode(&frags[0]).unwrap().ip.unwrap();
        assert_eq!(
            (first.fragment, first.proto, first.payload),
            (Fragment::First, 60, &dst_opts[..])
        );
        let fi = first.frag.unwrap();
        assert_eq!(
            (fi.id, fi.offset, fi.more, fi.header_len, fi.next_at),
            (0xabcd, 0, true, 48, 40)
        );
        let later = wire::decode(&frags[1]).unwrap().ip.unwrap();
        assert_eq!(
            (later.fragment, later.proto, later.sport, later.l4),
            (Fragment::Later, 60, 0, L4::Other)
        );
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        let (asm, _) = finish(&mut d, out[1]);
        assert!(
            asm == whole,
            "Fragment header removed, Next Header and payload length restored"
        );
        let ip = wire::decode(&asm).unwrap().ip.unwrap();
        assert_eq!(
            (ip.proto, ip.sport, ip.dport, ip.payload),
            (ipproto::TCP, 40000, 443, &b"hello over fragments"[..])
        );
    }

    /// The attack: a later fragment whose Fragment header says Next Header 44 and whose data
    /// starts with a fake Fragment header (offset 0, M set) and a TCP header. Walking it as
    /// extension headers made the fake header a "first fragment" and the attacker's bytes a
    /// TCP header with ports. It is data: no ports, no L4; reassembled, the fake header sits in
    /// the payload of the real first fragment's TCP segment.
    #[test]
    fn a_fake_fragment_header_in_fragment_data_is_data() {
        let fake_tcp = tcp(1234, 22, 0, 0, 0x02, b"");
        let mut tail = vec![ipproto::TCP, 0, 0, 1, 0, 0, 0, 9]; // fake Fragment header: offset 0, M
        tail.extend_from_slice(&fake_tcp);
        let real = tcp(40000, 80, 1000, 1, 0x18, &[b'a'; 28]);
        let mut seg = real.clone();
        seg.extend_from_slice(&tail);
        let whole = ip6(ipproto::TCP, A6, B6, &[], &seg);
        let mut frags = frag6(&whole, 7, 40, &[(0, 48), (48, seg.len() - 48)]);
        frags[1][54] = 44; // the later fragment's Fragment header: Next Header 44
        let later = wire::decode(&frags[1]).unwrap().ip.unwrap();
        assert_eq!(
            (later.fragment, later.sport, later.dport, later.l4),
            (Fragment::Later, 0, 0, L4::Other)
        );
        assert_eq!(
            &later.payload[..8],
            &tail[..8],
            "the fake header is the fragment's data"
        );
        let mut d = Defrag::new(DefragConfig::default());
        let out = push_all(&mut d, &frags, 1);
        let (asm, _) = finish(&mut d, out[1]);
        let ip = wire::decode(&asm).unwrap().ip.unwrap();
        assert_eq!(
            (ip.proto, ip.sport, ip.dport),
            (ipproto::TCP, 40000, 80),
            "the offset-0 fragment's Next Header"
        );
        assert_eq!(&ip.payload[28..], &tail[..], "the fake headers are payload");
    }

    #[test]
    fn fragments_from_the_other_interface_or_another_datagram_do_not_mix() {
        let whole = ip4(ipproto::UDP, A4, B4, &udp(5000, 53, &blob(3000)));
        let frags = frag4(&whole, 1, &[(0, 1480), (1480, 1528)]);
        let mut d = Defrag::new(DefragConfig::default());
        let f0 = wire::decode(&frags[0]).unwrap();
        let f1 = wire::decode(&frags[1]).unwrap();
        assert_eq!(d.push(&f0, 0, 1, 1, 1, 0), Push::Held);
        assert_eq!(
            d.push(&f1, 0, 2, 1, 2, 0),
            Push::Held,
            "received on the peer interface"
        );
        assert_eq!(d.push(&f1, 1, 1, 1, 3, 0), Push::Held, "another zone");
        assert_eq!(d.datagrams(), 3);
        assert!(matches!(d.push(&f1, 0, 1, 1, 4, 0), Push::Complete(_)));
    }

    #[test]
    fn every_truncated_fragment_is_an_error_or_held_never_a_panic() {
        let whole = ip6(ipproto::UDP, A6, B6, &[], &udp(1, 2, &blob(300)));
        let mut frames = frag6(&whole, 1, 40, &[(0, 160), (160, 148)]);
        frames.extend(frag4(
            &ip4(ipproto::UDP, A4, B4, &udp(1, 2, &blob(300))),
            1,
            &[(0, 160), (160, 148)],
        ));
        let mut d = Defrag::new(DefragConfig {
            max_datagrams: 2,
            max_frames: 4,
            ..DefragConfig::default()
        });
        for f in &frames {
            for cut in 0..f.len() {
                if let Ok(dec) = wire::decode(&f[..cut]) {
                    if dec.ip.is_some_and(|ip| ip.frag.is_some()) {
                        d.push(&dec, 0, 1, cut as u64, cut as u64, cut as u32);
                    }
                }
                d.releases.clear();
            }
        }
        assert!(d.held_frames() <= 4 && d.datagrams() <= 2);
    }
}
