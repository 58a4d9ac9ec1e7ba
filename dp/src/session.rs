//! Per-core session table.
//!
//! One entry per flow, shared by both directions (the key is canonical, see
//! [`crate::flow::FlowKey`]); the *client* is the side that opened the flow (the TCP SYN sender,
//! or the first sender for UDP/ICMP/other; for ICMP echo the request's sender, see
//! [`crate::icmp`]), except for a flow another flow announced (a TFTP
//! transfer), whose client is the announcing flow's client ([`SessionTable::set_client`]). Storage is preallocated at start-up: a slab of
//! [`Session`]s, a hashbrown map from key to slab index with its final capacity, and intrusive
//! doubly linked lists, one per (timeout, eviction class), kept in last-activity order. So:
//! - touching a session moves it to the tail of its list (O(1));
//! - expiry pops list heads whose idle time exceeds the list's timeout (O(1) each); it keeps up
//!   with the creation rate: [`SessionTable::expire`] may end as many sessions as were created
//!   since its previous call on top of its budget, and a new session in a full table first
//!   takes the slot of a session already due;
//! - when the table is full and nothing is due, a new session evicts the oldest session of the
//!   cheapest [`EvictClass`] present: denied or closed (lingering), then embryonic TCP, then
//!   flows seen in one direction only, then two-way UDP/ICMP/other. Established TCP sessions
//!   (handshake seen, both directions) are never evicted by a new session: when only those
//!   remain, the new flow is refused ([`SessionTable::track`] returns `None`) and counted, as
//!   Linux conntrack's early drop does. A flood of new tuples, spoofed or denied, can therefore
//!   only recycle the slots of other unproven sessions, and no input can grow the table;
//! - nothing is allocated per packet.
//!
//! TCP state follows the segments seen in both directions (RFC 9293 §3.3.2, reduced to what a
//! middlebox observes): `syn_sent`, `syn_received`, `established`, `half_closed` (one FIN),
//! `closed` (both FINs), `reset` (RST). Closed and reset sessions linger for the short `closed`
//! timeout so late ACKs and retransmissions are still counted, then end with a final record.

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::flow::{End, FlowKey};
use crate::wire::tcpflag;

/// Direction of a frame relative to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the server.
    ToServer = 0,
    /// From the server to the client.
    ToClient = 1,
}

impl Dir {
    /// The other direction.
    #[inline]
    pub fn flip(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// TCP connection state as observed in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Client SYN seen.
    SynSent,
    /// Server SYN-ACK seen.
    SynReceived,
    /// Handshake completed, or picked up mid-stream.
    Established,
    /// One side sent FIN.
    HalfClosed,
    /// Both sides sent FIN.
    Closed,
    /// A RST was seen.
    Reset,
}

/// Session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A TCP session.
    Tcp(TcpState),
    /// UDP, ICMP or another protocol: active until idle.
    Active,
}

impl State {
    /// Name used in connection records.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Tcp(TcpState::SynSent) => "syn_sent",
            State::Tcp(TcpState::SynReceived) => "syn_received",
            State::Tcp(TcpState::Established) => "established",
            State::Tcp(TcpState::HalfClosed) => "half_closed",
            State::Tcp(TcpState::Closed) => "closed",
            State::Tcp(TcpState::Reset) => "reset",
            State::Active => "active",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Idle longer than its state's timeout.
    Idle,
    /// TCP closed by FIN in both directions (reported after the closed linger time).
    Fin,
    /// TCP reset.
    Rst,
    /// Evicted because the table was full.
    Evicted,
    /// Warden stopped or the inline pair was removed.
    Shutdown,
    /// A new SYN opened the same 5-tuple again after the session had closed, been reset, or
    /// been dropped as picked up mid-stream.
    Reused,
}

impl EndReason {
    /// Name used in connection records.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
            EndReason::Reused => "reused",
        }
    }
}

/// Idle timeouts per state class, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP during the handshake.
    pub tcp_syn: u64,
    /// Established TCP.
    pub tcp_established: u64,
    /// TCP after one FIN.
    pub tcp_half_closed: u64,
    /// TCP after both FINs or a RST (linger before the final record).
    pub tcp_closed: u64,
    /// UDP.
    pub udp: u64,
    /// ICMP and ICMPv6.
    pub icmp: u64,
    /// Other IP protocols.
    pub other: u64,
}

const SEC: u64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 30 * SEC,
            tcp_established: 3600 * SEC,
            tcp_half_closed: 120 * SEC,
            tcp_closed: 5 * SEC,
            udp: 60 * SEC,
            icmp: 30 * SEC,
            other: 60 * SEC,
        }
    }
}

const NIL: u32 = u32::MAX;

/// `Session::app_ctx` of a session without an app context (not inspected).
pub const NO_APP: u32 = u32::MAX;

/// Which sessions a new session may evict from a full table, in the order they are evicted
/// (each class oldest first). Counted per class in [`TableStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictClass {
    /// Denied by policy, or TCP closed/reset: lingering only to be reported.
    Lingering = 0,
    /// TCP whose handshake never completed (`syn_sent`, `syn_received`).
    Embryonic = 1,
    /// Frames seen in one direction only (UDP, ICMP, other; TCP picked up mid-stream with no
    /// answer): nothing shows the other end exists.
    OneWay = 2,
    /// UDP, ICMP or other protocols with frames in both directions.
    TwoWay = 3,
    /// TCP established or half-closed with frames in both directions: never evicted.
    Established = 4,
}

// The lists, ordered by eviction class. Each has one idle timeout and one eviction class.
const L_LINGER: u8 = 0;
const L_SYN: u8 = 1;
const L_TCP_ONE_WAY: u8 = 2;
const L_UDP_ONE_WAY: u8 = 3;
const L_ICMP_ONE_WAY: u8 = 4;
const L_OTHER_ONE_WAY: u8 = 5;
const L_UDP: u8 = 6;
const L_ICMP: u8 = 7;
const L_OTHER: u8 = 8;
const L_ESTABLISHED: u8 = 9;
const L_HALF_CLOSED: u8 = 10;
const LISTS: usize = 11;

/// The lists of each evictable class (the index is the class), in eviction order.
const EVICTABLE: [(EvictClass, std::ops::Range<u8>); 4] = [
    (EvictClass::Lingering, L_LINGER..L_SYN),
    (EvictClass::Embryonic, L_SYN..L_TCP_ONE_WAY),
    (EvictClass::OneWay, L_TCP_ONE_WAY..L_UDP),
    (EvictClass::TwoWay, L_UDP..L_ESTABLISHED),
];

impl Timeouts {
    /// Idle timeout of list `list` (ns). A TCP session answered by nobody (mid-stream pickup
    /// without a reply) gets the handshake timeout, not the established one.
    fn of(&self, list: u8) -> u64 {
        match list {
            L_LINGER => self.tcp_closed,
            L_SYN | L_TCP_ONE_WAY => self.tcp_syn,
            L_UDP_ONE_WAY | L_UDP => self.udp,
            L_ICMP_ONE_WAY | L_ICMP => self.icmp,
            L_OTHER_ONE_WAY | L_OTHER => self.other,
            L_ESTABLISHED => self.tcp_established,
            _ => self.tcp_half_closed,
        }
    }
}

/// The list a session belongs on, from its policy, state, protocol and which directions it
/// has frames in.
fn list_of(s: &Session) -> u8 {
    if s.policy.blocked {
        return L_LINGER;
    }
    let one_way = s.packets[0] == 0 || s.packets[1] == 0;
    match s.state {
        State::Tcp(TcpState::SynSent | TcpState::SynReceived) => L_SYN,
        State::Tcp(TcpState::Closed | TcpState::Reset) => L_LINGER,
        State::Tcp(_) if one_way => L_TCP_ONE_WAY,
        State::Tcp(TcpState::Established) => L_ESTABLISHED,
        State::Tcp(TcpState::HalfClosed) => L_HALF_CLOSED,
        State::Active => {
            let (one, two) = match s.key.proto {
                17 => (L_UDP_ONE_WAY, L_UDP),
                1 | 58 => (L_ICMP_ONE_WAY, L_ICMP),
                _ => (L_OTHER_ONE_WAY, L_OTHER),
            };
            if one_way {
                one
            } else {
                two
            }
        }
    }
}

/// One session: both directions of one flow.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Canonical key.
    pub key: FlowKey,
    /// Which canonical end is the client.
    pub client: End,
    /// Unique per worker, increasing.
    pub id: u64,
    /// Current state.
    pub state: State,
    /// True when the first frame seen was not a SYN (client guessed).
    pub midstream: bool,
    /// Unix time of the first frame (ns).
    pub first_ns: u64,
    /// Unix time of the latest frame (ns).
    pub last_ns: u64,
    /// Frames per direction (`[to_server, to_client]`).
    pub packets: [u64; 2],
    /// Frame bytes per direction (L2, no FCS).
    pub bytes: [u64; 2],
    /// Frames Warden dropped per direction (`[to_server, to_client]`; included in `packets`).
    pub dropped_packets: [u64; 2],
    /// Bytes of the frames Warden dropped per direction (included in `bytes`).
    pub dropped_bytes: [u64; 2],
    /// Interface slot where the client side was seen.
    pub client_iface: u16,
    /// Index of the session's app context in the core's engine ([`NO_APP`] when none).
    pub app_ctx: u32,
    /// Policy verdict state.
    pub policy: crate::enforce::PolicyState,
    /// TCP sequence state per direction (for ICMP errors' quotes).
    pub seq: crate::tcpseq::TcpSeq,
    /// ICMP errors that quoted this session.
    pub icmp: crate::icmp::IcmpCounts,
    /// Normalisation anomalies seen, as a bit set ([`crate::normalize::Anomaly::bit`]).
    pub anomalies: u16,
    /// Frames not fed to state or inspection for an anomaly ([`crate::normalize`]).
    pub anomalous_frames: u32,
    /// Threats raised for this session by the threat stage ([`crate::threat`]), any source.
    pub threats: crate::detect::ThreatSet,
    /// The first session-level threat's (id, reason) (parsers' detections keep theirs).
    pub first_threat: Option<(crate::detect::ThreatId, &'static str)>,
    /// Packet clock of the server's first payload byte (0: none yet), and whether the client
    /// sent any (`tcp_no_client_data`).
    pub server_data_ns: u64,
    /// See `server_data_ns`.
    pub client_data: bool,
    /// Counted in its client's live sessions (`ip_src_session_limit`): taken back when the
    /// session closes or leaves the table.
    pub src_counted: bool,
    /// MySQL authentication failures of the session already counted (`mysql_access_denied`).
    pub auth_failures: u16,
    /// The tunnel the session's flow rides, for the inner flow of a tunnel ([`crate::tunnel`]).
    pub tunnel: Option<crate::tunnel::TunnelEnds>,
    /// The tunnel type whose packets the session carries (an outer flow), once one was seen.
    pub carrier: Option<crate::tunnel::Kind>,
    /// The XDP fast path's mark ([`crate::fastpath`]): its entry while offloaded, frames the
    /// kernel forwarded (8 bytes).
    pub fast: crate::fastpath::FastMark,
    fins: u8,
    changed: bool,
    live: bool,
    in_dirty: bool,
    class: u8,
    prev: u32,
    next: u32,
}

impl Session {
    fn vacant() -> Self {
        Session {
            key: FlowKey::new(0, 0, Default::default(), 0, Default::default(), 0).0,
            client: End::Lo,
            id: 0,
            state: State::Active,
            midstream: false,
            first_ns: 0,
            last_ns: 0,
            packets: [0; 2],
            bytes: [0; 2],
            dropped_packets: [0; 2],
            dropped_bytes: [0; 2],
            client_iface: 0,
            app_ctx: NO_APP,
            policy: crate::enforce::PolicyState::default(),
            seq: Default::default(),
            icmp: Default::default(),
            anomalies: 0,
            anomalous_frames: 0,
            threats: crate::detect::ThreatSet::default(),
            first_threat: None,
            server_data_ns: 0,
            client_data: false,
            src_counted: false,
            auth_failures: 0,
            tunnel: None,
            carrier: None,
            fast: crate::fastpath::FastMark::default(),
            fins: 0,
            changed: false,
            live: false,
            in_dirty: false,
            class: 0,
            prev: NIL,
            next: NIL,
        }
    }

    /// The client's (address, port).
    #[inline]
    pub fn client_end(&self) -> (crate::flow::Addr, u16) {
        match self.client {
            End::Lo => (self.key.lo, self.key.lo_port),
            End::Hi => (self.key.hi, self.key.hi_port),
        }
    }

    /// The server's (address, port).
    #[inline]
    pub fn server_end(&self) -> (crate::flow::Addr, u16) {
        match self.client {
            End::Lo => (self.key.hi, self.key.hi_port),
            End::Hi => (self.key.lo, self.key.lo_port),
        }
    }

    /// Direction of a frame sent by canonical end `from`.
    #[inline]
    pub fn dir_of(&self, from: End) -> Dir {
        if from == self.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        }
    }
}

/// Adds fast path frames to a session's counters (see [`SessionTable::account_fast`]).
fn add_fast(s: &mut Session, dir: Dir, packets: u64, bytes: u64, last_ns: u64) {
    s.packets[dir as usize] += packets;
    s.bytes[dir as usize] += bytes;
    s.fast.frames = s.fast.frames.saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
    s.last_ns = s.last_ns.max(last_ns);
    s.changed = true;
}

/// A snapshot of a session for reports: plain data, converted to text by the control thread.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    /// The session at the time of the snapshot.
    pub session: Session,
    /// `Some` in the final record of an ended session.
    pub ended: Option<EndReason>,
    /// The app view, attached by the inspector (None: not inspected).
    pub app: Option<crate::app::engine::AppSummary>,
    /// The policy view, attached by the inspector (None: not enforced).
    pub policy: Option<crate::enforce::PolicyView>,
}

/// Session table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Sessions created.
    pub created: u64,
    /// Sessions ended by idle timeout (including closed/reset linger).
    pub expired: u64,
    /// Sessions evicted because the table was full (all classes).
    pub evicted: u64,
    /// Of those: denied, closed or reset sessions ([`EvictClass::Lingering`]).
    pub evicted_lingering: u64,
    /// Of those: TCP handshakes never completed ([`EvictClass::Embryonic`]).
    pub evicted_embryonic: u64,
    /// Of those: flows seen in one direction only ([`EvictClass::OneWay`]).
    pub evicted_one_way: u64,
    /// Of those: UDP/ICMP/other flows seen both ways ([`EvictClass::TwoWay`]).
    pub evicted_two_way: u64,
    /// New flows refused because the table was full of established TCP sessions (their frame
    /// gets no session; the inspector drops it).
    pub refused: u64,
    /// Final records lost because the ended queue was full (the worker flushes it long before).
    pub ended_overflow: u64,
}

/// Result of [`SessionTable::track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// Slab index of the session.
    pub idx: u32,
    /// Direction of this frame.
    pub dir: Dir,
    /// True when this frame created the session.
    pub new: bool,
    /// Set when the frame's TCP segment is one the receiver drops or ignores
    /// ([`crate::normalize::judge`]): it was counted but moved no state and must not be
    /// inspected.
    pub anomaly: Option<crate::normalize::Anomaly>,
}

/// The per-core session table. See the module docs.
pub struct SessionTable {
    map: HashMap<FlowKey, u32>,
    slots: Vec<Session>,
    free: Vec<u32>,
    heads: [u32; LISTS],
    tails: [u32; LISTS],
    timeouts: Timeouts,
    dirty: Vec<u32>,
    ended: VecDeque<SessionSnapshot>,
    ended_cap: usize,
    /// App contexts of ended sessions whose final record did not fit `ended`: the inspector
    /// returns them to its engine ([`Self::drain_released`]), so a full ended queue loses the
    /// record, never the context or its stream buffers.
    released: Vec<u32>,
    /// (zone, client) of removed sessions that were counted per source
    /// (`ip_src_session_limit`), for the threat stage to take back (capacity: the table's).
    uncounted: Vec<(u16, crate::flow::Addr)>,
    next_id: u64,
    /// Sessions created since the last [`SessionTable::expire`] (added to its budget).
    created_since_expire: u64,
    stats: TableStats,
    /// Fast path entries ([`crate::fastpath`]) of removed sessions, for the fast path to take
    /// out of the kernel's map (capacity reserved by [`Self::reserve_fast`]).
    unfast: Vec<u16>,
}

impl SessionTable {
    /// A table for at most `max` sessions (at least 1), with all memory allocated now.
    pub fn new(max: usize, timeouts: Timeouts) -> Self {
        let max = max.clamp(1, (NIL - 1) as usize);
        let ended_cap = max.clamp(1024, 65536);
        SessionTable {
            map: HashMap::with_capacity(max),
            slots: vec![Session::vacant(); max],
            free: (0..max as u32).rev().collect(),
            heads: [NIL; LISTS],
            tails: [NIL; LISTS],
            timeouts,
            dirty: Vec::with_capacity(max),
            ended: VecDeque::with_capacity(ended_cap),
            ended_cap,
            released: Vec::with_capacity(max),
            uncounted: Vec::with_capacity(max.max(1)),
            next_id: 1,
            created_since_expire: 0,
            stats: TableStats::default(),
            unfast: Vec::new(),
        }
    }

    /// Makes room for `entries` fast path entries of removed sessions without allocating later
    /// (each live entry is removed once, so the list never holds more).
    pub fn reserve_fast(&mut self, entries: usize) {
        self.unfast.reserve(entries.saturating_sub(self.unfast.len()));
    }

    /// Takes one fast path entry of a session removed since the last call.
    pub fn pop_unfast(&mut self) -> Option<u16> {
        self.unfast.pop()
    }

    /// True when removed sessions left fast path entries to take out.
    #[inline]
    pub fn has_unfast(&self) -> bool {
        !self.unfast.is_empty()
    }

    /// Adds `packets` frames of `bytes` bytes sent in direction `dir` of session `idx`, the
    /// latest at `last_ns` (Unix ns), that the kernel's fast path forwarded
    /// ([`crate::fastpath`]): counted as seen (and in [`Session::fast`]), the idle timer
    /// moved, the session reported as changed.
    pub fn account_fast(&mut self, idx: u32, dir: Dir, packets: u64, bytes: u64, last_ns: u64) {
        let s = &mut self.slots[idx as usize];
        add_fast(s, dir, packets, bytes, last_ns);
        if s.live {
            self.touch(idx);
        }
    }

    /// Adds fast path frames (as [`Self::account_fast`]) to the final record of the ended
    /// session `id`, still queued (a session removed between two pulls). False when its
    /// record is no longer queued.
    pub fn amend_ended(&mut self, id: u64, dir: Dir, packets: u64, bytes: u64, last_ns: u64) -> bool {
        match self.ended.iter_mut().rev().find(|s| s.session.id == id) {
            Some(snap) => {
                add_fast(&mut snap.session, dir, packets, bytes, last_ns);
                true
            }
            None => false,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Capacity (maximum live sessions).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// The session in slot `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Session {
        &self.slots[idx as usize]
    }

    /// Mutable access to the session in slot `idx`.
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Session {
        &mut self.slots[idx as usize]
    }

    /// Looks up the session of `key` without creating one. Returns its index and the direction
    /// of a frame sent by `from`.
    pub fn find(&self, key: &FlowKey, from: End) -> Option<(u32, Dir)> {
        let idx = *self.map.get(key)?;
        Some((idx, self.slots[idx as usize].dir_of(from)))
    }

    /// Accounts one frame of `len` bytes sent by canonical end `from` at `now_ns` (Unix ns) on
    /// interface `iface`, creating the session if needed and advancing TCP state and sequence
    /// tracking with `tcp` (`None` for other protocols). A full table first ends a session
    /// already due, else evicts by [`EvictClass`] (see the module docs). `None` when the session
    /// is new and the table holds only established TCP sessions: the flow is refused (counted
    /// in [`TableStats::refused`]).
    pub fn track(
        &mut self,
        key: &FlowKey,
        from: End,
        len: u32,
        tcp: Option<crate::tcpseq::Segment>,
        iface: u16,
        now_ns: u64,
    ) -> Option<Tracked> {
        let tcp_flags = tcp.map(|t| t.flags);
        let (idx, new) = match self.map.get(key) {
            Some(&idx) if !self.reusable(idx, tcp_flags) => (idx, false),
            Some(&idx) => {
                self.remove(idx, EndReason::Reused);
                (self.create(key, from, tcp_flags, iface, now_ns), true)
            }
            None => {
                if !self.make_room(now_ns) {
                    self.stats.refused += 1;
                    return None;
                }
                (self.create(key, from, tcp_flags, iface, now_ns), true)
            }
        };
        let s = &mut self.slots[idx as usize];
        let dir = s.dir_of(from);
        s.packets[dir as usize] += 1;
        s.bytes[dir as usize] += u64::from(len);
        if let Some(seg) = tcp {
            // A segment of a session on the fast path reaching here is one the kernel would
            // have forwarded unjudged (queued before its entry): it is not judged either.
            if !new && !s.fast.offloaded() {
                if let Err(a) = crate::normalize::judge(&s.seq, dir, &seg, s.midstream) {
                    // Seen, but the receiver drops it: no state, no idle refresh.
                    self.mark_anomaly(idx, a);
                    return Some(Tracked { idx, dir, new, anomaly: Some(a) });
                }
            }
            advance_tcp(s, dir, &seg);
            s.seq.update(dir, &seg);
        }
        s.last_ns = s.last_ns.max(now_ns);
        self.touch(idx);
        Some(Tracked { idx, dir, new, anomaly: None })
    }

    /// Records anomaly `a` on session `idx` (one more frame not fed) and reports the change.
    pub fn mark_anomaly(&mut self, idx: u32, a: crate::normalize::Anomaly) {
        let s = &mut self.slots[idx as usize];
        s.anomalies |= a.bit();
        s.anomalous_frames = s.anomalous_frames.saturating_add(1);
        s.changed = true;
        if !s.in_dirty {
            s.in_dirty = true;
            self.dirty.push(idx);
        }
    }

    /// True when a frame with `tcp_flags` starts a new connection on session `idx`'s 5-tuple: a
    /// pure SYN after the session closed or was reset (port reuse, RFC 9293 §3.10.7.4 TIME-WAIT
    /// reuse), or on a session dropped because it was picked up mid-stream (its real
    /// handshake). A SYN never replaces a live or handshaking session, so nobody can flip the
    /// direction of an established one.
    fn reusable(&self, idx: u32, tcp_flags: Option<u8>) -> bool {
        let Some(f) = tcp_flags else { return false };
        if f & (tcpflag::SYN | tcpflag::ACK | tcpflag::RST | tcpflag::FIN) != tcpflag::SYN {
            return false;
        }
        let s = &self.slots[idx as usize];
        matches!(s.state, State::Tcp(TcpState::Closed | TcpState::Reset)) || (s.midstream && s.policy.blocked)
    }

    /// Counts a frame of session `idx` sent in direction `dir` (`len` bytes) as dropped by
    /// Warden (it was already counted as seen).
    pub fn count_dropped(&mut self, idx: u32, dir: Dir, len: u32) {
        let s = &mut self.slots[idx as usize];
        s.dropped_packets[dir as usize] += 1;
        s.dropped_bytes[dir as usize] += u64::from(len);
    }

    /// Counts a frame claimed for session `idx` in direction `dir` that Warden dropped before
    /// tracking it (a spoofed frame): seen and dropped, without touching the session's state or
    /// idle timer.
    pub fn count_rejected(&mut self, idx: u32, dir: Dir, len: u32) {
        let s = &mut self.slots[idx as usize];
        s.packets[dir as usize] += 1;
        s.bytes[dir as usize] += u64::from(len);
        s.changed = true;
        if !s.in_dirty {
            s.in_dirty = true;
            self.dirty.push(idx);
        }
        self.count_dropped(idx, dir, len);
    }

    /// Adds one frame to an existing session without state changes (ICMP errors about it).
    pub fn account(&mut self, idx: u32, dir: Dir, len: u32, now_ns: u64) {
        let s = &mut self.slots[idx as usize];
        s.packets[dir as usize] += 1;
        s.bytes[dir as usize] += u64::from(len);
        s.last_ns = s.last_ns.max(now_ns);
        self.touch(idx);
    }

    fn create(
        &mut self,
        key: &FlowKey,
        from: End,
        tcp_flags: Option<u8>,
        iface: u16,
        now_ns: u64,
    ) -> u32 {
        let Some(idx) = self.free.pop() else {
            unreachable!("track makes room before creating")
        };
        let other = match from {
            End::Lo => End::Hi,
            End::Hi => End::Lo,
        };
        let (client, state, midstream) = match tcp_flags {
            // Only a SYN without ACK, RST or FIN opens a connection whose client is known.
            Some(f) if f & (tcpflag::SYN | tcpflag::ACK | tcpflag::RST | tcpflag::FIN) == tcpflag::SYN => {
                (from, State::Tcp(TcpState::SynSent), false)
            }
            // A SYN-ACK first: its receiver opened the connection.
            Some(f) if f & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN | tcpflag::ACK => {
                (other, State::Tcp(TcpState::SynReceived), true)
            }
            Some(_) => {
                // Picked up mid-stream: the side on the higher (ephemeral) port is the client.
                let (sport, dport) = match from {
                    End::Lo => (key.lo_port, key.hi_port),
                    End::Hi => (key.hi_port, key.lo_port),
                };
                let client = if dport > sport { other } else { from };
                (client, State::Tcp(TcpState::Established), true)
            }
            None => (from, State::Active, false),
        };
        let client_iface = if client == from { iface } else { u16::MAX };
        let in_dirty = self.slots[idx as usize].in_dirty;
        self.slots[idx as usize] = Session {
            key: *key,
            client,
            id: self.next_id,
            state,
            midstream,
            first_ns: now_ns,
            last_ns: now_ns,
            client_iface,
            live: true,
            in_dirty,
            ..Session::vacant()
        };
        self.slots[idx as usize].class = list_of(&self.slots[idx as usize]);
        self.next_id += 1;
        self.created_since_expire += 1;
        self.map.insert(*key, idx);
        self.link_tail(idx);
        self.stats.created += 1;
        idx
    }

    /// Makes canonical end `client` the client of session `idx` (a flow announced by another
    /// one, such as a TFTP transfer, whose first frame came from the server). When that changes
    /// the client, the per-direction counters swap and the client's interface is learnt from
    /// its next frame ([`Self::note_client_iface`]).
    pub fn set_client(&mut self, idx: u32, client: End) {
        let s = &mut self.slots[idx as usize];
        if s.client == client {
            return;
        }
        s.client = client;
        s.packets.swap(0, 1);
        s.bytes.swap(0, 1);
        s.dropped_packets.swap(0, 1);
        s.dropped_bytes.swap(0, 1);
        s.client_iface = u16::MAX;
        s.changed = true;
    }

    /// Swaps the ends of session `idx`, picked up mid-stream, whose content showed that the
    /// end taken for its client is the server ([`crate::app::midstream`]): every
    /// per-direction count and state follows its sender, the client's interface becomes
    /// `client_iface` (the other side of the pair), and a count in the old client's live
    /// sessions (`ip_src_session_limit`) is taken back (the new client's is not added: the
    /// session was not opened by it before Warden's eyes).
    pub fn flip_client(&mut self, idx: u32, client_iface: u16) {
        let s = &mut self.slots[idx as usize];
        let old_client = s.client_end().0;
        s.client = match s.client {
            End::Lo => End::Hi,
            End::Hi => End::Lo,
        };
        s.packets.swap(0, 1);
        s.bytes.swap(0, 1);
        s.dropped_packets.swap(0, 1);
        s.dropped_bytes.swap(0, 1);
        s.seq.swap_dirs();
        s.fins = (s.fins & 1) << 1 | (s.fins >> 1) & 1;
        let server_spoke = s.server_data_ns != 0;
        s.server_data_ns = if s.client_data { s.last_ns.max(1) } else { 0 };
        s.client_data = server_spoke;
        s.client_iface = client_iface;
        s.changed = true;
        let (zone, counted) = (s.key.zone, s.src_counted);
        s.src_counted = false;
        if counted && self.uncounted.len() < self.uncounted.capacity() {
            self.uncounted.push((zone, old_client));
        }
        if !self.slots[idx as usize].in_dirty {
            self.slots[idx as usize].in_dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Records the interface of the client side once a client frame is seen (for sessions
    /// created by a server frame).
    pub fn note_client_iface(&mut self, idx: u32, iface: u16) {
        let s = &mut self.slots[idx as usize];
        if s.client_iface == u16::MAX {
            s.client_iface = iface;
        }
    }

    /// Gives a session denied by policy the short linger of closed sessions
    /// (`tcp_closed_timeout`): it forwards nothing, so it need not hold a slot longer than it
    /// takes to report it, and a flood of denied flows cannot keep live ones out of the table.
    pub fn linger(&mut self, idx: u32) {
        if self.slots[idx as usize].class == L_LINGER {
            return;
        }
        self.unlink(idx);
        self.slots[idx as usize].class = L_LINGER;
        self.link_tail(idx);
    }

    fn touch(&mut self, idx: u32) {
        let class = list_of(&self.slots[idx as usize]);
        self.unlink(idx);
        self.slots[idx as usize].class = class;
        self.link_tail(idx);
        let s = &mut self.slots[idx as usize];
        s.changed = true;
        if !s.in_dirty {
            s.in_dirty = true;
            self.dirty.push(idx);
        }
    }

    fn link_tail(&mut self, idx: u32) {
        let c = self.slots[idx as usize].class as usize;
        let tail = self.tails[c];
        {
            let s = &mut self.slots[idx as usize];
            s.prev = tail;
            s.next = NIL;
        }
        if tail == NIL {
            self.heads[c] = idx;
        } else {
            self.slots[tail as usize].next = idx;
        }
        self.tails[c] = idx;
    }

    fn unlink(&mut self, idx: u32) {
        let (c, prev, next) = {
            let s = &self.slots[idx as usize];
            (s.class as usize, s.prev, s.next)
        };
        if prev == NIL {
            self.heads[c] = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[c] = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let s = &mut self.slots[idx as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    /// Takes the (zone, client) of removed sessions counted per source.
    pub fn drain_uncounted(&mut self) -> std::vec::Drain<'_, (u16, crate::flow::Addr)> {
        self.uncounted.drain(..)
    }

    /// True when removed sessions wait to be taken back from their source's count.
    pub fn has_uncounted(&self) -> bool {
        !self.uncounted.is_empty()
    }

    fn remove(&mut self, idx: u32, why: EndReason) {
        self.unlink(idx);
        let s = self.slots[idx as usize];
        self.map.remove(&s.key);
        if s.fast.offloaded() {
            // Its entries must leave the kernel's map before any frame of a new session on
            // the same 5-tuple arrives: the fast path takes them out after this call.
            self.unfast.push(s.fast.entry);
            self.slots[idx as usize].fast.entry = crate::fastpath::NO_ENTRY;
        }
        if s.src_counted && self.uncounted.len() < self.uncounted.capacity() {
            self.uncounted.push((s.key.zone, s.client_end().0));
        }
        if self.ended.len() < self.ended_cap {
            self.ended.push_back(SessionSnapshot {
                session: s,
                ended: Some(why),
                app: None,
                policy: None,
            });
        } else {
            self.stats.ended_overflow += 1;
            if s.app_ctx != NO_APP {
                self.released.push(s.app_ctx);
            }
        }
        let slot = &mut self.slots[idx as usize];
        slot.live = false;
        slot.changed = false;
        self.free.push(idx);
    }

    /// Frees a slot for a new session at `now_ns` if the table is full: ends a session whose
    /// idle timeout has passed (expiry not yet run), else evicts the oldest session of the
    /// cheapest [`EvictClass`] present. False when only established TCP sessions remain.
    fn make_room(&mut self, now_ns: u64) -> bool {
        if !self.free.is_empty() {
            return true;
        }
        if self.expire_lists(now_ns, 1) == 1 {
            return true;
        }
        for (class, lists) in EVICTABLE {
            let oldest = self.heads[lists.start as usize..lists.end as usize]
                .iter()
                .filter(|&&h| h != NIL)
                .min_by_key(|&&h| self.slots[h as usize].last_ns)
                .copied();
            if let Some(idx) = oldest {
                self.remove(idx, EndReason::Evicted);
                self.stats.evicted += 1;
                let st = &mut self.stats;
                match class {
                    EvictClass::Lingering => st.evicted_lingering += 1,
                    EvictClass::Embryonic => st.evicted_embryonic += 1,
                    EvictClass::OneWay => st.evicted_one_way += 1,
                    EvictClass::TwoWay => st.evicted_two_way += 1,
                    EvictClass::Established => {} // not in EVICTABLE
                }
                return true;
            }
        }
        false
    }

    /// Ends sessions idle past their timeout at `now_ns`, at most `budget` of them plus as many
    /// as were created since the previous call (so a burst of expiries cannot stall the packet
    /// loop, and expiry keeps up with any creation rate: call it every loop). Lingering
    /// (denied, closed) and embryonic sessions go first. Returns how many ended.
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        let extra = usize::try_from(std::mem::take(&mut self.created_since_expire)).unwrap_or(usize::MAX);
        self.expire_lists(now_ns, budget.saturating_add(extra))
    }

    fn expire_lists(&mut self, now_ns: u64, budget: usize) -> usize {
        let mut n = 0;
        for list in 0..LISTS as u8 {
            let timeout = self.timeouts.of(list);
            while n < budget {
                let h = self.heads[list as usize];
                if h == NIL {
                    break;
                }
                let s = &self.slots[h as usize];
                if now_ns.saturating_sub(s.last_ns) < timeout {
                    break;
                }
                let why = match s.state {
                    State::Tcp(TcpState::Closed) => EndReason::Fin,
                    State::Tcp(TcpState::Reset) => EndReason::Rst,
                    _ => EndReason::Idle,
                };
                self.remove(h, why);
                self.stats.expired += 1;
                n += 1;
            }
        }
        n
    }

    /// Ends every session (shutdown or pair removal) whose zone satisfies `pred`.
    pub fn end_all(&mut self, mut pred: impl FnMut(u16) -> bool) {
        let live: Vec<u32> =
            self.map.iter().filter(|(k, _)| pred(k.zone)).map(|(_, &i)| i).collect();
        for idx in live {
            self.remove(idx, EndReason::Shutdown);
        }
    }

    /// Makes room for `contexts` released app contexts without allocating later: the number
    /// of contexts in the owner's engine (each released one is a distinct context not yet
    /// returned, so the list never holds more).
    pub fn reserve_released(&mut self, contexts: usize) {
        self.released.reserve(contexts.saturating_sub(self.released.len()));
    }

    /// Takes the app contexts of ended sessions whose final record was lost (ended queue
    /// full); the caller returns them to its engine.
    pub fn drain_released(&mut self) -> std::vec::Drain<'_, u32> {
        self.released.drain(..)
    }

    /// Number of final records waiting in the ended queue.
    pub fn ended_pending(&self) -> usize {
        self.ended.len()
    }

    /// True when the ended queue is half full or holds 4096 records: time to drain it before
    /// records are lost (its capacity is `max` sessions clamped to 1024..=65536).
    pub fn ended_nearly_full(&self) -> bool {
        self.ended.len() >= (self.ended_cap / 2).min(4096)
    }

    /// Moves snapshots of every session changed since the last call, then every ended
    /// session's final record, into `out`.
    pub fn drain_reports(&mut self, out: &mut Vec<SessionSnapshot>) {
        self.drain_reports_upto(out, usize::MAX);
    }

    /// As [`Self::drain_reports`], at most `max` snapshots (changed sessions first, then final
    /// records); the rest stay for the next call. Returns true when some are left. The order
    /// inside one call does not matter to the reporter: a changed session is live, so no final
    /// record of it is queued.
    pub fn drain_reports_upto(&mut self, out: &mut Vec<SessionSnapshot>, max: usize) -> bool {
        let mut n = 0;
        while n < max {
            let Some(idx) = self.dirty.pop() else { break };
            let s = &mut self.slots[idx as usize];
            s.in_dirty = false;
            if s.live && s.changed {
                s.changed = false;
                out.push(SessionSnapshot {
                    session: *s,
                    ended: None,
                    app: None,
                    policy: None,
                });
                n += 1;
            }
        }
        self.drain_ended_upto(out, max - n) || !self.dirty.is_empty()
    }

    /// Moves only the final records of ended sessions into `out`.
    pub fn drain_ended(&mut self, out: &mut Vec<SessionSnapshot>) {
        self.drain_ended_upto(out, usize::MAX);
    }

    /// As [`Self::drain_ended`], at most `max` records, oldest first. Returns true when some
    /// are left.
    pub fn drain_ended_upto(&mut self, out: &mut Vec<SessionSnapshot>, max: usize) -> bool {
        let n = self.ended.len().min(max);
        out.extend(self.ended.drain(..n));
        if self.ended.is_empty() {
            // Back to the start of the ring: a queue drained as fast as it fills keeps using
            // its first pages instead of walking through (and making resident) all of them.
            self.ended.clear();
        }
        !self.ended.is_empty()
    }

    /// One step of a walk over the live sessions in slot order: snapshots of the live
    /// sessions in slots `from..`, at most `max` of them, looking at no more than `scan` slots
    /// (one cache line each, live or vacant). Returns them and the slot where the next step
    /// starts, `None` when the walk reached the end of the table (also when `from` is beyond
    /// it). A session keeps its slot for its whole life, so a walk whose steps each start where
    /// the previous one stopped returns every session live throughout exactly once; a session
    /// created meanwhile in a slot not yet reached, or one still live when its slot is reached,
    /// is returned too. Allocates the returned vector only (`max`, bounded by the live count).
    pub fn page(&self, from: u32, max: usize, scan: usize) -> (Vec<SessionSnapshot>, Option<u32>) {
        let cap = self.slots.len();
        let start = from as usize;
        if start >= cap {
            return (Vec::new(), None);
        }
        let end = start.saturating_add(scan.max(1)).min(cap);
        let mut out = Vec::with_capacity(max.min(self.len()));
        let mut i = start;
        while i < end && out.len() < max {
            let s = &self.slots[i];
            if s.live {
                out.push(SessionSnapshot {
                    session: *s,
                    ended: None,
                    app: None,
                    policy: None,
                });
            }
            i += 1;
        }
        (out, (i < cap).then_some(i as u32))
    }

    /// Snapshots of up to `limit` live sessions.
    pub fn snapshot(&self, limit: usize) -> Vec<SessionSnapshot> {
        self.map
            .values()
            .take(limit)
            .map(|&i| SessionSnapshot {
                session: self.slots[i as usize],
                ended: None,
                app: None,
                policy: None,
            })
            .collect()
    }
}

fn advance_tcp(s: &mut Session, dir: Dir, seg: &crate::tcpseq::Segment) {
    let State::Tcp(st) = s.state else { return };
    let flags = seg.flags;
    let bit = 1u8 << (dir as u8);
    let next = if flags & tcpflag::RST != 0 {
        TcpState::Reset
    } else if st == TcpState::Reset {
        // Data after an accepted RST: the receiver did not reset (an in-window RST that was
        // not at its RCV.NXT only draws a challenge ACK, RFC 5961 §3.2), so neither does
        // Warden; late segments after a real reset draw RSTs that end it again.
        if seg.len > 0 && flags & (tcpflag::ACK | tcpflag::SYN) == tcpflag::ACK {
            if s.fins != 0 { TcpState::HalfClosed } else { TcpState::Established }
        } else {
            TcpState::Reset
        }
    } else if flags & tcpflag::FIN != 0 {
        s.fins |= bit;
        if s.fins == 3 {
            TcpState::Closed
        } else {
            TcpState::HalfClosed
        }
    } else {
        match (st, dir) {
            (TcpState::SynSent, Dir::ToClient)
                if flags & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN | tcpflag::ACK =>
            {
                TcpState::SynReceived
            }
            (TcpState::SynReceived, Dir::ToServer) if flags & tcpflag::ACK != 0 => {
                TcpState::Established
            }
            (st, _) => st,
        }
    };
    s.state = State::Tcp(next);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;
    use tcpflag::*;

    fn seg(flags: u8) -> Option<crate::tcpseq::Segment> {
        Some(crate::tcpseq::Segment::flags(flags))
    }

    const C: End = End::Lo;
    const S: End = End::Hi;

    fn key(port: u16) -> FlowKey {
        FlowKey::new(0, 6, Addr::v4([198, 18, 0, 1]), port, Addr::v4([198, 18, 0, 2]), 80).0
    }

    fn state(t: &SessionTable, k: &FlowKey) -> State {
        t.get(t.find(k, C).unwrap().0).state
    }

    #[test]
    fn tcp_lifecycle_and_counts() {
        let mut t = SessionTable::new(16, Timeouts::default());
        let k = key(40000);
        let n = 1_000;
        assert!(t.track(&k, C, 74, seg(SYN), 1, n).unwrap().new);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::SynSent));
        assert_eq!(t.track(&k, S, 74, seg(SYN | ACK), 2, n + 1).unwrap().dir, Dir::ToClient);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::SynReceived));
        t.track(&k, C, 66, seg(ACK), 1, n + 2);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::Established));
        t.track(&k, C, 66, seg(FIN | ACK), 1, n + 3);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::HalfClosed));
        t.track(&k, S, 66, seg(FIN | ACK), 2, n + 4);
        t.track(&k, C, 66, seg(ACK), 1, n + 5);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::Closed));
        let s = t.get(t.find(&k, C).unwrap().0);
        assert_eq!((s.packets, s.bytes), ([4, 2], [74 + 66 * 3, 74 + 66]));
        assert_eq!(s.client_iface, 1);
        // Closed lingers, then ends with reason fin.
        assert_eq!(t.expire(n + 5 + SEC, 100), 0);
        assert_eq!(t.expire(n + 5 + 6 * SEC, 100), 1);
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        let last = out.last().unwrap();
        assert_eq!(last.ended, Some(EndReason::Fin));
        assert!(t.is_empty());
    }

    #[test]
    fn syn_ack_first_makes_receiver_the_client() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let k = key(40001);
        t.track(&k, S, 60, seg(SYN | ACK), 2, 1);
        let (idx, dir) = t.find(&k, C).unwrap();
        assert_eq!(dir, Dir::ToServer);
        assert_eq!(t.get(idx).client_iface, u16::MAX);
        t.note_client_iface(idx, 1);
        assert_eq!(t.get(idx).client_iface, 1);
    }

    #[test]
    fn set_client_swaps_directions() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let u = FlowKey::new(0, 17, Addr::v4([198, 18, 0, 2]), 50000, Addr::v4([198, 18, 0, 1]), 41234);
        // The server (198.18.0.2, the high end) sends first: it would be the client.
        assert_eq!(u.1, S);
        let tr = t.track(&u.0, S, 558, None, 2, 1).unwrap();
        assert_eq!(tr.dir, Dir::ToServer);
        t.set_client(tr.idx, C);
        let s = t.get(tr.idx);
        assert_eq!((s.client, s.packets, s.bytes, s.client_iface), (C, [0, 1], [0, 558], u16::MAX));
        assert_eq!(t.track(&u.0, C, 60, None, 1, 2).unwrap().dir, Dir::ToServer);
        t.note_client_iface(tr.idx, 1);
        let s = t.get(tr.idx);
        assert_eq!((s.packets, s.bytes, s.client_iface), ([1, 1], [60, 558], 1));
        t.set_client(tr.idx, C);
        assert_eq!(t.get(tr.idx).packets, [1, 1]);
    }

    #[test]
    fn midstream_client_is_the_ephemeral_port() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let k = key(40002);
        // Server (port 80) speaks first mid-stream.
        t.track(&k, S, 60, seg(ACK), 2, 1);
        let (idx, dir) = t.find(&k, C).unwrap();
        assert_eq!(dir, Dir::ToServer);
        assert!(t.get(idx).midstream);
        assert_eq!(t.get(idx).state, State::Tcp(TcpState::Established));
    }

    #[test]
    fn rst_resets() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let k = key(40003);
        t.track(&k, C, 60, seg(SYN), 1, 1);
        t.track(&k, S, 60, seg(RST | ACK), 2, 2);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::Reset));
    }

    #[test]
    fn full_table_evicts_oldest_idle_and_stays_bounded() {
        let mut t = SessionTable::new(8, Timeouts::default());
        for p in 0..100u16 {
            t.track(&key(1000 + p), C, 60, seg(SYN), 1, u64::from(p));
            assert!(t.len() <= 8);
        }
        assert_eq!(t.stats().evicted, 92);
        // The survivors are the 8 newest.
        assert!(t.find(&key(1099), C).is_some());
        assert!(t.find(&key(1091), C).is_none());
        // Touching an old session (its SYN retransmitted) protects it from eviction.
        t.track(&key(1092), C, 60, seg(SYN), 1, 200);
        t.track(&key(5000), C, 60, seg(SYN), 1, 201);
        assert!(t.find(&key(1092), C).is_some());
        assert!(t.find(&key(1093), C).is_none());
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        assert_eq!(out.iter().filter(|r| r.ended == Some(EndReason::Evicted)).count(), 93);
    }

    #[test]
    fn per_class_timeouts() {
        let to = Timeouts { udp: 10, tcp_established: 100, ..Timeouts::default() };
        let mut t = SessionTable::new(8, to);
        let u = FlowKey::new(0, 17, Addr::v4([198, 18, 0, 1]), 5, Addr::v4([198, 18, 0, 2]), 53).0;
        t.track(&u, End::Lo, 80, None, 1, 0);
        let k = key(7);
        t.track(&k, C, 60, seg(ACK), 1, 0);
        t.track(&k, S, 60, seg(ACK), 2, 0);
        assert_eq!(t.expire(11, 10), 1);
        assert!(t.find(&u, End::Lo).is_none());
        assert!(t.find(&k, C).is_some());
        assert_eq!(t.expire(101, 10), 1);
        assert_eq!(t.stats().expired, 2);
        // Picked up mid-stream and never answered: the handshake timeout, not the established one.
        let to = Timeouts { tcp_syn: 10, tcp_established: 100, ..Timeouts::default() };
        let mut t = SessionTable::new(8, to);
        t.track(&k, C, 60, seg(ACK), 1, 0);
        assert_eq!(t.expire(11, 10), 1);
    }

    #[test]
    fn reports_carry_each_changed_session_once() {
        let mut t = SessionTable::new(2, Timeouts::default());
        let (a, b, c) = (key(1), key(2), key(3));
        t.track(&a, C, 60, seg(SYN), 1, 1);
        t.track(&a, C, 60, seg(ACK), 1, 2);
        t.track(&b, C, 60, seg(SYN), 1, 3);
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        t.drain_reports(&mut out);
        assert!(out.is_empty());
        // Churn the same slots many times between reports: the dirty list stays bounded.
        for i in 0..1000u64 {
            t.track(&key(10 + (i % 50) as u16), C, 60, seg(SYN), 1, 10 + i);
        }
        t.track(&c, C, 60, seg(SYN), 1, 5000);
        assert!(t.dirty.len() <= t.capacity());
        t.drain_reports(&mut out);
        let live: Vec<_> = out.iter().filter(|r| r.ended.is_none()).collect();
        assert_eq!(live.len(), 2);
    }

    /// An established TCP session on client port `port`: handshake and one frame each way.
    fn establish(t: &mut SessionTable, port: u16, now: u64) {
        let k = key(port);
        t.track(&k, C, 74, seg(SYN), 1, now).unwrap();
        t.track(&k, S, 74, seg(SYN | ACK), 2, now).unwrap();
        t.track(&k, C, 66, seg(ACK), 1, now).unwrap();
        assert_eq!(state(t, &k), State::Tcp(TcpState::Established));
    }

    fn udp(port: u16) -> FlowKey {
        FlowKey::new(0, 17, Addr::v4([198, 18, 0, 1]), port, Addr::v4([198, 18, 0, 2]), 53).0
    }

    #[test]
    fn eviction_takes_lingering_then_embryonic_then_one_way_then_two_way_never_established() {
        let mut t = SessionTable::new(6, Timeouts::default());
        // Oldest first: established, two-way UDP, one-way UDP, embryonic, reset, denied.
        establish(&mut t, 1, 1);
        t.track(&udp(2), C, 60, None, 1, 2).unwrap();
        t.track(&udp(2), S, 60, None, 2, 2).unwrap();
        t.track(&udp(3), C, 60, None, 1, 3).unwrap();
        t.track(&key(4), C, 60, seg(SYN), 1, 4).unwrap();
        t.track(&key(5), C, 60, seg(SYN), 1, 5).unwrap();
        t.track(&key(5), S, 60, seg(RST), 2, 5).unwrap();
        let denied = t.track(&key(6), C, 60, seg(SYN), 1, 6).unwrap().idx;
        t.get_mut(denied).policy.blocked = true;
        t.linger(denied);
        let gone = |t: &SessionTable, k: &FlowKey| t.find(k, C).is_none();
        // Each new session (SYNs on ports 100..) evicts the oldest of the cheapest class: the
        // reset session, then the denied one, then the embryonic sessions (the flood's own
        // included) before the one-way and two-way UDP flows.
        t.track(&key(100), C, 60, seg(SYN), 1, 10).unwrap();
        assert!(gone(&t, &key(5)) && !gone(&t, &key(6)));
        t.track(&key(101), C, 60, seg(SYN), 1, 11).unwrap();
        assert!(gone(&t, &key(6)) && !gone(&t, &key(4)));
        t.track(&key(102), C, 60, seg(SYN), 1, 12).unwrap();
        assert!(gone(&t, &key(4)) && !gone(&t, &key(100)));
        t.track(&key(103), C, 60, seg(SYN), 1, 13).unwrap();
        assert!(gone(&t, &key(100)) && !gone(&t, &udp(3)));
        let st = t.stats();
        assert_eq!((st.evicted_lingering, st.evicted_embryonic, st.evicted), (2, 2, 4));
        // Without embryonic sessions left, UDP goes: one-way first, then two-way.
        let u = |p| FlowKey::new(0, 17, Addr::v4([198, 18, 0, 9]), p, Addr::v4([198, 18, 0, 2]), 53).0;
        for (i, p) in [101u16, 102, 103].iter().enumerate() {
            // Embryonic ones finish their handshake so only UDP remains evictable.
            let k = key(*p);
            t.track(&k, S, 60, seg(SYN | ACK), 2, 20 + i as u64).unwrap();
            t.track(&k, C, 60, seg(ACK), 1, 20 + i as u64).unwrap();
        }
        t.track(&u(1), C, 60, None, 1, 30).unwrap();
        assert!(gone(&t, &udp(3)) && !gone(&t, &udp(2)));
        t.track(&u(2), C, 60, None, 1, 31).unwrap();
        assert!(gone(&t, &u(1)), "a one-way flow goes before a two-way one, even a newer one");
        t.track(&u(2), S, 60, None, 2, 32).unwrap();
        t.track(&u(3), C, 60, None, 1, 33).unwrap();
        assert!(gone(&t, &udp(2)) && !gone(&t, &u(2)), "the older two-way flow goes first");
        // Now only established sessions and one one-way flow: that goes, then refusals.
        assert!(t.track(&u(4), C, 60, None, 1, 34).is_some());
        assert!(gone(&t, &u(3)));
        t.track(&u(4), S, 60, None, 2, 35).unwrap();
        // u(2) and u(4) are two-way: they go next, oldest first.
        assert!(t.track(&key(200), C, 60, seg(SYN), 1, 36).is_some());
        assert!(gone(&t, &u(2)));
        let st = t.stats();
        assert_eq!((st.evicted_one_way, st.evicted_two_way), (3, 2));
        // Fill the last evictable slots with established sessions: nothing left to evict.
        let k = key(200);
        t.track(&k, S, 60, seg(SYN | ACK), 2, 37).unwrap();
        t.track(&k, C, 60, seg(ACK), 1, 37).unwrap();
        assert!(t.track(&key(201), C, 60, seg(SYN), 1, 38).is_some());
        assert!(gone(&t, &u(4)));
        establish(&mut t, 201, 39);
        assert_eq!(t.len(), 6);
        assert!(t.track(&key(300), C, 60, seg(SYN), 1, 40).is_none());
        assert!(t.track(&udp(301), C, 60, None, 1, 40).is_none());
        assert_eq!(t.stats().refused, 2);
        assert_eq!(t.len(), 6);
        for p in [1, 101, 102, 103, 200, 201] {
            assert_eq!(state(&t, &key(p)), State::Tcp(TcpState::Established), "port {p}");
        }
    }

    #[test]
    fn syn_flood_of_100x_capacity_leaves_established_sessions_in_place() {
        const CAP: usize = 64;
        // Half full: the flood recycles the free half among itself.
        let mut t = SessionTable::new(CAP, Timeouts::default());
        for p in 0..CAP as u16 / 2 {
            establish(&mut t, p, u64::from(p));
        }
        for i in 0..100 * CAP as u64 {
            let k = FlowKey::new(0, 6, Addr::v4([198, 19, (i >> 8) as u8, i as u8]), 1024 + (i % 50_000) as u16, Addr::v4([198, 18, 0, 2]), 80).0;
            assert!(t.track(&k, End::Lo, 60, seg(SYN), 1, 1000 + i).is_some());
        }
        for p in 0..CAP as u16 / 2 {
            assert_eq!(state(&t, &key(p)), State::Tcp(TcpState::Established));
        }
        let st = t.stats();
        assert_eq!(st.evicted, 100 * CAP as u64 - CAP as u64 / 2);
        assert_eq!(st.evicted_embryonic, st.evicted);
        // Full: every new flow is refused, nothing is evicted.
        let mut t = SessionTable::new(CAP, Timeouts::default());
        for p in 0..CAP as u16 {
            establish(&mut t, p, u64::from(p));
        }
        for i in 0..100 * CAP as u64 {
            let k = FlowKey::new(0, 6, Addr::v4([198, 19, (i >> 8) as u8, i as u8]), 1024, Addr::v4([198, 18, 0, 2]), 80).0;
            assert!(t.track(&k, End::Lo, 60, seg(SYN), 1, 1000 + i).is_none());
        }
        assert_eq!((t.stats().refused, t.stats().evicted, t.len()), (100 * CAP as u64, 0, CAP));
        for p in 0..CAP as u16 {
            assert!(t.track(&key(p), C, 66, seg(ACK), 1, 10_000).is_some());
        }
    }

    #[test]
    fn a_full_table_reuses_a_due_slot_before_evicting_or_refusing() {
        let to = Timeouts { tcp_established: 100, ..Timeouts::default() };
        let mut t = SessionTable::new(4, to);
        for p in 0..4 {
            establish(&mut t, p, 10 * u64::from(p));
        }
        // At 105 the first session is idle past its timeout; expiry has not run yet.
        assert!(t.track(&key(50), C, 60, seg(SYN), 1, 105).is_some());
        assert!(t.find(&key(0), C).is_none());
        let st = t.stats();
        assert_eq!((st.expired, st.evicted, st.refused), (1, 0, 0));
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        assert_eq!(out.iter().filter(|r| r.ended == Some(EndReason::Idle)).count(), 1);
    }

    #[test]
    fn expiry_budget_grows_with_sessions_created() {
        let to = Timeouts { tcp_syn: 10, ..Timeouts::default() };
        let mut t = SessionTable::new(4096, to);
        t.expire(0, 1);
        for p in 0..3000u16 {
            t.track(&key(p), C, 60, seg(SYN), 1, 1).unwrap();
        }
        // 3000 created since the last call: a budget of 1 still ends all that are due.
        assert_eq!(t.expire(100, 1), 3000);
        for p in 0..300u16 {
            t.track(&key(p), C, 60, seg(SYN), 1, 200).unwrap();
        }
        assert_eq!(t.expire(250, 1), 300);
        // Nothing created since: back to the plain budget.
        for p in 0..300u16 {
            t.track(&key(p), C, 60, seg(SYN), 1, 300).unwrap();
        }
        t.expire(301, 0);
        assert_eq!(t.expire(400, 5), 5);
        assert_eq!(t.len(), 295);
    }

    #[test]
    fn bounded_drains_deliver_each_report_once() {
        let mut t = SessionTable::new(64, Timeouts { tcp_syn: 10, ..Timeouts::default() });
        for p in 0..40u16 {
            t.track(&key(p), C, 60, seg(SYN), 1, 1).unwrap();
        }
        // 20 are reset (lingering, live); the other 20 time out (final records queued); 20
        // more are established: 40 live and changed, 20 ended.
        for p in 0..20u16 {
            t.track(&key(p), S, 60, seg(RST), 2, 5).unwrap();
        }
        t.expire(100, 0);
        assert_eq!(t.stats().expired, 20);
        for p in 20..40u16 {
            establish(&mut t, p + 100, 200);
        }
        let mut seen = Vec::new();
        let mut calls = 0;
        loop {
            let mut out = Vec::new();
            let more = t.drain_reports_upto(&mut out, 7);
            assert!(out.len() <= 7);
            seen.extend(out.iter().map(|s| (s.session.id, s.ended.is_some())));
            calls += 1;
            if !more {
                break;
            }
        }
        assert!(calls >= 6);
        let live = seen.iter().filter(|(_, e)| !e).count();
        let ended = seen.iter().filter(|(_, e)| *e).count();
        assert_eq!((live, ended), (40, 20));
        let mut ids: Vec<_> = seen.iter().collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), seen.len(), "a snapshot delivered twice");
        let mut out = Vec::new();
        assert!(!t.drain_reports_upto(&mut out, 7) && out.is_empty());
    }

    /// Walks the table in pages of at most `max` sessions looking at `scan` slots each,
    /// calling `between` after every page; returns the pages' session ids.
    fn walk(
        t: &mut SessionTable,
        max: usize,
        scan: usize,
        mut between: impl FnMut(&mut SessionTable, usize),
    ) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut from = 0;
        loop {
            let (v, next) = t.page(from, max, scan);
            assert!(v.len() <= max);
            assert!(v.iter().all(|s| s.ended.is_none()));
            pages.push(v.iter().map(|s| s.session.id).collect());
            between(t, pages.len());
            match next {
                Some(n) => {
                    assert!(n > from, "the walk must move forward");
                    from = n;
                }
                None => return pages,
            }
        }
    }

    #[test]
    fn paged_walk_returns_each_session_live_throughout_exactly_once() {
        let mut t = SessionTable::new(4096, Timeouts { tcp_syn: 10, ..Timeouts::default() });
        // 1000 established sessions stay live for the whole walk; 500 handshakes end (time
        // out) after the third page and 300 new ones take their freed slots, not yet reached.
        for p in 0..1000u16 {
            establish(&mut t, 10_000 + p, 1);
        }
        for p in 0..500u16 {
            t.track(&key(20_000 + p), C, 60, seg(SYN), 1, 1).unwrap();
        }
        let ids = |t: &SessionTable, ports: std::ops::Range<u16>| -> Vec<u64> {
            ports.map(|p| t.get(t.find(&key(p), C).unwrap().0).id).collect()
        };
        let stable = ids(&t, 10_000..11_000);
        let doomed = ids(&t, 20_000..20_500);
        let mut created = Vec::new();
        let pages = walk(&mut t, 64, 100, |t, n| {
            if n == 3 {
                assert_eq!(t.expire(100, 1000), 500);
                for p in 0..300u16 {
                    t.track(&key(30_000 + p), C, 60, seg(SYN), 1, 100).unwrap();
                }
                created = ids(t, 30_000..30_300);
            }
        });
        // 1500 live sessions in pages of 64 (some shorter: 100 slots looked at per page).
        assert!(pages.len() >= 1500 / 64, "{} pages", pages.len());
        assert!(pages.iter().any(|p| p.len() < 64 && !p.is_empty()));
        let seen: Vec<u64> = pages.concat();
        let mut uniq = seen.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), seen.len(), "a session returned twice");
        for id in &stable {
            assert!(uniq.binary_search(id).is_ok(), "session {id}, live throughout, was missed");
        }
        // Ended sessions are not returned after they ended; new ones at most once (checked
        // above), and only those.
        let after: Vec<u64> = pages[3..].concat();
        assert!(after.iter().all(|id| !doomed.contains(id)));
        assert!(seen.iter().all(|id| stable.contains(id) || doomed.contains(id) || created.contains(id)));
        assert!(after.iter().any(|id| created.contains(id)), "no new session in a slot not yet reached");
    }

    #[test]
    fn paged_walk_of_an_empty_or_sparse_table_is_bounded_by_the_scan() {
        let mut t = SessionTable::new(1000, Timeouts::default());
        // Empty: ten steps of 100 slots, nothing returned.
        let pages = walk(&mut t, 10, 100, |_, _| {});
        assert_eq!(pages.len(), 10);
        assert!(pages.iter().all(|p| p.is_empty()));
        // A cursor beyond the table ends the walk at once.
        let (v, next) = t.page(5000, 10, 100);
        assert!(v.is_empty() && next.is_none());
        establish(&mut t, 1, 1);
        let (v, next) = t.page(0, 10, 1000);
        assert_eq!((v.len(), next), (1, None));
    }
}
