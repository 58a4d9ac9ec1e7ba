//! Interfaces that come and go, checked once a second by the control loop (the daemon already
//! wakes every second to re-read queue counts; a netlink listener would see a deleted veth a
//! second earlier, but the workload behind it is gone either way, and a returning one is
//! attached within the second, before its runtime usually finishes starting it).
//!
//! - An attached host interface that no longer exists with its ifindex (a container stopped:
//!   the kernel deletes both ends of a veth when its namespace goes, `veth_dellink`; a VM shut
//!   down: qemu closed the tap) is [`gone`]: the daemon ends the inline pair (its sessions'
//!   final records), deletes Warden's pair and keeps the attachment as `gone`.
//! - A gone attachment whose identity resolves again (the same container id running, the same
//!   namespace name with the interface in it, the same tap name) has [`returned`]: the daemon
//!   attaches it again with the request it was made with (mode, name, addresses).

use super::resolve::{self, Target};
use super::state::{Phase, State};

/// True when `st` is attached and its host interface is gone (or is another interface now).
pub fn gone(st: &State) -> bool {
    st.phase == Phase::Attached && !super::link::exists(&st.host, st.host_ifindex)
}

/// The target of a gone attachment when it can be attached again (the same identity:
/// container id, namespace, tap or interface name; the host interface on a bridge).
pub fn returned(st: &State, runtimes: &[String]) -> Option<Target> {
    if st.phase != Phase::Gone {
        return None;
    }
    let mut spec = st.spec.clone();
    // A container comes back under its id (a new container of the same name is another one).
    if st.kind == "container" {
        spec.target = st.key.clone();
    }
    spec.kind = Some(st.kind.clone());
    let t = resolve::resolve(&spec, runtimes).ok()?;
    (t.key == st.key && t.host.master.is_some()).then_some(t)
}
