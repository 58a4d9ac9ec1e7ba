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
//!   is a finding (`opaque_payload`, or `opaque_random_payload` when some payload's unexplained
//!   bytes, at least 128 of them, had an entropy near that of random bytes: 90 % of log2 of
//!   their length, at most 7 bits per byte counted, so encrypted or compressed data);
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
    /// Some unexplained run looked random ([`looks_random`]).
    random: bool,
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
        let unexplained = pattern_start(data, &mut self.scratch);
        let random = looks_random(&data[..unexplained]);
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
        p.random |= counted > 0 && random;
        if p.reported {
            return None;
        }
        let (reason, value, limit) = if ptunnel {
            ("ptunnel_header", data.len() as u64, 0)
        } else if p.mismatches >= self.cfg.mismatches.max(1) {
            ("reply_mismatch", u64::from(p.mismatches), u64::from(self.cfg.mismatches))
        } else if p.opaque >= u64::from(self.cfg.opaque_bytes.max(1)) {
            let r = if p.random { "opaque_random_payload" } else { "opaque_payload" };
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

/// True when `data` (its first 1024 bytes) is at least 128 bytes with a Shannon entropy of at
/// least 90 % of what uniform random bytes of that length reach (log2 of the length, at most 7
/// bits per byte counted): encrypted or compressed data, not text or structure.
fn looks_random(data: &[u8]) -> bool {
    let d = &data[..data.len().min(1024)];
    if d.len() < 128 {
        return false;
    }
    let need = (90.0 * (d.len() as f64).log2()).min(700.0);
    f64::from(entropy_centibits(d)) >= need
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a(x: u8) -> Addr {
        Addr::v4([198, 18, 0, x])
    }

    fn iputils(size: usize, t: u64) -> Vec<u8> {
        let mut d = vec![0u8; size];
        d[..8.min(size)].copy_from_slice(&t.to_le_bytes()[..8.min(size)]);
        for (i, b) in d.iter_mut().enumerate().skip(16) {
            *b = i as u8;
        }
        d
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut r = crate::app::testutil::Rng(seed | 1);
        (0..n).map(|_| r.next() as u8).collect()
    }

    fn start(d: &[u8]) -> usize {
        pattern_start(d, &mut vec![0; SCAN])
    }

    #[test]
    fn ping_payloads_are_patterns_after_their_timestamp() {
        assert_eq!(start(&iputils(56, 0x6b10_c23c)), 16);
        assert_eq!(start(&iputils(1400, 0x6b10_c23c)), 16);
        assert_eq!(start(&iputils(65_000, 0x6b10_c23c)), 16, "pattern extended past the scan");
        let mut bb = vec![0u8; 56];
        bb[..4].copy_from_slice(&[0x1a, 0x67, 0x56, 0x8d]);
        assert!(start(&bb) <= 4);
        assert_eq!(start(b"abcdefghijklmnopqrstuvwabcdefghi"), 0);
        assert_eq!(start(&[b'X'; 100]), 0);
        let mut probing = random(24, 3);
        probing.extend_from_slice(&[1; 40]);
        assert!(start(&probing) <= 24);
        let mut pat = iputils(56, 1);
        for (i, b) in pat.iter_mut().enumerate().skip(16) {
            *b = [0xa5, 0xc3][i % 2];
        }
        assert_eq!(start(&pat), 16);
        // Cisco IOS: 0xABCD repeated.
        assert_eq!(start(&[0xab, 0xcd].repeat(50)), 0);
    }

    #[test]
    fn data_is_unexplained() {
        for n in [17, 40, 100, 1024, 5000] {
            assert_eq!(start(&random(n, n as u64)), n, "{n}");
        }
        let text = b"GET /blob.bin HTTP/1.1\r\nHost: 198.18.151.2\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
        assert_eq!(start(text), text.len());
        // Data followed by padding: only the data is unexplained.
        let mut padded = random(300, 9);
        padded.extend_from_slice(&[0; 700]);
        assert_eq!(start(&padded), 300);
        assert_eq!(start(&[]), 0);
        assert_eq!(start(&[7]), 1);
        assert!(entropy_centibits(&random(1024, 5)) > 750);
        assert!(looks_random(&random(128, 5)) && looks_random(&random(1024, 6)));
        assert!(!looks_random(text) && !looks_random(&text.repeat(20)) && !looks_random(&random(100, 1)));
        assert!(entropy_centibits(text) < 600);
    }

    fn echo(t: &mut IcmpTunnel, req: bool, seq: u16, data: &[u8], now: u64) -> Option<Finding> {
        let (s, d) = if req { (a(1), a(2)) } else { (a(2), a(1)) };
        t.echo(3, s, d, req, 0x4242, seq, data, now)
    }

    #[test]
    fn pings_answered_with_their_data_raise_nothing() {
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        for seq in 0..2000u16 {
            let d = iputils(1400, u64::from(seq));
            let now = u64::from(seq) * 10_000_000;
            assert!(echo(&mut t, true, seq, &d, now).is_none());
            assert!(echo(&mut t, false, seq, &d, now + 1).is_none());
        }
        assert_eq!(t.stats().opaque_bytes, 0);
        assert_eq!(t.stats().mismatches, 0);
    }

    #[test]
    fn replies_that_do_not_echo_their_request_are_found() {
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        let mut found = Vec::new();
        for seq in 0..5u16 {
            let d = iputils(56, u64::from(seq));
            found.extend(echo(&mut t, true, seq, &d, u64::from(seq)));
            let mut r = d.clone();
            r[30] ^= 1; // one byte differs: still a pattern, but not the echo
            found.extend(echo(&mut t, false, seq, &r, u64::from(seq) + 1));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let f = found[0];
        assert_eq!((f.id, f.reason, f.src, f.dst, f.value, f.limit), (ThreatId::IcmpTunneling, "reply_mismatch", a(1), a(2), 3, 3));
        // A second, different answer to an answered request is a mismatch too; an identical
        // duplicate (ping's DUP!) is not.
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        let d = iputils(56, 1);
        echo(&mut t, true, 1, &d, 0);
        echo(&mut t, false, 1, &d, 1);
        echo(&mut t, false, 1, &d, 2);
        assert_eq!(t.stats().mismatches, 0);
        echo(&mut t, false, 1, &iputils(56, 2), 3);
        assert_eq!(t.stats().mismatches, 1);
    }

    #[test]
    fn data_riding_in_requests_is_found_even_when_echoed() {
        // icmptunnel-style upload: IP packets in requests, the kernel echoes each.
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        let mut found = None;
        for seq in 0..100u16 {
            let mut d = vec![0x45, 0, 0x05, 0xdc];
            d.extend(random(1020, u64::from(seq) + 1));
            let now = u64::from(seq) * 1_000_000;
            found = found.or(echo(&mut t, true, seq, &d, now));
            found = found.or(echo(&mut t, false, seq, &d, now + 1));
            if found.is_some() {
                assert_eq!(seq, 4, "4 × (1024 − 16) bytes reach 4096");
                break;
            }
        }
        let f = found.unwrap();
        assert_eq!((f.reason, f.limit), ("opaque_random_payload", 4096));
        // Reported once per window, again in the next one.
        assert!(echo(&mut t, true, 200, &random(1024, 99), 2_000_000_000).is_none());
        let mut again = None;
        for seq in 0..10u16 {
            again = again.or(echo(&mut t, true, 300 + seq, &random(1024, 50 + u64::from(seq)), 61_000_000_000));
        }
        assert!(again.is_some());
    }

    #[test]
    fn text_downloads_in_unsolicited_replies_are_found() {
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        let page = b"<html><body>".repeat(10);
        let mut found = None;
        for seq in 0..50u16 {
            let mut d = format!("HTTP/1.1 200 OK\r\nX-Seq: {seq}\r\n\r\n").into_bytes();
            d.extend_from_slice(&page);
            d.extend_from_slice(format!("{seq:08}").as_bytes());
            found = found.or(echo(&mut t, false, seq, &d, u64::from(seq)));
        }
        assert_eq!(found.map(|f| f.reason), Some("opaque_payload"));
        assert_eq!(t.stats().unmatched_replies, 50);
    }

    #[test]
    fn the_ptunnel_header_is_found_at_once() {
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        let mut d = vec![0xd5, 0x20, 0x08, 0x80, 198, 18, 151, 2, 0, 0, 0, 80, 0x40, 0, 0, 0, 0, 0, 0xff, 0xff];
        d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xff, 0x16]);
        assert_eq!(echo(&mut t, true, 0, &d, 0).map(|f| f.reason), Some("ptunnel_header"));
        // A wrong length field is not the header.
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig::default());
        d[23] = 1;
        assert!(echo(&mut t, true, 0, &d, 0).is_none());
        assert!(!ptunnel_header(&d[..27]));
    }

    #[test]
    fn a_scan_of_many_pairs_does_not_evict_a_pair_with_evidence() {
        let cfg = IcmpTunnelConfig { pairs: 8, ..IcmpTunnelConfig::default() };
        let mut t = IcmpTunnel::new(&cfg);
        let tunnel = random(1024, 1);
        echo(&mut t, true, 0, &tunnel, 0);
        for x in 0..200u8 {
            t.echo(3, a(5), a(x), true, 1, 1, &iputils(56, 1), 1_000 + u64::from(x));
        }
        let s = t.stats();
        assert!(s.evictions > 150 && s.evicted_evidence == 0, "{s:?}");
        let mut found = None;
        for seq in 1..5u16 {
            found = found.or(echo(&mut t, true, seq, &random(1024, u64::from(seq) + 7), 2_000));
        }
        assert!(found.is_some(), "the tunnel's bytes kept adding up");
    }

    #[test]
    fn observe_reads_decoded_frames_and_ignores_other_icmp() {
        let mut t = IcmpTunnel::new(&IcmpTunnelConfig { opaque_bytes: 100, ..IcmpTunnelConfig::default() });
        let data = random(400, 4);
        let mut seg = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 7];
        seg.extend_from_slice(&data);
        let ip = Ip {
            version: 4,
            src: a(1),
            dst: a(2),
            proto: 1,
            fragment: crate::wire::Fragment::No,
            frag: None,
            sport: 0x1234,
            dport: 0,
            l4: L4::Icmp { kind: 8, code: 0, ident: 0x1234, invoking: None },
            payload: &seg[8..],
            segment: &seg,
        };
        assert_eq!(t.observe(0, &ip, 0).map(|f| f.reason), Some("opaque_random_payload"));
        let ts = Ip { l4: L4::Icmp { kind: 13, code: 0, ident: 1, invoking: None }, ..ip };
        assert!(t.observe(0, &ts, 0).is_none());
        let short = Ip { segment: &seg[..6], ..ip };
        assert!(t.observe(0, &short, 0).is_none());
        assert_eq!(t.stats().echoes, 1);
    }
}
