//! DNS names for `fqdn` rules: the names a client's own DNS answers gave to addresses, in one
//! table shared by all workers.
//!
//! # What is learned
//! Names arrive already decoded: the DNS parser walks each message with its bounded scanner
//! first, and a message with a pointer loop, an over-long name or any other anomaly teaches
//! nothing, so nothing here follows compression pointers.
//! The DNS parser ([`crate::app::dns`]) takes an answer only when it answers a query the client
//! sent on the same flow (transaction id and question match an outstanding query of that flow),
//! follows the CNAME chain from the question, keeps the question name whole and the TTL along
//! the chain. This table then stores, for each address, `(zone, DNS client, address, name)`
//! until the TTL runs out, clamped to `[ttl_min_s, ttl_max_s]` ([`NameConfig`]), and only
//! when a rule of the policy in force could use it ([`CompiledPolicy::fqdn_wanted`]: the
//! rule's `from` matches the DNS client, its `to` the address, its pattern the name). A session
//! is matched by the names **its own client** learned for its server in its zone: one host's
//! answers never name addresses for another.
//!
//! # Bounds, and who can evict whom
//! The table is `clients` rows of `names_per_client` entries, allocated once. A client owns a
//! row (found by a keyed hash of zone and address, linear probing over at most [`PROBES`]
//! rows); its names live only in its row, so one client's flood can only replace that
//! client's own names (the live entry closest to expiry goes first, counted `replaced`).
//! A client's row is given to another client only once every name in it has expired; when
//! no row is free the answer is refused (`clients_full`), never stored over another client's
//! names. Answers with names no rule can use (`unwanted`), longer than 253 characters
//! (`too_long`), unsolicited or off the CNAME chain are refused and counted, so unrelated
//! names never take room. A policy change applies to answers after it: names refused under
//! the old policy are learned when the client resolves them again (at the latest after their
//! TTL).
//!
//! # Concurrency
//! Every word is an atomic: row owners and entries are seqlock cells ([`crate::seqlock`]),
//! written only when a worker handles a DNS answer, read only when a session is evaluated
//! (its first frame, its app decided, a new policy), never per frame. Writers never wait
//! (a lost race tries again, then counts `failed`); readers discard torn copies. Entries
//! carry their row's *epoch* (bumped when the row changes owner), so an entry written for a
//! row's previous owner in a race is never read as the new owner's. Each row keeps a
//! 64-bit filter of the server addresses written to it, and a dense array of row tags lets
//! a lookup for a client without a row stop after reading a few contiguous words; with no
//! live name at all (latest expiry in the past) a lookup is one atomic load.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayString;

use crate::app::dns::Dns;
use crate::flow::Addr;
use crate::policy::CompiledPolicy;
use crate::seqlock::SeqCell;

/// Longest name stored (characters, presentation form without the trailing dot): 255 octets
/// on the wire are at most 253 characters (RFC 1035 §2.3.4).
pub const NAME_MAX: usize = 253;
/// Most names one lookup returns for a (client, server) pair.
pub const NAMES_PER_LOOKUP: usize = 8;
/// Rows probed for a client (from its hash position).
pub const PROBES: usize = 32;

const NAME_WORDS: usize = 32;
const HEAD: usize = 4;
const ENTRY_WORDS: usize = HEAD + NAME_WORDS;
const WRITE_RETRIES: usize = 4;
const NS: u64 = 1_000_000_000;

/// Sizing and TTL bounds of a [`NameTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameConfig {
    /// DNS clients with names at once (rows).
    pub clients: usize,
    /// Names (name, address pairs) per client.
    pub names_per_client: usize,
    /// Shortest time a name is kept (s), whatever its TTL (0 included).
    pub ttl_min_s: u32,
    /// Longest time a name is kept (s), whatever its TTL.
    pub ttl_max_s: u32,
}

impl Default for NameConfig {
    /// 256 clients × 32 names (about 2.4 MB), TTLs clamped to 1 s..3600 s.
    fn default() -> Self {
        NameConfig { clients: 256, names_per_client: 32, ttl_min_s: 1, ttl_max_s: 3600 }
    }
}

impl NameConfig {
    /// A small table (16 clients × 16 names, about 80 KB), what a pipeline uses until it is
    /// given the process's table ([`crate::inspect::Inspector::share_names`]).
    pub fn small() -> Self {
        NameConfig { clients: 16, names_per_client: 16, ..NameConfig::default() }
    }
}

/// Counters of a [`NameTable`] (since start, all workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameStats {
    /// Names stored (new, refreshed or replacing one of the same client's).
    pub inserted: u64,
    /// Stores that refreshed the same client's same name and address (new expiry).
    pub refreshed: u64,
    /// Stores that replaced a live name of the same client (its row was full).
    pub replaced: u64,
    /// Responses that answer no outstanding query of their flow (wrong id or question, none).
    pub refused_unsolicited: u64,
    /// A/AAAA records whose owner is not where the CNAME chain from the question ends.
    pub refused_off_chain: u64,
    /// Names longer than 253 characters (never truncated).
    pub refused_too_long: u64,
    /// Addresses whose name no `fqdn` rule of the policy could use for that client.
    pub refused_unwanted: u64,
    /// Names of a new client refused because no row was free.
    pub refused_clients_full: u64,
    /// Queries beyond a flow's outstanding bound, addresses beyond an answer's bound,
    /// answers the pipeline had not taken yet.
    pub refused_overflow: u64,
    /// Answers to a flow's own query that were malformed (a record that does not parse,
    /// sections cut short, bytes after the last record, an attack on decoders): nothing of
    /// them is stored.
    pub refused_malformed: u64,
    /// Stores abandoned after losing the race for a slot repeatedly.
    pub failed: u64,
}

/// What [`NameTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new entry.
    New,
    /// The same client's same name and address, with a new expiry.
    Refreshed,
    /// Replaced the same client's live name closest to expiry (its row was full).
    Replaced,
    /// Name longer than [`NAME_MAX`].
    TooLong,
    /// No row for a new client.
    ClientsFull,
    /// Lost the race for a slot repeatedly.
    Failed,
}

/// Names one lookup returns (borrowed from the caller's [`NameBuf`]).
#[derive(Debug, Clone, Copy)]
pub struct Names<'b> {
    strs: [&'b str; NAMES_PER_LOOKUP],
    n: usize,
}

impl<'b> Names<'b> {
    /// The names, in no particular order.
    pub fn as_slice(&self) -> &[&'b str] {
        &self.strs[..self.n]
    }
}

/// Room for the names of one lookup (on the caller's stack; nothing allocated).
pub struct NameBuf {
    names: [ArrayString<NAME_MAX>; NAMES_PER_LOOKUP],
}

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf { names: std::array::from_fn(|_| ArrayString::new()) }
    }
}

struct Row {
    /// w0: epoch << 32 | zone << 16 | v6 << 1 | 1; w1, w2: the client's address.
    owner: SeqCell<3>,
    /// Latest expiry written into the row (ns): the row is free for another client after it.
    horizon: AtomicU64,
    /// Bit `hash(server) % 64` of every server address written since the row was claimed.
    servers: AtomicU64,
}

/// An address as (v6 flag, two words).
fn words(ip: IpAddr) -> (u64, u64, u64) {
    let a = Addr::from(ip).0;
    let half = |i: usize| u64::from_be_bytes(a[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    (u64::from(ip.is_ipv6()), half(0), half(1))
}

/// A client as the table keys it.
struct Client {
    /// Owner word without the epoch.
    w0: u64,
    a: u64,
    b: u64,
    tag: u64,
    start: usize,
}

/// The shared table of learned names. See the module docs.
pub struct NameTable {
    cfg: NameConfig,
    hasher: RandomState,
    tags: Box<[AtomicU64]>,
    rows: Box<[Row]>,
    entries: Box<[SeqCell<ENTRY_WORDS>]>,
    horizon: AtomicU64,
    stats: [AtomicU64; 11],
}

impl std::fmt::Debug for NameTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameTable").field("cfg", &self.cfg).field("stats", &self.stats()).finish()
    }
}

impl Default for NameTable {
    fn default() -> Self {
        NameTable::new(NameConfig::default())
    }
}

// Indices into `stats`.
const INSERTED: usize = 0;
const REFRESHED: usize = 1;
const REPLACED: usize = 2;
const UNSOLICITED: usize = 3;
const OFF_CHAIN: usize = 4;
const TOO_LONG: usize = 5;
const UNWANTED: usize = 6;
const CLIENTS_FULL: usize = 7;
const OVERFLOW: usize = 8;
const FAILED: usize = 9;
const MALFORMED: usize = 10;

impl NameTable {
    /// A table sized by `cfg` (at least 1 client and 1 name each; `ttl_max_s` at least
    /// `ttl_min_s`), allocated once.
    pub fn new(cfg: NameConfig) -> Self {
        let clients = cfg.clients.max(1);
        let per = cfg.names_per_client.max(1);
        let cfg = NameConfig {
            clients,
            names_per_client: per,
            ttl_min_s: cfg.ttl_min_s,
            ttl_max_s: cfg.ttl_max_s.max(cfg.ttl_min_s),
        };
        NameTable {
            cfg,
            hasher: RandomState::new(),
            tags: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            rows: (0..clients)
                .map(|_| Row { owner: SeqCell::default(), horizon: AtomicU64::new(0), servers: AtomicU64::new(0) })
                .collect(),
            entries: (0..clients * per).map(|_| SeqCell::default()).collect(),
            horizon: AtomicU64::new(0),
            stats: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The table's sizing and TTL bounds.
    pub fn config(&self) -> NameConfig {
        self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> NameStats {
        let l = |i: usize| self.stats[i].load(Ordering::Relaxed);
        NameStats {
            inserted: l(INSERTED),
            refreshed: l(REFRESHED),
            replaced: l(REPLACED),
            refused_unsolicited: l(UNSOLICITED),
            refused_off_chain: l(OFF_CHAIN),
            refused_too_long: l(TOO_LONG),
            refused_unwanted: l(UNWANTED),
            refused_clients_full: l(CLIENTS_FULL),
            refused_overflow: l(OVERFLOW),
            refused_malformed: l(MALFORMED),
            failed: l(FAILED),
        }
    }

    fn count(&self, i: usize, n: u64) {
        if n > 0 {
            self.stats[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    fn client(&self, zone: u16, ip: IpAddr) -> Client {
        let (v6, a, b) = words(ip);
        let h = self.hasher.hash_one((zone, v6, a, b));
        Client {
            w0: u64::from(zone) << 16 | v6 << 1 | 1,
            a,
            b,
            tag: h | 1,
            start: ((u128::from(h) * self.rows.len() as u128) >> 64) as usize,
        }
    }

    fn server_bit(&self, server: (u64, u64, u64)) -> u64 {
        1 << (self.hasher.hash_one(server) & 63)
    }

    fn probes(&self, c: &Client) -> impl Iterator<Item = usize> + '_ {
        let n = self.rows.len();
        let start = c.start;
        (0..PROBES.min(n)).map(move |i| (start + i) % n)
    }

    /// Rows owned by `c`, with their epoch (a client may own more than one after a race).
    fn owned_rows<'a>(&'a self, c: &'a Client) -> impl Iterator<Item = (usize, u32)> + 'a {
        self.probes(c)
            .map(|r| (r, self.tags[r].load(Ordering::Acquire)))
            .take_while(|(_, t)| *t != 0)
            .filter(|(_, t)| *t == c.tag)
            .filter_map(|(r, _)| {
                let (_, w) = self.rows[r].owner.read::<3>()?;
                (w[0] & 0xffff_ffff == c.w0 && w[1] == c.a && w[2] == c.b).then_some((r, (w[0] >> 32) as u32))
            })
    }

    /// The row to store a name of `c` in: its own, else a never used one or one whose names
    /// all expired (claimed for `c`, kept at least until `expires_ns`).
    fn row_for(&self, c: &Client, now_ns: u64, expires_ns: u64) -> Result<(usize, u32), Stored> {
        for _ in 0..WRITE_RETRIES {
            let mut free = None;
            for r in self.probes(c) {
                let t = self.tags[r].load(Ordering::Acquire);
                let Some((seq, w)) = self.rows[r].owner.read::<3>() else { continue };
                if w[0] & 0xffff_ffff == c.w0 && w[1] == c.a && w[2] == c.b {
                    return Ok((r, (w[0] >> 32) as u32));
                }
                let reusable = w[0] & 1 == 0 || self.rows[r].horizon.load(Ordering::Acquire) <= now_ns;
                if free.is_none() && reusable {
                    free = Some((r, seq, (w[0] >> 32) as u32));
                }
                if t == 0 {
                    // Never used: no row of this client lies further on.
                    break;
                }
            }
            let Some((r, seq, old)) = free else { return Err(Stored::ClientsFull) };
            let epoch = old.wrapping_add(1);
            let row = &self.rows[r];
            // The row's other words change while the claim is held, so two claims of one row
            // cannot interleave them (a late tag from a lost claim never hides the winner).
            let claimed = row.owner.write_then(seq, &[u64::from(epoch) << 32 | c.w0, c.a, c.b], || {
                row.servers.store(0, Ordering::Relaxed);
                row.horizon.store(expires_ns, Ordering::Relaxed);
                self.tags[r].store(c.tag, Ordering::Release);
            });
            if claimed {
                return Ok((r, epoch));
            }
        }
        Err(Stored::Failed)
    }

    /// Stores that `client`'s DNS answer (in `zone`) named `server` `name` for `ttl_s` seconds
    /// (clamped to the table's bounds) at `now_ns`. `name` is compared ignoring ASCII case and
    /// one trailing dot; one longer than [`NAME_MAX`] is refused, never cut. Never blocks;
    /// every outcome but `New` and `Refreshed` is counted as what it is.
    pub fn insert(&self, zone: u16, client: IpAddr, server: IpAddr, name: &str, ttl_s: u32, now_ns: u64) -> Stored {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > NAME_MAX {
            self.count(TOO_LONG, 1);
            return Stored::TooLong;
        }
        let ttl = u64::from(ttl_s.clamp(self.cfg.ttl_min_s, self.cfg.ttl_max_s));
        let expires = now_ns.saturating_add(ttl * NS);
        let c = self.client(zone, client);
        let (row, epoch) = match self.row_for(&c, now_ns, expires) {
            Ok(r) => r,
            Err(e) => {
                self.count(if e == Stored::Failed { FAILED } else { CLIENTS_FULL }, 1);
                return e;
            }
        };
        let (v6, sa, sb) = words(server);
        let mut w = [0u64; ENTRY_WORDS];
        w[0] = u64::from(epoch) << 32 | (name.len() as u64) << 16 | v6 << 1 | 1;
        w[1] = sa;
        w[2] = sb;
        w[3] = expires;
        let mut bytes = [0u8; NAME_WORDS * 8];
        for (d, s) in bytes.iter_mut().zip(name.bytes()) {
            *d = s.to_ascii_lowercase();
        }
        for (word, chunk) in w[HEAD..].iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        let per = self.cfg.names_per_client;
        let cells = &self.entries[row * per..(row + 1) * per];
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        enum Choice {
            Same,
            Free,
            Expired,
            Live(u64),
        }
        for _ in 0..WRITE_RETRIES {
            let mut best: Option<(Choice, usize, u64)> = None;
            for (j, cell) in cells.iter().enumerate() {
                let Some((seq, h)) = cell.read::<HEAD>() else { continue };
                let choice = if h[0] & 1 == 0 || (h[0] >> 32) as u32 != epoch {
                    Choice::Free
                } else if h[0] == w[0] && h[1] == sa && h[2] == sb
                    && cell.read::<ENTRY_WORDS>().is_some_and(|(s, all)| s == seq && all[HEAD..] == w[HEAD..])
                {
                    Choice::Same
                } else if h[3] <= now_ns {
                    Choice::Expired
                } else {
                    Choice::Live(h[3])
                };
                if best.is_none_or(|(b, ..)| choice < b) {
                    best = Some((choice, j, seq));
                    if choice == Choice::Same {
                        break;
                    }
                }
            }
            let Some((choice, j, seq)) = best else { continue };
            if !cells[j].write(seq, &w) {
                continue;
            }
            let r = &self.rows[row];
            r.servers.fetch_or(self.server_bit((v6, sa, sb)), Ordering::Release);
            r.horizon.fetch_max(expires, Ordering::AcqRel);
            self.horizon.fetch_max(expires, Ordering::AcqRel);
            self.count(INSERTED, 1);
            return match choice {
                Choice::Same => {
                    self.count(REFRESHED, 1);
                    Stored::Refreshed
                }
                Choice::Live(_) => {
                    self.count(REPLACED, 1);
                    Stored::Replaced
                }
                Choice::Free | Choice::Expired => Stored::New,
            };
        }
        self.count(FAILED, 1);
        Stored::Failed
    }

    /// The names `client`'s own DNS answers (in `zone`) gave `server` that are live at
    /// `now_ns` (at most [`NAMES_PER_LOOKUP`]), written into `buf`. Nothing is looked up when
    /// `policy` has no `fqdn` rule. Allocates nothing, never blocks.
    pub fn lookup<'b>(
        &self,
        policy: &CompiledPolicy,
        zone: u16,
        client: IpAddr,
        server: IpAddr,
        now_ns: u64,
        buf: &'b mut NameBuf,
    ) -> Names<'b> {
        let mut n = 0;
        if policy.has_fqdn() && self.horizon.load(Ordering::Acquire) > now_ns {
            n = self.collect(zone, client, server, now_ns, buf);
        }
        let buf: &'b NameBuf = buf;
        let mut strs = [""; NAMES_PER_LOOKUP];
        for (s, b) in strs.iter_mut().zip(&buf.names).take(n) {
            *s = b.as_str();
        }
        Names { strs, n }
    }

    fn collect(&self, zone: u16, client: IpAddr, server: IpAddr, now_ns: u64, buf: &mut NameBuf) -> usize {
        let c = self.client(zone, client);
        let s = words(server);
        let bit = self.server_bit(s);
        let per = self.cfg.names_per_client;
        let mut n = 0;
        for (row, epoch) in self.owned_rows(&c) {
            let r = &self.rows[row];
            if r.horizon.load(Ordering::Acquire) <= now_ns || r.servers.load(Ordering::Acquire) & bit == 0 {
                continue;
            }
            let is = |h: &[u64]| {
                h[0] & 1 == 1
                    && (h[0] >> 32) as u32 == epoch
                    && (h[0] >> 1) & 1 == s.0
                    && h[1] == s.1
                    && h[2] == s.2
                    && h[3] > now_ns
            };
            for cell in &self.entries[row * per..(row + 1) * per] {
                if n == NAMES_PER_LOOKUP {
                    return n;
                }
                let Some((_, h)) = cell.read::<HEAD>() else { continue };
                if !is(&h) {
                    continue;
                }
                let Some((_, w)) = cell.read::<ENTRY_WORDS>() else { continue };
                if !is(&w[..HEAD]) {
                    continue;
                }
                let len = ((w[0] >> 16) & 0xffff) as usize;
                let mut bytes = [0u8; NAME_WORDS * 8];
                for (chunk, word) in bytes.chunks_exact_mut(8).zip(&w[HEAD..]) {
                    chunk.copy_from_slice(&word.to_be_bytes());
                }
                let Some(name) = bytes.get(..len).and_then(|b| std::str::from_utf8(b).ok()) else { continue };
                let out = &mut buf.names[n];
                out.clear();
                if out.try_push_str(name).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Takes the answers `dns` (a DNS flow whose client is `client`, in `zone`) learned since
    /// the last call and stores each (name, address) some `fqdn` rule of `policy` could use
    /// for that client; counts what `dns` refused and what the policy does not want.
    pub fn learn(&self, policy: &CompiledPolicy, zone: u16, client: IpAddr, dns: &mut Dns, now_ns: u64) {
        let (answers, r) = dns.learned();
        if answers.is_empty() && r == Default::default() {
            return;
        }
        self.count(UNSOLICITED, u64::from(r.unsolicited));
        self.count(OFF_CHAIN, u64::from(r.off_chain));
        self.count(TOO_LONG, u64::from(r.too_long));
        self.count(OVERFLOW, u64::from(r.overflow));
        self.count(MALFORMED, u64::from(r.malformed));
        for a in answers {
            for &(addr, ttl) in &a.addrs {
                if policy.fqdn_wanted(client, addr, &a.name) {
                    self.insert(zone, client, addr, &a.name, ttl, now_ns);
                } else {
                    self.count(UNWANTED, 1);
                }
            }
        }
        dns.clear_learned();
    }
}

#[cfg(test)]
mod tests;
