//! The capture stage: packet capture on demand and the pre-trigger ring, written as pcapng.
//!
//! **On demand** (`wardenctl capture start`). A capture is a filter, limits and an output. The
//! control thread resolves the target ([`manager`]: the interfaces of a pair, a workload's
//! addresses or interface, addresses/CIDRs, ports, protocol and a tcpdump expression, all
//! compiled by libpcap into one classic BPF program run by [`bpf`]'s safe interpreter) and
//! hands every worker an [`Active`] capture. The worker that owns a frame's flow (so each
//! frame is seen once, after its verdict) offers it to its [`Tap`]: when no capture runs and
//! the pre-trigger ring is off, that is one test of a plain `bool` per frame. A matching frame
//! (interface, frames all/forwarded/dropped, program) is copied, cut at the snap length, into
//! the worker's ring ([`ring`]: bytes, bounded, single producer and single consumer); a full
//! ring drops the copy and counts it (`lost`), the worker never waits. One writer thread
//! ([`writer`]) drains every worker's ring into the captures' outputs: a pcapng file under
//! `[capture] dir` (created 0600, a name that cannot leave the directory), or a stream to the
//! control connection that asked (`-w -`), and ends a capture at whichever limit comes first
//! (duration, pcapng bytes, frames) or when stopped. Several captures run at once within
//! `[capture] max_active`, a disk budget (`max_disk_bytes`: files kept plus what running
//! captures may still write, reserved when they start) and a memory budget (the rings,
//! `ring_bytes` per worker, allocated at start; a stream's backlog, bounded per capture).
//!
//! **Pre-trigger ring** ([`pretrigger`]). With `[capture] pretrigger_frames` N > 0 each
//! worker keeps the last N frames (cut at `pretrigger_snaplen`) of up to
//! `pretrigger_sessions` flows (optionally only those a tcpdump expression selects, e.g. a
//! workload's addresses) in memory allocated at start. When a session is denied or a threat
//! fires, those frames and the next `pretrigger_after` frames of its flow are written as a
//! pcapng named after the event (`denied-…` / `threat-<id>-…`), and the event's record
//! carries the file name (`capture_file`).

pub mod bpf;
pub mod manager;
pub mod pcapng;
pub mod pretrigger;
pub mod ring;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Deserialize;

use crate::inspect::{DropReason, Verdict};

/// `[capture]`: where captures go and what they may use.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Directory of capture files (created 0700 when missing). Default
    /// `/var/lib/warden/captures`.
    pub dir: String,
    /// Ring from each worker to the writer thread (bytes, allocated at start; 0 turns capture
    /// off). Default 4 MiB.
    pub ring_bytes: usize,
    /// Captures running at once (1..=64). Default 8.
    pub max_active: usize,
    /// Bytes the capture directory's pcapng files may take, those kept and what running
    /// captures may still write. Default 1 GiB.
    pub max_disk_bytes: u64,
    /// `--max-size` when a capture gives none (bytes). Default 100 MiB.
    pub default_max_size: u64,
    /// `--duration` when a capture gives none (s). Default 60.
    pub default_duration_s: u64,
    /// Longest `--duration` (s). Default 86400.
    pub max_duration_s: u64,
    /// Pre-trigger ring: frames kept per flow before an event (0: off, the default; at most
    /// 256).
    pub pretrigger_frames: usize,
    /// Frames of the flow written after the event (at most 65536). Default 32.
    pub pretrigger_after: usize,
    /// Bytes kept of each pre-trigger frame (64..=65535). Default 256.
    pub pretrigger_snaplen: usize,
    /// Flows each worker keeps frames of (1..=1048576). Default 1024. Memory per worker:
    /// `pretrigger_sessions × pretrigger_frames × pretrigger_snaplen` bytes plus a small table.
    pub pretrigger_sessions: usize,
    /// tcpdump expression selecting the frames kept; default: every frame.
    pub pretrigger_filter: Option<String>,
    /// Keep only frames to or from these workloads' addresses (ids of the running policy,
    /// resolved again whenever the policy changes; with `pretrigger_filter`, both apply).
    /// Default: every workload and the rest.
    pub pretrigger_workloads: Vec<String>,
    /// Pre-trigger files the directory may hold (older ones of this run are not deleted:
    /// beyond it new events get none, counted). Default 1000.
    pub pretrigger_max_files: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            dir: "/var/lib/warden/captures".into(),
            ring_bytes: 4 << 20,
            max_active: 8,
            max_disk_bytes: 1 << 30,
            default_max_size: 100 << 20,
            default_duration_s: 60,
            max_duration_s: 86_400,
            pretrigger_frames: 0,
            pretrigger_after: 32,
            pretrigger_snaplen: 256,
            pretrigger_sessions: 1024,
            pretrigger_filter: None,
            pretrigger_workloads: Vec::new(),
            pretrigger_max_files: 1000,
        }
    }
}

impl CaptureConfig {
    /// Checks the bounds (field name and message on error).
    ///
    /// # Errors
    /// `(field, message)` of the first value out of bounds, or a pre-trigger filter libpcap
    /// refuses.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |f: &'static str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err((f, format!("must be {lo}..={hi}, got {v}")))
            } else {
                Ok(())
            }
        };
        if self.ring_bytes != 0 {
            range("capture.ring_bytes", self.ring_bytes as u64, 65_536, 1 << 30)?;
        }
        range("capture.max_active", self.max_active as u64, 1, 64)?;
        range("capture.default_max_size", self.default_max_size, 4096, u64::MAX)?;
        range("capture.max_duration_s", self.max_duration_s, 1, 30 * 86_400)?;
        range("capture.default_duration_s", self.default_duration_s, 1, self.max_duration_s)?;
        range("capture.pretrigger_frames", self.pretrigger_frames as u64, 0, 256)?;
        range("capture.pretrigger_after", self.pretrigger_after as u64, 0, 65_536)?;
        range("capture.pretrigger_snaplen", self.pretrigger_snaplen as u64, 64, 65_535)?;
        range("capture.pretrigger_sessions", self.pretrigger_sessions as u64, 1, 1 << 20)?;
        if self.dir.is_empty() {
            return Err(("capture.dir", "must name a directory".into()));
        }
        if let Some(f) = &self.pretrigger_filter {
            bpf::compile(f).map_err(|e| ("capture.pretrigger_filter", e.to_string()))?;
        }
        Ok(())
    }
}

/// Which frames a capture takes, by verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frames {
    /// Every frame.
    #[default]
    All,
    /// Frames Warden forwarded.
    Forwarded,
    /// Frames Warden dropped (with the reason in the block's comment).
    Dropped,
}

impl Frames {
    /// `all`, `forwarded` or `dropped`.
    pub fn from_name(s: &str) -> Option<Frames> {
        match s {
            "all" => Some(Frames::All),
            "forwarded" => Some(Frames::Forwarded),
            "dropped" => Some(Frames::Dropped),
            _ => None,
        }
    }

    #[inline]
    fn admits(self, dropped: bool) -> bool {
        match self {
            Frames::All => true,
            Frames::Forwarded => !dropped,
            Frames::Dropped => dropped,
        }
    }
}

/// State of one capture shared by the workers, the writer and the control thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set when the capture ended (limit, stop, error): workers forget it on their next
    /// frame.
    pub stopped: AtomicBool,
    /// Matching frames no worker ring had room for (workers), or a stream's backlog refused
    /// (writer).
    pub lost: AtomicU64,
    /// Frames written (writer).
    pub frames: AtomicU64,
    /// pcapng bytes written (writer).
    pub bytes: AtomicU64,
    /// Why it ended ([`StopReason`] as u8 + 1; 0 while running).
    pub reason: std::sync::atomic::AtomicU8,
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--duration` passed.
    Duration = 0,
    /// The next frame would have made the file larger than `--max-size`.
    MaxSize = 1,
    /// `--max-packets` frames were written.
    MaxPackets = 2,
    /// `wardenctl capture stop`.
    Stopped = 3,
    /// The disk budget (`[capture] max_disk_bytes`) would have been exceeded.
    DiskBudget = 4,
    /// The streaming client went away.
    ClientGone = 5,
    /// Writing failed (the error is logged).
    WriteError = 6,
    /// Warden stopped.
    Shutdown = 7,
    /// A pre-trigger file got its frames (or its flow went quiet).
    Complete = 8,
}

impl StopReason {
    const ALL: [StopReason; 9] = [
        StopReason::Duration,
        StopReason::MaxSize,
        StopReason::MaxPackets,
        StopReason::Stopped,
        StopReason::DiskBudget,
        StopReason::ClientGone,
        StopReason::WriteError,
        StopReason::Shutdown,
        StopReason::Complete,
    ];

    /// `duration`, `max_size`, `max_packets`, `stopped`, `disk_budget`, `client_gone`,
    /// `write_error`, `shutdown`, `complete`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::MaxSize => "max_size",
            StopReason::MaxPackets => "max_packets",
            StopReason::Stopped => "stopped",
            StopReason::DiskBudget => "disk_budget",
            StopReason::ClientGone => "client_gone",
            StopReason::WriteError => "write_error",
            StopReason::Shutdown => "shutdown",
            StopReason::Complete => "complete",
        }
    }
}

impl Shared {
    /// Marks the capture ended for `why` (the first reason stays).
    pub fn finish(&self, why: StopReason) {
        let _ = self.reason.compare_exchange(0, why as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
        self.stopped.store(true, Ordering::Release);
    }

    /// Why it ended (None: running).
    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            n => StopReason::ALL.get(usize::from(n - 1)).copied(),
        }
    }
}

/// A capture as the workers run it.
#[derive(Debug)]
pub struct Active {
    /// Capture id (records in the rings carry it).
    pub id: u32,
    /// Interface slots taken (bit per slot; `None`: all).
    pub slots: Option<[u64; 4]>,
    /// The compiled filter (`None`: every frame).
    pub program: Option<bpf::Program>,
    /// Which verdicts.
    pub frames: Frames,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Shared state.
    pub shared: Arc<Shared>,
}

impl Active {
    /// True when interface slot `slot` is one of the capture's.
    #[inline]
    fn slot_ok(&self, slot: u16) -> bool {
        match &self.slots {
            None => true,
            Some(bits) => bits.get(usize::from(slot >> 6)).is_some_and(|w| w & (1u64 << (slot & 63)) != 0),
        }
    }
}

/// The bit set of interface `slots` ([`Active::slots`]).
pub fn slot_bits(slots: &[u16]) -> [u64; 4] {
    let mut b = [0u64; 4];
    for &s in slots {
        if let Some(w) = b.get_mut(usize::from(s >> 6)) {
            *w |= 1u64 << (s & 63);
        }
    }
    b
}

/// A worker's capture counters (in its stats answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frame copies put into the ring (captures and pre-trigger files).
    pub copied: u64,
    /// Frame copies the ring had no room for (captures: also in the capture's `lost`).
    pub lost: u64,
    /// Pre-trigger: see [`pretrigger::Stats`].
    pub pretrigger: pretrigger::Stats,
}

impl TapStats {
    /// (name, value) of every counter, as `wardenctl counters` lists them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let p = self.pretrigger;
        [
            ("copied", self.copied),
            ("lost", self.lost),
            ("pretrigger_flows", p.flows),
            ("pretrigger_evicted", p.evicted),
            ("pretrigger_not_kept", p.not_kept),
            ("pretrigger_files", p.files),
            ("pretrigger_files_refused", p.files_refused),
        ]
        .into_iter()
    }
}

/// A worker's side of the capture stage: the captures it runs, its ring to the writer, its
/// pre-trigger ring.
pub struct Tap {
    /// Something to do per frame: a capture runs or the pre-trigger ring is on.
    on: bool,
    active: Vec<Arc<Active>>,
    ring: Option<ring::Producer>,
    pre: Option<pretrigger::Pretrigger>,
    worker: u32,
    stats: TapStats,
}

impl Default for Tap {
    fn default() -> Self {
        Tap { on: false, active: Vec::new(), ring: None, pre: None, worker: 0, stats: TapStats::default() }
    }
}

/// Most captures a worker runs at once (the manager's bound is `[capture] max_active`).
pub const MAX_ACTIVE: usize = 64;

/// The verdict as a capture sees it: `None` for a frame held for reassembly (offered again
/// when its datagram is released), else whether it was dropped and why.
#[inline]
fn dropped_of(v: Verdict) -> Option<Option<DropReason>> {
    match v {
        Verdict::Forward => Some(None),
        Verdict::Drop(r) => Some(Some(r)),
        Verdict::Reset => Some(Some(DropReason::PolicyDenied)),
        Verdict::Hold => None,
    }
}

impl Tap {
    /// Worker `worker`'s tap writing into `ring` (None: capture off), with the pre-trigger
    /// ring `pre` (None: off).
    pub fn new(worker: usize, ring: Option<ring::Producer>, pre: Option<pretrigger::Pretrigger>) -> Tap {
        let on = pre.is_some() && ring.is_some();
        Tap { on, active: Vec::with_capacity(MAX_ACTIVE), ring, pre, worker: worker as u32, stats: TapStats::default() }
    }

    /// True when frames must be offered ([`Self::frame`]): the one test the hot path pays
    /// when nothing is captured.
    #[inline(always)]
    pub fn on(&self) -> bool {
        self.on
    }

    /// Counters.
    pub fn stats(&self) -> TapStats {
        let mut s = self.stats;
        if let Some(p) = &self.pre {
            s.pretrigger = p.stats();
        }
        s
    }

    /// Starts running capture `a` (beyond [`MAX_ACTIVE`] it is refused: marked stopped).
    pub fn add(&mut self, a: Arc<Active>) {
        if self.ring.is_none() || self.active.len() >= MAX_ACTIVE {
            a.shared.stopped.store(true, Ordering::Release);
            return;
        }
        self.active.push(a);
        self.on = true;
    }

    /// Offers a frame of inline pair `zone` received on interface slot `slot` at `now_ns` (Unix ns) with its
    /// verdict. Call only when [`Self::on`]. No allocation, no lock, no waiting: a copy the
    /// ring has no room for is counted and dropped.
    pub fn frame(&mut self, zone: u16, slot: u16, now_ns: u64, data: &[u8], verdict: Verdict) {
        let Some(dropped) = dropped_of(verdict) else { return };
        let Some(ring) = self.ring.as_mut() else { return };
        let mut stale = false;
        for a in &self.active {
            if a.shared.stopped.load(Ordering::Relaxed) {
                stale = true;
                continue;
            }
            if !a.frames.admits(dropped.is_some()) || !a.slot_ok(slot) {
                continue;
            }
            if a.program.as_ref().is_some_and(|p| !p.matches(data)) {
                continue;
            }
            let rec = ring::Record::frame(a.id, slot, now_ns, data.len(), a.snaplen as usize, dropped);
            if ring.push(&rec, data) {
                self.stats.copied += 1;
            } else {
                self.stats.lost += 1;
                a.shared.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(p) = self.pre.as_mut() {
            match p.frame(zone, slot, now_ns, data, dropped, ring) {
                pretrigger::Pushed::Copied => self.stats.copied += 1,
                pretrigger::Pushed::Lost => self.stats.lost += 1,
                pretrigger::Pushed::Nothing => {}
            }
        }
        if stale {
            self.active.retain(|a| !a.shared.stopped.load(Ordering::Relaxed));
            self.on = !self.active.is_empty() || self.pre.is_some();
        }
    }

    /// A session of `key` was denied or a threat fired in it (`what`: `denied`,
    /// `threat-sql_injection`, ...), seen at `now_ns`: its kept frames go to a pcapng named
    /// after the event, followed by its next frames. Returns the file name (the same for a
    /// session already triggered), or None when nothing of the flow is kept or the pre-trigger
    /// ring is off.
    pub fn trigger(&mut self, key: crate::flow::FlowKey, session_id: u64, what: &str, now_ns: u64) -> Option<Arc<str>> {
        let (p, ring) = (self.pre.as_mut()?, self.ring.as_mut()?);
        p.trigger(self.worker, key, session_id, what, now_ns, ring)
    }

    /// Replaces the pre-trigger ring's frame selection (a new policy changed the workloads'
    /// addresses, [`pretrigger_program`]).
    pub fn set_pretrigger_program(&mut self, program: Option<bpf::Program>) {
        if let Some(p) = self.pre.as_mut() {
            p.set_program(program);
        }
    }

    /// Timer (every 100 ms): ends pre-trigger files whose flow went quiet.
    pub fn tick(&mut self, now_ns: u64) {
        if let (Some(p), Some(ring)) = (self.pre.as_mut(), self.ring.as_mut()) {
            p.tick(now_ns, ring);
        }
    }
}

/// The pre-trigger ring's frame selection under `policy`: `pretrigger_workloads`' addresses
/// (`host` primitives; workloads the policy does not have are skipped, and with none left
/// nothing is kept) and `pretrigger_filter`, both compiled by libpcap. None: every frame.
///
/// # Errors
/// The expression does not compile (libpcap's message).
pub fn pretrigger_program(cfg: &CaptureConfig, policy: &crate::policy::Policy) -> Result<Option<bpf::Program>, String> {
    let mut parts = Vec::new();
    if !cfg.pretrigger_workloads.is_empty() {
        let hosts: Vec<String> = policy
            .workloads
            .iter()
            .filter(|w| cfg.pretrigger_workloads.contains(&w.id))
            .flat_map(|w| w.ips.iter().map(|a| format!("host {a}")))
            .collect();
        // `less 0`: no frame is that short, so nothing is kept.
        parts.push(if hosts.is_empty() { "less 0".to_string() } else { format!("({})", hosts.join(" or ")) });
    }
    if let Some(f) = cfg.pretrigger_filter.as_deref().filter(|f| !f.trim().is_empty()) {
        parts.push(format!("({f})"));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    bpf::compile(&parts.join(" and ")).map(Some).map_err(|e| e.to_string())
}

/// The pre-trigger part of a worker's event report: every session of `report` that was denied
/// (its verdict `denied`) or in which a threat fired gets its kept frames written
/// ([`Tap::trigger`]); the file names go into `report.captures` by session id, for the
/// reporter to put into the events' records (`capture_file`). Keys are looked up without the
/// segment (VLAN, tunnel) the pre-trigger ring does not key by.
pub fn trigger_events(tap: &mut Tap, report: &mut crate::worker::WorkerReport, now_ns: u64) {
    use crate::flow::FlowKey;
    for s in &report.snaps {
        if s.session.policy.verdict != Some(crate::policy::PolicyVerdict::Denied) {
            continue;
        }
        let k = s.session.key;
        let key = FlowKey::new(k.zone, k.proto, k.lo, k.lo_port, k.hi, k.hi_port).0;
        if let Some(name) = tap.trigger(key, s.session.id, "denied", now_ns) {
            if !report.captures.iter().any(|(id, _)| *id == s.session.id) {
                report.captures.push((s.session.id, name));
            }
        }
    }
    for (h, _) in &report.threats {
        let Some((_, session)) = h.session else { continue };
        let key = FlowKey::new(h.zone, h.proto, h.client, h.client_port, h.server, h.server_port).0;
        let what = format!("threat-{}", h.id.as_str());
        if let Some(name) = tap.trigger(key, session, &what, now_ns) {
            if !report.captures.iter().any(|(id, _)| *id == session) {
                report.captures.push((session, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(id: u32, slots: Option<&[u16]>, filter: Option<&str>, frames: Frames, snaplen: u32) -> Arc<Active> {
        Arc::new(Active {
            id,
            slots: slots.map(slot_bits),
            program: filter.map(|f| bpf::compile(f).unwrap()),
            frames,
            snaplen,
            shared: Arc::default(),
        })
    }

    /// The pre-trigger selection follows the policy's addresses of the named workloads.
    #[test]
    fn pretrigger_selection_by_workload() {
        let policy = |ip: &str| {
            crate::policy::Policy::from_toml(&format!("[[workload]]\nid = \"web\"\nips = [\"{ip}\"]\n[[workload]]\nid = \"db\"\nips = [\"198.18.0.9\"]\n")).unwrap()
        };
        let syn = crate::wire::tests::tcp4(&[], crate::wire::tcpflag::SYN, b""); // 198.18.0.1 -> .2:80
        let cfg = CaptureConfig { pretrigger_workloads: vec!["web".into()], ..Default::default() };
        assert!(pretrigger_program(&cfg, &policy("198.18.0.2")).unwrap().unwrap().matches(&syn));
        assert!(!pretrigger_program(&cfg, &policy("198.18.0.7")).unwrap().unwrap().matches(&syn), "web moved");
        let gone = CaptureConfig { pretrigger_workloads: vec!["nope".into()], ..Default::default() };
        assert!(!pretrigger_program(&gone, &policy("198.18.0.2")).unwrap().unwrap().matches(&syn), "no such workload: nothing kept");
        let both = CaptureConfig { pretrigger_filter: Some("udp".into()), ..cfg.clone() };
        assert!(!pretrigger_program(&both, &policy("198.18.0.2")).unwrap().unwrap().matches(&syn));
        assert!(pretrigger_program(&CaptureConfig::default(), &policy("198.18.0.2")).unwrap().is_none());
    }

    /// The tap takes what each capture selects (slot, verdict, filter), cut at the snap
    /// length, counts what the ring refuses, and forgets stopped captures.
    #[test]
    fn the_tap_selects_cuts_and_counts() {
        let (prod, mut cons) = ring::ring(4096);
        let mut tap = Tap::new(0, Some(prod), None);
        assert!(!tap.on(), "nothing to do: the hot path pays one test");
        let syn = crate::wire::tests::tcp4(&[], crate::wire::tcpflag::SYN, b"");
        let udp = crate::wire::tests::udp6_ext(b"hello");
        let a = active(1, Some(&[3]), Some("tcp port 80"), Frames::All, 40);
        let b = active(2, None, None, Frames::Dropped, 65535);
        tap.add(a.clone());
        tap.add(b.clone());
        assert!(tap.on());
        tap.frame(0, 3, 10, &syn, Verdict::Forward); // a (cut to 40)
        tap.frame(0, 4, 11, &syn, Verdict::Forward); // nobody: slot 4, forwarded
        tap.frame(0, 3, 12, &udp, Verdict::Drop(DropReason::Malformed)); // b only
        tap.frame(0, 3, 13, &syn, Verdict::Reset); // a and b
        tap.frame(0, 3, 14, &syn, Verdict::Hold); // nobody: offered again on release
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while let Some(r) = cons.pop(&mut buf) {
            got.push((r.id, r.ts_ns, r.orig_len as usize, buf.len(), r.dropped));
        }
        assert_eq!(
            got,
            [
                (1, 10, syn.len(), 40, None),
                (2, 12, udp.len(), udp.len(), Some(DropReason::Malformed)),
                (1, 13, syn.len(), 40, Some(DropReason::PolicyDenied)),
                (2, 13, syn.len(), syn.len(), Some(DropReason::PolicyDenied)),
            ]
        );
        assert_eq!(tap.stats().copied, 4);
        // A full ring: counted, not waited for.
        for i in 0..200 {
            tap.frame(0, 3, 100 + i, &syn, Verdict::Drop(DropReason::Threat));
        }
        assert!(b.shared.lost.load(Ordering::Relaxed) > 0);
        assert_eq!(tap.stats().lost, b.shared.lost.load(Ordering::Relaxed) + a.shared.lost.load(Ordering::Relaxed));
        // Stopped captures are forgotten; with none left the tap is off again.
        a.shared.stopped.store(true, Ordering::Release);
        b.shared.stopped.store(true, Ordering::Release);
        tap.frame(0, 3, 500, &syn, Verdict::Forward);
        assert!(!tap.on());
    }
}
