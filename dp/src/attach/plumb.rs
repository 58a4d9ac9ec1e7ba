//! Taking over a bridge port and giving it back.
//!
//! A workload on a Linux bridge reaches it through its host-side interface `H` (the veth peer
//! of its interface, or its tap). Warden creates a veth pair of its own, `near` and `far`,
//! puts `far` on the bridge in `H`'s place (same MTU, same MAC, the same port settings and
//! VLANs) and runs the inline pair `H` ↔ `near`. The workload keeps its addresses, MACs and
//! routes: frames it sends still leave through `H`, now into Warden, which forwards them out
//! of `near`, and `far` hands them to the bridge exactly as `H` did.
//!
//! **Order** ([`take_over`], then the daemon's inline pair, then [`connect`]): `far` joins the
//! bridge *down* (a disabled port: the bridge forwards nothing to it, br_port_state
//! `BR_STATE_DISABLED`), `H` leaves the bridge, the inline pair is set up (XSKs bound, XDP on
//! `H` and `near`), and only then `far` comes up. From the moment `H` leaves the bridge, the
//! only way between the bridge and the workload is through Warden, so there is a short gap
//! with no connectivity but never a path around Warden.
//!
//! **Kernel path settings.** On veth the sender's checksum offload leaves CHECKSUM_PARTIAL
//! frames (pseudo-header sum only) that AF_XDP copies as they are, and Warden's transmit has
//! no way to say "partial": tx checksum offload is turned off on the sending ends, so the
//! stack fills checksums in software (`validate_xmit_skb` → `skb_checksum_help` on a device
//! without `NETIF_F_CSUM_MASK`): the workload's interface (inside its namespace) and `far`
//! (which the bridge transmits into, so frames from every other port and from the host get
//! complete checksums). In-kernel redirects into a veth (fail_open while Warden is down, the
//! fast path) are delivered only when the receiving peer has NAPI, i.e. GRO on or an XDP
//! program (`veth_xdp_xmit` returns `-ENXIO` otherwise): GRO is turned on for `far` and the
//! workload's interface. A tap (tun's `ndo_xdp_xmit`) needs neither. Every value changed on an
//! interface Warden does not own is recorded first and put back on detach.
//!
//! **Restore** ([`restore`]): Warden's pair is deleted (deleting one end deletes both, and
//! takes `far` off the bridge), `H` goes back on its bridge with its port settings and VLANs,
//! Warden's XDP program is removed from `H` and the workload's features are put back.

use super::link::{self, Ns};
use super::state::State;

/// Makes the names of Warden's pair for attachment `name`: `wdn` / `wdb` and 8 hex digits of
/// a hash of the name, the process id and the time (15 bytes at most, IFNAMSIZ), unused.
pub fn pair_names(name: &str) -> (String, String) {
    use std::hash::{BuildHasher, Hasher};
    for i in 0u32.. {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(name.as_bytes());
        h.write_u32(std::process::id());
        h.write_u32(i);
        let x = h.finish() as u32;
        let (n, f) = (format!("wdn{x:08x}"), format!("wdb{x:08x}"));
        if nix::net::if_::if_nametoindex(n.as_str()).is_err() && nix::net::if_::if_nametoindex(f.as_str()).is_err() {
            return (n, f);
        }
    }
    unreachable!("u32 names exhausted")
}

/// Creates Warden's pair and puts `far` on the bridge (down) with `H`'s settings, sets the
/// offloads, takes `H` off the bridge. On error, whatever was done is undone ([`restore`]).
/// `save` is called with the state before the first change.
///
/// # Errors
/// A command fails (the message names it); the original plumbing is back in place.
pub fn take_over(st: &mut State, save: &dyn Fn(&State) -> Result<(), String>) -> Result<(), String> {
    save(st)?;
    let r = take_over_steps(st, save);
    if let Err(e) = r {
        let undo = restore(st, false);
        let undo = if undo.is_empty() { String::new() } else { format!(" (undoing: {})", undo.join("; ")) };
        return Err(format!("{e}{undo}"));
    }
    Ok(())
}

fn take_over_steps(st: &mut State, save: &dyn Fn(&State) -> Result<(), String>) -> Result<(), String> {
    let own = Ns::Own;
    let mtu = st.mtu.to_string();
    link::ip(&own, &["link", "add", &st.near, "mtu", &mtu, "type", "veth", "peer", "name", &st.far, "mtu", &mtu])?;
    for d in [&st.near, &st.far] {
        // Warden's interfaces carry no addresses: no link-local, no router solicitations.
        link::ip(&own, &["link", "set", "dev", d, "addrgenmode", "none"])?;
    }
    link::ip(&own, &["link", "set", "dev", &st.far, "address", &st.mac])?;
    let far_now = link::features(&own, &st.far)?;
    link::set_features(&own, &st.far, &link::feature_changes(&far_now, Some(false), Some(true)).0)?;
    if let (Some(ns), Some(inner)) = (&st.netns, &st.inner) {
        let ns = Ns::Path(ns.clone());
        let now = link::features(&ns, inner)?;
        let (set, old) = link::feature_changes(&now, Some(false), Some(true));
        st.inner_features = old;
        save(st)?;
        link::set_features(&ns, inner, &set)?;
    }
    link::ip(&own, &["link", "set", "dev", &st.far, "master", &st.bridge])?;
    link::set_port(&st.far, &st.port)?;
    link::set_vlans(&st.far, &st.vlans)?;
    link::ip(&own, &["link", "set", "dev", &st.near, "up"])?;
    link::ip(&own, &["link", "set", "dev", &st.host, "nomaster"])?;
    Ok(())
}

/// Brings `far` up: the bridge forwards to and from Warden (after the inline pair is up).
///
/// # Errors
/// `ip` fails.
pub fn connect(st: &State) -> Result<(), String> {
    link::ip(&Ns::Own, &["link", "set", "dev", &st.far, "up"]).map(|_| ())
}

/// Puts the original plumbing back as far as it still exists: deletes Warden's pair, puts `H`
/// back on its bridge with its port settings and VLANs, removes the XDP program from `H` when
/// `clear_xdp` (Warden's, left by a killed process) and restores the workload's features.
/// Goes on past failures; returns what failed.
pub fn restore(st: &State, clear_xdp: bool) -> Vec<String> {
    let own = Ns::Own;
    let mut errs = Vec::new();
    if nix::net::if_::if_nametoindex(st.near.as_str()).is_ok() {
        if let Err(e) = link::ip(&own, &["link", "del", "dev", &st.near]) {
            errs.push(e);
        }
    }
    if link::exists(&st.host, st.host_ifindex) {
        let steps: [&dyn Fn() -> Result<(), String>; 4] = [
            &|| {
                if clear_xdp {
                    link::ip(&own, &["link", "set", "dev", &st.host, "xdp", "off"])?;
                }
                Ok(())
            },
            &|| {
                let h = link::link(&own, &st.host)?;
                if h.master.as_deref() == Some(st.bridge.as_str()) {
                    return Ok(());
                }
                link::ip(&own, &["link", "set", "dev", &st.host, "master", &st.bridge]).map(|_| ())
            },
            &|| link::set_port(&st.host, &st.port),
            &|| link::set_vlans(&st.host, &st.vlans),
        ];
        for s in steps {
            if let Err(e) = s() {
                errs.push(e);
            }
        }
        if let Err(e) = link::set_features(&own, &st.host, &st.host_features) {
            errs.push(e);
        }
    }
    if let (Some(ns), Some(inner)) = (&st.netns, &st.inner) {
        if ns.exists() {
            if let Err(e) = link::set_features(&Ns::Path(ns.clone()), inner, &st.inner_features) {
                errs.push(e);
            }
        }
    }
    errs
}

/// Removes what Warden created for an attachment whose workload interface is gone (the host
/// interface went with it): Warden's pair.
pub fn remove_own(st: &State) -> Vec<String> {
    let mut errs = Vec::new();
    if nix::net::if_::if_nametoindex(st.near.as_str()).is_ok() {
        if let Err(e) = link::ip(&Ns::Own, &["link", "del", "dev", &st.near]) {
            errs.push(e);
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_names_fit_ifnamsiz_and_differ() {
        let (n, f) = pair_names("some-attachment");
        assert!(n.len() <= 15 && f.len() <= 15, "{n} {f}");
        assert_ne!(n, f);
        assert_eq!(&n[3..], &f[3..]);
    }
}
