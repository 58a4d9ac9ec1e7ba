//! Warden's XDP program and its loader.
//!
//! The program (`src/bpf/warden.bpf.c`, compiled by libbpf-cargo in `build.rs`) is loaded once
//! per Warden process and attached to both interfaces of every inline pair. For each frame it
//! redirects to the AF_XDP socket (XSK) bound to the frame's rx queue; when none is bound
//! (Warden stopped or crashed) it applies the pair's [`FailMode`]. The program is attached with
//! the netlink API, not a BPF link, on purpose: it must stay attached when Warden dies so that
//! `fail_open` keeps the wire connected.
//!
//! Interfaces are addressed by a *slot* (`0..MAX_IFACES`) that Warden assigns; the XSKMAP key of
//! queue `q` of slot `s` is `s * MAX_QUEUES + q`.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, RawFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, Xdp, XdpFlags};

#[allow(clippy::all, clippy::undocumented_unsafe_blocks, missing_docs, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/warden.skel.rs"));
}
use skel::{WardenSkel, WardenSkelBuilder};

/// Number of interface slots (`WARDEN_MAX_IFACES` in the C program).
pub const MAX_IFACES: u32 = 256;
/// Number of rx queues per interface the XSKMAP has room for (`WARDEN_MAX_QUEUES`).
pub const MAX_QUEUES: u32 = 64;
const FLAG_FAIL_CLOSED: u32 = 1;

/// What the XDP program does with a frame when no Warden socket is bound to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Forward the frame to the pair's peer interface in the kernel (devmap redirect).
    #[default]
    Open,
    /// Drop the frame.
    Closed,
}

/// How the program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP; veth and tap support it.
    Native,
    /// Generic (skb) XDP, the fallback for drivers without native support.
    Generic,
}

/// Errors from loading the program or updating its maps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libbpf failed; the string says which step.
    #[error("{step}: {source}")]
    Bpf {
        /// The step that failed, e.g. "attach XDP to ifindex 7".
        step: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A slot or queue number beyond the map sizes.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
}

fn bpf(step: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> Error {
    let step = step.into();
    move |source| Error::Bpf { step, source }
}

/// Per-interface counters kept by the XDP program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfStats {
    /// Frames redirected to a Warden socket.
    pub to_xsk_frames: u64,
    /// Bytes of those frames (L2 frame length, no FCS).
    pub to_xsk_bytes: u64,
    /// Frames forwarded to the peer in the kernel because no socket was bound (fail_open).
    pub fail_open_frames: u64,
    /// Bytes of those frames.
    pub fail_open_bytes: u64,
    /// Frames dropped because no socket was bound (fail_closed).
    pub fail_closed_frames: u64,
    /// Bytes of those frames.
    pub fail_closed_bytes: u64,
}

impl IfStats {
    const FIELDS: usize = 6;

    fn add_raw(&mut self, raw: &[u8]) {
        let mut v = [0u64; Self::FIELDS];
        for (i, chunk) in raw.chunks_exact(8).take(Self::FIELDS).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            v[i] = u64::from_ne_bytes(b);
        }
        self.to_xsk_frames += v[0];
        self.to_xsk_bytes += v[1];
        self.fail_open_frames += v[2];
        self.fail_open_bytes += v[3];
        self.fail_closed_frames += v[4];
        self.fail_closed_bytes += v[5];
    }
}

/// The loaded XDP program and its maps. One per process.
pub struct XdpProgram {
    skel: WardenSkel<'static>,
    mode: AttachMode,
}

impl XdpProgram {
    /// Opens and loads the program into the kernel (needs CAP_BPF / root).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the kernel rejects the program or the maps.
    pub fn load(mode: AttachMode) -> Result<Self, Error> {
        // The skeleton borrows its object storage for as long as it lives; the program lives for
        // the whole process, so the storage is leaked once at start-up.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = WardenSkelBuilder::default().open(storage).map_err(bpf("open XDP object"))?;
        let skel = open.load().map_err(bpf("load XDP program"))?;
        Ok(Self { skel, mode })
    }

    fn flags(&self) -> XdpFlags {
        match self.mode {
            AttachMode::Native => XdpFlags::DRV_MODE,
            AttachMode::Generic => XdpFlags::SKB_MODE,
        }
    }

    /// The kernel's id of the loaded program (as `ip link` shows it).
    pub fn prog_id(&self) -> u32 {
        libbpf_rs::Program::id_from_fd(self.skel.progs.warden_xdp.as_fd()).unwrap_or(0)
    }

    /// Attaches the program to `ifindex`, replacing whatever XDP program was there (for example
    /// one left behind by a Warden that was killed).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the driver refuses the attach mode.
    pub fn attach(&self, ifindex: u32) -> Result<(), Error> {
        Xdp::new(self.skel.progs.warden_xdp.as_fd())
            .attach(ifindex as i32, self.flags())
            .map_err(bpf(format!("attach XDP to ifindex {ifindex}")))
    }

    /// Detaches the program from `ifindex` if it is this process's program (never removes
    /// somebody else's XDP program).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the query or the detach fails.
    pub fn detach(&self, ifindex: u32) -> Result<(), Error> {
        let xdp = Xdp::new(self.skel.progs.warden_xdp.as_fd());
        let attached = xdp
            .query_id(ifindex as i32, self.flags())
            .map_err(bpf(format!("query XDP on ifindex {ifindex}")))?;
        if attached != 0 && attached == self.prog_id() {
            xdp.detach(ifindex as i32, self.flags())
                .map_err(bpf(format!("detach XDP from ifindex {ifindex}")))?;
        }
        Ok(())
    }

    /// Declares interface `ifindex` managed in `slot`, with `peer_ifindex` as the fail_open
    /// target.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a slot `>= MAX_IFACES`; [`Error::Bpf`] when a map update fails.
    pub fn configure_iface(
        &self,
        ifindex: u32,
        slot: u32,
        peer_ifindex: u32,
        fail: FailMode,
    ) -> Result<(), Error> {
        if slot >= MAX_IFACES {
            return Err(Error::OutOfRange("interface slot"));
        }
        let maps = &self.skel.maps;
        maps.peers
            .update(&slot.to_ne_bytes(), &peer_ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf(format!("set peer of slot {slot}")))?;
        let flags = if fail == FailMode::Closed { FLAG_FAIL_CLOSED } else { 0 };
        let mut cfg = [0u8; 8];
        cfg[..4].copy_from_slice(&slot.to_ne_bytes());
        cfg[4..].copy_from_slice(&flags.to_ne_bytes());
        maps.iface_cfg
            .update(&ifindex.to_ne_bytes(), &cfg, MapFlags::ANY)
            .map_err(bpf(format!("configure ifindex {ifindex}")))?;
        // Fresh counters for a fresh slot.
        let zero = vec![vec![0u8; IfStats::FIELDS * 8]; libbpf_rs::num_possible_cpus().unwrap_or(1)];
        maps.if_stats
            .update_percpu(&slot.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(bpf(format!("reset counters of slot {slot}")))?;
        Ok(())
    }

    /// Forgets interface `ifindex` (frames on it pass to the kernel again) and its slot's peer.
    ///
    /// # Errors
    /// [`Error::Bpf`] when a map update fails for another reason than a missing entry.
    pub fn remove_iface(&self, ifindex: u32, slot: u32) -> Result<(), Error> {
        let maps = &self.skel.maps;
        let _ = maps.iface_cfg.delete(&ifindex.to_ne_bytes());
        let _ = maps.peers.delete(&slot.to_ne_bytes());
        for q in 0..MAX_QUEUES {
            let _ = maps.xsks.delete(&(slot * MAX_QUEUES + q).to_ne_bytes());
        }
        Ok(())
    }

    /// Puts the XSK `fd` into the XSKMAP for queue `queue` of `slot`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a slot or queue beyond the map; [`Error::Bpf`] on failure.
    pub fn register_xsk(&self, slot: u32, queue: u32, fd: RawFd) -> Result<(), Error> {
        if slot >= MAX_IFACES {
            return Err(Error::OutOfRange("interface slot"));
        }
        if queue >= MAX_QUEUES {
            return Err(Error::OutOfRange("rx queue"));
        }
        let key = slot * MAX_QUEUES + queue;
        self.skel
            .maps
            .xsks
            .update(&key.to_ne_bytes(), &(fd as u32).to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf(format!("register XSK for slot {slot} queue {queue}")))
    }

    /// Removes the XSK of queue `queue` of `slot` from the XSKMAP (frames then take the fail
    /// path). A missing entry is not an error.
    pub fn unregister_xsk(&self, slot: u32, queue: u32) {
        let key = slot * MAX_QUEUES + queue;
        let _ = self.skel.maps.xsks.delete(&key.to_ne_bytes());
    }

    /// Reads the program's counters for `slot`, summed over CPUs.
    ///
    /// # Errors
    /// [`Error::Bpf`] when the lookup fails.
    pub fn iface_stats(&self, slot: u32) -> Result<IfStats, Error> {
        let mut out = IfStats::default();
        if let Some(per_cpu) = self
            .skel
            .maps
            .if_stats
            .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf(format!("read counters of slot {slot}")))?
        {
            for raw in per_cpu {
                out.add_raw(&raw);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sum_over_cpus() {
        let mut s = IfStats::default();
        let mut raw = Vec::new();
        for v in [1u64, 60, 2, 120, 3, 180] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        s.add_raw(&raw);
        s.add_raw(&raw);
        assert_eq!(s.to_xsk_frames, 2);
        assert_eq!(s.to_xsk_bytes, 120);
        assert_eq!(s.fail_open_frames, 4);
        assert_eq!(s.fail_closed_bytes, 360);
    }
}
