//! The attach stage (issue 12): putting Warden inline in front of a running workload (a
//! container, a network namespace, a VM's tap) without changing the workload's addresses,
//! MACs or routes, and giving the original plumbing back exactly.
//!
//! - [`resolve`]: from the request's target to the workload's host-side interface (veth peer
//!   or tap), its namespace, inner interface and addresses; container runtimes through their
//!   CLIs (`podman inspect`, `docker inspect`, in `[attach] runtimes` order).
//! - [`plumb`]: taking over the host interface's bridge port with a veth pair of Warden's and
//!   the exact restore; the order that never leaves a path around Warden; the offloads the
//!   kernel path needs (tx checksum off on sending ends, GRO for in-kernel redirects into a
//!   veth).
//! - [`state`]: one file per attachment under `[attach] state_dir`, written before each change,
//!   so a restarted Warden adopts (or restores) what a killed one left.
//! - [`watch`]: the control loop's once-a-second check: an attached interface that went away is
//!   detached (final records for its sessions), one that returns with the same identity is
//!   attached again.
//! - [`link`]: the iproute2 / ethtool calls (why the tools and not a netlink crate: there).
//!
//! **Crash.** Warden's XDP program stays attached to the host interface and to Warden's near
//! end when the process dies (netlink attachment), and the kernel removes the dead process's
//! sockets from the XSKMAP, so the pair falls to fail_open (the program redirects between the
//! two through its devmap; GRO on the receiving veths makes those redirects deliver): the
//! workload stays connected, uninspected, until Warden starts again and adopts the attachment
//! (`[attach] on_start = "adopt"`, the default) or restores the original plumbing
//! (`"restore"`). A graceful stop keeps attachments the same way (`on_stop = "keep"`) or
//! detaches them all (`"detach"`).
//!
//! **Routed setups** (a host veth with no bridge and host routes to it, as Calico sets up) are
//! refused with an error: taking them over would mean moving routes and proxy-ARP settings, and
//! a mistake there cuts the workload off; a bridge port can be swapped with no such risk.
//!
//! Nothing here runs per frame: attach, detach and the 1 s check run on the control loop.

pub mod link;
pub mod plumb;
pub mod resolve;
pub mod state;
pub mod watch;

use warden_control::{AttachInfo, AttachSpec};

use crate::policy::Policy;
use resolve::Target;
use state::{Phase, State};

/// The policy workload an attachment's addresses belong to, when the running policy already
/// has one: a workload owning one of its addresses, else one whose selector (`containers`,
/// `pods`, `pod_labels`, [`crate::policy::select`]) matches `st.identity` (the daemon fills its
/// addresses from the identity registry). `None`: Warden adds an implicit workload named after
/// the attachment. Returns (workload id, its mode).
pub fn workload_for(policy: &Policy, st: &State) -> Option<(String, String)> {
    let not_own = |w: &&crate::policy::Workload| !(st.implicit && w.id == st.name);
    policy
        .workloads
        .iter()
        .filter(not_own)
        .find(|w| w.ips.iter().any(|a| st.ips.iter().any(|i| i.parse::<std::net::IpAddr>().ok() == Some(*a))))
        .or_else(|| policy.workloads.iter().filter(not_own).find(|w| w.select.matches(&st.identity)))
        .map(|w| (w.id.clone(), w.mode.as_str().to_string()))
}

/// The state of a new attachment of `t` (nothing changed yet): the host interface's bridge,
/// port settings, VLANs, MTU and MAC, Warden's pair names, the mode.
///
/// # Errors
/// The host interface is not a bridge port (routed setups are refused), or its settings cannot
/// be read.
pub fn plan(t: &Target, spec: &AttachSpec, name: &str, mode: &str) -> Result<State, String> {
    let h = &t.host;
    let Some(bridge) = h.master.clone() else {
        return Err(format!(
            "{} is not a port of a bridge (a routed setup, as Calico's): Warden attaches only to bridge-attached veths and taps; nothing was changed",
            h.ifname
        ));
    };
    let Some(port) = h.port.clone() else {
        return Err(format!("{} is enslaved to {bridge}, which is not a Linux bridge: nothing was changed", h.ifname));
    };
    if h.xdp {
        return Err(format!("{} already runs an XDP program (another tool's?): nothing was changed", h.ifname));
    }
    let vlans = link::vlans(&h.ifname)?;
    let (near, far) = plumb::pair_names(name);
    Ok(State {
        version: state::VERSION,
        name: name.to_string(),
        spec: spec.clone(),
        kind: t.kind.as_str().to_string(),
        key: t.key.clone(),
        phase: Phase::Starting,
        netns: t.netns.clone(),
        inner: t.inner.clone(),
        host: h.ifname.clone(),
        host_ifindex: h.ifindex,
        bridge,
        port,
        vlans,
        mtu: h.mtu,
        mac: h.address.clone(),
        near,
        far,
        inner_features: Vec::new(),
        host_features: Vec::new(),
        mode: mode.to_string(),
        ips: t.ips.clone(),
        inner_mac: t.inner_mac.clone(),
        workload: None,
        implicit: false,
        identity: t.identity.clone(),
    })
}

/// The protocol's description of an attachment.
pub fn info(st: &State) -> AttachInfo {
    AttachInfo {
        name: st.name.clone(),
        kind: st.kind.clone(),
        host_iface: st.host.clone(),
        warden_iface: (st.phase == Phase::Attached).then(|| st.far.clone()),
        bridge: Some(st.bridge.clone()),
        monitor: false,
        mode: st.mode.clone(),
        workload: st.workload.clone(),
        ips: st.ips.clone(),
        identity: Some(st.identity.clone()),
        state: Some(match st.phase {
            Phase::Starting => "starting",
            Phase::Attached => "attached",
            Phase::Gone => "gone",
        }
        .to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_workload_owning_an_address_is_the_attachments() {
        let p = Policy::from_toml(
            "[[workload]]\nid = \"web\"\nips = [\"198.18.0.2\"]\nmode = \"protect\"\n[[workload]]\nid = \"att\"\nips = [\"198.18.0.9\"]\n",
        )
        .unwrap();
        let t = Target {
            kind: resolve::Kind::Netns,
            key: "ns".into(),
            default_name: "ns".into(),
            netns: None,
            inner: None,
            host: link::Link { ifname: "h".into(), master: Some("br".into()), port: Some(Default::default()), ..Default::default() },
            ips: vec!["198.18.0.2".into()],
            inner_mac: None,
            identity: Default::default(),
        };
        let mut st = State {
            vlans: Vec::new(),
            ..plan_without_vlans(&t)
        };
        assert_eq!(workload_for(&p, &st), Some(("web".into(), "protect".into())));
        st.ips = vec!["198.18.0.9".into()];
        st.name = "att".into();
        st.implicit = true;
        // Its own implicit workload is not a policy workload that selects it.
        assert_eq!(workload_for(&p, &st), None);
    }

    fn plan_without_vlans(t: &Target) -> State {
        State {
            version: state::VERSION,
            name: "x".into(),
            spec: AttachSpec::default(),
            kind: t.kind.as_str().into(),
            key: t.key.clone(),
            phase: Phase::Starting,
            netns: None,
            inner: None,
            host: t.host.ifname.clone(),
            host_ifindex: 0,
            bridge: "br".into(),
            port: Default::default(),
            vlans: Vec::new(),
            mtu: 1500,
            mac: String::new(),
            near: "n".into(),
            far: "f".into(),
            inner_features: Vec::new(),
            host_features: Vec::new(),
            mode: "learn".into(),
            ips: t.ips.clone(),
            inner_mac: None,
            workload: None,
            implicit: false,
            identity: Default::default(),
        }
    }

    #[test]
    fn routed_host_interfaces_are_refused() {
        let t = Target {
            kind: resolve::Kind::Iface,
            key: "cali1".into(),
            default_name: "cali1".into(),
            netns: None,
            inner: None,
            host: link::Link { ifname: "cali1".into(), ..Default::default() },
            ips: Vec::new(),
            inner_mac: None,
            identity: Default::default(),
        };
        let e = plan(&t, &AttachSpec::default(), "x", "learn").unwrap_err();
        assert!(e.contains("routed") && e.contains("nothing was changed"), "{e}");
    }
}
