//! The worker: one thread pinned to one core, owning its XSKs ([`Group`]s), its session table
//! and its counters. Nothing here locks, allocates or makes a system call per frame: rings are
//! read and written in batches, the kernel is kicked at most once per batch and ring, and the
//! clock is read once per loop.
//!
//! Loop: reap completions and refill the fill rings → for each port, take an rx batch, decode
//! each frame, hand it to the worker that owns its flow if that is another worker (copy into a
//! lock-free SPSC ring), else run the [`Inspector`] and stage it for the peer side's tx ring →
//! transmit the staged batch → drain frames handed over by other workers → serve control
//! commands → expire sessions and send report snapshots on their timers → when a loop found
//! nothing to do, spin again or sleep in one poll(2) on all its sockets and its waker until
//! frames, a wake-up or its next timer ([`crate::poll`]: adaptive polling, `[dataplane] poll`).
//!
//! Time accounting ([`crate::metrics::LoopStats`]): one monotonic clock read at the start of
//! each loop; the time to the next loop's start, less the time asleep in poll(2) (two more reads
//! per sleep), is counted as working (the loop did work) or spinning (it found nothing).
//!
//! Flow ownership: a flow belongs to `owners[owner_spread(key) % owners.len()]`, where `owners`
//! lists the workers serving the pair; `owner_spread` hashes the zone and the two addresses
//! only (direction-free), so both directions of a flow, and the IP fragments of its datagrams
//! (which carry no ports), reach the same worker whatever queue the kernel delivered them to. An ICMP error belongs
//! to the owner of the flow it quotes ([`crate::icmp::owner_key`]).
//!
//! Held frames: an IP fragment is kept, not forwarded or dropped, while its datagram is being
//! reassembled ([`crate::defrag`], [`Verdict::Hold`]). Its UMEM descriptor is encoded in the
//! token the inspector keeps (group, side, address, length), so the worker needs no table of
//! its own; the inspector's `[defrag] max_frames` bounds how many are held (validated against
//! the UMEM size). After every rx batch, handed-over frame and timer tick the worker acts on
//! the inspector's releases: all frames of a datagram are transmitted, or dropped, together.
//! A fragment handed over by another worker is first copied into a UMEM frame, so every held
//! frame lives in a UMEM.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender};
use ringbuf::traits::{Consumer, Producer};
use ringbuf::{HeapCons, HeapProd};
use xdpilone::xdp::XdpDesc;

use std::sync::Arc;

use crate::enforce::{Hits, PolicyHandle};
use crate::poll::{Idle, PollConfig, Wait, Waker, MAX_SLEEP};
use crate::defrag::DefragStats;
use crate::inspect::{DropReason, FrameMeta, InspectStats, Inspector, Verdict};
use crate::rst::{self, RstFrame};
use crate::session::{SessionSnapshot, TableStats};
use crate::wire;
use crate::xsk::{self, Group, SideSpec};

/// One rx batch in this many is timed stage by stage ([`crate::metrics::Stages`]).
const STAGE_SAMPLE: u32 = 64;

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn ns_since(t: Instant) -> u64 {
    ns(t.elapsed())
}

/// How often a worker expires IP fragments and flushes merged threat events.
const EXPIRE_EVERY: Duration = Duration::from_millis(100);

/// Largest frame that can be handed between workers (MTU-sized frames and then some).
pub const HANDOFF_MAX: usize = 2048;

/// A frame copied to the worker that owns its flow.
pub struct Handoff {
    /// Inline pair.
    pub zone: u16,
    /// Side it was received on.
    pub side: u8,
    /// Interface slot it was received on.
    pub iface: u16,
    /// Valid bytes in `data`.
    pub len: u16,
    /// The frame.
    pub data: [u8; HANDOFF_MAX],
}

/// Counters of one interface as seen by one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames received here and dropped, by [`DropReason`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Batches that did not fit the tx ring whole.
    pub tx_ring_full: u64,
    /// Fill ring found empty.
    pub fill_ring_empty: u64,
    /// Kernel XSK statistics: rx dropped.
    pub xsk_rx_dropped: u64,
    /// Kernel XSK statistics: rx ring full.
    pub xsk_rx_ring_full: u64,
    /// Monitor mode: frames the kernel dropped because a monitor socket's buffer was full
    /// (`PACKET_STATISTICS`, [`crate::monitor`]).
    pub monitor_kernel_dropped: u64,
}

impl IfCounters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &IfCounters) {
        self.rx_frames += o.rx_frames;
        self.rx_bytes += o.rx_bytes;
        self.tx_frames += o.tx_frames;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped.iter()) {
            *a += b;
        }
        self.tx_ring_full += o.tx_ring_full;
        self.fill_ring_empty += o.fill_ring_empty;
        self.xsk_rx_dropped += o.xsk_rx_dropped;
        self.xsk_rx_ring_full += o.xsk_rx_ring_full;
        self.monitor_kernel_dropped += o.monitor_kernel_dropped;
    }
}

/// A worker's answer to [`Command::Stats`].
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// Core it runs on.
    pub core: Option<usize>,
    /// Pipeline counters.
    pub inspect: InspectStats,
    /// Session table counters.
    pub table: TableStats,
    /// Live sessions.
    pub sessions: u64,
    /// Per interface slot.
    pub ifaces: BTreeMap<u16, IfCounters>,
    /// Frames handed to other workers.
    pub handoff_out: u64,
    /// Frames received from other workers.
    pub handoff_in: u64,
    /// Frames lost because a handoff ring was full or the frame too long.
    pub handoff_dropped: u64,
    /// Records lost because the report queue to the control thread was full.
    pub report_overflow: u64,
    /// Policy hit counters of this worker.
    pub hits: Hits,
    /// Threat counters of this worker (detections and drops per threat).
    pub threats: crate::threat::ThreatStats,
    /// Threat event merging of this worker (events, merged detections, lost to a full queue).
    pub threat_events: crate::threat::event::MergeStats,
    /// IP reassembly counters of this worker.
    pub defrag: DefragStats,
    /// Loop time and per-frame processing latency ([`crate::metrics`]).
    pub timing: crate::metrics::LoopStats,
    /// Capture stage counters ([`crate::capture`]).
    pub capture: crate::capture::TapStats,
    /// Sessions not inspected because the app context pool was empty.
    pub app_pool_full: u64,
    /// Times a parser rejected its stream and detection ran again.
    pub app_redetections: u64,
    /// XDP fast path counters of this worker ([`crate::fastpath`]).
    pub fast: crate::fastpath::FastStats,
    /// Fast path entries this worker may use (0: off).
    pub fast_capacity: usize,
}

/// Most snapshots in one [`WorkerReport`]. The queue to the control thread holds at most
/// `[dataplane] report_queue` reports, so this bounds its memory whatever the session churn:
/// `report_queue` x 64 x `size_of::<SessionSnapshot>()` (2376 bytes; about 39 MB at the
/// default 256 reports).
pub const REPORT_BATCH: usize = 64;

/// Session snapshots a worker sends to the control thread every report interval.
pub struct WorkerReport {
    /// Worker index.
    pub worker: usize,
    /// Snapshots of changed sessions and final records of ended ones.
    pub snaps: Vec<SessionSnapshot>,
    /// True when these are sessions that just became violations or were denied: subscribers
    /// get them as events at once, not in the next batch.
    pub events: bool,
    /// Threat events (merged on the worker, [`crate::threat::event`]), each with a snapshot of
    /// its session when it was still in the table.
    pub threats: Vec<(crate::threat::event::ThreatHit, Option<SessionSnapshot>)>,
    /// Pre-trigger capture files of the sessions of these events, by session id
    /// ([`crate::capture::pretrigger`]).
    pub captures: Vec<(u64, Arc<str>)>,
}

/// An XSK a worker bound: (interface slot, rx queue, socket fd) for the XSKMAP.
pub type XskBinding = (u16, u32, i32);

/// Messages from the control thread to a worker.
pub enum Command {
    /// Apply new threat actions and thresholds (`[threats]`, SIGHUP).
    Threats(crate::threat::ThreatPolicy),
    /// Run a capture ([`crate::capture`]) until it is marked stopped.
    Capture(Arc<crate::capture::Active>),
    /// Select the frames the pre-trigger ring keeps (None: all).
    PretriggerProgram(Option<crate::capture::bpf::Program>),
    /// Bind XSKs for one queue group of an inline pair; reply with `(slot, queue, fd)` of each
    /// socket for the XSKMAP, or the error.
    AddGroup {
        /// Inline pair id.
        zone: u16,
        /// Queue group number within the pair (queue `q` of an interface is in group
        /// `q % groups`).
        group: u32,
        /// Side a and side b.
        sides: [SideSpec; 2],
        /// Workers serving this pair, in flow-ownership order.
        owners: Vec<usize>,
        /// UMEM frames.
        frames: u32,
        /// Ring entries.
        ring_size: u32,
        /// Reply channel.
        reply: mpsc::Sender<Result<Vec<XskBinding>, String>>,
    },
    /// Bind XSKs for rx queues an interface of a pair gained (a channel change) into queue
    /// group `group` of pair `zone`; reply with `(slot, queue, fd)` or the error, per queue.
    AddPorts {
        /// Inline pair id.
        zone: u16,
        /// Queue group number within the pair.
        group: u32,
        /// Side of the pair (0 = a, 1 = b).
        side: u8,
        /// The interface and the new queues.
        spec: SideSpec,
        /// Reply channel.
        reply: mpsc::Sender<Vec<Result<XskBinding, String>>>,
    },
    /// Receive-only: serve a monitored interface ([`crate::monitor`]) with `fd` (this worker's
    /// socket of the interface's fanout group); frames go through the inspector, nothing is
    /// forwarded. Acknowledged when the socket is served.
    AddMonitor {
        /// Session zone of the monitored interface.
        zone: u16,
        /// Interface slots and names: frames received on the interface, frames sent out of it.
        slots: [(u16, String); 2],
        /// Workers serving the interface, in flow-ownership order.
        owners: Vec<usize>,
        /// This worker's socket (None: it owns flows of the zone but receives none itself).
        fd: Option<std::os::fd::OwnedFd>,
        /// Acknowledged when done.
        reply: mpsc::Sender<()>,
    },
    /// Stop serving the monitored interface of `zone`: close its socket and end its sessions
    /// (final records are reported).
    RemoveMonitor {
        /// Session zone of the monitored interface.
        zone: u16,
        /// Acknowledged when done.
        reply: mpsc::Sender<()>,
    },
    /// Close the sockets of a pair and end its sessions (final records are reported).
    RemovePair {
        /// Inline pair id.
        zone: u16,
        /// Acknowledged when done.
        reply: mpsc::Sender<()>,
    },
    /// One step of a paged walk over the live sessions
    /// ([`crate::session::SessionTable::page`]), answered between two frame batches.
    Sessions {
        /// First session-table slot to look at.
        from: u32,
        /// Most sessions returned.
        max: usize,
        /// Most slots looked at (bounds the pause).
        scan: usize,
        /// Reply channel: the snapshots and the next step's slot (`None`: end of the table).
        reply: mpsc::Sender<(Vec<SessionSnapshot>, Option<u32>)>,
    },
    /// What the shadow policy would change on this worker ([`crate::shadow`]): a copy of its
    /// sums (not part of [`Command::Stats`], which metrics scrapes ask for often).
    ShadowDiff {
        /// Reply channel.
        reply: mpsc::Sender<crate::shadow::ShadowDiff>,
    },
    /// Report counters.
    Stats {
        /// Reply channel.
        reply: mpsc::Sender<WorkerStats>,
    },
    /// End all sessions, report them, close every socket and exit.
    Shutdown,
    /// Test hook (`warden run --test-hooks` only): panic, as a bug in the worker would.
    TestPanic,
    /// Test hook (`warden run --test-hooks` only): stop looping for this long, as a worker
    /// stuck in a bug would (the watchdog pings stop).
    TestStall(Duration),
}

/// The control thread's handle on a worker: its command queue and its waker.
#[derive(Clone)]
pub struct WorkerLink {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl WorkerLink {
    /// A link over a worker's command queue and its waker ([`Mesh::waker`]).
    pub fn new(tx: Sender<Command>, waker: Arc<Waker>) -> Self {
        WorkerLink { tx, waker }
    }

    /// Queues `cmd` (waiting while the queue is full) and wakes the worker if it sleeps.
    ///
    /// # Errors
    /// The worker is gone (its queue closed); the command is returned.
    pub fn send(&self, cmd: Command) -> Result<(), crossbeam::channel::SendError<Command>> {
        let r = self.tx.send(cmd);
        self.waker.wake();
        r
    }

    /// Wakes the worker if it sleeps (after publishing something it picks up itself, such as
    /// a policy).
    pub fn wake(&self) {
        self.waker.wake();
    }
}

/// Static settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker index.
    pub index: usize,
    /// Core to pin to.
    pub core: Option<usize>,
    /// Frames per ring batch.
    pub batch: usize,
    /// How the worker waits when its rings are empty.
    pub poll: PollConfig,
    /// Report interval.
    pub report_interval: Duration,
}

struct GroupState {
    /// Unique among this worker's groups (part of held frames' tokens).
    id: u16,
    zone: u16,
    /// Queue group number within the pair.
    index: u32,
    group: Group,
    owners: Vec<usize>,
    /// First port index of each side (the tx port for frames going to that side).
    tx_port: [Option<usize>; 2],
    stats: [IfCounters; 2],
}

/// A monitored interface as one worker serves it ([`crate::monitor`]).
struct MonitorState {
    zone: u16,
    /// Interface slots of frames received on the interface and of frames sent out of it.
    slots: [u16; 2],
    owners: Vec<usize>,
    /// This worker's socket of the interface's fanout group.
    src: Option<crate::monitor::Source>,
    /// Per direction (received, sent out).
    stats: [IfCounters; 2],
}

/// The token of a monitored frame the inspector holds (an IP fragment): a group id no
/// [`GroupState`] has, so releasing it touches no UMEM (the inspector keeps its own copy).
const MONITOR_GROUP: u16 = 0x7fff;

/// A worker's channels to the other workers.
pub struct Mesh {
    /// `outbox[w]`: producer to worker `w` (None for self).
    pub outbox: Vec<Option<HeapProd<Handoff>>>,
    /// Consumers of frames from the other workers.
    pub inbox: Vec<HeapCons<Handoff>>,
    /// Every worker's waker (index = worker), this one's included: frames handed to a sleeping
    /// worker wake it, once per batch.
    pub wakers: Vec<Arc<Waker>>,
    /// This worker's index.
    pub me: usize,
    /// Workers this one handed frames to since it last woke them (allocated once).
    handed: Vec<bool>,
    /// Some entry of `handed` is set.
    any_handed: bool,
}

impl Mesh {
    /// This worker's waker (for the control thread: commands and policies wake it).
    pub fn waker(&self) -> Arc<Waker> {
        self.wakers[self.me].clone()
    }

    /// Wakes the workers this one handed frames to since the last call (once per batch).
    fn wake_handed(&mut self) {
        if !std::mem::take(&mut self.any_handed) {
            return;
        }
        for (w, h) in self.handed.iter_mut().enumerate() {
            if std::mem::take(h) {
                self.wakers[w].wake();
            }
        }
    }

    /// True when another worker has handed frames over that are not drained yet.
    fn inbox_pending(&self) -> bool {
        use ringbuf::traits::Observer;
        self.inbox.iter().any(|c| !c.is_empty())
    }
}

/// Builds the all-to-all handoff rings for `n` workers, `cap` frames each, and their wakers.
///
/// # Errors
/// A waker's eventfd could not be created (out of file descriptors).
pub fn mesh(n: usize, cap: usize) -> std::io::Result<Vec<Mesh>> {
    use ringbuf::traits::Split;
    let wakers: Vec<Arc<Waker>> = (0..n).map(|_| Waker::new().map(Arc::new)).collect::<Result<_, _>>()?;
    let mut meshes: Vec<Mesh> = (0..n)
        .map(|me| Mesh {
            outbox: (0..n).map(|_| None).collect(),
            inbox: Vec::new(),
            wakers: wakers.clone(),
            me,
            handed: vec![false; n],
            any_handed: false,
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (p, c) = ringbuf::HeapRb::<Handoff>::new(cap).split();
                meshes[from].outbox[to] = Some(p);
                meshes[to].inbox.push(c);
            }
        }
    }
    Ok(meshes)
}

/// One worker thread's state.
pub struct Worker {
    cfg: WorkerConfig,
    insp: Inspector,
    groups: Vec<GroupState>,
    /// Monitored interfaces this worker serves ([`crate::monitor`]).
    monitors: Vec<MonitorState>,
    mesh: Mesh,
    commands: Receiver<Command>,
    reports: Sender<WorkerReport>,
    handoff_out: u64,
    handoff_in: u64,
    handoff_dropped: u64,
    report_overflow: u64,
    policy: Option<Arc<PolicyHandle>>,
    next_group: u16,
    timing: crate::metrics::LoopStats,
    /// Adaptive polling: spin or sleep when a loop found nothing.
    idle: Idle,
    /// Non-empty rx batches so far (one in [`STAGE_SAMPLE`] is timed stage by stage).
    stage_tick: u32,
    /// Liveness and totals read by the control loop (systemd watchdog, `STATUS=`).
    pulse: Arc<crate::service::Pulse>,
    /// The capture stage: running captures, the pre-trigger ring ([`crate::capture`]).
    tap: crate::capture::Tap,
}

/// The token a held frame is known by: group id (15 bits), side (1), length (16), UMEM
/// address (32; a UMEM is at most 2^20 frames of 4096 bytes).
fn token(group: u16, side: usize, d: &XdpDesc) -> u64 {
    (u64::from(group & 0x7fff) << 49) | ((side as u64 & 1) << 48) | (u64::from(d.len & 0xffff) << 32) | (d.addr & 0xffff_ffff)
}

/// The token of a monitored frame ([`MONITOR_GROUP`]).
fn monitor_token() -> u64 {
    token(MONITOR_GROUP, 0, &XdpDesc { addr: 0, len: 0, options: 0 })
}

/// The group id, side and descriptor of a held frame's token.
fn untoken(t: u64) -> (u16, usize, XdpDesc) {
    let d = XdpDesc { addr: t & 0xffff_ffff, len: ((t >> 32) & 0xffff) as u32, options: 0 };
    (((t >> 49) & 0x7fff) as u16, ((t >> 48) & 1) as usize, d)
}

/// Acts on the inspector's releases: every frame of a released datagram is transmitted on the
/// peer of the side it came from, or dropped and counted, with the datagram's one verdict
/// (resets, for [`Verdict::Reset`], are sent once). Frames of groups that are gone are
/// forgotten.
fn release_held(groups: &mut [GroupState], insp: &mut Inspector, tap: &mut crate::capture::Tap, now: u64) {
    if insp.releases().is_empty() {
        return;
    }
    for (r, tokens) in insp.releases().iter() {
        let mut reset_at = None;
        for &t in tokens {
            let (id, side, d) = untoken(t);
            let Some(gs) = groups.iter_mut().find(|g| g.id == id) else { continue };
            if tap.on() {
                let slot = gs.group.ports.iter().find(|p| usize::from(p.side) == side).map_or(0, |p| p.slot);
                tap.frame(gs.zone, slot, now, gs.group.frame(&d), r.verdict);
            }
            match r.verdict {
                Verdict::Forward => {
                    let other = 1 - side;
                    let sent = match gs.tx_port[other] {
                        Some(tp) => gs.group.transmit(tp, &[d]),
                        None => 0,
                    };
                    if sent == 1 {
                        gs.stats[other].tx_frames += 1;
                        gs.stats[other].tx_bytes += u64::from(d.len);
                    } else {
                        gs.group.release(&[d]);
                        gs.stats[other].tx_ring_full += 1;
                        gs.stats[side].dropped[DropReason::TxRingFull as usize] += 1;
                    }
                }
                Verdict::Drop(why) => {
                    gs.stats[side].dropped[why as usize] += 1;
                    gs.group.release(&[d]);
                }
                Verdict::Reset | Verdict::Hold => {
                    gs.stats[side].dropped[DropReason::PolicyDenied as usize] += 1;
                    gs.group.release(&[d]);
                    reset_at = Some((id, side));
                }
            }
        }
        if let (Some((id, side)), Some(rs)) = (reset_at, r.resets.as_ref()) {
            if let Some(gs) = groups.iter_mut().find(|g| g.id == id) {
                send_resets(gs, side, rs);
            }
        }
    }
    for gs in groups.iter_mut() {
        gs.group.kick_tx();
    }
    insp.clear_releases();
}

/// CPU time of the calling thread (user + system, ns; CLOCK_THREAD_CPUTIME_ID), 0 if it
/// cannot be read. One system call: control path only.
fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    unix_now_ns()
}

/// Wall-clock time (Unix ns), 0 if the clock is before 1970.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Worker {
    /// A worker with its pipeline, handoff rings and channels.
    pub fn new(
        cfg: WorkerConfig,
        insp: Inspector,
        mesh: Mesh,
        commands: Receiver<Command>,
        reports: Sender<WorkerReport>,
    ) -> Self {
        let idle = Idle::new(cfg.poll, 0);
        Worker {
            idle,
            stage_tick: 0,
            cfg,
            insp,
            groups: Vec::new(),
            monitors: Vec::new(),
            mesh,
            commands,
            reports,
            handoff_out: 0,
            handoff_in: 0,
            handoff_dropped: 0,
            report_overflow: 0,
            policy: None,
            next_group: 0,
            timing: crate::metrics::LoopStats::default(),
            pulse: Arc::default(),
            tap: crate::capture::Tap::default(),
        }
    }

    /// Offers frames to `tap` (captures, pre-trigger ring) after their verdict.
    pub fn with_tap(mut self, tap: crate::capture::Tap) -> Self {
        self.tap = tap;
        self
    }

    /// Publishes this worker's loop count, sessions and frames through `pulse` (once per loop),
    /// for the control loop's watchdog ([`crate::service`]).
    pub fn with_pulse(mut self, pulse: Arc<crate::service::Pulse>) -> Self {
        self.pulse = pulse;
        self
    }

    /// Enforces the policy published through `handle` (picked up once per loop).
    pub fn with_policy(mut self, handle: Arc<PolicyHandle>) -> Self {
        self.policy = Some(handle);
        self
    }

    /// A policy (or shadow policy) was published that this worker does not enforce yet.
    fn policy_pending(&self) -> bool {
        self.policy.as_ref().is_some_and(|h| {
            h.generation() != self.insp.policy_generation() || h.shadow_generation() != self.insp.shadow_generation()
        })
    }

    /// Loads a newly published policy or shadow policy (once per loop: two atomic loads when
    /// nothing changed).
    fn refresh_policy(&mut self) {
        let Some(h) = &self.policy else { return };
        if h.generation() != self.insp.policy_generation() {
            let (p, g) = h.load();
            self.insp.set_policy(p, g);
            h.mark_loaded(self.cfg.index, g);
        }
        if h.shadow_generation() != self.insp.shadow_generation() {
            let (p, g) = h.load_shadow();
            self.insp.set_shadow(p, g);
            h.mark_shadow_loaded(self.cfg.index, g);
        }
    }

    /// Runs until [`Command::Shutdown`] or until the command channel closes.
    pub fn run(mut self) {
        if let Some(core) = self.cfg.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(worker = self.cfg.index, core, "could not pin worker to core");
                self.cfg.core = None;
            }
        }
        let batch = self.cfg.batch.clamp(1, 1024);
        let mut rxd = vec![XdpDesc { addr: 0, len: 0, options: 0 }; batch];
        let mut fwd = vec![XdpDesc { addr: 0, len: 0, options: 0 }; batch];
        let mut drop = vec![XdpDesc { addr: 0, len: 0, options: 0 }; batch];
        let mut last_report = Instant::now();
        let mut last_expire = Instant::now();
        let mut fds: Vec<i32> = Vec::new();
        let waker = self.mesh.waker();
        // Origin of the worker's monotonic ns (adaptive polling's clock).
        let base = Instant::now();
        // The previous loop: its start, whether it did work, its frames and its time asleep.
        let mut prev: Option<(Instant, bool, u64)> = None;
        let mut slept = Duration::ZERO;
        loop {
            // One monotonic clock read per loop: it ends the previous loop's time.
            let loop_start = Instant::now();
            let t = loop_start.duration_since(base).as_nanos() as u64;
            if let Some((p, busy, frames)) = prev {
                let took = loop_start.duration_since(p).saturating_sub(slept);
                if busy {
                    self.timing.busy(took);
                    self.idle.work(p.duration_since(base).as_nanos() as u64, t, frames);
                } else {
                    self.timing.spin(took);
                }
            }
            slept = Duration::ZERO;
            self.pulse.beat(self.insp.sessions.len() as u64, self.insp.stats.frames);
            self.refresh_policy();
            let now = now_ns();
            let frames_before = self.timing.frames;
            let mut work = 0usize;
            for gi in 0..self.groups.len() {
                work += self.poll_group(gi, now, &mut rxd, &mut fwd, &mut drop);
                self.mesh.wake_handed();
            }
            if !self.monitors.is_empty() {
                work += self.poll_monitors(now);
                self.mesh.wake_handed();
            }
            work += self.drain_inbox(now);
            self.send_events();
            match self.commands.try_recv() {
                Ok(Command::Shutdown) => break,
                Ok(cmd) => {
                    self.command(cmd);
                    fds.clear();
                    work += 1;
                }
                Err(crossbeam::channel::TryRecvError::Empty) => {}
                Err(crossbeam::channel::TryRecvError::Disconnected) => break,
            }
            // Every loop: the budget grows with the sessions created since the last call, so
            // expiry keeps up with any creation rate in small steps (a few list-head checks when
            // nothing is due).
            self.insp.expire_sessions(now, 256);
            if last_expire.elapsed() >= EXPIRE_EVERY {
                last_expire = Instant::now();
                // What the XDP fast path forwarded, added to its sessions (every PULL_EVERY).
                self.insp.pull_fast(now, false);
                self.insp.expire_fragments(now);
                self.insp.flush_threats(now);
                release_held(&mut self.groups, &mut self.insp, &mut self.tap, now);
                self.tap.tick(now);
            }
            if last_report.elapsed() >= self.cfg.report_interval
                || self.insp.sessions.ended_nearly_full()
            {
                last_report = Instant::now();
                self.send_reports(false);
            } else if self.insp.sessions.ended_pending() >= REPORT_BATCH {
                // Churn (a flood of short sessions): only final records go between intervals;
                // live sessions are snapshotted once per interval whatever the churn, so it
                // does not multiply their reports.
                self.send_ended();
            }
            self.timing.loops += 1;
            prev = Some((loop_start, work > 0, self.timing.frames - frames_before));
            if work > 0 {
                continue;
            }
            if fds.is_empty() {
                fds = self.groups.iter().flat_map(|g| g.group.ports.iter().map(|p| p.fd())).collect();
                fds.extend(self.monitors.iter().filter_map(|m| m.src.as_ref().map(|s| s.fd())));
            }
            // Spinning needs rings to spin on: without sockets the worker only sleeps.
            if !fds.is_empty() && self.idle.idle(t) == Wait::Spin {
                continue;
            }
            // Announce the sleep, then look once more at what does not wake poll(2) by itself:
            // frames handed over, commands, a new policy (their producers wake the waker).
            waker.prepare();
            if self.mesh.inbox_pending() || !self.commands.is_empty() || self.policy_pending() {
                waker.awake();
                continue;
            }
            // Until the next timer: fragment expiry and threat flush, then reports.
            let due = EXPIRE_EVERY
                .saturating_sub(last_expire.elapsed())
                .min(self.cfg.report_interval.saturating_sub(last_report.elapsed()))
                .min(MAX_SLEEP);
            let ms = due.as_millis().clamp(1, MAX_SLEEP.as_millis()) as i32;
            let asleep = Instant::now();
            let woken = xsk::wait_rx(&fds, waker.fd(), ms);
            waker.awake();
            if woken.waker {
                waker.drain();
            }
            slept = asleep.elapsed();
            self.timing.slept(slept, woken.rx, woken.waker);
        }
        self.insp.pull_fast(now_ns(), true);
        self.insp.end_sessions(|_| true, now_ns());
        self.send_reports(true);
        self.insp.threats.flush_all(now_ns());
        self.send_threats(true);
    }

    /// Sends violation/denied sessions found since the last loop as one event batch.
    fn send_events(&mut self) {
        self.send_batches(false, true, |insp, out| insp.drain_events_upto(out, REPORT_BATCH));
        self.send_threats(false);
    }

    /// Sends queued threat events (all of them, waiting, when `flush`); what a full queue
    /// refuses is counted with the report overflow.
    fn send_threats(&mut self, flush: bool) {
        self.send_loop(flush, |insp, report| {
            report.events = true;
            insp.drain_threats_upto(&mut report.threats, REPORT_BATCH)
        });
    }

    /// Sends the snapshots of changed sessions and the final records of ended ones, in reports
    /// of [`REPORT_BATCH`], while the queue to the control thread has room (`flush`: all of
    /// them, waiting up to 1 s per report, at shutdown and pair removal). What does not fit
    /// stays in the table: changed sessions go with the next interval, final records wait in
    /// its bounded queue. So a slow reporter holds back the worker's reports instead of growing
    /// memory.
    fn send_reports(&mut self, flush: bool) {
        self.send_batches(flush, false, |insp, out| insp.drain_reports_upto(out, REPORT_BATCH));
    }

    /// As [`Self::send_reports`], final records only (between intervals, under churn).
    fn send_ended(&mut self) {
        self.send_batches(false, false, |insp, out| insp.drain_ended_upto(out, REPORT_BATCH));
    }

    /// Drains with `drain` into reports of [`REPORT_BATCH`] (event batches when `events`) while
    /// the queue has room, or all of it when `flush`; what a full queue refuses is counted.
    fn send_batches(
        &mut self,
        flush: bool,
        events: bool,
        mut drain: impl FnMut(&mut Inspector, &mut Vec<SessionSnapshot>) -> bool,
    ) {
        self.send_loop(flush, |insp, report| {
            report.events = events;
            report.snaps.reserve(REPORT_BATCH);
            drain(insp, &mut report.snaps)
        });
    }

    /// Fills reports with `fill` (true when more is left) and sends each non-empty one while
    /// the queue has room, or all of them when `flush` (waiting up to 1 s per report); the
    /// items of a report a full queue refuses are counted in `report_overflow`.
    fn send_loop(&mut self, flush: bool, mut fill: impl FnMut(&mut Inspector, &mut WorkerReport) -> bool) {
        loop {
            if !flush && self.reports.is_full() {
                return;
            }
            let mut report =
                WorkerReport { worker: self.cfg.index, snaps: Vec::new(), events: false, threats: Vec::new(), captures: Vec::new() };
            let more = fill(&mut self.insp, &mut report);
            if report.events && self.tap.on() {
                crate::capture::trigger_events(&mut self.tap, &mut report, now_ns());
            }
            let n = (report.snaps.len() + report.threats.len()) as u64;
            if n > 0 {
                let sent = if flush {
                    self.reports.send_timeout(report, Duration::from_secs(1)).is_ok()
                } else {
                    self.reports.try_send(report).is_ok()
                };
                if !sent {
                    self.report_overflow += n;
                }
            }
            if !more {
                return;
            }
        }
    }

    fn poll_group(
        &mut self,
        gi: usize,
        now: u64,
        rxd: &mut [XdpDesc],
        fwd: &mut [XdpDesc],
        drop: &mut [XdpDesc],
    ) -> usize {
        let me = self.cfg.index;
        let gs = &mut self.groups[gi];
        gs.group.recycle();
        // Frames still queued for transmission count as work: never sleep with them pending.
        let mut total = gs.group.kick_tx().min(1) as usize;
        for port in 0..gs.group.ports.len() {
            let gs = &mut self.groups[gi];
            let (side, slot) = {
                let p = &gs.group.ports[port];
                (p.side as usize, p.slot)
            };
            // Backpressure: take no more frames than the peer's tx ring can hold, so a busy
            // peer leaves frames queued in our rx ring instead of dropping them here.
            let room = match gs.tx_port[1 - side] {
                Some(tp) => gs.group.tx_room(tp) as usize,
                None => rxd.len(),
            };
            let take = room.min(rxd.len());
            // Sampled stage timing: one non-empty batch in STAGE_SAMPLE is timed stage by stage.
            let sample = self.stage_tick % STAGE_SAMPLE == 0;
            let rx_start = sample.then(Instant::now);
            let n = gs.group.receive(port, &mut rxd[..take]);
            if n == 0 {
                continue;
            }
            self.stage_tick = self.stage_tick.wrapping_add(1);
            if let Some(t) = rx_start {
                self.timing.stages.rx_ns += ns_since(t);
                self.timing.stages.frames += n as u64;
            }
            total += n;
            self.timing.frames += n as u64;
            // Per-frame latency: the batch is timed whole (two clock reads per batch) and
            // each of its frames observes the batch's mean.
            let batch_start = Instant::now();
            let (mut nf, mut nd) = (0usize, 0usize);
            let mut fwd_bytes = 0u64;
            for d in &rxd[..n] {
                let data = gs.group.frame(d);
                let st = &mut gs.stats[side];
                st.rx_frames += 1;
                st.rx_bytes += u64::from(d.len);
                let meta = FrameMeta::new(gs.zone, slot, now);
                let mut resets: Option<[RstFrame; 2]> = None;
                let t0 = sample.then(Instant::now);
                let decoded = wire::decode(data);
                let t1 = sample.then(Instant::now);
                if let (Some(t0), Some(t1)) = (t0, t1) {
                    self.timing.stages.decode_ns += ns(t1.duration_since(t0));
                }
                let verdict = match decoded {
                    Err(m) => self.insp.malformed(m, data, meta),
                    Ok(f) => {
                        let owner = if gs.owners.len() > 1 {
                            crate::icmp::owner_key(&f, gs.zone)
                                .map(|k| gs.owners[k.owner_spread() as usize % gs.owners.len()])
                                .unwrap_or(me)
                        } else {
                            me
                        };
                        if owner != me {
                            let ok = handoff(
                                &mut self.mesh,
                                owner,
                                gs.zone,
                                side as u8,
                                slot,
                                data,
                            );
                            if ok {
                                self.handoff_out += 1;
                                self.mesh.handed[owner] = true;
                                self.mesh.any_handed = true;
                            } else {
                                self.handoff_dropped += 1;
                            }
                            drop[nd] = *d;
                            nd += 1;
                            continue;
                        }
                        let v = self.insp.process_decoded_frame(&f, meta, token(gs.id, side, d));
                        if v == Verdict::Reset {
                            resets = rst::resets(data, &f);
                        }
                        v
                    }
                };
                if let Some(t1) = t1 {
                    self.timing.stages.inspect_ns += ns_since(t1);
                }
                if self.tap.on() {
                    self.tap.frame(gs.zone, slot, now, data, verdict);
                }
                match verdict {
                    // Kept: the inspector holds its token until the datagram is released.
                    Verdict::Hold => {}
                    Verdict::Forward => {
                        fwd[nf] = *d;
                        nf += 1;
                        fwd_bytes += u64::from(d.len);
                    }
                    Verdict::Drop(why) => {
                        gs.stats[side].dropped[why as usize] += 1;
                        drop[nd] = *d;
                        nd += 1;
                    }
                    Verdict::Reset => {
                        gs.stats[side].dropped[DropReason::PolicyDenied as usize] += 1;
                        drop[nd] = *d;
                        nd += 1;
                        if let Some(r) = resets {
                            send_resets(gs, side, &r);
                        }
                    }
                }
            }
            let other = 1 - side;
            let tx_start = sample.then(Instant::now);
            let sent = match gs.tx_port[other] {
                Some(tp) => gs.group.transmit(tp, &fwd[..nf]),
                None => 0,
            };
            if sent < nf {
                gs.stats[other].tx_ring_full += 1;
                gs.stats[side].dropped[DropReason::TxRingFull as usize] += (nf - sent) as u64;
                gs.group.release(&fwd[sent..nf]);
                fwd_bytes -= fwd[sent..nf].iter().map(|d| u64::from(d.len)).sum::<u64>();
            }
            gs.stats[other].tx_frames += sent as u64;
            gs.stats[other].tx_bytes += fwd_bytes;
            gs.group.release(&drop[..nd]);
            release_held(&mut self.groups, &mut self.insp, &mut self.tap, now);
            if sample {
                // The tx stage includes the kernel's copy-mode transmit (the kick).
                self.groups[gi].group.kick_tx();
            }
            if let Some(t) = tx_start {
                self.timing.stages.tx_ns += ns_since(t);
            }
            self.timing.latency.observe_batch(batch_start.elapsed(), n as u64);
        }
        self.groups[gi].group.kick_tx();
        total
    }

    /// Takes one batch from every monitor socket (one `recvmmsg(2)` each) and runs each frame
    /// through the inspector under the monitor policy, or hands it to the worker that owns its
    /// flow; verdicts are not applied (nothing is in the path) ([`crate::monitor`]).
    fn poll_monitors(&mut self, now: u64) -> usize {
        let me = self.cfg.index;
        let mut total = 0;
        for mi in 0..self.monitors.len() {
            let m = &mut self.monitors[mi];
            let Some(src) = m.src.as_mut() else { continue };
            let n = src.receive(crate::monitor::BATCH);
            if n == 0 {
                continue;
            }
            total += n;
            self.timing.frames += n as u64;
            let batch_start = Instant::now();
            self.insp.monitor_begin();
            for i in 0..n {
                let (dir, data) = src.frame(i);
                let side = dir.side();
                let slot = m.slots[side];
                m.stats[side].rx_frames += 1;
                m.stats[side].rx_bytes += data.len() as u64;
                let meta = FrameMeta::new(m.zone, slot, now);
                let verdict = match wire::decode(data) {
                    Err(e) => self.insp.malformed(e, data, meta),
                    Ok(f) => {
                        let owner = if m.owners.len() > 1 {
                            crate::icmp::owner_key(&f, m.zone)
                                .map(|k| m.owners[k.owner_spread() as usize % m.owners.len()])
                                .unwrap_or(me)
                        } else {
                            me
                        };
                        if owner != me {
                            if handoff(&mut self.mesh, owner, m.zone, side as u8, slot, data) {
                                self.handoff_out += 1;
                                self.mesh.handed[owner] = true;
                                self.mesh.any_handed = true;
                            } else {
                                self.handoff_dropped += 1;
                            }
                            continue;
                        }
                        self.insp.process_decoded_frame(&f, meta, monitor_token())
                    }
                };
                if self.tap.on() {
                    self.tap.frame(m.zone, slot, now, data, verdict);
                }
            }
            self.insp.monitor_end();
            release_held(&mut self.groups, &mut self.insp, &mut self.tap, now);
            self.timing.latency.observe_batch(batch_start.elapsed(), n as u64);
        }
        total
    }

    /// Runs a frame of a monitored interface handed over by another worker; false when no
    /// monitored interface of this worker has its zone.
    fn monitor_handoff(&mut self, h: &Handoff, now: u64) -> bool {
        let Some(m) = self.monitors.iter().find(|m| m.zone == h.zone) else { return false };
        let (zone, side) = (m.zone, usize::from(h.side & 1));
        let data = &h.data[..usize::from(h.len)];
        let meta = FrameMeta::new(zone, h.iface, now);
        self.insp.monitor_begin();
        let verdict = match wire::decode(data) {
            Err(e) => self.insp.malformed(e, data, meta),
            Ok(f) => self.insp.process_decoded_frame(&f, meta, monitor_token()),
        };
        self.insp.monitor_end();
        if self.tap.on() {
            self.tap.frame(zone, h.iface, now, data, verdict);
        }
        let _ = side;
        release_held(&mut self.groups, &mut self.insp, &mut self.tap, now);
        true
    }

    fn drain_inbox(&mut self, now: u64) -> usize {
        let mut n = 0;
        for i in 0..self.mesh.inbox.len() {
            while let Some(h) = self.mesh.inbox[i].try_pop() {
                n += 1;
                self.handoff_in += 1;
                self.timing.frames += 1;
                let Some(gs) = self.groups.iter_mut().find(|g| g.zone == h.zone) else {
                    if !self.monitor_handoff(&h, now) {
                        self.handoff_dropped += 1;
                    }
                    continue;
                };
                let data = &h.data[..usize::from(h.len)];
                let side = usize::from(h.side);
                let meta = FrameMeta::new(h.zone, h.iface, now);
                let (verdict, decoded) = match wire::decode(data) {
                    Err(m) => (self.insp.malformed(m, data, meta), None),
                    Ok(f) => {
                        // A fragment is held in a UMEM frame, like the frames received here.
                        let held = if f.ip.as_ref().is_some_and(|ip| ip.frag.is_some()) {
                            let Some(d) = gs.group.write(data) else {
                                gs.stats[side].dropped[DropReason::NoFrame as usize] += 1;
                                continue;
                            };
                            Some(d)
                        } else {
                            None
                        };
                        let tok = held.map(|d| token(gs.id, side, &d)).unwrap_or(0);
                        let v = self.insp.process_decoded_frame(&f, meta, tok);
                        if let (Some(d), false) = (held, v == Verdict::Hold) {
                            gs.group.release(&[d]);
                        }
                        (v, Some(f))
                    }
                };
                if self.tap.on() {
                    self.tap.frame(h.zone, h.iface, now, data, verdict);
                }
                match verdict {
                    Verdict::Hold => {}
                    Verdict::Drop(why) => gs.stats[side].dropped[why as usize] += 1,
                    Verdict::Reset => {
                        gs.stats[side].dropped[DropReason::PolicyDenied as usize] += 1;
                        if let Some(r) = decoded.and_then(|f| rst::resets(data, &f)) {
                            send_resets(gs, side, &r);
                        }
                    }
                    Verdict::Forward => forward_copy(gs, side, data),
                }
                release_held(&mut self.groups, &mut self.insp, &mut self.tap, now);
                if n >= 256 {
                    return n;
                }
            }
        }
        n
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddGroup { zone, group: index, sides, owners, frames, ring_size, reply } => {
                self.insp.set_pair((sides[0].slot, &sides[0].name), (sides[1].slot, &sides[1].name));
                let r = Group::open([&sides[0], &sides[1]], frames, ring_size)
                    .map(|group| {
                        let fds = group.ports.iter().map(|p| (p.slot, p.queue, p.fd())).collect();
                        let tx_port = [
                            group.ports.iter().position(|p| p.side == 0),
                            group.ports.iter().position(|p| p.side == 1),
                        ];
                        // An id no live group has (tokens of held frames name their group).
                        let mut id = self.next_group & 0x7fff;
                        while id == MONITOR_GROUP || self.groups.iter().any(|g| g.id == id) {
                            id = (id + 1) & 0x7fff;
                        }
                        self.next_group = id.wrapping_add(1);
                        self.groups.push(GroupState {
                            id,
                            zone,
                            index,
                            group,
                            owners,
                            tx_port,
                            stats: [IfCounters::default(); 2],
                        });
                        fds
                    })
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::AddPorts { zone, group, side, spec, reply } => {
                let r = match self.groups.iter_mut().find(|g| g.zone == zone && g.index == group) {
                    Some(gs) => gs
                        .group
                        .add_ports(side, &spec)
                        .into_iter()
                        .map(|r| {
                            r.map(|i| {
                                let p = &gs.group.ports[i];
                                (p.slot, p.queue, p.fd())
                            })
                            .map_err(|e| e.to_string())
                        })
                        .collect(),
                    None => spec.queues.iter().map(|q| Err(format!("queue {q}: no group {group} of pair {zone}"))).collect(),
                };
                let _ = reply.send(r);
            }
            Command::AddMonitor { zone, slots, owners, fd, reply } => {
                self.insp.set_pair((slots[0].0, &slots[0].1), (slots[1].0, &slots[1].1));
                self.insp.set_monitoring(true);
                self.monitors.push(MonitorState {
                    zone,
                    slots: [slots[0].0, slots[1].0],
                    owners,
                    src: fd.map(crate::monitor::Source::new),
                    stats: [IfCounters::default(); 2],
                });
                let _ = reply.send(());
            }
            Command::RemoveMonitor { zone, reply } => {
                self.insp.flush_fragments(zone);
                release_held(&mut self.groups, &mut self.insp, &mut self.tap, now_ns());
                for m in self.monitors.iter().filter(|m| m.zone == zone) {
                    self.insp.remove_pair(m.slots[0]);
                }
                self.monitors.retain(|m| m.zone != zone);
                if self.monitors.is_empty() {
                    self.insp.set_monitoring(false);
                }
                self.insp.end_sessions(|z| z == zone, now_ns());
                self.send_reports(true);
                let _ = reply.send(());
            }
            Command::RemovePair { zone, reply } => {
                // Held fragments of the pair go back to its UMEMs before they are closed.
                self.insp.flush_fragments(zone);
                release_held(&mut self.groups, &mut self.insp, &mut self.tap, now_ns());
                for g in self.groups.iter().filter(|g| g.zone == zone) {
                    for p in &g.group.ports {
                        self.insp.remove_pair(p.slot);
                    }
                }
                self.groups.retain(|g| g.zone != zone);
                self.insp.pull_fast(now_ns(), true);
                self.insp.end_sessions(|z| z == zone, now_ns());
                self.send_reports(true);
                let _ = reply.send(());
            }
            Command::Sessions { from, max, scan, reply } => {
                let _ = reply.send(self.insp.snapshot_page(from, max, scan));
            }
            Command::Stats { reply } => {
                let mut ifaces: BTreeMap<u16, IfCounters> = BTreeMap::new();
                for g in &self.groups {
                    for side in 0..2 {
                        let slot = g.group.ports.iter().find(|p| p.side as usize == side).map(|p| p.slot);
                        let Some(slot) = slot else { continue };
                        let mut c = g.stats[side];
                        for p in g.group.ports.iter().filter(|p| p.side as usize == side) {
                            c.fill_ring_empty += p.fill_empty;
                            let (dropped, full) = p.kernel_stats();
                            c.xsk_rx_dropped += dropped;
                            c.xsk_rx_ring_full += full;
                        }
                        ifaces.entry(slot).or_default().add(&c);
                    }
                }
                for m in &mut self.monitors {
                    // PACKET_STATISTICS are reset on read: kept as running sums here.
                    if let Some(src) = &m.src {
                        m.stats[0].monitor_kernel_dropped += src.kernel_stats().1;
                    }
                    for side in 0..2 {
                        ifaces.entry(m.slots[side]).or_default().add(&m.stats[side]);
                    }
                }
                let _ = reply.send(WorkerStats {
                    worker: self.cfg.index,
                    core: self.cfg.core,
                    inspect: self.insp.stats,
                    table: self.insp.sessions.stats(),
                    sessions: self.insp.sessions.len() as u64,
                    ifaces,
                    handoff_out: self.handoff_out,
                    handoff_in: self.handoff_in,
                    handoff_dropped: self.handoff_dropped,
                    report_overflow: self.report_overflow,
                    hits: self.insp.hits.clone(),
                    threats: self.insp.threats.stats,
                    threat_events: self.insp.threats.merge_stats(),
                    defrag: self.insp.defrag_stats(),
                    timing: crate::metrics::LoopStats {
                        cpu_ns: thread_cpu_ns(),
                        gap_ns: self.idle.gap_ns(),
                        ..self.timing
                    },
                    capture: self.tap.stats(),
                    app_pool_full: self.insp.engine.pool_full,
                    app_redetections: self.insp.engine.redetections,
                    fast: self.insp.fast.stats(),
                    fast_capacity: self.insp.fast.capacity(),
                });
            }
            Command::ShadowDiff { reply } => {
                let _ = reply.send(self.insp.shadow_diff.clone());
            }
            Command::Shutdown => {}
            Command::TestStall(d) => std::thread::sleep(d),
            Command::TestPanic => panic!("worker {} told to panic (test hook)", self.cfg.index),
            Command::Threats(p) => {
                self.insp.threats.set_policy(p);
                self.insp.flush_fast(crate::fastpath::RemoveReason::Threats);
            }
            Command::Capture(a) => self.tap.add(a),
            Command::PretriggerProgram(p) => self.tap.set_pretrigger_program(p),
        }
    }
}

/// Copies a frame received on `side` (handed over by another worker) into a UMEM frame and
/// transmits it on the other side; counted as tx-ring-full or no-frame when it cannot be.
fn forward_copy(gs: &mut GroupState, side: usize, data: &[u8]) {
    let other = 1 - side;
    let Some(tp) = gs.tx_port[other] else { return };
    match gs.group.write(data) {
        Some(d) => {
            let sent = gs.group.transmit(tp, &[d]);
            gs.group.kick_tx();
            if sent == 1 {
                gs.stats[other].tx_frames += 1;
                gs.stats[other].tx_bytes += u64::from(d.len);
            } else {
                gs.group.release(&[d]);
                gs.stats[other].tx_ring_full += 1;
                gs.stats[side].dropped[DropReason::TxRingFull as usize] += 1;
            }
        }
        None => gs.stats[side].dropped[DropReason::NoFrame as usize] += 1,
    }
}

/// Transmits the two resets answering a frame received on `side`: the first continues the
/// frame's way (out of the other side), the second goes back out of `side`. A reset that finds
/// no UMEM frame or tx room is counted as a tx-ring-full event and not sent.
fn send_resets(gs: &mut GroupState, side: usize, r: &[RstFrame; 2]) {
    for (frame, out) in [(&r[0], 1 - side), (&r[1], side)] {
        let Some(tp) = gs.tx_port[out] else { continue };
        match gs.group.write(frame.bytes()) {
            Some(d) => {
                if gs.group.transmit(tp, &[d]) == 1 {
                    gs.stats[out].tx_frames += 1;
                    gs.stats[out].tx_bytes += u64::from(d.len);
                } else {
                    gs.group.release(&[d]);
                    gs.stats[out].tx_ring_full += 1;
                }
            }
            None => gs.stats[out].tx_ring_full += 1,
        }
    }
    gs.group.kick_tx();
}

/// Copies a frame into the SPSC ring to worker `to` (no allocation). False when the frame is
/// longer than [`HANDOFF_MAX`] or the ring is full.
fn handoff(mesh: &mut Mesh, to: usize, zone: u16, side: u8, iface: u16, data: &[u8]) -> bool {
    if data.len() > HANDOFF_MAX {
        return false;
    }
    let Some(Some(prod)) = mesh.outbox.get_mut(to) else { return false };
    let mut msg = Handoff { zone, side, iface, len: data.len() as u16, data: [0; HANDOFF_MAX] };
    msg.data[..data.len()].copy_from_slice(data);
    prod.try_push(msg).is_ok()
}
