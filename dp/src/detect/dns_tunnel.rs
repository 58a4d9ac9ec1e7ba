//! DNS tunnelling (`dns_tunneling`): data carried in the names a client asks, found per
//! (zone, client, domain) from the shape and volume of the names, on the packet clock.
//!
//! # What NeuVector's dp does, and why this is different
//! NeuVector marks a UDP DNS connection whose client sent more than 800 bytes, and its agent
//! reports a tunnel only when the process owning the client port has `/dev/net/tun` open
//! (`dp/ctrl.c` `TUNNEL_THRESHOLD`, `agent/probe/process.go` `CheckDNSTunneling`). That finds
//! iodine on a host the agent can see into and misses everything else: dnscat2 and plain
//! exfiltration open no tun device, and a client that asks through the system resolver uses a
//! new source port (a new connection) per query, so no connection ever reaches 800 bytes.
//! Warden sees only the wire, so it judges the names themselves, per client and domain across
//! connections.
//!
//! # The heuristic
//! Each query name (uncompressed wire form, as [`crate::app::dns::Dns::queries`] hands it) is
//! split into its *domain* (the registered-domain-ish suffix: the last two labels, three
//! under a generic second level such as `co.uk` or `com.au`, [`base_labels`]) and its *data*
//! (the labels before it). Tunnels put their payload in the data and must make every name
//! new (or caches would answer): iodine base32/64/128, dnscat2 hex, dns2tcp base64, shell
//! one-liners with `xxd`/`base32`/`base64`. The data is scored:
//! - **shape** ([`shape`], 0..=1), label by label (tunnels fill labels with their encoding;
//!   labels shorter than [`MIN_LABEL`] and `_service` labels are names): bytes outside
//!   letters/digits/`-`/`_` (binary, Base128, raw) score 1; hex of 12+ characters with both
//!   digits and letters scores 1; otherwise a label whose letters are short of vowels (`aeiou`:
//!   random text has about 1 in 5 letters, host names about 2 in 5) scores by how far, with
//!   digits interleaved among the letters (encodings mix them, names put numbers at the end)
//!   raising it. Case is ignored (resolvers randomise it, RFC 5452 §9.1 "0x20"). Data shorter
//!   than [`Config::min_data`] bytes is not judged.
//! - **evidence** per *new* name (a repeat of one of the bucket's recent names adds
//!   nothing: caches, retries and polling repeat names, tunnels cannot): the labels' score ×
//!   length (suspect bytes), plus [`Config::record_type_bytes`] for the record types tunnels pull data
//!   with: NULL and the private-use types always, TXT, CNAME, MX, SRV, KEY only when the name
//!   looks encoded (DNSBL and SPF lookups ask TXT of plain names).
//! - **volume over time**: evidence decays with [`Config::half_life_s`]; a bucket whose
//!   evidence reaches [`Config::threshold_bytes`] from at least [`Config::min_queries`]
//!   (decayed) suspect names is a tunnel, and stays one until its evidence falls below half the
//!   threshold. Every query of a tunnel bucket is a finding (so protect mode can drop each of
//!   them, whatever connection carries it; the threat stage merges the events).
//!
//! Names under [`Config::exempt`] suffixes are not scored (reverse lookups under `arpa`, mDNS
//! and cluster names under `local`); names whose last label cannot be a top-level domain (not
//! letters, not `xn--`) share one bucket per client (dnscat2's "no domain" mode asks
//! `dnscat.<hex>` straight of its server).
//!
//! Known blind spots (measured in the tests): DNS-based lookup services send hashes in names
//! by design (Team Cymru's malware hash registry, anti-virus cloud lookups); enough of them per
//! minute to one domain look like a tunnel (list the domain in `exempt`). A tunnel slower than
//! about `threshold / (shape × data bytes)` names per half-life is not found (an idle iodine
//! sends short pings: only NULL and private types count them).
//!
//! # Bounds
//! [`Config::buckets`] buckets allocated once, found by a keyed hash (a client cannot aim its
//! names at another's bucket) with [`PROBES`] slots of linear probing; a new bucket takes an
//! empty or decayed slot, else evicts the probed slot with the least evidence (not a bucket in
//! the tunnel state while another is there), counted. No allocation, no lock per call.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use arrayvec::{ArrayString, ArrayVec};

use crate::app::Text;
use crate::flow::Addr;

/// Slots probed for a bucket.
pub const PROBES: usize = 8;
/// Recent names remembered per bucket (a repeat among them adds no evidence).
pub const RECENT: usize = 16;
/// Bytes of the domain kept for the finding's evidence.
pub const DOMAIN_TEXT: usize = 64;
/// Most labels in a name (255 bytes of wire form hold at most 127).
const MAX_LABELS: usize = 128;
const NS: u64 = 1_000_000_000;

/// Thresholds and sizes of a [`DnsTunnel`] detector (`[threats.dns_tunneling]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Buckets (zone, client, domain) per core. Default 4096 (about 700 KB).
    pub buckets: usize,
    /// Half-life of a bucket's evidence (s). Default 60.
    pub half_life_s: u32,
    /// Evidence that makes a bucket a tunnel (suspect bytes, decayed). Default 1024: a
    /// kilobyte of encoded data within about a minute.
    pub threshold_bytes: u32,
    /// Suspect names (decayed) a bucket needs besides its evidence. Default 8.
    pub min_queries: u32,
    /// Data bytes (labels before the domain) below which a name's shape is not judged.
    /// Default 12.
    pub min_data: usize,
    /// Evidence a new name of a tunnel record type adds (bytes). Default 32.
    pub record_type_bytes: u32,
    /// Domain suffixes never scored (lowercase presentation form, no trailing dot). Default
    /// `["arpa", "local"]`.
    pub exempt: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            buckets: 4096,
            half_life_s: 60,
            threshold_bytes: 1024,
            min_queries: 8,
            min_data: 12,
            record_type_bytes: 32,
            exempt: vec!["arpa".into(), "local".into()],
        }
    }
}

/// A query that belongs to a tunnel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// What carried most of the evidence: `"encoded_names"` (data in the names) or
    /// `"tunnel_record_types"` (many new names of NULL/private/TXT/... types).
    pub reason: &'static str,
    /// The domain (presentation form, lowercase, cut at [`DOMAIN_TEXT`] bytes; `"."` for the
    /// bucket of names without a valid top-level domain).
    pub domain: ArrayString<DOMAIN_TEXT>,
    /// The bucket's evidence (suspect bytes, decayed).
    pub evidence_bytes: u32,
    /// The bucket's suspect names (decayed).
    pub names: u32,
    /// True for the query that made the bucket a tunnel (the first of this episode).
    pub new: bool,
}

impl Finding {
    /// The finding as threat evidence: `"t.test: 1834 suspect bytes in 41 names"`.
    pub fn evidence(&self) -> Text<128> {
        let mut t = Text::<128>::new();
        let _ = write!(t, "{}: {} suspect bytes in {} names", self.domain, self.evidence_bytes, self.names);
        t
    }
}

/// Counters of a [`DnsTunnel`] (since it was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Names observed.
    pub observed: u64,
    /// Names under an exempt suffix.
    pub exempt: u64,
    /// Names that were not valid uncompressed wire form.
    pub invalid: u64,
    /// Buckets evicted to make room.
    pub evicted: u64,
    /// Queries found in a tunnel.
    pub findings: u64,
    /// Buckets that became tunnels.
    pub tunnels: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Keyed hash of (zone, client, domain); 0 for an empty slot.
    key: u64,
    zone: u16,
    client: Addr,
    last_ns: u64,
    /// Decayed suspect bytes from the names' shape and from record types.
    shape: f32,
    types: f32,
    /// Decayed suspect names.
    names: f32,
    tunnel: bool,
    recent: [u32; RECENT],
    recent_at: u8,
    domain: ArrayString<DOMAIN_TEXT>,
}

impl Bucket {
    fn evidence(&self) -> f32 {
        self.shape + self.types
    }

    /// Decays the evidence to `now_ns`.
    fn decay(&mut self, now_ns: u64, half_life_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        if dt > 0 {
            let f = (-(dt as f64) / half_life_ns as f64).exp2() as f32;
            self.shape *= f;
            self.types *= f;
            self.names *= f;
            self.last_ns = now_ns;
        }
    }
}

/// The per-core DNS tunnelling detector (see the module docs).
#[derive(Debug)]
pub struct DnsTunnel {
    cfg: Config,
    half_life_ns: u64,
    /// Exempt suffixes in wire form (lowercase, without the root label).
    exempt: Vec<Vec<u8>>,
    buckets: Vec<Bucket>,
    hasher: RandomState,
    stats: TunnelStats,
}

/// How encoded a name's data looks ([`shape`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// 0 (a host name) ..= 1 (encoded data): the labels' scores weighted by their length.
    pub score: f32,
    /// Suspect bytes: the sum over labels of score × length.
    pub bytes: f32,
    /// The test that scored the most bytes: `"binary"`, `"hex"`, `"random"`; `"plain"` when
    /// nothing scored, `"short"` when the data is shorter than `min_data`.
    pub class: &'static str,
}

/// Shortest label whose shape is judged (bytes): shorter ones are words, counters, ids.
pub const MIN_LABEL: usize = 10;

/// The score of one label and the test that gave it.
fn label_shape(l: &[u8]) -> (f32, &'static str) {
    // Service labels (RFC 2782, RFC 6763: `_ldap._tcp`) and short labels are names.
    if l.len() < MIN_LABEL || l[0] == b'_' {
        return (0.0, "plain");
    }
    let (mut letters, mut vowels, mut digits, mut other, mut hex_only) = (0usize, 0usize, 0usize, 0usize, true);
    // Letter/digit alternations (hyphens skipped).
    let (mut switches, mut prev_digit) = (0usize, None::<bool>);
    for &c in l {
        let c = c.to_ascii_lowercase();
        let digit = c.is_ascii_digit();
        if c.is_ascii_lowercase() {
            letters += 1;
            vowels += usize::from(matches!(c, b'a' | b'e' | b'i' | b'o' | b'u'));
            hex_only &= c <= b'f';
        } else if digit {
            digits += 1;
        } else if c != b'-' && c != b'_' {
            other += 1;
        }
        if c.is_ascii_alphanumeric() {
            if prev_digit.is_some_and(|p| p != digit) {
                switches += 1;
            }
            prev_digit = Some(digit);
        }
    }
    if other > 0 {
        return (1.0, "binary");
    }
    if hex_only && digits > 0 && letters > 0 && digits + letters >= 12 {
        return (1.0, "hex");
    }
    if letters < 6 {
        return (0.0, "plain");
    }
    // Random text over a-z has 5 vowels in 26 letters (0.19); names have 0.35 and more.
    let v = vowels as f32 / letters as f32;
    let rare_vowels = ((0.34 - v) / 0.1).clamp(0.0, 1.0);
    // Alternations per 16 characters: "web01" has 1, base32/64 text about 5.
    let mixing = (switches as f32 * 16.0 / (letters + digits) as f32 / 4.0).clamp(0.0, 1.0);
    let score = (rare_vowels * (0.5 + 0.5 * mixing)).clamp(0.0, 1.0);
    (score, if score > 0.0 { "random" } else { "plain" })
}

/// Scores the data labels of a name, label by label (see the module docs); `min_data` is
/// [`Config::min_data`].
pub fn shape(data: &[&[u8]], min_data: usize) -> Shape {
    let n: usize = data.iter().map(|l| l.len()).sum();
    if n < min_data {
        return Shape { score: 0.0, bytes: 0.0, class: "short" };
    }
    let (mut bytes, mut best, mut class) = (0.0f32, 0.0f32, "plain");
    for l in data {
        let (score, c) = label_shape(l);
        let b = score * l.len() as f32;
        bytes += b;
        if b > best {
            best = b;
            class = c;
        }
    }
    Shape { score: bytes / n as f32, bytes, class }
}

/// How many trailing labels of `labels` (lowercase-compared) make the domain: two, three
/// under a generic second level of a two-letter country code (`co.uk`, `com.au`, `ne.jp`),
/// all when there are fewer. The root is not a label here.
pub fn base_labels(labels: &[&[u8]]) -> usize {
    const SLD: &[&[u8]] = &[b"co", b"com", b"net", b"org", b"gov", b"edu", b"ac", b"or", b"ne", b"go", b"gob", b"mil", b"nic", b"ltd", b"plc", b"sch", b"nhs"];
    let k = labels.len();
    if k >= 3 && labels[k - 1].len() == 2 && SLD.iter().any(|s| s.eq_ignore_ascii_case(labels[k - 2])) {
        return 3;
    }
    k.min(2)
}

/// True when `label` can be a top-level domain: letters only (2+), or an IDN `xn--` label.
fn tld_like(label: &[u8]) -> bool {
    label.len() >= 2 && (label.iter().all(u8::is_ascii_alphabetic) || label.len() > 4 && label[..4].eq_ignore_ascii_case(b"xn--"))
}

/// Tunnel record types: NULL (10) and the private-use range (65280-65534) always count;
/// TXT, CNAME, MX, SRV, KEY only for encoded-looking names.
fn record_type_weight(qtype: u16, shape: f32) -> f32 {
    match qtype {
        10 | 65280..=65534 => 1.0,
        16 | 5 | 15 | 33 | 25 if shape >= 0.5 => 1.0,
        _ => 0.0,
    }
}

impl DnsTunnel {
    /// A detector with `cfg`'s buckets allocated.
    pub fn new(cfg: Config) -> Self {
        let buckets = vec![Bucket::default(); cfg.buckets.max(PROBES)];
        let exempt = cfg
            .exempt
            .iter()
            .map(|s| {
                let mut w = Vec::new();
                for l in s.trim_matches('.').split('.').filter(|l| !l.is_empty()) {
                    w.push(l.len() as u8);
                    w.extend(l.bytes().map(|c| c.to_ascii_lowercase()));
                }
                w
            })
            .collect();
        DnsTunnel { half_life_ns: u64::from(cfg.half_life_s.max(1)) * NS, cfg, exempt, buckets, hasher: RandomState::new(), stats: TunnelStats::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters since construction.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// Observes one query `client` sent in `zone`: `qname` in uncompressed wire form
    /// (length-prefixed labels and the root label, as [`crate::app::dns::SeenQueries::iter`] gives it),
    /// `qtype` its QTYPE, `now_ns` the packet clock (ns). Returns a finding when the query
    /// belongs to a tunnel (each query of a tunnel bucket, see the module docs); `None` also
    /// for names that are not valid wire form (counted).
    pub fn observe(&mut self, zone: u16, client: Addr, qname: &[u8], qtype: u16, now_ns: u64) -> Option<Finding> {
        self.stats.observed += 1;
        let mut labels: ArrayVec<&[u8], MAX_LABELS> = ArrayVec::new();
        let mut at = 0;
        loop {
            let Some(&len) = qname.get(at) else {
                self.stats.invalid += 1;
                return None;
            };
            if len == 0 {
                break;
            }
            let Some(l) = qname.get(at + 1..at + 1 + usize::from(len)).filter(|_| len <= 63) else {
                self.stats.invalid += 1;
                return None;
            };
            if labels.try_push(l).is_err() {
                self.stats.invalid += 1;
                return None;
            }
            at += 1 + usize::from(len);
        }
        if labels.is_empty() {
            return None;
        }
        if self.is_exempt(&qname[..at]) {
            self.stats.exempt += 1;
            return None;
        }
        let (data, domain): (&[&[u8]], &[&[u8]]) = if tld_like(labels[labels.len() - 1]) {
            labels.split_at(labels.len() - base_labels(&labels))
        } else {
            (&labels, &[])
        };
        let s = shape(data, self.cfg.min_data);
        // The bucket: keyed hash of zone, client and the lowercased domain.
        let mut h = self.hasher.build_hasher();
        zone.hash(&mut h);
        client.hash(&mut h);
        for l in domain {
            h.write_u8(l.len() as u8);
            for c in *l {
                h.write_u8(c.to_ascii_lowercase());
            }
        }
        let key = h.finish() | 1;
        let mut nh = self.hasher.build_hasher();
        for l in &labels {
            nh.write_u8(l.len() as u8);
            for c in *l {
                nh.write_u8(c.to_ascii_lowercase());
            }
        }
        let name_hash = (nh.finish() as u32) | 1;
        let half_life_ns = self.half_life_ns;
        let idx = self.bucket(key, zone, client, now_ns, domain);
        let cfg = &self.cfg;
        let b = &mut self.buckets[idx];
        b.decay(now_ns, half_life_ns);
        let new = !b.recent.contains(&name_hash);
        if new {
            b.recent[usize::from(b.recent_at) % RECENT] = name_hash;
            b.recent_at = b.recent_at.wrapping_add(1) % RECENT as u8;
            let shape_bytes = s.bytes;
            let type_bytes = record_type_weight(qtype, s.score) * cfg.record_type_bytes as f32;
            b.shape += shape_bytes;
            b.types += type_bytes;
            if shape_bytes + type_bytes > 0.0 {
                b.names += 1.0;
            }
        }
        let threshold = cfg.threshold_bytes as f32;
        let was = b.tunnel;
        if !b.tunnel && b.evidence() >= threshold && b.names >= cfg.min_queries as f32 {
            b.tunnel = true;
        } else if b.tunnel && b.evidence() < threshold / 2.0 {
            b.tunnel = false;
        }
        if !b.tunnel {
            return None;
        }
        let f = Finding {
            reason: if b.shape >= b.types { "encoded_names" } else { "tunnel_record_types" },
            domain: b.domain,
            evidence_bytes: b.evidence() as u32,
            names: b.names.round() as u32,
            new: !was,
        };
        self.stats.findings += 1;
        self.stats.tunnels += u64::from(!was);
        Some(f)
    }

    /// True when the name (wire labels without the root) ends with an exempt suffix.
    fn is_exempt(&self, name: &[u8]) -> bool {
        self.exempt.iter().any(|sfx| {
            if sfx.is_empty() || sfx.len() > name.len() {
                return false;
            }
            // The suffix must start at a label boundary of the name.
            let start = name.len() - sfx.len();
            let mut at = 0;
            while at < start {
                at += 1 + usize::from(name[at]);
            }
            at == start && name[start..].eq_ignore_ascii_case(sfx)
        })
    }

    /// The slot of a bucket: its own, an empty or fully decayed one, or the probed one with
    /// the least evidence (evicted), preferring not to evict a tunnel.
    fn bucket(&mut self, key: u64, zone: u16, client: Addr, now_ns: u64, domain: &[&[u8]]) -> usize {
        let n = self.buckets.len();
        let start = (key % n as u64) as usize;
        // (class, evidence): 0 empty or idle for 16 half-lives (evidence below 1/65536 of
        // what it was), 1 an ordinary bucket, 2 a tunnel.
        let mut victim = (start, (3u8, f32::MAX));
        for i in 0..PROBES {
            let at = (start + i) % n;
            let b = &self.buckets[at];
            if b.key == key && b.zone == zone && b.client == client {
                return at;
            }
            let idle = b.key == 0 || now_ns.saturating_sub(b.last_ns) > 16 * self.half_life_ns;
            let rank = if idle { (0, 0.0) } else { (1 + u8::from(b.tunnel), b.evidence()) };
            if rank.0 < victim.1 .0 || rank.0 == victim.1 .0 && rank.1 < victim.1 .1 {
                victim = (at, rank);
            }
        }
        let at = victim.0;
        if victim.1 .0 > 0 {
            self.stats.evicted += 1;
        }
        let mut text = ArrayString::<DOMAIN_TEXT>::new();
        for l in domain {
            for &c in *l {
                let c = c.to_ascii_lowercase();
                let ch = if c.is_ascii_graphic() { char::from(c) } else { '?' };
                if text.try_push(ch).is_err() {
                    break;
                }
            }
            let _ = text.try_push('.');
        }
        if text.ends_with('.') && text.len() > 1 {
            text.pop();
        }
        if text.is_empty() {
            text.push('.');
        }
        self.buckets[at] = Bucket { key, zone, client, last_ns: now_ns, domain: text, ..Bucket::default() };
        at
    }
}

#[cfg(test)]
mod tests;
