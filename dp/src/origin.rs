//! Where a frame came from: which interface of which inline pair, which workload's side that
//! interface is, and whether the sender may claim the addresses it claims.
//!
//! Two rules make a session's direction something an outside sender cannot choose:
//! - **The workload's interface is the workload.** A workload with `iface` owns its side of the
//!   pair: a frame received on that interface was sent by the workload, a frame received on the
//!   peer interface is going to it, whatever addresses either carries ([`Origins::ends`] feeds
//!   [`crate::policy::CompiledPolicy::evaluate_ends`]). A subnet broadcast or an address the
//!   policy does not list is still that workload's traffic.
//! - **Anti-spoofing.** A workload with `iface` or `macs` only sends from that side and those
//!   MACs; a frame elsewhere claiming one of its addresses is *spoofed* ([`Origins::spoofed`]).
//!   Within a session, each direction stays on the interface it was first seen on (the client's
//!   frames arrive on the client's side, the server's on the peer): a frame of the session
//!   arriving on the other side is spoofed too ([`Origins::pinned`]), so a frame from outside
//!   cannot ride an inside flow.
//!
//! Spoofed frames are counted; in protect mode they are dropped. A spoofed frame that no
//! session takes creates none in any mode (in alert mode it is forwarded uninspected), so it
//! never chooses a session's orientation (the `Inspector` decides). Interface slots are
//! registered by the worker when it binds a pair ([`Origins::set_pair`]); `warden replay`
//! registers none: there only `macs` can be checked, and they are, on every frame claiming a
//! workload's address (such a frame belongs to no session).

use crate::flow::Addr;
use crate::policy::{CompiledPolicy, Ends, WorkloadIdx};

/// Interface slot value meaning "not known".
pub const NO_SLOT: u16 = u16::MAX;

#[derive(Debug, Clone, Default)]
struct Slot {
    name: Box<str>,
    peer: u16,
    /// The workload whose side this interface is (frames received here come from it).
    local: Option<WorkloadIdx>,
    /// The workload on the peer side (frames received here go to it).
    remote: Option<WorkloadIdx>,
    /// The bridge this interface faces, when it is an attachment's near end
    /// ([`CompiledPolicy::uplink_bridge`]).
    bridge: Option<u32>,
}

/// The interfaces a pipeline serves and the workloads on their sides. Changed only by control
/// commands (pair added or removed, policy published); read per frame without allocating.
#[derive(Debug, Default)]
pub struct Origins {
    slots: Vec<Option<Slot>>,
}

impl Origins {
    /// Registers inline pair `a` ⇄ `b` (interface slot and name of each side) and resolves
    /// their workloads under `policy`.
    pub fn set_pair(&mut self, a: (u16, &str), b: (u16, &str), policy: &CompiledPolicy) {
        for (me, peer) in [(a, b), (b, a)] {
            let i = usize::from(me.0);
            if i >= self.slots.len() {
                self.slots.resize(i + 1, None);
            }
            self.slots[i] = Some(Slot { name: me.1.into(), peer: peer.0, local: None, remote: None, bridge: None });
        }
        self.apply_policy(policy);
    }

    /// Forgets the pair that `slot` belongs to.
    pub fn remove_pair(&mut self, slot: u16) {
        let peer = self.slot(slot).map(|s| s.peer);
        for s in [Some(slot), peer].into_iter().flatten() {
            if let Some(x) = self.slots.get_mut(usize::from(s)) {
                *x = None;
            }
        }
    }

    /// Resolves every interface's workloads under a newly enforced `policy`.
    pub fn apply_policy(&mut self, policy: &CompiledPolicy) {
        let locals: Vec<Option<WorkloadIdx>> = self
            .slots
            .iter()
            .map(|s| s.as_ref().and_then(|s| policy.workload_of_iface(&s.name)))
            .collect();
        for i in 0..self.slots.len() {
            let remote = self.slots[i].as_ref().and_then(|s| locals.get(usize::from(s.peer)).copied().flatten());
            if let Some(s) = self.slots[i].as_mut() {
                s.local = locals[i];
                s.remote = remote;
                s.bridge = policy.uplink_bridge(&s.name);
            }
        }
    }

    #[inline]
    fn slot(&self, slot: u16) -> Option<&Slot> {
        self.slots.get(usize::from(slot)).and_then(Option::as_ref)
    }

    /// True when `slot` belongs to a registered pair.
    #[inline]
    pub fn known(&self, slot: u16) -> bool {
        self.slot(slot).is_some()
    }

    /// The peer interface of `slot` ([`NO_SLOT`] when not registered).
    #[inline]
    pub fn peer(&self, slot: u16) -> u16 {
        self.slot(slot).map_or(NO_SLOT, |s| s.peer)
    }

    /// The workloads of a session whose client's frames arrive on `client_slot`: the client is
    /// the workload whose side that is, the server the workload on the peer side.
    #[inline]
    pub fn ends(&self, client_slot: u16) -> Ends {
        match self.slot(client_slot) {
            Some(s) => Ends { client: s.local, server: s.remote },
            None => Ends::default(),
        }
    }

    /// As [`Self::ends`] under another policy than the one applied (the shadow policy,
    /// [`crate::shadow`]): the workloads `policy` puts behind the client's interface and its
    /// peer, by interface name (two hash lookups; only when a session is evaluated).
    pub fn ends_under(&self, client_slot: u16, policy: &CompiledPolicy) -> Ends {
        let Some(s) = self.slot(client_slot) else { return Ends::default() };
        Ends {
            client: policy.workload_of_iface(&s.name),
            server: self.slot(s.peer).and_then(|p| policy.workload_of_iface(&p.name)),
        }
    }

    /// The workload a frame received on `slot` from `src` (with source MAC `mac`) claims to be
    /// and may not be. `None` for frames that claim no workload's address or claim it rightly.
    /// - `src` is an attachment's address ([`crate::policy::Policy::bound`]): it may come from
    ///   the attachment's host interface, or over the same bridge into another attachment's
    ///   near end (it passed this check at its own attachment on the way) from the workload's
    ///   own MAC when that is known (a VM's tap: from any MAC). From anywhere else (another
    ///   workload's side, another bridge, its own attachment's near end, the host or the
    ///   outside routed onto the bridge, which sends from the bridge's MAC) it is spoofed.
    /// - Else `src` is an address of a workload with an `iface` that is not `slot`'s interface.
    /// - Or the workload has `macs` that do not include `mac`.
    ///
    /// One hash lookup, two with attachments.
    pub fn spoofed(&self, policy: &CompiledPolicy, slot: u16, src: Addr, mac: [u8; 6]) -> Option<WorkloadIdx> {
        let w = policy.workload_of(src.ip())?;
        let wl = &policy.workloads()[w.index()];
        if let Some(s) = self.slot(slot) {
            if let Some(b) = policy.bound(src.ip()) {
                let own_side = *s.name == *b.iface;
                // Not into its own attachment: the workload does not send to itself over the bridge.
                let own_pair = self.slot(s.peer).is_some_and(|p| *p.name == *b.iface);
                let over_its_bridge = s.bridge == Some(b.bridge) && !own_pair && b.mac.is_none_or(|m| m == mac);
                if !own_side && !over_its_bridge {
                    return Some(w);
                }
            } else if let Some(iface) = wl.iface.as_deref() {
                if *s.name != *iface {
                    return Some(w);
                }
            }
        }
        if !wl.macs.is_empty() && !wl.macs.iter().any(|m| m.0 == mac) {
            return Some(w);
        }
        None
    }

    /// The source MAC frames from `src` received on `slot` must come from, when Warden checks
    /// it ([`Self::spoofed`]: an attachment's address, of known MAC, arriving over a bridge).
    #[inline]
    pub fn checked_mac(&self, policy: &CompiledPolicy, slot: u16, src: Addr) -> Option<[u8; 6]> {
        if !self.over_bridge(slot) {
            return None;
        }
        policy.bound(src.ip()).and_then(|b| b.mac)
    }

    /// True when `slot` is an attachment's near end: its frames come over a bridge.
    #[inline]
    pub fn over_bridge(&self, slot: u16) -> bool {
        self.slot(slot).is_some_and(|s| s.bridge.is_some())
    }

    /// True when a frame received on `slot` may belong to the session direction whose frames
    /// arrive on `expected` (unknown slots always may: nothing to compare).
    #[inline]
    pub fn pinned(&self, slot: u16, expected: u16) -> bool {
        expected == NO_SLOT || slot == expected || !self.known(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn policy() -> CompiledPolicy {
        let text = r#"
[[workload]]
id = "web"
ips = ["198.18.0.2"]
iface = "wd-in"
mode = "protect"
[[workload]]
id = "db"
ips = ["198.18.0.3"]
macs = ["02:00:00:00:00:03"]
mode = "protect"
[[workload]]
id = "plain"
ips = ["198.18.0.4"]
mode = "protect"
"#;
        CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap()
    }

    #[test]
    fn interface_sides_name_the_workloads() {
        let p = policy();
        let mut o = Origins::default();
        o.set_pair((1, "wd-out"), (2, "wd-in"), &p);
        let web = p.workload_by_id("web");
        // The client's frames arrive on wd-in: the client is web, whatever its address.
        assert_eq!(o.ends(2), Ends { client: web, server: None });
        assert_eq!(o.ends(1), Ends { client: None, server: web });
        assert_eq!((o.peer(1), o.peer(2), o.peer(3)), (2, 1, NO_SLOT));
        o.remove_pair(2);
        assert!(!o.known(1) && !o.known(2));
        assert_eq!(o.ends(1), Ends::default());
    }

    #[test]
    fn spoofed_addresses_and_macs() {
        let p = policy();
        let mut o = Origins::default();
        o.set_pair((1, "wd-out"), (2, "wd-in"), &p);
        let a = |s: &str| Addr::from(s.parse::<std::net::IpAddr>().unwrap());
        let mac = [2, 0, 0, 0, 0, 3];
        let other = [2, 0, 0, 0, 0, 9];
        assert_eq!(o.spoofed(&p, 2, a("198.18.0.2"), other), None, "web from its side");
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.2"), other), p.workload_by_id("web"), "web from outside");
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.3"), mac), None, "db with its MAC");
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.3"), other), p.workload_by_id("db"));
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.4"), other), None, "nothing to check it against");
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.9"), other), None, "not a workload");
        assert!(o.pinned(1, 1) && !o.pinned(1, 2) && o.pinned(1, NO_SLOT) && o.pinned(7, 2));
    }

    #[test]
    fn attached_addresses_come_only_from_their_attachment() {
        // Three attachments on bridge "br" (host interfaces wd-a, wd-b, wd-c; Warden's near
        // ends wn-a, wn-b, wn-c) and one on "br2" (wd-d, wn-d). "pods" selects a and b (no
        // `iface`: it spans both); "plain" lists c's address; d's is its implicit workload's.
        let text = r#"
[[workload]]
id = "pods"
containers = ["web-*"]
mode = "protect"
[[workload]]
id = "plain"
ips = ["198.18.0.4"]
mode = "protect"
[[workload]]
id = "d"
ips = ["198.18.0.8"]
iface = "wd-d"
mode = "protect"
"#;
        let mut src = Policy::from_toml(text).unwrap();
        src.workloads[0].ips = vec!["198.18.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap(), "198.18.0.6".parse().unwrap()];
        let (mac_a, mac_b, mac_c) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xc]);
        let bind = |iface: &str, bridge: &str, mac: Option<[u8; 6]>| crate::policy::BoundAddr { iface: iface.into(), bridge: bridge.into(), mac };
        for (ip, b) in [
            ("198.18.0.5", bind("wd-a", "br", Some(mac_a))),
            ("2001:db8::5", bind("wd-a", "br", Some(mac_a))),
            ("198.18.0.6", bind("wd-b", "br", Some(mac_b))),
            ("198.18.0.4", bind("wd-c", "br", None)),
            ("198.18.0.8", bind("wd-d", "br2", Some(mac_c))),
        ] {
            src.bound.insert(ip.parse().unwrap(), b);
        }
        for (near, bridge) in [("wn-a", "br"), ("wn-b", "br"), ("wn-c", "br"), ("wn-d", "br2")] {
            src.uplinks.insert(near.into(), bridge.into());
        }
        let p = CompiledPolicy::compile(&src).unwrap();
        let mut o = Origins::default();
        o.set_pair((1, "wn-a"), (2, "wd-a"), &p);
        o.set_pair((3, "wn-b"), (4, "wd-b"), &p);
        o.set_pair((5, "wn-c"), (6, "wd-c"), &p);
        o.set_pair((7, "wn-d"), (8, "wd-d"), &p);
        let a = |s: &str| Addr::from(s.parse::<std::net::IpAddr>().unwrap());
        let (pods, plain, d) = (p.workload_by_id("pods"), p.workload_by_id("plain"), p.workload_by_id("d"));
        let other = [2, 0, 0, 0, 0, 0x99];
        // From the workload's own side.
        assert_eq!(o.spoofed(&p, 2, a("198.18.0.5"), mac_a), None);
        assert_eq!(o.spoofed(&p, 2, a("2001:db8::5"), other), None, "any MAC on its own side");
        assert_eq!(o.spoofed(&p, 4, a("198.18.0.6"), mac_b), None);
        // From another workload's side, even one of the same workload, or the other bridge's.
        assert_eq!(o.spoofed(&p, 4, a("198.18.0.5"), mac_a), pods, "from the workload's other attachment");
        assert_eq!(o.spoofed(&p, 6, a("198.18.0.6"), mac_b), pods);
        assert_eq!(o.spoofed(&p, 8, a("198.18.0.5"), mac_a), pods);
        // Over its bridge into another attachment: from its own MAC only.
        assert_eq!(o.spoofed(&p, 3, a("198.18.0.5"), mac_a), None, "a -> b over the bridge");
        assert_eq!(o.spoofed(&p, 5, a("2001:db8::5"), mac_a), None);
        assert_eq!(o.spoofed(&p, 3, a("198.18.0.5"), other), pods, "the host or the outside, routed onto the bridge");
        assert_eq!(o.spoofed(&p, 7, a("198.18.0.5"), mac_a), pods, "from the other bridge");
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.5"), mac_a), pods, "into its own attachment");
        // An address a workload lists, held by an attachment whose MAC is unknown (a tap):
        // its side, or over its bridge from any MAC.
        assert_eq!(o.spoofed(&p, 6, a("198.18.0.4"), other), None);
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.4"), other), None);
        assert_eq!(o.spoofed(&p, 2, a("198.18.0.4"), other), plain);
        assert_eq!(o.spoofed(&p, 7, a("198.18.0.4"), other), plain);
        // The implicit workload (with `iface`) of an attachment: the same rules.
        assert_eq!(o.spoofed(&p, 8, a("198.18.0.8"), mac_c), None);
        assert_eq!(o.spoofed(&p, 1, a("198.18.0.8"), mac_c), d, "over another bridge");
        // Checked by MAC (so an XDP fast path entry is limited to it): a's address over a
        // bridge only.
        assert_eq!(o.checked_mac(&p, 3, a("198.18.0.5")), Some(mac_a));
        assert_eq!(o.checked_mac(&p, 7, a("2001:db8::5")), Some(mac_a));
        assert_eq!(o.checked_mac(&p, 2, a("198.18.0.5")), None, "its own side");
        assert_eq!(o.checked_mac(&p, 1, a("198.18.0.4")), None, "MAC unknown");
        assert_eq!(o.checked_mac(&p, 1, a("198.18.0.99")), None, "not an attachment's");
        // Each attachment's side names the workload owning its addresses.
        assert_eq!(o.ends(2), Ends { client: pods, server: None });
        assert_eq!(o.ends(4), Ends { client: pods, server: None });
        assert_eq!(o.ends(3), Ends { client: None, server: pods });
        assert_eq!(o.ends(6), Ends { client: plain, server: None });
        assert_eq!(o.ends(8), Ends { client: d, server: None });
    }
}
