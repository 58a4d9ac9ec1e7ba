//! Addresses and flow keys.
//!
//! A [`FlowKey`] is direction-free: the two endpoints are stored in a canonical order (lower
//! address/port first) so both directions of a flow find the same session entry, and its
//! [`FlowKey::owner_spread`] hash (zone and addresses) is the same for both directions and for
//! IP fragments, which is how a frame picks the worker that owns its flow.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address stored as 16 bytes (IPv4 as `::ffff:a.b.c.d`, RFC 4291 §2.5.5.2),
/// so one key type serves both families.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// An IPv4 address.
    #[inline]
    pub fn v4(o: [u8; 4]) -> Self {
        Addr([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]])
    }

    /// An IPv6 address.
    #[inline]
    pub fn v6(o: [u8; 16]) -> Self {
        Addr(o)
    }

    /// True for an IPv4-mapped address.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }

    /// The std form.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(self.0[12], self.0[13], self.0[14], self.0[15]))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl Addr {
    /// The text form (`Display`'s: dotted quad, or RFC 5952 for IPv6), an IPv4 address written
    /// digit by digit instead of through the formatting machinery (every record has two, and
    /// that machinery showed in replay profiles).
    pub fn text(&self) -> String {
        if !self.is_v4() {
            return self.ip().to_string();
        }
        let mut s = String::with_capacity(15);
        for (i, &o) in self.0[12..].iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            if o >= 100 {
                s.push(char::from(b'0' + o / 100));
            }
            if o >= 10 {
                s.push(char::from(b'0' + o / 10 % 10));
            }
            s.push(char::from(b'0' + o % 10));
        }
        s
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Addr::v4(a.octets()),
            IpAddr::V6(a) => Addr::v6(a.octets()),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

/// Which canonical endpoint sent a frame: `Lo` is the endpoint stored first in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The lower (address, port) endpoint.
    Lo,
    /// The higher endpoint.
    Hi,
}

/// Direction-free flow key: zone (the inline pair), IP protocol and the two endpoints in
/// canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Inline pair the flow crosses (flows on different pairs never share a session, even with
    /// equal addresses).
    pub zone: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Lower endpoint address.
    pub lo: Addr,
    /// Higher endpoint address.
    pub hi: Addr,
    /// Lower endpoint port.
    pub lo_port: u16,
    /// Higher endpoint port.
    pub hi_port: u16,
    /// The segment within the zone: the VLAN tags of the frame (bits 0..24, see
    /// [`crate::wire::Frame::vlan_segment`]) and, for the inner flow of a tunnel, the tunnel
    /// ([`crate::tunnel::Tunnel::segment`], bits 24..56). 0 for an untagged, untunnelled flow.
    /// The same 5-tuple in two segments is two flows.
    pub seg: u64,
}

impl FlowKey {
    /// Builds the key for a frame from `src:sport` to `dst:dport`; also says which canonical
    /// end sent it.
    #[inline]
    pub fn new(zone: u16, proto: u8, src: Addr, sport: u16, dst: Addr, dport: u16) -> (Self, End) {
        Self::new_in(zone, 0, proto, src, sport, dst, dport)
    }

    /// [`FlowKey::new`] in segment `seg` of the zone ([`FlowKey::seg`]).
    #[inline]
    pub fn new_in(zone: u16, seg: u64, proto: u8, src: Addr, sport: u16, dst: Addr, dport: u16) -> (Self, End) {
        if (src, sport) <= (dst, dport) {
            (FlowKey { zone, proto, lo: src, hi: dst, lo_port: sport, hi_port: dport, seg }, End::Lo)
        } else {
            (FlowKey { zone, proto, lo: dst, hi: src, lo_port: dport, hi_port: sport, seg }, End::Hi)
        }
    }

    /// The hash that picks the worker owning the flow (`owner_spread % workers`): zone and the
    /// two addresses only, in canonical order, so it is the same for both directions, for
    /// every protocol and port between the two hosts, and for IP fragments, which carry no
    /// ports (a later fragment has no L4 header): fragments reach the worker that reassembles
    /// their datagram, and that worker also owns the datagram's session (ARCHITECTURE.md,
    /// "Fragments and flow ownership"). Same finalizer as [`FlowKey::spread`].
    pub fn owner_spread(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |b: u8| {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        };
        self.lo.0.iter().chain(self.hi.0.iter()).for_each(|b| eat(*b));
        self.zone.to_be_bytes().iter().for_each(|b| eat(*b));
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }

    /// A hash equal for both directions of the flow (the key is canonical), spreading flows
    /// by all key fields (`spread % n`; workers use [`FlowKey::owner_spread`]). FNV-1a over the key fields, then the MurmurHash3
    /// 32-bit finalizer: FNV-1a alone leaves its low bits a function of the low bits of the key
    /// bytes (with two workers, ownership followed port parity), the finalizer spreads every
    /// input bit over all output bits. Stable across runs and processes.
    pub fn spread(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |b: u8| {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        };
        self.lo.0.iter().chain(self.hi.0.iter()).for_each(|b| eat(*b));
        self.lo_port.to_be_bytes().iter().chain(self.hi_port.to_be_bytes().iter()).for_each(|b| eat(*b));
        eat(self.proto);
        self.zone.to_be_bytes().iter().chain(self.seg.to_be_bytes().iter()).for_each(|b| eat(*b));
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_display_form() {
        for o in 0..=255u8 {
            for a in [Addr::v4([o, 0, 255, o]), Addr::v4([9, o, 10, 100]), Addr::v4([o, o, o, o])] {
                assert_eq!(a.text(), a.to_string());
            }
        }
        let v6 = Addr::v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(v6.text(), "2001:db8::1");
    }

    #[test]
    fn both_directions_share_key_and_spread() {
        let a = Addr::v4([198, 18, 0, 1]);
        let b = Addr::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let (k1, e1) = FlowKey::new(3, 6, a, 40000, b, 80);
        let (k2, e2) = FlowKey::new(3, 6, b, 80, a, 40000);
        assert_eq!(k1, k2);
        assert_ne!(e1, e2);
        assert_eq!(k1.spread(), k2.spread());
        let (k3, _) = FlowKey::new(4, 6, a, 40000, b, 80);
        assert_ne!(k1, k3);
    }

    #[test]
    fn same_address_different_ports_orders_by_port() {
        let a = Addr::v4([198, 18, 0, 1]);
        let (k, e) = FlowKey::new(0, 17, a, 9000, a, 53);
        assert_eq!((k.lo_port, k.hi_port, e), (53, 9000, End::Hi));
    }

    #[test]
    fn display_forms() {
        assert_eq!(Addr::v4([198, 18, 0, 9]).to_string(), "198.18.0.9");
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[15] = 5;
        assert_eq!(Addr::v6(v6).to_string(), "2001:db8::5");
        assert!(!Addr::v6(v6).is_v4());
    }

    #[test]
    fn owner_spread_ignores_ports_protocol_and_direction() {
        let (a, b) = (Addr::v4([198, 18, 0, 1]), Addr::v4([198, 18, 0, 2]));
        let (k, _) = FlowKey::new(0, 17, a, 40000, b, 53);
        let (frag, _) = FlowKey::new(0, 17, b, 0, a, 0);
        let (icmp, _) = FlowKey::new(0, 1, b, 0, a, 0);
        assert_eq!(k.owner_spread(), frag.owner_spread());
        assert_eq!(k.owner_spread(), icmp.owner_spread());
        assert_ne!(k.owner_spread(), FlowKey::new(1, 17, a, 40000, b, 53).0.owner_spread(), "zone counts");
        // Host pairs still spread over two workers.
        let ones: u32 =
            (0..1000u32).map(|i| FlowKey::new(0, 6, Addr::v4([198, 18, (i >> 8) as u8, i as u8]), 1, b, 2).0.owner_spread() % 2).sum();
        assert!((400..=600).contains(&ones), "{ones} of 1000 host pairs on worker 1");
    }

    #[test]
    fn spread_balances_two_workers_over_ports_of_one_host_pair() {
        // Flows between one client and one server differing only in the client port: with
        // two workers each gets close to half, whatever the ports' parity.
        let (a, b) = (Addr::v4([198, 18, 0, 1]), Addr::v4([198, 18, 0, 2]));
        for step in [1u16, 2, 4] {
            let n = 1000u32;
            let ones: u32 = (0..n).map(|i| FlowKey::new(0, 6, a, 40000 + step * i as u16, b, 80).0.spread() % 2).sum();
            assert!((400..=600).contains(&ones), "step {step}: {ones} of {n} on worker 1");
        }
    }
}
