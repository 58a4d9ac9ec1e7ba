//! `ip_src_session_limit`: one source holding more than N sessions at once.
//!
//! [`SessionLimit::open`] is asked before a session is created (`allowed` or not) and
//! [`SessionLimit::close`] is told when a session that was allowed stops holding resources.
//!
//! # Counting across workers: a count-min sketch of atomic counters
//!
//! Sessions are owned by workers by the hash of their two addresses, so one source's sessions
//! to different servers live on different workers: a per-core count would let a source hold N
//! sessions *per worker*. The counts are therefore kept in [`SourceCounts`], one table shared by
//! every worker (like the expectation and DNS-name tables): two rows of `cells` atomic `u32`
//! counters, each (zone, source) adding to one cell per row chosen by a per-process random hash;
//! its count is the smaller of its two cells. Opening and closing a session are one `fetch_add`
//! / `fetch_sub` per row (per session, not per packet); no lock, no allocation, no `unsafe`.
//!
//! # What happens when the table is "full"
//!
//! A sketch never refuses a key and never *under*counts: collisions can only add other
//! sources' sessions to a cell, so no source ever gets past the limit unseen, whatever the
//! number of sources. What a crowded sketch costs is the opposite error, a source refused early
//! because both its cells also count others. That is measured: when the sessions live in the
//! whole sketch, spread over one row, exceed an eighth of the limit per cell, every open is
//! counted as `crowded` in [`LimitStats`] (raise `cells`). With the defaults (65 536 cells per
//! row, limit 2000) that takes over 16 million live sessions.
//!
//! Concurrent opens from several workers cannot overshoot either: an open adds first and
//! compares the value its own `fetch_add` returned, and takes its count back when refused.
//!
//! # Threshold: NeuVector's and ours
//!
//! NeuVector's dp (`dp/dpi/dpi_meter.c`, `ip_src_session`) counts live sessions per source
//! address (all destinations), refuses the session that reaches 2000, and ships the threat
//! switched off. We keep 2000 as the default, counted per (zone, source) over all workers
//! (NeuVector's count is per dp thread as well), and report each over-limit source at most once
//! per `report_interval_s` per core (the threat stage merges events further). A source behind
//! NAT (a node address under kube-proxy SNAT, a proxy) can legitimately hold more: raise
//! `max_sessions` for it in `[threats.ip_src_session_limit]`.
//!
//! Sessions count from [`SessionLimit::open`] to [`SessionLimit::close`]; the caller should
//! close when the TCP session is closed or reset (not after the closed session's linger), or
//! when any session is expired or evicted, so a client making many short connections (`ab` in
//! our captures) holds only its open ones.

use super::flood::{Finding, Lookup, Sets};
use crate::detect::ThreatId;
use crate::flow::Addr;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// `[threats.ip_src_session_limit]` thresholds and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimitConfig {
    /// Sessions one (zone, source address) may hold at once; the next one is over the limit.
    /// Default 2000 (NeuVector's).
    pub max_sessions: u32,
    /// Counters per row of the shared sketch (rounded up to a power of two; two rows of
    /// `u32`). Default 65 536 (512 KiB in all).
    pub cells: usize,
    /// Seconds between two findings about the same source (per core). Default 10.
    pub report_interval_s: u32,
}

impl Default for SessionLimitConfig {
    fn default() -> Self {
        SessionLimitConfig { max_sessions: 2000, cells: 65_536, report_interval_s: 10 }
    }
}

/// Live sessions per (zone, source address): a count-min sketch of atomic counters shared by
/// all workers (see the module doc). Created once ([`SourceCounts::new`]) and handed to each
/// worker's [`SessionLimit::shared`].
pub struct SourceCounts {
    rows: [Box<[AtomicU32]>; 2],
    mask: usize,
    hasher: hashbrown::DefaultHashBuilder,
    /// Sessions counted in the sketch (opens minus closes).
    live: AtomicU64,
    /// Closes whose cell was already 0 (a close without its open).
    unpaired: AtomicU64,
}

impl SourceCounts {
    /// A sketch of two rows of `cells` counters (rounded up to a power of two, at least 64).
    pub fn new(cells: usize) -> Arc<Self> {
        let n = cells.max(64).next_power_of_two();
        let row = || (0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>().into_boxed_slice();
        Arc::new(SourceCounts {
            rows: [row(), row()],
            mask: n - 1,
            hasher: hashbrown::DefaultHashBuilder::default(),
            live: AtomicU64::new(0),
            unpaired: AtomicU64::new(0),
        })
    }

    fn cells(&self, zone: u16, src: Addr) -> [usize; 2] {
        let h = self.hasher.hash_one((zone, src));
        [(h as usize) & self.mask, ((h >> 32) as usize) & self.mask]
    }

    /// Sessions held by `src` on `zone` (never fewer than the true count).
    pub fn estimate(&self, zone: u16, src: Addr) -> u32 {
        let [a, b] = self.cells(zone, src);
        self.rows[0][a].load(Ordering::Relaxed).min(self.rows[1][b].load(Ordering::Relaxed))
    }

    /// Adds one session; the estimate including it.
    fn add(&self, zone: u16, src: Addr) -> u32 {
        let [a, b] = self.cells(zone, src);
        self.live.fetch_add(1, Ordering::Relaxed);
        let x = self.rows[0][a].fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let y = self.rows[1][b].fetch_add(1, Ordering::Relaxed).saturating_add(1);
        x.min(y)
    }

    /// Takes one session back; false when a cell was already 0 (nothing to take).
    fn sub(&self, zone: u16, src: Addr) -> bool {
        let [a, b] = self.cells(zone, src);
        let dec = |c: &AtomicU32| c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok();
        let x = dec(&self.rows[0][a]);
        let y = dec(&self.rows[1][b]);
        let _ = self.live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        if !(x && y) {
            self.unpaired.fetch_add(1, Ordering::Relaxed);
        }
        x && y
    }

    /// Sessions counted in the sketch.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Closes that found nothing to take back (over all workers).
    pub fn unpaired(&self) -> u64 {
        self.unpaired.load(Ordering::Relaxed)
    }

    /// Counters per row.
    pub fn cells_per_row(&self) -> usize {
        self.mask + 1
    }
}

/// The answer to [`SessionLimit::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Open {
    /// The session may open and was counted: call [`SessionLimit::close`] when it ends. False
    /// only when `enforce` was asked and the source is over its limit (nothing was counted).
    pub allowed: bool,
    /// The source holds more than the limit with this session.
    pub over: bool,
    /// The first over-limit open of this source in `report_interval_s`.
    pub finding: Option<Finding>,
}

/// Counters of a [`SessionLimit`] (per core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitStats {
    /// Opens asked.
    pub opens: u64,
    /// Opens over the limit.
    pub over: u64,
    /// Opens refused (over the limit, with `enforce`).
    pub refused: u64,
    /// Closes.
    pub closes: u64,
    /// Closes that found nothing to take back (a close without its open).
    pub unpaired: u64,
    /// Opens while the shared sketch was crowded (estimates may include other sources).
    pub crowded: u64,
}

/// `ip_src_session_limit` detector of one worker.
pub struct SessionLimit {
    cfg: SessionLimitConfig,
    counts: Arc<SourceCounts>,
    reported: Sets<(u16, Addr), u64>,
    stats: LimitStats,
}

impl SessionLimit {
    /// A detector with a sketch of its own (one worker, replay, tests).
    pub fn new(cfg: &SessionLimitConfig) -> Self {
        Self::shared(cfg, SourceCounts::new(cfg.cells))
    }

    /// A worker's detector over the sketch all workers share.
    pub fn shared(cfg: &SessionLimitConfig, counts: Arc<SourceCounts>) -> Self {
        SessionLimit { cfg: *cfg, counts, reported: Sets::new(1024), stats: LimitStats::default() }
    }

    /// The sketch (to share with other workers).
    pub fn counts(&self) -> &Arc<SourceCounts> {
        &self.counts
    }

    /// A session from `src` on `zone` is about to open at `now_ns`. With `enforce` (protect mode
    /// and a blocking action) a session over the limit is refused and not counted; without it,
    /// it is counted and reported. `dst`/`port` (the session's server) only go into the finding.
    pub fn open(&mut self, zone: u16, src: Addr, dst: Addr, port: u16, enforce: bool, now_ns: u64) -> Open {
        self.stats.opens += 1;
        let c = &self.counts;
        let max = self.cfg.max_sessions;
        if c.live() / c.cells_per_row() as u64 > u64::from(max / 8) {
            self.stats.crowded += 1;
        }
        let est = c.add(zone, src);
        let over = est > max;
        let mut out = Open { allowed: true, over, finding: None };
        if !over {
            return out;
        }
        self.stats.over += 1;
        if enforce {
            c.sub(zone, src);
            self.stats.refused += 1;
            out.allowed = false;
        }
        let interval = u64::from(self.cfg.report_interval_s) * super::flood::WINDOW_NS;
        let due = match self.reported.lookup((zone, src), |at| Some(*at), || 0) {
            Lookup::Hit(i) | Lookup::Inserted { idx: i, .. } => {
                let at = self.reported.val_mut(i);
                let due = *at == 0 || now_ns.saturating_sub(*at) >= interval;
                if due {
                    *at = now_ns.max(1);
                }
                due
            }
            Lookup::Full => true,
        };
        if due {
            out.finding = Some(Finding {
                id: ThreatId::IpSrcSessionLimit,
                reason: "sessions_over_limit",
                zone,
                src,
                dst,
                port,
                value: u64::from(est),
                limit: u64::from(max),
            });
        }
        out
    }

    /// A session from `src` on `zone` that [`SessionLimit::open`] allowed has ended.
    pub fn close(&mut self, zone: u16, src: Addr) {
        self.stats.closes += 1;
        if !self.counts.sub(zone, src) {
            self.stats.unpaired += 1;
        }
    }

    /// Sessions `src` holds on `zone` (the sketch's estimate, never below the true count).
    pub fn live(&self, zone: u16, src: Addr) -> u32 {
        self.counts.estimate(zone, src)
    }

    /// The counters.
    pub fn stats(&self) -> LimitStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(x: u32) -> Addr {
        let o = x.to_be_bytes();
        Addr::v4([198, 18 + (o[1] & 1), o[2], o[3]])
    }

    #[test]
    fn the_session_over_the_limit_is_refused_and_a_close_makes_room() {
        let cfg = SessionLimitConfig { max_sessions: 3, ..SessionLimitConfig::default() };
        let mut l = SessionLimit::new(&cfg);
        for _ in 0..3 {
            assert_eq!(l.open(1, a(1), a(2), 80, true, 0), Open { allowed: true, over: false, finding: None });
        }
        let o = l.open(1, a(1), a(2), 80, true, 5);
        assert!(!o.allowed && o.over);
        let f = o.finding.unwrap();
        assert_eq!((f.id, f.reason, f.src, f.dst, f.port, f.value, f.limit), (ThreatId::IpSrcSessionLimit, "sessions_over_limit", a(1), a(2), 80, 4, 3));
        assert_eq!(l.live(1, a(1)), 3, "a refused session is not counted");
        // Other sources and zones are not limited by it.
        assert!(l.open(1, a(9), a(2), 80, true, 6).allowed);
        assert!(l.open(2, a(1), a(2), 80, true, 6).allowed);
        l.close(1, a(1));
        assert!(l.open(1, a(1), a(2), 80, true, 7).allowed);
        // Reported at most once per interval per source.
        assert!(l.open(1, a(1), a(2), 80, true, 8).finding.is_none());
        assert!(l.open(1, a(1), a(2), 80, true, 11 * 1_000_000_000).finding.is_some());
        let s = l.stats();
        assert_eq!((s.opens, s.over, s.refused, s.closes, s.unpaired), (9, 3, 3, 1, 0));
    }

    #[test]
    fn without_enforce_over_limit_sessions_are_counted_and_reported() {
        let cfg = SessionLimitConfig { max_sessions: 2, ..SessionLimitConfig::default() };
        let mut l = SessionLimit::new(&cfg);
        let over: Vec<bool> = (0..5).map(|i| l.open(0, a(1), a(2), 22, false, i).over).collect();
        assert_eq!(over, [false, false, true, true, true]);
        assert_eq!(l.live(0, a(1)), 5);
        for _ in 0..5 {
            l.close(0, a(1));
        }
        assert_eq!(l.live(0, a(1)), 0);
        l.close(0, a(1));
        assert_eq!((l.stats().unpaired, l.counts().unpaired()), (1, 1));
        assert!(!l.open(0, a(1), a(2), 22, false, 9).over);
    }

    #[test]
    fn workers_sharing_the_sketch_never_let_a_source_past_the_limit() {
        let cfg = SessionLimitConfig { max_sessions: 100, ..SessionLimitConfig::default() };
        let counts = SourceCounts::new(cfg.cells);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let mut l = SessionLimit::shared(&cfg, counts.clone());
                std::thread::spawn(move || (0..1000).filter(|i| l.open(0, a(1), a(2), 80, true, *i).allowed).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 100);
        assert_eq!(counts.estimate(0, a(1)), 100);
    }

    #[test]
    fn a_crowded_sketch_overcounts_never_undercounts_and_says_so() {
        let cfg = SessionLimitConfig { max_sessions: 64, cells: 64, report_interval_s: 10 };
        let mut l = SessionLimit::new(&cfg);
        let mut truth = std::collections::HashMap::new();
        let mut rng = crate::app::testutil::Rng(7);
        for _ in 0..5000 {
            let src = a(rng.below(700) as u32);
            l.open(0, src, a(2), 80, false, 0);
            *truth.entry(src).or_insert(0u32) += 1;
        }
        for (src, n) in &truth {
            assert!(l.live(0, *src) >= *n);
        }
        assert!(l.stats().crowded > 0);
        let fresh = SessionLimit::new(&SessionLimitConfig::default());
        assert_eq!(fresh.stats().crowded, 0);
    }
}
