//! TCP resets that end a denied session at both ends (RFC 9293 §3.10.7.3 reset processing,
//! RFC 5961 §3 in-window checks).
//!
//! When policy denies a session after its app became known, Warden drops the frame that
//! carried the decision and answers it with two RSTs built from that frame: one continuing the
//! frame's direction towards its destination (which never saw the frame, so its next expected
//! sequence number is the frame's `seq`), one back to the sender (whose next expected sequence
//! number is the frame's `ack`). Both are accepted by RFC 5961 receivers without a challenge
//! ACK. The frames are built in a caller-owned buffer: no allocation.
//!
//! L2: the original Ethernet addresses (swapped for the frame back to the sender) and VLAN
//! tags are kept; L3 is a fresh IPv4 header without options (TTL 64, DF) or IPv6 header (hop
//! limit 64) with the original addresses; checksums are computed in full (RFC 1071).

use crate::wire::{tcpflag, Frame, L4};

/// Largest reset frame: Ethernet 14 + two VLAN tags 8 + IPv6 40 + TCP 20 (bytes).
pub const RST_MAX: usize = 82;

/// A built reset frame.
#[derive(Debug, Clone, Copy)]
pub struct RstFrame {
    /// The frame bytes; `len` are valid.
    pub data: [u8; RST_MAX],
    /// Valid bytes.
    pub len: usize,
}

impl RstFrame {
    /// The valid bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The two resets answering `raw` (decoded as `f`): `[towards the frame's destination, back to
/// its sender]`. `None` when the frame is not a decodable TCP segment.
pub fn resets(raw: &[u8], f: &Frame<'_>) -> Option<[RstFrame; 2]> {
    let ip = f.ip.as_ref()?;
    let L4::Tcp { seq, ack, flags, .. } = ip.l4 else {
        return None;
    };
    if f.shim != crate::wire::Shim::None {
        // A PPPoE or MPLS frame: the shim's own lengths would have to be rebuilt too; the
        // segment is dropped without resets.
        return None;
    }
    let head = raw.get(..usize::from(f.l3))?;
    let mut seg_len = ip.payload.len() as u32;
    if flags & tcpflag::SYN != 0 {
        seg_len += 1;
    }
    if flags & tcpflag::FIN != 0 {
        seg_len += 1;
    }
    let has_ack = flags & tcpflag::ACK != 0;
    let forward = build(
        head, false, ip.version, &ip.src.0, &ip.dst.0, ip.sport, ip.dport, seq, ack, has_ack,
    );
    let back = build(
        head,
        true,
        ip.version,
        &ip.dst.0,
        &ip.src.0,
        ip.dport,
        ip.sport,
        if has_ack { ack } else { 0 },
        seq.wrapping_add(seg_len),
        true,
    );
    Some([forward, back])
}

#[allow(clippy::too_many_arguments)]
fn build(
    l2: &[u8],
    swap_mac: bool,
    version: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    with_ack: bool,
) -> RstFrame {
    let mut out = RstFrame {
        data: [0; RST_MAX],
        len: 0,
    };
    let b = &mut out.data;
    let n = l2.len();
    b[..n].copy_from_slice(l2);
    if swap_mac {
        b[..6].copy_from_slice(&l2[6..12]);
        b[6..12].copy_from_slice(&l2[..6]);
    }
    let ip_at = n;
    let tcp_len = 20usize;
    let ip_len = if version == 4 {
        b[n - 2..n].copy_from_slice(&0x0800u16.to_be_bytes());
        let h = &mut b[ip_at..ip_at + 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = 6;
        h[12..16].copy_from_slice(&src[12..]);
        h[16..20].copy_from_slice(&dst[12..]);
        let c = fold(sum(h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        20
    } else {
        b[n - 2..n].copy_from_slice(&0x86ddu16.to_be_bytes());
        let h = &mut b[ip_at..ip_at + 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        h[6] = 6;
        h[7] = 64;
        h[8..24].copy_from_slice(src);
        h[24..40].copy_from_slice(dst);
        40
    };
    let t_at = ip_at + ip_len;
    {
        let t = &mut b[t_at..t_at + tcp_len];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        if with_ack {
            t[8..12].copy_from_slice(&ack.to_be_bytes());
        }
        t[12] = 5 << 4;
        t[13] = tcpflag::RST | if with_ack { tcpflag::ACK } else { 0 };
    }
    // Pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) + segment.
    let mut s = 0u32;
    if version == 4 {
        s = sum(&src[12..], s);
        s = sum(&dst[12..], s);
    } else {
        s = sum(src, s);
        s = sum(dst, s);
    }
    s += 6 + tcp_len as u32;
    s = sum(&b[t_at..t_at + tcp_len], s);
    let c = fold(s);
    b[t_at + 16..t_at + 18].copy_from_slice(&c.to_be_bytes());
    out.len = t_at + tcp_len;
    out
}

/// One's-complement sum of 16-bit big-endian words (odd length padded with zero), added to `s`.
fn sum(data: &[u8], mut s: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

/// Folds a sum to 16 bits and complements it.
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, tcpflag::*};

    fn verify_tcp_checksum(frame: &[u8]) {
        let f = wire::decode(frame).unwrap();
        let ip = f.ip.unwrap();
        let l2 = usize::from(f.l3);
        let (ip_hdr, seg) = if ip.version == 4 {
            assert_eq!(fold(sum(&frame[l2..l2 + 20], 0)), 0, "IPv4 header checksum");
            (&frame[l2..l2 + 20], &frame[l2 + 20..])
        } else {
            (&frame[l2..l2 + 40], &frame[l2 + 40..])
        };
        let mut s = 0;
        if ip.version == 4 {
            s = sum(&ip_hdr[12..20], s);
        } else {
            s = sum(&ip_hdr[8..40], s);
        }
        s += 6 + seg.len() as u32;
        s = sum(seg, s);
        assert_eq!(fold(s), 0, "TCP checksum");
    }

    #[test]
    fn resets_both_ways_v4_and_v6() {
        for frame in [
            wire::tests::tcp4(&[], ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"),
            wire::tests::tcp4(&[100, 200], ACK, b"x"),
        ] {
            let f = wire::decode(&frame).unwrap();
            let ip = f.ip.unwrap();
            let L4::Tcp { seq, ack, .. } = ip.l4 else { panic!() };
            let [fw, back] = resets(&frame, &f).unwrap();
            for r in [&fw, &back] {
                verify_tcp_checksum(r.bytes());
            }
            let a = wire::decode(fw.bytes()).unwrap().ip.unwrap();
            assert_eq!((a.src, a.dst, a.sport, a.dport), (ip.src, ip.dst, ip.sport, ip.dport));
            assert!(matches!(a.l4, L4::Tcp { seq: s, flags, .. } if s == seq && flags & RST != 0));
            let b = wire::decode(back.bytes()).unwrap().ip.unwrap();
            assert_eq!((b.src, b.dst, b.sport, b.dport), (ip.dst, ip.src, ip.dport, ip.sport));
            let want_ack = seq.wrapping_add(ip.payload.len() as u32);
            assert!(
                matches!(b.l4, L4::Tcp { seq: s, ack: a2, flags, .. } if s == ack && a2 == want_ack && flags == RST | ACK)
            );
            assert_eq!(&back.bytes()[..6], &frame[6..12], "MACs swapped");
            assert_eq!(&fw.bytes()[..12], &frame[..12], "MACs kept");
        }
        // An IPv6 segment (built by the same code, then answered).
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        let l2 = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let v6 = build(&l2, false, 6, &src, &dst, 40000, 22, 7, 9, true).bytes().to_vec();
        let f = wire::decode(&v6).unwrap();
        let [fw, back] = resets(&v6, &f).unwrap();
        verify_tcp_checksum(fw.bytes());
        verify_tcp_checksum(back.bytes());
        assert_eq!(wire::decode(back.bytes()).unwrap().ip.unwrap().src, f.ip.unwrap().dst);
    }

    #[test]
    fn not_tcp_gives_none() {
        let u = wire::tests::udp6_ext(b"abc");
        assert!(resets(&u, &wire::decode(&u).unwrap()).is_none());
    }
}
