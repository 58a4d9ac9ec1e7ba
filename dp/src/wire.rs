//! L2–L4 decoding: zero-copy views over one Ethernet frame.
//!
//! Written here rather than taken from etherparse because it is the hot path and Warden needs
//! exactly one pass that yields the 5-tuple, the TCP fields the session tracker uses, the L4
//! payload, and a precise [`Malformed`] reason for every frame it cannot decode, without
//! allocating and without panicking on any input.
//!
//! Sources: Ethernet II and IEEE 802.1Q / 802.1ad (TPIDs 0x8100, 0x88a8, 0x9100); IPv4
//! (RFC 791, options skipped by IHL); IPv6 (RFC 8200 §4: Hop-by-Hop, Routing, Fragment,
//! Destination Options; RFC 4302 AH; RFC 6275 Mobility); TCP (RFC 9293 §3.1, the Window Scale
//! option of SYNs, RFC 7323 §2); UDP (RFC 768); ICMP (RFC 792) and ICMPv6 (RFC 4443) including
//! the invoking packet of error messages and ICMPv4 redirects (its 5-tuple and, for TCP, its
//! sequence number), with query messages keyed so that a request and its replies share a flow
//! ([`icmp_ports`]).
//!
//! Contract: [`decode`] checks every length before reading; once it returns `Ok`, every slice in
//! [`Frame`] lies inside the input. Unknown values (ethertypes, IP protocols) are data, not
//! errors.

use crate::flow::Addr;

/// Ethertypes Warden reads.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag.
    pub const QINQ_OLD: u16 = 0x9100;
    /// PPPoE session stage (RFC 2516 §4).
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// MPLS unicast (RFC 3032).
    pub const MPLS: u16 = 0x8847;
    /// MPLS multicast (RFC 5332).
    pub const MPLS_MC: u16 = 0x8848;
    /// Transparent Ethernet bridging (the GRE and Geneve protocol type of an Ethernet payload).
    pub const TEB: u16 = 0x6558;
}

/// IP protocol numbers Warden reads.
pub mod ipproto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Why a frame could not be decoded. Tiny and `Copy`: counted per reason, never allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// More than [`MAX_VLANS`] VLAN tags, or a tag cut short.
    VlanInvalid,
    /// IPv4 header cut short, IHL < 5, or total length below the header.
    Ipv4Header,
    /// IPv4 total length larger than the frame.
    Ipv4Length,
    /// IPv6 header cut short (< 40 bytes).
    Ipv6Header,
    /// IPv6 payload length larger than the frame.
    Ipv6Length,
    /// IPv6 extension header chain cut short or too long.
    Ipv6ExtHeader,
    /// IP version field disagrees with the ethertype.
    IpVersion,
    /// TCP header cut short or data offset < 5.
    TcpHeader,
    /// UDP header cut short or UDP length disagrees with the IP payload.
    UdpHeader,
    /// ICMP/ICMPv6 header cut short.
    IcmpHeader,
    /// PPPoE session header cut short, or a version/type or code other than 1/1/0
    /// (RFC 2516 §4).
    PppoeInvalid,
    /// MPLS label stack cut short or deeper than [`MAX_MPLS_LABELS`] (RFC 3032 §2.1).
    MplsInvalid,
}

impl Malformed {
    /// Stable snake_case name used in counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::EthTruncated => "eth_truncated",
            Malformed::VlanInvalid => "vlan_invalid",
            Malformed::Ipv4Header => "ipv4_header",
            Malformed::Ipv4Length => "ipv4_length",
            Malformed::Ipv6Header => "ipv6_header",
            Malformed::Ipv6Length => "ipv6_length",
            Malformed::Ipv6ExtHeader => "ipv6_ext_header",
            Malformed::IpVersion => "ip_version",
            Malformed::TcpHeader => "tcp_header",
            Malformed::UdpHeader => "udp_header",
            Malformed::IcmpHeader => "icmp_header",
            Malformed::PppoeInvalid => "pppoe_invalid",
            Malformed::MplsInvalid => "mpls_invalid",
        }
    }

    /// All reasons, for counter tables indexed by `self as usize`.
    pub const ALL: [Malformed; 13] = [
        Malformed::EthTruncated,
        Malformed::VlanInvalid,
        Malformed::Ipv4Header,
        Malformed::Ipv4Length,
        Malformed::Ipv6Header,
        Malformed::Ipv6Length,
        Malformed::Ipv6ExtHeader,
        Malformed::IpVersion,
        Malformed::TcpHeader,
        Malformed::UdpHeader,
        Malformed::IcmpHeader,
        Malformed::PppoeInvalid,
        Malformed::MplsInvalid,
    ];
}

/// TCP flag bits (RFC 9293 §3.1).
pub mod tcpflag {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant (RFC 9293 §3.8.5).
    pub const URG: u8 = 0x20;
}

/// Fragmentation status of the IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fragment {
    /// Not fragmented (IPv6: also an atomic fragment, offset 0 without M, RFC 6946).
    #[default]
    No,
    /// First fragment (offset 0, more follow). Nothing after the IP header (IPv6: after the
    /// Fragment header) is decoded: it is read from the reassembled datagram
    /// ([`crate::defrag`]), so the payload is raw.
    First,
    /// A later fragment: no L4 header; the payload is raw.
    Later,
}

/// The fragmentation fields of a fragment (RFC 791 §3.1; RFC 8200 §4.5), and where its
/// unfragmentable part ends, for reassembly ([`crate::defrag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInfo {
    /// Identification (IPv4: 16 bits; IPv6: 32 bits).
    pub id: u32,
    /// Offset of this fragment's data in the fragmentable part of the datagram, in bytes (the
    /// header's 13-bit field times 8).
    pub offset: u32,
    /// More fragments follow (MF / M flag).
    pub more: bool,
    /// Length in bytes of the unfragmentable part, from the first byte of the IP header: the
    /// IPv4 header with options (IHL × 4), or the IPv6 header and the extension headers before
    /// the Fragment header. The fragment's data ([`Ip::payload`]) follows it (IPv6: after the
    /// 8-byte Fragment header).
    pub header_len: u16,
    /// IPv6: position, from the first byte of the IP header, of the Next Header byte that
    /// names the Fragment header (6 when it follows the fixed header). IPv4: 9 (protocol).
    pub next_at: u16,
}

/// The transport layer of a decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP header fields the session tracker uses.
    Tcp {
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Flag bits ([`tcpflag`]).
        flags: u8,
        /// Receive window (unscaled).
        window: u16,
        /// Window scale shift a SYN offers (RFC 7323 §2.2), at most 14; `None` when the
        /// segment is not a SYN or carries no Window Scale option.
        wscale: Option<u8>,
        /// Urgent pointer (meaningful with [`tcpflag::URG`]): offset from `seq` of the byte
        /// after the urgent data (RFC 9293 §3.8.5; Linux's default reading).
        urgent: u16,
    },
    /// UDP.
    Udp,
    /// ICMP or ICMPv6 header.
    Icmp {
        /// Message type.
        kind: u8,
        /// Message code.
        code: u8,
        /// Identifier of query messages (echo, timestamp; 0 otherwise).
        ident: u16,
        /// For error messages and ICMPv4 redirects: the 5-tuple of the invoking packet, as it
        /// was sent.
        invoking: Option<InnerTuple>,
    },
    /// Any other IP protocol, or a non-first fragment.
    Other,
}

/// The 5-tuple of the packet quoted in an ICMP error (RFC 792, RFC 4443 §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerTuple {
    /// Source address of the invoking packet.
    pub src: Addr,
    /// Destination address of the invoking packet.
    pub dst: Addr,
    /// Its IP protocol.
    pub proto: u8,
    /// Source port (0 when not TCP/UDP or not quoted; for a quoted ICMP query, the ports its
    /// own decoding gives: [`icmp_ports`]).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number of a quoted TCP segment (`None`: not TCP, or the quote ends before it).
    pub seq: Option<u32>,
}

/// What an ICMP or ICMPv6 message is, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpClass {
    /// An error quoting the packet that caused it: ICMPv4 destination unreachable, source
    /// quench, time exceeded, parameter problem (RFC 792); ICMPv6 types 0..=127 (RFC 4443 §2.1).
    Error,
    /// A redirect: ICMPv4 type 5 (RFC 792, quotes the invoking packet like an error), ICMPv6
    /// type 137 (RFC 4861 §4.5).
    Redirect,
    /// A query: ICMPv4 echo (8) or timestamp (13) request; ICMPv6 echo request (128).
    Request,
    /// The answer to a query: ICMPv4 echo (0) or timestamp (14) reply; ICMPv6 echo reply (129).
    Reply,
    /// Anything else (neighbour discovery, MLD, router advertisements, ...).
    Other,
}

/// Classifies ICMP (`proto` 1) or ICMPv6 (`proto` 58) message type `kind`.
pub fn icmp_class(proto: u8, kind: u8) -> IcmpClass {
    if proto == ipproto::ICMPV6 {
        match kind {
            0..=127 => IcmpClass::Error,
            128 => IcmpClass::Request,
            129 => IcmpClass::Reply,
            137 => IcmpClass::Redirect,
            _ => IcmpClass::Other,
        }
    } else {
        match kind {
            3 | 4 | 11 | 12 => IcmpClass::Error,
            5 => IcmpClass::Redirect,
            8 | 13 => IcmpClass::Request,
            0 | 14 => IcmpClass::Reply,
            _ => IcmpClass::Other,
        }
    }
}

/// The (source, destination) ports an ICMP message of class `class` with identifier `ident`
/// stands for in its flow key: a request's sender is the end with port `ident`, its receiver
/// the end with port 0, and a reply travels the other way. So a request and its replies share
/// one key, while a request sent the other way with the same identifier (from outside, riding
/// a workload's own ping) has a key of its own. Other messages: (0, 0).
pub fn icmp_ports(class: IcmpClass, ident: u16) -> (u16, u16) {
    match class {
        IcmpClass::Request => (ident, 0),
        IcmpClass::Reply => (0, ident),
        _ => (0, 0),
    }
}

/// The IP part of a decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip<'a> {
    /// 4 or 6.
    pub version: u8,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Fragmentation status.
    pub fragment: Fragment,
    /// Fragmentation fields of a fragment (`None` when [`Fragment::No`]).
    pub frag: Option<FragInfo>,
    /// Source port (TCP/UDP; for ICMP queries see [`icmp_ports`]; else 0).
    pub sport: u16,
    /// Destination port (TCP/UDP; for ICMP queries see [`icmp_ports`]; else 0).
    pub dport: u16,
    /// Transport header fields.
    pub l4: L4,
    /// Transport payload (after the TCP/UDP/ICMP header), bounded by the IP length.
    pub payload: &'a [u8],
    /// The whole transport segment (header and payload; UDP: bounded by the UDP length), what
    /// its checksum covers ([`crate::checksum`]). Of a fragment: the fragment's data.
    pub segment: &'a [u8],
}

/// The most VLAN tags [`decode`] walks (802.1Q in 802.1ad, and deeper stacks, as Linux
/// accepts VLAN devices on VLAN devices); more is malformed.
pub const MAX_VLANS: usize = 4;

/// The most MPLS labels [`decode`] walks before the bottom of the stack (more is malformed).
pub const MAX_MPLS_LABELS: usize = 8;

/// What sits between the Ethernet header (and its VLAN tags) and the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shim {
    /// Nothing: the IP header follows the tags.
    #[default]
    None,
    /// A PPPoE session header and a PPP protocol field (RFC 2516 §4, RFC 1661 §2); the PPPoE
    /// session id.
    Pppoe(u16),
    /// An MPLS label stack (RFC 3032); the number of labels.
    Mpls(u8),
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The whole frame as given to [`decode`] (the L2 header, tags and shim are `raw[..l3]`).
    /// For the inner packet of an IP-in-IP style tunnel ([`crate::tunnel`]) it is the inner IP
    /// packet itself (`l3` 0).
    pub raw: &'a [u8],
    /// Offset in `raw` of the IP header (or of what follows the L2 header when not IP):
    /// 14, plus 4 per VLAN tag, plus the PPPoE or MPLS shim.
    pub l3: u16,
    /// Source MAC address (bytes 6..12 of the Ethernet header).
    pub src_mac: [u8; 6],
    /// VLAN ids, outermost first (0 when absent); `vlans` tells how many are valid.
    pub vlan: [u16; MAX_VLANS],
    /// Number of VLAN tags (0..=[`MAX_VLANS`]).
    pub vlans: u8,
    /// PPPoE or MPLS between the tags and the IP header.
    pub shim: Shim,
    /// The ethertype after the tags (for a shim: [`ethertype::IPV4`] or [`ethertype::IPV6`]
    /// when it carries IP, else the shim's own ethertype).
    pub ethertype: u16,
    /// IP layer, when the ethertype is IPv4 or IPv6.
    pub ip: Option<Ip<'a>>,
}

impl Frame<'_> {
    /// The VLAN part of the session key's segment ([`crate::flow::FlowKey::seg`]): the
    /// outermost tag's id in bits 12..24, the next one's in bits 0..12 (0 when untagged); the
    /// ids of a third and fourth tag are folded into those 24 bits (a stack that deep is
    /// rare enough that two stacks sharing a segment is acceptable).
    pub fn vlan_segment(&self) -> u64 {
        let two = (u64::from(self.vlan[0]) << 12) | u64::from(self.vlan[1]);
        let deeper = (u64::from(self.vlan[2]) << 12) | u64::from(self.vlan[3]);
        if deeper == 0 {
            two
        } else {
            (two ^ deeper.wrapping_mul(0x9e37_79b9).rotate_left(7)) & 0x00ff_ffff
        }
    }
}

/// The big-endian u16 at `at`, if `b` holds it.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The big-endian u32 at `at`, if `b` holds it.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// Decodes one Ethernet frame (no FCS).
///
/// # Errors
/// The first [`Malformed`] reason met. Non-IP frames are not errors: they return `ip: None`.
pub fn decode(frame: &[u8]) -> Result<Frame<'_>, Malformed> {
    let mut ethertype = be16(frame, 12).ok_or(Malformed::EthTruncated)?;
    let mut off = 14;
    let mut vlan = [0u16; MAX_VLANS];
    let mut vlans = 0u8;
    while matches!(ethertype, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD) {
        if usize::from(vlans) == MAX_VLANS {
            return Err(Malformed::VlanInvalid);
        }
        let tci = be16(frame, off).ok_or(Malformed::VlanInvalid)?;
        ethertype = be16(frame, off + 2).ok_or(Malformed::VlanInvalid)?;
        vlan[vlans as usize] = tci & 0x0fff;
        vlans += 1;
        off += 4;
    }
    let mut shim = Shim::None;
    let mut end = frame.len();
    match ethertype {
        ethertype::PPPOE_SESSION => {
            let (id, ip_type, len, payload) = pppoe(frame.get(off..).unwrap_or(&[]))?;
            shim = Shim::Pppoe(id);
            // What follows the PPPoE payload is padding: the receiver trims it (Linux's
            // pppoe_rcv), so an IP length claiming it makes the packet malformed, not longer.
            end = off + 6 + payload;
            off += len;
            ethertype = ip_type.unwrap_or(ethertype);
        }
        ethertype::MPLS | ethertype::MPLS_MC => {
            let (labels, ip_type) = mpls(frame.get(off..).unwrap_or(&[]))?;
            shim = Shim::Mpls(labels as u8);
            off += 4 * labels;
            ethertype = ip_type.unwrap_or(ethertype);
        }
        _ => {}
    }
    let rest = frame.get(off..end).unwrap_or(&[]);
    let ip = match ethertype {
        ethertype::IPV4 => Some(decode_ipv4(rest)?),
        ethertype::IPV6 => Some(decode_ipv6(rest)?),
        _ => None,
    };
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(Frame { raw: frame, l3: off as u16, src_mac, vlan, vlans, shim, ethertype, ip })
}

/// Reads a PPPoE session header and the PPP protocol field after it (RFC 2516 §4; RFC 1661
/// §2, a 1-byte protocol field when compressed, RFC 1661 §6.5): the session id, the ethertype
/// of the IP version carried (`None`: not IP, e.g. LCP), the length of header and protocol
/// field, and the PPPoE payload length (protocol field and packet; bytes).
///
/// # Errors
/// [`Malformed::PppoeInvalid`], also when the payload length runs past the frame or does not
/// cover the protocol field.
fn pppoe(p: &[u8]) -> Result<(u16, Option<u16>, usize, usize), Malformed> {
    let (ver_type, code) = (*p.first().ok_or(Malformed::PppoeInvalid)?, *p.get(1).ok_or(Malformed::PppoeInvalid)?);
    if ver_type != 0x11 || code != 0 {
        return Err(Malformed::PppoeInvalid);
    }
    let id = be16(p, 2).ok_or(Malformed::PppoeInvalid)?;
    let first = *p.get(6).ok_or(Malformed::PppoeInvalid)?;
    let (proto, len) = if first & 1 == 1 {
        (u16::from(first), 7)
    } else {
        (be16(p, 6).ok_or(Malformed::PppoeInvalid)?, 8)
    };
    let payload = usize::from(be16(p, 4).ok_or(Malformed::PppoeInvalid)?);
    if payload < len - 6 || 6 + payload > p.len() {
        return Err(Malformed::PppoeInvalid);
    }
    let ip = match proto {
        0x0021 => Some(ethertype::IPV4),
        0x0057 => Some(ethertype::IPV6),
        _ => None,
    };
    Ok((id, ip, len, payload))
}

/// Walks an MPLS label stack to its bottom (RFC 3032 §2.1, at most [`MAX_MPLS_LABELS`]) and
/// tells what follows by its first nibble (RFC 4385 §2: 4 IPv4, 6 IPv6; 0 is a pseudowire
/// control word, read as not IP): the number of labels and the ethertype of the IP version.
///
/// # Errors
/// [`Malformed::MplsInvalid`].
fn mpls(p: &[u8]) -> Result<(usize, Option<u16>), Malformed> {
    for n in 1..=MAX_MPLS_LABELS {
        let entry = be32(p, 4 * (n - 1)).ok_or(Malformed::MplsInvalid)?;
        if entry & 0x100 != 0 {
            let ip = match p.get(4 * n).map(|b| b >> 4) {
                Some(4) => Some(ethertype::IPV4),
                Some(6) => Some(ethertype::IPV6),
                _ => None,
            };
            return Ok((n, ip));
        }
    }
    Err(Malformed::MplsInvalid)
}

/// Decodes an IPv4 packet (RFC 791). Trailing bytes past the total length (Ethernet padding)
/// are ignored.
///
/// # Errors
/// [`Malformed::Ipv4Header`], [`Malformed::Ipv4Length`], [`Malformed::IpVersion`] or an L4
/// reason.
pub fn decode_ipv4(p: &[u8]) -> Result<Ip<'_>, Malformed> {
    let b0 = *p.first().ok_or(Malformed::Ipv4Header)?;
    if b0 >> 4 != 4 {
        return Err(Malformed::IpVersion);
    }
    let ihl = usize::from(b0 & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Err(Malformed::Ipv4Header);
    }
    let total = usize::from(be16(p, 2).ok_or(Malformed::Ipv4Header)?);
    if total < ihl {
        return Err(Malformed::Ipv4Header);
    }
    if total > p.len() {
        return Err(Malformed::Ipv4Length);
    }
    let frag = be16(p, 6).ok_or(Malformed::Ipv4Header)?;
    let more = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    let fragment = match (offset, more) {
        (0, false) => Fragment::No,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    let proto = p[9];
    let src = Addr::v4([p[12], p[13], p[14], p[15]]);
    let dst = Addr::v4([p[16], p[17], p[18], p[19]]);
    let body = &p[ihl..total];
    let mut ip = transport(4, src, dst, proto, fragment, body)?;
    if fragment != Fragment::No {
        ip.frag = Some(FragInfo {
            id: u32::from(be16(p, 4).ok_or(Malformed::Ipv4Header)?),
            offset: u32::from(offset) * 8,
            more,
            header_len: ihl as u16,
            next_at: 9,
        });
    }
    Ok(ip)
}

/// Decodes an IPv6 packet (RFC 8200), walking the extension header chain.
///
/// # Errors
/// [`Malformed::Ipv6Header`], [`Malformed::Ipv6Length`], [`Malformed::Ipv6ExtHeader`],
/// [`Malformed::IpVersion`] or an L4 reason.
pub fn decode_ipv6(p: &[u8]) -> Result<Ip<'_>, Malformed> {
    if p.len() < 40 {
        return Err(if p.is_empty() || p[0] >> 4 == 6 {
            Malformed::Ipv6Header
        } else {
            Malformed::IpVersion
        });
    }
    if p[0] >> 4 != 6 {
        return Err(Malformed::IpVersion);
    }
    let plen = usize::from(be16(p, 4).ok_or(Malformed::Ipv6Header)?);
    if 40 + plen > p.len() {
        return Err(Malformed::Ipv6Length);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    let (src, dst) = (Addr::v6(src), Addr::v6(dst));
    let mut next = p[6];
    let mut body = &p[40..40 + plen];
    // Where the Next Header byte naming the current header sits (from the IPv6 header start).
    let mut next_at = 6usize;
    // At most 8 extension headers: more is an evasion attempt, not a real packet.
    for _ in 0..8 {
        let at = 40 + plen - body.len();
        match next {
            0 | 43 | 60 | 135 | 139 | 140 => {
                let nh = *body.first().ok_or(Malformed::Ipv6ExtHeader)?;
                let len = (usize::from(*body.get(1).ok_or(Malformed::Ipv6ExtHeader)?) + 1) * 8;
                body = body.get(len..).ok_or(Malformed::Ipv6ExtHeader)?;
                next = nh;
            }
            51 => {
                // AH: length in 4-octet units minus 2 (RFC 4302 §2.2).
                let nh = *body.first().ok_or(Malformed::Ipv6ExtHeader)?;
                let len = (usize::from(*body.get(1).ok_or(Malformed::Ipv6ExtHeader)?) + 2) * 4;
                body = body.get(len..).ok_or(Malformed::Ipv6ExtHeader)?;
                next = nh;
            }
            44 => {
                let nh = *body.first().ok_or(Malformed::Ipv6ExtHeader)?;
                let fo = be16(body, 2).ok_or(Malformed::Ipv6ExtHeader)?;
                let id = be32(body, 4).ok_or(Malformed::Ipv6ExtHeader)?;
                body = body.get(8..).ok_or(Malformed::Ipv6ExtHeader)?;
                let (offset, more) = (fo >> 3, fo & 1 == 1);
                if offset != 0 || more {
                    // A real fragment: what follows the Fragment header is fragment data, read
                    // only from the reassembled datagram (RFC 8200 §4.5), never walked here.
                    let fragment = if offset == 0 { Fragment::First } else { Fragment::Later };
                    let mut ip = transport(6, src, dst, nh, fragment, body)?;
                    ip.frag = Some(FragInfo {
                        id,
                        offset: u32::from(offset) * 8,
                        more,
                        header_len: at as u16,
                        next_at: next_at as u16,
                    });
                    return Ok(ip);
                }
                // An atomic fragment (RFC 6946): an ordinary packet.
                next = nh;
            }
            _ => return transport(6, src, dst, next, Fragment::No, body),
        }
        next_at = at;
    }
    Err(Malformed::Ipv6ExtHeader)
}

fn transport(
    version: u8,
    src: Addr,
    dst: Addr,
    proto: u8,
    fragment: Fragment,
    body: &[u8],
) -> Result<Ip<'_>, Malformed> {
    let mut ip = Ip {
        version,
        src,
        dst,
        proto,
        fragment,
        frag: None,
        sport: 0,
        dport: 0,
        l4: L4::Other,
        payload: body,
        segment: body,
    };
    if fragment != Fragment::No {
        // Fragments are decoded from their reassembled datagram ([`crate::defrag`]).
        return Ok(ip);
    }
    match proto {
        ipproto::TCP => {
            let off = usize::from(*body.get(12).ok_or(Malformed::TcpHeader)? >> 4) * 4;
            if off < 20 || body.len() < off {
                return Err(Malformed::TcpHeader);
            }
            ip.sport = be16(body, 0).ok_or(Malformed::TcpHeader)?;
            ip.dport = be16(body, 2).ok_or(Malformed::TcpHeader)?;
            let flags = body[13];
            let wscale = if flags & tcpflag::SYN != 0 { window_scale(&body[20..off]) } else { None };
            ip.l4 = L4::Tcp {
                seq: be32(body, 4).ok_or(Malformed::TcpHeader)?,
                ack: be32(body, 8).ok_or(Malformed::TcpHeader)?,
                flags,
                window: be16(body, 14).ok_or(Malformed::TcpHeader)?,
                wscale,
                urgent: be16(body, 18).ok_or(Malformed::TcpHeader)?,
            };
            ip.payload = &body[off..];
        }
        ipproto::UDP => {
            if body.len() < 8 {
                return Err(Malformed::UdpHeader);
            }
            ip.sport = be16(body, 0).ok_or(Malformed::UdpHeader)?;
            ip.dport = be16(body, 2).ok_or(Malformed::UdpHeader)?;
            let ulen = usize::from(be16(body, 4).ok_or(Malformed::UdpHeader)?);
            // The UDP length must fit the IP payload (RFC 768).
            if ulen < 8 || ulen > body.len() {
                return Err(Malformed::UdpHeader);
            }
            let end = ulen;
            ip.l4 = L4::Udp;
            ip.payload = &body[8..end];
            ip.segment = &body[..end];
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            if body.len() < 8 {
                return Err(Malformed::IcmpHeader);
            }
            let (kind, code) = (body[0], body[1]);
            let class = icmp_class(proto, kind);
            let ident = match class {
                IcmpClass::Request | IcmpClass::Reply => be16(body, 4).unwrap_or(0),
                _ => 0,
            };
            let quotes = class == IcmpClass::Error || (class == IcmpClass::Redirect && proto == ipproto::ICMP);
            let invoking = if quotes { inner_tuple(&body[8..]) } else { None };
            (ip.sport, ip.dport) = icmp_ports(class, ident);
            ip.l4 = L4::Icmp { kind, code, ident, invoking };
            ip.payload = &body[8..];
        }
        _ => {}
    }
    Ok(ip)
}

/// Reads the 5-tuple of the IP packet quoted in an ICMP error. Best effort: a quote too short
/// for ports yields ports 0; one too short for addresses yields `None`.
fn inner_tuple(q: &[u8]) -> Option<InnerTuple> {
    let v = *q.first()? >> 4;
    let (src, dst, proto, l4) = match v {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            if ihl < 20 || q.len() < 20 {
                return None;
            }
            let src = Addr::v4([q[12], q[13], q[14], q[15]]);
            let dst = Addr::v4([q[16], q[17], q[18], q[19]]);
            (src, dst, q[9], q.get(ihl..).unwrap_or(&[]))
        }
        6 => {
            if q.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&q[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&q[24..40]);
            (Addr::v6(s), Addr::v6(d), q[6], &q[40..])
        }
        _ => return None,
    };
    let (sport, dport) = match proto {
        ipproto::TCP | ipproto::UDP => (be16(l4, 0).unwrap_or(0), be16(l4, 2).unwrap_or(0)),
        ipproto::ICMP | ipproto::ICMPV6 => match (l4.first(), be16(l4, 4)) {
            (Some(&kind), Some(ident)) => icmp_ports(icmp_class(proto, kind), ident),
            _ => (0, 0),
        },
        _ => (0, 0),
    };
    let seq = if proto == ipproto::TCP { be32(l4, 4) } else { None };
    Some(InnerTuple { src, dst, proto, sport, dport, seq })
}

/// The shift of a Window Scale option (kind 3, RFC 7323 §2.2) among TCP `options`, capped at
/// 14 (§2.3). Walks at most the 40 option bytes; a malformed list ends the walk.
fn window_scale(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            0 => return None,
            1 => i += 1,
            _ => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return options.get(i + 2).map(|&s| s.min(14));
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes the checksums a sender computes into a built frame: the IPv4 header's and, when
    /// the packet is not a fragment, the TCP/UDP/ICMP one ([`crate::checksum`]). Frames that
    /// do not decode are left alone.
    pub(crate) fn fix_checksums(f: &mut [u8]) {
        let base = f.as_ptr() as usize;
        let Ok(d) = decode(f) else { return };
        let Some(ip) = d.ip else { return };
        let l3 = usize::from(d.l3);
        let (src, dst, proto, frag, version) = (ip.src, ip.dst, ip.proto, ip.frag.is_some(), ip.version);
        let field = match ip.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp => Some(6),
            L4::Icmp { .. } => Some(2),
            L4::Other => None,
        };
        let at = ip.segment.as_ptr() as usize - base;
        let len = ip.segment.len();
        if let (Some(field), false) = (field, frag) {
            crate::checksum::fill(&src, &dst, proto, &mut f[at..at + len], field);
        }
        if version == 4 {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            crate::checksum::fill_ipv4_header(&mut f[l3..l3 + ihl]);
        }
    }

    /// Turns an untagged [`tcp4`] frame round: IPv4 addresses (bytes 26..34) and TCP ports
    /// (34..38) swapped, so it goes from the server to the client. Checksums are unchanged
    /// (the sums of swapped words are equal).
    pub(crate) fn reverse4(f: &mut [u8]) {
        let (a, b) = f[26..34].split_at_mut(4);
        a.swap_with_slice(b);
        let (a, b) = f[34..38].split_at_mut(2);
        a.swap_with_slice(b);
    }

    /// Builds Ethernet + optional VLAN tags + IPv4 + TCP with `payload`. Real-shaped bytes
    /// with the checksums a sender computes.
    pub(crate) fn tcp4(vlans: &[u16], flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for v in vlans {
            f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&1000u32.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        fix_checksums(&mut f);
        f
    }

    /// Ethernet + IPv6 with a Hop-by-Hop and a Destination Options header + UDP.
    pub(crate) fn udp6_ext(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let plen = (8 + 8 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[0, 64]); // next = hop-by-hop
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // HBH -> dest opts, PadN
        f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // dest opts -> UDP
        f.extend_from_slice(&5353u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        fix_checksums(&mut f);
        f
    }

    /// Ethernet (no tags) around an IP packet, with the checksums a sender computes
    /// ([`fix_checksums`]).
    pub(crate) fn eth(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        fix_checksums(&mut f);
        f
    }

    /// An IPv4 packet (no options, DF, TTL 64, checksum zero) carrying `l4` bytes.
    pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    /// An IPv6 packet (hop limit 64, no extension headers) carrying `l4` bytes.
    pub(crate) fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    /// `2001:db8::<last>`.
    pub(crate) fn v6(last: u8) -> [u8; 16] {
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
    }

    #[allow(clippy::too_many_arguments)]
    /// A TCP header (data offset 5, or 6 with a Window Scale option when `wscale` is given)
    /// followed by `payload`; checksum zero.
    pub(crate) fn tcp(
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        wscale: Option<u8>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.push(if wscale.is_some() { 0x60 } else { 0x50 });
        t.push(flags);
        t.extend_from_slice(&window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(ws) = wscale {
            t.extend_from_slice(&[1, 3, 3, ws]);
        }
        t.extend_from_slice(payload);
        t
    }

    /// A UDP header followed by `payload`.
    pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// An ICMP/ICMPv6 message: type, code, checksum zero, the 4 type-specific bytes `rest`
    /// (identifier and sequence of queries, MTU of packet-too-big, gateway of a redirect),
    /// then `body` (the quoted packet of an error).
    pub(crate) fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest);
        m.extend_from_slice(body);
        m
    }

    /// An echo (or other query) message's `rest` bytes: identifier and sequence number.
    pub(crate) fn query(ident: u16, seq: u16) -> [u8; 4] {
        let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
        [i[0], i[1], s[0], s[1]]
    }

    const A4: [u8; 4] = [198, 18, 0, 1];
    const B4: [u8; 4] = [198, 18, 0, 2];
    const R4: [u8; 4] = [198, 18, 0, 254];

    #[test]
    fn echo_requests_and_replies_have_mirrored_ports() {
        let req = eth(ethertype::IPV4, &ipv4(A4, B4, ipproto::ICMP, &icmp(8, 0, query(0x4242, 1), b"ping")));
        let ip = decode(&req).unwrap().ip.unwrap();
        assert_eq!((ip.sport, ip.dport), (0x4242, 0));
        assert!(matches!(ip.l4, L4::Icmp { kind: 8, ident: 0x4242, invoking: None, .. }));
        let rep = eth(ethertype::IPV4, &ipv4(B4, A4, ipproto::ICMP, &icmp(0, 0, query(0x4242, 1), b"ping")));
        let ip = decode(&rep).unwrap().ip.unwrap();
        assert_eq!((ip.sport, ip.dport), (0, 0x4242));
        let req6 = eth(ethertype::IPV6, &ipv6(v6(1), v6(2), ipproto::ICMPV6, &icmp(128, 0, query(7, 1), b"")));
        let ip = decode(&req6).unwrap().ip.unwrap();
        assert_eq!((ip.sport, ip.dport), (7, 0));
        // Neighbour solicitation: no identifier, no ports.
        let ns = eth(ethertype::IPV6, &ipv6(v6(1), v6(2), ipproto::ICMPV6, &icmp(135, 0, [0; 4], &v6(2))));
        let ip = decode(&ns).unwrap().ip.unwrap();
        assert_eq!((ip.sport, ip.dport), (0, 0));
    }

    #[test]
    fn icmp_classes() {
        use IcmpClass::*;
        let v4: Vec<_> = [0, 3, 4, 5, 8, 9, 11, 12, 13, 14].iter().map(|&k| icmp_class(ipproto::ICMP, k)).collect();
        assert_eq!(v4, [Reply, Error, Error, Redirect, Request, Other, Error, Error, Request, Reply]);
        let v6: Vec<_> = [1, 2, 3, 4, 127, 128, 129, 133, 135, 137].iter().map(|&k| icmp_class(ipproto::ICMPV6, k)).collect();
        assert_eq!(v6, [Error, Error, Error, Error, Error, Request, Reply, Other, Other, Redirect]);
    }

    #[test]
    fn quoted_tcp_sequence_and_quoted_echo_ports() {
        // Packet too big (IPv4 frag needed) from a router, quoting B's segment to A.
        let seg = ipv4(B4, A4, ipproto::TCP, &tcp(8080, 40000, 0xdead_beef, 7, 0x10, 512, None, b"x"));
        let err = eth(ethertype::IPV4, &ipv4(R4, B4, ipproto::ICMP, &icmp(3, 4, [0, 0, 5, 0], &seg[..28])));
        let ip = decode(&err).unwrap().ip.unwrap();
        let L4::Icmp { invoking: Some(t), .. } = ip.l4 else { panic!("{:?}", ip.l4) };
        assert_eq!((t.sport, t.dport, t.seq), (8080, 40000, Some(0xdead_beef)));
        assert_eq!((t.src, t.dst), (Addr::v4(B4), Addr::v4(A4)));
        // A quote that stops inside the sequence number has none.
        let short = eth(ethertype::IPV4, &ipv4(R4, B4, ipproto::ICMP, &icmp(3, 4, [0; 4], &seg[..26])));
        let ip = decode(&short).unwrap().ip.unwrap();
        assert!(matches!(ip.l4, L4::Icmp { invoking: Some(InnerTuple { sport: 8080, seq: None, .. }), .. }));
        // An ICMPv6 error quoting an echo request: the quote's ports are the request's.
        let ping = ipv6(v6(2), v6(1), ipproto::ICMPV6, &icmp(128, 0, query(99, 3), b"abcd"));
        let err6 = eth(ethertype::IPV6, &ipv6(v6(0xfe), v6(2), ipproto::ICMPV6, &icmp(1, 3, [0; 4], &ping)));
        let ip = decode(&err6).unwrap().ip.unwrap();
        let L4::Icmp { invoking: Some(t), .. } = ip.l4 else { panic!("{:?}", ip.l4) };
        assert_eq!((t.proto, t.sport, t.dport, t.seq), (ipproto::ICMPV6, 99, 0, None));
        // An ICMPv4 redirect quotes its invoking packet too; an ICMPv6 redirect has no quote
        // in its fixed part.
        let redirect = eth(ethertype::IPV4, &ipv4(R4, B4, ipproto::ICMP, &icmp(5, 1, R4, &seg[..28])));
        let ip = decode(&redirect).unwrap().ip.unwrap();
        assert!(matches!(ip.l4, L4::Icmp { kind: 5, invoking: Some(_), .. }));
        let mut body = v6(0xfe).to_vec();
        body.extend_from_slice(&v6(1));
        let redirect6 = eth(ethertype::IPV6, &ipv6(v6(0xfe), v6(2), ipproto::ICMPV6, &icmp(137, 0, [0; 4], &body)));
        let ip = decode(&redirect6).unwrap().ip.unwrap();
        assert!(matches!(ip.l4, L4::Icmp { kind: 137, invoking: None, .. }));
    }

    #[test]
    fn window_scale_of_syns_only() {
        let syn = eth(ethertype::IPV4, &ipv4(A4, B4, ipproto::TCP, &tcp(40000, 80, 1, 0, tcpflag::SYN, 64240, Some(7), b"")));
        assert!(matches!(decode(&syn).unwrap().ip.unwrap().l4, L4::Tcp { wscale: Some(7), window: 64240, .. }));
        let big = eth(ethertype::IPV4, &ipv4(A4, B4, ipproto::TCP, &tcp(40000, 80, 1, 0, tcpflag::SYN, 1, Some(30), b"")));
        assert!(matches!(decode(&big).unwrap().ip.unwrap().l4, L4::Tcp { wscale: Some(14), .. }));
        let ack = eth(ethertype::IPV4, &ipv4(A4, B4, ipproto::TCP, &tcp(40000, 80, 1, 0, tcpflag::ACK, 1, Some(7), b"")));
        assert!(matches!(decode(&ack).unwrap().ip.unwrap().l4, L4::Tcp { wscale: None, .. }));
        // Options cut short or with a zero length end the walk without a value.
        assert_eq!(window_scale(&[1, 1, 3]), None);
        assert_eq!(window_scale(&[2, 0, 3, 3, 5]), None);
        assert_eq!(window_scale(&[2, 4, 5, 0xb4, 1, 3, 3, 9]), Some(9));
    }

    #[test]
    fn truncated_icmp_errors_never_panic() {
        let seg = ipv4(B4, A4, ipproto::TCP, &tcp(8080, 40000, 5, 7, 0x10, 512, None, b"x"));
        let err = eth(ethertype::IPV4, &ipv4(R4, B4, ipproto::ICMP, &icmp(3, 4, [0; 4], &seg)));
        let ping = ipv6(v6(2), v6(1), ipproto::ICMPV6, &icmp(128, 0, query(99, 3), b"abcd"));
        let err6 = eth(ethertype::IPV6, &ipv6(v6(0xfe), v6(2), ipproto::ICMPV6, &icmp(1, 3, [0; 4], &ping)));
        for frame in [err, err6] {
            assert!(decode(&frame).is_ok());
            for cut in 0..frame.len() {
                assert!(decode(&frame[..cut]).is_err(), "prefix {cut}");
            }
            // The quoted packet itself cut anywhere: still decodes, quote best effort.
            let ip_start = 14;
            let quote_start = ip_start + if frame[12] == 0x08 { 20 } else { 40 } + 8;
            for cut in quote_start..frame.len() {
                let mut f = frame[..cut].to_vec();
                let l = (cut - ip_start) as u16;
                if frame[12] == 0x08 {
                    f[16..18].copy_from_slice(&l.to_be_bytes());
                } else {
                    f[18..20].copy_from_slice(&(l - 40).to_be_bytes());
                }
                assert!(decode(&f).is_ok(), "quote cut at {cut}");
            }
        }
    }

    #[test]
    fn tcp_over_qinq() {
        let f = tcp4(&[100, 200], tcpflag::SYN, b"hello");
        let d = decode(&f).unwrap();
        assert_eq!((d.vlans, d.vlan), (2, [100, 200, 0, 0]));
        let ip = d.ip.unwrap();
        assert_eq!((ip.sport, ip.dport, ip.proto), (40000, 80, ipproto::TCP));
        assert_eq!(ip.src.to_string(), "198.18.0.1");
        assert!(matches!(ip.l4, L4::Tcp { seq: 1000, flags: tcpflag::SYN, .. }));
        assert_eq!(ip.payload, b"hello");
    }

    #[test]
    fn up_to_four_vlan_tags_decode_and_five_are_malformed() {
        let d = decode(&tcp4(&[1, 2, 3, 4], 0, b"")).map(|d| (d.vlans, d.vlan, d.l3));
        assert_eq!(d, Ok((4, [1, 2, 3, 4], 14 + 16)));
        assert_eq!(decode(&tcp4(&[1, 2, 3, 4, 5], 0, b"")), Err(Malformed::VlanInvalid));
    }

    #[test]
    fn ipv6_extension_chain() {
        let f = udp6_ext(b"q");
        let ip = decode(&f).unwrap().ip.unwrap();
        assert_eq!((ip.proto, ip.sport, ip.dport), (ipproto::UDP, 5353, 53));
        assert_eq!(ip.dst.to_string(), "2001:db8::2");
        assert_eq!(ip.payload, b"q");
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut f = tcp4(&[], tcpflag::ACK, b"");
        f.extend_from_slice(&[0; 6]);
        assert_eq!(decode(&f).unwrap().ip.unwrap().payload, b"");
    }

    #[test]
    fn every_truncated_prefix_is_an_error_or_non_ip_never_a_panic() {
        for frame in [tcp4(&[7], tcpflag::SYN, b"abc"), udp6_ext(b"xyz")] {
            assert!(decode(&frame).is_ok());
            for cut in 0..frame.len() {
                let r = decode(&frame[..cut]);
                // A prefix can never decode to a complete IP packet: lengths disagree.
                assert!(r.is_err(), "prefix {cut} decoded: {r:?}");
            }
        }
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let mut f = tcp4(&[], tcpflag::ACK, b"data");
        // Grow the IPv4 header by one 4-byte option (NOP NOP NOP EOL).
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.splice(34..34, [1, 1, 1, 0]);
        let ip = decode(&f).unwrap().ip.unwrap();
        assert_eq!(ip.payload, b"data");
        // Mark as a later fragment: no L4 parse.
        f[20] = 0x00;
        f[21] = 0x10;
        let ip = decode(&f).unwrap().ip.unwrap();
        assert_eq!((ip.fragment, ip.l4, ip.sport), (Fragment::Later, L4::Other, 0));
    }

    #[test]
    fn icmp_error_quotes_the_invoking_tuple() {
        // ICMP port unreachable quoting a UDP packet 198.18.0.2:5000 -> 198.18.0.1:53.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2, 3, 3, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1, 0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let ip = decode(&f).unwrap().ip.unwrap();
        let L4::Icmp { kind: 3, code: 3, invoking: Some(t), .. } = ip.l4 else {
            panic!("{:?}", ip.l4)
        };
        assert_eq!((t.proto, t.sport, t.dport), (17, 5000, 53));
        assert_eq!(t.src.to_string(), "198.18.0.2");
    }

    #[test]
    fn non_ip_is_not_an_error() {
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let d = decode(&arp).unwrap();
        assert_eq!((d.ethertype, d.ip), (ethertype::ARP, None));
    }
}
