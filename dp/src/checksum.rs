//! Internet checksums (RFC 1071) of IPv4 headers and of TCP, UDP and ICMP segments, verified
//! the way the receiving host verifies them, so that a frame the host will drop for its
//! checksum is never fed to Warden's session state, streams or parsers (an *insertion*: a decoy
//! only Warden would read). See [`crate::normalize`] for what happens to such frames.
//!
//! - IPv4 header: RFC 791 §3.1 (the header alone, options included).
//! - TCP: RFC 9293 §3.1, over the IPv4 (RFC 9293 §3.1) or IPv6 (RFC 8200 §8.1) pseudo-header.
//! - UDP: RFC 768; over IPv4 a zero checksum means "none computed" and is accepted; over IPv6 a
//!   zero checksum is invalid (RFC 8200 §8.1; the RFC 6935 tunnel exception is not something a
//!   workload's stack accepts by default, Linux drops it), so it fails.
//! - ICMPv4: RFC 792 (message only); ICMPv6: RFC 4443 §2.3 (with the pseudo-header).
//!
//! A segment of a reassembled datagram is checked once, whole, from the assembly buffer
//! (fragments carry no transport checksum of their own); each fragment's IPv4 header is
//! checked as it arrives.
//!
//! Written here rather than taken from a crate: it runs on every frame of the hot path, on
//! Warden's own decoded views, and is a few lines of arithmetic. No allocation, no panics.

use crate::flow::Addr;
use crate::wire::{ipproto, Frame, Ip, L4};

/// Which checksum a frame failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The IPv4 header checksum.
    Ipv4Header,
    /// The TCP checksum.
    Tcp,
    /// The UDP checksum (or a zero UDP checksum over IPv6).
    Udp,
    /// The ICMP or ICMPv6 checksum.
    Icmp,
}

/// Adds `bytes` to a running ones' complement sum as 16-bit big-endian words (an odd last
/// byte is padded with a zero, RFC 1071 §4.1). `bytes` must start at an even offset of the
/// checksummed data for the words to line up; callers pass whole parts.
#[inline]
pub fn add(sum: u64, bytes: &[u8]) -> u64 {
    // Eight bytes at a time, read in the machine's byte order and added as two 32-bit halves
    // into a 64-bit accumulator (RFC 1071 §2(B): the sum is independent of byte order up to
    // one swap at the end; §2(C): wider words with deferred carries). No byte swap in the
    // loop, so it vectorises. 2^32 additions of values below 2^33 cannot overflow a u64.
    let mut acc = 0u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    let native = fold(acc);
    let mut sum = sum + u64::from(if cfg!(target_endian = "little") { native.swap_bytes() } else { native });
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a running sum to 16 bits (end-around carry).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// True when data whose checksum field is included sums to all ones (RFC 1071 §1(4)).
#[inline]
fn verifies(sum: u64) -> bool {
    fold(sum) == 0xffff
}

/// The pseudo-header sum of a transport segment of `len` bytes with protocol `proto` between
/// `src` and `dst` (IPv4: RFC 9293 §3.1; IPv6: RFC 8200 §8.1).
#[inline]
fn pseudo(src: &Addr, dst: &Addr, proto: u8, len: usize) -> u64 {
    let mut sum = u64::from(proto) + len as u64;
    if src.is_v4() {
        sum = add(sum, &src.0[12..]);
        add(sum, &dst.0[12..])
    } else {
        sum = add(sum, &src.0);
        add(sum, &dst.0)
    }
}

/// Verifies the IPv4 header checksum of `f` (true for IPv6 and non-IP frames, which have none).
pub fn ipv4_header_ok(f: &Frame<'_>) -> bool {
    if f.ip.as_ref().is_none_or(|ip| ip.version != 4) {
        return true;
    }
    let at = usize::from(f.l3);
    let Some(&b0) = f.raw.get(at) else { return false };
    let ihl = usize::from(b0 & 0x0f) * 4;
    f.raw.get(at..at + ihl).is_some_and(|h| verifies(add(0, h)))
}

/// Verifies the transport checksum of a decoded, not fragmented packet `ip` (TCP, UDP,
/// ICMP/ICMPv6; other protocols pass).
///
/// # Errors
/// The [`Bad`] checksum.
pub fn transport_ok(ip: &Ip<'_>) -> Result<(), Bad> {
    let seg = ip.segment;
    match ip.l4 {
        L4::Tcp { .. } => {
            let sum = add(pseudo(&ip.src, &ip.dst, ipproto::TCP, seg.len()), seg);
            if verifies(sum) { Ok(()) } else { Err(Bad::Tcp) }
        }
        L4::Udp => {
            let field = seg.get(6..8).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
            if field == 0 {
                return if ip.version == 4 { Ok(()) } else { Err(Bad::Udp) };
            }
            let sum = add(pseudo(&ip.src, &ip.dst, ipproto::UDP, seg.len()), seg);
            if verifies(sum) { Ok(()) } else { Err(Bad::Udp) }
        }
        L4::Icmp { .. } => {
            let sum = if ip.version == 4 {
                add(0, seg)
            } else {
                add(pseudo(&ip.src, &ip.dst, ipproto::ICMPV6, seg.len()), seg)
            };
            if verifies(sum) { Ok(()) } else { Err(Bad::Icmp) }
        }
        L4::Other => Ok(()),
    }
}

/// Writes a correct checksum into a TCP/UDP/ICMP segment built by hand (tests, crafted
/// frames, the resets Warden sends): `seg` is the whole segment with its checksum field at
/// `field` (TCP 16, UDP 6, ICMP 2) zeroed first. Over IPv4, ICMP has no pseudo-header.
pub fn fill(src: &Addr, dst: &Addr, proto: u8, seg: &mut [u8], field: usize) {
    if seg.len() < field + 2 {
        return;
    }
    seg[field..field + 2].fill(0);
    let base = if proto == ipproto::ICMP { 0 } else { pseudo(src, dst, proto, seg.len()) };
    let mut c = !fold(add(base, seg));
    if c == 0 && proto == ipproto::UDP {
        // A computed zero is sent as all ones (RFC 768).
        c = 0xffff;
    }
    seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

/// Writes a correct IPv4 header checksum into `hdr` (the header alone, field at 10..12).
pub fn fill_ipv4_header(hdr: &mut [u8]) {
    if hdr.len() < 20 {
        return;
    }
    hdr[10..12].fill(0);
    let c = !fold(add(0, hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode;

    /// A SYN shaped as Linux sends it (MSS, SACK permitted, timestamps, window scale 7),
    /// 198.18.0.1 → 198.18.0.2, with the checksums a sender computes.
    fn real_syn() -> Vec<u8> {
        let hex = "02000000000202000000000108004500003c1c46400040060000c6120001c6120002\
                   c0d80050000003e80000000aa002faf000000000020405b40402080a000000010000\
                   000001030307";
        let mut f: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        // Header checksum and TCP checksum as a sender computes them.
        fill_ipv4_header(&mut f[14..34]);
        let ip = decode(&f).unwrap().ip.unwrap();
        let (src, dst) = (ip.src, ip.dst);
        fill(&src, &dst, ipproto::TCP, &mut f[34..], 16);
        f
    }

    #[test]
    fn the_wide_sum_agrees_with_16_bit_words() {
        // Every length and alignment up to 64 bytes against the plain word-by-word sum.
        let data: Vec<u8> = (0..80u32).map(|i| (i * 37 + 11) as u8 | 0x80).collect();
        for start in [0, 2, 4, 6] {
            for len in 0..64 {
                let b = &data[start..start + len];
                let mut plain = 0u64;
                for c in b.chunks(2) {
                    plain += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                }
                assert_eq!(fold(add(0, b)), fold(plain), "start {start} len {len}");
            }
        }
        // Large sums of all-ones words fold the same too.
        let ones = vec![0xffu8; 65536];
        assert_eq!(fold(add(0, &ones)), 0xffff);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &b)), 0xddf2);
        // Any split at even offsets gives the same sum; an odd tail is padded.
        assert_eq!(fold(add(add(0, &b[..2]), &b[2..])), 0xddf2);
        assert_eq!(fold(add(0, &[0xab])), 0xab00);
    }

    #[test]
    fn a_known_ipv4_header() {
        // The classic worked example (header of a real packet): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        fill_ipv4_header(&mut h);
        assert_eq!(&h[10..12], &[0xb8, 0x61]);
    }

    #[test]
    fn verifies_what_senders_compute_and_rejects_any_flipped_bit() {
        let f = real_syn();
        let d = decode(&f).unwrap();
        assert!(ipv4_header_ok(&d));
        assert_eq!(transport_ok(d.ip.as_ref().unwrap()), Ok(()));
        for i in 14..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            let Ok(d) = decode(&g) else { continue };
            let ok = ipv4_header_ok(&d) && d.ip.as_ref().is_some_and(|ip| transport_ok(ip).is_ok());
            assert!(!ok, "byte {i} flipped still verifies");
        }
    }

    #[test]
    fn udp_zero_checksum_is_none_over_ipv4_and_invalid_over_ipv6() {
        use crate::wire::tests::{eth, ipv4, udp};
        let mut f = eth(crate::wire::ethertype::IPV4, &ipv4([198, 18, 0, 1], [198, 18, 0, 2], ipproto::UDP, &udp(5000, 53, b"abc")));
        let ip = decode(&f).unwrap().ip.unwrap();
        let (src, dst, at) = (ip.src, ip.dst, f.len() - ip.segment.len());
        f[at + 6..at + 8].fill(0);
        assert_eq!(transport_ok(&decode(&f).unwrap().ip.unwrap()), Ok(()));
        fill(&src, &dst, ipproto::UDP, &mut f[at..], 6);
        assert_eq!(transport_ok(&decode(&f).unwrap().ip.unwrap()), Ok(()));
        f[at + 9] ^= 1;
        assert_eq!(transport_ok(&decode(&f).unwrap().ip.unwrap()), Err(Bad::Udp));

        let mut f = crate::wire::tests::udp6_ext(b"abc");
        let ip = decode(&f).unwrap().ip.unwrap();
        let (src, dst, at) = (ip.src, ip.dst, f.len() - ip.segment.len());
        f[at + 6..at + 8].fill(0);
        assert_eq!(transport_ok(&decode(&f).unwrap().ip.unwrap()), Err(Bad::Udp));
        fill(&src, &dst, ipproto::UDP, &mut f[at..], 6);
        assert_eq!(transport_ok(&decode(&f).unwrap().ip.unwrap()), Ok(()));
    }
}
