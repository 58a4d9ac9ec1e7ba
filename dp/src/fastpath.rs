//! The XDP fast path for decided flows: which sessions qualify, their entries in the kernel's
//! map in and out, and the counters pulled back so records stay exact.
//!
//! Once nothing more of a session needs inspecting, both directions of its flow go into the
//! XDP program's `fast` map ([`warden_xdp::FastTable`]), keyed by the interface slot each
//! direction arrives on and its 5-tuple, and the program redirects their frames in the kernel
//! to the pair's peer interface, counting frames, bytes and the last one's time per direction.
//! What a direction's entry lets through is its [`FastMode`]:
//! - [`FastMode::All`] for both directions when inspection is over ([`Engine::inspection_over`]:
//!   the app is decided and no parser reads either direction any more, or the session has no
//!   app context), TCP or UDP; for the client's direction only (the server's with
//!   [`FastMode::AckOnly`], which admits no UDP datagram) while only the server's first bytes
//!   can still make the session an echo ([`Engine::over_but_echo`]);
//! - [`FastMode::Range`] for a TCP direction whose parser skips the next bytes unread by count
//!   (an HTTP body of announced length, [`crate::app::AppParser::opaque`]) and that holds
//!   nothing (every earlier byte was read): only payload within that sequence range, at least
//!   `[dataplane] fast_path_min_bytes` long and at most [`RANGE_MAX`]; the other direction
//!   gets [`FastMode::AckOnly`] (segments without payload) unless it has a run of its own.
//!
//! A direction whose source Warden checks by MAC (an attachment's address arriving over its
//! bridge, [`crate::origin::Origins::checked_mac`]) is limited to that source MAC in its entry
//! too: a frame of the flow from another MAC (the host or something else on the bridge
//! claiming the workload's address) goes to Warden, which drops it as spoofed.
//!
//! **Who qualifies** ([`decide`]): TCP established with both directions seen and client payload
//! seen (so `tcp_no_client_data` has nothing left to watch), or UDP; the verdict final and
//! current (evaluated under the worker's policy generation, `allowed`, `learned` or not
//! policed; not pending an app, not blocked, no exception, no threat block); no threat raised
//! and no normalisation anomaly on the session; not picked up mid-stream; not in a VLAN or
//! tunnel segment, not a tunnel's carrier; one of its interface slots at least flagged by the
//! daemon (the peer accepts in-kernel redirects, [`FastSlots`]; a direction whose slot is not
//! flagged keeps coming to Warden). A session is put on the fast path at most
//! [`MAX_OFFLOADS`] times.
//!
//! **Out again** ([`RemoveReason`]): on session end (expiry, eviction, reuse, shutdown, pair
//! removal: the table hands the entry over, [`crate::session::SessionTable::pop_unfast`], and
//! the final record gets the last counts), on a new policy generation (every policy apply,
//! workload, service or mode change: before the worker marks it loaded, so a publish racing an
//! insert cannot leave an entry decided under the old policy), on new threat actions, on a
//! frame of the session the program handed up on purpose ([`FastPath::frame`]: SYN, FIN,
//! RST, URG, payload outside the entry's range or on an ack-only direction, IP options or
//! fragments; so FIN and RST end the session in user space as ever), and on an ICMP error
//! quoting it. A frame the program would have forwarded that reaches Warden anyway (queued
//! before its entry went in) is inspected as usual and does not take the session out.
//!
//! **Exact counts.** Every [`PULL_EVERY`] the worker reads each entry (one system call per
//! direction, never per frame) and adds what the kernel forwarded since to the session:
//! frames, bytes, last seen (so idle timeouts follow the traffic), and the frames in
//! [`FastMark::frames`] (the record's `fast_path_frames`). Removing an entry reads it in the
//! same system call. A frame matched on another CPU in the nanoseconds before a removal may be
//! counted in the removed entry and lost to the record.
//!
//! **Sequence state.** While on the fast path Warden does not see the flow's segments, so on
//! the way back its TCP sequence state ([`crate::tcpseq`]) is resynchronised: a direction
//! forwarded within a range may have sent up to the range's end and its receiver's window
//! edge is widened accordingly (`TcpSeq::resync_sent`); an ack-only direction sent nothing
//! unseen (`resync_quiet`); after [`FastMode::All`] both directions are learnt again and
//! ACKs judged as for a mid-stream pickup until both windows are known
//! (`TcpSeq::resync_all`). The stream of a range direction continues at the first segment past
//! what it read, at most at the range's end (`Stream::skip_until`).
//!
//! **Bounds.** Each worker owns at most `[dataplane] fast_path_max / workers` entries
//! (preallocated here and in the kernel); a session that qualifies when they are all used
//! stays in user space (counted `refused_full`), nothing is evicted for it. Falling back to
//! user space is always safe.
//!
//! No allocation on the packet path: entries and the free list are allocated at start.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use warden_xdp::{FastCounters, FastKey, FastMode};

use crate::app::engine::Engine;
use crate::enforce::PolicyState;
use crate::policy::PolicyVerdict;
use crate::session::{Dir, Session, SessionTable, State, TcpState, NO_APP};
use crate::wire::ipproto;

/// [`FastMark::entry`] of a session not on the fast path.
pub const NO_ENTRY: u16 = u16::MAX;

/// Longest sequence range one entry forwards (1 GiB, well inside the 2^31 that sequence
/// arithmetic allows); a longer run is offloaded again from where it ended.
pub const RANGE_MAX: u64 = 1 << 30;

/// Times one session may be put on the fast path (each later run of an HTTP keep-alive
/// connection is one; frames forged to take a session out cannot make it churn forever).
pub const MAX_OFFLOADS: u8 = 64;

/// How often a worker pulls the counters of its entries (ns).
pub const PULL_EVERY: u64 = 500_000_000;

/// Interface slots the XDP program has ([`warden_xdp::MAX_IFACES`]).
const SLOTS: usize = 256;

/// A session's fast path state, part of [`Session`] (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastMark {
    /// Frames of the session the kernel forwarded (both directions, saturating).
    pub frames: u32,
    /// The worker's entry while on the fast path ([`NO_ENTRY`] otherwise).
    pub entry: u16,
    /// Times the session was put on the fast path (saturating).
    pub offloads: u8,
}

impl Default for FastMark {
    fn default() -> Self {
        FastMark { frames: 0, entry: NO_ENTRY, offloads: 0 }
    }
}

impl FastMark {
    /// True while the session has entries in the kernel's map.
    #[inline]
    pub fn offloaded(&self) -> bool {
        self.entry != NO_ENTRY
    }
}

/// Why entries left the map (counted per reason in [`FastStats::removed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The session ended (expired, evicted, reused, shutdown, pair removed).
    Ended = 0,
    /// A new policy generation (apply, workload, service or mode change).
    Policy = 1,
    /// New threat actions (`[threats]` reloaded).
    Threats = 2,
    /// A frame the program handed up on purpose (control flags, payload outside the entry).
    Frame = 3,
    /// An ICMP error quoting the session.
    Icmp = 4,
    /// The kernel refused an update (the other direction's entry is taken out too).
    Error = 5,
}

impl RemoveReason {
    /// Every reason, for counter arrays indexed by `reason as usize`.
    pub const ALL: [RemoveReason; 6] = [
        RemoveReason::Ended,
        RemoveReason::Policy,
        RemoveReason::Threats,
        RemoveReason::Frame,
        RemoveReason::Icmp,
        RemoveReason::Error,
    ];

    /// Name used in counters.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Ended => "ended",
            RemoveReason::Policy => "policy",
            RemoveReason::Threats => "threats",
            RemoveReason::Frame => "frame",
            RemoveReason::Icmp => "icmp",
            RemoveReason::Error => "error",
        }
    }
}

/// A worker's fast path counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastStats {
    /// Times a session was put on the fast path.
    pub offloaded: u64,
    /// Sessions on the fast path now.
    pub active: u64,
    /// Frames the kernel forwarded for this worker's sessions (pulled so far).
    pub frames: u64,
    /// Their bytes (L2, no FCS).
    pub bytes: u64,
    /// Sessions that qualified while every entry of the worker was in use (they stay in user
    /// space; nothing is evicted for them).
    pub refused_full: u64,
    /// Sessions that qualified again after [`MAX_OFFLOADS`] offloads (left in user space).
    pub refused_limit: u64,
    /// Map updates or reads the kernel refused.
    pub errors: u64,
    /// Sessions taken off the fast path, by [`RemoveReason`].
    pub removed: [u64; RemoveReason::ALL.len()],
}

impl FastStats {
    /// `(name, value)` of every counter, for `wardenctl counters` and metrics.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("offloaded".to_string(), self.offloaded),
            ("active".to_string(), self.active),
            ("frames".to_string(), self.frames),
            ("bytes".to_string(), self.bytes),
            ("refused_full".to_string(), self.refused_full),
            ("refused_limit".to_string(), self.refused_limit),
            ("errors".to_string(), self.errors),
        ];
        for r in RemoveReason::ALL {
            v.push((format!("removed_{}", r.as_str()), self.removed[r as usize]));
        }
        v
    }
}

/// The map the fast path writes: the kernel's ([`warden_xdp::FastTable`]) or a [`ModelMap`].
pub trait FastMap: Send {
    /// Inserts (or replaces) the entry of `key` with zero counters; with `src_mac`, only
    /// frames from that source MAC match it.
    ///
    /// # Errors
    /// The kernel refused it.
    fn insert(&mut self, key: &FastKey, mode: FastMode, src_mac: Option<[u8; 6]>) -> Result<(), String>;
    /// The entry's counters (`None`: no such entry).
    ///
    /// # Errors
    /// The lookup failed.
    fn read(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String>;
    /// Removes the entry and returns its last counters.
    ///
    /// # Errors
    /// The kernel refused.
    fn remove(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String>;
}

impl FastMap for warden_xdp::FastTable {
    fn insert(&mut self, key: &FastKey, mode: FastMode, src_mac: Option<[u8; 6]>) -> Result<(), String> {
        warden_xdp::FastTable::insert(self, key, mode, src_mac).map_err(|e| e.to_string())
    }
    fn read(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String> {
        warden_xdp::FastTable::read(self, key).map_err(|e| e.to_string())
    }
    fn remove(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String> {
        warden_xdp::FastTable::remove(self, key).map_err(|e| e.to_string())
    }
}

/// An in-memory model of the kernel's map and of the program's rule
/// ([`warden_xdp::fast_admits`]), for tests: clones share one map, so a test keeps one to
/// play the kernel ([`ModelMap::forward`]) while the fast path writes through another.
#[derive(Clone, Default)]
pub struct ModelMap {
    inner: Arc<Mutex<ModelEntries>>,
}

/// The model's entries: mode, counters and the source MAC an entry is limited to.
type ModelEntries = std::collections::HashMap<FastKey, (FastMode, FastCounters, Option<[u8; 6]>)>;

impl ModelMap {
    fn with<T>(&self, f: impl FnOnce(&mut ModelEntries) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Plays the program for `frame` arriving on `slot` at monotonic time `mono_ns`: true (and
    /// counted in the entry) when an entry admits it.
    pub fn forward(&self, frame: &[u8], slot: u32, mono_ns: u64) -> bool {
        let Some((mut key, _)) = warden_xdp::fast_admits(frame, FastMode::All) else { return false };
        key.slot = slot;
        self.with(|m| match m.get_mut(&key) {
            Some((mode, c, mac))
                if warden_xdp::fast_admits(frame, *mode).is_some_and(|(_, ok)| ok)
                    && mac.is_none_or(|m| frame.get(6..12) == Some(&m[..])) =>
            {
                c.packets += 1;
                c.bytes += frame.len() as u64;
                c.last_ns = mono_ns;
                true
            }
            _ => false,
        })
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// True when the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FastMap for ModelMap {
    fn insert(&mut self, key: &FastKey, mode: FastMode, src_mac: Option<[u8; 6]>) -> Result<(), String> {
        self.with(|m| m.insert(*key, (mode, FastCounters::default(), src_mac)));
        Ok(())
    }
    fn read(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String> {
        Ok(self.with(|m| m.get(key).map(|e| e.1)))
    }
    fn remove(&mut self, key: &FastKey) -> Result<Option<FastCounters>, String> {
        Ok(self.with(|m| m.remove(key).map(|e| e.1)))
    }
}

/// Which interface slots the program fast-paths frames arriving on (the peer accepts
/// in-kernel redirects), shared by the daemon (which sets them,
/// [`warden_xdp::XdpProgram::accepts_redirects`]) and the workers (which offload a session
/// only when both its slots are on).
#[derive(Debug)]
pub struct FastSlots([AtomicBool; SLOTS]);

impl Default for FastSlots {
    fn default() -> Self {
        FastSlots(std::array::from_fn(|_| AtomicBool::new(false)))
    }
}

impl FastSlots {
    /// Turns slot `slot` on or off.
    pub fn set(&self, slot: u16, on: bool) {
        if let Some(b) = self.0.get(usize::from(slot)) {
            b.store(on, Ordering::Relaxed);
        }
    }

    /// Whether slot `slot` is on.
    #[inline]
    pub fn on(&self, slot: u16) -> bool {
        self.0.get(usize::from(slot)).is_some_and(|b| b.load(Ordering::Relaxed))
    }
}

/// A worker's fast path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastConfig {
    /// Entries (sessions) this worker may have on the fast path; 0 turns it off.
    pub max: usize,
    /// Shortest opaque run offloaded as a [`FastMode::Range`] (bytes).
    pub min_bytes: u64,
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig { max: 0, min_bytes: 64 * 1024 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Session slot and id (a slot is reused by later sessions).
    idx: u32,
    id: u64,
    /// Keys and modes per [`Dir`].
    keys: [FastKey; 2],
    modes: [FastMode; 2],
    /// Counters already added to the session.
    pulled: [FastCounters; 2],
    live: bool,
}

/// A worker's fast path: its entries in the kernel's map. See the module docs. The default
/// has no entries (off).
#[derive(Default)]
pub struct FastPath {
    cfg: FastConfig,
    map: Option<Box<dyn FastMap>>,
    slots: Arc<FastSlots>,
    entries: Vec<Entry>,
    free: Vec<u16>,
    last_pull: u64,
    /// Counters.
    pub stats: FastStats,
}


/// The modes of a session's two directions if it may go on the fast path now (see the module
/// docs), `None` otherwise. `generation` is the worker's policy generation; `min_bytes` the
/// shortest opaque run worth a range.
pub fn decide(sessions: &SessionTable, idx: u32, engine: &Engine, generation: u32, min_bytes: u64) -> Option<[FastMode; 2]> {
    let s = sessions.get(idx);
    if s.fast.offloaded() || s.midstream() || s.key.seg != 0 || s.inner() || s.carrier().is_some() {
        return None;
    }
    if s.anomalous_frames != 0 || !s.threats.is_empty() || s.client_iface == crate::origin::NO_SLOT {
        return None;
    }
    if !final_verdict(&s.policy, generation) {
        return None;
    }
    let ctx = s.app_ctx;
    if ctx != NO_APP && engine.state(ctx).threats().is_some_and(|t| !t.is_empty()) {
        return None;
    }
    match s.key.proto {
        ipproto::TCP => {
            let packets = sessions.packets(idx);
            if s.state != State::Tcp(TcpState::Established) || !s.client_data() || packets[0] == 0 || packets[1] == 0 {
                return None;
            }
            if ctx == NO_APP || engine.inspection_over(ctx) {
                return Some([FastMode::All; 2]);
            }
            if engine.over_but_echo(ctx, false) {
                // The server's first bytes still decide whether this is an echo: they come up.
                return Some([FastMode::All, FastMode::AckOnly]);
            }
            let mut modes = [FastMode::AckOnly; 2];
            let mut any = false;
            for d in [Dir::ToServer, Dir::ToClient] {
                if let Some((lo, len)) = engine.opaque_run(ctx, d).filter(|r| r.1 >= min_bytes.max(1)) {
                    let len = len.min(RANGE_MAX) as u32;
                    modes[d as usize] = FastMode::Range { lo, hi: lo.wrapping_add(len) };
                    any = true;
                }
            }
            any.then_some(modes)
        }
        ipproto::UDP if ctx == NO_APP || engine.inspection_over(ctx) => Some([FastMode::All; 2]),
        // A one-way flow whose server may still echo: the client's datagrams in the kernel,
        // the server's first one comes up (an ack-only entry admits no UDP datagram).
        ipproto::UDP if engine.over_but_echo(ctx, true) => Some([FastMode::All, FastMode::AckOnly]),
        _ => None,
    }
}

/// True when the policy verdict `p` is final and current under `generation`: allowed,
/// learned or not policed, nothing pending, no exception, nothing blocking.
fn final_verdict(p: &PolicyState, generation: u32) -> bool {
    p.generation == generation
        && !p.blocked
        && !p.pending_app
        && p.exception.is_none()
        && p.threat_block.is_none()
        && matches!(p.verdict, None | Some(PolicyVerdict::Allowed | PolicyVerdict::Learned))
}

/// The keys of a session's two directions (index [`Dir`]): the client's frames arrive on
/// `client_slot`, the server's on `server_slot`.
fn keys(s: &Session, client_slot: u16, server_slot: u16) -> [FastKey; 2] {
    let ((c, cp), (sv, sp)) = (s.client_end(), s.server_end());
    let (c, sv): (IpAddr, IpAddr) = (c.ip(), sv.ip());
    let proto = s.key.proto;
    [
        FastKey { slot: u32::from(client_slot), proto, src: c, dst: sv, sport: cp, dport: sp },
        FastKey { slot: u32::from(server_slot), proto, src: sv, dst: c, sport: sp, dport: cp },
    ]
}

fn delta(now: FastCounters, before: FastCounters) -> (u64, u64) {
    (now.packets.saturating_sub(before.packets), now.bytes.saturating_sub(before.bytes))
}

impl FastPath {
    /// A fast path writing `map`, with `cfg.max` entries preallocated, offloading sessions whose
    /// two slots `slots` has on.
    pub fn new(cfg: FastConfig, map: Box<dyn FastMap>, slots: Arc<FastSlots>) -> Self {
        let max = cfg.max.min(usize::from(NO_ENTRY));
        let blank = FastKey { slot: 0, proto: 0, src: IpAddr::from([0u8; 4]), dst: IpAddr::from([0u8; 4]), sport: 0, dport: 0 };
        FastPath {
            cfg: FastConfig { max, ..cfg },
            map: Some(map),
            slots,
            entries: vec![
                Entry {
                    idx: 0,
                    id: 0,
                    keys: [blank; 2],
                    modes: [FastMode::All; 2],
                    pulled: [FastCounters::default(); 2],
                    live: false,
                };
                max
            ],
            free: (0..max as u16).rev().collect(),
            last_pull: 0,
            stats: FastStats::default(),
        }
    }

    /// Entries this worker may use (0: off).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// True while some session is on the fast path (the per-frame hooks cost nothing
    /// otherwise).
    #[inline]
    pub fn active(&self) -> bool {
        self.free.len() < self.entries.len()
    }

    /// The counters, with the number of sessions on the fast path now.
    pub fn stats(&self) -> FastStats {
        FastStats { active: (self.entries.len() - self.free.len()) as u64, ..self.stats }
    }

    /// Puts session `idx` on the fast path if it qualifies now ([`decide`]); `server_slot` is
    /// the slot its server's frames arrive on; `macs` the source MAC each direction (index
    /// [`Dir`]) must come from, where Warden checks it (an attachment's address over its
    /// bridge, [`crate::origin::Origins::mac_checked`]). Called after a frame of the session was
    /// forwarded.
    pub fn consider(&mut self, sessions: &mut SessionTable, engine: &Engine, idx: u32, server_slot: u16, generation: u32, macs: [Option<[u8; 6]>; 2]) {
        if self.entries.is_empty() {
            return;
        }
        let s = sessions.get(idx);
        // A direction whose slot is off still gets its entry (the program does not look it
        // up: its frames come to Warden as ever and are read as frames queued before the
        // entry); with neither on there is nothing to gain.
        if s.fast.offloaded() || !(self.slots.on(s.client_iface) || self.slots.on(server_slot)) {
            return;
        }
        let Some(modes) = decide(sessions, idx, engine, generation, self.cfg.min_bytes) else { return };
        if s.fast.offloads >= MAX_OFFLOADS {
            self.stats.refused_limit += 1;
            return;
        }
        let Some(e) = self.free.pop() else {
            self.stats.refused_full += 1;
            return;
        };
        let keys = keys(s, s.client_iface, server_slot);
        let Some(map) = self.map.as_mut() else { return };
        let ok = map.insert(&keys[0], modes[0], macs[0]).and_then(|()| map.insert(&keys[1], modes[1], macs[1]).inspect_err(|_| {
            let _ = map.remove(&keys[0]);
        }));
        if ok.is_err() {
            self.stats.errors += 1;
            self.free.push(e);
            return;
        }
        self.entries[usize::from(e)] =
            Entry { idx, id: s.id, keys, modes, pulled: [FastCounters::default(); 2], live: true };
        let s = sessions.get_mut(idx);
        s.fast.entry = e;
        s.fast.offloads = s.fast.offloads.saturating_add(1);
        self.stats.offloaded += 1;
    }

    /// A frame of session `idx` (direction `dir`) received on slot `iface` reached user space
    /// while the session is on the fast path: one the program would have forwarded (queued
    /// before the entry) goes on as usual; one it handed up on purpose takes the session off
    /// the fast path first ([`RemoveReason::Frame`]), so it is judged and inspected with the
    /// session's state brought back. A frame on the other side's slot is left to the origin
    /// check.
    #[allow(clippy::too_many_arguments)]
    pub fn frame(&mut self, sessions: &mut SessionTable, engine: &mut Engine, idx: u32, dir: Dir, raw: &[u8], iface: u16, unix_ns: u64) {
        let e = sessions.get(idx).fast.entry;
        let Some(entry) = self.entries.get(usize::from(e)) else { return };
        let d = dir as usize;
        if entry.keys[d].slot != u32::from(iface) {
            return;
        }
        if warden_xdp::fast_admits(raw, entry.modes[d]).is_some_and(|(_, ok)| ok) {
            return;
        }
        self.unoffload(sessions, engine, idx, RemoveReason::Frame, unix_ns);
    }

    /// Takes session `idx` off the fast path for `reason`: its entries leave the map, what they
    /// counted is added to the session, and its sequence state and streams are brought back
    /// (see the module docs). No-op for a session not on it.
    pub fn unoffload(&mut self, sessions: &mut SessionTable, engine: &mut Engine, idx: u32, reason: RemoveReason, unix_ns: u64) {
        let e = sessions.get(idx).fast.entry;
        if e == NO_ENTRY {
            return;
        }
        let Some(entry) = self.entries.get(usize::from(e)).copied().filter(|x| x.live && x.idx == idx) else {
            // Not this session's entry (cannot happen): forget the mark rather than leave the
            // session unjudged.
            sessions.get_mut(idx).fast.entry = NO_ENTRY;
            return;
        };
        let last = self.take_out(e);
        for (d, (p, b)) in last.iter().enumerate() {
            if *p > 0 {
                let dir = if d == 0 { Dir::ToServer } else { Dir::ToClient };
                sessions.account_fast(idx, dir, *p, *b, unix_ns);
            }
        }
        self.stats.removed[reason as usize] += 1;
        let s = sessions.get_mut(idx);
        s.fast.entry = NO_ENTRY;
        if s.key.proto != ipproto::TCP {
            return;
        }
        let ctx = s.app_ctx;
        if entry.modes.contains(&FastMode::All) {
            s.seq.resync_all();
            return;
        }
        for (d, dir) in [(0, Dir::ToServer), (1, Dir::ToClient)] {
            match entry.modes[d] {
                FastMode::All => {}
                FastMode::AckOnly => s.seq.resync_quiet(dir),
                FastMode::Range { hi, .. } => {
                    s.seq.resync_sent(dir, hi);
                    if ctx != NO_APP {
                        engine.tcp_skip_until(ctx, dir, hi);
                    }
                }
            }
        }
    }

    /// Removes entry `e`'s keys from the map and frees it; returns the (frames, bytes) they
    /// counted since the last pull, per direction.
    fn take_out(&mut self, e: u16) -> [(u64, u64); 2] {
        let mut out = [(0, 0); 2];
        let Some(entry) = self.entries.get_mut(usize::from(e)) else { return out };
        if !entry.live {
            return out;
        }
        entry.live = false;
        let entry = *entry;
        if let Some(map) = self.map.as_mut() {
            for ((o, key), pulled) in out.iter_mut().zip(&entry.keys).zip(&entry.pulled) {
                match map.remove(key) {
                    Ok(Some(c)) => *o = delta(c, *pulled),
                    Ok(None) => {}
                    Err(_) => self.stats.errors += 1,
                }
            }
        }
        for (p, b) in out {
            self.stats.frames += p;
            self.stats.bytes += b;
        }
        self.free.push(e);
        out
    }

    /// Takes out the entries of sessions the table removed since the last call (they ended),
    /// adding their last counts to the final records still queued. Call after anything that
    /// may remove sessions (tracking a frame, expiry, ending them).
    pub fn settle(&mut self, sessions: &mut SessionTable, unix_ns: u64) {
        while let Some(e) = sessions.pop_unfast() {
            let id = self.entries.get(usize::from(e)).map(|x| x.id).unwrap_or(0);
            let last = self.take_out(e);
            for (d, (p, b)) in last.iter().enumerate() {
                if *p > 0 {
                    let dir = if d == 0 { Dir::ToServer } else { Dir::ToClient };
                    sessions.amend_ended(id, dir, *p, *b, unix_ns);
                }
            }
            self.stats.removed[RemoveReason::Ended as usize] += 1;
        }
    }

    /// Takes every session off the fast path for `reason` (a new policy generation, new
    /// threat actions).
    pub fn flush(&mut self, sessions: &mut SessionTable, engine: &mut Engine, reason: RemoveReason, unix_ns: u64) {
        for e in 0..self.entries.len() {
            let x = self.entries[e];
            if x.live {
                self.unoffload(sessions, engine, x.idx, reason, unix_ns);
            }
        }
    }

    /// Adds what the kernel forwarded since the last pull to each session on the fast path, if
    /// [`PULL_EVERY`] passed since then (`force`: now). `unix_ns` and `mono_ns` are the same
    /// instant on the wall clock and on `CLOCK_MONOTONIC_COARSE` (the program's clock).
    pub fn pull(&mut self, sessions: &mut SessionTable, unix_ns: u64, mono_ns: u64, force: bool) {
        if !self.active() || (!force && unix_ns.saturating_sub(self.last_pull) < PULL_EVERY) {
            return;
        }
        self.last_pull = unix_ns;
        let Some(map) = self.map.as_mut() else { return };
        for e in 0..self.entries.len() {
            let x = self.entries[e];
            if !x.live {
                continue;
            }
            for (d, dir) in [(0, Dir::ToServer), (1, Dir::ToClient)] {
                let c = match map.read(&x.keys[d]) {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(_) => {
                        self.stats.errors += 1;
                        continue;
                    }
                };
                let (p, b) = delta(c, x.pulled[d]);
                if p == 0 {
                    continue;
                }
                self.entries[e].pulled[d] = c;
                self.stats.frames += p;
                self.stats.bytes += b;
                // The program's clock is CLOCK_MONOTONIC_COARSE: its last frame, on the wall.
                let last = unix_ns.saturating_sub(mono_ns.saturating_sub(c.last_ns));
                sessions.account_fast(x.idx, dir, p, b, last);
            }
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` now (ns), the clock of the program's last-seen times; 0 if it
/// cannot be read.
pub fn mono_coarse_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{FrameMeta, Inspector, Verdict};
    use crate::normalize::{ChecksumPolicy, Normalization};
    use crate::session::Timeouts;

    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    const SYN: u8 = 0x02;
    const FIN: u8 = 0x01;
    /// Client side and server side interface slots.
    const CS: u16 = 1;
    const SS: u16 = 2;

    /// Ethernet + IPv4 + TCP (`flags`, `seq`, `ack`) or UDP (`flags` None) from 198.18.0.`src`
    /// port `sport` to 198.18.0.`dst` port `dport` (checksums not filled: not verified here).
    fn frame(src: u8, sport: u16, dst: u8, dport: u16, tcp: Option<(u8, u32, u32)>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, dst, 0x02, 0, 0, 0, 0, src, 0x08, 0x00];
        let l4 = if tcp.is_some() { 20 } else { 8 };
        let tot = (20 + l4 + payload.len()) as u16;
        let proto = if tcp.is_some() { 6 } else { 17 };
        f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0, 1, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, src, 198, 18, 0, dst]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        match tcp {
            Some((flags, seq, ack)) => {
                f.extend_from_slice(&seq.to_be_bytes());
                f.extend_from_slice(&ack.to_be_bytes());
                f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            }
            None => {
                let ulen = (8 + payload.len()) as u16;
                f.extend_from_slice(&ulen.to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// An inspector on pair (CS, SS) with a fast path of `max` entries over a model map, both
    /// slots on; returns it and the model (the kernel's side).
    fn inspector(max: usize) -> (Inspector, ModelMap) {
        let mut i = Inspector::new(1024, Timeouts::default(), crate::inspect::MalformedPolicy::Drop);
        i.set_normalization(Normalization { checksums: ChecksumPolicy::Ignore, ..Normalization::default() });
        i.set_pair((CS, "a"), (SS, "b"));
        let model = ModelMap::default();
        let slots = Arc::new(FastSlots::default());
        slots.set(CS, true);
        slots.set(SS, true);
        i.set_fast_path(FastPath::new(FastConfig { max, min_bytes: 64 * 1024 }, Box::new(model.clone()), slots));
        (i, model)
    }

    /// Offers `f` arriving on `slot` at `t` (s) to the kernel model first, as the program would
    /// see it; what it does not forward goes to the inspector (as it would to the socket).
    fn send(i: &mut Inspector, model: &ModelMap, f: &[u8], slot: u16, t: u64) -> Option<Verdict> {
        if model.forward(f, u32::from(slot), t * 1_000_000_000) {
            return None;
        }
        Some(i.process(f, FrameMeta::new(0, slot, t * 1_000_000_000)))
    }

    fn udp_frames(i: &mut Inspector, model: &ModelMap, n: usize, t: u64) -> (usize, usize) {
        let (mut kernel, mut user) = (0, 0);
        for _ in 0..n {
            match send(i, model, &frame(1, 5000, 2, 9, None, b"0123456789"), CS, t) {
                None => kernel += 1,
                Some(v) => {
                    assert_eq!(v, Verdict::Forward);
                    user += 1;
                }
            }
        }
        (kernel, user)
    }

    #[test]
    fn a_udp_flow_moves_to_the_fast_path_once_decided_and_its_counts_come_back() {
        let (mut i, model) = inspector(4);
        // Every parser rejects the first datagram (app unknown); only the server's first
        // datagram could still make it an echo: the client's go in the kernel from then on.
        let (kernel, user) = udp_frames(&mut i, &model, 40, 1);
        assert_eq!((user, kernel), (1, 39));
        assert_eq!(model.len(), 2, "both directions");
        assert_eq!(i.fast.stats().active, 1);
        let idx = i.sessions.find(&i.sessions.get(0).key, crate::flow::End::Lo).unwrap().0;
        assert_eq!(i.sessions.packets(idx)[0], 1, "before the pull");
        i.fast.pull(&mut i.sessions, 2_000_000_000, 2_000_000_000, true);
        let s = i.sessions.get(idx);
        assert_eq!((i.sessions.packets(idx)[0], s.fast.frames, s.fast.offloads), (40, 39, 1));
        assert_eq!(i.sessions.bytes(idx)[0], 40 * 52);
        assert_eq!(i.fast.stats().frames, 39);
        // Idle past the UDP timeout: the final record gets what the kernel forwarded since.
        udp_frames(&mut i, &model, 5, 3);
        i.expire_sessions(200_000_000_000, 256);
        assert!(model.is_empty(), "entries out of the map with the session");
        let mut out = Vec::new();
        i.drain_ended(&mut out);
        let end = out.iter().find(|s| s.session.key.proto == 17).unwrap();
        assert_eq!((end.session.packets[0], end.session.fast.frames), (45, 44));
        let r = crate::record::to_record(end, |_| String::new());
        assert!(r.fast_path);
        assert_eq!(r.fast_path_frames, Some(44));
        assert_eq!(i.fast.stats().removed[RemoveReason::Ended as usize], 1);
    }

    /// A client whose address is an attachment's, arriving over its bridge (slot CS is an
    /// attachment's near end): its entry is limited to the workload's MAC, so a frame of the
    /// flow from another MAC (the host claiming the address) comes up and is dropped as
    /// spoofed in protect mode, while the workload's own frames stay in the kernel.
    #[test]
    fn an_entry_over_a_bridge_admits_only_the_workloads_mac() {
        let (mut i, model) = inspector(4);
        let text = "[[workload]]\nid = \"c\"\nips = [\"198.18.0.1\"]\nmode = \"protect\"\n\
                    [[rule]]\nid = 1\nfrom = \"c\"\nto = \"any\"\nip_proto = \"udp\"\nports = [\"9\"]\naction = \"allow\"\n";
        let mut p = crate::policy::Policy::from_toml(text).unwrap();
        let mac = [0x02, 0, 0, 0, 0, 1];
        p.bound.insert("198.18.0.1".parse().unwrap(), crate::policy::BoundAddr { iface: "wd-c".into(), bridge: "br".into(), mac: Some(mac) });
        p.uplinks.insert("a".into(), "br".into());
        i.set_policy(Arc::new(crate::policy::CompiledPolicy::compile(&p).unwrap()), 1);
        let (kernel, user) = udp_frames(&mut i, &model, 20, 1);
        assert_eq!((user, kernel), (1, 19), "the workload's own frames go in the kernel");
        let mut other = frame(1, 5000, 2, 9, None, b"0123456789");
        assert_eq!(&other[6..12], &mac);
        other[11] = 0x99;
        assert_eq!(send(&mut i, &model, &other, CS, 1), Some(Verdict::Drop(crate::inspect::DropReason::Spoofed)));
        assert_eq!(i.stats.spoofed, 1);
        let (kernel, _) = udp_frames(&mut i, &model, 5, 1);
        assert_eq!(kernel, 5, "the workload's flow stays in the kernel");
    }

    /// The server's first datagram still decides whether a one-way flow is an echo: it comes
    /// up (taking the session back), and is read.
    #[test]
    fn the_servers_first_datagram_comes_up_for_the_echo_check() {
        let (mut i, model) = inspector(4);
        udp_frames(&mut i, &model, 5, 1);
        assert_eq!(model.len(), 2);
        let reply = frame(2, 9, 1, 5000, None, b"0123456789");
        assert_eq!(send(&mut i, &model, &reply, SS, 1), Some(Verdict::Forward));
        let idx = i.sessions.find(&i.sessions.get(0).key, crate::flow::End::Lo).unwrap().0;
        let ctx = i.sessions.get(idx).app_ctx;
        assert_eq!(i.engine.ctx(ctx).app, crate::app::App::Echo, "the reply mirrors the request");
        assert_eq!(i.sessions.packets(idx), [5, 1]);
        assert_eq!(i.fast.stats().removed[RemoveReason::Frame as usize], 1);
    }

    #[test]
    fn a_full_table_refuses_and_a_new_policy_generation_takes_every_session_off() {
        let (mut i, model) = inspector(1);
        udp_frames(&mut i, &model, 20, 1);
        for _ in 0..20 {
            send(&mut i, &model, &frame(1, 5001, 2, 9, None, b"0123456789"), CS, 1);
        }
        let st = i.fast.stats();
        assert_eq!((st.active, st.offloaded), (1, 1));
        assert!(st.refused_full >= 1, "{st:?}");
        assert_eq!(model.len(), 2);
        // A new policy (any apply, workload or mode change): out before it is enforced.
        i.set_policy(Arc::new(crate::policy::CompiledPolicy::empty()), 7);
        assert!(model.is_empty());
        let st = i.fast.stats();
        assert_eq!((st.active, st.removed[RemoveReason::Policy as usize]), (0, 1));
        // Decided again under the new generation on its next frame, then back on.
        let (kernel, user) = udp_frames(&mut i, &model, 3, 2);
        assert_eq!((user, kernel), (1, 2));
    }

    /// An HTTP/1.1 keep-alive connection: the first response's body goes on the fast path as a
    /// sequence range (the client's ACKs as ack-only), the second request takes the session
    /// back, its sequence state and the server's stream resynchronised: the second request
    /// and response are parsed and nothing is an anomaly.
    #[test]
    fn an_http_body_goes_on_the_fast_path_and_the_next_exchange_is_inspected() {
        let (mut i, model) = inspector(4);
        let c = |flags, seq, ack, p: &[u8]| frame(1, 40000, 2, 80, Some((flags, seq, ack)), p);
        let s = |flags, seq, ack, p: &[u8]| frame(2, 80, 1, 40000, Some((flags, seq, ack)), p);
        let req = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
        let body_len = 1_000_000u32;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
        let head = head.as_bytes();
        let (cs, ss) = (1000u32, 5000u32);
        let mut user = 0;
        for (f, slot) in [
            (c(SYN, cs, 0, b""), CS),
            (s(SYN | ACK, ss, cs + 1, b""), SS),
            (c(ACK, cs + 1, ss + 1, b""), CS),
            (c(ACK | PSH, cs + 1, ss + 1, req), CS),
            (s(ACK, ss + 1, cs + 1 + req.len() as u32, b""), SS),
            (s(ACK | PSH, ss + 1, cs + 1 + req.len() as u32, head), SS),
        ] {
            assert_eq!(send(&mut i, &model, &f, slot, 1), Some(Verdict::Forward));
            user += 1;
        }
        assert_eq!(model.len(), 2, "on the fast path after the response head");
        let lo = ss + 1 + head.len() as u32;
        let hi = lo + body_len;
        let cack = cs + 1 + req.len() as u32;
        // The body, in 1000-byte segments, and the client's ACKs: all in the kernel.
        let chunk = vec![0x5a; 1000];
        let mut kernel = 0;
        for k in 0..body_len / 1000 {
            assert_eq!(send(&mut i, &model, &s(ACK, lo + k * 1000, cack, &chunk), SS, 2), None);
            assert_eq!(send(&mut i, &model, &c(ACK, cack, lo + (k + 1) * 1000, b""), CS, 2), None);
            kernel += 2;
        }
        // A segment past the range is handed up (and the client's data on the ack-only side).
        assert!(!model.forward(&s(ACK, hi, cack, b"x"), u32::from(SS), 2));
        let req2 = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(send(&mut i, &model, &c(ACK | PSH, cack, hi, req2), CS, 3), Some(Verdict::Forward));
        assert!(model.is_empty(), "back in user space");
        let head2 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let cack2 = cack + req2.len() as u32;
        for (f, slot) in [
            (s(ACK | PSH, hi, cack2, head2), SS),
            (c(ACK, cack2, hi + head2.len() as u32, b""), CS),
        ] {
            assert_eq!(send(&mut i, &model, &f, slot, 3), Some(Verdict::Forward));
        }
        user += 3;
        let idx = i.sessions.find(&crate::flow::FlowKey::new(0, 6, crate::flow::Addr::v4([198, 18, 0, 1]), 40000, crate::flow::Addr::v4([198, 18, 0, 2]), 80).0, crate::flow::End::Lo).unwrap().0;
        let sess = *i.sessions.get(idx);
        let packets = i.sessions.packets(idx);
        assert_eq!(packets[0] + packets[1], (user + kernel) as u64, "every frame counted");
        assert_eq!(sess.fast.frames, kernel);
        assert_eq!(sess.anomalous_frames, 0, "resynchronised: nothing judged an anomaly");
        let mut l7 = serde_json::Map::new();
        i.engine.state(sess.app_ctx).l7(&mut l7);
        assert_eq!((l7["requests"].as_u64(), l7["responses"].as_u64()), (Some(2), Some(2)), "{l7:?}");
        assert_eq!(i.fast.stats().removed[RemoveReason::Frame as usize], 1);
        // The server's FIN after the small body: no re-offload (nothing opaque ahead).
        assert_eq!(send(&mut i, &model, &s(FIN | ACK, hi + head2.len() as u32, cack2, b""), SS, 4), Some(Verdict::Forward));
        assert!(model.is_empty());
    }
}
