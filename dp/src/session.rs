//! Per-core session table.
//!
//! One entry per flow, shared by both directions (the key is canonical, see
//! [`crate::flow::FlowKey`]); the *client* is the side that opened the flow (the TCP SYN sender,
//! or the first sender for UDP/ICMP/other; for ICMP echo the request's sender, see
//! [`crate::icmp`]), except for a flow another flow announced (a TFTP transfer), whose client
//! is the announcing flow's client ([`SessionTable::set_client`]). Storage is preallocated at
//! start-up: a slab of [`Session`]s (free slots linked through the entries), an index of slot
//! numbers by key ([`crate::session_index`]: Robin Hood hashing, 4-byte buckets, never
//! grown), and intrusive doubly linked lists, one per (timeout, eviction class), kept in
//! last-activity order. So:
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
//! **Memory.** A session costs the table about 250 bytes, whatever it carries
//! ([`SessionTable::footprint`]; `perf/RESULTS.md`, "Memory per session"): its entry (232
//! bytes, [`Session::MAX_BYTES`]: 224 and the XDP fast path's 8-byte mark), 4 bytes of index
//! per bucket at 1.43 to 2.9 buckets per session (8 bytes per session at 2^20 sessions), 4 of
//! dirty list, and the side parts ([`crate::session_side`]). The entry holds what the
//! packet path reads and writes: key, id, clocks, the low 32 bits of its eight counters,
//! sequence and policy state, list links, threats, flags as bits. Whatever only few sessions
//! need lives in side parts allocated at start and bounded, each with an answer when full that
//! turns off no check: counters that pass 2^32 keep their high words in [`Wide`] (full: the
//! counter stops at 2^32 − 1 instead of wrapping), inner flows of tunnels share interned
//! tunnel ends ([`Tunnels`], `[sessions] tunnel_ends`; full: no `tunnel` in the record), first
//! threats' reasons are interned string constants ([`Reasons`]); each miss is counted
//! ([`SideStats`]). Reports read a [`SessionView`] (every counter at full width, the side
//! parts resolved), so records stay exact. A loaded shadow policy's per-session verdicts are
//! kept beside the entries, only while one is loaded ([`SessionTable::set_shadow_states`],
//! 16 bytes per slot).
//!
//! TCP state follows the segments seen in both directions (RFC 9293 §3.3.2, reduced to what a
//! middlebox observes): `syn_sent`, `syn_received`, `established`, `half_closed` (one FIN),
//! `closed` (both FINs), `reset` (RST). Closed and reset sessions linger for the short `closed`
//! timeout so late ACKs and retransmissions are still counted, then end with a final record.

use std::collections::VecDeque;

use crate::flow::{End, FlowKey};
use crate::session_index::Index;
use crate::session_side::{counter, Reasons, SideStats, TunnelHandle, Tunnels, Wide, NO_TUNNEL};
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
/// has frames in (`wide`: the table's high counter words, looked at only when a low word is 0).
fn list_of(s: &Session, idx: u32, wide: &Wide) -> u8 {
    if s.policy.blocked {
        return L_LINGER;
    }
    let one_way = !s.seen(Dir::ToServer, idx, wide) || !s.seen(Dir::ToClient, idx, wide);
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

/// Bits of [`Session::bits`].
mod bit {
    /// The client is the canonical high end ([`crate::flow::End::Hi`]).
    pub const CLIENT_HI: u16 = 1 << 0;
    /// The first frame seen was not a SYN.
    pub const MIDSTREAM: u16 = 1 << 1;
    /// The client sent payload.
    pub const CLIENT_DATA: u16 = 1 << 2;
    /// Counted in its client's live sessions.
    pub const SRC_COUNTED: u16 = 1 << 3;
    /// FIN seen in each direction: bit `FIN << dir`.
    pub const FIN: u16 = 1 << 4;
    /// Both FIN bits.
    pub const FINS: u16 = 3 << 4;
    /// Changed since its last snapshot.
    pub const CHANGED: u16 = 1 << 6;
    /// The slot holds a live session.
    pub const LIVE: u16 = 1 << 7;
    /// The slot is on the dirty list.
    pub const IN_DIRTY: u16 = 1 << 8;
    /// A counter passed 2^32: its high words are in the table's [`super::Wide`].
    pub const WIDE: u16 = 1 << 9;
    /// The carried tunnel type ([`crate::tunnel::Kind`] as `u8`, 0: none), four bits.
    pub const CARRIER_SHIFT: u32 = 10;
    /// Mask of the carrier bits.
    pub const CARRIER: u16 = 0xf << CARRIER_SHIFT;
    /// The inner flow of a tunnel (set by [`super::SessionTable::set_tunnel`] even when the
    /// table's tunnel ends were full and no ends are recorded).
    pub const INNER: u16 = 1 << 14;
}

/// One session: both directions of one flow, as the table holds it (its entry; see the module
/// docs, "Memory"). Per-packet state only, at most [`Session::MAX_BYTES`] bytes: counters keep
/// their low 32 bits here and their high bits in the table's side part ([`Wide`]) once they
/// pass 2^32, a tunnelled flow's tunnel ends and the first threat's reason are handles into
/// the table's shared side tables, flags are bits. Read the counters at full width through
/// [`SessionTable::packets`] and friends, or the whole session as reports see it through
/// [`SessionTable::view`].
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Canonical key.
    pub key: FlowKey,
    /// Unique per worker, increasing.
    pub id: u64,
    /// Unix time of the first frame (ns).
    pub first_ns: u64,
    /// Unix time of the latest frame (ns).
    pub last_ns: u64,
    /// Low 32 bits of the counters (index: [`counter`]): frames, bytes, dropped frames,
    /// dropped bytes, each `[to_server, to_client]`.
    lo: [u32; counter::N],
    /// TCP sequence state per direction (normalisation, ICMP errors' quotes).
    pub seq: crate::tcpseq::TcpSeq,
    /// Policy verdict state.
    pub policy: crate::enforce::PolicyState,
    /// Index of the session's app context in the core's engine ([`NO_APP`] when none).
    pub app_ctx: u32,
    prev: u32,
    next: u32,
    /// Threats raised for this session by the threat stage ([`crate::threat`]), any source.
    pub threats: crate::detect::ThreatSet,
    /// ICMP errors that quoted this session.
    pub icmp: crate::icmp::IcmpCounts,
    /// Frames not fed to state or inspection for an anomaly ([`crate::normalize`]).
    pub anomalous_frames: u32,
    /// The server's first payload byte: ms after `first_ns`, rounded up, plus 1 (0: none yet).
    server_data: u32,
    /// Normalisation anomalies seen, as a bit set ([`crate::normalize::Anomaly::bit`]).
    pub anomalies: u16,
    /// Interface slot where the client side was seen (`u16::MAX`: not yet).
    pub client_iface: u16,
    /// The tunnel ends of the inner flow of a tunnel ([`Tunnels`]).
    tunnel: TunnelHandle,
    /// Flags ([`bit`]).
    bits: u16,
    /// Current state.
    pub state: State,
    /// The timeout list it is on.
    class: u8,
    /// The first session-level threat (parsers' detections keep theirs).
    first_threat: Option<crate::detect::ThreatId>,
    /// Its reason ([`Reasons`]).
    reason: u8,
    /// The XDP fast path's mark ([`crate::fastpath`]): its entry while offloaded, frames the
    /// kernel forwarded (8 bytes: the room [`Session::MAX_BYTES`] keeps for it).
    pub fast: crate::fastpath::FastMark,
}

impl Session {
    /// The most a table entry may take (bytes): 224 of this layout and the XDP fast path's
    /// 8-byte [`crate::fastpath::FastMark`]. With the index and the dirty list the table stays
    /// within 256 bytes per session (see `ARCHITECTURE.md`, "Memory per session").
    pub const MAX_BYTES: usize = 232;

    fn vacant() -> Self {
        Session {
            key: FlowKey::new(0, 0, Default::default(), 0, Default::default(), 0).0,
            id: 0,
            first_ns: 0,
            last_ns: 0,
            lo: [0; counter::N],
            seq: Default::default(),
            policy: crate::enforce::PolicyState::default(),
            app_ctx: NO_APP,
            prev: NIL,
            next: NIL,
            threats: crate::detect::ThreatSet::default(),
            icmp: Default::default(),
            anomalous_frames: 0,
            server_data: 0,
            anomalies: 0,
            client_iface: 0,
            tunnel: NO_TUNNEL,
            bits: 0,
            state: State::Active,
            class: 0,
            first_threat: None,
            reason: 0,
            fast: crate::fastpath::FastMark::default(),
        }
    }

    /// Which canonical end is the client.
    #[inline]
    pub fn client(&self) -> End {
        if self.bits & bit::CLIENT_HI != 0 {
            End::Hi
        } else {
            End::Lo
        }
    }

    fn set_client_end(&mut self, client: End) {
        match client {
            End::Lo => self.bits &= !bit::CLIENT_HI,
            End::Hi => self.bits |= bit::CLIENT_HI,
        }
    }

    /// True when the first frame seen was not a SYN (client guessed).
    #[inline]
    pub fn midstream(&self) -> bool {
        self.bits & bit::MIDSTREAM != 0
    }

    /// True once the client sent payload (`tcp_no_client_data`).
    #[inline]
    pub fn client_data(&self) -> bool {
        self.bits & bit::CLIENT_DATA != 0
    }

    /// The client sent payload.
    pub fn set_client_data(&mut self) {
        self.bits |= bit::CLIENT_DATA;
    }

    /// Unix time (ns) of the server's first payload byte, to the millisecond rounded up (0:
    /// none yet). Exact to 1 ms for 49 days after `first_ns`; later first bytes read as day 49.
    pub fn server_data_ns(&self) -> u64 {
        match self.server_data {
            0 => 0,
            v => self.first_ns.saturating_add(u64::from(v - 1) * 1_000_000).max(1),
        }
    }

    /// The server sent payload at `now_ns` (kept only for its first payload).
    pub fn note_server_data(&mut self, now_ns: u64) {
        if self.server_data == 0 {
            let ms = now_ns.saturating_sub(self.first_ns).div_ceil(1_000_000);
            self.server_data = u32::try_from(ms.saturating_add(1)).unwrap_or(u32::MAX);
        }
    }

    /// True when the session is counted in its client's live sessions (`ip_src_session_limit`):
    /// taken back when the session closes or leaves the table.
    #[inline]
    pub fn src_counted(&self) -> bool {
        self.bits & bit::SRC_COUNTED != 0
    }

    /// Sets [`Self::src_counted`].
    pub fn set_src_counted(&mut self, counted: bool) {
        if counted {
            self.bits |= bit::SRC_COUNTED;
        } else {
            self.bits &= !bit::SRC_COUNTED;
        }
    }

    /// The tunnel type whose packets the session carries (an outer flow), once one was seen.
    pub fn carrier(&self) -> Option<crate::tunnel::Kind> {
        let k = ((self.bits & bit::CARRIER) >> bit::CARRIER_SHIFT) as u8;
        crate::tunnel::Kind::ALL.into_iter().find(|x| *x as u8 == k)
    }

    /// The session carries packets of tunnel type `kind`.
    pub fn set_carrier(&mut self, kind: crate::tunnel::Kind) {
        self.bits = (self.bits & !bit::CARRIER) | (u16::from(kind as u8) << bit::CARRIER_SHIFT);
    }

    /// True for the inner flow of a tunnel, whether or not its tunnel ends could be recorded
    /// ([`SessionTable::set_tunnel`]).
    #[inline]
    pub fn inner(&self) -> bool {
        self.flag(bit::INNER)
    }

    /// The first session-level threat raised ([`SessionTable::note_threat`]; its reason is in
    /// [`SessionTable::view`]).
    pub fn first_threat(&self) -> Option<crate::detect::ThreatId> {
        self.first_threat
    }

    /// True when frames were counted in direction `dir`.
    #[inline]
    fn seen(&self, dir: Dir, idx: u32, wide: &Wide) -> bool {
        let c = counter::PACKETS + dir as usize;
        self.lo[c] != 0 || (self.bits & bit::WIDE != 0 && wide.get(idx)[c] != 0)
    }

    #[inline]
    fn flag(&self, b: u16) -> bool {
        self.bits & b != 0
    }

    #[inline]
    fn set_flag(&mut self, b: u16, on: bool) {
        if on {
            self.bits |= b;
        } else {
            self.bits &= !b;
        }
    }

    fn swap_dirs(&mut self) {
        for base in (0..counter::N).step_by(2) {
            self.lo.swap(base, base + 1);
        }
    }

    /// The client's (address, port).
    #[inline]
    pub fn client_end(&self) -> (crate::flow::Addr, u16) {
        match self.client() {
            End::Lo => (self.key.lo, self.key.lo_port),
            End::Hi => (self.key.hi, self.key.hi_port),
        }
    }

    /// The server's (address, port).
    #[inline]
    pub fn server_end(&self) -> (crate::flow::Addr, u16) {
        match self.client() {
            End::Lo => (self.key.hi, self.key.hi_port),
            End::Hi => (self.key.lo, self.key.lo_port),
        }
    }

    /// Direction of a frame sent by canonical end `from`.
    #[inline]
    pub fn dir_of(&self, from: End) -> Dir {
        if from == self.client() {
            Dir::ToServer
        } else {
            Dir::ToClient
        }
    }
}

// The guard of the entry's budget (see `Session::MAX_BYTES`).
const _: () = assert!(std::mem::size_of::<Session>() <= Session::MAX_BYTES);

/// A session as reports read it (plain data, a copy taken from the table): the entry's
/// fields with every counter at full width and the side parts resolved.
#[derive(Debug, Clone, Copy)]
pub struct SessionView {
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
    /// Interface slot where the client side was seen (`u16::MAX`: not yet).
    pub client_iface: u16,
    /// Index of the session's app context in the core's engine ([`NO_APP`] when none).
    pub app_ctx: u32,
    /// Policy verdict state.
    pub policy: crate::enforce::PolicyState,
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
    /// Unix time (ns) of the server's first payload byte, to the ms rounded up (0: none).
    pub server_data_ns: u64,
    /// The client sent payload (`tcp_no_client_data`).
    pub client_data: bool,
    /// The tunnel the session's flow rides, for the inner flow of a tunnel ([`crate::tunnel`];
    /// `None` also when the table's tunnel ends were full, counted).
    pub tunnel: Option<crate::tunnel::TunnelEnds>,
    /// The tunnel type whose packets the session carries (an outer flow), once one was seen.
    pub carrier: Option<crate::tunnel::Kind>,
    /// The XDP fast path's mark ([`crate::fastpath`]): offloads and frames the kernel
    /// forwarded (the entry is the live session's).
    pub fast: crate::fastpath::FastMark,
    /// The session's verdict under the shadow policy ([`crate::shadow`]; default while none
    /// is loaded: [`SessionTable::shadow`]).
    pub shadow: crate::shadow::ShadowState,
}

impl SessionView {
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
}

/// A snapshot of a session for reports: plain data, converted to text by the control thread.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    /// The session at the time of the snapshot.
    pub session: SessionView,
    /// `Some` in the final record of an ended session.
    pub ended: Option<EndReason>,
    /// The app view, attached by the inspector (None: not inspected).
    pub app: Option<crate::app::engine::AppSummary>,
    /// The policy view, attached by the inspector (None: not enforced).
    pub policy: Option<crate::enforce::PolicyView>,
}

impl SessionSnapshot {
    fn live(session: SessionView) -> Self {
        SessionSnapshot { session, ended: None, app: None, policy: None }
    }
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
    /// New flows refused because the key index would have had to put an entry more than
    /// [`crate::session_index::MAX_DIST`] buckets from its home (included in `refused`; not
    /// expected with the index at most 70 % full and a random hash seed).
    pub index_refused: u64,
    /// Removed sessions whose count in their source's live sessions (`ip_src_session_limit`)
    /// could not be queued to be taken back (the queue is drained before every frame; never
    /// expected).
    pub uncounted_lost: u64,
    /// The side parts' counters ([`crate::session_side`]).
    pub side: SideStats,
}

impl TableStats {
    /// The side parts' and the index's counters by name, as `wardenctl counters` and the
    /// metrics show them (`sessions_side`).
    pub fn side_counters(&self) -> [(&'static str, u64); 7] {
        let s = &self.side;
        [
            ("wide", s.wide),
            ("wide_full", s.wide_full),
            ("tunnel_ends", s.tunnel_ends),
            ("tunnel_ends_full", s.tunnel_ends_full),
            ("reasons_full", s.reasons_full),
            ("uncounted_lost", self.uncounted_lost),
            ("index_refused", self.index_refused),
        ]
    }
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

/// What a table allocated at start, in bytes, by part ([`SessionTable::footprint`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Sessions it holds.
    pub capacity: usize,
    /// The entries (`capacity` × `size_of::<Session>()`).
    pub entries: usize,
    /// The key index (a 4-byte bucket per 1.43 to 2.9 sessions, [`crate::session_index`]).
    pub index: usize,
    /// The dirty list (a 4-byte slot number per session).
    pub dirty: usize,
    /// The side parts: high counter words, tunnel ends, reasons.
    pub side: usize,
    /// The shadow policy states (8 bytes per session while a shadow policy is loaded, else
    /// 0; not in [`Self::per_session`]: a trial's temporary cost).
    pub shadow: usize,
    /// The queue of final records and the queue of sources to take back (bounded, not per
    /// session).
    pub queues: usize,
}

impl Footprint {
    /// Everything.
    pub fn total(&self) -> usize {
        self.entries + self.index + self.dirty + self.side + self.shadow + self.queues
    }

    /// Bytes per session of what grows with the table (entries, index, dirty list, side
    /// parts), the figure the 256-byte budget is about.
    pub fn per_session(&self) -> f64 {
        (self.entries + self.index + self.dirty + self.side) as f64 / self.capacity.max(1) as f64
    }
}

/// Most (zone, client) pairs of removed sessions waiting to be taken back from their source's
/// count at once; they are taken back before every frame ([`SessionTable::drain_uncounted`]),
/// expiry stops short of this, and [`SessionTable::end_all`] hands them out as it goes.
const UNCOUNTED_CAP: usize = 4096;

/// Room kept in the uncounted queue for the removals of one frame (at most two: a reused or
/// evicted session, a flipped client).
const UNCOUNTED_RESERVE: usize = 8;

/// The per-core session table. See the module docs.
pub struct SessionTable {
    /// Key → slot (the index holds slot numbers; keys are read from the slots).
    index: Index,
    slots: Vec<Session>,
    /// Head of the free slots, linked through `Session::next`.
    free: u32,
    heads: [u32; LISTS],
    tails: [u32; LISTS],
    timeouts: Timeouts,
    dirty: Vec<u32>,
    ended: VecDeque<(SessionView, EndReason)>,
    ended_cap: usize,
    /// App contexts of ended sessions whose final record did not fit `ended`: the inspector
    /// returns them to its engine ([`Self::drain_released`]), so a full ended queue loses the
    /// record, never the context or its stream buffers.
    released: Vec<u32>,
    /// (zone, client) of removed sessions that were counted per source
    /// (`ip_src_session_limit`), for the threat stage to take back (capacity: `uncounted_cap`).
    uncounted: Vec<(u16, crate::flow::Addr)>,
    uncounted_cap: usize,
    wide: Wide,
    tunnels: Tunnels,
    reasons: Reasons,
    next_id: u64,
    /// Sessions created since the last [`SessionTable::expire`] (added to its budget).
    created_since_expire: u64,
    stats: TableStats,
    /// Fast path entries ([`crate::fastpath`]) of removed sessions, for the fast path to take
    /// out of the kernel's map (capacity reserved by [`Self::reserve_fast`]).
    unfast: Vec<u16>,
    /// Shadow policy state per slot ([`crate::shadow`]): empty (no memory) unless a shadow
    /// policy is loaded, then one 8-byte [`crate::shadow::ShadowState`] per slot, allocated
    /// by [`Self::set_shadow_states`] when it loads (outside the entry: see
    /// [`Session::MAX_BYTES`]).
    shadow: Vec<crate::shadow::ShadowState>,
}

/// Sizes of a table's side parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideSizes {
    /// Sessions whose counters may pass 2^32 at once ([`Wide`]). Default: 1/64 of the table
    /// (at least 64).
    pub wide: usize,
    /// Distinct tunnel ends of inner flows ([`Tunnels`], at most 65535). Default 4096.
    pub tunnel_ends: usize,
}

impl SideSizes {
    /// The default sizes for a table of `max` sessions.
    pub fn for_table(max: usize) -> Self {
        SideSizes { wide: (max / 64).max(64), tunnel_ends: 4096 }
    }
}

impl SessionTable {
    /// A table for at most `max` sessions (at least 1), with all memory allocated now and the
    /// default side parts ([`SideSizes::for_table`]).
    pub fn new(max: usize, timeouts: Timeouts) -> Self {
        Self::with_sides(max, timeouts, SideSizes::for_table(max))
    }

    /// A table for at most `max` sessions (at least 1) and side parts of `sides`, with all
    /// memory allocated now.
    pub fn with_sides(max: usize, timeouts: Timeouts, sides: SideSizes) -> Self {
        let max = max.clamp(1, crate::session_index::MAX_SLOTS);
        let ended_cap = max.clamp(1024, 65536);
        let mut slots = vec![Session::vacant(); max];
        for (i, s) in slots.iter_mut().enumerate() {
            s.next = if i + 1 < max { i as u32 + 1 } else { NIL };
        }
        let uncounted_cap = if max <= UNCOUNTED_CAP { max + UNCOUNTED_RESERVE } else { UNCOUNTED_CAP };
        SessionTable {
            index: Index::new(max),
            slots,
            free: 0,
            heads: [NIL; LISTS],
            tails: [NIL; LISTS],
            timeouts,
            dirty: Vec::with_capacity(max),
            ended: VecDeque::with_capacity(ended_cap),
            ended_cap,
            released: Vec::new(),
            uncounted: Vec::with_capacity(uncounted_cap),
            uncounted_cap,
            wide: Wide::new(sides.wide),
            tunnels: Tunnels::new(sides.tunnel_ends),
            reasons: Reasons::new(),
            next_id: 1,
            created_since_expire: 0,
            stats: TableStats::default(),
            unfast: Vec::new(),
            shadow: Vec::new(),
        }
    }

    /// Keeps a shadow policy state for every slot from now on (`on`, all "never evaluated":
    /// a new shadow generation starts from nothing), or frees them (no shadow policy loaded).
    /// Allocates `capacity` × 8 bytes when turned on; meant for a shadow load or clear, not
    /// the packet path.
    pub fn set_shadow_states(&mut self, on: bool) {
        if on {
            self.shadow.clear();
            self.shadow.resize(self.slots.len(), crate::shadow::ShadowState::default());
        } else {
            self.shadow = Vec::new();
        }
    }

    /// Session `idx`'s shadow policy state (the default, never evaluated, while no shadow
    /// policy is loaded).
    #[inline]
    pub fn shadow(&self, idx: u32) -> crate::shadow::ShadowState {
        self.shadow.get(idx as usize).copied().unwrap_or_default()
    }

    /// Sets session `idx`'s shadow policy state (nothing while no shadow policy is loaded).
    #[inline]
    pub fn set_shadow(&mut self, idx: u32, state: crate::shadow::ShadowState) {
        if let Some(s) = self.shadow.get_mut(idx as usize) {
            *s = state;
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
        self.add_counts(idx, dir, packets, bytes, false);
        let s = &mut self.slots[idx as usize];
        s.fast.frames = s.fast.frames.saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
        s.last_ns = s.last_ns.max(last_ns);
        if s.flag(bit::LIVE) {
            self.touch(idx);
        }
    }

    /// Adds fast path frames (as [`Self::account_fast`]) to the final record of the ended
    /// session `id`, still queued (a session removed between two pulls). False when its
    /// record is no longer queued.
    pub fn amend_ended(&mut self, id: u64, dir: Dir, packets: u64, bytes: u64, last_ns: u64) -> bool {
        match self.ended.iter_mut().rev().find(|(v, _)| v.id == id) {
            Some((v, _)) => {
                let d = dir as usize;
                v.packets[d] = v.packets[d].saturating_add(packets);
                v.bytes[d] = v.bytes[d].saturating_add(bytes);
                v.fast.frames = v.fast.frames.saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
                v.last_ns = v.last_ns.max(last_ns);
                true
            }
            None => false,
        }
    }

    /// What the table allocated, by part (bytes).
    pub fn footprint(&self) -> Footprint {
        let size = std::mem::size_of::<u32>();
        Footprint {
            capacity: self.slots.len(),
            entries: self.slots.capacity() * std::mem::size_of::<Session>(),
            index: self.index.bytes(),
            dirty: self.dirty.capacity() * size,
            side: self.wide.bytes() + self.tunnels.bytes() + (Reasons::MAX + 1) * std::mem::size_of::<&str>(),
            shadow: self.shadow.capacity() * std::mem::size_of::<crate::shadow::ShadowState>(),
            queues: self.ended.capacity() * std::mem::size_of::<(SessionView, EndReason)>()
                + self.uncounted.capacity() * std::mem::size_of::<(u16, crate::flow::Addr)>()
                + self.released.capacity() * size,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Capacity (maximum live sessions).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters.
    pub fn stats(&self) -> TableStats {
        let mut st = self.stats;
        st.side.wide = self.wide.len() as u64;
        st.side.tunnel_ends = self.tunnels.len() as u64;
        st
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

    /// Counter `c` ([`counter`] base + direction) of slot `idx` at full width.
    #[inline]
    fn count(&self, idx: u32, c: usize) -> u64 {
        let s = &self.slots[idx as usize];
        let hi = if s.flag(bit::WIDE) { self.wide.get(idx)[c] } else { 0 };
        u64::from(hi) << 32 | u64::from(s.lo[c])
    }

    fn pair(&self, idx: u32, base: usize) -> [u64; 2] {
        [self.count(idx, base), self.count(idx, base + 1)]
    }

    /// Frames of session `idx` per direction (`[to_server, to_client]`).
    #[inline]
    pub fn packets(&self, idx: u32) -> [u64; 2] {
        self.pair(idx, counter::PACKETS)
    }

    /// Frame bytes of session `idx` per direction (L2, no FCS).
    pub fn bytes(&self, idx: u32) -> [u64; 2] {
        self.pair(idx, counter::BYTES)
    }

    /// Frames of session `idx` Warden dropped per direction (included in [`Self::packets`]).
    pub fn dropped_packets(&self, idx: u32) -> [u64; 2] {
        self.pair(idx, counter::DROPPED_PACKETS)
    }

    /// Bytes of the frames of session `idx` Warden dropped per direction (included in
    /// [`Self::bytes`]).
    pub fn dropped_bytes(&self, idx: u32) -> [u64; 2] {
        self.pair(idx, counter::DROPPED_BYTES)
    }

    /// Adds `n` to counter `c` of slot `idx`: the low word here, a carry into [`Wide`]. Exact
    /// up to 2^64 − 1; when no [`Wide`] entry is free the counter stops at 2^32 − 1 (counted).
    #[inline]
    fn add(&mut self, idx: u32, c: usize, n: u64) {
        let s = &mut self.slots[idx as usize];
        let low = u64::from(s.lo[c]) + (n & 0xffff_ffff);
        s.lo[c] = low as u32;
        let carry = (n >> 32) + (low >> 32);
        if carry != 0 {
            self.carry(idx, c, carry);
        }
    }

    #[cold]
    fn carry(&mut self, idx: u32, c: usize, carry: u64) {
        if self.wide.carry(idx, c, carry) {
            self.slots[idx as usize].bits |= bit::WIDE;
        } else {
            self.slots[idx as usize].lo[c] = u32::MAX;
            self.stats.side.wide_full += 1;
        }
    }

    /// Adds `packets` frames of `bytes` bytes in direction `dir` to session `idx`'s counters,
    /// seen (and, with `dropped`, also dropped) elsewhere than through [`Self::track`] (frames
    /// forwarded by the XDP fast path, counted in the kernel). No state change, no idle
    /// refresh; the session is reported as changed.
    pub fn add_counts(&mut self, idx: u32, dir: Dir, packets: u64, bytes: u64, dropped: bool) {
        let d = dir as usize;
        self.add(idx, counter::PACKETS + d, packets);
        self.add(idx, counter::BYTES + d, bytes);
        if dropped {
            self.add(idx, counter::DROPPED_PACKETS + d, packets);
            self.add(idx, counter::DROPPED_BYTES + d, bytes);
        }
        self.mark_changed(idx);
    }

    /// Session `idx` as reports see it (a copy; not for the packet path).
    pub fn view(&self, idx: u32) -> SessionView {
        let s = &self.slots[idx as usize];
        SessionView {
            key: s.key,
            client: s.client(),
            id: s.id,
            state: s.state,
            midstream: s.midstream(),
            first_ns: s.first_ns,
            last_ns: s.last_ns,
            packets: self.packets(idx),
            bytes: self.bytes(idx),
            dropped_packets: self.dropped_packets(idx),
            dropped_bytes: self.dropped_bytes(idx),
            client_iface: s.client_iface,
            app_ctx: s.app_ctx,
            policy: s.policy,
            icmp: s.icmp,
            anomalies: s.anomalies,
            anomalous_frames: s.anomalous_frames,
            threats: s.threats,
            first_threat: s.first_threat.map(|id| (id, self.reasons.get(s.reason))),
            server_data_ns: s.server_data_ns(),
            client_data: s.client_data(),
            tunnel: self.tunnels.get(s.tunnel),
            carrier: s.carrier(),
            fast: s.fast,
            shadow: self.shadow(idx),
        }
    }

    /// The tunnel session `idx`'s flow rides (the inner flow of a tunnel), if recorded.
    pub fn tunnel(&self, idx: u32) -> Option<crate::tunnel::TunnelEnds> {
        self.tunnels.get(self.slots[idx as usize].tunnel)
    }

    /// Records that session `idx`'s flow rides the tunnel `ends` (its tunnel ends are shared
    /// with the other sessions of that tunnel). When no entry is free the session records none
    /// (counted in [`SideStats::tunnel_ends_full`]).
    pub fn set_tunnel(&mut self, idx: u32, ends: &crate::tunnel::TunnelEnds) {
        let old = self.slots[idx as usize].tunnel;
        let h = self.tunnels.intern(ends);
        if h == NO_TUNNEL {
            self.stats.side.tunnel_ends_full += 1;
        }
        self.tunnels.release(old);
        self.slots[idx as usize].tunnel = h;
        self.slots[idx as usize].bits |= bit::INNER;
    }

    /// Records `id` with `reason` as session `idx`'s first session-level threat unless it has
    /// one. A reason beyond the table's [`Reasons::MAX`] distinct ones is kept empty (counted).
    pub fn note_threat(&mut self, idx: u32, id: crate::detect::ThreatId, reason: &'static str) {
        if self.slots[idx as usize].first_threat.is_some() {
            return;
        }
        let r = match self.reasons.intern(reason) {
            Some(r) => r,
            None => {
                self.stats.side.reasons_full += 1;
                0
            }
        };
        let s = &mut self.slots[idx as usize];
        s.first_threat = Some(id);
        s.reason = r;
    }

    /// The slot of the session of `key`, whose hash is `hash`.
    #[inline]
    fn lookup(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |i| slots[i as usize].key == *key)
    }

    /// Looks up the session of `key` without creating one. Returns its index and the direction
    /// of a frame sent by `from`.
    pub fn find(&self, key: &FlowKey, from: End) -> Option<(u32, Dir)> {
        let idx = self.lookup(key, self.index.hash(key))?;
        Some((idx, self.slots[idx as usize].dir_of(from)))
    }

    /// The longest distance of an index entry from its home bucket (benchmarks, tests).
    pub fn index_max_dist(&self) -> u32 {
        self.index.max_dist()
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
        let hash = self.index.hash(key);
        let (idx, new) = match self.lookup(key, hash) {
            Some(idx) if !self.reusable(idx, tcp_flags) => (idx, false),
            found => {
                if let Some(idx) = found {
                    self.remove(idx, EndReason::Reused);
                }
                if !self.make_room(now_ns) {
                    self.stats.refused += 1;
                    return None;
                }
                let Some(idx) = self.create(key, hash, from, tcp_flags, iface, now_ns) else {
                    self.stats.refused += 1;
                    self.stats.index_refused += 1;
                    return None;
                };
                (idx, true)
            }
        };
        let dir = self.slots[idx as usize].dir_of(from);
        self.add(idx, counter::PACKETS + dir as usize, 1);
        self.add(idx, counter::BYTES + dir as usize, u64::from(len));
        let s = &mut self.slots[idx as usize];
        if let Some(seg) = tcp {
            // A segment of a session on the fast path reaching here is one the kernel would
            // have forwarded unjudged (queued before its entry): it is not judged either.
            if !new && !s.fast.offloaded() {
                if let Err(a) = crate::normalize::judge(&s.seq, dir, &seg, s.midstream()) {
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

    /// Session `idx` changed: it goes into the next report.
    #[inline]
    fn mark_changed(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.bits |= bit::CHANGED;
        if !s.flag(bit::IN_DIRTY) {
            s.bits |= bit::IN_DIRTY;
            self.dirty.push(idx);
        }
    }

    /// Records anomaly `a` on session `idx` (one more frame not fed) and reports the change.
    pub fn mark_anomaly(&mut self, idx: u32, a: crate::normalize::Anomaly) {
        let s = &mut self.slots[idx as usize];
        s.anomalies |= a.bit();
        s.anomalous_frames = s.anomalous_frames.saturating_add(1);
        self.mark_changed(idx);
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
        matches!(s.state, State::Tcp(TcpState::Closed | TcpState::Reset)) || (s.midstream() && s.policy.blocked)
    }

    /// Counts a frame of session `idx` sent in direction `dir` (`len` bytes) as dropped by
    /// Warden (it was already counted as seen).
    pub fn count_dropped(&mut self, idx: u32, dir: Dir, len: u32) {
        self.add(idx, counter::DROPPED_PACKETS + dir as usize, 1);
        self.add(idx, counter::DROPPED_BYTES + dir as usize, u64::from(len));
    }

    /// Counts a frame claimed for session `idx` in direction `dir` that Warden dropped before
    /// tracking it (a spoofed frame): seen and dropped, without touching the session's state or
    /// idle timer.
    pub fn count_rejected(&mut self, idx: u32, dir: Dir, len: u32) {
        self.add(idx, counter::PACKETS + dir as usize, 1);
        self.add(idx, counter::BYTES + dir as usize, u64::from(len));
        self.mark_changed(idx);
        self.count_dropped(idx, dir, len);
    }

    /// Adds one frame to an existing session without state changes (ICMP errors about it).
    pub fn account(&mut self, idx: u32, dir: Dir, len: u32, now_ns: u64) {
        self.add(idx, counter::PACKETS + dir as usize, 1);
        self.add(idx, counter::BYTES + dir as usize, u64::from(len));
        let s = &mut self.slots[idx as usize];
        s.last_ns = s.last_ns.max(now_ns);
        self.touch(idx);
    }

    /// A new session of `key` (hash `hash`) in a free slot (the caller made room); `None` when
    /// the index refuses it ([`TableStats::index_refused`]).
    fn create(
        &mut self,
        key: &FlowKey,
        hash: u64,
        from: End,
        tcp_flags: Option<u8>,
        iface: u16,
        now_ns: u64,
    ) -> Option<u32> {
        let idx = self.free;
        if idx == NIL {
            unreachable!("track makes room before creating")
        }
        if !self.index.insert(hash, idx) {
            return None;
        }
        self.free = self.slots[idx as usize].next;
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
        let in_dirty = self.slots[idx as usize].bits & bit::IN_DIRTY;
        let mut s = Session {
            key: *key,
            id: self.next_id,
            state,
            first_ns: now_ns,
            last_ns: now_ns,
            client_iface,
            bits: bit::LIVE | in_dirty,
            ..Session::vacant()
        };
        s.set_client_end(client);
        s.set_flag(bit::MIDSTREAM, midstream);
        s.class = list_of(&s, idx, &self.wide);
        self.slots[idx as usize] = s;
        if let Some(sh) = self.shadow.get_mut(idx as usize) {
            *sh = crate::shadow::ShadowState::default();
        }
        self.next_id += 1;
        self.created_since_expire += 1;
        self.link_tail(idx);
        self.stats.created += 1;
        Some(idx)
    }

    fn remove_index(&mut self, idx: u32) {
        let h = self.index.hash(&self.slots[idx as usize].key);
        let removed = self.index.remove(h, idx);
        debug_assert!(removed, "slot {idx} was not in the index");
    }

    /// Makes canonical end `client` the client of session `idx` (a flow announced by another
    /// one, such as a TFTP transfer, whose first frame came from the server). When that changes
    /// the client, the per-direction counters swap and the client's interface is learnt from
    /// its next frame ([`Self::note_client_iface`]).
    pub fn set_client(&mut self, idx: u32, client: End) {
        let s = &mut self.slots[idx as usize];
        if s.client() == client {
            return;
        }
        s.set_client_end(client);
        s.swap_dirs();
        s.client_iface = u16::MAX;
        s.bits |= bit::CHANGED;
        if s.flag(bit::WIDE) {
            self.wide.swap_dirs(idx);
        }
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
        s.set_client_end(match s.client() {
            End::Lo => End::Hi,
            End::Hi => End::Lo,
        });
        s.swap_dirs();
        s.seq.swap_dirs();
        let fins = (s.bits & bit::FINS) >> 4;
        s.bits = (s.bits & !bit::FINS) | (((fins & 1) << 1 | (fins >> 1) & 1) << 4);
        let server_spoke = s.server_data != 0;
        let client_spoke = s.client_data();
        s.server_data = 0;
        if client_spoke {
            let at = s.last_ns.max(1);
            s.note_server_data(at);
        }
        s.set_flag(bit::CLIENT_DATA, server_spoke);
        s.client_iface = client_iface;
        let (zone, counted) = (s.key.zone, s.src_counted());
        s.set_src_counted(false);
        if s.flag(bit::WIDE) {
            self.wide.swap_dirs(idx);
        }
        if counted {
            self.push_uncounted(zone, old_client);
        }
        self.mark_changed(idx);
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
        let class = list_of(&self.slots[idx as usize], idx, &self.wide);
        self.unlink(idx);
        self.slots[idx as usize].class = class;
        self.link_tail(idx);
        self.mark_changed(idx);
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

    fn push_uncounted(&mut self, zone: u16, client: crate::flow::Addr) {
        if self.uncounted.len() < self.uncounted_cap {
            self.uncounted.push((zone, client));
        } else {
            self.stats.uncounted_lost += 1;
        }
    }

    /// Room left in the uncounted queue beyond the reserve of one frame's removals.
    fn uncounted_room(&self) -> usize {
        self.uncounted_cap.saturating_sub(UNCOUNTED_RESERVE).saturating_sub(self.uncounted.len())
    }

    fn remove(&mut self, idx: u32, why: EndReason) {
        self.unlink(idx);
        self.remove_index(idx);
        let view = self.view(idx);
        let s = self.slots[idx as usize];
        if s.fast.offloaded() {
            // Its entries must leave the kernel's map before any frame of a new session on
            // the same 5-tuple arrives: the fast path takes them out after this call.
            self.unfast.push(s.fast.entry);
            self.slots[idx as usize].fast.entry = crate::fastpath::NO_ENTRY;
        }
        if s.src_counted() {
            self.push_uncounted(s.key.zone, s.client_end().0);
        }
        if self.ended.len() < self.ended_cap {
            self.ended.push_back((view, why));
        } else {
            self.stats.ended_overflow += 1;
            if s.app_ctx != NO_APP {
                self.released.push(s.app_ctx);
            }
        }
        if s.flag(bit::WIDE) {
            self.wide.remove(idx);
        }
        self.tunnels.release(s.tunnel);
        let slot = &mut self.slots[idx as usize];
        slot.tunnel = NO_TUNNEL;
        slot.bits &= bit::IN_DIRTY;
        slot.next = self.free;
        self.free = idx;
    }

    /// Frees a slot for a new session at `now_ns` if the table is full: ends a session whose
    /// idle timeout has passed (expiry not yet run), else evicts the oldest session of the
    /// cheapest [`EvictClass`] present. False when only established TCP sessions remain.
    fn make_room(&mut self, now_ns: u64) -> bool {
        if self.free != NIL {
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
    /// (denied, closed) and embryonic sessions go first. Stops early while the removed
    /// sessions' source counts wait to be taken back (the unused budget carries over to the
    /// next call). Returns how many ended.
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        let extra = usize::try_from(std::mem::take(&mut self.created_since_expire)).unwrap_or(usize::MAX);
        let want = budget.saturating_add(extra);
        let allowed = want.min(self.uncounted_room());
        let n = self.expire_lists(now_ns, allowed);
        if n == allowed && allowed < want {
            // Stopped by the room for source counts: the rest of the created sessions' share
            // waits for the next call.
            self.created_since_expire = (want - allowed).min(extra) as u64;
        }
        n
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

    /// Ends every session (shutdown or pair removal) whose zone satisfies `pred`; `uncount`
    /// gets the (zone, client) of each that was counted in its source's live sessions
    /// (`ip_src_session_limit`), to take it back at once.
    pub fn end_all(&mut self, mut pred: impl FnMut(u16) -> bool, mut uncount: impl FnMut(u16, crate::flow::Addr)) {
        let slots = &self.slots;
        let live: Vec<u32> = self.index.slots().filter(|&i| pred(slots[i as usize].key.zone)).collect();
        for idx in live {
            self.remove(idx, EndReason::Shutdown);
            for (zone, client) in self.uncounted.drain(..) {
                uncount(zone, client);
            }
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
            s.bits &= !bit::IN_DIRTY;
            if s.flag(bit::LIVE) && s.flag(bit::CHANGED) {
                s.bits &= !bit::CHANGED;
                out.push(SessionSnapshot::live(self.view(idx)));
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
        out.extend(self.ended.drain(..n).map(|(session, why)| SessionSnapshot {
            session,
            ended: Some(why),
            app: None,
            policy: None,
        }));
        if self.ended.is_empty() {
            // Back to the start of the ring: a queue drained as fast as it fills keeps using
            // its first pages instead of walking through (and making resident) all of them.
            self.ended.clear();
        }
        !self.ended.is_empty()
    }

    /// One step of a walk over the live sessions in slot order: snapshots of the live
    /// sessions in slots `from..`, at most `max` of them, looking at no more than `scan` slots
    /// (live or vacant). Returns them and the slot where the next step
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
            if self.slots[i].flag(bit::LIVE) {
                out.push(SessionSnapshot::live(self.view(i as u32)));
            }
            i += 1;
        }
        (out, (i < cap).then_some(i as u32))
    }

    /// Snapshots of up to `limit` live sessions.
    pub fn snapshot(&self, limit: usize) -> Vec<SessionSnapshot> {
        self.index.slots().take(limit).map(|i| SessionSnapshot::live(self.view(i))).collect()
    }
}

fn advance_tcp(s: &mut Session, dir: Dir, seg: &crate::tcpseq::Segment) {
    let State::Tcp(st) = s.state else { return };
    let flags = seg.flags;
    let fin = bit::FIN << (dir as u16);
    let fins = s.bits & bit::FINS;
    let next = if flags & tcpflag::RST != 0 {
        TcpState::Reset
    } else if st == TcpState::Reset {
        // Data after an accepted RST: the receiver did not reset (an in-window RST that was
        // not at its RCV.NXT only draws a challenge ACK, RFC 5961 §3.2), so neither does
        // Warden; late segments after a real reset draw RSTs that end it again.
        if seg.len > 0 && flags & (tcpflag::ACK | tcpflag::SYN) == tcpflag::ACK {
            if fins != 0 { TcpState::HalfClosed } else { TcpState::Established }
        } else {
            TcpState::Reset
        }
    } else if flags & tcpflag::FIN != 0 {
        s.bits |= fin;
        if s.bits & bit::FINS == bit::FINS {
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
        let s = t.view(t.find(&k, C).unwrap().0);
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
        let s = t.view(tr.idx);
        assert_eq!((s.client, s.packets, s.bytes, s.client_iface), (C, [0, 1], [0, 558], u16::MAX));
        assert_eq!(t.track(&u.0, C, 60, None, 1, 2).unwrap().dir, Dir::ToServer);
        t.note_client_iface(tr.idx, 1);
        let s = t.view(tr.idx);
        assert_eq!((s.packets, s.bytes, s.client_iface), ([1, 1], [60, 558], 1));
        t.set_client(tr.idx, C);
        assert_eq!(t.packets(tr.idx), [1, 1]);
    }

    #[test]
    fn midstream_client_is_the_ephemeral_port() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let k = key(40002);
        // Server (port 80) speaks first mid-stream.
        t.track(&k, S, 60, seg(ACK), 2, 1);
        let (idx, dir) = t.find(&k, C).unwrap();
        assert_eq!(dir, Dir::ToServer);
        assert!(t.get(idx).midstream());
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

    #[test]
    fn a_table_takes_at_most_256_bytes_per_session() {
        for max in [1 << 16, 100_000, 1 << 20] {
            let t = SessionTable::new(max, Timeouts::default());
            let f = t.footprint();
            eprintln!("{max} sessions: {f:?}, {:.1} bytes per session", f.per_session());
            assert_eq!(f.capacity, max);
            assert_eq!(f.entries, max * std::mem::size_of::<Session>());
            // The room kept for the fast path's state counts as taken.
            let kept = (Session::MAX_BYTES - std::mem::size_of::<Session>()) as f64;
            assert!(f.per_session() + kept <= 256.0, "{max}: {:.1} bytes per session", f.per_session() + kept);
            // Queues bounded whatever the size: not per session.
            assert!(f.queues < 32 << 20, "{f:?}");
        }
    }

    const G: u64 = 1 << 32;

    #[test]
    fn counters_past_2_32_stay_exact_and_follow_their_directions() {
        let mut t = SessionTable::new(16, Timeouts::default());
        let k = key(41000);
        let idx = t.track(&k, C, 74, seg(SYN), 1, 1).unwrap().idx;
        // 5 Gi frames and 7 TB each way (as the fast path hands them back), then frames on top.
        t.add_counts(idx, Dir::ToServer, 5 * G, 7_000_000_000_000, false);
        t.add_counts(idx, Dir::ToClient, G - 1, 3 * G + 5, true);
        t.track(&k, S, 60, seg(SYN | ACK), 2, 2).unwrap();
        t.count_dropped(idx, Dir::ToClient, 60);
        let v = t.view(idx);
        assert_eq!(v.packets, [5 * G + 1, G]);
        assert_eq!(v.bytes, [7_000_000_000_074, 3 * G + 65]);
        assert_eq!((v.dropped_packets, v.dropped_bytes), ([0, G], [0, 3 * G + 65]));
        assert_eq!(t.stats().side.wide, 1);
        // A flow another flow announced: the counters (high words too) follow the new client.
        t.set_client(idx, S);
        assert_eq!(t.packets(idx), [G, 5 * G + 1]);
        assert_eq!(t.dropped_bytes(idx), [3 * G + 65, 0]);
        t.flip_client(idx, 1);
        assert_eq!(t.bytes(idx), [7_000_000_000_074, 3 * G + 65]);
        // The final record has the full counts; the side entry is free again.
        t.end_all(|_| true, |_, _| {});
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        let last = out.iter().find(|r| r.ended.is_some()).unwrap();
        assert_eq!(last.session.packets, [5 * G + 1, G]);
        assert_eq!(t.stats().side.wide, 0);
    }

    #[test]
    fn a_full_wide_part_stops_counters_at_2_32_minus_1_and_counts_it() {
        let sides = SideSizes { wide: 2, tunnel_ends: 4 };
        let mut t = SessionTable::with_sides(16, Timeouts::default(), sides);
        let idx: Vec<u32> = (0..4).map(|p| t.track(&key(42000 + p), C, 60, seg(SYN), 1, 1).unwrap().idx).collect();
        for &i in &idx[..2] {
            t.add_counts(i, Dir::ToServer, 0, G, false);
        }
        assert_eq!(t.stats().side, SideStats { wide: 2, ..SideStats::default() });
        // The third session's bytes pass 2^32 with no entry free: they stop below it, never
        // wrap to a small number; every such carry is counted.
        t.add_counts(idx[2], Dir::ToServer, 0, G, false);
        t.add_counts(idx[2], Dir::ToServer, 0, 100, false);
        assert_eq!(t.bytes(idx[2]), [u32::MAX as u64, 0]);
        assert_eq!(t.stats().side.wide_full, 2);
        // The sessions with entries stay exact; the fourth is untouched.
        assert_eq!(t.bytes(idx[0]), [G + 60, 0]);
        assert_eq!(t.bytes(idx[3]), [60, 0]);
        // Their frames still count as seen: the session is one-way, not empty.
        assert_eq!(t.packets(idx[2]), [1, 0]);
        // An entry freed by a session's end is taken by the next carry.
        t.end_all(|_| true, |_, _| {});
        let i = t.track(&key(42100), C, 60, seg(SYN), 1, 2).unwrap().idx;
        t.add_counts(i, Dir::ToClient, G, 0, false);
        assert_eq!(t.packets(i), [1, G]);
        assert_eq!(t.stats().side.wide_full, 2);
    }

    #[test]
    fn tunnel_ends_are_shared_freed_with_their_sessions_and_counted_when_full() {
        let sides = SideSizes { wide: 64, tunnel_ends: 2 };
        let mut t = SessionTable::with_sides(64, Timeouts::default(), sides);
        let ends = |n: u8| crate::tunnel::TunnelEnds {
            kind: crate::tunnel::Kind::Vxlan,
            id: 7,
            outer: [Addr::v4([198, 18, 9, n]), Addr::v4([198, 18, 0, 2])],
        };
        let mut idx = Vec::new();
        for (p, n) in [(0u16, 1u8), (1, 1), (2, 2), (3, 3), (4, 3)] {
            let i = t.track(&key(43000 + p), C, 60, seg(SYN), 1, 1).unwrap().idx;
            t.set_tunnel(i, &ends(n));
            idx.push(i);
        }
        // Two distinct ends fit; the sessions of the same tunnel share one; the third is not
        // recorded (the sessions themselves are as any other).
        assert_eq!(t.tunnel(idx[0]), Some(ends(1)));
        assert_eq!(t.tunnel(idx[1]), Some(ends(1)));
        assert_eq!(t.view(idx[2]).tunnel, Some(ends(2)));
        assert_eq!((t.tunnel(idx[3]), t.tunnel(idx[4])), (None, None));
        assert_eq!(t.get(idx[3]).state, State::Tcp(TcpState::SynSent));
        // Each is still known as a tunnel's inner flow (the fast path never takes one).
        assert!(idx.iter().all(|&i| t.get(i).inner()));
        let st = t.stats().side;
        assert_eq!((st.tunnel_ends, st.tunnel_ends_full), (2, 2));
        // The final records carry them; the entries are free once their sessions left.
        t.end_all(|_| true, |_, _| {});
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        assert_eq!(out.iter().filter(|r| r.session.tunnel == Some(ends(1))).count(), 2);
        assert_eq!(t.stats().side.tunnel_ends, 0);
        let i = t.track(&key(43100), C, 60, seg(SYN), 1, 2).unwrap().idx;
        t.set_tunnel(i, &ends(3));
        assert_eq!(t.tunnel(i), Some(ends(3)));
    }

    #[test]
    fn shadow_states_take_memory_only_while_a_shadow_is_loaded_and_start_over_per_session() {
        let mut t = SessionTable::new(1024, Timeouts::default());
        assert_eq!(t.footprint().shadow, 0);
        let i = t.track(&key(45000), C, 60, seg(SYN), 1, 1).unwrap().idx;
        let mut decided = crate::shadow::ShadowState::default();
        decided.generation = 3;
        decided.mark(true, false);
        // No shadow loaded: nothing kept, every session reads as never evaluated.
        t.set_shadow(i, decided);
        assert_eq!(t.shadow(i), crate::shadow::ShadowState::default());
        t.set_shadow_states(true);
        assert_eq!(t.footprint().shadow, 1024 * std::mem::size_of::<crate::shadow::ShadowState>());
        assert_eq!(std::mem::size_of::<crate::shadow::ShadowState>(), 8);
        t.set_shadow(i, decided);
        assert_eq!((t.shadow(i), t.view(i).shadow), (decided, decided));
        // The slot's next session starts undecided.
        t.end_all(|_| true, |_, _| {});
        let j = t.track(&key(45001), C, 60, seg(SYN), 1, 2).unwrap().idx;
        assert_eq!(j, i, "the freed slot is reused");
        assert_eq!(t.shadow(j), crate::shadow::ShadowState::default());
        // A new load starts over; a clear frees them.
        t.set_shadow(j, decided);
        t.set_shadow_states(true);
        assert_eq!(t.shadow(j), crate::shadow::ShadowState::default());
        t.set_shadow_states(false);
        assert_eq!(t.footprint().shadow, 0);
    }

    #[test]
    fn first_threat_reasons_are_kept_by_the_table_and_counted_past_its_limit() {
        let mut t = SessionTable::new(512, Timeouts::default());
        let id = crate::detect::ThreatId::TcpSplitHandshake;
        let reasons: Vec<&'static str> = (0..300).map(|i| &*Box::leak(format!("reason_{i}").into_boxed_str())).collect();
        let idx: Vec<u32> = (0..300u16).map(|p| t.track(&key(44000 + p), C, 60, seg(SYN), 1, 1).unwrap().idx).collect();
        for (i, r) in idx.iter().zip(&reasons) {
            t.note_threat(*i, id, r);
            // Only the first threat is kept.
            t.note_threat(*i, crate::detect::ThreatId::TcpSmallWindow, "later");
        }
        assert_eq!(t.view(idx[0]).first_threat, Some((id, "reason_0")));
        assert_eq!(t.view(idx[253]).first_threat, Some((id, "reason_253")));
        // Past the limit: the threat is kept, its reason is empty, counted.
        assert_eq!(t.view(idx[299]).first_threat, Some((id, "")));
        assert_eq!(t.stats().side.reasons_full, 300 - Reasons::MAX as u64);
    }

    #[test]
    fn a_table_churned_ten_thousand_times_its_size_keeps_its_index_as_it_was() {
        // Every new flow evicts one: the index takes and frees entries a million times, never
        // grows, refuses nothing, and finds every live session by its key.
        let mut t = SessionTable::new(100, Timeouts::default());
        let bytes = t.footprint();
        for i in 0..1_000_000u32 {
            let k = FlowKey::new(0, 17, Addr::v4([198, 18, (i >> 8) as u8, i as u8]), (i >> 16) as u16, Addr::v4([198, 19, 0, 1]), 53).0;
            t.track(&k, End::Lo, 60, None, 1, u64::from(i)).unwrap();
            if i % 64 == 0 {
                let mut out = Vec::new();
                t.drain_ended(&mut out);
            }
        }
        assert_eq!(t.footprint(), bytes);
        assert_eq!(t.len(), 100);
        assert_eq!((t.stats().evicted, t.stats().index_refused), (1_000_000 - 100, 0));
        assert!(t.index_max_dist() < 16, "{}", t.index_max_dist());
        // Every live session is still found by its key, and only those.
        let live: Vec<u32> = (0..t.capacity() as u32).filter(|&i| t.get(i).flag(bit::LIVE)).collect();
        assert_eq!(live.len(), 100);
        for i in live {
            let k = t.get(i).key;
            assert_eq!(t.find(&k, End::Lo).map(|f| f.0), Some(i));
        }
    }
}
