//! Per-core session table.
//!
//! One entry per flow, shared by both directions (the key is canonical, see
//! [`crate::flow::FlowKey`]); the *client* is the side that opened the flow (the TCP SYN sender,
//! or the first sender for UDP/ICMP/other), except for a flow another flow announced (a TFTP
//! transfer), whose client is the announcing flow's client ([`SessionTable::set_client`]). Storage is preallocated at start-up: a slab of
//! [`Session`]s, a hashbrown map from key to slab index with its final capacity, and intrusive
//! doubly linked lists, one per timeout class, kept in last-activity order. So:
//! - touching a session moves it to the tail of its class list (O(1));
//! - expiry pops list heads whose idle time exceeds the class timeout (O(1) each);
//! - when the table is full the oldest idle session (the oldest of the class heads) is evicted
//!   and counted, so no input can grow the table;
//! - nothing is allocated per packet.
//!
//! TCP state follows the segments seen in both directions (RFC 9293 §3.3.2, reduced to what a
//! middlebox observes): `syn_sent`, `syn_received`, `established`, `half_closed` (one FIN),
//! `closed` (both FINs), `reset` (RST). Closed and reset sessions linger for the short `closed`
//! timeout so late ACKs and retransmissions are still counted, then end with a final record.

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

const CLASSES: usize = 7;
const NIL: u32 = u32::MAX;

/// `Session::app_ctx` of a session without an app context (not inspected).
pub const NO_APP: u32 = u32::MAX;

impl Timeouts {
    fn of(&self, class: usize) -> u64 {
        [
            self.tcp_syn,
            self.tcp_established,
            self.tcp_half_closed,
            self.tcp_closed,
            self.udp,
            self.icmp,
            self.other,
        ][class]
    }
}

fn class_of(state: State, proto: u8) -> usize {
    match state {
        State::Tcp(TcpState::SynSent | TcpState::SynReceived) => 0,
        State::Tcp(TcpState::Established) => 1,
        State::Tcp(TcpState::HalfClosed) => 2,
        State::Tcp(TcpState::Closed | TcpState::Reset) => 3,
        State::Active => match proto {
            17 => 4,
            1 | 58 => 5,
            _ => 6,
        },
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
    /// Sessions evicted because the table was full.
    pub evicted: u64,
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
}

/// The per-core session table. See the module docs.
pub struct SessionTable {
    map: HashMap<FlowKey, u32>,
    slots: Vec<Session>,
    free: Vec<u32>,
    heads: [u32; CLASSES],
    tails: [u32; CLASSES],
    timeouts: Timeouts,
    dirty: Vec<u32>,
    ended: Vec<SessionSnapshot>,
    ended_cap: usize,
    /// App contexts of ended sessions whose final record did not fit `ended`: the inspector
    /// returns them to its engine ([`Self::drain_released`]), so a full ended queue loses the
    /// record, never the context or its stream buffers.
    released: Vec<u32>,
    next_id: u64,
    stats: TableStats,
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
            heads: [NIL; CLASSES],
            tails: [NIL; CLASSES],
            timeouts,
            dirty: Vec::with_capacity(max),
            ended: Vec::with_capacity(ended_cap),
            ended_cap,
            released: Vec::with_capacity(max),
            next_id: 1,
            stats: TableStats::default(),
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
    /// interface `iface`, creating the session if needed (evicting the oldest idle one when
    /// full) and advancing TCP state with `tcp_flags` (`None` for other protocols).
    pub fn track(
        &mut self,
        key: &FlowKey,
        from: End,
        len: u32,
        tcp_flags: Option<u8>,
        iface: u16,
        now_ns: u64,
    ) -> Tracked {
        let (idx, new) = match self.map.get(key) {
            Some(&idx) if !self.reusable(idx, tcp_flags) => (idx, false),
            Some(&idx) => {
                self.remove(idx, EndReason::Reused);
                (self.create(key, from, tcp_flags, iface, now_ns), true)
            }
            None => (self.create(key, from, tcp_flags, iface, now_ns), true),
        };
        let s = &mut self.slots[idx as usize];
        let dir = s.dir_of(from);
        s.packets[dir as usize] += 1;
        s.bytes[dir as usize] += u64::from(len);
        s.last_ns = s.last_ns.max(now_ns);
        if let Some(flags) = tcp_flags {
            advance_tcp(s, dir, flags);
        }
        self.touch(idx);
        Tracked { idx, dir, new }
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
        if self.free.is_empty() {
            self.evict_oldest();
        }
        let Some(idx) = self.free.pop() else {
            unreachable!("eviction frees a slot in a table of capacity >= 1")
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
            class: class_of(state, key.proto) as u8,
            ..Session::vacant()
        };
        self.next_id += 1;
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

    /// Records the interface of the client side once a client frame is seen (for sessions
    /// created by a server frame).
    pub fn note_client_iface(&mut self, idx: u32, iface: u16) {
        let s = &mut self.slots[idx as usize];
        if s.client_iface == u16::MAX {
            s.client_iface = iface;
        }
    }

    /// Class of the closed-TCP linger, also used for sessions denied by policy.
    const LINGER: u8 = 3;

    /// Gives a session denied by policy the short linger of closed sessions
    /// (`tcp_closed_timeout`): it forwards nothing, so it need not hold a slot longer than it
    /// takes to report it, and a flood of denied flows cannot keep live ones out of the table.
    pub fn linger(&mut self, idx: u32) {
        if self.slots[idx as usize].class == Self::LINGER {
            return;
        }
        self.unlink(idx);
        self.slots[idx as usize].class = Self::LINGER;
        self.link_tail(idx);
    }

    fn touch(&mut self, idx: u32) {
        let class = {
            let s = &self.slots[idx as usize];
            if s.policy.blocked {
                Self::LINGER
            } else {
                class_of(s.state, s.key.proto) as u8
            }
        };
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

    fn remove(&mut self, idx: u32, why: EndReason) {
        self.unlink(idx);
        let s = self.slots[idx as usize];
        self.map.remove(&s.key);
        if self.ended.len() < self.ended_cap {
            self.ended.push(SessionSnapshot {
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

    fn evict_oldest(&mut self) {
        let oldest = self
            .heads
            .iter()
            .filter(|&&h| h != NIL)
            .min_by_key(|&&h| self.slots[h as usize].last_ns)
            .copied();
        if let Some(idx) = oldest {
            self.remove(idx, EndReason::Evicted);
            self.stats.evicted += 1;
        }
    }

    /// Ends sessions idle past their timeout at `now_ns`, at most `budget` of them (so a burst
    /// of expiries cannot stall the packet loop). Returns how many ended.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        let mut n = 0;
        for c in 0..CLASSES {
            let timeout = self.timeouts.of(c);
            while n < budget {
                let h = self.heads[c];
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
        for i in 0..self.dirty.len() {
            let idx = self.dirty[i] as usize;
            let s = &mut self.slots[idx];
            s.in_dirty = false;
            if s.live && s.changed {
                s.changed = false;
                out.push(SessionSnapshot {
                    session: *s,
                    ended: None,
                    app: None,
                    policy: None,
                });
            }
        }
        self.dirty.clear();
        out.append(&mut self.ended);
    }

    /// Moves only the final records of ended sessions into `out`.
    pub fn drain_ended(&mut self, out: &mut Vec<SessionSnapshot>) {
        out.append(&mut self.ended);
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

fn advance_tcp(s: &mut Session, dir: Dir, flags: u8) {
    let State::Tcp(st) = s.state else { return };
    let bit = 1u8 << (dir as u8);
    let next = if flags & tcpflag::RST != 0 || st == TcpState::Reset {
        TcpState::Reset
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
        assert!(t.track(&k, C, 74, Some(SYN), 1, n).new);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::SynSent));
        assert_eq!(t.track(&k, S, 74, Some(SYN | ACK), 2, n + 1).dir, Dir::ToClient);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::SynReceived));
        t.track(&k, C, 66, Some(ACK), 1, n + 2);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::Established));
        t.track(&k, C, 66, Some(FIN | ACK), 1, n + 3);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::HalfClosed));
        t.track(&k, S, 66, Some(FIN | ACK), 2, n + 4);
        t.track(&k, C, 66, Some(ACK), 1, n + 5);
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
        t.track(&k, S, 60, Some(SYN | ACK), 2, 1);
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
        let tr = t.track(&u.0, S, 558, None, 2, 1);
        assert_eq!(tr.dir, Dir::ToServer);
        t.set_client(tr.idx, C);
        let s = t.get(tr.idx);
        assert_eq!((s.client, s.packets, s.bytes, s.client_iface), (C, [0, 1], [0, 558], u16::MAX));
        assert_eq!(t.track(&u.0, C, 60, None, 1, 2).dir, Dir::ToServer);
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
        t.track(&k, S, 60, Some(ACK), 2, 1);
        let (idx, dir) = t.find(&k, C).unwrap();
        assert_eq!(dir, Dir::ToServer);
        assert!(t.get(idx).midstream);
        assert_eq!(t.get(idx).state, State::Tcp(TcpState::Established));
    }

    #[test]
    fn rst_resets() {
        let mut t = SessionTable::new(4, Timeouts::default());
        let k = key(40003);
        t.track(&k, C, 60, Some(SYN), 1, 1);
        t.track(&k, S, 60, Some(RST | ACK), 2, 2);
        assert_eq!(state(&t, &k), State::Tcp(TcpState::Reset));
    }

    #[test]
    fn full_table_evicts_oldest_idle_and_stays_bounded() {
        let mut t = SessionTable::new(8, Timeouts::default());
        for p in 0..100u16 {
            t.track(&key(1000 + p), C, 60, Some(SYN), 1, u64::from(p));
            assert!(t.len() <= 8);
        }
        assert_eq!(t.stats().evicted, 92);
        // The survivors are the 8 newest.
        assert!(t.find(&key(1099), C).is_some());
        assert!(t.find(&key(1091), C).is_none());
        // Touching an old session protects it from eviction.
        t.track(&key(1092), C, 60, Some(ACK), 1, 200);
        t.track(&key(5000), C, 60, Some(SYN), 1, 201);
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
        t.track(&k, C, 60, Some(ACK), 1, 0);
        assert_eq!(t.expire(11, 10), 1);
        assert!(t.find(&u, End::Lo).is_none());
        assert!(t.find(&k, C).is_some());
        assert_eq!(t.expire(101, 10), 1);
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn reports_carry_each_changed_session_once() {
        let mut t = SessionTable::new(2, Timeouts::default());
        let (a, b, c) = (key(1), key(2), key(3));
        t.track(&a, C, 60, Some(SYN), 1, 1);
        t.track(&a, C, 60, Some(ACK), 1, 2);
        t.track(&b, C, 60, Some(SYN), 1, 3);
        let mut out = Vec::new();
        t.drain_reports(&mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        t.drain_reports(&mut out);
        assert!(out.is_empty());
        // Churn the same slots many times between reports: the dirty list stays bounded.
        for i in 0..1000u64 {
            t.track(&key(10 + (i % 50) as u16), C, 60, Some(SYN), 1, 10 + i);
        }
        t.track(&c, C, 60, Some(SYN), 1, 5000);
        assert!(t.dirty.len() <= t.capacity());
        t.drain_reports(&mut out);
        let live: Vec<_> = out.iter().filter(|r| r.ended.is_none()).collect();
        assert_eq!(live.len(), 2);
    }
}
