//! Prometheus metrics: text exposition of the counters the control loop already gathers.
//!
//! **Where the values come from.** Nothing here touches a worker. A scrape (`GET /metrics` on
//! `[metrics] listen`, or `warden run --metrics ADDR`) asks the control loop for a [`Snapshot`]
//! ([`crate::daemon::CtlMsg::Metrics`]); the control loop builds it from the same
//! [`WorkerStats`] answers that `wardenctl counters` and `status` use (one
//! [`crate::worker::Command::Stats`] round trip per worker, served between two loops), the XDP
//! program's per-interface counters, the policy hit counters and the report hub. So a scrape
//! costs each worker what `wardenctl counters` costs it, and the exposition is consistent with
//! what `wardenctl` prints.
//!
//! **What the workers add for metrics** ([`LoopStats`], plain counters in each worker, copied
//! into its stats answer): the loop count, busy loops and their time (one monotonic clock read
//! per loop, a second one on loops that did work), and a per-frame processing latency
//! histogram: each rx batch is timed whole (two clock reads per non-empty batch, about 40 ns
//! on this VM's vDSO clock, i.e. < 1 ns per frame at a 64-frame batch) and its mean per frame
//! is added to one of [`LATENCY_BOUNDS_NS`]'s fixed buckets with the batch's frame count as
//! weight (a linear scan of 13 bounds; no allocation, no atomic, no lock: the worker owns the
//! array and the stats answer copies it). Apps are counted per worker when a session's decided
//! app changes ([`crate::inspect::InspectStats::apps`]), never per frame; threats by the
//! reporter when it sends a session's threat event ([`crate::control::Hub::threats`]).
//!
//! **Server.** A std `TcpListener` on its own thread; each connection is served by a short
//! thread, at most [`MAX_CONNECTIONS`] at once (more are closed at once), with read and write
//! timeouts ([`IO_TIMEOUT`]); request heads are bounded ([`MAX_HEAD`]). Only `GET /metrics`
//! answers metrics (OpenMetrics text, `prometheus-client`'s encoder); `/` says where they are.
//!
//! Metric names are listed in README ("Operations: metrics") and used by
//! `conf/grafana-warden.json`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use warden_control::RuleStats;

use crate::app::App;
use crate::exception::ExceptionReason;
use crate::inspect::DropReason;
use crate::normalize::Anomaly;
use crate::wire::Malformed;
use crate::worker::WorkerStats;

/// Upper bounds (ns) of the per-frame latency buckets; one more bucket (+Inf) follows.
pub const LATENCY_BOUNDS_NS: [u64; 13] =
    [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000];

/// Per-frame processing latency of one worker: fixed buckets of frame counts (index `i` counts
/// frames whose batch mean was `<= LATENCY_BOUNDS_NS[i]` and above the previous bound; the
/// last, above every bound), their sum (ns) and count (frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Frames per bucket (not cumulative).
    pub buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    /// Sum of the observed time (ns): the batches' whole time.
    pub sum_ns: u64,
    /// Frames observed.
    pub count: u64,
}

impl Latency {
    /// Adds a batch of `frames` frames that took `took` in all: each frame observes the mean.
    #[inline]
    pub fn observe_batch(&mut self, took: Duration, frames: u64) {
        if frames == 0 {
            return;
        }
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let per = ns / frames;
        let i = LATENCY_BOUNDS_NS.iter().position(|b| per <= *b).unwrap_or(LATENCY_BOUNDS_NS.len());
        self.buckets[i] += frames;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += frames;
    }
}

/// A worker's loop counters, its time working versus waiting, and its latency histogram (see
/// the module docs for their cost). A worker's wall time is `busy_ns + spin_ns + sleep_ns`;
/// the CPU it uses is about `busy_ns + spin_ns` (plus what the kernel does in its system
/// calls: `cpu_ns` is the kernel's own figure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loops run (busy or idle).
    pub loops: u64,
    /// Loops that did work (frames, handoffs, commands).
    pub busy_loops: u64,
    /// Time spent in busy loops (ns).
    pub busy_ns: u64,
    /// Time spent in loops that found nothing to do, spinning on empty rings (ns): CPU spent
    /// waiting.
    pub spin_ns: u64,
    /// Time asleep in poll(2) (ns): waiting without CPU.
    pub sleep_ns: u64,
    /// Sleeps in poll(2).
    pub sleeps: u64,
    /// Sleeps ended by frames on an rx ring.
    pub woken_rx: u64,
    /// Sleeps ended by a wake-up: frames handed over by another worker, a command, a policy.
    pub woken_waker: u64,
    /// Sleeps ended by their timeout (the worker's timers).
    pub woken_timer: u64,
    /// Frames taken from the worker's rx rings and handoff rings.
    pub frames: u64,
    /// CPU time of the worker thread (user + system, ns; CLOCK_THREAD_CPUTIME_ID), read when
    /// the stats are answered.
    pub cpu_ns: u64,
    /// Adaptive polling's estimate of the mean time between frames (ns), when answered.
    pub gap_ns: u64,
    /// Per-frame processing latency.
    pub latency: Latency,
    /// Sampled time per stage.
    pub stages: Stages,
}

/// Time per stage of the rx batches a worker sampled (one in 64 non-empty batches; ns). Divided
/// by `frames`, each is the mean cost of a frame in that stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages {
    /// Frames of the sampled batches.
    pub frames: u64,
    /// Taking the batch from the rx ring.
    pub rx_ns: u64,
    /// L2–L4 decoding (`wire::decode`).
    pub decode_ns: u64,
    /// The inspector (sessions, streams and apps, policy, threats) or the handoff copy.
    pub inspect_ns: u64,
    /// Queuing on the peer's tx ring, released frames, and the kernel's transmit (copy mode).
    pub tx_ns: u64,
}

impl Stages {
    /// (stage name, ns) of each stage.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [("rx", self.rx_ns), ("decode", self.decode_ns), ("inspect", self.inspect_ns), ("tx", self.tx_ns)]
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl LoopStats {
    /// Counts one busy loop that took `took` (its time asleep excluded).
    #[inline]
    pub fn busy(&mut self, took: Duration) {
        self.busy_loops += 1;
        self.busy_ns = self.busy_ns.saturating_add(ns(took));
    }

    /// Counts `took` of an idle loop (spinning, its time asleep excluded).
    #[inline]
    pub fn spin(&mut self, took: Duration) {
        self.spin_ns = self.spin_ns.saturating_add(ns(took));
    }

    /// Counts one sleep in poll(2) of `took`, ended by frames (`rx`), a wake-up (`waker`) or
    /// neither (the timeout).
    #[inline]
    pub fn slept(&mut self, took: Duration, rx: bool, waker: bool) {
        self.sleeps += 1;
        self.sleep_ns = self.sleep_ns.saturating_add(ns(took));
        if rx {
            self.woken_rx += 1;
        } else if waker {
            self.woken_waker += 1;
        } else {
            self.woken_timer += 1;
        }
    }

    /// CPU seconds per million frames: (working time only, the thread's whole CPU time), or
    /// `None` before the first frame.
    pub fn cpu_s_per_mframe(&self) -> Option<(f64, f64)> {
        (self.frames > 0).then(|| {
            let per = |ns: u64| ns as f64 / 1e9 / (self.frames as f64 / 1e6);
            (per(self.busy_ns), per(self.cpu_ns))
        })
    }
}

/// The XDP program's counters of one interface (frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Redirected to a Warden socket.
    pub to_xsk: u64,
    /// Forwarded in the kernel because Warden was not running (fail_open).
    pub fail_open: u64,
    /// Dropped because Warden was not running (fail_closed).
    pub fail_closed: u64,
    /// Dropped because their rx queue had no socket while Warden ran.
    pub unbound: u64,
    /// Redirected to the peer in the kernel by the fast path (flows Warden decided).
    pub fast_path: u64,
}

/// One interface of an inline pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Its slot (the key of [`WorkerStats::ifaces`]).
    pub slot: u16,
    /// Kernel-side counters.
    pub xdp: XdpCounters,
    /// A monitored interface's slot (monitor mode, [`crate::monitor`]): no XDP counters.
    pub monitor: bool,
}

/// Report path health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportHealth {
    /// Worker reports queued to the reporter now.
    pub queue_depth: usize,
    /// Capacity of that queue (`[dataplane] report_queue`).
    pub queue_capacity: usize,
    /// Subscribers connected.
    pub subscribers: usize,
    /// Batches queued to subscribers now.
    pub subscriber_queued: usize,
    /// Records lost in the reporter (pending bound, slow subscribers).
    pub reporter_overflow: u64,
}

/// Everything one scrape exposes, taken by the control loop at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime_s: u64,
    /// Inline pairs.
    pub pairs: usize,
    /// Each worker's stats answer.
    pub workers: Vec<WorkerStats>,
    /// Interfaces of the inline pairs.
    pub interfaces: Vec<Interface>,
    /// Generation of the running policy.
    pub policy_generation: u32,
    /// Sessions decided per rule and per mode default under it.
    pub rules: Vec<RuleStats>,
    /// Report path.
    pub report: ReportHealth,
    /// Sessions with a threat, by threat kind.
    pub threats: Vec<(&'static str, u64)>,
    /// Warnings not logged by the rate limiter ([`crate::logging`]).
    pub log_suppressed: u64,
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
}

#[derive(Debug)]
struct Exposition(Snapshot);

impl Snapshot {
    fn worker_rows(&self, f: impl Fn(&WorkerStats) -> u64) -> Vec<(Labels, u64)> {
        self.workers.iter().map(|w| (vec![("worker", w.worker.to_string())], f(w))).collect()
    }

    /// (worker, reason) rows over `names`, with `value(worker, index)`.
    fn worker_reason_rows(
        &self,
        key: &'static str,
        names: &[&'static str],
        value: impl Fn(&WorkerStats, usize) -> u64,
    ) -> Vec<(Labels, u64)> {
        let mut rows = Vec::new();
        for w in &self.workers {
            for (i, n) in names.iter().enumerate() {
                rows.push((vec![("worker", w.worker.to_string()), (key, (*n).to_string())], value(w, i)));
            }
        }
        rows
    }

    /// (interface, worker) rows of the interfaces each worker serves.
    fn iface_rows(&self, f: impl Fn(&crate::worker::IfCounters) -> u64) -> Vec<(Labels, u64)> {
        let mut rows = Vec::new();
        for i in &self.interfaces {
            for w in &self.workers {
                if let Some(c) = w.ifaces.get(&i.slot) {
                    rows.push((vec![("interface", i.name.clone()), ("worker", w.worker.to_string())], f(c)));
                }
            }
        }
        rows
    }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let e = &mut e;
        gauges(e, "uptime_seconds", "Seconds since warden started.", [(vec![], s.uptime_s)])?;
        gauges(e, "inline_pairs", "Inline pairs running.", [(vec![], s.pairs as u64)])?;

        // Interfaces, per worker serving them.
        counters(e, "interface_rx_frames", "Frames received on the interface (AF_XDP).", s.iface_rows(|c| c.rx_frames))?;
        counters(e, "interface_rx_bytes", "Bytes received on the interface (L2, no FCS).", s.iface_rows(|c| c.rx_bytes))?;
        counters(e, "interface_tx_frames", "Frames transmitted on the interface.", s.iface_rows(|c| c.tx_frames))?;
        counters(e, "interface_tx_bytes", "Bytes transmitted on the interface.", s.iface_rows(|c| c.tx_bytes))?;
        let mut drops = Vec::new();
        for i in &s.interfaces {
            for w in &s.workers {
                let Some(c) = w.ifaces.get(&i.slot) else { continue };
                for r in DropReason::ALL {
                    let l = vec![
                        ("interface", i.name.clone()),
                        ("worker", w.worker.to_string()),
                        ("reason", r.as_str().to_string()),
                    ];
                    drops.push((l, c.dropped[r as usize]));
                }
            }
        }
        counters(e, "interface_dropped_frames", "Frames received on the interface and dropped, by reason.", drops)?;
        counters(e, "xsk_fill_ring_empty", "Times the interface's fill ring was found empty.", s.iface_rows(|c| c.fill_ring_empty))?;
        counters(e, "xsk_tx_ring_full", "Batches that did not fit the interface's tx ring whole.", s.iface_rows(|c| c.tx_ring_full))?;
        counters(e, "xsk_rx_dropped", "Frames the kernel dropped on the interface's XSKs (XDP_STATISTICS rx_dropped).", s.iface_rows(|c| c.xsk_rx_dropped))?;
        counters(e, "xsk_rx_ring_full", "Frames the kernel could not put on a full XSK rx ring (XDP_STATISTICS).", s.iface_rows(|c| c.xsk_rx_ring_full))?;
        counters(
            e,
            "monitor_kernel_dropped",
            "Monitor mode: frames the kernel dropped before Warden read them (full socket buffer, PACKET_STATISTICS).",
            s.iface_rows(|c| c.monitor_kernel_dropped),
        )?;
        let mut xdp = Vec::new();
        for i in s.interfaces.iter().filter(|i| !i.monitor) {
            for (path, v) in [
                ("to_xsk", i.xdp.to_xsk),
                ("fail_open", i.xdp.fail_open),
                ("fail_closed", i.xdp.fail_closed),
                ("unbound", i.xdp.unbound),
                ("fast_path", i.xdp.fast_path),
            ] {
                xdp.push((vec![("interface", i.name.clone()), ("path", path.to_string())], v));
            }
        }
        counters(e, "xdp_frames", "Frames seen by the XDP program, by path (to_xsk, fail_open, fail_closed, unbound, fast_path).", xdp)?;

        // Workers.
        counters(e, "worker_frames", "Frames inspected by the worker.", s.worker_rows(|w| w.inspect.frames))?;
        counters(e, "worker_bytes", "Bytes inspected by the worker.", s.worker_rows(|w| w.inspect.bytes))?;
        let handoff = s.workers.iter().flat_map(|w| {
            [("out", w.handoff_out), ("in", w.handoff_in), ("dropped", w.handoff_dropped)]
                .map(|(d, v)| (vec![("worker", w.worker.to_string()), ("direction", d.to_string())], v))
        });
        counters(e, "worker_handoff_frames", "Frames handed between workers (out, in, dropped).", handoff)?;
        counters(e, "worker_loops", "Worker loops run.", s.worker_rows(|w| w.timing.loops))?;
        counters(e, "worker_busy_loops", "Worker loops that did work.", s.worker_rows(|w| w.timing.busy_loops))?;
        let seconds = |ns: u64| ConstCounter::new(ns as f64 / 1e9);
        family(
            e,
            "worker_busy_seconds",
            "Time the worker spent in loops that did work (s).",
            MetricType::Counter,
            s.workers.iter().map(|w| (vec![("worker", w.worker.to_string())], seconds(w.timing.busy_ns))),
        )?;
        family(
            e,
            "worker_wait_seconds",
            "Time the worker spent waiting for work (s), by how: spin (empty loops, on CPU) or sleep (in poll(2)).",
            MetricType::Counter,
            s.workers.iter().flat_map(|w| {
                [("spin", w.timing.spin_ns), ("sleep", w.timing.sleep_ns)]
                    .map(|(how, v)| (vec![("worker", w.worker.to_string()), ("how", how.to_string())], seconds(v)))
            }),
        )?;
        family(
            e,
            "worker_cpu_seconds",
            "CPU time of the worker thread, user + system (s; CLOCK_THREAD_CPUTIME_ID).",
            MetricType::Counter,
            s.workers.iter().map(|w| (vec![("worker", w.worker.to_string())], seconds(w.timing.cpu_ns))),
        )?;
        let wakes = s.workers.iter().flat_map(|w| {
            [("rx", w.timing.woken_rx), ("waker", w.timing.woken_waker), ("timer", w.timing.woken_timer)]
                .map(|(by, v)| (vec![("worker", w.worker.to_string()), ("woken_by", by.to_string())], v))
        });
        counters(e, "worker_sleeps", "Sleeps in poll(2), by what ended them: rx (frames), waker (handoff, command, policy), timer.", wakes)?;
        counters(e, "worker_loop_frames", "Frames the worker took from its rx and handoff rings (the denominator of CPU per frame).", s.worker_rows(|w| w.timing.frames))?;
        family(
            e,
            "worker_cpu_seconds_per_million_frames",
            "Since start: the worker thread's CPU time (basis=thread) or its working time (basis=busy) over its frames, per million frames.",
            MetricType::Gauge,
            s.workers.iter().flat_map(|w| {
                let (busy, thread) = w.timing.cpu_s_per_mframe().unwrap_or((0.0, 0.0));
                [("busy", busy), ("thread", thread)]
                    .map(|(b, v)| (vec![("worker", w.worker.to_string()), ("basis", b.to_string())], ConstGauge::new(v)))
            }),
        )?;
        family(
            e,
            "worker_stage_seconds",
            "Sampled time per stage (one rx batch in 64): rx, decode, inspect (sessions, apps, policy, threats), tx (s).",
            MetricType::Counter,
            s.workers.iter().flat_map(|w| {
                w.timing.stages.named().map(|(st, v)| (vec![("worker", w.worker.to_string()), ("stage", st.to_string())], seconds(v)))
            }),
        )?;
        counters(e, "worker_stage_sampled_frames", "Frames of the batches timed per stage.", s.worker_rows(|w| w.timing.stages.frames))?;
        gauges(e, "worker_frame_gap_nanoseconds", "Adaptive polling's estimate of the mean time between the worker's frames (ns).", s.worker_rows(|w| w.timing.gap_ns))?;
        {
            let mut m = e.encode_descriptor(
                "frame_processing_seconds",
                "Per-frame processing time on the worker (s): each rx batch's time over its frames.",
                None,
                MetricType::Histogram,
            )?;
            for w in &s.workers {
                let l = w.timing.latency;
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
                    .iter()
                    .map(|b| *b as f64 / 1e9)
                    .chain([f64::INFINITY])
                    .zip(l.buckets)
                    .collect();
                let labels: Labels = vec![("worker", w.worker.to_string())];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    l.sum_ns as f64 / 1e9,
                    l.count,
                    &buckets,
                    None,
                )?;
            }
        }
        let mal: Vec<&'static str> = Malformed::ALL.iter().map(|m| m.as_str()).collect();
        counters(e, "malformed_frames", "Frames that could not be decoded, by reason.", s.worker_reason_rows("reason", &mal, |w, i| w.inspect.malformed[i]))?;
        counters(e, "non_ip_frames", "Frames that are not IPv4/IPv6, forwarded untouched.", s.worker_rows(|w| w.inspect.non_ip))?;

        // Sessions.
        gauges(e, "sessions_live", "Sessions in the worker's table now.", s.worker_rows(|w| w.sessions))?;
        counters(e, "sessions_created", "Sessions created.", s.worker_rows(|w| w.table.created))?;
        counters(e, "sessions_expired", "Sessions ended by idle timeout (closed/reset linger included).", s.worker_rows(|w| w.table.expired))?;
        let evicted = s.workers.iter().flat_map(|w| {
            [
                ("lingering", w.table.evicted_lingering),
                ("embryonic", w.table.evicted_embryonic),
                ("one_way", w.table.evicted_one_way),
                ("two_way", w.table.evicted_two_way),
            ]
            .map(|(c, v)| (vec![("worker", w.worker.to_string()), ("class", c.to_string())], v))
        });
        counters(e, "sessions_evicted", "Sessions evicted because the table was full, by class.", evicted)?;
        counters(e, "sessions_refused", "New flows refused because the table was full of established TCP.", s.worker_rows(|w| w.table.refused))?;
        let side = |gauge: bool| {
            s.workers.iter().flat_map(move |w| {
                w.table
                    .side_counters()
                    .into_iter()
                    .filter(move |(k, _)| (*k == "wide" || *k == "tunnel_ends") == gauge)
                    .map(|(k, v)| (vec![("worker", w.worker.to_string()), ("part", k.to_string())], v))
            })
        };
        gauges(e, "sessions_side_entries", "Entries of the session table's side parts held now: wide (counters past 2^32), tunnel_ends.", side(true))?;
        counters(e, "sessions_side_events", "Session table side parts that found no room (a record lost that detail) and new flows the key index refused, by part.", side(false))?;

        // Policy.
        gauges(e, "policy_generation", "Generation of the running policy.", [(vec![], u64::from(s.policy_generation))])?;
        let rules = s.rules.iter().map(|r| {
            let l: Labels = match (&r.id, &r.default) {
                (Some(id), _) => vec![("rule", id.to_string()), ("mode", String::new()), ("action", r.action.clone())],
                (None, d) => {
                    vec![("rule", String::new()), ("mode", d.clone().unwrap_or_default()), ("action", r.action.clone())]
                }
            };
            (l, r.sessions)
        });
        gauges(
            e,
            "policy_sessions",
            "Sessions decided under the running policy, by rule (id) or by mode default (mode), with the action or verdict; reset when a policy is applied.",
            rules,
        )?;
        counters(e, "policy_dropped_frames", "Frames dropped because their session is denied.", s.worker_rows(|w| w.inspect.policy_dropped))?;
        counters(e, "policy_resets", "Sessions ended with TCP resets by policy.", s.worker_rows(|w| w.inspect.policy_resets))?;
        counters(e, "policy_events_dropped", "Violation/denied events lost to a full event queue.", s.worker_rows(|w| w.inspect.events_dropped))?;
        counters(e, "spoofed_frames", "Frames from a side or MAC their address does not send from.", s.worker_rows(|w| w.inspect.spoofed))?;

        // Inspection.
        let apps: Vec<&'static str> = App::ALL.iter().map(|a| a.as_str()).collect();
        counters(e, "app_sessions", "TCP/UDP sessions whose app was decided, by app (each change counts).", s.worker_reason_rows("app", &apps, |w, i| w.inspect.apps[i]))?;
        counters(
            e,
            "inspection_bypassed_sessions",
            "Sessions forwarded without an app context (pool empty), whatever the policy.",
            s.worker_rows(|w| w.app_pool_full),
        )?;
        counters(e, "app_redetections", "Times a parser rejected its stream and detection ran again.", s.worker_rows(|w| w.app_redetections))?;

        // XDP fast path (`crate::fastpath`).
        counters(e, "fast_path_offloaded_sessions", "Times a session was put on the XDP fast path.", s.worker_rows(|w| w.fast.offloaded))?;
        gauges(e, "fast_path_active_sessions", "Sessions on the XDP fast path now.", s.worker_rows(|w| w.fast.active))?;
        counters(e, "fast_path_frames", "Frames the kernel forwarded on the fast path for the worker's sessions (pulled back).", s.worker_rows(|w| w.fast.frames))?;
        counters(e, "fast_path_bytes", "Bytes of those frames (L2, no FCS).", s.worker_rows(|w| w.fast.bytes))?;
        counters(e, "fast_path_refused_sessions", "Sessions that qualified while the worker's fast path entries were all in use.", s.worker_rows(|w| w.fast.refused_full))?;
        counters(e, "fast_path_errors", "Fast path map updates or reads the kernel refused.", s.worker_rows(|w| w.fast.errors))?;
        let reasons: Vec<&'static str> = crate::fastpath::RemoveReason::ALL.iter().map(|r| r.as_str()).collect();
        counters(e, "fast_path_removed_sessions", "Sessions taken off the fast path, by reason.", s.worker_reason_rows("reason", &reasons, |w, i| w.fast.removed[i]))?;
        let threats = s.threats.iter().map(|(t, n)| (vec![("threat", (*t).to_string())], *n));
        counters(e, "threat_sessions", "Sessions with a threat detected, by threat kind (counted by the reporter).", threats)?;
        let exc: Vec<&'static str> = ExceptionReason::ALL.iter().map(|r| r.as_str()).collect();
        counters(e, "inspection_exceptions", "Sessions the exception policy decided (not inspectable), by reason.", s.worker_reason_rows("reason", &exc, |w, i| w.inspect.exceptions[i]))?;
        let mut norm: Vec<&'static str> = Anomaly::ALL.iter().map(|a| a.as_str()).collect();
        norm.push("syn_data_resyncs");
        counters(
            e,
            "normalization_anomalies",
            "TCP segments not fed to state or inspection, by reason (and SYN-data resyncs).",
            s.worker_reason_rows("reason", &norm, |w, i| {
                w.inspect.anomalies.get(i).copied().unwrap_or(w.inspect.syn_data_resyncs)
            }),
        )?;
        let icmp = s.workers.iter().flat_map(|w| {
            w.inspect
                .icmp
                .named()
                .map(|(k, v)| (vec![("worker", w.worker.to_string()), ("kind", k.to_string())], v))
        });
        counters(e, "icmp", "ICMP errors, redirects and echo direction checks, by kind.", icmp)?;
        let tunnels = s.workers.iter().flat_map(|w| {
            w.inspect.tunnels.named().map(|(k, v)| (vec![("worker", w.worker.to_string()), ("kind", k.to_string())], v))
        });
        counters(
            e,
            "tunnel_frames",
            "Tunnel packets by tunnel type (inner packets decapsulated) and by problem (malformed, too_deep, inner_fragments).",
            tunnels,
        )?;
        let defrag = s.workers.iter().flat_map(|w| {
            let d = &w.defrag;
            [
                ("fragments", d.fragments),
                ("reassembled", d.reassembled),
                ("timeouts", d.timeouts),
                ("overlaps", d.overlaps),
                ("too_big", d.too_big),
                ("full", d.full),
                ("malformed", d.malformed),
                ("exceptions", d.exceptions),
            ]
            .map(|(k, v)| (vec![("worker", w.worker.to_string()), ("event", k.to_string())], v))
        });
        counters(e, "defrag", "IP reassembly: fragment frames, datagrams reassembled or failed, by event.", defrag)?;
        gauges(e, "defrag_held_frames", "Fragment frames held for reassembly now.", s.worker_rows(|w| w.defrag.held))?;

        // Reports.
        gauges(e, "report_queue_depth", "Worker reports queued to the reporter now.", [(vec![], s.report.queue_depth as u64)])?;
        gauges(e, "report_queue_capacity", "Capacity of the worker-to-reporter queue (reports).", [(vec![], s.report.queue_capacity as u64)])?;
        gauges(e, "report_subscribers", "Report subscribers connected.", [(vec![], s.report.subscribers as u64)])?;
        gauges(e, "report_subscriber_queued_batches", "Report batches queued to subscribers now.", [(vec![], s.report.subscriber_queued as u64)])?;
        let overflow = s
            .workers
            .iter()
            .map(|w| (vec![("stage", "worker".to_string()), ("worker", w.worker.to_string())], w.report_overflow + w.table.ended_overflow))
            .chain([(vec![("stage", "reporter".to_string()), ("worker", String::new())], s.report.reporter_overflow)]);
        counters(e, "report_overflow_records", "Connection records lost to full queues (worker side, reporter side).", overflow)?;
        counters(e, "log_warnings_suppressed", "Repeated warnings not logged by the rate limiter.", [(vec![], s.log_suppressed)])?;
        Ok(())
    }
}

/// Renders `s` as OpenMetrics text (every name prefixed `warden_`; counters end in `_total`).
pub fn render(s: Snapshot) -> String {
    let mut reg = Registry::with_prefix("warden");
    reg.register_collector(Box::new(Exposition(s)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        // Only a formatting error of our own rows can get here: say so in the body.
        out.clear();
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

/// Most HTTP connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 4;
/// Read and write timeout of a metrics connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read (bytes).
pub const MAX_HEAD: usize = 8192;

/// Where a scrape gets its snapshot: `None` when the control loop did not answer in time.
pub type Source = Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// Binds `addr` and serves `GET /metrics` from `source` on a thread of its own (`warden-metrics`).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub fn serve(addr: SocketAddr, source: Source) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    thread::Builder::new().name("warden-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    crate::warn_limited!("metrics: accept: {e}");
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
                continue;
            }
            let (active, source) = (active.clone(), source.clone());
            let spawned = thread::Builder::new().name("warden-metrics-conn".into()).spawn(move || {
                if let Err(e) = answer(stream, &source) {
                    tracing::debug!("metrics connection: {e}");
                }
                active.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                crate::warn_limited!("metrics: cannot start a connection thread");
            }
        }
    })?;
    Ok(local)
}

/// The request line of a head: (method, path without query).
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    Some((method, target.split('?').next().unwrap_or(target)))
}

fn answer(mut stream: TcpStream, source: &Source) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "request head too large\n");
        }
    }
    match request_line(&head) {
        Some(("GET", "/metrics")) => match source() {
            Some(s) => respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &render(s),
            ),
            None => respond(&mut stream, "503 Service Unavailable", "text/plain", "the control loop did not answer\n"),
        },
        Some(("GET", "/")) => respond(&mut stream, "200 OK", "text/plain", "warden metrics: GET /metrics\n"),
        Some(("GET", _)) => respond(&mut stream, "404 Not Found", "text/plain", "not found (GET /metrics)\n"),
        Some(_) => respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n"),
        None => respond(&mut stream, "400 Bad Request", "text/plain", "bad request\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::IfCounters;

    /// The value of the sample `name{labels}` (labels exactly as rendered), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }

    fn fake() -> Snapshot {
        let mut w0 = WorkerStats { worker: 0, sessions: 7, ..Default::default() };
        w0.inspect.frames = 1000;
        w0.inspect.bytes = 64_000;
        w0.inspect.apps[App::Http as usize] = 3;
        w0.inspect.malformed[Malformed::ALL[0] as usize] = 2;
        w0.inspect.exceptions[ExceptionReason::ALL[0] as usize] = 4;
        w0.inspect.anomalies[Anomaly::ALL[0] as usize] = 5;
        w0.inspect.syn_data_resyncs = 6;
        w0.table.created = 11;
        w0.table.expired = 4;
        w0.table.evicted_embryonic = 9;
        w0.defrag.reassembled = 8;
        w0.report_overflow = 1;
        w0.table.ended_overflow = 2;
        let mut c = IfCounters { rx_frames: 600, rx_bytes: 38_400, tx_frames: 590, tx_bytes: 37_760, ..Default::default() };
        c.dropped[DropReason::PolicyDenied as usize] = 10;
        c.fill_ring_empty = 12;
        w0.ifaces.insert(3, c);
        w0.timing.loops = 100;
        w0.app_pool_full = 14;
        w0.timing.busy(Duration::from_micros(1500));
        w0.timing.spin(Duration::from_micros(500));
        w0.timing.slept(Duration::from_millis(3), true, false);
        w0.timing.slept(Duration::from_millis(1), false, true);
        w0.timing.slept(Duration::from_millis(100), false, false);
        w0.timing.frames = 3000;
        w0.timing.cpu_ns = 6_000_000;
        w0.timing.gap_ns = 33_000;
        w0.timing.stages = Stages { frames: 64, rx_ns: 640, decode_ns: 3200, inspect_ns: 19_200, tx_ns: 6400 };
        w0.timing.latency.observe_batch(Duration::from_nanos(64 * 300), 64);
        w0.timing.latency.observe_batch(Duration::from_micros(5), 1);
        let w1 = WorkerStats { worker: 1, sessions: 2, ..Default::default() };
        Snapshot {
            uptime_s: 42,
            pairs: 1,
            workers: vec![w0, w1],
            interfaces: vec![
                Interface { name: "wa0".into(), slot: 3, xdp: XdpCounters { to_xsk: 600, unbound: 1, ..Default::default() }, monitor: false },
                Interface { name: "wb0".into(), slot: 4, xdp: XdpCounters::default(), monitor: false },
            ],
            policy_generation: 2,
            rules: vec![
                RuleStats { id: Some(7), default: None, action: "allow".into(), sessions: 5 },
                RuleStats { id: None, default: Some("protect".into()), action: "denied".into(), sessions: 1 },
            ],
            report: ReportHealth { queue_depth: 3, queue_capacity: 256, subscribers: 1, subscriber_queued: 0, reporter_overflow: 13 },
            threats: vec![("sql_injection", 2)],
            log_suppressed: 0,
        }
    }

    #[test]
    fn names_labels_and_values_come_from_the_snapshot() {
        let t = render(fake());
        let v = |s: &str| sample(&t, s).unwrap_or_else(|| panic!("no sample {s} in\n{t}"));
        assert_eq!(v("warden_uptime_seconds"), 42.0);
        assert_eq!(v(r#"warden_interface_rx_frames_total{interface="wa0",worker="0"}"#), 600.0);
        assert_eq!(v(r#"warden_interface_tx_bytes_total{interface="wa0",worker="0"}"#), 37_760.0);
        assert_eq!(v(r#"warden_interface_dropped_frames_total{interface="wa0",worker="0",reason="policy_denied"}"#), 10.0);
        assert_eq!(v(r#"warden_xsk_fill_ring_empty_total{interface="wa0",worker="0"}"#), 12.0);
        // wb0 is served by no worker in this snapshot: no per-worker row, only the XDP one.
        assert!(!t.contains(r#"warden_interface_rx_frames_total{interface="wb0""#));
        assert_eq!(v(r#"warden_xdp_frames_total{interface="wa0",path="to_xsk"}"#), 600.0);
        assert_eq!(v(r#"warden_xdp_frames_total{interface="wa0",path="unbound"}"#), 1.0);
        assert_eq!(v(r#"warden_worker_frames_total{worker="0"}"#), 1000.0);
        assert_eq!(v(r#"warden_worker_frames_total{worker="1"}"#), 0.0);
        assert_eq!(v(r#"warden_sessions_live{worker="0"}"#), 7.0);
        assert_eq!(v(r#"warden_sessions_created_total{worker="0"}"#), 11.0);
        assert_eq!(v(r#"warden_sessions_expired_total{worker="0"}"#), 4.0);
        assert_eq!(v(r#"warden_sessions_evicted_total{worker="0",class="embryonic"}"#), 9.0);
        assert_eq!(v(r#"warden_app_sessions_total{worker="0",app="http"}"#), 3.0);
        assert_eq!(v(r#"warden_app_sessions_total{worker="0",app="tls"}"#), 0.0);
        assert_eq!(v(r#"warden_threat_sessions_total{threat="sql_injection"}"#), 2.0);
        assert_eq!(v(r#"warden_inspection_bypassed_sessions_total{worker="0"}"#), 14.0);
        let mal = format!(r#"warden_malformed_frames_total{{worker="0",reason="{}"}}"#, Malformed::ALL[0].as_str());
        assert_eq!(v(&mal), 2.0);
        let exc = format!(r#"warden_inspection_exceptions_total{{worker="0",reason="{}"}}"#, ExceptionReason::ALL[0].as_str());
        assert_eq!(v(&exc), 4.0);
        let an = format!(r#"warden_normalization_anomalies_total{{worker="0",reason="{}"}}"#, Anomaly::ALL[0].as_str());
        assert_eq!(v(&an), 5.0);
        assert_eq!(v(r#"warden_normalization_anomalies_total{worker="0",reason="syn_data_resyncs"}"#), 6.0);
        assert_eq!(v(r#"warden_defrag_total{worker="0",event="reassembled"}"#), 8.0);
        assert_eq!(v(r#"warden_policy_sessions{rule="7",mode="",action="allow"}"#), 5.0);
        assert_eq!(v(r#"warden_policy_sessions{rule="",mode="protect",action="denied"}"#), 1.0);
        assert_eq!(v("warden_policy_generation"), 2.0);
        assert_eq!(v("warden_report_queue_depth"), 3.0);
        assert_eq!(v(r#"warden_report_overflow_records_total{stage="worker",worker="0"}"#), 3.0);
        assert_eq!(v(r#"warden_report_overflow_records_total{stage="reporter",worker=""}"#), 13.0);
        assert_eq!(v(r#"warden_worker_loops_total{worker="0"}"#), 100.0);
        assert_eq!(v(r#"warden_worker_busy_loops_total{worker="0"}"#), 1.0);
        assert_eq!(v(r#"warden_worker_busy_seconds_total{worker="0"}"#), 0.0015);
        assert_eq!(v(r#"warden_worker_wait_seconds_total{worker="0",how="spin"}"#), 0.0005);
        assert_eq!(v(r#"warden_worker_wait_seconds_total{worker="0",how="sleep"}"#), 0.104);
        assert_eq!(v(r#"warden_worker_cpu_seconds_total{worker="0"}"#), 0.006);
        assert_eq!(v(r#"warden_worker_sleeps_total{worker="0",woken_by="rx"}"#), 1.0);
        assert_eq!(v(r#"warden_worker_sleeps_total{worker="0",woken_by="waker"}"#), 1.0);
        assert_eq!(v(r#"warden_worker_sleeps_total{worker="0",woken_by="timer"}"#), 1.0);
        assert_eq!(v(r#"warden_worker_loop_frames_total{worker="0"}"#), 3000.0);
        // 1.5 ms working and 6 ms of CPU over 3000 frames: 0.5 and 2 s per million frames.
        assert_eq!(v(r#"warden_worker_cpu_seconds_per_million_frames{worker="0",basis="busy"}"#), 0.5);
        assert_eq!(v(r#"warden_worker_cpu_seconds_per_million_frames{worker="0",basis="thread"}"#), 2.0);
        assert_eq!(v(r#"warden_worker_cpu_seconds_per_million_frames{worker="1",basis="thread"}"#), 0.0);
        assert_eq!(v(r#"warden_worker_frame_gap_nanoseconds{worker="0"}"#), 33_000.0);
        assert_eq!(v(r#"warden_worker_stage_sampled_frames_total{worker="0"}"#), 64.0);
        assert_eq!(v(r#"warden_worker_stage_seconds_total{worker="0",stage="inspect"}"#), 19_200e-9);
        assert_eq!(v(r#"warden_worker_stage_seconds_total{worker="0",stage="tx"}"#), 6400e-9);
        // Histogram: 64 frames at 300 ns (bucket le=5e-7), one at 5 us (le=5e-6); cumulative.
        assert_eq!(v(r#"warden_frame_processing_seconds_count{worker="0"}"#), 65.0);
        assert_eq!(v(r#"warden_frame_processing_seconds_bucket{le="2e-7",worker="0"}"#), 0.0);
        assert_eq!(v(r#"warden_frame_processing_seconds_bucket{le="5e-7",worker="0"}"#), 64.0);
        assert_eq!(v(r#"warden_frame_processing_seconds_bucket{le="0.000005",worker="0"}"#), 65.0);
        assert_eq!(v(r#"warden_frame_processing_seconds_bucket{le="+Inf",worker="0"}"#), 65.0);
        let sum = v(r#"warden_frame_processing_seconds_sum{worker="0"}"#);
        assert!((sum - (64.0 * 300e-9 + 5e-6)).abs() < 1e-12, "{sum}");
        assert!(t.contains("# TYPE warden_sessions_created counter"));
        assert!(t.contains("# TYPE warden_frame_processing_seconds histogram"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn every_metric_the_grafana_dashboard_uses_is_exposed() {
        let dash = include_str!("../../conf/grafana-warden.json");
        let t = render(fake());
        let mut used = 0;
        for (i, _) in dash.match_indices("warden_") {
            let name: String = dash[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(t.lines().any(|l| l.starts_with(&name)), "dashboard uses {name}, not in the exposition");
            used += 1;
        }
        assert!(used >= 10, "{used}");
    }

    #[test]
    fn latency_buckets_by_mean_per_frame() {
        let mut l = Latency::default();
        l.observe_batch(Duration::from_nanos(100 * 10), 10); // 100 ns each: first bucket
        l.observe_batch(Duration::from_nanos(101), 1); // just above: second
        l.observe_batch(Duration::from_millis(5), 2); // 2.5 ms each: +Inf
        l.observe_batch(Duration::from_millis(5), 0); // nothing
        assert_eq!(l.buckets[0], 10);
        assert_eq!(l.buckets[1], 1);
        assert_eq!(l.buckets[LATENCY_BOUNDS_NS.len()], 2);
        assert_eq!((l.count, l.sum_ns), (13, 1_000 + 101 + 5_000_000));
    }

    #[test]
    fn request_lines() {
        assert_eq!(request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(("GET", "/metrics")));
        assert_eq!(request_line(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some(("GET", "/metrics")));
        assert_eq!(request_line(b"POST /metrics HTTP/1.1\r\n\r\n"), Some(("POST", "/metrics")));
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe"), None);
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let src: Source = Arc::new(|| Some(fake()));
        let addr = serve("127.0.0.1:0".parse().unwrap(), src).unwrap();
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(r#"warden_worker_frames_total{worker="0"} 1000"#), "{ok}");
        assert!(get("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        assert!(get(&big).starts_with("HTTP/1.1 431"));
        let none: Source = Arc::new(|| None);
        let addr2 = serve("127.0.0.1:0".parse().unwrap(), none).unwrap();
        let mut s = TcpStream::connect(addr2).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    }
}
