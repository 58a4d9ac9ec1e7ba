//! The inspection pipeline shared by the AF_XDP workers and `warden replay`: decode a frame,
//! find or create its session, account it, and return a [`Verdict`].
//!
//! The pipeline never knows where frames come from (the NeuVector `dp` shape: I/O backends call
//! into inspection, never the reverse). It allocates nothing per frame.
//!
//! IP fragments go to reassembly first ([`crate::defrag`]): the caller holds each fragment
//! frame under a token ([`Verdict::Hold`]), the complete datagram is decided and inspected
//! once, and the held frames come back together with one verdict through
//! [`Inspector::releases`].

use std::sync::Arc;

use crate::detect::{Action, ThreatId};
use crate::threat::event::ThreatHit;
use crate::threat::Context as ThreatContext;
use crate::app::engine::{AppState, Engine, EngineConfig};
use crate::app::App;
use crate::defrag::{Defrag, DefragConfig, DefragStats, Failure, Push, Releases, MAX_ASSEMBLED};
use crate::enforce::{Hits, PolicyView};
use crate::exception::{strictest, ExceptionPolicy, ExceptionReason};
use crate::expect::{ExpectTable, Expectation};
use crate::flow::{End, FlowKey};
use crate::names::{NameBuf, NameConfig, NameTable};
use crate::normalize::{Anomaly, Checksums, InvalidAction, Normalization, UrgentPolicy};
use crate::origin::{Origins, NO_SLOT};
use crate::policy::{CompiledPolicy, Facts, Mode, PolicyVerdict};
use crate::session::{Dir, SessionSnapshot, SessionTable, Timeouts, NO_APP};
use crate::wire::{self, Frame, Malformed, L4};

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on the peer interface.
    Forward,
    /// Do not transmit.
    Drop(DropReason),
    /// Do not transmit, and end the TCP session at both ends with resets built from this frame
    /// ([`crate::rst::resets`]); counted as [`DropReason::PolicyDenied`].
    Reset,
    /// An IP fragment: keep the frame (it is part of the reassembly budget) until
    /// [`Inspector::releases`] hands its token back with the verdict of its whole datagram.
    Hold,
}

/// Why a frame was dropped; counted per interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The frame could not be decoded and the malformed policy is `drop`.
    Malformed = 0,
    /// The tx ring of the peer interface had no room.
    TxRingFull = 1,
    /// No free UMEM frame for a frame handed over from another worker.
    NoFrame = 2,
    /// The session is denied by policy (protect mode), or dropped by its exception policy.
    PolicyDenied = 3,
    /// The frame claims a workload's address (or a session direction) from a side or MAC the
    /// workload does not send from (protect mode).
    Spoofed = 4,
    /// An ICMP error failing its checks, or a redirect, to a protect-mode workload
    /// ([`crate::icmp`]).
    Icmp = 5,
    /// A new flow found the session table full of established TCP sessions (none evictable,
    /// see [`crate::session::EvictClass`]): it cannot be tracked, so it is not forwarded.
    SessionTableFull = 6,
    /// A frame the receiving host would drop or ignore (bad checksum, TCP segment outside
    /// what the receiver accepts, retransmission differing from what was inspected), to a
    /// protect-mode session or workload ([`crate::normalize`]).
    Normalization = 7,
    /// A threat whose action is `drop` or `reset` in protect mode ([`crate::threat`]): the
    /// offending frame, the frames of a session the threat blocked, a flood's excess.
    Threat = 8,
}

impl DropReason {
    /// All reasons, for counter tables indexed by `self as usize`.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::TxRingFull,
        DropReason::NoFrame,
        DropReason::PolicyDenied,
        DropReason::Spoofed,
        DropReason::Icmp,
        DropReason::SessionTableFull,
        DropReason::Normalization,
        DropReason::Threat,
    ];

    /// Stable snake_case name used in counters.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::NoFrame => "no_frame",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::Spoofed => "spoofed",
            DropReason::Icmp => "icmp_rejected",
            DropReason::SessionTableFull => "session_table_full",
            DropReason::Normalization => "normalization",
            DropReason::Threat => "threat",
        }
    }
}

/// What to do with frames that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    /// Drop them (default: an inline security device does not pass what it cannot read).
    #[default]
    Drop,
    /// Forward them uninspected.
    Forward,
}

/// Where a frame came from and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Inline pair (session zone).
    pub zone: u16,
    /// Interface slot the frame was received on.
    pub iface: u16,
    /// Unix time in ns (wall clock read once per batch, or the pcap timestamp).
    pub now_ns: u64,
    /// The segment of the packet's flows within the zone ([`FlowKey::seg`]: VLAN tags and
    /// tunnel). Set by the [`Inspector`] from the frame it decodes; callers pass 0.
    pub seg: u64,
}

impl FrameMeta {
    /// A frame received on interface slot `iface` of inline pair `zone` at `now_ns` (Unix ns).
    pub fn new(zone: u16, iface: u16, now_ns: u64) -> Self {
        FrameMeta { zone, iface, now_ns, seg: 0 }
    }

    /// The key of the flow of a packet from `src:sport` to `dst:dport` in this frame's zone
    /// and segment, and which canonical end sent it.
    #[inline]
    pub fn key(&self, proto: u8, src: crate::flow::Addr, sport: u16, dst: crate::flow::Addr, dport: u16) -> (FlowKey, End) {
        FlowKey::new_in(self.zone, self.seg, proto, src, sport, dst, dport)
    }
}

/// Pipeline counters (frames and bytes are L2 lengths without FCS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InspectStats {
    /// Frames processed.
    pub frames: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Frames that are not IPv4/IPv6 (ARP, LLDP, ...), forwarded untouched.
    pub non_ip: u64,
    /// Malformed frames by [`Malformed`] reason (index `reason as usize`).
    pub malformed: [u64; Malformed::ALL.len()],
    /// ICMP errors, redirects and echo direction ([`crate::icmp`]).
    pub icmp: crate::icmp::IcmpStats,
    /// Frames dropped because their session is denied by policy.
    pub policy_dropped: u64,
    /// Sessions ended with TCP resets by policy.
    pub policy_resets: u64,
    /// Violation/denied events lost because the event queue was full.
    pub events_dropped: u64,
    /// Frames claiming a workload's address, or a session direction, from a side or MAC it
    /// does not send from ([`crate::origin`]); dropped in protect mode.
    pub spoofed: u64,
    /// Exceptions applied to policed sessions, by [`ExceptionReason`] (index `reason as usize`).
    pub exceptions: [u64; ExceptionReason::ALL.len()],
    /// Frames not fed to state or inspection, by [`Anomaly`] (index `anomaly as usize`).
    pub anomalies: [u64; Anomaly::ALL.len()],
    /// Sessions whose SYN data the server did not take: inspection started over at ISN + 1.
    pub syn_data_resyncs: u64,
    /// Sessions picked up mid-stream whose ends the content swapped
    /// ([`crate::app::midstream`]: the guessed client was the server).
    pub midstream_flips: u64,
    /// TCP/UDP sessions whose app was decided, by [`App`] (index `app as usize`; `unknown`
    /// when detection gave up). Counted when a session's decided app changes (at most
    /// `1 + MAX_CHANGES` times per session), never per frame.
    pub apps: [u64; App::ALL.len()],
    /// Tunnel decapsulation ([`crate::tunnel`]).
    pub tunnels: crate::tunnel::TunnelStats,
}

/// Most violation/denied events queued between two worker loops.
pub const EVENT_QUEUE: usize = 4096;

/// Decode + session tracking + app detection for one core.
pub struct Inspector {
    /// The core's session table.
    pub sessions: SessionTable,
    /// The core's app detection engine.
    pub engine: Engine,
    /// Counters.
    pub stats: InspectStats,
    malformed: MalformedPolicy,
    policy: Arc<CompiledPolicy>,
    policy_gen: u32,
    /// Sessions decided per rule and per mode default, for the current policy.
    pub hits: Hits,
    /// The shadow policy evaluated beside `policy` ([`crate::shadow`]), and its generation.
    shadow: Option<Arc<CompiledPolicy>>,
    shadow_gen: u32,
    /// What the shadow would change, summed since it was loaded.
    pub shadow_diff: crate::shadow::ShadowDiff,
    /// Names DNS answers gave to addresses, per DNS client (for `fqdn` rules).
    names: Arc<NameTable>,
    /// Sessions that just became violations or denied: (slab index, session id), drained by
    /// [`Inspector::drain_events`].
    events: Vec<(u32, u64)>,
    expect: Arc<ExpectTable>,
    /// Interfaces and the workloads on their sides (anti-spoofing, interface = workload).
    origins: Origins,
    exceptions: ExceptionPolicy,
    /// IP reassembly and the frames it holds.
    defrag: Defrag,
    /// Where complete datagrams are written (capacity [`MAX_ASSEMBLED`]).
    assembly: Vec<u8>,
    /// TCP normalisation settings ([`crate::normalize`]).
    norm: Normalization,
    checksums: Checksums,
    /// The threat stage: actions, counters, merged threat events ([`crate::threat`]).
    pub threats: crate::threat::Stage,
    /// Packet clock of the last threat timer tick ([`Self::flush_threats`]).
    threat_tick_ns: u64,
    /// `[tunnels]` as a port table ([`crate::tunnel`]).
    tunnel_ports: crate::tunnel::Ports,
    /// The tunnel of the inner packet being processed (its sessions record it).
    tunnel: Option<crate::tunnel::Tunnel>,
    /// How many tunnels deep the packet being processed is.
    tunnel_depth: u8,
    /// The XDP fast path for decided flows ([`crate::fastpath`]; off unless set).
    pub fast: crate::fastpath::FastPath,
    /// Monitor mode ([`crate::monitor`]): the policy with protect mode read as alert, swapped
    /// in while frames of monitored interfaces are processed; kept in step with `policy`
    /// while this pipeline serves monitored interfaces (None otherwise, or when no workload
    /// is in protect mode).
    monitor_policy: Option<Arc<CompiledPolicy>>,
    /// This pipeline serves monitored interfaces.
    monitoring: bool,
}

/// ICMPv6 link-layer control (RFC 4861 neighbour discovery: router/neighbour solicitation and
/// advertisement; RFC 3810/2710 MLD), which policy never blocks. Redirects (137) are judged by
/// [`crate::icmp::stage`].
fn link_control(ip: &wire::Ip<'_>) -> bool {
    matches!(
        ip.l4,
        L4::Icmp {
            kind: 130..=136 | 143,
            ..
        }
    ) && ip.proto == wire::ipproto::ICMPV6
}

/// `tcp_no_client_data`: a TCP session whose server sent payload `limit_s` seconds before
/// `now_ns` and whose client never sent a byte (not judged for sessions picked up mid-stream).
/// `s`: (picked up mid-stream, its state, the client sent payload, the server's first payload
/// byte's time in Unix ns or 0).
fn no_client_data(s: (bool, crate::session::State, bool, u64), now_ns: u64, limit_s: u32) -> bool {
    let (midstream, state, client_data, server_data_ns) = s;
    // A session picked up mid-stream: its client may have spoken before Warden saw it.
    !midstream
        && matches!(state, crate::session::State::Tcp(_))
        && !client_data
        && server_data_ns != 0
        && now_ns.saturating_sub(server_data_ns) >= u64::from(limit_s) * 1_000_000_000
}

/// The session key of a decoded frame, if it has one (IP frames only), with the sending end.
#[inline]
pub fn flow_of(frame: &Frame<'_>, zone: u16) -> Option<(FlowKey, End)> {
    let ip = frame.ip.as_ref()?;
    Some(FlowKey::new(zone, ip.proto, ip.src, ip.sport, ip.dst, ip.dport))
}

impl Inspector {
    /// A pipeline with a session table of `max_sessions` entries and the default engine.
    pub fn new(max_sessions: usize, timeouts: Timeouts, malformed: MalformedPolicy) -> Self {
        Self::with_engine(max_sessions, timeouts, malformed, EngineConfig::default())
    }

    /// A pipeline with an explicitly sized engine.
    pub fn with_engine(
        max_sessions: usize,
        timeouts: Timeouts,
        malformed: MalformedPolicy,
        engine: EngineConfig,
    ) -> Self {
        Self::with_table(SessionTable::new(max_sessions, timeouts), malformed, engine)
    }

    /// A pipeline over session table `sessions` (as [`crate::config::Sessions::table`] sizes
    /// it) with an explicitly sized engine.
    pub fn with_table(mut sessions: SessionTable, malformed: MalformedPolicy, engine: EngineConfig) -> Self {
        sessions.reserve_released(engine.max_sessions);
        Inspector {
            sessions,
            engine: Engine::new(engine),
            stats: InspectStats::default(),
            malformed,
            policy: Arc::new(CompiledPolicy::empty()),
            monitor_policy: None,
            monitoring: false,
            policy_gen: 0,
            hits: Hits::default(),
            shadow: None,
            shadow_gen: 0,
            shadow_diff: crate::shadow::ShadowDiff::default(),
            names: Arc::new(NameTable::new(NameConfig::small())),
            events: Vec::with_capacity(EVENT_QUEUE),
            expect: Arc::new(ExpectTable::default()),
            origins: Origins::default(),
            exceptions: ExceptionPolicy::default(),
            defrag: Defrag::new(DefragConfig::default()),
            assembly: Vec::with_capacity(MAX_ASSEMBLED),
            norm: Normalization::default(),
            checksums: Checksums::new(Normalization::default().checksums),
            threats: crate::threat::Stage::default(),
            threat_tick_ns: 0,
            tunnel_ports: crate::tunnel::Ports::default(),
            tunnel: None,
            tunnel_depth: 0,
            fast: crate::fastpath::FastPath::default(),
        }
    }

    /// Puts decided flows on the XDP fast path through `fast` from now on
    /// ([`crate::fastpath`]).
    pub fn set_fast_path(&mut self, fast: crate::fastpath::FastPath) {
        self.sessions.reserve_fast(fast.capacity());
        self.fast = fast;
    }

    /// Takes every session off the fast path for `reason` (see [`crate::fastpath`]).
    pub fn flush_fast(&mut self, reason: crate::fastpath::RemoveReason) {
        if self.fast.active() {
            let now = crate::worker::unix_now_ns();
            self.fast.flush(&mut self.sessions, &mut self.engine, reason, now);
        }
    }

    /// Adds what the fast path forwarded to its sessions ([`crate::fastpath::FastPath::pull`];
    /// every [`crate::fastpath::PULL_EVERY`], or now with `force`).
    pub fn pull_fast(&mut self, unix_ns: u64, force: bool) {
        if self.fast.active() {
            let mono = crate::fastpath::mono_coarse_ns();
            self.fast.pull(&mut self.sessions, unix_ns, mono, force);
        }
    }

    /// Ends sessions idle past their timeout ([`SessionTable::expire`], `budget`), taking the
    /// fast path entries of those that were on it out of the kernel's map.
    pub fn expire_sessions(&mut self, now_ns: u64, budget: usize) -> usize {
        let n = self.sessions.expire(now_ns, budget);
        self.fast.settle(&mut self.sessions, now_ns);
        n
    }

    /// Applies `[tunnels]` ([`crate::tunnel`]) to packets from now on.
    pub fn set_tunnels(&mut self, cfg: &crate::tunnel::TunnelConfig) {
        self.tunnel_ports = crate::tunnel::Ports::new(cfg);
    }

    /// Applies `[normalization]` settings ([`crate::normalize`]); checksum sampling of `auto`
    /// starts over.
    pub fn set_normalization(&mut self, n: Normalization) {
        self.norm = n;
        self.checksums = Checksums::new(n.checksums);
    }

    /// The checksum policy in force: `auto` until it decided ([`crate::normalize::Checksums`]).
    pub fn checksum_policy(&self) -> crate::normalize::ChecksumPolicy {
        self.checksums.policy()
    }

    /// Puts checksum policy `p` in force from the next frame (a replay split over pipelines
    /// decides `auto` once for all of them, on the capture's first packets as one pipeline
    /// would: [`crate::replay::replay_file_threads`]).
    pub fn set_checksum_policy(&mut self, p: crate::normalize::ChecksumPolicy) {
        self.checksums = Checksums::new(p);
    }

    /// Reassembles IP fragments within `cfg` from now on (allocates the new budget). Meant for
    /// start-up: while fragments are held nothing changes and the answer is false.
    pub fn set_defrag(&mut self, cfg: DefragConfig) -> bool {
        if self.defrag.held_frames() > 0 || self.defrag.datagrams() > 0 {
            return false;
        }
        self.defrag = Defrag::new(cfg);
        true
    }

    /// Reassembly counters.
    pub fn defrag_stats(&self) -> DefragStats {
        self.defrag.stats()
    }

    /// Frames held for reassembly and now released, each datagram's with one verdict, since
    /// [`Self::clear_releases`] (or, for [`Self::process`] and [`Self::process_decoded`],
    /// since the previous call). A caller holding frames acts on them and clears them at least
    /// once per 1024 frames.
    pub fn releases(&self) -> &Releases {
        &self.defrag.releases
    }

    /// Forgets the releases the caller has acted on.
    pub fn clear_releases(&mut self) {
        self.defrag.releases.clear();
    }

    /// Fails datagrams whose reassembly timed out at `now_ns` (exception policy,
    /// [`ExceptionReason::DefragTimeout`]); their frames are in [`Self::releases`].
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    pub fn expire_fragments(&mut self, now_ns: u64) {
        if self.defrag.expire(now_ns) > 0 {
            self.settle_releases();
        }
    }

    /// Fails the datagrams received on `zone` (its pair is being removed): their frames are in
    /// [`Self::releases`], to be dropped.
    pub fn flush_fragments(&mut self, zone: u16) {
        self.defrag.flush_zone(zone);
        self.settle_releases();
    }

    /// Uses `e` as the exception policy ([`crate::exception`]) from the next frame on.
    pub fn set_exceptions(&mut self, e: ExceptionPolicy) {
        self.exceptions = e;
    }

    /// Registers inline pair `a` ⇄ `b` (slot and interface name of each side) so that frames
    /// received on them are checked against the workloads on each side ([`crate::origin`]).
    pub fn set_pair(&mut self, a: (u16, &str), b: (u16, &str)) {
        self.origins.set_pair(a, b, &self.policy);
    }

    /// Forgets the pair `slot` belongs to.
    pub fn remove_pair(&mut self, slot: u16) {
        self.origins.remove_pair(slot);
    }

    /// Enforces `policy` (generation `generation`) from the next frame on: sessions decided by
    /// an older generation are evaluated again on their next frame. Resets the hit counters.
    pub fn set_policy(&mut self, policy: Arc<CompiledPolicy>, generation: u32) {
        // Every decision behind an entry was made under the old generation: out before the
        // worker says it enforces the new one.
        self.flush_fast(crate::fastpath::RemoveReason::Policy);
        self.hits.reset(policy.rules().len(), generation);
        self.origins.apply_policy(&policy);
        self.policy = policy;
        self.policy_gen = generation;
        if self.monitoring {
            self.monitor_policy = crate::monitor::alert_only(&self.policy).map(Arc::new);
        }
    }

    /// Serves monitored interfaces from now on (or no longer): keeps the alert-mode form of
    /// the policy that [`Self::monitor_begin`] swaps in ([`crate::monitor`]).
    pub fn set_monitoring(&mut self, on: bool) {
        self.monitoring = on;
        self.monitor_policy = if on { crate::monitor::alert_only(&self.policy).map(Arc::new) } else { None };
    }

    /// Frames of monitored interfaces follow, until [`Self::monitor_end`]: the policy is read
    /// with protect mode as alert (nothing can be enforced where nothing is in the path). Two
    /// pointer swaps per batch; same generation, workloads and rules, so sessions stay
    /// consistent.
    #[inline]
    pub fn monitor_begin(&mut self) {
        if let Some(p) = self.monitor_policy.as_mut() {
            std::mem::swap(&mut self.policy, p);
        }
    }

    /// Ends what [`Self::monitor_begin`] began.
    #[inline]
    pub fn monitor_end(&mut self) {
        self.monitor_begin();
    }

    /// Generation of the enforced policy.
    pub fn policy_generation(&self) -> u32 {
        self.policy_gen
    }

    /// Evaluates `shadow` (shadow generation `generation`; None: no shadow) beside the
    /// enforced policy from the next frame on ([`crate::shadow`]); live sessions are evaluated
    /// under it on their next frame. Resets (and sizes, or frees) the diff sums.
    pub fn set_shadow(&mut self, shadow: Option<Arc<CompiledPolicy>>, generation: u32) {
        self.shadow_diff.reset(generation, shadow.is_some());
        // One state per slot while a candidate is loaded, none otherwise (outside the
        // 232-byte entry: `SessionTable::set_shadow_states`).
        self.sessions.set_shadow_states(shadow.is_some());
        self.shadow = shadow;
        self.shadow_gen = generation;
    }

    /// Generation of the shadow policy this inspector evaluates (0: never loaded).
    pub fn shadow_generation(&self) -> u32 {
        self.shadow_gen
    }

    /// The shadow policy, if one is loaded.
    pub fn shadow(&self) -> Option<&Arc<CompiledPolicy>> {
        self.shadow.as_ref()
    }

    /// The enforced policy.
    pub fn policy(&self) -> &Arc<CompiledPolicy> {
        &self.policy
    }

    /// Uses `table` for expectations (flows announced by other flows, such as TFTP transfers)
    /// instead of this pipeline's own: the daemon gives every worker the same table, since an
    /// announced flow may be owned by another worker than the flow that announced it.
    pub fn share_expectations(&mut self, table: Arc<ExpectTable>) {
        self.expect = table;
    }

    /// Uses `table` for the DNS names `fqdn` rules match instead of this pipeline's own: the
    /// daemon gives every worker the same table, since a client's DNS flow and its later
    /// connections may be owned by different workers.
    pub fn share_names(&mut self, table: Arc<NameTable>) {
        self.names = table;
    }

    /// The DNS name table this pipeline learns into and looks up.
    pub fn names(&self) -> &Arc<NameTable> {
        &self.names
    }

    /// The expectation table this pipeline registers in and looks up.
    pub fn expectations(&self) -> &Arc<ExpectTable> {
        &self.expect
    }

    /// Processes one raw frame that the caller does not keep: a fragment's frame is "held"
    /// under token 0 and releases from before this call are forgotten (for callers that only
    /// count: tests, fuzzing). Callers that forward frames use [`Self::process_frame`].
    pub fn process(&mut self, frame: &[u8], meta: FrameMeta) -> Verdict {
        self.defrag.releases.clear();
        self.process_frame(frame, meta, 0)
    }

    /// Processes one raw frame; an IP fragment is held by the caller under `token`
    /// ([`Verdict::Hold`], then [`Self::releases`]).
    pub fn process_frame(&mut self, frame: &[u8], meta: FrameMeta, token: u64) -> Verdict {
        match wire::decode(frame) {
            Ok(f) => self.process_decoded_frame(&f, meta, token),
            Err(m) => self.malformed(m, frame, meta),
        }
    }

    /// Counts a frame that failed to decode, reports it as `bad_packet` (reason: the decode
    /// error; no flow, so no workload's mode: the `[dataplane] malformed` policy decides) and
    /// applies the malformed policy.
    pub fn malformed(&mut self, why: Malformed, frame: &[u8], meta: FrameMeta) -> Verdict {
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        self.stats.malformed[why as usize] += 1;
        let unspecified = (crate::flow::Addr([0; 16]), 0);
        let ctx = ThreatContext {
            frame,
            zone: meta.zone,
            proto: 0,
            client: unspecified,
            server: unspecified,
            workloads: [None, None],
            session: None,
            mode: None,
            now_ns: meta.now_ns,
        };
        self.threats.raise(ThreatId::BadPacket, None, why.as_str(), &[], &ctx);
        self.malformed_verdict()
    }

    fn malformed_verdict(&self) -> Verdict {
        match self.malformed {
            MalformedPolicy::Drop => Verdict::Drop(DropReason::Malformed),
            MalformedPolicy::Forward => Verdict::Forward,
        }
    }

    /// [`Self::process_decoded`] for a frame the caller keeps: an IP fragment is held under
    /// `token` ([`Verdict::Hold`]); its length is `f.raw.len()`.
    pub fn process_decoded_frame(&mut self, f: &Frame<'_>, meta: FrameMeta, token: u64) -> Verdict {
        let len = f.raw.len() as u32;
        self.stats.frames += 1;
        self.stats.bytes += u64::from(len);
        if let Some(v) = self.header_checksum(f, meta) {
            return v;
        }
        if f.ip.as_ref().is_some_and(|ip| ip.frag.is_some()) {
            return self.fragment(f, len, meta, token);
        }
        self.pipeline(f, len, meta)
    }

    /// Reassembly of fragment frame `f`: held (or refused and decided alone); a datagram it
    /// completes is decided and inspected as one packet of `len` = all its frames' bytes, and
    /// its frames released with that verdict.
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn fragment(&mut self, f: &Frame<'_>, len: u32, meta: FrameMeta, token: u64) -> Verdict {
        let too_big = self.defrag.stats.too_big;
        let out = self.defrag.push(f, meta.zone, meta.iface, meta.now_ns, token, len);
        let refused = match out {
            Push::Held => None,
            Push::Complete(idx) => {
                self.reassembled(idx, meta.now_ns);
                None
            }
            Push::Refused(why) => Some(why),
        };
        self.settle_releases();
        if let (true, Some(ip)) = (self.defrag.stats.too_big > too_big, f.ip.as_ref()) {
            // A datagram past 65535 bytes: dropped whatever the action says (no host can
            // take it); reported as `ping_of_death`.
            let ctx = self.frame_context(f.raw, ip, meta);
            if self.threats.raise(ThreatId::PingOfDeath, None, "datagram_over_65535", &[], &ctx).blocks() {
                self.threats.count_drop(ThreatId::PingOfDeath);
            }
        }
        match (refused, f.ip.as_ref()) {
            (Some(why), Some(ip)) => self.failure_verdict(why, ip.src, ip.dst, meta.iface),
            _ => Verdict::Hold,
        }
    }

    /// Decides complete datagram `idx`: decoded from the assembly buffer and run through the
    /// pipeline once (protect mode drops datagrams whose overlapping fragments disagreed
    /// without inspecting them); its frames are released with that verdict.
    fn reassembled(&mut self, idx: u32, now_ns: u64) {
        let mut buf = std::mem::take(&mut self.assembly);
        let a = self.defrag.assemble(idx, &mut buf);
        let mut resets = None;
        let verdict = match wire::decode(&buf) {
            Ok(f) if f.ip.as_ref().is_some_and(|ip| ip.frag.is_none()) => {
                if let (true, Some(ip)) = (a.conflict, f.ip.as_ref()) {
                    // Overlapping fragments that disagree: reported as `ip_teardrop`; in
                    // protect mode the datagram is dropped uninspected whatever the action
                    // (what the host reads cannot be known).
                    let meta = FrameMeta::new(a.zone, a.iface, now_ns);
                    let ctx = self.frame_context(&buf, ip, meta);
                    if self.threats.raise(ThreatId::IpTeardrop, None, "overlap_differs", &[], &ctx).blocks() {
                        self.threats.count_drop(ThreatId::IpTeardrop);
                    }
                }
                if a.conflict && self.mode_of(a.src, a.dst, a.iface) == Some(Mode::Protect) {
                    self.stats.policy_dropped += 1;
                    Verdict::Drop(DropReason::PolicyDenied)
                } else {
                    let meta = FrameMeta::new(a.zone, a.iface, now_ns);
                    let v = self.pipeline(&f, a.frame_bytes, meta);
                    if v == Verdict::Reset {
                        resets = crate::rst::resets(&buf, &f);
                    }
                    v
                }
            }
            // A Fragment header inside the reassembled datagram (nested fragmentation): no
            // sender makes it; the walk stops there.
            Ok(_) => {
                self.stats.malformed[Malformed::Ipv6ExtHeader as usize] += 1;
                self.malformed_verdict()
            }
            Err(m) => {
                self.stats.malformed[m as usize] += 1;
                self.malformed_verdict()
            }
        };
        self.defrag.release(idx, verdict, resets);
        self.assembly = buf;
    }

    /// Gives failed datagrams in the releases their verdict.
    fn settle_releases(&mut self) {
        let mut rel = std::mem::replace(&mut self.defrag.releases, Releases::empty());
        for r in rel.undecided() {
            let why = r.failure.unwrap_or(Failure::Flushed);
            r.verdict = self.failure_verdict(why, r.src, r.dst, r.iface);
        }
        self.defrag.releases = rel;
    }

    /// The verdict for a datagram (or fragment) that failed reassembly: malformed ones per the
    /// malformed policy, too-big ones dropped; for lack of room or time, the exception policy
    /// of the strictest workload end (forwarded when neither end is a workload).
    fn failure_verdict(&mut self, why: Failure, src: crate::flow::Addr, dst: crate::flow::Addr, iface: u16) -> Verdict {
        let reason = match why {
            Failure::Malformed => return self.malformed_verdict(),
            Failure::TooBig => return Verdict::Drop(DropReason::Malformed),
            Failure::Flushed => return Verdict::Drop(DropReason::NoFrame),
            Failure::Full => ExceptionReason::DefragFull,
            Failure::Timeout => ExceptionReason::DefragTimeout,
        };
        self.defrag.stats.exceptions += 1;
        let Some(mode) = self.mode_of(src, dst, iface) else { return Verdict::Forward };
        self.stats.exceptions[reason as usize] += 1;
        match self.exceptions.action(reason, mode) {
            crate::exception::ExceptionAction::DropFlow => {
                self.stats.policy_dropped += 1;
                Verdict::Drop(DropReason::PolicyDenied)
            }
            _ => Verdict::Forward,
        }
    }

    /// The mode of the strictest workload end of a packet from `src` to `dst` received on
    /// `iface` (ends known from the interface first, as for sessions); `None` when neither end
    /// is a workload.
    fn mode_of(&self, src: crate::flow::Addr, dst: crate::flow::Addr, iface: u16) -> Option<Mode> {
        self.mode_of_ends(self.workloads_of(src, dst, iface))
    }

    /// The workloads at the sending and receiving end of a packet from `src` to `dst` received
    /// on `iface`: from the interface first, else by address.
    fn workloads_of(&self, src: crate::flow::Addr, dst: crate::flow::Addr, iface: u16) -> [Option<crate::policy::WorkloadIdx>; 2] {
        let ends = self.origins.ends(iface);
        let n = self.policy.workloads().len();
        let valid = |w: Option<crate::policy::WorkloadIdx>| w.filter(|w| w.index() < n);
        [
            valid(ends.client).or_else(|| self.policy.workload_of(src.ip())),
            valid(ends.server).or_else(|| self.policy.workload_of(dst.ip())),
        ]
    }

    /// The mode of the strictest of two workload ends.
    fn mode_of_ends(&self, ends: [Option<crate::policy::WorkloadIdx>; 2]) -> Option<Mode> {
        let mode = |w: Option<crate::policy::WorkloadIdx>| w.map(|w| self.policy.workload_mode(w));
        strictest(mode(ends[0]), mode(ends[1]))
    }

    /// Processes a frame already decoded (the worker decodes once to pick the owning worker).
    ///
    /// Stages, in order: non-IP frames pass; ICMP errors follow the session they quote;
    /// anti-spoofing ([`crate::origin`]) before any session is touched; the session is found or
    /// created; a new session gets its L3/L4 verdict (and, if picked up mid-stream, its
    /// exception policy); TCP/UDP payload goes to the streams and the app engine; the verdict
    /// is settled again when what it depends on changed. Frames of a session that are not
    /// forwarded are counted in its `dropped_*` counters.
    ///
    /// An IP fragment is held under token 0 and releases from before this call are forgotten,
    /// as with [`Self::process`]; callers that keep frames use [`Self::process_decoded_frame`].
    pub fn process_decoded(&mut self, f: &Frame<'_>, len: u32, meta: FrameMeta) -> Verdict {
        self.defrag.releases.clear();
        self.stats.frames += 1;
        self.stats.bytes += u64::from(len);
        if let Some(v) = self.header_checksum(f, meta) {
            return v;
        }
        if f.ip.as_ref().is_some_and(|ip| ip.frag.is_some()) {
            return self.fragment(f, len, meta, 0);
        }
        self.pipeline(f, len, meta)
    }

    /// A frame whose IPv4 header checksum fails (each fragment's own, before reassembly):
    /// the host drops it, so nothing reads it ([`crate::normalize`]).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn header_checksum(&mut self, f: &Frame<'_>, meta: FrameMeta) -> Option<Verdict> {
        let ip = f.ip.as_ref()?;
        if ip.version != 4 || !self.checksums.active() {
            return None;
        }
        let ok = crate::checksum::ipv4_header_ok(f);
        if !self.checksums.judge(ok) {
            return None;
        }
        Some(self.unread_packet(ip, meta).0)
    }

    /// A packet nothing reads (bad checksum): counted (on its session too, if it has one) and
    /// forwarded, or dropped when the session, or else the strictest workload end, is in
    /// protect mode. Also returns the packet's session (slab index, direction), if any.
    fn unread_packet(&mut self, ip: &wire::Ip<'_>, meta: FrameMeta) -> (Verdict, Option<(u32, Dir)>) {
        self.stats.anomalies[Anomaly::BadChecksum as usize] += 1;
        let (key, end) = meta.key(ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
        let session = self.sessions.find(&key, end);
        let protect = match session {
            Some((idx, _)) => {
                self.sessions.mark_anomaly(idx, Anomaly::BadChecksum);
                let p = self.sessions.get(idx).policy;
                p.mode == Some(Mode::Protect) || p.blocked
            }
            None => self.mode_of(ip.src, ip.dst, meta.iface) == Some(Mode::Protect),
        };
        (self.anomaly_verdict(protect), session)
    }

    /// The verdict for a frame with an anomaly ([`crate::normalize`]).
    fn anomaly_verdict(&mut self, protect: bool) -> Verdict {
        if protect && self.norm.invalid == InvalidAction::Drop {
            Verdict::Drop(DropReason::Normalization)
        } else {
            Verdict::Forward
        }
    }

    /// The pipeline for a decoded, not fragmented packet (a frame or a reassembled datagram)
    /// of `len` bytes: the packet as one of its own flow, then, when it carries a tunnel and
    /// was forwarded, the inner packet as one of the inner flow ([`Self::tunnelled`]).
    fn pipeline(&mut self, f: &Frame<'_>, len: u32, mut meta: FrameMeta) -> Verdict {
        if self.tunnel_depth == 0 {
            meta.seg = f.vlan_segment();
        }
        let (v, carrier) = self.packet(f, len, meta);
        match (v, carrier, f.ip.as_ref()) {
            (Verdict::Forward, Some(carrier), Some(ip)) => match crate::tunnel::decap(f, ip, &self.tunnel_ports) {
                crate::tunnel::Decap::No => v,
                crate::tunnel::Decap::Inner(t, inner) => self.tunnelled(carrier, len, &t, &inner, meta),
                crate::tunnel::Decap::Malformed(t, why) => {
                    self.sessions.get_mut(carrier.0).set_carrier(t.kind);
                    self.stats.tunnels.malformed += 1;
                    self.stats.malformed[why as usize] += 1;
                    let v = self.malformed_verdict();
                    if v != Verdict::Forward {
                        self.sessions.count_dropped(carrier.0, carrier.1, len);
                    }
                    v
                }
            },
            _ => v,
        }
    }

    /// The inner packet `inner` of tunnel `t`, carried by a forwarded packet of session
    /// `carrier`: a packet of its own flow, keyed in the zone and the tunnel's segment
    /// ([`crate::tunnel::Tunnel::segment`]), decided by the whole pipeline (a tunnel inside it
    /// too, up to `[tunnels] max_depth`). An inner packet nested deeper, or an inner IP
    /// fragment (not reassembled inside a tunnel), is not inspected: the exception policy of
    /// the strictest workload end, outer or inner, decides it (`tunnel_uninspected`). A
    /// dropped inner packet is counted dropped on the carrier session too.
    fn tunnelled(&mut self, carrier: (u32, Dir), outer_len: u32, t: &crate::tunnel::Tunnel, inner: &Frame<'_>, meta: FrameMeta) -> Verdict {
        self.sessions.get_mut(carrier.0).set_carrier(t.kind);
        let len = inner.raw.len() as u32;
        let Some(ip) = inner.ip.as_ref() else {
            self.stats.tunnels.decapsulated[t.kind.index()] += 1;
            self.stats.non_ip += 1;
            return Verdict::Forward;
        };
        if self.tunnel_depth >= self.tunnel_ports.max_depth || ip.frag.is_some() {
            if ip.frag.is_some() {
                self.stats.tunnels.inner_fragments += 1;
            } else {
                self.stats.tunnels.too_deep += 1;
            }
            let mode = strictest(self.mode_of(t.outer_src, t.outer_dst, meta.iface), self.mode_of(ip.src, ip.dst, meta.iface));
            let Some(mode) = mode else { return Verdict::Forward };
            let reason = ExceptionReason::TunnelUninspected;
            self.stats.exceptions[reason as usize] += 1;
            if self.exceptions.action(reason, mode) != crate::exception::ExceptionAction::DropFlow {
                return Verdict::Forward;
            }
            self.stats.policy_dropped += 1;
            self.sessions.count_dropped(carrier.0, carrier.1, outer_len);
            return Verdict::Drop(DropReason::PolicyDenied);
        }
        self.stats.tunnels.decapsulated[t.kind.index()] += 1;
        if let Some(v) = self.header_checksum(inner, meta) {
            if v != Verdict::Forward {
                self.sessions.count_dropped(carrier.0, carrier.1, outer_len);
            }
            return v;
        }
        let own = t.segment() | inner.vlan_segment();
        let seg = if self.tunnel_depth == 0 && meta.seg == 0 { own } else { own ^ meta.seg.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15) };
        let outer = self.tunnel.replace(*t);
        self.tunnel_depth += 1;
        let v = self.pipeline(inner, len, FrameMeta { seg, ..meta });
        self.tunnel_depth -= 1;
        self.tunnel = outer;
        if v != Verdict::Forward {
            self.sessions.count_dropped(carrier.0, carrier.1, outer_len);
        }
        v
    }

    /// One packet through the stages as a packet of its own flow: the verdict, and the
    /// session that read it (`None` when the packet was not read as its session's: not IP,
    /// spoofed, a bad checksum, an ICMP error, a threat, no room, a TCP anomaly).
    fn packet(&mut self, f: &Frame<'_>, len: u32, meta: FrameMeta) -> (Verdict, Option<(u32, Dir)>) {
        let Some(ip) = f.ip.as_ref() else {
            self.stats.non_ip += 1;
            return (Verdict::Forward, None);
        };
        let (key, end) = meta.key(ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
        if self.fast.active() {
            self.fast_frame(f, ip, &key, end, meta);
        }
        if let Some(v) = self.check_origin(f, ip, &key, end, len, meta) {
            return (v, None);
        }
        if self.checksums.active() && !matches!(ip.l4, L4::Other) {
            let ok = crate::checksum::transport_ok(ip).is_ok();
            if self.checksums.judge(ok) {
                let (v, session) = self.unread_packet(ip, meta);
                if let (Some((idx, dir)), true) = (session, v != Verdict::Forward) {
                    self.sessions.count_rejected(idx, dir, len);
                }
                return (v, None);
            }
        }
        if let Some(v) = crate::icmp::stage(&mut self.sessions, &self.policy, &mut self.stats, ip, len, meta) {
            return (v, None);
        }
        if let Some(v) = self.frame_threats(f, ip, meta) {
            return (v, None);
        }
        let tcp = crate::tcpseq::Segment::of(ip);
        let tracked = self.sessions.track(&key, end, len, tcp, meta.iface, meta.now_ns);
        if self.sessions.has_unfast() {
            // A session on the fast path evicted or replaced: its entries out of the map now.
            self.fast.settle(&mut self.sessions, meta.now_ns);
        }
        let Some(t) = tracked else {
            // Refused by a table full of established sessions (counted there).
            if link_control(ip) {
                return (Verdict::Forward, None);
            }
            return (Verdict::Drop(DropReason::SessionTableFull), None);
        };
        if t.new {
            if let Some(tun) = self.tunnel {
                self.sessions.set_tunnel(t.idx, &crate::tunnel::TunnelEnds::of(&tun, end));
            }
        }
        if let Some(a) = t.anomaly {
            // A segment the receiver drops or ignores: never inspected.
            self.stats.anomalies[a as usize] += 1;
            let p = self.sessions.get(t.idx).policy;
            let v = if p.blocked {
                // Dropped whatever it is: the session is denied.
                self.stats.policy_dropped += 1;
                Verdict::Drop(DropReason::PolicyDenied)
            } else {
                self.anomaly_verdict(p.mode == Some(Mode::Protect) && !a.host_answers())
            };
            if v != Verdict::Forward {
                self.sessions.count_dropped(t.idx, t.dir, len);
            }
            return (v, None);
        }
        let v = self.session_frame(t, end, f.raw, ip, meta);
        if v != Verdict::Forward {
            self.sessions.count_dropped(t.idx, t.dir, len);
        } else if self.fast.capacity() > 0 {
            let s = self.sessions.get(t.idx);
            let server_slot = self.origins.peer(s.client_iface);
            // A direction whose source Warden checks by MAC (an attachment's address over its
            // bridge, `Origins::spoofed`) is limited to that MAC in the kernel too.
            let (c, sv) = (s.client_end().0, s.server_end().0);
            let macs = [self.origins.checked_mac(&self.policy, s.client_iface, c), self.origins.checked_mac(&self.policy, server_slot, sv)];
            self.fast.consider(&mut self.sessions, &self.engine, t.idx, server_slot, self.policy_gen, macs);
        }
        (v, Some((t.idx, t.dir)))
    }

    /// A frame reaching user space while the fast path has entries: a frame of a session on
    /// it that the program handed up on purpose, or an ICMP error quoting one, takes that
    /// session off the fast path before anything reads the frame ([`crate::fastpath`]).
    fn fast_frame(&mut self, f: &Frame<'_>, ip: &wire::Ip<'_>, key: &FlowKey, end: End, meta: FrameMeta) {
        if let L4::Icmp { invoking: Some(_), .. } = ip.l4 {
            let quoted = crate::icmp::owner_key(f, meta.zone).and_then(|k| self.sessions.find(&k, End::Lo));
            if let Some((idx, _)) = quoted.filter(|(i, _)| self.sessions.get(*i).fast.offloaded()) {
                let reason = crate::fastpath::RemoveReason::Icmp;
                self.fast.unoffload(&mut self.sessions, &mut self.engine, idx, reason, meta.now_ns);
            }
            return;
        }
        if let Some((idx, dir)) = self.sessions.find(key, end).filter(|(i, _)| self.sessions.get(*i).fast.offloaded()) {
            self.fast.frame(&mut self.sessions, &mut self.engine, idx, dir, f.raw, meta.iface, meta.now_ns);
        }
    }

    /// Anti-spoofing: a frame of a live session must arrive on the side its direction was seen
    /// on; a frame that would open a session must not claim a workload's address from a side
    /// or MAC that workload does not send from. `Some(verdict)` stops the frame here (dropped
    /// when the workload or session is in protect mode: no session is created or touched).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn check_origin(
        &mut self,
        f: &Frame<'_>,
        ip: &wire::Ip<'_>,
        key: &FlowKey,
        end: End,
        len: u32,
        meta: FrameMeta,
    ) -> Option<Verdict> {
        if !self.origins.known(meta.iface) {
            // No interfaces (`warden replay`, or a slot not registered): a workload's `macs`
            // are all there is to check, and they hold for every frame claiming its address,
            // whether it would open a session or ride one. Such a frame belongs to no session.
            let w = self.origins.spoofed(&self.policy, meta.iface, ip.src, f.src_mac)?;
            return Some(self.spoofed_verdict(w));
        }
        match self.sessions.find(key, end) {
            Some((idx, dir)) => {
                let s = self.sessions.get(idx);
                let expected = match dir {
                    Dir::ToServer => s.client_iface,
                    Dir::ToClient if s.client_iface == NO_SLOT => NO_SLOT,
                    Dir::ToClient => self.origins.peer(s.client_iface),
                };
                // Over a bridge, the side a frame arrives on does not tell who sent it (whatever
                // is on the bridge arrives there): the source is checked as for a new session.
                if self.origins.pinned(meta.iface, expected)
                    && (!self.origins.over_bridge(meta.iface)
                        || self.origins.spoofed(&self.policy, meta.iface, ip.src, f.src_mac).is_none())
                {
                    return None;
                }
                self.stats.spoofed += 1;
                let protect = s.policy.mode == Some(Mode::Protect) || s.policy.blocked;
                if !protect {
                    return None;
                }
                self.sessions.count_rejected(idx, dir, len);
                Some(Verdict::Drop(DropReason::Spoofed))
            }
            None => {
                let w = self.origins.spoofed(&self.policy, meta.iface, ip.src, f.src_mac)?;
                Some(self.spoofed_verdict(w))
            }
        }
    }

    /// A frame spoofing workload `w` that no session takes: counted, dropped in protect mode,
    /// forwarded otherwise, and in every mode kept out of the session table, so that it cannot
    /// choose the orientation of a session (in alert mode the sender's own handshake then
    /// opens its session the right way round and is reported as what it is).
    fn spoofed_verdict(&mut self, w: crate::policy::WorkloadIdx) -> Verdict {
        self.stats.spoofed += 1;
        if self.policy.workload_mode(w) == Mode::Protect {
            Verdict::Drop(DropReason::Spoofed)
        } else {
            Verdict::Forward
        }
    }

    /// The rest of the pipeline for a frame of session `t.idx` (tracked already).
    fn session_frame(
        &mut self,
        t: crate::session::Tracked,
        end: End,
        raw: &[u8],
        ip: &wire::Ip<'_>,
        meta: FrameMeta,
    ) -> Verdict {
        if t.dir == Dir::ToServer && !t.new {
            self.sessions.note_client_iface(t.idx, meta.iface);
        }
        if link_control(ip) {
            // Neighbour discovery and MLD keep IPv6 working whatever the policy says (ARP,
            // its IPv4 counterpart, is not IP and never reaches the policy).
            return Verdict::Forward;
        }
        // A flow another flow announced (a TFTP transfer) takes its client from the announcement
        // before anything is decided about it.
        let related = match ip.l4 {
            L4::Udp if t.new => self.expect.take(&self.sessions.get(t.idx).key, meta.now_ns),
            _ => None,
        };
        if let Some((_, client)) = related {
            self.sessions.set_client(t.idx, client);
        }
        if t.new && self.sessions.get(t.idx).client_iface == NO_SLOT && self.origins.known(meta.iface) {
            // Created by the server's frame: the client is on the other side of the pair.
            let peer = self.origins.peer(meta.iface);
            self.sessions.note_client_iface(t.idx, peer);
        }
        if t.new {
            // L3/L4 verdict on the first frame: a denied session gets no app context.
            let v = self.enforce(t.idx, true, ip, meta.now_ns);
            if v != Verdict::Forward {
                return v;
            }
        }
        if t.new {
            if let Some(v) = self.source_limit(t.idx, raw, meta.now_ns) {
                self.sessions.linger(t.idx);
                return v;
            }
        }
        if let L4::Tcp { flags, window, .. } = ip.l4 {
            self.tcp_session_threats(t, flags, window, raw, ip, meta.now_ns);
            self.source_closed(t.idx);
        }
        let mut anomaly = None;
        // Inspected unless an exception stopped it (a mid-stream pickup passed on with
        // `pass_flow` is inspected mid-stream: [`crate::exception`]).
        let inspects = self.sessions.get(t.idx).policy.exception.is_none_or(|e| e.inspects());
        if matches!(ip.l4, L4::Tcp { .. } | L4::Udp) && inspects {
            anomaly = self.inspect_payload(t.idx, t.new, end, ip, meta.now_ns, related.map(|(e, _)| e));
            // The content may have swapped a mid-stream session's ends.
            let dir = self.sessions.get(t.idx).dir_of(end);
            self.stream_exception(t.idx);
            self.learn_names(t.idx, meta.now_ns);
            self.parser_threats(t.idx, raw, meta.now_ns);
            self.cross_session_threats(t.idx, dir, raw, meta.now_ns);
            self.dns_tunnel(t.idx, raw, meta.now_ns);
        }
        let v = self.enforce(t.idx, false, ip, meta.now_ns);
        match anomaly {
            Some(a) if v == Verdict::Forward => {
                // Retransmitted bytes that differ from what was inspected (the first copy is
                // what the receiver keeps, so they were not read), or urgent data whose
                // reading depends on the application: not let through in protect.
                self.stats.anomalies[a as usize] += 1;
                self.sessions.mark_anomaly(t.idx, a);
                self.anomaly_verdict(self.protects(t.idx))
            }
            _ => v,
        }
    }

    /// True when session `idx` is in protect mode.
    fn protects(&self, idx: u32) -> bool {
        self.sessions.get(idx).policy.mode == Some(Mode::Protect)
    }

    /// The action the exception policy takes for `reason` on a session decided as `ps`
    /// (`None` when the session is not policed: inspection just stops). The mode is that of
    /// the session's strictest workload end.
    fn exception_action(
        &self,
        ps: &crate::enforce::PolicyState,
        reason: ExceptionReason,
    ) -> Option<crate::exception::ExceptionAction> {
        ps.verdict?;
        let mode = |w: Option<crate::policy::WorkloadIdx>| {
            w.filter(|w| w.index() < self.policy.workloads().len()).map(|w| self.policy.workload_mode(w))
        };
        let [cw, sw] = ps.workloads();
        let m = strictest(mode(cw), mode(sw)).or(ps.mode)?;
        Some(self.exceptions.action(reason, m))
    }

    /// Applies the exception policy for `reason` to session `idx` (once; counted).
    fn except(&mut self, idx: u32, reason: ExceptionReason) {
        let mut ps = self.sessions.get(idx).policy;
        if ps.exception.is_some() {
            return;
        }
        let action = self.exception_action(&ps, reason);
        ps.except(reason, action);
        if action.is_some() {
            self.stats.exceptions[reason as usize] += 1;
        }
        self.sessions.get_mut(idx).policy = ps;
    }

    /// After payload was fed: a stream that stopped being inspected (buffer caps, out-of-order
    /// limit) while the verdict still depends on the app is an exception.
    fn stream_exception(&mut self, idx: u32) {
        let s = self.sessions.get(idx);
        let ps = s.policy;
        if s.app_ctx == NO_APP || ps.verdict.is_none() || !(ps.pending_app || ps.app_dependent) {
            return;
        }
        if let crate::app::engine::Inspection::Bypassed(crate::app::engine::BypassReason::Stream(b)) =
            self.engine.ctx(s.app_ctx).inspection()
        {
            self.except(idx, ExceptionReason::of_stream(b));
        }
    }

    /// Evaluates the session's policy when needed (new session, newer policy, app decided or
    /// changed, no allowed app left for a pending one: [`crate::enforce::settle_pending_app`])
    /// and returns the frame's verdict. O(1) when nothing changed.
    fn enforce(&mut self, idx: u32, new: bool, ip: &wire::Ip<'_>, now_ns: u64) -> Verdict {
        let g = self.policy_gen;
        let (id, app_ctx) = {
            let s = self.sessions.get(idx);
            (s.id, s.app_ctx)
        };
        let mut ps = self.sessions.get(idx).policy;
        if ps.bypassed() {
            return match ps.threat_block {
                Some((threat, action)) => self.threat_blocked(idx, threat, action, ip),
                None => Verdict::Forward,
            };
        }
        let inspectable = matches!(ip.l4, L4::Tcp { .. } | L4::Udp);
        let app = match app_ctx {
            // The first frame of a TCP/UDP session is decided before its app context opens;
            // a session an exception passed uninspected will never know its app either (the
            // exception action decides what that means).
            NO_APP if inspectable && (new || ps.exception.is_some()) => None,
            NO_APP => Some(App::Unknown),
            // A session inspected mid-stream under its exception whose app stayed unknown: the
            // exception stands for what could not be known (its action forwards it).
            ctx => {
                let c = self.engine.ctx(ctx);
                let unknowable = c.mid.on && c.app == App::Unknown && ps.exception.is_some();
                (c.decided && !unknowable).then_some(c.app)
            }
        };
        let reeval = new || ps.generation != g || ps.app != app;
        if reeval {
            if self.policy.workloads().is_empty() && ps.verdict.is_none() {
                ps.generation = g;
            } else {
                let s = *self.sessions.get(idx);
                let (server, server_port) = s.server_end();
                let (client, server) = (s.client_end().0.ip(), server.ip());
                let mut buf = NameBuf::default();
                let names = self.names.lookup(&self.policy, s.key.zone, client, server, now_ns, &mut buf);
                let facts = Facts {
                    client,
                    server,
                    ip_proto: s.key.proto,
                    server_port,
                    app,
                    server_names: names.as_slice(),
                    client_names: &[],
                };
                let ends = self.origins.ends(s.client_iface);
                let d = self.policy.evaluate_ends(&facts, ends);
                ps.apply(&d, g);
                // k8s_external_ip_mitm (CVE-2020-8554): once per evaluation, one lookup.
                let mitm = crate::enforce::external_ip_mitm(&self.policy, &facts, &d);
                if let Some(m) = mitm.filter(|_| !s.threats.contains(ThreatId::K8sExternalIpMitm)) {
                    let policy = self.policy.clone();
                    let mut ctx = self.session_context(idx, &[], now_ns);
                    ctx.mode = ps.mode;
                    ctx.workloads = ps.workloads();
                    let label = policy.service_label(m.service).as_bytes();
                    let action = self.threats.raise(ThreatId::K8sExternalIpMitm, Some(Dir::ToServer), m.reason(), label, &ctx);
                    if action != Action::Off {
                        self.sessions.get_mut(idx).threats.insert(ThreatId::K8sExternalIpMitm);
                        self.sessions.note_threat(idx, ThreatId::K8sExternalIpMitm, m.reason());
                    }
                    if action.blocks() && ps.threat_block.is_none() {
                        ps.threat_block = Some((ThreatId::K8sExternalIpMitm, action));
                    }
                }
                // An exception stays: its action follows the (possibly new) mode.
                let reason = match ps.exception {
                    Some(e) => Some(e.reason),
                    None if new && s.midstream() && ps.verdict.is_some() => Some(ExceptionReason::Midstream),
                    None => None,
                };
                if let Some(r) = reason {
                    let action = self.exception_action(&ps, r);
                    if ps.exception.is_none() && action.is_some() {
                        self.stats.exceptions[r as usize] += 1;
                    }
                    ps.exception = None;
                    ps.except(r, action);
                }
                if !ps.pending_app && !ps.counted {
                    self.hits.count(&d);
                    ps.counted = true;
                }
            }
            if let (true, Some(a)) = (inspectable && ps.app != app, app) {
                self.stats.apps[a as usize] += 1;
            }
            ps.app = app;
        }
        let [to_server, to_client] = self.sessions.packets(idx);
        let packets = to_server.saturating_add(to_client).min(u64::from(u32::MAX)) as u32;
        if crate::enforce::settle_pending_app(&ps, &mut self.engine, app_ctx, packets) {
            // Decided `unknown` now: evaluate again (once: the app is no longer pending).
            self.sessions.get_mut(idx).policy = ps;
            return self.enforce(idx, new, ip, now_ns);
        }
        // The shadow policy, where the real one was evaluated or the shadow is newer (one
        // `Option` test per frame when none is loaded).
        if self.shadow.is_some() {
            let sh = self.sessions.shadow(idx);
            if reeval || sh.generation != self.shadow_gen || (ps.blocked && sh.pending_app()) {
                self.evaluate_shadow(idx, &ps, app, now_ns);
            }
        }
        // Events: an exception once, else a violation or denial once per verdict change.
        let alarm = matches!(ps.verdict, Some(PolicyVerdict::Violation | PolicyVerdict::Denied));
        let exception_event = ps.exception.is_some_and(|e| e.action.is_some())
            && !ps.exception_evented
            && ps.mode != Some(Mode::Learn);
        if exception_event || (alarm && !ps.pending_app && ps.evented != ps.verdict) {
            ps.evented = ps.verdict;
            ps.exception_evented |= ps.exception.is_some();
            if self.events.len() < EVENT_QUEUE {
                self.events.push((idx, id));
            } else {
                self.stats.events_dropped += 1;
            }
        }
        if let (Some((threat, action)), false) = (ps.threat_block, ps.blocked) {
            // Blocked by a threat (the policy allows it): the threat's action decides.
            self.sessions.get_mut(idx).policy = ps;
            return self.threat_blocked(idx, threat, action, ip);
        }
        // A session that forwarded frames and is now blocked is reset at both ends, once (TCP
        // only); one blocked from its first frame is silently dropped.
        let reset = ps.blocked && ps.forwarded && !ps.reset_sent && matches!(ip.l4, L4::Tcp { .. });
        ps.reset_sent |= reset;
        ps.forwarded |= !ps.blocked;
        let blocked = ps.blocked;
        self.sessions.get_mut(idx).policy = ps;
        if !blocked {
            return Verdict::Forward;
        }
        self.sessions.linger(idx);
        self.stats.policy_dropped += 1;
        if reset {
            self.stats.policy_resets += 1;
            return Verdict::Reset;
        }
        Verdict::Drop(DropReason::PolicyDenied)
    }

    /// Evaluates session `idx` (policy state `ps`, being decided) under the shadow policy with
    /// the facts the real evaluation uses (`app`: the app as the real evaluation saw it; a
    /// blocked session will never know more, so there a pending shadow takes `unknown`), and
    /// counts it in the diff once both verdicts are settled ([`crate::shadow`]).
    fn evaluate_shadow(&mut self, idx: u32, ps: &crate::enforce::PolicyState, app: Option<App>, now_ns: u64) {
        let Some(shadow) = self.shadow.clone() else { return };
        let s = *self.sessions.get(idx);
        let (server, server_port) = s.server_end();
        let (client, server) = (s.client_end().0.ip(), server.ip());
        let mut buf = NameBuf::default();
        let names = self.names.lookup(&shadow, s.key.zone, client, server, now_ns, &mut buf);
        let facts = Facts {
            client,
            server,
            ip_proto: s.key.proto,
            server_port,
            app: if ps.blocked { app.or(Some(App::Unknown)) } else { app },
            server_names: names.as_slice(),
            client_names: &[],
        };
        let d = shadow.evaluate_ends(&facts, self.origins.ends_under(s.client_iface, &shadow));
        let mut sh = self.sessions.shadow(idx);
        sh.apply(&d, self.shadow_gen);
        if ps.pending_app || d.pending_app || (ps.verdict.is_none() && d.verdict.is_none()) {
            self.sessions.set_shadow(idx, sh);
            return;
        }
        let first = !sh.compared();
        let key = (!sh.counted() && ps.verdict != d.verdict).then_some(crate::shadow::DiffKey {
            client: d.client_workload,
            server: d.server_workload,
            ip_proto: s.key.proto,
            server_port,
            verdict: ps.verdict,
            rule_id: ps.rule_id(),
            shadow_verdict: d.verdict,
            shadow_rule_id: d.rule_id,
        });
        sh.mark(true, key.is_some());
        self.sessions.set_shadow(idx, sh);
        self.shadow_diff.count(first, key, client, server);
    }

    /// The verdict for a frame of a session a threat blocked (protect mode, action `drop` or
    /// `reset`): dropped; a TCP session that forwarded frames before is reset at both ends
    /// once when the action is `reset`.
    fn threat_blocked(&mut self, idx: u32, threat: ThreatId, action: Action, ip: &wire::Ip<'_>) -> Verdict {
        let mut ps = self.sessions.get(idx).policy;
        let reset = action == Action::Reset && ps.forwarded && !ps.reset_sent && matches!(ip.l4, L4::Tcp { .. });
        ps.reset_sent |= reset;
        self.sessions.get_mut(idx).policy = ps;
        self.sessions.linger(idx);
        self.threats.count_drop(threat);
        if reset {
            self.stats.policy_resets += 1;
            return Verdict::Reset;
        }
        Verdict::Drop(DropReason::Threat)
    }

    /// Where a frame without a session (or before its session is looked at) was seen, for
    /// the threat stage: sender as client, the strictest workload end's mode.
    fn frame_context<'a>(&self, raw: &'a [u8], ip: &wire::Ip<'_>, meta: FrameMeta) -> ThreatContext<'a> {
        // The ends are looked up once; the mode follows from them (as `mode_of` does).
        let workloads = self.workloads_of(ip.src, ip.dst, meta.iface);
        ThreatContext {
            frame: raw,
            zone: meta.zone,
            proto: ip.proto,
            client: (ip.src, ip.sport),
            server: (ip.dst, ip.dport),
            workloads,
            session: None,
            mode: self.mode_of_ends(workloads),
            now_ns: meta.now_ns,
        }
    }

    /// Where a frame of session `idx` was seen, for the threat stage.
    fn session_context<'a>(&self, idx: u32, raw: &'a [u8], now_ns: u64) -> ThreatContext<'a> {
        let s = self.sessions.get(idx);
        let ps = s.policy;
        let mode = match ps.mode {
            Some(m) => Some(m),
            None => {
                let (c, sv) = (s.client_end().0, s.server_end().0);
                let iface = if s.client_iface == NO_SLOT { 0 } else { s.client_iface };
                self.mode_of(c, sv, iface)
            }
        };
        ThreatContext {
            frame: raw,
            zone: s.key.zone,
            proto: s.key.proto,
            client: s.client_end(),
            server: s.server_end(),
            workloads: ps.workloads(),
            session: Some((idx, s.id)),
            mode,
            now_ns,
        }
    }

    /// Threats judged on a TCP frame's header before it may touch a session: flag
    /// combinations no TCP sends (`bad_packet`), a tiny MSS (`tcp_small_mss`), data on a SYN
    /// without a Fast Open cookie (`tcp_syn_data`). `Some(drop)` when protect mode drops it.
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn frame_threats(&mut self, f: &Frame<'_>, ip: &wire::Ip<'_>, meta: FrameMeta) -> Option<Verdict> {
        if self.sessions.has_uncounted() {
            self.take_back_sources();
        }
        let flags = match ip.l4 {
            L4::Tcp { flags, .. } => flags,
            L4::Icmp { kind, .. } => return self.icmp_threats(f, ip, kind, meta),
            _ => return None,
        };
        let limits = self.threats.policy.limits;
        let mut found: [Option<(ThreatId, &'static str)>; 3] = [None; 3];
        if let Some(why) = crate::threat::tcp::bad_flags(flags) {
            found[0] = Some((ThreatId::BadPacket, why));
        }
        if flags & wire::tcpflag::SYN != 0 {
            if crate::threat::tcp::small_mss(flags, ip.segment, limits.min_mss).is_some() {
                found[1] = Some((ThreatId::TcpSmallMss, "syn_mss"));
            }
            if crate::threat::tcp::syn_data_without_cookie(flags, ip.segment, ip.payload) {
                found[2] = Some((ThreatId::TcpSynData, "no_fast_open_cookie"));
            }
        }
        let mut drop = None;
        if found.iter().any(Option::is_some) {
            let ctx = self.frame_context(f.raw, ip, meta);
            for (id, why) in found.into_iter().flatten() {
                if self.threats.raise(id, None, why, &[], &ctx).blocks() && drop.is_none() {
                    drop = Some(id);
                }
            }
        }
        if drop.is_none()
            && flags & (wire::tcpflag::SYN | wire::tcpflag::ACK) == wire::tcpflag::SYN
            && self.threats.enabled(ThreatId::TcpSynFlood)
        {
            let j = self.threats.syn_flood.syn(meta.zone, ip.src, ip.dst, ip.dport, meta.now_ns);
            if self.flood_verdict(ThreatId::TcpSynFlood, j, f, ip, meta) {
                drop = Some(ThreatId::TcpSynFlood);
            }
        }
        let id = drop?;
        self.threats.count_drop(id);
        Some(Verdict::Drop(DropReason::Threat))
    }

    /// A flood detector's judgement of one packet: the episode's start is raised (one key per
    /// victim: the client is left unspecified); true when protect mode drops the packet (it is
    /// over the allowed rate and the threat's action blocks).
    fn flood_verdict(&mut self, id: ThreatId, j: crate::threat::flood::Judgement, f: &Frame<'_>, ip: &wire::Ip<'_>, meta: FrameMeta) -> bool {
        if j.finding.is_none() && !j.over {
            return false;
        }
        let mut ctx = self.frame_context(f.raw, ip, meta);
        ctx.client = (crate::flow::Addr([0; 16]), 0);
        ctx.workloads[0] = None;
        if let Some(finding) = j.finding {
            self.threats.raise(id, None, finding.reason, &[], &ctx);
        }
        j.over && self.threats.action_in(id, ctx.mode).blocks()
    }

    /// ICMP echo threats: `icmp_flood` (requests to one destination over the rate; replies
    /// prove their requesters) and `icmp_tunneling` (echo data that is no ping pattern).
    fn icmp_threats(&mut self, f: &Frame<'_>, ip: &wire::Ip<'_>, kind: u8, meta: FrameMeta) -> Option<Verdict> {
        let v6 = ip.proto == wire::ipproto::ICMPV6;
        let (request, reply) = if v6 { (128, 129) } else { (8, 0) };
        if kind != request && kind != reply {
            return None;
        }
        let mut drop = None;
        if self.threats.enabled(ThreatId::IcmpFlood) {
            if kind == request {
                let j = self.threats.icmp_flood.echo_request(meta.zone, ip.src, ip.dst, meta.now_ns);
                if self.flood_verdict(ThreatId::IcmpFlood, j, f, ip, meta) {
                    drop = Some(ThreatId::IcmpFlood);
                }
            } else {
                self.threats.icmp_flood.echo_reply(meta.zone, ip.src, ip.dst, meta.now_ns);
            }
        }
        if self.threats.enabled(ThreatId::IcmpTunneling) {
            if let Some(finding) = self.threats.icmp_tunnel.observe(meta.zone, ip, meta.now_ns) {
                let mut ctx = self.frame_context(f.raw, ip, meta);
                // The requester is the client of the echo flow.
                if kind == reply {
                    std::mem::swap(&mut ctx.client, &mut ctx.server);
                    ctx.workloads.swap(0, 1);
                }
                if self.threats.raise(ThreatId::IcmpTunneling, None, finding.reason, &[], &ctx).blocks() {
                    drop = drop.or(Some(ThreatId::IcmpTunneling));
                }
            }
        }
        let id = drop?;
        self.threats.count_drop(id);
        Some(Verdict::Drop(DropReason::Threat))
    }

    /// Ends every session whose zone satisfies `pred` (shutdown, pair removal): their final
    /// records are queued (as many as the ended queue holds, the rest counted), their
    /// sources' counts taken back and their fast path entries taken out at `now_ns` (Unix ns).
    pub fn end_sessions(&mut self, pred: impl FnMut(u16) -> bool, now_ns: u64) {
        self.take_back_sources();
        let Inspector { sessions, threats, .. } = self;
        sessions.end_all(pred, |zone, client| threats.limit.close(zone, client));
        self.fast.settle(&mut self.sessions, now_ns);
    }

    /// Takes removed sessions back from their source's count (`ip_src_session_limit`).
    fn take_back_sources(&mut self) {
        let Inspector { sessions, threats, .. } = self;
        for (zone, src) in sessions.drain_uncounted() {
            threats.limit.close(zone, src);
        }
    }

    /// A new session counts toward its client's live sessions (`ip_src_session_limit`):
    /// `Some(drop)` when the client is over its limit and protect mode refuses the session
    /// (blocked from its first frame, never counted).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn source_limit(&mut self, idx: u32, raw: &[u8], now_ns: u64) -> Option<Verdict> {
        if !self.threats.enabled(ThreatId::IpSrcSessionLimit) {
            return None;
        }
        let ctx = self.session_context(idx, raw, now_ns);
        let enforce = self.threats.action_in(ThreatId::IpSrcSessionLimit, ctx.mode).blocks();
        let (zone, (client, _), (server, port)) = (ctx.zone, ctx.client, ctx.server);
        let o = self.threats.limit.open(zone, client, server, port, enforce, now_ns);
        if o.allowed {
            self.sessions.get_mut(idx).set_src_counted(true);
        }
        if let Some(finding) = o.finding {
            let mut c = ctx;
            c.server = (crate::flow::Addr([0; 16]), 0);
            c.workloads[1] = None;
            c.session = None;
            self.threats.raise(ThreatId::IpSrcSessionLimit, None, finding.reason, &[], &c);
        }
        if o.allowed {
            return None;
        }
        let action = self.threats.action_in(ThreatId::IpSrcSessionLimit, ctx.mode);
        let ps = &mut self.sessions.get_mut(idx).policy;
        ps.threat_block = Some((ThreatId::IpSrcSessionLimit, action));
        self.threats.count_drop(ThreatId::IpSrcSessionLimit);
        Some(Verdict::Drop(DropReason::Threat))
    }

    /// A counted session that closed (FIN both ways, or reset) is taken back from its
    /// client's count at once, not when it leaves the table after its linger.
    fn source_closed(&mut self, idx: u32) {
        let s = self.sessions.get(idx);
        if s.src_counted()
            && matches!(
                s.state,
                crate::session::State::Tcp(crate::session::TcpState::Closed | crate::session::TcpState::Reset)
            )
        {
            let (zone, client) = (s.key.zone, s.client_end().0);
            self.sessions.get_mut(idx).set_src_counted(false);
            self.threats.limit.close(zone, client);
        }
    }

    /// Raises session threat `id` once per session; a blocking action in protect mode blocks
    /// the session (applied by [`Self::enforce`]).
    fn session_threat(&mut self, idx: u32, id: ThreatId, dir: Option<Dir>, reason: &'static str, evidence: &[u8], raw: &[u8], now_ns: u64) {
        let s = self.sessions.get_mut(idx);
        if !s.threats.insert(id) {
            return;
        }
        self.sessions.note_threat(idx, id, reason);
        let ctx = self.session_context(idx, raw, now_ns);
        let action = self.threats.raise(id, dir, reason, evidence, &ctx);
        if action.blocks() {
            let ps = &mut self.sessions.get_mut(idx).policy;
            if ps.threat_block.is_none() {
                ps.threat_block = Some((id, action));
            }
        }
    }

    /// Threats judged on a TCP frame against its session: a SYN without ACK from the server
    /// (`tcp_split_handshake`), a tiny window in the ACK that completes the client's handshake
    /// (`tcp_small_window`), and the server talking while the client never sends
    /// (`tcp_no_client_data`, also judged when the session ends).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn tcp_session_threats(&mut self, t: crate::session::Tracked, flags: u8, window: u16, raw: &[u8], ip: &wire::Ip<'_>, now_ns: u64) {
        use wire::tcpflag::{ACK, SYN};
        let limits = self.threats.policy.limits;
        let s = self.sessions.get_mut(t.idx);
        if !ip.payload.is_empty() {
            match t.dir {
                Dir::ToServer => s.set_client_data(),
                Dir::ToClient => s.note_server_data(now_ns),
            }
        }
        let s = self.sessions.get(t.idx);
        let handshake_ack = t.dir == Dir::ToServer
            && flags & (SYN | ACK) == ACK
            && self.sessions.packets(t.idx)[Dir::ToServer as usize] == 2
            && ip.payload.is_empty()
            && s.state == crate::session::State::Tcp(crate::session::TcpState::Established);
        let (zone, scale, (c, _), (sv, sp)) = (s.key.zone, s.seq.scale(Dir::ToServer), s.client_end(), s.server_end());
        let silent = no_client_data((s.midstream(), s.state, s.client_data(), s.server_data_ns()), now_ns, limits.no_client_data_s);
        if t.dir == Dir::ToClient && flags & SYN != 0 && flags & ACK == 0 {
            self.session_threat(t.idx, ThreatId::TcpSplitHandshake, Some(Dir::ToClient), "syn_from_server", &[], raw, now_ns);
        }
        if handshake_ack {
            self.threats.syn_flood.handshake_done(zone, c, sv, sp, now_ns);
            let w = u32::from(window) << scale;
            if w < limits.min_window {
                self.session_threat(t.idx, ThreatId::TcpSmallWindow, Some(Dir::ToServer), "handshake_window", &[], raw, now_ns);
            }
        }
        if silent {
            self.session_threat(t.idx, ThreatId::TcpNoClientData, Some(Dir::ToClient), "server_first_client_silent", &[], raw, now_ns);
        }
    }

    /// After payload was fed: kinds the session's parser detected that the stage has not
    /// raised yet (one load and compare per frame when there are none).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn parser_threats(&mut self, idx: u32, raw: &[u8], now_ns: u64) {
        let ctx = self.sessions.get(idx).app_ctx;
        if ctx == NO_APP {
            return;
        }
        // A parser that recorded a threat and then rejected the stream in this feed was
        // dropped by re-detection: its threats first.
        if let Some(t) = self.engine.take_dropped_threats(ctx) {
            self.raise_parser_threats(idx, &t, raw, now_ns);
        }
        let known = self.sessions.get(idx).threats;
        let Some(t) = self.engine.state(ctx).threats() else { return };
        if t.kinds.0 & !known.0 == 0 {
            return;
        }
        let t = *t;
        self.raise_parser_threats(idx, &t, raw, now_ns);
    }

    /// Raises the kinds of a parser's `t` the session has not raised yet.
    fn raise_parser_threats(&mut self, idx: u32, t: &crate::detect::Threats, raw: &[u8], now_ns: u64) {
        let known = self.sessions.get(idx).threats;
        for id in crate::detect::ThreatSet(t.kinds.0 & !known.0).iter() {
            let (dir, reason, evidence) = match t.first {
                Some(f) if f.id == id => (f.dir, f.reason, f.evidence),
                _ => match t.others.iter().flatten().find(|o| o.0 == id) {
                    Some(&(_, d, r)) => (d, r, crate::app::Text::new()),
                    None => (Dir::ToServer, "", crate::app::Text::new()),
                },
            };
            self.session_threat(idx, id, Some(dir), reason, evidence.as_bytes(), raw, now_ns);
        }
    }

    /// Facts of the session's parser that per-core detectors add up across sessions: an HTTP
    /// request head still open (`http_slowloris`), MySQL authentication failures
    /// (`mysql_access_denied`).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn cross_session_threats(&mut self, idx: u32, dir: Dir, raw: &[u8], now_ns: u64) {
        // The fields used, not a copy of the whole session (this runs per payload frame).
        let (app_ctx, zone, id, (client, _), (server, port)) = {
            let s = self.sessions.get(idx);
            (s.app_ctx, s.key.zone, s.id, s.client_end(), s.server_end())
        };
        if app_ctx == NO_APP {
            return;
        }
        match self.engine.state_mut(app_ctx) {
            AppState::Http(h) if dir == Dir::ToServer && self.threats.enabled(ThreatId::HttpSlowloris) => {
                let head = h.awaiting_headers().then(|| h.head_bytes());
                let key = crate::detect::slowloris::ServerKey { zone, addr: server, port };
                if let Some(f) = self.threats.slowloris.observe(key, id, head, now_ns) {
                    self.slowloris_finding(f, Some(idx), raw, now_ns);
                } else if head.is_some() && self.threats.slowloris.offending(id) {
                    self.slowloris_session(idx, now_ns);
                }
            }
            AppState::Mysql(m) if self.threats.enabled(ThreatId::MysqlAccessDenied) => {
                let n = m.take_auth_failures();
                if n > 0 {
                    let key = crate::detect::auth_fail::Key { zone, client, server, port };
                    if self.threats.auth_fail.failed(key, n, now_ns).is_some() {
                        self.session_threat(idx, ThreatId::MysqlAccessDenied, Some(Dir::ToClient), "repeated_auth_failures", b"", raw, now_ns);
                    }
                }
            }
            _ => {}
        }
    }

    /// A server holds many slow request heads: raised once per finding (one key per server);
    /// in protect mode with a blocking action, the slow session at hand is blocked.
    fn slowloris_finding(&mut self, f: crate::detect::slowloris::Finding, idx: Option<u32>, raw: &[u8], now_ns: u64) {
        let live = idx.filter(|&i| self.sessions.get(i).id == f.session);
        let mut ctx = match live {
            Some(i) => self.session_context(i, raw, now_ns),
            None => ThreatContext {
                frame: &[],
                zone: f.server.zone,
                proto: wire::ipproto::TCP,
                client: (crate::flow::Addr([0; 16]), 0),
                server: (f.server.addr, f.server.port),
                workloads: [None, self.policy.workload_of(f.server.addr.ip())],
                session: None,
                mode: None,
                now_ns,
            },
        };
        ctx.client = (crate::flow::Addr([0; 16]), 0);
        ctx.workloads[0] = None;
        if ctx.mode.is_none() {
            ctx.mode = self.mode_of_ends(ctx.workloads);
        }
        let action = self.threats.raise(ThreatId::HttpSlowloris, Some(Dir::ToServer), "slow_request_heads", &[], &ctx);
        if let Some(i) = live {
            let s = self.sessions.get_mut(i);
            s.threats.insert(ThreatId::HttpSlowloris);
            if action.blocks() && s.policy.threat_block.is_none() {
                s.policy.threat_block = Some((ThreatId::HttpSlowloris, action));
            }
        }
    }

    /// A slow session of a server already found under a slowloris attack, at its next frame:
    /// the threat's action applies to it as to the session that made the finding (the finding
    /// is raised once per server; without this only that one session would be blocked and the
    /// others would keep holding the server's connections). Marked in its record; counted as
    /// a drop when blocked, not as a new detection.
    fn slowloris_session(&mut self, idx: u32, now_ns: u64) {
        let mode = self.session_context(idx, &[], now_ns).mode;
        let action = self.threats.action_in(ThreatId::HttpSlowloris, mode);
        let s = self.sessions.get_mut(idx);
        s.threats.insert(ThreatId::HttpSlowloris);
        if action.blocks() && s.policy.threat_block.is_none() {
            s.policy.threat_block = Some((ThreatId::HttpSlowloris, action));
        }
    }

    /// Ended sessions' threats judged at their end (`tcp_no_client_data` of a session that
    /// went idle), raised with no frame.
    fn ended_threats(&mut self, snaps: &mut [SessionSnapshot]) {
        let limit = self.threats.policy.limits.no_client_data_s;
        for snap in snaps {
            if snap.ended.is_some() {
                self.threats.slowloris.end(snap.session.id);
            }
            let s = &mut snap.session;
            // A session that went idle was silent until its timeout: judged as of then.
            let end = match snap.ended {
                Some(crate::session::EndReason::Idle) => u64::MAX,
                _ => s.last_ns,
            };
            if snap.ended.is_some() && !s.threats.contains(ThreatId::TcpNoClientData) && no_client_data((s.midstream, s.state, s.client_data, s.server_data_ns), end, limit) {
                let ctx = self.frame_context_of(s);
                let reason = "server_first_client_silent";
                if self.threats.raise(ThreatId::TcpNoClientData, Some(Dir::ToClient), reason, &[], &ctx) != Action::Off {
                    s.threats.insert(ThreatId::TcpNoClientData);
                    s.first_threat.get_or_insert((ThreatId::TcpNoClientData, reason));
                }
            }
        }
    }

    /// A context for an ended session (no frame, not in the table any more).
    fn frame_context_of(&self, s: &crate::session::SessionView) -> ThreatContext<'static> {
        ThreatContext {
            frame: &[],
            zone: s.key.zone,
            proto: s.key.proto,
            client: s.client_end(),
            server: s.server_end(),
            workloads: s.policy.workloads(),
            session: None,
            mode: s.policy.mode,
            now_ns: s.last_ns,
        }
    }

    /// The threat stage's timer (at most every 100 ms of packet clock, however often it is
    /// called: the worker calls it every 100 ms, replay per frame): sessions that left the
    /// table are taken back from their source's count, slow request heads are polled, pending
    /// merged threat events whose interval is over are sent.
    pub fn flush_threats(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.threat_tick_ns) < 100_000_000 {
            return;
        }
        self.threat_tick_ns = now_ns;
        if self.sessions.has_uncounted() {
            self.take_back_sources();
        }
        if let Some(f) = self.threats.slowloris.poll(now_ns) {
            self.slowloris_finding(f, None, &[], now_ns);
        }
        self.threats.flush(now_ns);
    }

    /// Moves queued threat events into `out`, at most `max`, each with a snapshot of its
    /// session when the session is still in the table; true when some are left.
    pub fn drain_threats_upto(&mut self, out: &mut Vec<(ThreatHit, Option<SessionSnapshot>)>, max: usize) -> bool {
        let mut hits = Vec::new();
        let more = self.threats.drain_upto(&mut hits, max);
        let mut snaps = Vec::new();
        for h in &hits {
            if let Some((idx, id)) = h.session {
                if self.sessions.get(idx).id == id {
                    snaps.push(SessionSnapshot { session: self.sessions.view(idx), ended: None, app: None, policy: None });
                }
            }
        }
        self.attach_views(&mut snaps, 0);
        let mut snaps = snaps.into_iter().peekable();
        for h in hits {
            let snap = match (h.session, snaps.peek()) {
                (Some((_, id)), Some(s)) if s.session.id == id => snaps.next(),
                _ => None,
            };
            out.push((h, snap));
        }
        more
    }

    /// After a frame of a DNS flow: stores the names its answers to the flow's own queries gave
    /// to addresses, under the flow's client, and counts what was refused ([`crate::names`]).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn learn_names(&mut self, idx: u32, now_ns: u64) {
        let s = self.sessions.get(idx);
        if s.app_ctx == NO_APP {
            return;
        }
        if let AppState::Dns(d) = self.engine.state_mut(s.app_ctx) {
            self.names.learn(&self.policy, s.key.zone, s.client_end().0.ip(), d, now_ns);
        }
    }

    /// After a frame of a DNS flow: the client's queries it carried go to the tunnelling
    /// detector (each once); a finding is a `dns_tunneling` threat of the session (every
    /// query of a domain found tunnelling is one, so that protect mode blocks each flow a
    /// resolver client opens per query).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn dns_tunnel(&mut self, idx: u32, raw: &[u8], now_ns: u64) {
        let (app_ctx, zone, client) = {
            let s = self.sessions.get(idx);
            (s.app_ctx, s.key.zone, s.client_end().0)
        };
        if app_ctx == NO_APP || !self.threats.enabled(ThreatId::DnsTunneling) {
            return;
        }
        let AppState::Dns(d) = self.engine.state_mut(app_ctx) else { return };
        let missed = d.queries().missed();
        if d.queries().is_empty() && missed == 0 {
            return;
        }
        let mut found: [Option<(&'static str, crate::app::Text<128>)>; crate::app::dns::MAX_SEEN] = [None; crate::app::dns::MAX_SEEN];
        for (slot, (name, qtype)) in found.iter_mut().zip(d.queries().iter()) {
            *slot = self.threats.dns_tunnel.observe(zone, client, name, qtype, now_ns).map(|f| (f.reason, f.evidence()));
        }
        d.clear_queries();
        for (reason, evidence) in found.into_iter().flatten() {
            self.session_threat(idx, ThreatId::DnsTunneling, Some(Dir::ToServer), reason, evidence.as_bytes(), raw, now_ns);
        }
        if missed > 0 {
            // More queries in one frame than the detector is handed (pipelined over TCP past
            // MAX_SEEN messages or SEEN_BYTES of names): what it did not see could carry a
            // tunnel behind checked decoys, so they are a finding of their own, not silence.
            let mut buf = [0u8; 64];
            let n = {
                use std::io::Write;
                let mut w = std::io::Cursor::new(&mut buf[..]);
                let _ = write!(w, "{missed} queries in one frame not checked");
                w.position() as usize
            };
            self.session_threat(idx, ThreatId::DnsTunneling, Some(Dir::ToServer), "queries_not_checked", &buf[..n], raw, now_ns);
        }
    }

    /// Moves snapshots of sessions that just became violations or were denied into `out` (with
    /// their app and policy views), at most [`EVENT_QUEUE`] per call.
    pub fn drain_events(&mut self, out: &mut Vec<SessionSnapshot>) {
        self.drain_events_upto(out, usize::MAX);
    }

    /// As [`Self::drain_events`], at most `max` (the newest); true when some are left.
    pub fn drain_events_upto(&mut self, out: &mut Vec<SessionSnapshot>, max: usize) -> bool {
        let from = out.len();
        let keep = self.events.len().saturating_sub(max);
        for (idx, id) in self.events.drain(keep..) {
            if self.sessions.get(idx).id == id {
                out.push(SessionSnapshot {
                    session: self.sessions.view(idx),
                    ended: None,
                    app: None,
                    policy: None,
                });
            }
        }
        self.attach_views(out, from);
        !self.events.is_empty()
    }

    /// App inspection of a TCP/UDP frame sent by canonical end `from`. A new UDP session that a
    /// request of another session announced (an entry of the shared expectation table: a TFTP
    /// transfer from the server's new port) takes that entry: its client becomes the announcing
    /// flow's client and its app context opens already decided. After the frame is fed, an
    /// announcement the parser made is registered for the related flow.
    ///
    /// TCP: the ACK lets the other direction's kept bytes go; a SYN|ACK that did not take the
    /// client's SYN data starts detection over; a RST's payload is never read (RFC 9293
    /// §3.5.3: diagnostic text, not data); SYN data starts at ISN + 1; an urgent mark takes
    /// its byte out of band ([`UrgentPolicy`]). Returns the anomaly the payload showed: bytes
    /// that differed from bytes already inspected, or an urgent mark moving an earlier one
    /// (in protect mode such a segment is not read at all; elsewhere it is read as Linux most
    /// likely reads it).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn inspect_payload(
        &mut self,
        idx: u32,
        new: bool,
        from: End,
        ip: &wire::Ip<'_>,
        now_ns: u64,
        related: Option<Expectation>,
    ) -> Option<Anomaly> {
        let server_port = self.sessions.get(idx).server_end().1;
        if new {
            // Picked up mid-stream (no SYN, first frame not a SYN|ACK, whose receiver sends the
            // stream's first bytes next): detection by framing from wherever the bytes start.
            let midstream = self.sessions.get(idx).midstream()
                && matches!(ip.l4, L4::Tcp { flags, .. } if flags & (wire::tcpflag::SYN | wire::tcpflag::ACK) != wire::tcpflag::SYN | wire::tcpflag::ACK);
            let ctx = match &related {
                Some(e) => self.engine.open_related(ip.proto, server_port, e),
                None if midstream => self.engine.open_midstream(ip.proto, server_port),
                None => self.engine.open(ip.proto, server_port),
            };
            self.sessions.get_mut(idx).app_ctx = ctx.unwrap_or(NO_APP);
            let ps = self.sessions.get(idx).policy;
            if ctx.is_none() && ps.pending_app {
                // No context left on this core and the verdict needs the app.
                self.except(idx, ExceptionReason::AppPoolFull);
            }
        }
        let s = self.sessions.get(idx);
        let ctx = s.app_ctx;
        if ctx == NO_APP {
            return None;
        }
        let dir = s.dir_of(from);
        let [to_server, to_client] = self.sessions.packets(idx);
        let packets = to_server.saturating_add(to_client).min(u64::from(u32::MAX)) as u32;
        let mut anomaly = None;
        match ip.l4 {
            L4::Tcp { seq, ack, flags, urgent, .. } => {
                use wire::tcpflag::{ACK, RST, SYN, URG};
                let syn = flags & SYN != 0;
                if syn {
                    if flags & ACK != 0
                        && dir == Dir::ToClient
                        && self.engine.tcp_syn_acked(ctx, Dir::ToServer, ack, ip.proto, server_port)
                    {
                        self.stats.syn_data_resyncs += 1;
                    }
                    self.engine.tcp_syn(ctx, dir, seq);
                }
                if flags & ACK != 0 {
                    self.engine.tcp_ack(ctx, dir.flip(), ack);
                }
                if flags & RST != 0 || ip.payload.is_empty() {
                    return None;
                }
                let data_seq = seq.wrapping_add(u32::from(syn));
                if flags & URG != 0 && self.norm.urgent == UrgentPolicy::Oob {
                    // Linux (`tcp_stdurg` 0): the urgent byte is the one before the pointer;
                    // a zero pointer marks the segment's first byte.
                    let mark = data_seq.wrapping_add(u32::from(urgent).saturating_sub(1));
                    if self.engine.tcp_urgent_moves_mark(ctx, dir, mark) {
                        if self.protects(idx) && self.norm.invalid == InvalidAction::Drop {
                            return Some(Anomaly::TcpUrgentAmbiguous);
                        }
                        anomaly = Some(Anomaly::TcpUrgentAmbiguous);
                    }
                    self.engine.tcp_urgent(ctx, dir, mark);
                }
                if self.engine.tcp_segment(ctx, dir, data_seq, ip.payload, server_port, packets) > 0 {
                    anomaly = Some(Anomaly::TcpConflict);
                }
            }
            L4::Udp => self.engine.datagram(ctx, dir, ip.payload, server_port, packets),
            _ => {}
        }
        if self.engine.take_flip(ctx) {
            self.orient_midstream(idx);
        }
        if let Some((parser, data)) = self.engine.take_related(ctx) {
            let s = self.sessions.get(idx);
            let ((client, client_port), (server, server_port)) = (s.client_end(), s.server_end());
            let e = Expectation {
                zone: s.key.zone,
                proto: s.key.proto,
                parser,
                client,
                client_port,
                server,
                server_port,
                expires_ns: 0,
                data,
            };
            self.expect.insert(&e, now_ns);
        }
        anomaly
    }

    /// The content of mid-stream session `idx` showed that the end taken for its client is the
    /// server (an HTTP response, a TDS tabular result, a Kafka response matched to a request:
    /// [`crate::app::midstream`]): its ends are swapped, once, and the policy decides again
    /// with the app (the caller's [`Self::enforce`] sees the app change). Only sessions picked up
    /// mid-stream and inspected get here: in protect mode the default exception action drops
    /// them first, so an attacker skipping the handshake cannot choose its direction.
    fn orient_midstream(&mut self, idx: u32) {
        let s = self.sessions.get(idx);
        let iface = if s.client_iface != NO_SLOT && self.origins.known(s.client_iface) {
            self.origins.peer(s.client_iface)
        } else {
            NO_SLOT
        };
        self.sessions.flip_client(idx, iface);
        self.stats.midstream_flips += 1;
    }

    /// Attaches the app and policy views to `snaps[from..]`, and returns the app contexts of
    /// ended sessions to the pool, also of those whose final record the full ended queue lost.
    fn attach_views(&mut self, snaps: &mut [SessionSnapshot], from: usize) {
        for ctx in self.sessions.drain_released() {
            self.engine.close(ctx);
        }
        for snap in &mut snaps[from..] {
            snap.policy = PolicyView::of(
                &snap.session.policy,
                &snap.session.shadow,
                &self.policy,
                self.policy_gen,
                self.shadow.as_deref(),
                self.shadow_gen,
            );
            let ctx = snap.session.app_ctx;
            if ctx == NO_APP {
                continue;
            }
            snap.app = Some(self.engine.ctx(ctx).summary());
            if snap.ended.is_some() {
                self.engine.close(ctx);
            }
        }
    }

    /// Moves report snapshots (changed sessions, then final records of ended ones, with their
    /// app view) into `out`, and returns ended sessions' app contexts to the pool.
    pub fn drain_reports(&mut self, out: &mut Vec<SessionSnapshot>) {
        let from = out.len();
        self.sessions.drain_reports(out);
        self.attach_views(out, from);
    }

    /// As [`Self::drain_reports`], at most `max` snapshots; true when some are left
    /// ([`SessionTable::drain_reports_upto`]).
    pub fn drain_reports_upto(&mut self, out: &mut Vec<SessionSnapshot>, max: usize) -> bool {
        let from = out.len();
        let more = self.sessions.drain_reports_upto(out, max);
        self.ended_threats(&mut out[from..]);
        self.attach_views(out, from);
        more
    }

    /// Moves only the final records of ended sessions into `out` (as [`Self::drain_reports`]).
    pub fn drain_ended(&mut self, out: &mut Vec<SessionSnapshot>) {
        self.drain_ended_upto(out, usize::MAX);
    }

    /// As [`Self::drain_ended`], at most `max` records; true when some are left.
    pub fn drain_ended_upto(&mut self, out: &mut Vec<SessionSnapshot>, max: usize) -> bool {
        let from = out.len();
        let more = self.sessions.drain_ended_upto(out, max);
        self.ended_threats(&mut out[from..]);
        self.attach_views(out, from);
        more
    }

    /// Snapshots of up to `limit` live sessions with their app view.
    pub fn snapshot(&mut self, limit: usize) -> Vec<SessionSnapshot> {
        let mut v = self.sessions.snapshot(limit);
        self.attach_views(&mut v, 0);
        v
    }

    /// One step of a paged walk over the live sessions, with app and policy views: see
    /// [`crate::session::SessionTable::page`] (`from` slot, at most `max` sessions, at most
    /// `scan` slots looked at; returns the next step's slot, `None` at the end).
    pub fn snapshot_page(&mut self, from: u32, max: usize, scan: usize) -> (Vec<SessionSnapshot>, Option<u32>) {
        let (mut v, next) = self.sessions.page(from, max, scan);
        self.attach_views(&mut v, 0);
        (v, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{State, TcpState};
    use crate::wire::tcpflag::*;
    use crate::wire::tests::{tcp4, udp6_ext};

    fn meta(iface: u16, now_ns: u64) -> FrameMeta {
        FrameMeta::new(0, iface, now_ns)
    }

    #[test]
    fn counts_per_direction_and_drops_malformed() {
        let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
        let syn = tcp4(&[], SYN, b"");
        assert_eq!(i.process(&syn, meta(1, 1)), Verdict::Forward);
        assert_eq!(i.process(&syn[..30], meta(1, 2)), Verdict::Drop(DropReason::Malformed));
        assert_eq!(i.stats.malformed[Malformed::Ipv4Header as usize], 1);
        let v6 = udp6_ext(b"abc");
        i.process(&v6, meta(2, 3));
        assert_eq!(i.sessions.len(), 2);
        let (k, e) = flow_of(&wire::decode(&syn).unwrap(), 0).unwrap();
        let (idx, _) = i.sessions.find(&k, e).unwrap();
        let s = i.sessions.view(idx);
        assert_eq!(s.state, State::Tcp(TcpState::SynSent));
        assert_eq!((s.packets[0], s.bytes[0]), (1, syn.len() as u64));
    }

    #[test]
    fn malformed_forward_policy() {
        let mut i = Inspector::new(4, Timeouts::default(), MalformedPolicy::Forward);
        assert_eq!(i.process(&[0u8; 5], meta(1, 1)), Verdict::Forward);
        assert_eq!(i.stats.malformed[Malformed::EthTruncated as usize], 1);
    }

    /// Runs every frame of a corpus capture through an Inspector enforcing `policy`; returns
    /// the verdicts in frame order and the final snapshots.
    fn run_policy(file: &str, policy: &str) -> (Inspector, Vec<Verdict>, Vec<SessionSnapshot>) {
        let p = crate::policy::Policy::from_toml(policy).unwrap();
        let mut i = Inspector::new(1024, Timeouts::default(), MalformedPolicy::Drop);
        i.set_policy(Arc::new(CompiledPolicy::compile(&p).unwrap()), 1);
        let f = std::fs::File::open(crate::app::testutil::corpus(file)).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut verdicts = Vec::new();
        let mut n = 0;
        while let Some(Ok(pkt)) = r.next_packet() {
            n += 1;
            verdicts.push(i.process(&pkt.data, meta(1, n)));
        }
        let mut snaps = Vec::new();
        i.drain_reports(&mut snaps);
        (i, verdicts, snaps)
    }

    const SRV: &str = "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"MODE\"\n";

    #[test]
    fn app_rule_allows_its_app_and_resets_another() {
        let allow = |app: &str| {
            SRV.replace("MODE", "protect")
                + &format!("[[rule]]\nid = 7\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\napps = [\"{app}\"]\naction = \"allow\"\n")
        };
        let (i, verdicts, snaps) = run_policy("http.pcap", &allow("http"));
        assert!(verdicts.iter().all(|v| *v == Verdict::Forward), "{verdicts:?}");
        let on80: Vec<_> = snaps.iter().filter(|s| s.session.key.hi_port == 80 || s.session.key.lo_port == 80).collect();
        assert!(!on80.is_empty());
        for s in &on80 {
            let p = s.policy.as_ref().unwrap();
            assert_eq!((p.verdict, p.rule_id), (Some(PolicyVerdict::Allowed), Some(7)));
            assert_eq!(p.workloads[1].as_deref(), Some("srv"));
        }
        assert_eq!(i.hits.rules[0], on80.len() as u64);

        // The same sessions under a rule for another app: forwarded until HTTP is detected, then
        // the detecting frame is answered with resets and nothing more passes.
        let (i, verdicts, snaps) = run_policy("http.pcap", &allow("redis"));
        let resets = verdicts.iter().filter(|v| **v == Verdict::Reset).count();
        assert_eq!(resets as u64, i.stats.policy_resets);
        assert_eq!(resets, snaps.iter().filter(|s| s.app.as_ref().is_some_and(|a| a.app == App::Http)).count());
        for s in snaps.iter().filter(|s| s.app.as_ref().is_some_and(|a| a.app == App::Http)) {
            assert!(s.session.policy.blocked && s.session.policy.reset_sent);
            assert_eq!(s.policy.as_ref().unwrap().verdict, Some(PolicyVerdict::Denied));
        }
        // Every frame after a session's reset is dropped.
        assert!(i.stats.policy_dropped >= resets as u64);
    }

    #[test]
    fn protect_drops_from_the_first_frame_and_alert_forwards_violations() {
        let (i, verdicts, snaps) = run_policy("redis.pcap", &SRV.replace("MODE", "protect"));
        let tcp: Vec<_> = snaps.iter().filter(|s| s.session.key.proto == 6).collect();
        assert!(!tcp.is_empty());
        for s in &tcp {
            assert_eq!(s.session.app_ctx, NO_APP, "a denied session got an app context");
            assert_eq!(s.policy.as_ref().unwrap().verdict, Some(PolicyVerdict::Denied));
        }
        // The capture holds what the server answered without Warden: every frame of a denied
        // session is dropped (a server frame of a session cut before it is answered with resets
        // once, as an established session would be).
        let tcp_frames: u64 = tcp.iter().map(|s| s.session.packets[0] + s.session.packets[1]).sum();
        let dropped = verdicts.iter().filter(|v| matches!(v, Verdict::Drop(DropReason::PolicyDenied) | Verdict::Reset)).count();
        assert_eq!(dropped as u64, tcp_frames);
        assert!(i.stats.policy_resets <= tcp.len() as u64);
        let mut events = Vec::new();
        let (mut i, verdicts, snaps) = run_policy("redis.pcap", &SRV.replace("MODE", "alert"));
        assert!(verdicts.iter().all(|v| *v == Verdict::Forward));
        for s in snaps.iter().filter(|s| s.session.key.proto == 6) {
            assert_eq!(s.policy.as_ref().unwrap().verdict, Some(PolicyVerdict::Violation));
        }
        i.drain_events(&mut events);
        assert_eq!(events.len(), snaps.iter().filter(|s| s.session.key.proto == 6).count());
    }

    #[test]
    fn a_new_generation_reevaluates_established_sessions() {
        let p = |mode: &str| {
            let text = SRV.replace("MODE", mode);
            Arc::new(CompiledPolicy::compile(&crate::policy::Policy::from_toml(&text).unwrap()).unwrap())
        };
        let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
        i.set_policy(p("alert"), 1);
        // Server address 198.18.0.2 is the workload: the frame goes to it.
        let syn = tcp_frame([198, 18, 0, 1], 40000, [198, 18, 0, 2], 80, SYN, 999, 0, b"");
        assert_eq!(i.process(&syn, meta(1, 1)), Verdict::Forward);
        let syn_ack = tcp_frame([198, 18, 0, 2], 80, [198, 18, 0, 1], 40000, SYN | ACK, 5000, 1000, b"");
        assert_eq!(i.process(&syn_ack, meta(2, 1)), Verdict::Forward);
        let data = tcp_frame([198, 18, 0, 1], 40000, [198, 18, 0, 2], 80, ACK | PSH, 1000, 5001, b"x");
        assert_eq!(i.process(&data, meta(1, 2)), Verdict::Forward);
        i.set_policy(p("protect"), 2);
        assert_eq!(i.process(&data, meta(1, 3)), Verdict::Reset, "established session cut with resets");
        assert_eq!(i.process(&data, meta(1, 4)), Verdict::Drop(DropReason::PolicyDenied));
        i.set_policy(p("learn"), 3);
        assert_eq!(i.process(&data, meta(1, 5)), Verdict::Forward, "learn forwards again");
        assert_eq!(i.sessions.len(), 1, "re-evaluation kept the one session");
    }

    /// The corpus TFTP capture through two pipelines that own flows by 5-tuple (`spread % 2`;
    /// workers own them by address pair, `owner_spread`, which keeps a transfer with its
    /// request unless addresses differ) and share one expectation table: every transfer flow, whichever worker
    /// owns it, is labelled tftp with its request's file, is joined to its request, and has
    /// the TFTP client as its client although the server sent its first packet.
    #[test]
    fn tftp_transfers_join_their_requests_across_workers() {
        use crate::app::App;
        let table = Arc::new(ExpectTable::default());
        let mut w: Vec<Inspector> = (0..2)
            .map(|_| {
                let mut i = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
                i.share_expectations(table.clone());
                i
            })
            .collect();
        let file = std::fs::File::open(crate::app::testutil::corpus("tftp.pcap")).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
        let mut owner_of = std::collections::BTreeMap::new();
        while let Some(Ok(pkt)) = r.next_packet() {
            let f = wire::decode(&pkt.data).unwrap();
            let (k, _) = flow_of(&f, 0).unwrap();
            let o = k.spread() as usize % 2;
            owner_of.insert((k.lo_port, k.hi_port), o);
            w[o].process_decoded(&f, pkt.data.len() as u32, meta(1, pkt.timestamp.as_nanos() as u64));
        }
        let mut recs = Vec::new();
        for (o, i) in w.iter_mut().enumerate() {
            for snap in i.snapshot(usize::MAX) {
                recs.push((o, crate::record::to_record(&snap, |_| String::new()), snap));
            }
        }
        assert_eq!(recs.len(), 10);
        let mut cross = 0;
        for (o, r, snap) in recs.iter().filter(|(_, r, _)| r.server_port != 69) {
            assert_eq!(snap.app.as_ref().unwrap().app, App::Tftp, "{r:?}");
            assert_eq!((r.client_ip.as_str(), r.server_ip.as_str()), ("198.18.0.1", "198.18.0.2"), "{r:?}");
            let l7 = r.l7.as_ref().unwrap();
            let want = format!("198.18.0.1:{} -> 198.18.0.2:69", r.client_port);
            assert_eq!(l7["request_flow"], want.as_str());
            let (ro, req, _) =
                recs.iter().find(|(_, q, _)| q.server_port == 69 && q.client_port == r.client_port).unwrap();
            assert_eq!(req.app, "tftp");
            let rl7 = req.l7.as_ref().unwrap();
            assert_eq!((&l7["file"], &l7["mode"], &l7["op"]), (&rl7["file"], &rl7["mode"], &rl7["op"]));
            // The server sent the first packet; the client's packets count as to_server.
            assert!(r.packets_to_client > 0);
            if l7["op"] == "read" && l7.get("error").is_none() {
                assert!(r.packets_to_server > 0 && r.bytes_to_client > r.bytes_to_server, "{r:?}");
            }
            cross += usize::from(o != ro);
        }
        assert!(cross > 0, "no transfer owned by another worker than its request: {owner_of:?}");
        let st = table.stats();
        assert_eq!((st.inserted, st.matched, st.replaced), (5, 5, 0));
    }

    /// A transfer arriving after its expectation expired, or without a request, stays unknown
    /// with the first sender as client; a pipeline with its own table does not see another's.
    #[test]
    fn unannounced_or_expired_transfers_stay_unknown() {
        use crate::app::App;
        let frames: Vec<(u64, Vec<u8>)> = {
            let file = std::fs::File::open(crate::app::testutil::corpus("tftp.pcap")).unwrap();
            let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
            let mut v = Vec::new();
            while let Some(Ok(p)) = r.next_packet() {
                v.push((p.timestamp.as_nanos() as u64, p.data.to_vec()));
            }
            v
        };
        // (shift of the transfers' clock, requests seen, one table for both pipelines, joined)
        for (shift, requests, shared, joined) in [
            (0, true, true, true),
            (0, false, true, false),
            (10_000_000_001, true, true, false),
            (0, true, false, false),
        ] {
            let long_udp = Timeouts { udp: u64::MAX / 4, ..Timeouts::default() };
            let mut i = Inspector::new(256, long_udp, MalformedPolicy::Drop);
            let mut j = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
            if shared {
                j.share_expectations(i.expectations().clone());
            }
            for (ts, f) in &frames {
                let d = wire::decode(f).unwrap();
                if d.ip.as_ref().is_some_and(|ip| ip.dport == 69) {
                    if requests {
                        j.process_decoded(&d, f.len() as u32, meta(1, *ts));
                    }
                } else {
                    i.process_decoded(&d, f.len() as u32, meta(1, *ts + shift));
                }
            }
            let snaps = i.snapshot(usize::MAX);
            assert_eq!(snaps.len(), 5);
            for s in snaps {
                let want = if joined { App::Tftp } else { App::Unknown };
                assert_eq!(s.app.as_ref().unwrap().app, want, "{shift} {requests} {shared}");
                let r = crate::record::to_record(&s, |_| String::new());
                let client = if joined { "198.18.0.1" } else { "198.18.0.2" };
                assert_eq!(r.client_ip, client, "unjoined: the first sender is the client");
            }
        }
    }

    #[test]
    fn denied_sessions_linger_briefly_and_expire() {
        let text = SRV.replace("MODE", "protect");
        let p = Arc::new(CompiledPolicy::compile(&crate::policy::Policy::from_toml(&text).unwrap()).unwrap());
        let t = Timeouts { tcp_closed: 5, tcp_syn: 1000, ..Timeouts::default() };
        let mut i = Inspector::new(64, t, MalformedPolicy::Drop);
        i.set_policy(p, 1);
        let syn = tcp4(&[], SYN, b"");
        assert_eq!(i.process(&syn, meta(1, 1)), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(i.sessions.len(), 1);
        // Well before the SYN timeout, after the closed linger: gone, with a final record.
        i.sessions.expire(20, 16);
        assert_eq!(i.sessions.len(), 0, "a denied session held its slot for the SYN timeout");
        let mut out = Vec::new();
        i.drain_ended(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].policy.as_ref().unwrap().verdict, Some(PolicyVerdict::Denied));
    }

    /// A TCP frame from 198.18.0.`host`:`sport` to 198.18.0.2:80 with sequence number `seq`.
    fn tcp_from(host: u8, sport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = tcp4(&[], flags, payload);
        f[29] = host;
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        crate::wire::tests::fix_checksums(&mut f);
        f
    }

    /// An IPv4 TCP frame `src:sport -> dst:dport` with `flags`, sequence `seq` and `payload`.
    #[allow(clippy::too_many_arguments)]
    fn tcp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = tcp4(&[], flags, payload);
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        crate::wire::tests::fix_checksums(&mut f);
        f
    }

    #[test]
    fn removing_a_pair_returns_every_context_and_buffer_however_many_sessions() {
        // More sessions on pair 0 than the ended queue holds (its cap is 65536), each with an
        // app context and bytes buffered out of order (while the pool lasts); pair 1 keeps a few.
        let (many, few) = (70_000usize, 100usize);
        let total = many + few;
        let engine = EngineConfig { max_sessions: total, ..EngineConfig::default() };
        let mut i = Inspector::with_engine(total, Timeouts::default(), MalformedPolicy::Drop, engine);
        let (free0, buffered0) = (i.engine.free_contexts(), i.engine.buffered());
        assert_eq!(free0, total);
        for (zone, count) in [(1u16, few), (0, many)] {
            for k in 0..count {
                let (host, sport) = (10 + (k / 60_000) as u8, 1024 + (k % 60_000) as u16);
                let m = FrameMeta::new(zone, 1, 1);
                i.process(&tcp_from(host, sport, SYN, 1000, 0, b""), m);
                let mut syn_ack = tcp_from(host, sport, SYN | ACK, 7000, 1001, b"");
                // The server's answer: addresses (26..34) and ports (34..38) swapped.
                let (a, p) = (syn_ack[26..30].to_vec(), syn_ack[34..36].to_vec());
                syn_ack.copy_within(30..34, 26);
                syn_ack[30..34].copy_from_slice(&a);
                syn_ack.copy_within(36..38, 34);
                syn_ack[36..38].copy_from_slice(&p);
                crate::wire::tests::fix_checksums(&mut syn_ack);
                i.process(&syn_ack, FrameMeta { iface: 2, ..m });
                // A segment beyond a hole: kept in the stream buffer until the hole fills.
                i.process(&tcp_from(host, sport, ACK | PSH, 1101, 7001, b"GET / HTTP/1.1\r\n"), m);
            }
        }
        assert_eq!(i.sessions.len(), total);
        assert_eq!(i.engine.free_contexts(), 0);
        let buffered_all = i.engine.buffered();
        assert!(buffered_all > buffered0, "the test needs buffered bytes");
        i.end_sessions(|z| z == 0, 0);
        assert_eq!(i.sessions.len(), few);
        let mut out = Vec::new();
        i.drain_reports(&mut out);
        let ended = out.iter().filter(|s| s.ended.is_some()).count();
        assert!(ended < many, "the ended queue did not overflow: {ended}");
        assert_eq!(i.sessions.stats().ended_overflow as usize, many - ended);
        assert_eq!(i.engine.free_contexts(), free0 - few, "app contexts of the removed pair leaked");
        // Pair 1's sessions keep their contexts and buffers; ending them empties the pool.
        assert!(i.engine.buffered() > buffered0);
        i.end_sessions(|_| true, 0);
        i.drain_reports(&mut out);
        assert_eq!(i.engine.free_contexts(), free0, "app contexts leaked");
        assert_eq!(i.engine.buffered(), buffered0, "stream buffers leaked");
    }

    /// A table of `cap` sessions, `established` of them established HTTP-port sessions
    /// (198.18.0.1:10000+i -> 198.18.0.2:80, handshake and a request each way), then a flood
    /// of `100 * cap` SYNs from random addresses of 198.18.0.0/15 and random ports to
    /// 198.18.0.2 (port 80, or random ports when `port80` is false). Returns the pipeline,
    /// the flood's verdicts counted by kind, and checks every established session is still
    /// there and forwards.
    fn syn_flood(
        policy: Option<&str>,
        cap: usize,
        established: usize,
        port80: bool,
    ) -> (Inspector, std::collections::BTreeMap<String, usize>) {
        const CLI: [u8; 4] = [198, 18, 0, 1];
        const SRV: [u8; 4] = [198, 18, 0, 2];
        let mut i = Inspector::new(cap, Timeouts::default(), MalformedPolicy::Drop);
        if let Some(text) = policy {
            let p = crate::policy::Policy::from_toml(text).unwrap();
            i.set_policy(Arc::new(CompiledPolicy::compile(&p).unwrap()), 1);
        }
        let mut now = 1_000_000_000u64;
        let mut step = |i: &mut Inspector, f: &[u8], iface: u16| {
            now += 1_000;
            i.process(f, meta(iface, now))
        };
        for n in 0..established as u16 {
            let port = 10_000 + n;
            for (f, iface) in [
                (tcp_frame(CLI, port, SRV, 80, SYN, 100, 0, b""), 1),
                (tcp_frame(SRV, 80, CLI, port, SYN | ACK, 500, 101, b""), 2),
                (tcp_frame(CLI, port, SRV, 80, ACK, 101, 501, b""), 1),
                (tcp_frame(CLI, port, SRV, 80, ACK | PSH, 101, 501, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1),
                (tcp_frame(SRV, 80, CLI, port, ACK | PSH, 501, 128, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 2),
            ] {
                assert_eq!(step(&mut i, &f, iface), Verdict::Forward);
            }
        }
        let mut verdicts = std::collections::BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100 * cap {
            // xorshift64: addresses in 198.18.0.0/15, any port.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = [198, 18 + (x >> 63) as u8, (x >> 8) as u8, (x >> 16) as u8];
            let (sport, dport) = ((x >> 24) as u16 | 1024, if port80 { 80 } else { (x >> 40) as u16 | 1 });
            let v = step(&mut i, &tcp_frame(src, sport, SRV, dport, SYN, x as u32, 0, b""), 1);
            *verdicts.entry(format!("{v:?}")).or_insert(0) += 1;
        }
        for n in 0..established as u16 {
            let port = 10_000 + n;
            let (k, e) = flow_of(&wire::decode(&tcp_frame(CLI, port, SRV, 80, ACK, 0, 0, b"")).unwrap(), 0).unwrap();
            let (idx, _) = i.sessions.find(&k, e).unwrap_or_else(|| panic!("established session {port} is gone"));
            assert_eq!(i.sessions.get(idx).state, State::Tcp(TcpState::Established));
            let more = tcp_frame(CLI, port, SRV, 80, ACK | PSH, 128, 539, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(step(&mut i, &more, 1), Verdict::Forward, "{port}");
        }
        assert!(i.sessions.len() <= cap);
        (i, verdicts)
    }

    #[test]
    fn syn_flood_of_100x_capacity_leaves_established_sessions_in_place() {
        const CAP: usize = 128;
        // Full of established sessions: every SYN is refused and dropped, nothing evicted.
        let (i, v) = syn_flood(None, CAP, CAP, true);
        assert_eq!(v.get("Drop(SessionTableFull)"), Some(&(100 * CAP)), "{v:?}");
        let st = i.sessions.stats();
        assert_eq!((st.refused, st.evicted), (100 * CAP as u64, 0));
        // A quarter free: the flood is forwarded and recycles only its own embryonic slots.
        let (i, v) = syn_flood(None, CAP, CAP * 3 / 4, true);
        assert_eq!(v.get("Forward"), Some(&(100 * CAP)), "{v:?}");
        let st = i.sessions.stats();
        assert_eq!(st.evicted, st.evicted_embryonic);
        assert_eq!(st.evicted, 100 * CAP as u64 - CAP as u64 / 4);
    }

    #[test]
    fn denied_syn_flood_leaves_established_sessions_in_place() {
        let policy = SRV.replace("MODE", "protect")
            + "[[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n";
        const CAP: usize = 128;
        let (i, v) = syn_flood(Some(&policy), CAP, CAP, false);
        // Random ports hit 80 now and then: those SYNs are allowed but find no room either.
        assert_eq!(v.get("Drop(SessionTableFull)"), Some(&(100 * CAP)), "{v:?}");
        assert_eq!(i.sessions.stats().evicted, 0);
        let (i, v) = syn_flood(Some(&policy), CAP, CAP / 2, false);
        let denied = v.get("Drop(PolicyDenied)").copied().unwrap_or(0);
        assert!(denied > 99 * CAP, "{v:?}");
        let st = i.sessions.stats();
        // Denied SYNs linger; they are evicted first (by each other).
        assert!(st.evicted_lingering > 98 * CAP as u64, "{st:?}");
        assert_eq!(st.evicted, st.evicted_lingering + st.evicted_embryonic);
        assert_eq!(i.stats.policy_dropped, denied as u64);
    }
}
