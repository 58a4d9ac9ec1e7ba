//! Flood detectors: `tcp_syn_flood` ([`SynFlood`]) and `icmp_flood` ([`IcmpFlood`]).
//!
//! Both are per-core, bounded and allocation-free after construction, and run on the packet
//! clock (`now_ns`, the frame's time), so `warden replay` finds a flood in a capture as the live
//! path does. Each is asked about one packet at a time and answers with a [`Judgement`]: whether
//! this packet is *over* the allowed rate (protect mode drops exactly those, never frames of
//! established sessions) and, when a flood starts, a [`Finding`].
//!
//! # What is measured
//!
//! * `tcp_syn_flood`, per (zone, server address, server port): pure SYNs (SYN without ACK)
//!   toward the server, and handshakes completed with it (the session layer says so:
//!   [`SynFlood::handshake_done`]). A flood is SYNs at or above [`SynFloodConfig::rate`] per
//!   second while fewer than [`SynFloodConfig::min_handshake_pct`] of them complete; it ends once
//!   the rate stayed under [`SynFloodConfig::end_rate`] (or handshakes complete again) for a
//!   second.
//! * `icmp_flood`, per (zone, destination address): ICMP echo requests and ICMPv6 echo requests
//!   at or above [`IcmpFloodConfig::rate`] per second, ending under
//!   [`IcmpFloodConfig::end_rate`].
//!
//! Rates are sliding one-second windows (the current second's count plus the previous second's,
//! weighted by the part of it still inside the window), so a burst is seen within the packets
//! that make it, not at the next timer tick.
//!
//! # What is dropped during a flood
//!
//! Only new SYNs (echo requests) to the victim. Each one is admitted or judged over:
//! * a *proven* source — one that completed a handshake with this server within
//!   [`SynFloodConfig::proven_ttl_s`] (for ICMP: one whose echo the destination answered before
//!   the flood began) — is admitted up to its own rate ([`SynFloodConfig::proven_rate`]): regular
//!   clients keep connecting whatever the flood does, and a proven host that floods itself is
//!   cut to that rate;
//! * everyone else shares [`SynFloodConfig::allowed_rate`] (a GCRA token bucket with
//!   [`SynFloodConfig::allowed_burst`]): a new legitimate client still gets through at that
//!   rate, competing with the flood for it (SYN cookies on the server are the complement).
//!
//! A spoofed flood cannot prove sources (the SYN-ACK goes to the spoofed address), and the
//! proven table only grows by completed handshakes, so the flood cannot evict proofs faster
//! than real clients make them.
//!
//! # Why a per-destination table and not a count-min sketch
//!
//! The detector needs per-destination *state*, not just counts: the handshake ratio, the
//! episode (started, last hot), the shared token bucket and whether the finding was reported.
//! A count-min sketch answers "about how many" and overestimates under collisions, which here
//! would mean dropping SYNs to a quiet server that shares cells with a flooded one. The key the
//! attacker controls is the destination, which must be routed through the pair to matter, so a
//! fixed set-associative table ([`SynFloodConfig::servers`] entries, 8 ways per set, keyed by a
//! per-process random hash so sets cannot be aimed at) holds the destinations exactly. A new
//! destination replaces the *least active* entry of its set (lowest current SYN rate), never one
//! in a flood; when every way of a set is flooding, the new destination is not tracked and its
//! packets are admitted and counted (`untracked`): failing open there cannot hide a flood in
//! progress (those stay tracked) and failing closed would drop SYNs to a server nobody floods.
//! Replacing an entry that was still active is counted as `saturated`. A flood spread over
//! random ports of one host only churns its own cold entries; the victim's hot entry stays.
//!
//! # Thresholds: NeuVector's and ours
//!
//! NeuVector's dp (`dp/dpi/dpi_meter.c`) meters SYNs per (workload, *source address*): on at
//! 800 SYN/s, off under 600 SYN/s, over a 5 s span, dropping every SYN of that source while on;
//! ICMP echo requests per workload: 100/s on and off over 1 s, dropping every request while on.
//! Where that is weak, and what we do instead:
//! * keyed by source, a SYN flood from many (spoofed) sources is never seen: every source stays
//!   far under 800/s. We key by server and port, the resource a SYN flood exhausts;
//! * no handshake check: a busy server with 800 genuine new connections per second from one
//!   proxy is "flooded". We require that few handshakes complete (default under 50 %), so busy
//!   servers (`ab` at ~10 000 connections/s in our captures) are not flooded, and raise the
//!   start rate to 1000 SYN/s per server (end 750/s, NeuVector's 3:4 hysteresis);
//! * dropping everything while on blocks the legitimate clients too (the flood's goal). We drop
//!   only the excess: proven sources keep their rate, others share 100 SYN/s.
//! * ICMP keeps NeuVector's 100 echo requests/s per destination (end 75/s); during a flood
//!   proven pingers keep 10/s each and the rest share 10/s (so `ping` from a monitor survives
//!   `ping -f` from elsewhere).
//!
//! The lead maps each [`SynFloodConfig`] / [`IcmpFloodConfig`] field to `[threats.tcp_syn_flood]`
//! / `[threats.icmp_flood]` keys of the same name in `warden.toml`.

use crate::detect::ThreatId;
use crate::flow::Addr;
use std::hash::{BuildHasher, Hash};

/// Rate window: rates are events per this many ns (one second).
pub const WINDOW_NS: u64 = 1_000_000_000;

/// What a detector found: the threat, the form (`reason`), the parties and the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The threat kind.
    pub id: ThreatId,
    /// Which form it was (snake_case): `"syn_rate_few_handshakes"`, `"echo_request_rate"`,
    /// `"sessions_over_limit"`, or an ICMP tunnelling reason
    /// ([`crate::threat::icmp_tunnel`]).
    pub reason: &'static str,
    /// Inline pair (zone) it was seen on.
    pub zone: u16,
    /// Source of the packet that made the finding (for floods: the client whose SYN or echo
    /// request crossed the threshold; for tunnels: the end that sent the echo requests).
    pub src: Addr,
    /// Destination: the flooded server, the other end of the tunnel.
    pub dst: Addr,
    /// Server port (TCP); 0 for ICMP and per-source findings.
    pub port: u16,
    /// The measurement that crossed the limit, in the unit of `reason` (packets/s for floods,
    /// sessions for the source limit, bytes or mismatched replies for tunnels).
    pub value: u64,
    /// The configured limit it crossed, same unit.
    pub limit: u64,
}

/// The answer about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Judgement {
    /// The packet is over the rate allowed during a flood: protect mode (action `drop` or
    /// `reset`) drops it; alert mode only counts it.
    pub over: bool,
    /// A flood started with this packet (one finding per episode).
    pub finding: Option<Finding>,
}

/// Counters of a flood detector (for `wardenctl counters` and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FloodStats {
    /// Packets judged.
    pub packets: u64,
    /// Packets judged over the allowed rate.
    pub over: u64,
    /// Packets admitted during a flood because their source was proven.
    pub proven_admitted: u64,
    /// Floods started (episodes).
    pub episodes: u64,
    /// Destinations that replaced another in the table.
    pub evictions: u64,
    /// Evictions of a destination that was still active (the table was too small for the
    /// destinations seen in the last two seconds).
    pub saturated: u64,
    /// Packets to a destination that could not be tracked (every way of its set was flooding):
    /// admitted and counted here.
    pub untracked: u64,
    /// Proofs (completed handshakes, echo replies) recorded.
    pub proofs: u64,
}

/// `[threats.tcp_syn_flood]` thresholds and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynFloodConfig {
    /// SYNs per second to one (zone, server, port) at which a flood starts (with few
    /// handshakes completing). Default 1000.
    pub rate: u32,
    /// SYNs per second under which a flood ends (after one second). Default 750.
    pub end_rate: u32,
    /// A flood needs fewer completed handshakes than this percentage of the SYNs (0: any
    /// SYN rate is a flood). Default 50.
    pub min_handshake_pct: u8,
    /// SYNs per second admitted from unproven sources during a flood, shared. Default 100.
    pub allowed_rate: u32,
    /// Burst of unproven SYNs admitted at once during a flood. Default 100.
    pub allowed_burst: u32,
    /// SYNs per second admitted from each proven source during a flood. Default 100.
    pub proven_rate: u32,
    /// Burst of one proven source. Default 100.
    pub proven_burst: u32,
    /// How long a completed handshake proves its client to that server (s). Default 300.
    pub proven_ttl_s: u32,
    /// Destinations tracked per core (rounded up to a multiple of 8). Default 4096.
    pub servers: usize,
    /// Proven (client, server, port) entries per core (rounded up to a multiple of 8).
    /// Default 16384.
    pub proven: usize,
}

impl Default for SynFloodConfig {
    fn default() -> Self {
        SynFloodConfig {
            rate: 1000,
            end_rate: 750,
            min_handshake_pct: 50,
            allowed_rate: 100,
            allowed_burst: 100,
            proven_rate: 100,
            proven_burst: 100,
            proven_ttl_s: 300,
            servers: 4096,
            proven: 16384,
        }
    }
}

/// `[threats.icmp_flood]` thresholds and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpFloodConfig {
    /// Echo requests per second to one (zone, destination) at which a flood starts.
    /// Default 100 (NeuVector's).
    pub rate: u32,
    /// Echo requests per second under which a flood ends (after one second). Default 75.
    pub end_rate: u32,
    /// Echo requests per second admitted from unproven sources during a flood, shared.
    /// Default 10.
    pub allowed_rate: u32,
    /// Burst of unproven requests admitted at once during a flood. Default 10.
    pub allowed_burst: u32,
    /// Echo requests per second admitted from each proven source during a flood. Default 10.
    pub proven_rate: u32,
    /// Burst of one proven source. Default 10.
    pub proven_burst: u32,
    /// How long an answered echo proves its sender to that destination (s); only answers from
    /// before the flood began count. Default 300.
    pub proven_ttl_s: u32,
    /// Destinations tracked per core (rounded up to a multiple of 8). Default 1024.
    pub destinations: usize,
    /// Proven (source, destination) entries per core (rounded up to a multiple of 8).
    /// Default 4096.
    pub proven: usize,
}

impl Default for IcmpFloodConfig {
    fn default() -> Self {
        IcmpFloodConfig {
            rate: 100,
            end_rate: 75,
            allowed_rate: 10,
            allowed_burst: 10,
            proven_rate: 10,
            proven_burst: 10,
            proven_ttl_s: 300,
            destinations: 1024,
            proven: 4096,
        }
    }
}

/// TCP SYN flood detector (`tcp_syn_flood`), one per core.
///
/// Call [`SynFlood::syn`] for every pure SYN (SYN set, ACK clear) before it creates or
/// restarts a session, and [`SynFlood::handshake_done`] when a session's handshake completes
/// (the client's ACK of the server's SYN-ACK accepted by normalisation).
pub struct SynFlood {
    engine: Engine,
}

impl SynFlood {
    /// A detector with `cfg`'s thresholds and table sizes (allocated here, once).
    pub fn new(cfg: &SynFloodConfig) -> Self {
        SynFlood {
            engine: Engine::new(EngineConfig {
                id: ThreatId::TcpSynFlood,
                reason: "syn_rate_few_handshakes",
                on: cfg.rate,
                off: cfg.end_rate.min(cfg.rate),
                min_pct: cfg.min_handshake_pct.min(100),
                allowed: Gcra::new(cfg.allowed_rate, cfg.allowed_burst),
                proven: Gcra::new(cfg.proven_rate, cfg.proven_burst),
                proven_ttl_ns: u64::from(cfg.proven_ttl_s) * WINDOW_NS,
                proofs_during_flood: true,
                dests: cfg.servers,
                proofs: cfg.proven,
            }),
        }
    }

    /// A pure SYN from `client` to `server:port` on `zone` at `now_ns`: whether it is over the
    /// allowed rate, and the finding when a flood starts with it.
    pub fn syn(&mut self, zone: u16, client: Addr, server: Addr, port: u16, now_ns: u64) -> Judgement {
        self.engine.packet(DestKey { zone, port, addr: server }, client, now_ns)
    }

    /// The handshake of a session from `client` to `server:port` completed at `now_ns`: counts
    /// toward the server's completed handshakes and proves `client` to it.
    pub fn handshake_done(&mut self, zone: u16, client: Addr, server: Addr, port: u16, now_ns: u64) {
        self.engine.proof(DestKey { zone, port, addr: server }, client, now_ns);
    }

    /// True while `server:port` is flooded (as of the last packet judged).
    pub fn flooded(&self, zone: u16, server: Addr, port: u16) -> bool {
        self.engine.flooded(DestKey { zone, port, addr: server })
    }

    /// The counters.
    pub fn stats(&self) -> FloodStats {
        self.engine.stats
    }
}

/// ICMP echo flood detector (`icmp_flood`), one per core.
///
/// Call [`IcmpFlood::echo_request`] for every ICMP echo request (type 8) and ICMPv6 echo
/// request (type 128), and [`IcmpFlood::echo_reply`] for every echo reply.
pub struct IcmpFlood {
    engine: Engine,
}

impl IcmpFlood {
    /// A detector with `cfg`'s thresholds and table sizes (allocated here, once).
    pub fn new(cfg: &IcmpFloodConfig) -> Self {
        IcmpFlood {
            engine: Engine::new(EngineConfig {
                id: ThreatId::IcmpFlood,
                reason: "echo_request_rate",
                on: cfg.rate,
                off: cfg.end_rate.min(cfg.rate),
                min_pct: 0,
                allowed: Gcra::new(cfg.allowed_rate, cfg.allowed_burst),
                proven: Gcra::new(cfg.proven_rate, cfg.proven_burst),
                proven_ttl_ns: u64::from(cfg.proven_ttl_s) * WINDOW_NS,
                proofs_during_flood: false,
                dests: cfg.destinations,
                proofs: cfg.proven,
            }),
        }
    }

    /// An echo request from `src` to `dst` on `zone` at `now_ns`.
    pub fn echo_request(&mut self, zone: u16, src: Addr, dst: Addr, now_ns: u64) -> Judgement {
        self.engine.packet(DestKey { zone, port: 0, addr: dst }, src, now_ns)
    }

    /// An echo reply from `replier` to `requester` (the reply's source and destination) at
    /// `now_ns`: proves `requester` to `replier`.
    pub fn echo_reply(&mut self, zone: u16, replier: Addr, requester: Addr, now_ns: u64) {
        self.engine.proof(DestKey { zone, port: 0, addr: replier }, requester, now_ns);
    }

    /// True while `dst` is flooded (as of the last packet judged).
    pub fn flooded(&self, zone: u16, dst: Addr) -> bool {
        self.engine.flooded(DestKey { zone, port: 0, addr: dst })
    }

    /// The counters.
    pub fn stats(&self) -> FloodStats {
        self.engine.stats
    }
}

/// A flooded resource: (zone, address, port; 0 for ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DestKey {
    zone: u16,
    port: u16,
    addr: Addr,
}

/// Sliding one-second event counter: the current window's count and the previous one's.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: u64,
    cur: u32,
    prev: u32,
}

impl Window {
    fn at(now: u64) -> Self {
        Window { start: now, cur: 0, prev: 0 }
    }

    /// Moves the window to `now` (a clock that went back stays in the current window).
    fn roll(&mut self, now: u64) {
        let el = now.saturating_sub(self.start);
        if el >= 2 * WINDOW_NS {
            *self = Window::at(now);
        } else if el >= WINDOW_NS {
            self.prev = self.cur;
            self.cur = 0;
            self.start += WINDOW_NS;
        }
    }

    fn add(&mut self, now: u64) {
        self.roll(now);
        self.cur = self.cur.saturating_add(1);
    }

    /// Events in the second before `now` (estimated: the previous window weighted by its
    /// part still inside).
    fn rate(&self, now: u64) -> u64 {
        let el = now.saturating_sub(self.start);
        if el >= 2 * WINDOW_NS {
            return 0;
        }
        if el >= WINDOW_NS {
            // `roll` not called yet: the current count becomes the previous one.
            let into = el - WINDOW_NS;
            return u64::from(self.cur) * (WINDOW_NS - into) / WINDOW_NS;
        }
        u64::from(self.cur) + u64::from(self.prev) * (WINDOW_NS - el) / WINDOW_NS
    }
}

/// Generic cell rate algorithm (a token bucket without division or truncation per packet):
/// one event per `interval` ns, `tolerance` ns of burst.
#[derive(Debug, Clone, Copy, Default)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// `rate` events per second (0: none), bursts of `burst` (at least 1).
    fn new(rate: u32, burst: u32) -> Self {
        if rate == 0 {
            return Gcra { interval: u64::MAX, tolerance: 0 };
        }
        let interval = (WINDOW_NS / u64::from(rate)).max(1);
        Gcra { interval, tolerance: interval.saturating_mul(u64::from(burst.max(1)) - 1) }
    }

    /// Admits one event at `now` against the theoretical arrival time `tat` (0: full bucket).
    fn admit(&self, tat: &mut u64, now: u64) -> bool {
        if self.interval == u64::MAX {
            return false;
        }
        let t = (*tat).max(now);
        if t - now > self.tolerance {
            return false;
        }
        *tat = t.saturating_add(self.interval);
        true
    }
}

/// A tracked destination.
#[derive(Debug, Clone, Copy, Default)]
struct Dest {
    /// Packets toward it (SYNs, echo requests).
    packets: Window,
    /// Completed handshakes (SYN flood only).
    done: Window,
    /// In a flood since `since`.
    flooding: bool,
    since: u64,
    /// Last time the flood condition (at the end rate) held.
    hot: u64,
    /// Shared bucket of unproven sources during the flood.
    tat: u64,
}

/// A proof: a source that completed a handshake with (got an echo answer from) a destination.
#[derive(Debug, Clone, Copy, Default)]
struct Proof {
    at: u64,
    tat: u64,
}

struct EngineConfig {
    id: ThreatId,
    reason: &'static str,
    on: u32,
    off: u32,
    min_pct: u8,
    allowed: Gcra,
    proven: Gcra,
    proven_ttl_ns: u64,
    proofs_during_flood: bool,
    dests: usize,
    proofs: usize,
}

/// The flood engine both detectors share.
struct Engine {
    cfg: EngineConfig,
    dests: Sets<DestKey, Dest>,
    proofs: Sets<ProofKey, Proof>,
    stats: FloodStats,
}

/// (destination, source) of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProofKey {
    dest: DestKey,
    src: Addr,
}

impl Engine {
    fn new(cfg: EngineConfig) -> Self {
        Engine { dests: Sets::new(cfg.dests), proofs: Sets::new(cfg.proofs), cfg, stats: FloodStats::default() }
    }

    fn flooded(&self, key: DestKey) -> bool {
        self.dests.find(&key).is_some_and(|i| self.dests.val(i).flooding)
    }

    fn packet(&mut self, key: DestKey, src: Addr, now: u64) -> Judgement {
        self.stats.packets += 1;
        let slot = self.dests.lookup(
            key,
            |d| if d.flooding { None } else { Some(d.packets.rate(now)) },
            || Dest { packets: Window::at(now), done: Window::at(now), ..Dest::default() },
        );
        let i = match slot {
            Lookup::Hit(i) => i,
            Lookup::Inserted { idx, evicted } => {
                if let Some(score) = evicted {
                    self.stats.evictions += 1;
                    if score > 0 {
                        self.stats.saturated += 1;
                    }
                }
                idx
            }
            Lookup::Full => {
                self.stats.untracked += 1;
                return Judgement::default();
            }
        };
        let cfg = &self.cfg;
        let d = self.dests.val_mut(i);
        d.packets.add(now);
        d.done.roll(now);
        let rate = d.packets.rate(now);
        let done = d.done.rate(now);
        let few = cfg.min_pct == 0 || done * 100 < rate * u64::from(cfg.min_pct);
        let mut finding = None;
        if !d.flooding {
            if rate >= u64::from(cfg.on) && few {
                d.flooding = true;
                d.since = now;
                d.hot = now;
                d.tat = 0;
                self.stats.episodes += 1;
                finding = Some(Finding {
                    id: cfg.id,
                    reason: cfg.reason,
                    zone: key.zone,
                    src,
                    dst: key.addr,
                    port: key.port,
                    value: rate,
                    limit: u64::from(cfg.on),
                });
            }
        } else if rate >= u64::from(cfg.off) && few {
            d.hot = now;
        } else if now.saturating_sub(d.hot) >= WINDOW_NS {
            d.flooding = false;
        }
        if !d.flooding {
            return Judgement { over: false, finding };
        }
        let since = d.since;
        let allowed = cfg.allowed;
        let admitted = match self.proven(key, src, since, now) {
            Some(a) => {
                if a {
                    self.stats.proven_admitted += 1;
                }
                a
            }
            None => {
                let d = self.dests.val_mut(i);
                allowed.admit(&mut d.tat, now)
            }
        };
        if !admitted {
            self.stats.over += 1;
        }
        Judgement { over: !admitted, finding }
    }

    /// `Some(admitted)` when `src` is proven to `key` (by its own bucket), `None` otherwise.
    fn proven(&mut self, key: DestKey, src: Addr, since: u64, now: u64) -> Option<bool> {
        let i = self.proofs.find(&ProofKey { dest: key, src })?;
        let cfg = &self.cfg;
        let p = self.proofs.val_mut(i);
        let valid = now.saturating_sub(p.at) <= cfg.proven_ttl_ns && (cfg.proofs_during_flood || p.at < since);
        if !valid {
            return None;
        }
        Some(cfg.proven.admit(&mut p.tat, now))
    }

    fn proof(&mut self, key: DestKey, src: Addr, now: u64) {
        self.stats.proofs += 1;
        if let Some(i) = self.dests.find(&key) {
            let d = self.dests.val_mut(i);
            d.done.add(now);
        }
        let pk = ProofKey { dest: key, src };
        // Oldest proof first out; a proof is never refused (Some(score) always).
        match self.proofs.lookup(pk, |p| Some(p.at), || Proof { at: now, tat: 0 }) {
            Lookup::Hit(i) => {
                let p = self.proofs.val_mut(i);
                // Keep an earlier proof's time while it is valid (it may predate a flood).
                if now.saturating_sub(p.at) > self.cfg.proven_ttl_ns {
                    p.at = now;
                }
            }
            Lookup::Inserted { .. } | Lookup::Full => {}
        }
    }
}

/// Ways per set of a [`Sets`] table.
pub(crate) const WAYS: usize = 8;

/// Result of [`Sets::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The key was there, at this slot.
    Hit(usize),
    /// The key was added at `idx`, replacing an entry of eviction score `evicted` (`None`: the
    /// slot was free).
    Inserted { idx: usize, evicted: Option<u64> },
    /// Every way of the key's set refused eviction: the key is not tracked.
    Full,
}

/// A fixed set-associative table: `sets × WAYS` slots allocated at construction; a key lives
/// in the set its keyed hash picks (a per-process random key, so sets cannot be aimed at).
/// Lookups and insertions touch one set: O(WAYS), no allocation.
pub(crate) struct Sets<K, V> {
    keys: Vec<Option<K>>,
    vals: Vec<V>,
    mask: usize,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<K: Copy + Eq + Hash, V: Copy + Default> Sets<K, V> {
    /// A table of at least `entries` slots (a power-of-two number of sets, at least one).
    pub(crate) fn new(entries: usize) -> Self {
        let sets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        Sets {
            keys: vec![None; sets * WAYS],
            vals: vec![V::default(); sets * WAYS],
            mask: sets - 1,
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    fn set(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize & self.mask) * WAYS
    }

    /// Slot of `key`, if present.
    pub(crate) fn find(&self, key: &K) -> Option<usize> {
        let base = self.set(key);
        (base..base + WAYS).find(|&i| self.keys[i].as_ref() == Some(key))
    }

    /// Slot of `key`; when absent it is inserted with `new()` in a free way, else in place of
    /// the way with the lowest `score` (`None`: never evict that one).
    pub(crate) fn lookup(&mut self, key: K, score: impl Fn(&V) -> Option<u64>, new: impl FnOnce() -> V) -> Lookup {
        let base = self.set(&key);
        let mut free = None;
        let mut victim: Option<(usize, u64)> = None;
        for i in base..base + WAYS {
            match &self.keys[i] {
                Some(k) if *k == key => return Lookup::Hit(i),
                Some(_) => {
                    if let Some(s) = score(&self.vals[i]) {
                        if victim.is_none_or(|(_, best)| s < best) {
                            victim = Some((i, s));
                        }
                    }
                }
                None => {
                    if free.is_none() {
                        free = Some(i);
                    }
                }
            }
        }
        let (idx, evicted) = match (free, victim) {
            (Some(i), _) => (i, None),
            (None, Some((i, s))) => (i, Some(s)),
            (None, None) => return Lookup::Full,
        };
        self.keys[idx] = Some(key);
        self.vals[idx] = new();
        Lookup::Inserted { idx, evicted }
    }

    /// The value at a slot returned by [`Sets::find`] / [`Sets::lookup`].
    pub(crate) fn val(&self, i: usize) -> &V {
        &self.vals[i]
    }

    /// The value at a slot returned by [`Sets::find`] / [`Sets::lookup`], mutable.
    pub(crate) fn val_mut(&mut self, i: usize) -> &mut V {
        &mut self.vals[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn a(x: u32) -> Addr {
        let o = x.to_be_bytes();
        Addr::v4([198, 18 + (o[1] & 1), o[2], o[3]])
    }

    #[test]
    fn window_rate_slides_over_one_second() {
        let mut w = Window::at(0);
        for i in 0..1000u64 {
            w.add(i * MS);
        }
        assert_eq!(w.rate(999 * MS), 1000);
        // Half a second later half of the previous window is still inside.
        w.roll(1500 * MS);
        assert_eq!(w.rate(1500 * MS), 500);
        assert_eq!(w.rate(2000 * MS), 0);
        w.roll(5000 * MS);
        assert_eq!(w.rate(5000 * MS), 0);
        // A clock that goes back stays in the window it is in.
        w.add(10);
        assert_eq!(w.rate(5000 * MS), 1);
    }

    #[test]
    fn gcra_admits_its_burst_then_its_rate() {
        let g = Gcra::new(100, 10);
        let mut tat = 0;
        let burst = (0..50).filter(|_| g.admit(&mut tat, 1_000 * MS)).count();
        assert_eq!(burst, 10);
        // One second at 10 000 attempts per second: 100 more.
        let later = (0..10_000u64).filter(|i| g.admit(&mut tat, 1_000 * MS + i * 100_000)).count();
        assert!((99..=101).contains(&later), "{later}");
        let none = Gcra::new(0, 10);
        assert!(!none.admit(&mut 0, 0));
    }

    fn flood(det: &mut SynFlood, from: u64, n: u64, per_s: u64) -> (Vec<Finding>, u64) {
        let (mut found, mut over) = (Vec::new(), 0);
        for i in 0..n {
            let j = det.syn(1, a(i as u32 + 1000), a(2), 80, from + i * WINDOW_NS / per_s);
            over += u64::from(j.over);
            found.extend(j.finding);
        }
        (found, over)
    }

    #[test]
    fn spoofed_syn_flood_is_found_once_and_only_the_excess_is_over() {
        let mut det = SynFlood::new(&SynFloodConfig::default());
        // 5000 SYN/s from 10 000 sources for two seconds.
        let (found, over) = flood(&mut det, 0, 10_000, 5000);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = found[0];
        assert_eq!((f.id, f.dst, f.port, f.limit), (ThreatId::TcpSynFlood, a(2), 80, 1000));
        assert!(f.value >= 1000);
        // It started after ~1000 SYNs; from then on 100 burst + 100/s pass (~2 s of flood).
        let admitted = 10_000 - over;
        assert!((1000..=1350).contains(&admitted), "admitted {admitted}");
        assert!(det.flooded(1, a(2), 80));
        assert!(!det.flooded(1, a(2), 81));
        assert_eq!(det.stats().episodes, 1);
        // Another port of the same server is another resource.
        assert!(!det.syn(1, a(9), a(2), 81, 2 * WINDOW_NS).over);
        // The flood stops: a second later a SYN is judged normally and the flood is over.
        let j = det.syn(1, a(7), a(2), 80, 4 * WINDOW_NS);
        assert!(!j.over && j.finding.is_none());
        assert!(!det.flooded(1, a(2), 80));
        // A new flood is a new episode.
        let (found, _) = flood(&mut det, 10 * WINDOW_NS, 3000, 5000);
        assert_eq!(found.len(), 1);
        assert_eq!(det.stats().episodes, 2);
    }

    #[test]
    fn a_busy_server_whose_handshakes_complete_is_not_flooded() {
        let mut det = SynFlood::new(&SynFloodConfig::default());
        for i in 0..20_000u64 {
            let now = i * WINDOW_NS / 10_000;
            let c = a(i as u32 % 50 + 100);
            let j = det.syn(1, c, a(2), 80, now);
            assert!(!j.over && j.finding.is_none(), "{i}");
            det.handshake_done(1, c, a(2), 80, now + 100_000);
        }
        assert_eq!(det.stats().episodes, 0);
        // With the handshake check off the same load is a flood.
        let mut det = SynFlood::new(&SynFloodConfig { min_handshake_pct: 0, ..SynFloodConfig::default() });
        let (found, _) = flood(&mut det, 0, 2000, 10_000);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_proven_client_connects_during_a_flood_and_cannot_flood_itself() {
        let mut det = SynFlood::new(&SynFloodConfig::default());
        let client = a(77);
        assert!(!det.syn(1, client, a(2), 80, 0).over);
        det.handshake_done(1, client, a(2), 80, MS);
        // A flood of 20 000 SYN/s for 3 s; the client connects once every 100 ms meanwhile.
        let mut client_over = 0;
        let mut over = 0;
        for i in 0..60_000u64 {
            let now = WINDOW_NS + i * 50_000;
            over += u64::from(det.syn(1, a(i as u32 + 5000), a(2), 80, now).over);
            if i % 2000 == 0 {
                client_over += u64::from(det.syn(1, client, a(2), 80, now).over);
            }
        }
        assert_eq!(client_over, 0);
        // ~1000 SYNs before the flood is found, then 100 + 100/s pass: ~58 600 over.
        assert!(over > 58_000, "{over}");
        assert!(det.stats().proven_admitted >= 25);
        // The proven client itself sending 1000 SYN/s gets its 100/s (plus its burst).
        let mut admitted = 0;
        for i in 0..1000u64 {
            let now = 4 * WINDOW_NS + i * MS;
            det.syn(1, a(i as u32 + 90_000), a(2), 80, now); // the flood goes on
            admitted += u64::from(!det.syn(1, client, a(2), 80, now).over);
        }
        assert!((100..=210).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_flooded_destination_is_never_evicted_and_full_sets_are_counted() {
        // One set of 8 ways.
        let cfg = SynFloodConfig { servers: 8, ..SynFloodConfig::default() };
        let mut det = SynFlood::new(&cfg);
        flood(&mut det, 0, 2000, 10_000);
        assert!(det.flooded(1, a(2), 80));
        // A scan over 5000 other ports churns the other seven ways.
        for p in 0..5000u16 {
            det.syn(1, a(3), a(2), 1000 + p, WINDOW_NS / 5 + u64::from(p) * 1000);
        }
        assert!(det.flooded(1, a(2), 80));
        let s = det.stats();
        assert!(s.evictions >= 4990 && s.saturated > 0, "{s:?}");
        // Eight floods fill the set: a ninth destination is admitted untracked.
        for port in 1..8u16 {
            for i in 0..2000u64 {
                det.syn(1, a(i as u32 + 10), a(2), 20_000 + port, WINDOW_NS + i * 50_000);
            }
        }
        let j = det.syn(1, a(5), a(9), 443, WINDOW_NS + 100 * MS);
        assert_eq!(j, Judgement::default());
        assert_eq!(det.stats().untracked, 1);
    }

    #[test]
    fn icmp_flood_keeps_pingers_answered_before_it_and_not_others() {
        let mut det = IcmpFlood::new(&IcmpFloodConfig::default());
        let (monitor, flooder, dst) = (a(10), a(11), a(2));
        // The monitor pings once a second and is answered.
        for s in 0..3u64 {
            assert!(!det.echo_request(1, monitor, dst, s * WINDOW_NS).over);
            det.echo_reply(1, dst, monitor, s * WINDOW_NS + MS);
        }
        // ping -f: 10 000 requests/s, each answered, for two seconds.
        let mut found = Vec::new();
        let mut over = 0;
        let mut monitor_over = 0;
        for i in 0..20_000u64 {
            let now = 3 * WINDOW_NS + i * 100_000;
            let j = det.echo_request(1, flooder, dst, now);
            found.extend(j.finding);
            over += u64::from(j.over);
            if !j.over {
                det.echo_reply(1, dst, flooder, now + 50_000);
            }
            if i % 10_000 == 0 {
                monitor_over += u64::from(det.echo_request(1, monitor, dst, now).over);
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].id, found[0].reason, found[0].limit), (ThreatId::IcmpFlood, "echo_request_rate", 100));
        assert_eq!(monitor_over, 0);
        // The flooder was answered only before the flood, and after it started only from the
        // shared 10/s: its own proof dates from before, so it keeps 10/s (+ burst) of its own.
        let admitted = 20_000 - over;
        assert!((100..=150).contains(&admitted), "admitted {admitted}");
        assert!(det.flooded(1, dst));
        // IPv6 is the same.
        let v6 = Addr::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let n = (0..500u64).filter_map(|i| det.echo_request(1, flooder, v6, i * MS).finding).count();
        assert_eq!(n, 1);
    }

    #[test]
    fn zero_sized_and_extreme_configs_do_not_panic() {
        let cfg = SynFloodConfig {
            rate: 0,
            end_rate: u32::MAX,
            min_handshake_pct: 255,
            allowed_rate: u32::MAX,
            allowed_burst: 0,
            proven_rate: 0,
            proven_burst: u32::MAX,
            proven_ttl_s: u32::MAX,
            servers: 0,
            proven: 0,
        };
        let mut det = SynFlood::new(&cfg);
        for now in [u64::MAX, 0, 5, u64::MAX - 1, 1 << 40] {
            det.handshake_done(0, a(1), a(2), 0, now);
            let _ = det.syn(0, a(1), a(2), 0, now);
        }
        let mut det = IcmpFlood::new(&IcmpFloodConfig { destinations: 0, proven: 0, ..IcmpFloodConfig::default() });
        for now in [u64::MAX, 0, 3] {
            det.echo_reply(0, a(2), a(1), now);
            let _ = det.echo_request(0, a(1), a(2), now);
        }
    }
}
