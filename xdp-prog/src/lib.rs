//! Warden's XDP program and its loader.
//!
//! The program (`src/bpf/warden.bpf.c`, compiled by libbpf-cargo in `build.rs`) is loaded once
//! per Warden process and attached to both interfaces of every inline pair. For each frame it
//! redirects to the AF_XDP socket (XSK) bound to the frame's rx queue. When none is bound it
//! drops the frame while Warden runs (counted as *unbound*: a queue Warden has not bound yet,
//! or one beyond [`MAX_QUEUES`]), and applies the pair's [`FailMode`] when Warden is stopped or
//! crashed. "Warden runs" is the XSK of the interface's *live queue* (set by
//! [`XdpProgram::configure_iface`]) being in the XSKMAP: the kernel removes a socket from the
//! map when it is closed, so that entry disappears with the process, however it ends. The
//! program is attached with the netlink API, not a BPF link, on purpose: it must stay attached
//! when Warden dies so that `fail_open` keeps the wire connected.
//!
//! Interfaces are addressed by a *slot* (`0..MAX_IFACES`) that Warden assigns; the XSKMAP key of
//! queue `q` of slot `s` is `s * MAX_QUEUES + q`.
//!
//! The program is loaded twice over the same maps (a *twin*), so that
//! [`XdpProgram::reattach`] can replace the program on an interface with an identical one: the
//! kernel calls the driver only when the program changes, and the veth driver gives the
//! program to rx queues added by `ethtool -L` only then (`veth_set_channels` enables new
//! queues without it, so their frames would bypass XDP).

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, RawFd};
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, Xdp, XdpFlags};

#[allow(clippy::all, clippy::undocumented_unsafe_blocks, missing_docs, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/warden.skel.rs"));
}
use skel::{WardenSkel, WardenSkelBuilder};

/// Number of interface slots (`WARDEN_MAX_IFACES` in the C program).
pub const MAX_IFACES: u32 = 256;
/// Number of rx queues per interface the XSKMAP has room for (`WARDEN_MAX_QUEUES`). Frames on
/// higher queues are dropped (counted as unbound) while Warden runs.
pub const MAX_QUEUES: u32 = 256;
const FLAG_FAIL_CLOSED: u32 = 1;

/// What the XDP program does with a frame when Warden is not running (no Warden socket in the
/// XSKMAP for the interface).
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
    /// Frames dropped while Warden runs because their rx queue has no Warden socket (not bound
    /// yet after a channel change, or beyond [`MAX_QUEUES`]).
    pub unbound_frames: u64,
    /// Bytes of those frames.
    pub unbound_bytes: u64,
}

impl IfStats {
    const FIELDS: usize = 8;

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
        self.unbound_frames += v[6];
        self.unbound_bytes += v[7];
    }
}

/// The loaded XDP program and its maps. One per process.
pub struct XdpProgram {
    skel: WardenSkel<'static>,
    /// The same program loaded again over `skel`'s maps (see the module docs).
    twin: WardenSkel<'static>,
    mode: AttachMode,
    /// Interfaces whose attached program is the twin.
    on_twin: Mutex<HashSet<u32>>,
}

/// The XDP actions [`XdpProgram::test_run`] reports (`enum xdp_action`).
pub mod action {
    /// Drop the frame.
    pub const DROP: u32 = 1;
    /// Pass it to the kernel stack.
    pub const PASS: u32 = 2;
    /// Redirect it (to an XSK or, in fail_open, to the peer interface).
    pub const REDIRECT: u32 = 4;
}

impl XdpProgram {
    /// Opens and loads the program (and its twin over the same maps) into the kernel (needs
    /// CAP_BPF / root).
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
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = WardenSkelBuilder::default().open(storage).map_err(bpf("open XDP object (twin)"))?;
        let (m, o) = (&skel.maps, &mut open.maps);
        o.iface_cfg.reuse_fd(m.iface_cfg.as_fd()).map_err(bpf("share iface_cfg with the twin"))?;
        o.xsks.reuse_fd(m.xsks.as_fd()).map_err(bpf("share xsks with the twin"))?;
        o.peers.reuse_fd(m.peers.as_fd()).map_err(bpf("share peers with the twin"))?;
        o.if_stats.reuse_fd(m.if_stats.as_fd()).map_err(bpf("share if_stats with the twin"))?;
        let twin = open.load().map_err(bpf("load XDP program (twin)"))?;
        Ok(Self { skel, twin, mode, on_twin: Mutex::new(HashSet::new()) })
    }

    fn twin_set(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.on_twin.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn flags(&self) -> XdpFlags {
        match self.mode {
            AttachMode::Native => XdpFlags::DRV_MODE,
            AttachMode::Generic => XdpFlags::SKB_MODE,
        }
    }

    /// The kernel's id of the loaded program (as `ip link` shows it; the twin has another).
    pub fn prog_id(&self) -> u32 {
        libbpf_rs::Program::id_from_fd(self.skel.progs.warden_xdp.as_fd()).unwrap_or(0)
    }

    fn twin_id(&self) -> u32 {
        libbpf_rs::Program::id_from_fd(self.twin.progs.warden_xdp.as_fd()).unwrap_or(0)
    }

    /// Attaches the program to `ifindex`, replacing whatever XDP program was there (for example
    /// one left behind by a Warden that was killed).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the driver refuses the attach mode.
    pub fn attach(&self, ifindex: u32) -> Result<(), Error> {
        Xdp::new(self.skel.progs.warden_xdp.as_fd())
            .attach(ifindex as i32, self.flags())
            .map_err(bpf(format!("attach XDP to ifindex {ifindex}")))?;
        self.twin_set().remove(&ifindex);
        Ok(())
    }

    /// Replaces the program on `ifindex` with its twin (or back): the same code over the same
    /// maps, swapped atomically, so the driver applies it again to every rx queue the interface
    /// has now (call after the interface gained queues; see the module docs).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the driver refuses the program.
    pub fn reattach(&self, ifindex: u32) -> Result<(), Error> {
        let mut on_twin = self.twin_set();
        let to_twin = !on_twin.contains(&ifindex);
        let prog = if to_twin { &self.twin } else { &self.skel };
        Xdp::new(prog.progs.warden_xdp.as_fd())
            .attach(ifindex as i32, self.flags())
            .map_err(bpf(format!("attach XDP to ifindex {ifindex} again")))?;
        if to_twin {
            on_twin.insert(ifindex);
        } else {
            on_twin.remove(&ifindex);
        }
        Ok(())
    }

    /// Detaches the program from `ifindex` if it is this process's program or its twin (never
    /// removes somebody else's XDP program).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the query or the detach fails.
    pub fn detach(&self, ifindex: u32) -> Result<(), Error> {
        let xdp = Xdp::new(self.skel.progs.warden_xdp.as_fd());
        let attached = xdp
            .query_id(ifindex as i32, self.flags())
            .map_err(bpf(format!("query XDP on ifindex {ifindex}")))?;
        if attached != 0 && (attached == self.prog_id() || attached == self.twin_id()) {
            xdp.detach(ifindex as i32, self.flags())
                .map_err(bpf(format!("detach XDP from ifindex {ifindex}")))?;
        }
        self.twin_set().remove(&ifindex);
        Ok(())
    }

    /// Runs the program once on `frame` as if it had arrived on rx queue `queue` of `ifindex`
    /// (`BPF_PROG_TEST_RUN`, in the caller's network namespace; the interface must have that
    /// queue) and returns its action ([`action`]). Nothing is redirected, but the program's
    /// counters count the frame. For tests and diagnostics.
    ///
    /// # Errors
    /// [`Error::Bpf`] when the kernel refuses the run (no such interface or queue).
    pub fn test_run(&self, ifindex: u32, queue: u32, frame: &[u8]) -> Result<u32, Error> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each); data_end is the frame length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        ctx[16..20].copy_from_slice(&queue.to_ne_bytes());
        let input =
            libbpf_rs::ProgramInput { context_in: Some(&mut ctx), data_in: Some(frame), ..Default::default() };
        let out = self
            .skel
            .progs
            .warden_xdp
            .test_run(input)
            .map_err(bpf(format!("test run on ifindex {ifindex} queue {queue}")))?;
        Ok(out.return_value)
    }

    /// Declares interface `ifindex` managed in `slot`, with `peer_ifindex` as the fail_open
    /// target and `live_queue` as the rx queue whose registered XSK tells the program that
    /// Warden runs (register it first, see [`Self::register_xsk`]): while it is in the XSKMAP,
    /// frames on queues without a socket are dropped and counted as unbound; once it is gone
    /// (Warden stopped or crashed), `fail` applies.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a slot `>= MAX_IFACES` or a live queue `>= MAX_QUEUES`;
    /// [`Error::Bpf`] when a map update fails.
    pub fn configure_iface(
        &self,
        ifindex: u32,
        slot: u32,
        peer_ifindex: u32,
        fail: FailMode,
        live_queue: u32,
    ) -> Result<(), Error> {
        if slot >= MAX_IFACES {
            return Err(Error::OutOfRange("interface slot"));
        }
        if live_queue >= MAX_QUEUES {
            return Err(Error::OutOfRange("live rx queue"));
        }
        let maps = &self.skel.maps;
        maps.peers
            .update(&slot.to_ne_bytes(), &peer_ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf(format!("set peer of slot {slot}")))?;
        let flags = if fail == FailMode::Closed { FLAG_FAIL_CLOSED } else { 0 };
        let mut cfg = [0u8; 12];
        cfg[..4].copy_from_slice(&slot.to_ne_bytes());
        cfg[4..8].copy_from_slice(&flags.to_ne_bytes());
        cfg[8..].copy_from_slice(&live_queue.to_ne_bytes());
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
        for v in [1u64, 60, 2, 120, 3, 180, 4, 240] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        s.add_raw(&raw);
        s.add_raw(&raw);
        assert_eq!(s.to_xsk_frames, 2);
        assert_eq!(s.to_xsk_bytes, 120);
        assert_eq!(s.fail_open_frames, 4);
        assert_eq!(s.fail_closed_bytes, 360);
        assert_eq!(s.unbound_frames, 8);
        assert_eq!(s.unbound_bytes, 480);
    }
}
