//! `http_slowloris`: many connections to one server holding a partial request head open
//! (Slowloris, slowhttptest `-H`), per core, on the packet clock.
//!
//! **Fact from the parser.** After each to-server feed of an HTTP/1 session the caller reports
//! whether a request head is open ([`crate::app::http::Http::awaiting_headers`]) and how many
//! of its bytes arrived ([`crate::app::http::Http::head_bytes`]) with [`Slowloris::observe`];
//! [`Slowloris::end`] when the session ends; [`Slowloris::poll`] from the worker's timer, so
//! heads that receive nothing more still age (a slow client may send one byte a minute).
//!
//! **Heuristic.** NeuVector's dp resets any session whose head is not complete 3 s after its
//! request line (and whose first body packet comes 30 s after the head), per session; it ships
//! the threat disabled, since every slow client, lossy link or human typing into `nc` trips it.
//! Here a session is *slow* when its head has been open at least [`Config::min_open_ns`] and
//! its bytes arrived at less than [`Config::max_rate`] since it opened (Apache's
//! `mod_reqtimeout` `MinRate` is the same idea: a large head on a slow link keeps streaming and
//! is not slow); a *finding* is a server (zone, address, port) with at least
//! [`Config::min_sessions`] slow sessions at once: the attack is the many, one slow client is
//! not. Defaults: 5 s (every browser, curl and library sends its head in one flight, far below
//! it; Apache waits 20 s, nginx 60 s before giving up on a head), 500 bytes/s (`MinRate`), 10
//! sessions (slowhttptest opens 50 by default, slowloris.pl 150; a server whose worker pool is
//! small falls to a few dozen). The caller may act on the slow sessions of a server under
//! attack only ([`Slowloris::offending`]), not on its other clients.
//!
//! **Bounds.** [`Config::max_tracked`] open heads per core, allocated at construction (an
//! open-addressing index of twice that size, keyed by session id); a head beyond it is not
//! tracked (counted). Servers live in a table of the same size (a tracked head holds one
//! entry; a server with no tracked head is removed), keyed by a hash keyed at random per
//! detector. Nothing is allocated per call; [`Slowloris::poll`] visits at most
//! [`Config::poll_budget`] slots. A tracked head that is not observed for
//! [`Config::idle_ns`] is forgotten (its session ended without [`Slowloris::end`]).
//!
//! Counts are per core: flows are owned by core by addresses, so the sessions of one client
//! meet on one core, while those of many clients spread over the cores; with `n` workers a
//! distributed attack of `s` sessions shows about `s / n` per core.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::flow::Addr;

/// A server: the inline pair (zone), its address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ServerKey {
    /// Zone (inline pair) of the session.
    pub zone: u16,
    /// Server address.
    pub addr: Addr,
    /// Server port.
    pub port: u16,
}

/// Thresholds and bounds (`[threats.http_slowloris]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a request head must stay open before its session can be slow (ns; 5 s).
    pub min_open_ns: u64,
    /// A head open that long is slow while its bytes arrived below this rate since it opened
    /// (bytes per second; 500).
    pub max_rate: u32,
    /// Slow sessions to one server at once that make a finding (10).
    pub min_sessions: u32,
    /// Open heads tracked per core (4096).
    pub max_tracked: usize,
    /// Least time between two findings for one server (ns; 10 s).
    pub report_interval_ns: u64,
    /// A tracked head not observed for this long is forgotten (ns; 600 s).
    pub idle_ns: u64,
    /// Slots [`Slowloris::poll`] visits per call (256).
    pub poll_budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_open_ns: 5_000_000_000,
            max_rate: 500,
            min_sessions: 10,
            max_tracked: 4096,
            report_interval_ns: 10_000_000_000,
            idle_ns: 600_000_000_000,
            poll_budget: 256,
        }
    }
}

/// A server with many slow request heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The server.
    pub server: ServerKey,
    /// Its slow sessions on this core.
    pub slow_sessions: u32,
    /// Its open heads on this core (slow or not).
    pub open_sessions: u32,
    /// The session whose state made the finding (the last to turn slow, or the one polled).
    pub session: u64,
    /// How long that session's head has been open (ns).
    pub open_ns: u64,
    /// Its head bytes so far.
    pub head_bytes: u32,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Heads tracked now.
    pub tracked: u32,
    /// Heads not tracked because the table was full.
    pub untracked: u64,
    /// Heads forgotten after [`Config::idle_ns`].
    pub expired: u64,
    /// Findings returned.
    pub findings: u64,
}

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default)]
struct Head {
    session: u64,
    server: u32,
    t0_ns: u64,
    last_ns: u64,
    bytes: u32,
    slow: bool,
    used: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Server {
    key: ServerKey,
    open: u32,
    slow: u32,
    /// When the last finding was returned (`None`: never).
    reported_ns: Option<u64>,
}

/// An open-addressing index (linear probing, backward-shift deletion) of `u32` slots by a
/// 64-bit hash; the caller compares keys.
#[derive(Debug, Clone)]
struct Index {
    cells: Vec<u32>,
    mask: usize,
}

impl Index {
    fn new(entries: usize) -> Self {
        let n = (entries.max(1) * 2).next_power_of_two();
        Index { cells: vec![EMPTY; n], mask: n - 1 }
    }

    /// The cell holding a slot for which `is(slot)`, or the empty cell where it would go.
    fn probe(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> (usize, bool) {
        let mut i = (hash as usize) & self.mask;
        loop {
            let c = self.cells[i];
            if c == EMPTY {
                return (i, false);
            }
            if is(c) {
                return (i, true);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Empties cell `i`, moving later cells of the cluster back (`home`: a slot's home cell).
    fn remove(&mut self, mut i: usize, home: impl Fn(u32) -> usize) {
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let c = self.cells[j];
            if c == EMPTY {
                break;
            }
            let h = home(c) & self.mask;
            // Move c back to i when its home is not cyclically in (i, j].
            let between = if i <= j { i < h && h <= j } else { i < h || h <= j };
            if !between {
                self.cells[i] = c;
                i = j;
            }
        }
        self.cells[i] = EMPTY;
    }
}

fn session_hash(s: u64) -> u64 {
    s.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// The per-core detector (see the module docs).
#[derive(Debug, Clone)]
pub struct Slowloris {
    cfg: Config,
    heads: Vec<Head>,
    free_heads: Vec<u32>,
    head_index: Index,
    servers: Vec<Server>,
    free_servers: Vec<u32>,
    server_index: Index,
    hasher: std::collections::hash_map::RandomState,
    cursor: usize,
    stats: Stats,
}

impl Slowloris {
    /// A detector with `cfg`'s bounds, all memory allocated here.
    pub fn new(cfg: Config) -> Self {
        let n = cfg.max_tracked.max(1);
        Slowloris {
            cfg,
            heads: vec![Head::default(); n],
            free_heads: (0..n as u32).rev().collect(),
            head_index: Index::new(n),
            servers: vec![Server::default(); n],
            free_servers: (0..n as u32).rev().collect(),
            server_index: Index::new(n),
            hasher: std::collections::hash_map::RandomState::new(),
            cursor: 0,
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats { tracked: (self.heads.len() - self.free_heads.len()) as u32, ..self.stats }
    }

    fn server_hash(&self, k: &ServerKey) -> u64 {
        let mut h = self.hasher.build_hasher();
        k.hash(&mut h);
        h.finish()
    }

    fn find_head(&self, session: u64) -> (usize, bool) {
        let heads = &self.heads;
        self.head_index.probe(session_hash(session), |s| heads[s as usize].session == session)
    }

    /// The session `session` of server `server` at `now_ns` (packet clock): `head` is
    /// `Some(bytes)` while a request head is open with that many bytes received, `None` once it
    /// is complete (or the session stopped being HTTP/1). Returns a finding when this made the
    /// server's slow sessions reach [`Config::min_sessions`] (at most one per
    /// [`Config::report_interval_ns`] per server).
    pub fn observe(&mut self, server: ServerKey, session: u64, head: Option<u32>, now_ns: u64) -> Option<Finding> {
        let (cell, found) = self.find_head(session);
        let Some(bytes) = head else {
            if found {
                self.remove_at(cell);
            }
            return None;
        };
        let slot = if found {
            self.head_index.cells[cell]
        } else {
            let Some(slot) = self.free_heads.pop() else {
                self.stats.untracked += 1;
                return None;
            };
            let srv = self.server_slot(server);
            self.head_index.cells[cell] = slot;
            self.heads[slot as usize] =
                Head { session, server: srv, t0_ns: now_ns, last_ns: now_ns, bytes, slow: false, used: true };
            self.servers[srv as usize].open += 1;
            slot
        };
        let h = &mut self.heads[slot as usize];
        h.last_ns = h.last_ns.max(now_ns);
        h.bytes = h.bytes.max(bytes);
        self.judge(slot as usize, now_ns)
    }

    /// The session ended (closed, reset, expired): forgets its head.
    pub fn end(&mut self, session: u64) {
        let (cell, found) = self.find_head(session);
        if found {
            self.remove_at(cell);
        }
    }

    /// True when `session`'s head is slow and its server has [`Config::min_sessions`] slow
    /// heads: the sessions protect mode acts on.
    pub fn offending(&self, session: u64) -> bool {
        let (cell, found) = self.find_head(session);
        if !found {
            return false;
        }
        let h = &self.heads[self.head_index.cells[cell] as usize];
        h.slow && self.servers[h.server as usize].slow >= self.cfg.min_sessions
    }

    /// Ages up to [`Config::poll_budget`] tracked heads at `now_ns`: heads that became slow
    /// without new bytes, heads forgotten after [`Config::idle_ns`]. Returns the first finding
    /// (the next call goes on from there).
    pub fn poll(&mut self, now_ns: u64) -> Option<Finding> {
        let n = self.heads.len();
        for _ in 0..self.cfg.poll_budget.min(n) {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let h = self.heads[i];
            if !h.used {
                continue;
            }
            if now_ns.saturating_sub(h.last_ns) >= self.cfg.idle_ns {
                let (cell, found) = self.find_head(h.session);
                if found {
                    self.remove_at(cell);
                    self.stats.expired += 1;
                }
                continue;
            }
            if let Some(f) = self.judge(i, now_ns) {
                return Some(f);
            }
        }
        None
    }

    /// Re-decides whether head `slot` is slow at `now_ns`; a finding when its server reached
    /// the threshold and was not reported within the interval.
    fn judge(&mut self, slot: usize, now_ns: u64) -> Option<Finding> {
        let cfg = self.cfg;
        let h = self.heads[slot];
        let open = now_ns.saturating_sub(h.t0_ns);
        // bytes / seconds < max_rate  ⇔  bytes · 1e9 < max_rate · open_ns
        let slow = open >= cfg.min_open_ns && u128::from(h.bytes) * 1_000_000_000 < u128::from(cfg.max_rate) * u128::from(open);
        let srv = &mut self.servers[h.server as usize];
        if slow != h.slow {
            self.heads[slot].slow = slow;
            if slow {
                srv.slow += 1;
            } else {
                srv.slow -= 1;
            }
        }
        if !slow || srv.slow < cfg.min_sessions {
            return None;
        }
        if srv.reported_ns.is_some_and(|t| now_ns.saturating_sub(t) < cfg.report_interval_ns) {
            return None;
        }
        srv.reported_ns = Some(now_ns);
        self.stats.findings += 1;
        Some(Finding {
            server: srv.key,
            slow_sessions: srv.slow,
            open_sessions: srv.open,
            session: h.session,
            open_ns: open,
            head_bytes: h.bytes,
        })
    }

    /// The server entry of `key`, created when new (a free entry always exists: each tracked
    /// head holds at most one).
    fn server_slot(&mut self, key: ServerKey) -> u32 {
        let hash = self.server_hash(&key);
        let servers = &self.servers;
        let (cell, found) = self.server_index.probe(hash, |s| servers[s as usize].key == key);
        if found {
            return self.server_index.cells[cell];
        }
        let slot = self.free_servers.pop().unwrap_or(0);
        self.servers[slot as usize] = Server { key, open: 0, slow: 0, reported_ns: None };
        self.server_index.cells[cell] = slot;
        slot
    }

    /// Forgets the head in index cell `cell` (and its server once it has no head).
    fn remove_at(&mut self, cell: usize) {
        let slot = self.head_index.cells[cell];
        let heads = &self.heads;
        self.head_index.remove(cell, |s| session_hash(heads[s as usize].session) as usize);
        let h = std::mem::take(&mut self.heads[slot as usize]);
        self.free_heads.push(slot);
        let srv = &mut self.servers[h.server as usize];
        srv.open -= 1;
        if h.slow {
            srv.slow -= 1;
        }
        if srv.open == 0 {
            let key = srv.key;
            let hash = self.server_hash(&key);
            let servers = &self.servers;
            let (scell, found) = self.server_index.probe(hash, |s| servers[s as usize].key == key);
            if found {
                let hasher = self.hasher.clone();
                let servers = &self.servers;
                self.server_index.remove(scell, |s| {
                    let mut st = hasher.build_hasher();
                    servers[s as usize].key.hash(&mut st);
                    st.finish() as usize
                });
            }
            self.servers[h.server as usize] = Server::default();
            self.free_servers.push(h.server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn server(n: u8) -> ServerKey {
        ServerKey { zone: 0, addr: Addr::v4([198, 18, 0, n]), port: 80 }
    }

    fn cfg() -> Config {
        Config { max_tracked: 64, ..Config::default() }
    }

    #[test]
    fn many_slow_heads_to_one_server_are_a_finding_one_is_not() {
        let mut d = Slowloris::new(cfg());
        // Ten sessions send a request line and a header every 10 s (slowhttptest -H -i 10).
        let mut found = None;
        for t in 0..4u64 {
            for s in 0..10u64 {
                let f = d.observe(server(2), s, Some(60 + 20 * t as u32), t * 10 * S + s);
                found = found.or(f);
            }
        }
        let f = found.expect("ten slow heads");
        assert_eq!((f.server, f.slow_sessions, f.open_sessions), (server(2), 10, 10));
        assert!(f.open_ns >= 5 * S);
        assert!(d.offending(3));
        // Reported once per interval.
        assert_eq!(d.observe(server(2), 4, Some(200), 31 * S), None);
        // Nine are not enough; one slow head at another server is nothing.
        let mut d = Slowloris::new(cfg());
        for t in 0..5u64 {
            for s in 0..9u64 {
                assert_eq!(d.observe(server(2), s, Some(60), t * 10 * S), None);
            }
            assert_eq!(d.observe(server(3), 100, Some(60), t * 10 * S), None);
            assert_eq!(d.poll(t * 10 * S + 1), None);
        }
        assert!(!d.offending(3));
    }

    #[test]
    fn heads_streaming_faster_than_the_rate_are_not_slow() {
        // Twenty clients with 16 KiB heads at 2 KB/s each: open for 8 s, not slow.
        let mut d = Slowloris::new(cfg());
        for t in 0..9u64 {
            for s in 0..20u64 {
                assert_eq!(d.observe(server(2), s, Some((2000 * t) as u32 + 100), t * S), None);
            }
        }
        // Then they stall: at 30 s their rate is 16 KB / 30 s = 533 B/s, at 40 s 400 B/s.
        assert_eq!(d.poll(30 * S), None);
        let mut f = None;
        for _ in 0..4 {
            f = f.or(d.poll(40 * S));
        }
        // Found when the tenth turned slow; all twenty are offending once polled.
        assert_eq!(f.map(|f| f.slow_sessions), Some(10));
        assert_eq!((0..20u64).filter(|&s| d.offending(s)).count(), 20);
    }

    #[test]
    fn heads_that_complete_or_sessions_that_end_are_forgotten() {
        let mut d = Slowloris::new(cfg());
        for s in 0..12u64 {
            d.observe(server(2), s, Some(50), 0);
        }
        // Eleven complete their head; one session ends.
        for s in 0..11u64 {
            d.observe(server(2), s, None, S);
        }
        d.end(11);
        assert_eq!(d.stats().tracked, 0);
        for _ in 0..4 {
            assert_eq!(d.poll(60 * S), None);
        }
        // The table's entries are reused: a new attack is found.
        let mut f = None;
        for s in 100..112u64 {
            d.observe(server(2), s, Some(50), 100 * S);
        }
        for _ in 0..4 {
            f = f.or(d.poll(110 * S));
        }
        assert_eq!(f.map(|f| f.slow_sessions), Some(10));
        assert_eq!((100..112u64).filter(|&s| d.offending(s)).count(), 12);
    }

    #[test]
    fn poll_finds_heads_that_receive_nothing_more_and_forgets_idle_ones() {
        let mut d = Slowloris::new(cfg());
        for s in 0..10u64 {
            assert_eq!(d.observe(server(2), s, Some(30), 0), None);
        }
        assert_eq!(d.poll(4 * S), None);
        let f = (0..4).find_map(|_| d.poll(6 * S)).expect("aged into slow");
        assert_eq!(f.slow_sessions, 10);
        for _ in 0..4 {
            d.poll(700 * S);
        }
        assert_eq!((d.stats().tracked, d.stats().expired), (0, 10));
    }

    #[test]
    fn the_table_is_bounded_and_survives_churn() {
        let mut d = Slowloris::new(Config { max_tracked: 16, ..Config::default() });
        let mut rng = crate::app::testutil::Rng(7);
        for i in 0..20_000u64 {
            let s = rng.below(64) as u64;
            let srv = server(rng.below(8) as u8);
            let now = i * 1_000_000;
            match rng.below(3) {
                0 => drop(d.observe(srv, s, None, now)),
                1 => d.end(s),
                _ => drop(d.observe(srv, s, Some(rng.below(500) as u32), now)),
            }
            d.poll(now);
            assert!(d.stats().tracked <= 16);
            // Every tracked head is found by its session, and only those.
            assert_eq!(d.stats().tracked as usize, (0..64u64).filter(|&s| d.find_head(s).1).count());
        }
        assert!(d.stats().untracked > 0);
        // Server counts stay consistent with the heads.
        let open: u32 = d.servers.iter().map(|s| s.open).sum();
        assert_eq!(open, d.stats().tracked);
    }
}
