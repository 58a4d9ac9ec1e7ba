//! `icmp_tunneling`: ICMP echo carrying data that is not a ping pattern.
//!
//! # What pings send, and what tunnels send
//!
//! Every ping implementation fills its echo data from a rule, after at most a timestamp or a
//! tracker id (recorded in `dp/tests/captures/threats/`, see its README):
//! * iputils `ping` (Linux, also macOS/BSD): a 16-byte `struct timeval`, then bytes counting
//!   up from `0x10` (wrapping at 256, so `-s 1400` too); `-p` repeats a pattern of up to 16
//!   bytes instead;
//! * busybox `ping`: a 4-byte timestamp, then zeros;
//! * Windows: `abcdefghijklmnopqrstuvwabcdefghi` (the 23 letters a..w repeated, 32 bytes);
//! * hping3 `-1`: no data, or `X` repeated (`-d`); nmap `-PE` and nping: no data;
//! * go pingers (pro-bing): an 8-byte time and a 16-byte tracker id, then `0x01` repeated;
//! * the exceptions are small and rare: nmap/nping `--data-length` (random bytes),
//!   `fping -R`, the Prometheus blackbox exporter's 28 bytes of text.
//!
//! Tunnels put their traffic in the data: `ptunnel` and `ptunnel-ng` a 28-byte header (magic
//! `0xD5200880`, ptunnel-ng `0xDEADC0DE` by default) and up to 1024 bytes of the carried TCP
//! stream; `icmptunnel` and `hans` whole IP packets from a tun device. The proxy answers with
//! its own data (downloads ride in echo *replies*, with replies outnumbering requests), while
//! the proxy host's kernel still answers every request with an exact echo (uploads ride in
//! requests, echoed back unchanged).
//!
//! # How this detector tells them apart
//!
//! Per (zone, requester, responder) pair, over a window of [`IcmpTunnelConfig::window_s`]:
//! * **unexplained bytes**: each echo payload is split into its longest *pattern suffix* (a
//!   run whose byte-to-byte differences repeat with a period of at most 32 bytes, repeated at
//!   least 8 bytes beyond one period: counting bytes, constant fills, repeated patterns and the
//!   Windows alphabet all are, random or compressed data practically never is: a chance of
//!   2⁻⁶⁴ per period) and the bytes before it. The bytes before it, less
//!   [`IcmpTunnelConfig::free_bytes`] per packet (room for a timestamp), are *unexplained*.
//!   Requests count theirs; replies count theirs unless they are the exact echo of a request
//!   seen (an echo carries nothing new). A pair reaching [`IcmpTunnelConfig::opaque_bytes`]
//!   is a finding (`opaque_payload`, or `opaque_random_payload` when some payload of at least
//!   128 unexplained bytes had an entropy of 7 bits per byte or more: encrypted or compressed);
//! * **mismatched replies**: a reply whose (identifier, sequence) matches a request but whose
//!   data differs (RFC 792: "the data received in the echo message must be returned in the
//!   echo reply message"; RFC 4443 §4.2 likewise), including a second, different answer to an
//!   already answered request. [`IcmpTunnelConfig::mismatches`] of them is a finding
//!   (`reply_mismatch`);
//! * **a tunnel's own header**: the ptunnel / ptunnel-ng header (magic and a length field that
//!   matches the packet) is a finding at once (`ptunnel_header`).
//!
//! Each pair reports at most once per window. Requests are matched to replies through the last
//! 8 requests of the pair (identifier, sequence, keyed 64-bit hash of the data: a forged reply
//! cannot be made to collide without the per-process key).
//!
//! # NeuVector's heuristic and why we do more
//!
//! NeuVector's dp (`dpi_icmp_tunneling_check` in `dp/dpi/dpi_session.c`) hashes each echo
//! request's data and compares it with the reply of the same sequence number; 3 *consecutive*
//! differing replies in one ICMP session raise the threat once. It misses: uploads (the proxy
//! kernel's exact echoes reset the count, and data riding in requests is never looked at);
//! downloads where the proxy's replies have no request of the same sequence (ptunnel replies
//! with its own sequence numbers, many replies per request); and any tunnel that interleaves
//! one genuine echo every other packet. Our unexplained-bytes volume sees data in either
//! direction whatever the replies do, and mismatches are counted over the window, not
//! consecutively. Our measured rates are in the report of issue 15 (`perf/RESULTS.md`).
//!
//! # Limits
//!
//! A channel of at most `free_bytes` per echo (16 by default) or under `opaque_bytes` per
//! window (4096 bytes per 60 s) is not seen; `icmp_flood` bounds the echo rate, and the
//! session's byte counts remain in its record. A tunnel that encodes data in payload *lengths*
//! or timing is out of reach of a content heuristic.

use super::flood::{Finding, Lookup, Sets};
use crate::detect::ThreatId;
use crate::flow::Addr;
use crate::wire::{icmp_class, IcmpClass, Ip, L4};
use std::hash::BuildHasher;

/// `[threats.icmp_tunneling]` thresholds and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpTunnelConfig {
    /// Window over which a pair's unexplained bytes and mismatches add up (s). Default 60.
    pub window_s: u32,
    /// Unexplained echo payload bytes of one pair in a window that make a finding.
    /// Default 4096.
    pub opaque_bytes: u32,
    /// Bytes of each payload not counted (a timestamp, a tracker id). Default 16.
    pub free_bytes: u32,
    /// Replies differing from their request that make a finding. Default 3 (NeuVector's).
    pub mismatches: u32,
    /// (zone, requester, responder) pairs tracked per core (rounded up to a multiple of 8).
    /// Default 2048.
    pub pairs: usize,
}

impl Default for IcmpTunnelConfig {
    fn default() -> Self {
        IcmpTunnelConfig { window_s: 60, opaque_bytes: 4096, free_bytes: 16, mismatches: 3, pairs: 2048 }
    }
}

/// Counters of an [`IcmpTunnel`] detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// Echo requests and replies seen.
    pub echoes: u64,
    /// Unexplained payload bytes counted (beyond `free_bytes`).
    pub opaque_bytes: u64,
    /// Replies that differed from their request.
    pub mismatches: u64,
    /// Replies with no request recorded for their (identifier, sequence).
    pub unmatched_replies: u64,
    /// Findings returned.
    pub findings: u64,
    /// Pairs replaced in the table.
    pub evictions: u64,
    /// Pairs replaced while they carried evidence (unexplained bytes or mismatches).
    pub evicted_evidence: u64,
}

/// Requests remembered per pair.
const RING: usize = 8;
/// Analysed bytes of a payload at once (pattern suffix search; longer patterns are extended
/// byte by byte).
const SCAN: usize = 4096;
/// Longest pattern period (bytes).
const MAX_PERIOD: usize = 32;
/// Bytes a pattern must repeat beyond its first period.
const MIN_REPEAT: usize = 8;
/// Magic numbers of ptunnel (0.72) and ptunnel-ng (default).
const PTUNNEL_MAGIC: [u32; 2] = [0xD520_0880, 0xDEAD_C0DE];

#[derive(Debug, Clone, Copy, Default)]
struct Req {
    used: bool,
    answered: bool,
    ident: u16,
    seq: u16,
    hash: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    start: u64,
    last: u64,
    opaque: u64,
    mismatches: u32,
    /// Highest entropy of an unexplained run (centibits per byte).
    entropy: u16,
    reported: bool,
    next: u8,
    ring: [Req; RING],
}

impl Pair {
    fn evidence(&self) -> bool {
        self.opaque > 0 || self.mismatches > 0
    }
}

/// `icmp_tunneling` detector of one worker.
pub struct IcmpTunnel {
    cfg: IcmpTunnelConfig,
    pairs: Sets<(u16, Addr, Addr), Pair>,
    hasher: hashbrown::DefaultHashBuilder,
    scratch: Vec<u16>,
    stats: TunnelStats,
}

impl IcmpTunnel {
    /// A detector with `cfg`'s thresholds and table size (allocated here, once).
    pub fn new(cfg: &IcmpTunnelConfig) -> Self {
        IcmpTunnel {
            cfg: *cfg,
            pairs: Sets::new(cfg.pairs),
            hasher: hashbrown::DefaultHashBuilder::default(),
            scratch: vec![0; SCAN],
            stats: TunnelStats::default(),
        }
    }

    /// A decoded packet on `zone` at `now_ns`: looks at ICMP/ICMPv6 echo requests and replies
    /// (others are ignored). `ip.segment` is the ICMP message (its sequence number at bytes
    /// 6..8), `ip.payload` the echo data.
    pub fn observe(&mut self, zone: u16, ip: &Ip<'_>, now_ns: u64) -> Option<Finding> {
        let L4::Icmp { kind, ident, .. } = ip.l4 else { return None };
        let request = match icmp_class(ip.proto, kind) {
            IcmpClass::Request if kind == 8 || kind == 128 => true,
            IcmpClass::Reply if kind == 0 || kind == 129 => false,
            _ => return None,
        };
        let seq = match ip.segment {
            [_, _, _, _, _, _, a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => return None,
        };
        self.echo(zone, ip.src, ip.dst, request, ident, seq, ip.payload, now_ns)
    }

    /// An echo request (`request`) or reply from `src` to `dst` on `zone` with identifier
    /// `ident`, sequence number `seq` and data `data`, at `now_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn echo(
        &mut self,
        zone: u16,
        src: Addr,
        dst: Addr,
        request: bool,
        ident: u16,
        seq: u16,
        data: &[u8],
        now_ns: u64,
    ) -> Option<Finding> {
        self.stats.echoes += 1;
        let (requester, responder) = if request { (src, dst) } else { (dst, src) };
        let key = (zone, requester, responder);
        let i = match self.pairs.lookup(
            key,
            |p| Some(if p.evidence() { (1 << 62) | (p.last >> 2) } else { p.last >> 2 }),
            || Pair { start: now_ns, ..Pair::default() },
        ) {
            Lookup::Hit(i) => i,
            Lookup::Inserted { idx, evicted } => {
                if let Some(score) = evicted {
                    self.stats.evictions += 1;
                    if score >= 1 << 62 {
                        self.stats.evicted_evidence += 1;
                    }
                }
                idx
            }
            Lookup::Full => return None,
        };
        let window = u64::from(self.cfg.window_s).max(1) * super::flood::WINDOW_NS;
        let hash = self.hasher.hash_one(data);
        let (unexplained, entropy) = self.unexplained(data);
        let free = self.cfg.free_bytes as usize;
        let mut counted = unexplained.saturating_sub(free) as u64;
        let ptunnel = ptunnel_header(data);

        let p = self.pairs.val_mut(i);
        if now_ns.saturating_sub(p.start) >= window {
            *p = Pair { start: now_ns, ring: p.ring, next: p.next, ..Pair::default() };
        }
        p.last = now_ns;
        if request {
            let slot = usize::from(p.next) % RING;
            p.ring[slot] = Req { used: true, answered: false, ident, seq, hash };
            p.next = p.next.wrapping_add(1);
        } else {
            match p.ring.iter_mut().find(|r| r.used && r.ident == ident && r.seq == seq) {
                Some(r) if r.hash == hash => {
                    // An exact echo carries nothing the request did not.
                    r.answered = true;
                    counted = 0;
                }
                Some(r) => {
                    r.answered = true;
                    p.mismatches = p.mismatches.saturating_add(1);
                    self.stats.mismatches += 1;
                }
                None => self.stats.unmatched_replies += 1,
            }
        }
        p.opaque = p.opaque.saturating_add(counted);
        self.stats.opaque_bytes += counted;
        if counted > 0 {
            p.entropy = p.entropy.max(entropy);
        }
        if p.reported {
            return None;
        }
        let (reason, value, limit) = if ptunnel {
            ("ptunnel_header", data.len() as u64, 0)
        } else if p.mismatches >= self.cfg.mismatches.max(1) {
            ("reply_mismatch", u64::from(p.mismatches), u64::from(self.cfg.mismatches))
        } else if p.opaque >= u64::from(self.cfg.opaque_bytes.max(1)) {
            let r = if p.entropy >= 700 { "opaque_random_payload" } else { "opaque_payload" };
            (r, p.opaque, u64::from(self.cfg.opaque_bytes))
        } else {
            return None;
        };
        p.reported = true;
        self.stats.findings += 1;
        Some(Finding {
            id: ThreatId::IcmpTunneling,
            reason,
            zone,
            src: requester,
            dst: responder,
            port: 0,
            value,
            limit,
        })
    }

    /// The counters.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// Bytes of `data` before its pattern suffix (all of it when it has none), and the entropy
    /// of those bytes in centibits per byte (0 under 128 bytes).
    fn unexplained(&mut self, data: &[u8]) -> (usize, u16) {
        let n = pattern_start(data, &mut self.scratch);
        let head = &data[..n];
        let entropy = if head.len() >= 128 { entropy_centibits(&head[..head.len().min(1024)]) } else { 0 };
        (n, entropy)
    }
}

/// True when `data` starts with a ptunnel / ptunnel-ng header (magic, and a data length field
/// equal to the bytes after the 28-byte header).
fn ptunnel_header(data: &[u8]) -> bool {
    let be = |o: usize| u32::from_be_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    data.len() >= 28 && PTUNNEL_MAGIC.contains(&be(0)) && be(20) as usize == data.len() - 28
}

/// Start of the longest suffix of `data` generated by a short rule: its byte differences
/// repeat with a period `p` ≤ [`MAX_PERIOD`] over at least `p +` [`MIN_REPEAT`] differences.
/// Returns `data.len()` when there is none. `scratch` (at least [`SCAN`] entries) holds the
/// prefix function of the reversed differences; O(len), no allocation.
pub fn pattern_start(data: &[u8], scratch: &mut [u16]) -> usize {
    let n = data.len();
    if n < 2 {
        return n;
    }
    let m = n - 1; // differences
    // r[j]: the j-th difference counted from the end.
    let r = |j: usize| data[m - j].wrapping_sub(data[m - 1 - j]);
    let len = m.min(SCAN).min(scratch.len());
    if len == 0 {
        return n;
    }
    let pi = &mut scratch[..len];
    pi[0] = 0;
    let mut best: Option<(usize, usize)> = None; // (suffix length in differences, period)
    let consider = |l: usize, k: usize, best: &mut Option<(usize, usize)>| {
        let p = l - k;
        if p <= MAX_PERIOD && l >= p + MIN_REPEAT {
            *best = Some((l, p));
        }
    };
    for i in 1..len {
        let mut k = usize::from(pi[i - 1]);
        while k > 0 && r(i) != r(k) {
            k = usize::from(pi[k - 1]);
        }
        if r(i) == r(k) {
            k += 1;
        }
        pi[i] = k as u16;
        consider(i + 1, k, &mut best);
    }
    let Some((mut l, p)) = best else { return n };
    if l == len {
        // The whole analysed tail follows the rule: extend it byte by byte.
        while l < m && r(l) == r(l - p) {
            l += 1;
        }
    }
    n - (l + 1)
}

/// Shannon entropy of `data` in centibits per byte (0..=800).
fn entropy_centibits(data: &[u8]) -> u16 {
    if data.is_empty() {
        return 0;
    }
    let mut hist = [0u32; 256];
    for b in data {
        hist[usize::from(*b)] += 1;
    }
    let n = data.len() as f64;
    let h: f64 = hist.iter().filter(|c| **c > 0).map(|c| {
        let q = f64::from(*c) / n;
        -q * q.log2()
    }).sum();
    (h * 100.0).round() as u16
}
