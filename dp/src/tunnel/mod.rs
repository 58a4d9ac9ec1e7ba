//! Tunnel decapsulation: the inner packet of an overlay or tunnel frame, so that its flow is a
//! session of its own, inspected and policed like any other.
//!
//! Written here (not taken from a crate) for the same reason as [`crate::wire`]: it is the hot
//! path, it must yield zero-copy views of the inner packet with every length checked, and it
//! must tell apart "not a tunnel" (the frame is an ordinary packet of its outer flow) from "a
//! tunnel whose inner packet is broken" (counted, the malformed policy decides).
//!
//! What is decapsulated, and the header checks a receiving Linux host makes (a frame failing
//! them is not decapsulated there either, so it is read as an ordinary packet of its outer
//! flow):
//!
//! | tunnel | outer | header | inner | id |
//! |---|---|---|---|---|
//! | VXLAN (RFC 7348 §5) | UDP to a `vxlan_ports` port (4789, 8472) | 8 bytes, flag I set | Ethernet | VNI |
//! | VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe §3) | UDP to a `vxlan_gpe_ports` port (4790) | 8 bytes, flags I and P set, version 0, next protocol 1/2/3 | IPv4, IPv6, Ethernet | VNI |
//! | Geneve (RFC 8926 §3) | UDP to a `geneve_ports` port (6081) | 8 bytes + options, version 0 | Ethernet, IPv4, IPv6 | VNI |
//! | GTP-U (3GPP TS 29.281 §5) | UDP to a `gtpu_ports` port (2152) | version 1, PT 1, G-PDU (255), optional fields and extension headers | IPv4, IPv6 | TEID |
//! | GRE (RFC 2784, RFC 2890) | IP protocol 47 | version 0, no routing; checksum, key, sequence as flagged | IPv4, IPv6, Ethernet (0x6558) | key (0 without) |
//! | PPTP GRE (RFC 2637 §4.1) | IP protocol 47 | version 1, key present, protocol 0x880B | PPP → IPv4, IPv6 | call id |
//! | ERSPAN I / II / III (draft-foschiano-erspan §4) | GRE 0x88BE without / with sequence number, 0x22EB | none / 8 / 12 bytes (+8 platform bytes when O) | Ethernet | session id (0 for type I) |
//! | IP-in-IP (RFC 2003), 6in4 (RFC 4213), 4in6 / IPv6-in-IPv6 (RFC 2473) | IP protocol 4 / 41 | none | IPv4 / IPv6 | 0 |
//!
//! The flow of an inner packet is keyed in the outer frame's zone and a *segment*
//! ([`Tunnel::segment`]): the tunnel type and, for VXLAN, the VNI (a VNI names an L2 segment,
//! the same both ways, whose addresses may overlap another's). Geneve VNIs are not keyed on:
//! OVN puts the logical datapath there, which differs between the two directions of a flow
//! routed between logical switches (Zeek's and tcpdump's Geneve traces show it), and a session
//! split by direction would be a mid-stream session in protect mode. GTP-U TEIDs, GRE keys and
//! PPTP call ids are chosen per direction by each end, so they too are reported but not
//! keyed on. The inner packet
//! is owned by the worker that owns the outer flow (both directions of an outer flow reach the
//! same worker: [`crate::flow::FlowKey::owner_spread`]).

use crate::wire::{self, be16, be32, ethertype, Frame, Ip, Malformed, L4};

/// Tunnel types Warden decapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// VXLAN (RFC 7348).
    Vxlan = 1,
    /// Geneve (RFC 8926).
    Geneve = 2,
    /// GRE (RFC 2784/2890), including PPTP's enhanced GRE (RFC 2637).
    Gre = 3,
    /// ERSPAN type II or III over GRE (mirrored frames).
    Erspan = 4,
    /// GTP-U (3GPP TS 29.281).
    GtpU = 5,
    /// IPv4 in IPv4 (RFC 2003).
    IpIp = 6,
    /// IPv6 in IPv4 (RFC 4213).
    SixInFour = 7,
    /// IPv4 in IPv6 (RFC 2473).
    FourInSix = 8,
    /// IPv6 in IPv6 (RFC 2473).
    SixInSix = 9,
}

impl Kind {
    /// Every kind, in counter order (`kind as usize - 1`).
    pub const ALL: [Kind; 9] = [
        Kind::Vxlan,
        Kind::Geneve,
        Kind::Gre,
        Kind::Erspan,
        Kind::GtpU,
        Kind::IpIp,
        Kind::SixInFour,
        Kind::FourInSix,
        Kind::SixInSix,
    ];

    /// Name used in records, counters and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vxlan => "vxlan",
            Kind::Geneve => "geneve",
            Kind::Gre => "gre",
            Kind::Erspan => "erspan",
            Kind::GtpU => "gtpu",
            Kind::IpIp => "ipip",
            Kind::SixInFour => "6in4",
            Kind::FourInSix => "4in6",
            Kind::SixInSix => "ip6ip6",
        }
    }

    /// Index in counter tables.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

/// The tunnel a packet arrived through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Its type.
    pub kind: Kind,
    /// Its id: VNI (24 bits), GRE key, PPTP call id, ERSPAN session id, GTP-U TEID; 0 when the
    /// header has none.
    pub id: u32,
    /// Outer source address of the frame.
    pub outer_src: crate::flow::Addr,
    /// Outer destination address of the frame.
    pub outer_dst: crate::flow::Addr,
}

impl Tunnel {
    /// The segment bits this tunnel adds to its inner flows' key ([`crate::flow::FlowKey::seg`]):
    /// the kind in bits 24..28 and, for VXLAN, the VNI in bits 28..52.
    pub fn segment(&self) -> u64 {
        let vni = match self.kind {
            Kind::Vxlan => u64::from(self.id & 0x00ff_ffff),
            _ => 0,
        };
        (u64::from(self.kind as u8) << 24) | (vni << 28)
    }
}

/// `[tunnels]`: which tunnels are decapsulated, on which UDP ports, how deep.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// Decapsulate at all (default true). Off, every tunnel is one opaque outer flow.
    pub enabled: bool,
    /// UDP destination ports of VXLAN (default 4789, the IANA port, and 8472, Linux's and
    /// Flannel's default).
    pub vxlan_ports: Vec<u16>,
    /// UDP destination ports of VXLAN-GPE (default 4790).
    pub vxlan_gpe_ports: Vec<u16>,
    /// UDP destination ports of Geneve (default 6081).
    pub geneve_ports: Vec<u16>,
    /// UDP destination ports of GTP-U (default 2152).
    pub gtpu_ports: Vec<u16>,
    /// Tunnels inside tunnels decapsulated (default 3, at most 8). A packet nested deeper is
    /// not inspected: the exception policy (`tunnel_depth`) decides it.
    pub max_depth: u8,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            enabled: true,
            vxlan_ports: vec![4789, 8472],
            vxlan_gpe_ports: vec![4790],
            geneve_ports: vec![6081],
            gtpu_ports: vec![2152],
            max_depth: 3,
        }
    }
}

impl TunnelConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// The field (`tunnels.<name>`) and what is wrong: a port 0, or `max_depth` 0 or above 8.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, ports) in [
            ("tunnels.vxlan_ports", &self.vxlan_ports),
            ("tunnels.vxlan_gpe_ports", &self.vxlan_gpe_ports),
            ("tunnels.geneve_ports", &self.geneve_ports),
            ("tunnels.gtpu_ports", &self.gtpu_ports),
        ] {
            if ports.contains(&0) {
                return Err((name, "port 0 is not a port".into()));
            }
        }
        if !(1..=8).contains(&self.max_depth) {
            return Err(("tunnels.max_depth", format!("must be 1..=8, got {}", self.max_depth)));
        }
        Ok(())
    }
}

/// The UDP ports of each tunnel as a lookup table built once (no search per frame).
#[derive(Debug, Clone)]
pub struct Ports {
    by_port: Box<[u8; 65536]>,
    /// `[tunnels] enabled`.
    pub enabled: bool,
    /// `[tunnels] max_depth`.
    pub max_depth: u8,
}

const P_VXLAN: u8 = 1;
const P_GENEVE: u8 = 2;
const P_GTPU: u8 = 3;
const P_VXLAN_GPE: u8 = 4;

impl Ports {
    /// The table of `cfg` (the last list naming a port wins).
    pub fn new(cfg: &TunnelConfig) -> Self {
        let mut by_port = Box::new([0u8; 65536]);
        let lists = [(P_VXLAN, &cfg.vxlan_ports), (P_VXLAN_GPE, &cfg.vxlan_gpe_ports), (P_GENEVE, &cfg.geneve_ports), (P_GTPU, &cfg.gtpu_ports)];
        for (mark, ports) in lists {
            for p in ports {
                by_port[usize::from(*p)] = mark;
            }
        }
        Ports { by_port, enabled: cfg.enabled, max_depth: cfg.max_depth }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports::new(&TunnelConfig::default())
    }
}

/// The tunnel a session's inner flow rides, as first seen: its type, id, and the outer
/// address of the tunnel endpoint in front of each canonical end of the inner flow
/// (`outer[End::Lo as usize]`, `outer[End::Hi as usize]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEnds {
    /// Tunnel type.
    pub kind: Kind,
    /// Tunnel id of the frame that opened the session ([`Tunnel::id`]).
    pub id: u32,
    /// Outer addresses in front of the inner flow's lower and higher end.
    pub outer: [crate::flow::Addr; 2],
}

impl TunnelEnds {
    /// The ends of tunnel `t` for an inner packet sent by canonical end `sender`.
    pub fn of(t: &Tunnel, sender: crate::flow::End) -> Self {
        let outer = match sender {
            crate::flow::End::Lo => [t.outer_src, t.outer_dst],
            crate::flow::End::Hi => [t.outer_dst, t.outer_src],
        };
        TunnelEnds { kind: t.kind, id: t.id, outer }
    }
}

/// Decapsulation counters of one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Inner packets decapsulated and inspected, by [`Kind`] (index [`Kind::index`]).
    pub decapsulated: [u64; Kind::ALL.len()],
    /// Tunnel packets whose inner packet did not decode (the malformed policy decides).
    pub malformed: u64,
    /// Inner packets nested deeper than `[tunnels] max_depth` (not inspected; the exception
    /// policy decides).
    pub too_deep: u64,
    /// Inner packets that are IP fragments (not reassembled inside a tunnel; the exception
    /// policy decides).
    pub inner_fragments: u64,
}

impl TunnelStats {
    /// The counters by name: `<kind>` (inner packets decapsulated, e.g. `vxlan`), `malformed`,
    /// `too_deep`, `inner_fragments`.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Kind::ALL
            .iter()
            .map(|k| (k.as_str(), self.decapsulated[k.index()]))
            .chain([("malformed", self.malformed), ("too_deep", self.too_deep), ("inner_fragments", self.inner_fragments)])
    }
}

/// What [`decap`] found in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap<'a> {
    /// Not a tunnel packet (or one a receiving host would not decapsulate).
    No,
    /// The inner packet, decoded.
    Inner(Tunnel, Frame<'a>),
    /// A tunnel packet whose inner packet does not decode.
    Malformed(Tunnel, Malformed),
}

/// What a tunnel header says follows it.
#[derive(Clone, Copy)]
enum Payload {
    Ethernet,
    Ip,
    Ipv4,
    Ipv6,
}

/// Finds and decodes the inner packet of `outer`'s IP packet (not a fragment: a fragmented
/// outer packet is decapsulated from its reassembled datagram). The inner packet of an
/// Ethernet-carrying tunnel keeps its own MACs and VLAN tags; that of an IP-carrying tunnel is
/// a [`Frame`] whose `raw` is the inner IP packet (`l3` 0) and whose MAC and tags are the outer
/// frame's.
pub fn decap<'a>(outer: &Frame<'a>, ip: &Ip<'a>, ports: &Ports) -> Decap<'a> {
    if !ports.enabled || ip.frag.is_some() {
        return Decap::No;
    }
    let Some((kind, id, payload, body)) = header(ip, ports) else {
        return Decap::No;
    };
    let t = Tunnel { kind, id, outer_src: ip.src, outer_dst: ip.dst };
    let inner = match payload {
        Payload::Ethernet => wire::decode(body),
        Payload::Ipv4 => ip_inner(outer, body, 4),
        Payload::Ipv6 => ip_inner(outer, body, 6),
        Payload::Ip => match body.first().map(|b| b >> 4) {
            Some(6) => ip_inner(outer, body, 6),
            _ => ip_inner(outer, body, 4),
        },
    };
    match inner {
        Ok(f) => Decap::Inner(t, f),
        Err(m) => Decap::Malformed(t, m),
    }
}

fn ip_inner<'a>(outer: &Frame<'a>, body: &'a [u8], version: u8) -> Result<Frame<'a>, Malformed> {
    let (ethertype, ip) = if version == 4 {
        (ethertype::IPV4, wire::decode_ipv4(body)?)
    } else {
        (ethertype::IPV6, wire::decode_ipv6(body)?)
    };
    Ok(Frame {
        raw: body,
        l3: 0,
        src_mac: outer.src_mac,
        vlan: outer.vlan,
        vlans: outer.vlans,
        shim: wire::Shim::None,
        ethertype,
        ip: Some(ip),
    })
}

/// The tunnel header of `ip`, if it is one a host decapsulates: (kind, id, what follows, the
/// bytes after the header).
fn header<'a>(ip: &Ip<'a>, ports: &Ports) -> Option<(Kind, u32, Payload, &'a [u8])> {
    match (ip.proto, ip.l4) {
        (wire::ipproto::UDP, L4::Udp) => match ports.by_port[usize::from(ip.dport)] {
            P_VXLAN => vxlan(ip.payload),
            P_VXLAN_GPE => vxlan_gpe(ip.payload),
            P_GENEVE => geneve(ip.payload),
            P_GTPU => gtpu(ip.payload),
            _ => None,
        },
        (47, L4::Other) => gre(ip.payload),
        (4, L4::Other) => {
            let kind = if ip.version == 4 { Kind::IpIp } else { Kind::FourInSix };
            Some((kind, 0, Payload::Ipv4, ip.payload))
        }
        (41, L4::Other) => {
            let kind = if ip.version == 4 { Kind::SixInFour } else { Kind::SixInSix };
            Some((kind, 0, Payload::Ipv6, ip.payload))
        }
        _ => None,
    }
}

/// VXLAN (RFC 7348 §5): flags (I = 0x08 must be set; Linux drops the rest without the GBP or
/// GPE extensions), 3 reserved bytes, VNI (24 bits), a reserved byte; then Ethernet.
fn vxlan(p: &[u8]) -> Option<(Kind, u32, Payload, &[u8])> {
    if p.len() < 8 || p[0] & 0x08 == 0 {
        return None;
    }
    let vni = be32(p, 4)? >> 8;
    Some((Kind::Vxlan, vni, Payload::Ethernet, &p[8..]))
}

/// VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe-12 §3): flags with I (0x08) and P (0x04, next protocol
/// present) set and version (0x30) 0, 2 reserved bytes, next protocol (1 IPv4, 2 IPv6,
/// 3 Ethernet), VNI (24 bits), a reserved byte. Linux's `vxlan ... gpe` reads these; other next
/// protocols (NSH, MPLS) are not decapsulated.
fn vxlan_gpe(p: &[u8]) -> Option<(Kind, u32, Payload, &[u8])> {
    if p.len() < 8 || p[0] & 0x0c != 0x0c || p[0] & 0x30 != 0 {
        return None;
    }
    let payload = match p[3] {
        1 => Payload::Ipv4,
        2 => Payload::Ipv6,
        3 => Payload::Ethernet,
        _ => return None,
    };
    let vni = be32(p, 4)? >> 8;
    Some((Kind::Vxlan, vni, payload, &p[8..]))
}

/// Geneve (RFC 8926 §3.4): version (2 bits, 0), option length (6 bits, 4-byte units), O and C
/// flags, protocol type, VNI (24 bits), reserved; options; then the protocol type's payload.
fn geneve(p: &[u8]) -> Option<(Kind, u32, Payload, &[u8])> {
    let b0 = *p.first()?;
    if b0 >> 6 != 0 {
        return None;
    }
    let len = 8 + usize::from(b0 & 0x3f) * 4;
    let payload = match be16(p, 2)? {
        ethertype::TEB => Payload::Ethernet,
        ethertype::IPV4 => Payload::Ipv4,
        ethertype::IPV6 => Payload::Ipv6,
        _ => return None,
    };
    let vni = be32(p, 4)? >> 8;
    Some((Kind::Geneve, vni, payload, p.get(len..)?))
}

/// GTP-U (3GPP TS 29.281 §5.1): version 1 and PT 1 in the flags, message type 255 (G-PDU),
/// length, TEID; with E, S or PN set, sequence number, N-PDU number and next extension type
/// (4 bytes), then extension headers (length in 4-byte units, the last byte the next type);
/// then an IP packet.
fn gtpu(p: &[u8]) -> Option<(Kind, u32, Payload, &[u8])> {
    let flags = *p.first()?;
    if flags >> 5 != 1 || flags & 0x10 == 0 || *p.get(1)? != 255 {
        return None;
    }
    let teid = be32(p, 4)?;
    let mut at = 8;
    if flags & 0x07 != 0 {
        let mut next = *p.get(11)?;
        at = 12;
        // Bounded: each extension header is at least 4 bytes of a packet under 64 KiB.
        while next != 0 {
            let units = usize::from(*p.get(at)?);
            if units == 0 {
                return None;
            }
            at += units * 4;
            next = *p.get(at - 1)?;
        }
    }
    Some((Kind::GtpU, teid, Payload::Ip, p.get(at..)?))
}

/// GRE (RFC 2784 §2, RFC 2890 §2): C, K, S flags and version 0 (routing present or a reserved
/// bit set: Linux drops it); protocol type; checksum+reserved, key, sequence number as flagged.
/// Version 1 is PPTP's (RFC 2637 §4.1): key (payload length, call id) required, protocol
/// 0x880B, optional sequence and acknowledgement numbers, then a PPP frame. ERSPAN II (0x88BE)
/// and III (0x22EB) headers are stepped over to the mirrored Ethernet frame.
fn gre(p: &[u8]) -> Option<(Kind, u32, Payload, &[u8])> {
    let (f0, f1) = (*p.first()?, *p.get(1)?);
    let proto = be16(p, 2)?;
    let version = f1 & 0x07;
    let (c, r, k, s) = (f0 & 0x80 != 0, f0 & 0x40 != 0, f0 & 0x20 != 0, f0 & 0x10 != 0);
    if r {
        return None;
    }
    let mut at = 4;
    if version == 1 {
        // PPTP: no checksum, key required; A (ack present) is the top bit of byte 1.
        if c || !k || proto != 0x880b {
            return None;
        }
        let call = u32::from(be16(p, 6)?);
        at = 8 + if s { 4 } else { 0 } + if f1 & 0x80 != 0 { 4 } else { 0 };
        let ppp = p.get(at..)?;
        let (ipv, skip) = ppp_protocol(ppp)?;
        return Some((Kind::Gre, call, ipv, ppp.get(skip..)?));
    }
    if version != 0 || f0 & 0x0f != 0 || f1 & 0xf8 != 0 {
        return None;
    }
    if c {
        at += 4;
    }
    let mut key = 0;
    if k {
        key = be32(p, at)?;
        at += 4;
    }
    if s {
        at += 4;
    }
    let body = p.get(at..)?;
    match proto {
        ethertype::IPV4 => Some((Kind::Gre, key, Payload::Ipv4, body)),
        ethertype::IPV6 => Some((Kind::Gre, key, Payload::Ipv6, body)),
        ethertype::TEB => Some((Kind::Gre, key, Payload::Ethernet, body)),
        0x88be if !s => {
            // ERSPAN type I: no sequence number and no ERSPAN header, the mirrored frame
            // follows the GRE header (Linux's ip_gre reads it so).
            Some((Kind::Erspan, 0, Payload::Ethernet, body))
        }
        0x88be => {
            // ERSPAN type II: version 1, VLAN, COS/En/T, session id (10 bits), index.
            if body.first()? >> 4 != 1 {
                return None;
            }
            let session = u32::from(be16(body, 2)? & 0x03ff);
            Some((Kind::Erspan, session, Payload::Ethernet, body.get(8..)?))
        }
        0x22eb => {
            // ERSPAN type III: version 2, ..., session id (10 bits), timestamp, SGT, flags with
            // O (an 8-byte platform-specific subheader follows) as the lowest bit.
            if body.first()? >> 4 != 2 {
                return None;
            }
            let session = u32::from(be16(body, 2)? & 0x03ff);
            let len = if be16(body, 10)? & 1 == 1 { 20 } else { 12 };
            Some((Kind::Erspan, session, Payload::Ethernet, body.get(len..)?))
        }
        _ => None,
    }
}

/// The IP version a PPP frame carries (RFC 1661 §2; optional address/control 0xFF 0x03,
/// RFC 1662 §3.1; a 1-byte protocol when compressed) and where the packet starts.
fn ppp_protocol(p: &[u8]) -> Option<(Payload, usize)> {
    let mut at = 0;
    if p.starts_with(&[0xff, 0x03]) {
        at = 2;
    }
    let first = *p.get(at)?;
    let (proto, len) = if first & 1 == 1 { (u16::from(first), 1) } else { (be16(p, at)?, 2) };
    match proto {
        0x0021 => Some((Payload::Ipv4, at + len)),
        0x0057 => Some((Payload::Ipv6, at + len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
