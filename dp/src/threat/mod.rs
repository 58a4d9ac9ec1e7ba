//! The threat stage: detections from every stage of the pipeline (frame checks here, app
//! parsers' [`crate::detect::Threats`], the per-core rate detectors) become one thing: counted
//! per threat, turned into the action `[threats.<id>]` sets for protect mode, and merged into
//! bounded threat events ([`event`]).
//!
//! Detections enter through [`Stage::raise`] with a [`Context`] (the frame, its flow, the
//! session if any, the mode of the strictest workload end). The answer is the action to take
//! on the packet path: `Alert` (forward and report) unless the context is in protect mode and
//! the threat's action is `drop` or `reset`. Who applies it:
//! - frame-level threats (`bad_packet`, `ip_teardrop`, `ping_of_death`, `tcp_small_mss`):
//!   the frame is dropped before it can create a session;
//! - session threats (app parsers' kinds, handshake and window forms): the session is blocked
//!   from then on, and reset at both ends for `reset` when it already forwarded data;
//! - flood and limit threats: only the offending source's or tuple's frames, never the
//!   victim's other sessions.
//!
//! Nothing here allocates after construction: the merge table and the event queue are sized
//! once per core.

#[cfg(test)]
mod captures;
pub mod config;
pub mod event;
pub mod flood;
pub mod icmp_tunnel;
pub mod limit;
pub mod tcp;

use crate::app::{text, Dir};
use crate::detect::{Action, ThreatId};
use crate::flow::Addr;
use crate::policy::{Mode, WorkloadIdx};
use event::{Merger, ThreatHit, FRAME_BYTES, MERGE_INTERVAL_NS};

/// Number of threat kinds.
pub const KINDS: usize = ThreatId::ALL.len();
/// Keys each worker merges at once (slots of its [`Merger`]).
pub const MERGE_SLOTS: usize = 1024;
/// Threat events a worker queues between two drains.
pub const EVENT_QUEUE: usize = 1024;

/// Detector thresholds (`[threats.<id>]` keys; units per field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `tcp_small_mss`: smallest MSS a SYN may announce (bytes). Linux refuses to send
    /// segments below 48 bytes of payload since the SACK panic fixes (`tcp_min_snd_mss`);
    /// an MSS under 88 serves no real path (IPv4 minimum datagram of 576 gives 536; tunnels
    /// and PPPoE stay far above), so 88 leaves room for odd stacks and flags the attack forms
    /// (48 and below).
    pub min_mss: u16,
    /// `tcp_small_window`: smallest window (bytes, after scaling) a client may advertise in
    /// the ACK that completes its handshake. Sockstress completes handshakes with a zero or
    /// tiny window so the server keeps every connection's data queued; real stacks open with
    /// kilobytes.
    pub min_window: u32,
    /// `tcp_no_client_data`: seconds after the server's first data with no client byte.
    pub no_client_data_s: u32,
    /// `tcp_syn_flood` ([`flood`]).
    pub syn_flood: flood::SynFloodConfig,
    /// `icmp_flood` ([`flood`]).
    pub icmp_flood: flood::IcmpFloodConfig,
    /// `ip_src_session_limit` ([`limit`]).
    pub session_limit: limit::SessionLimitConfig,
    /// `icmp_tunneling` ([`icmp_tunnel`]).
    pub icmp_tunnel: icmp_tunnel::IcmpTunnelConfig,
    /// `http_slowloris` ([`crate::detect::slowloris`]).
    pub slowloris: crate::detect::slowloris::Config,
    /// `mysql_access_denied` ([`crate::detect::auth_fail`]).
    pub auth_fail: crate::detect::auth_fail::Config,
    /// `dns_tunneling`: suspect name bytes per (client, domain) that are a finding
    /// ([`crate::detect::dns_tunnel::Config::threshold_bytes`]; default 1024).
    pub dns_tunnel_bytes: u32,
    /// `dns_tunneling`: queries per (client, domain) before a finding (default 8).
    pub dns_tunnel_queries: u32,
}

impl Limits {
    /// The DNS tunnelling detector's configuration: its defaults with the thresholds set here.
    pub fn dns_tunnel(&self) -> crate::detect::dns_tunnel::Config {
        crate::detect::dns_tunnel::Config {
            threshold_bytes: self.dns_tunnel_bytes,
            min_queries: self.dns_tunnel_queries,
            ..Default::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_mss: 88,
            min_window: 64,
            no_client_data_s: 30,
            syn_flood: flood::SynFloodConfig::default(),
            icmp_flood: flood::IcmpFloodConfig::default(),
            session_limit: limit::SessionLimitConfig::default(),
            icmp_tunnel: icmp_tunnel::IcmpTunnelConfig::default(),
            slowloris: crate::detect::slowloris::Config::default(),
            auth_fail: crate::detect::auth_fail::Config::default(),
            dns_tunnel_bytes: crate::detect::dns_tunnel::Config::default().threshold_bytes,
            dns_tunnel_queries: crate::detect::dns_tunnel::Config::default().min_queries,
        }
    }
}

/// Actions per threat (index `id as usize`) and thresholds: the resolved `[threats]` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreatPolicy {
    /// What protect mode does per threat.
    pub actions: [Action; KINDS],
    /// Detector thresholds.
    pub limits: Limits,
}

impl ThreatPolicy {
    /// The action configured for `id`.
    pub fn action(&self, id: ThreatId) -> Action {
        self.actions[id as usize]
    }

    /// True unless `id` is `off`.
    pub fn enabled(&self, id: ThreatId) -> bool {
        self.action(id) != Action::Off
    }
}

/// Per-threat counters of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreatStats {
    /// Detections per threat (frames or messages that showed it).
    pub hits: [u64; KINDS],
    /// Frames dropped by each threat's action (protect mode).
    pub dropped: [u64; KINDS],
}

impl Default for ThreatStats {
    fn default() -> Self {
        ThreatStats { hits: [0; KINDS], dropped: [0; KINDS] }
    }
}

/// Where a detection was made.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The offending frame (from the Ethernet header; a reassembled datagram's frame).
    pub frame: &'a [u8],
    /// The flow's zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Client address and port (the session's client, or the frame's sender).
    pub client: (Addr, u16),
    /// Server address and port.
    pub server: (Addr, u16),
    /// The client's and server's workloads, if known.
    pub workloads: [Option<WorkloadIdx>; 2],
    /// The session (slab index, id), if any.
    pub session: Option<(u32, u64)>,
    /// The mode the verdict follows (the session's, else the strictest workload end's).
    pub mode: Option<Mode>,
    /// Packet clock (ns).
    pub now_ns: u64,
}

/// The per-core threat stage.
pub struct Stage {
    /// Actions and thresholds.
    pub policy: ThreatPolicy,
    /// Counters.
    pub stats: ThreatStats,
    merger: Merger,
    /// `tcp_syn_flood` per (zone, server, port).
    pub syn_flood: flood::SynFlood,
    /// `icmp_flood` per destination.
    pub icmp_flood: flood::IcmpFlood,
    /// `icmp_tunneling` per (requester, responder).
    pub icmp_tunnel: icmp_tunnel::IcmpTunnel,
    /// `ip_src_session_limit` (live sessions per source, shared by the workers).
    pub limit: limit::SessionLimit,
    /// `http_slowloris` per server.
    pub slowloris: crate::detect::slowloris::Slowloris,
    /// `mysql_access_denied` per (client, server).
    pub auth_fail: crate::detect::auth_fail::AuthFailures,
    /// `dns_tunneling` per (zone, client, domain).
    pub dns_tunnel: crate::detect::dns_tunnel::DnsTunnel,
}

impl Default for Stage {
    fn default() -> Self {
        Stage::new(ThreatPolicy::default())
    }
}

impl Stage {
    /// A stage with `policy`; the merge table and event queue are allocated here.
    pub fn new(policy: ThreatPolicy) -> Self {
        let l = policy.limits;
        Stage {
            policy,
            stats: ThreatStats::default(),
            merger: Merger::new(MERGE_SLOTS, EVENT_QUEUE, MERGE_INTERVAL_NS),
            syn_flood: flood::SynFlood::new(&l.syn_flood),
            icmp_flood: flood::IcmpFlood::new(&l.icmp_flood),
            icmp_tunnel: icmp_tunnel::IcmpTunnel::new(&l.icmp_tunnel),
            limit: limit::SessionLimit::new(&l.session_limit),
            slowloris: crate::detect::slowloris::Slowloris::new(l.slowloris),
            auth_fail: crate::detect::auth_fail::AuthFailures::new(l.auth_fail),
            dns_tunnel: crate::detect::dns_tunnel::DnsTunnel::new(l.dns_tunnel()),
        }
    }

    /// Applies new actions and thresholds (reload): detectors whose thresholds changed start
    /// over (allocated again); counters and pending events stay.
    pub fn set_policy(&mut self, policy: ThreatPolicy) {
        let (old, new) = (self.policy.limits, policy.limits);
        if old.syn_flood != new.syn_flood {
            self.syn_flood = flood::SynFlood::new(&new.syn_flood);
        }
        if old.icmp_flood != new.icmp_flood {
            self.icmp_flood = flood::IcmpFlood::new(&new.icmp_flood);
        }
        if old.icmp_tunnel != new.icmp_tunnel {
            self.icmp_tunnel = icmp_tunnel::IcmpTunnel::new(&new.icmp_tunnel);
        }
        if old.slowloris != new.slowloris {
            self.slowloris = crate::detect::slowloris::Slowloris::new(new.slowloris);
        }
        if old.auth_fail != new.auth_fail {
            self.auth_fail = crate::detect::auth_fail::AuthFailures::new(new.auth_fail);
        }
        if (old.dns_tunnel_bytes, old.dns_tunnel_queries) != (new.dns_tunnel_bytes, new.dns_tunnel_queries) {
            self.dns_tunnel = crate::detect::dns_tunnel::DnsTunnel::new(new.dns_tunnel());
        }
        if old.session_limit != new.session_limit {
            self.limit = limit::SessionLimit::shared(&new.session_limit, self.limit.counts().clone());
        }
        self.policy = policy;
    }

    /// Shares the per-source session counts with the other workers (one sketch per daemon).
    pub fn share_source_counts(&mut self, counts: std::sync::Arc<limit::SourceCounts>) {
        self.limit = limit::SessionLimit::shared(&self.policy.limits.session_limit, counts);
    }

    /// True unless `id` is switched off.
    #[inline]
    pub fn enabled(&self, id: ThreatId) -> bool {
        self.policy.enabled(id)
    }

    /// Records a detection of `id` (`reason`: which form; `evidence`: text the detector kept,
    /// may be empty) in `ctx`, and returns what the packet path does: the threat's action in
    /// protect mode, `Alert` otherwise, `Off` when the threat is switched off (nothing
    /// recorded).
    pub fn raise(&mut self, id: ThreatId, dir: Option<Dir>, reason: &'static str, evidence: &[u8], ctx: &Context<'_>) -> Action {
        let configured = self.policy.action(id);
        if configured == Action::Off {
            return Action::Off;
        }
        let action = if ctx.mode == Some(Mode::Protect) { configured } else { Action::Alert };
        self.stats.hits[id as usize] += 1;
        let mut h = ThreatHit {
            id,
            dir,
            reason,
            evidence: text(evidence),
            zone: ctx.zone,
            proto: ctx.proto,
            client: ctx.client.0,
            client_port: ctx.client.1,
            server: ctx.server.0,
            server_port: ctx.server.1,
            workloads: ctx.workloads,
            session: ctx.session,
            action,
            count: 1,
            first_ns: ctx.now_ns,
            last_ns: ctx.now_ns,
            frame: [0; FRAME_BYTES],
            frame_len: 0,
            frame_total: 0,
        };
        h.set_frame(ctx.frame);
        self.merger.add(&h, ctx.now_ns);
        action
    }

    /// The action a frame of `id` gets in `mode` without a detection being recorded (the
    /// excess of a flood already reported): `id`'s action in protect mode, else `Alert`.
    pub fn action_in(&self, id: ThreatId, mode: Option<Mode>) -> Action {
        match self.policy.action(id) {
            Action::Off => Action::Off,
            a if mode == Some(Mode::Protect) => a,
            _ => Action::Alert,
        }
    }

    /// Counts a frame dropped by `id`'s action.
    #[inline]
    pub fn count_drop(&mut self, id: ThreatId) {
        self.stats.dropped[id as usize] += 1;
    }

    /// Sends pending merged events whose interval is over (call often; cheap).
    pub fn flush(&mut self, now_ns: u64) {
        self.merger.flush(now_ns);
    }

    /// Sends every pending merged event (shutdown, end of a replay).
    pub fn flush_all(&mut self, now_ns: u64) {
        self.merger.flush_all(now_ns, true);
    }

    /// Moves queued threat events into `out` (at most `max`); true when some are left.
    pub fn drain_upto(&mut self, out: &mut Vec<ThreatHit>, max: usize) -> bool {
        self.merger.drain_upto(out, max)
    }

    /// Merge counters (events sent, detections merged, detections lost to a full queue).
    pub fn merge_stats(&self) -> event::MergeStats {
        self.merger.stats
    }
}

#[cfg(test)]
mod tests;
