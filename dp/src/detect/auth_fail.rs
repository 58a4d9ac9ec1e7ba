//! `mysql_access_denied`: repeated MySQL / MariaDB authentication failures from one client to
//! one server, per core, on the packet clock.
//!
//! **Fact from the parser.** [`crate::app::mysql::Mysql::auth_failures`] counts the server's
//! `ERR_Packet`s 1045 / 1698 / SQL state 28000 in a session; the caller reports each increase
//! with [`AuthFailures::failed`].
//!
//! **Heuristic.** NeuVector's dp raises the threat on every single denied login (1045 or 1044)
//! of a session, merged into one event per 10 s by its log cache: a mistyped password is an
//! event. Here a finding is *repeated* failure: at least [`Config::threshold`] failures from one
//! (zone, client address, server address, server port) within [`Config::window_ns`]
//! (defaults: 5 in 60 s: people retype a password two or three times, password guessers
//! (hydra, medusa, nmap's `mysql-brute`, a `mariadb -pwrong` loop) do several per second).
//! Keyed by client address, not session, so that one connection per guess (what the MySQL
//! protocol forces, bar `COM_CHANGE_USER`) adds up; slower guessing needs a longer window.
//! After a finding, the key is reported again at most once per [`Config::report_interval_ns`]
//! while it keeps failing, with the count in the window.
//!
//! **Bounds.** [`Config::max_keys`] keys, each with the times of its last [`MAX_THRESHOLD`]
//! failures (the window is exact, not estimated), allocated at construction. A failure looks its
//! key up by a linear scan (failures arrive at most at the rate a server answers logins, each
//! costing the client a connection and a handshake); a new key in a full table replaces the key
//! whose last failure is oldest (counted).

use crate::flow::Addr;

/// Most failures remembered per key; [`Config::threshold`] is clamped to it.
pub const MAX_THRESHOLD: usize = 32;

/// Who failed against whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key {
    /// Zone (inline pair).
    pub zone: u16,
    /// Client address.
    pub client: Addr,
    /// Server address.
    pub server: Addr,
    /// Server port.
    pub port: u16,
}

/// Thresholds and bounds (`[threats.mysql_access_denied]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Failures within [`Config::window_ns`] that make a finding (5; 1 to [`MAX_THRESHOLD`]).
    pub threshold: u32,
    /// The window (ns; 60 s).
    pub window_ns: u64,
    /// Keys tracked per core (1024).
    pub max_keys: usize,
    /// Least time between two findings for one key (ns; 10 s).
    pub report_interval_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { threshold: 5, window_ns: 60_000_000_000, max_keys: 1024, report_interval_ns: 10_000_000_000 }
    }
}

/// Repeated failures of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Client, server.
    pub key: Key,
    /// Failures within the window (at most [`MAX_THRESHOLD`] are remembered).
    pub in_window: u32,
    /// Failures of this key since it was tracked (saturating).
    pub total: u32,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys tracked now.
    pub keys: u32,
    /// Keys replaced because the table was full.
    pub evicted: u64,
    /// Findings returned.
    pub findings: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Key,
    /// Failure times, a ring of `Config::threshold` (the oldest at `next`).
    times: [u64; MAX_THRESHOLD],
    next: u8,
    seen: u8,
    total: u32,
    last_ns: u64,
    reported_ns: Option<u64>,
}

/// The per-core detector (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthFailures {
    cfg: Config,
    k: usize,
    entries: Vec<Entry>,
    stats: Stats,
}

impl AuthFailures {
    /// A detector with `cfg`'s bounds, all memory allocated here.
    pub fn new(cfg: Config) -> Self {
        let k = (cfg.threshold as usize).clamp(1, MAX_THRESHOLD);
        AuthFailures { cfg, k, entries: Vec::with_capacity(cfg.max_keys.max(1)), stats: Stats::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats { keys: self.entries.len() as u32, ..self.stats }
    }

    /// `n` authentication failures of `key` at `now_ns` (packet clock). Returns a finding when
    /// the key has [`Config::threshold`] failures within [`Config::window_ns`] (at most one
    /// per [`Config::report_interval_ns`]).
    pub fn failed(&mut self, key: Key, n: u32, now_ns: u64) -> Option<Finding> {
        if n == 0 {
            return None;
        }
        let i = match self.entries.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => self.insert(key, now_ns),
        };
        let k = self.k;
        let e = &mut self.entries[i];
        for _ in 0..n.min(k as u32) {
            e.times[usize::from(e.next)] = now_ns;
            e.next = ((usize::from(e.next) + 1) % k) as u8;
            e.seen = e.seen.saturating_add(1).min(k as u8);
        }
        e.total = e.total.saturating_add(n);
        e.last_ns = e.last_ns.max(now_ns);
        let in_window = e.times[..usize::from(e.seen)]
            .iter()
            .filter(|&&t| now_ns.saturating_sub(t) < self.cfg.window_ns)
            .count() as u32;
        if (in_window as usize) < k {
            return None;
        }
        if e.reported_ns.is_some_and(|t| now_ns.saturating_sub(t) < self.cfg.report_interval_ns) {
            return None;
        }
        e.reported_ns = Some(now_ns);
        self.stats.findings += 1;
        Some(Finding { key, in_window, total: e.total })
    }

    /// A new entry for `key`: a free one, else the one whose last failure is oldest.
    fn insert(&mut self, key: Key, now_ns: u64) -> usize {
        let fresh = Entry { key, times: [0; MAX_THRESHOLD], next: 0, seen: 0, total: 0, last_ns: now_ns, reported_ns: None };
        if self.entries.len() < self.cfg.max_keys.max(1) {
            self.entries.push(fresh);
            return self.entries.len() - 1;
        }
        let i = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_ns).map_or(0, |(i, _)| i);
        self.entries[i] = fresh;
        self.stats.evicted += 1;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(client: u8) -> Key {
        Key { zone: 0, client: Addr::v4([198, 18, 0, client]), server: Addr::v4([198, 18, 0, 2]), port: 3306 }
    }

    #[test]
    fn repeated_failures_in_the_window_are_a_finding() {
        let mut d = AuthFailures::new(Config::default());
        // A guessing loop: one failure per 200 ms.
        let found: Vec<_> = (0..12u64).filter_map(|i| d.failed(key(1), 1, i * S / 5)).collect();
        assert_eq!(found.len(), 1, "reported once per interval");
        assert_eq!((found[0].in_window, found[0].total), (5, 5));
        // Still failing 10 s later: reported again, with its total.
        let f = d.failed(key(1), 1, 11 * S).expect("again after the interval");
        assert_eq!(f.total, 13);
    }

    #[test]
    fn a_few_typos_or_slow_failures_are_not() {
        let mut d = AuthFailures::new(Config::default());
        for i in 0..4u64 {
            assert_eq!(d.failed(key(1), 1, i * S), None);
        }
        // One every 20 s: never 5 within 60 s.
        for i in 0..20u64 {
            assert_eq!(d.failed(key(2), 1, i * 20 * S), None);
        }
        // Other clients' failures do not add up to one client's.
        for c in 10..30 {
            assert_eq!(d.failed(key(c), 1, 100 * S), None);
        }
        // A count of several at once (several failures seen in one feed) counts them all.
        assert!(d.failed(key(3), 5, 200 * S).is_some());
    }

    #[test]
    fn bounded_with_oldest_replaced() {
        let mut d = AuthFailures::new(Config { max_keys: 8, ..Config::default() });
        for c in 0..100u8 {
            d.failed(key(c), 1, u64::from(c) * S);
        }
        assert_eq!(d.stats().keys, 8);
        assert_eq!(d.stats().evicted, 92);
        // The most recent keys are the ones kept.
        assert!(d.entries.iter().all(|e| e.last_ns >= 92 * S));
        // A threshold beyond the ring is clamped.
        let mut d = AuthFailures::new(Config { threshold: 1000, ..Config::default() });
        assert!((0..MAX_THRESHOLD as u64).filter_map(|i| d.failed(key(1), 1, i)).count() == 1);
    }
}
