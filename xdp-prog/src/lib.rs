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
//! **Fast path.** While Warden runs, a frame of a flow direction that has an entry in the
//! `fast` map ([`FastKey`] → [`FastEntry`]) and that the entry's [`FastMode`] admits is
//! redirected in the kernel to the pair's peer interface (the same devmap as `fail_open`),
//! and counted in the entry ([`FastCounters`]); Warden inserts and removes the entries
//! (`dp/src/fastpath.rs`). Only interfaces flagged with [`XdpProgram::set_fast_path`] look
//! the map up, and only frames that need no inspection by their shape: untagged IPv4 without
//! options or fragmentation, or IPv6 whose first next header is TCP or UDP; TCP without SYN,
//! FIN, RST or URG; UDP whose length field matches the packet. [`fast_admits`] is the same
//! rule in Rust (tests compare the two).
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
const FLAG_FAST: u32 = 2;
/// `NETDEV_XDP_ACT_NDO_XMIT` (uapi `linux/netdev.h`): the device accepts frames redirected to
/// it by XDP (`ndo_xdp_xmit`). A veth has it only while its peer has GRO on or an XDP program.
const XDP_ACT_NDO_XMIT: u64 = 4;

/// Bytes of a [`FastKey`] in the map (`struct fast_key`).
pub const FAST_KEY_LEN: usize = 44;
/// Bytes of a fast path value in the map (`struct fast_val`).
const FAST_VAL_LEN: usize = 48;

/// What a fast path entry lets through in the kernel (`WARDEN_FAST_*` in the C program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastMode {
    /// Every TCP segment (without SYN, FIN, RST, URG) and every UDP datagram.
    All,
    /// TCP segments without payload (acknowledgments) only.
    AckOnly,
    /// TCP segments without payload, and those whose payload lies entirely within sequence
    /// numbers `lo..hi` (an opaque body the parser skips by count). `hi - lo` must be below
    /// 2^31 (sequence arithmetic, RFC 9293 §3.4).
    Range {
        /// First sequence number forwarded.
        lo: u32,
        /// Sequence number past the last byte forwarded.
        hi: u32,
    },
}

impl FastMode {
    fn code(self) -> (u32, u32, u32) {
        match self {
            FastMode::All => (1, 0, 0),
            FastMode::AckOnly => (2, 0, 0),
            FastMode::Range { lo, hi } => (3, lo, hi),
        }
    }
}

/// One direction of a flow as the fast path matches it: the interface slot it arrives on and
/// its 5-tuple as sent (ports in host order here; the map holds them in network order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FastKey {
    /// Interface slot the frames arrive on (a frame from the other side never matches).
    pub slot: u32,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Source address: IPv4 as `V4`, IPv6 as `V6`.
    pub src: std::net::IpAddr,
    /// Destination address (same family as `src`).
    pub dst: std::net::IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl FastKey {
    /// The key as the map stores it (`struct fast_key`, every pad byte 0).
    pub fn to_bytes(&self) -> [u8; FAST_KEY_LEN] {
        let mut b = [0u8; FAST_KEY_LEN];
        b[..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4] = self.proto;
        let put = |b: &mut [u8], a: &std::net::IpAddr| match a {
            std::net::IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
            std::net::IpAddr::V6(v) => b.copy_from_slice(&v.octets()),
        };
        b[5] = if self.src.is_ipv4() { 4 } else { 6 };
        put(&mut b[8..24], &self.src);
        put(&mut b[24..40], &self.dst);
        b[40..42].copy_from_slice(&self.sport.to_be_bytes());
        b[42..44].copy_from_slice(&self.dport.to_be_bytes());
        b
    }
}

/// What the fast path counted for one entry (one flow direction) since it was inserted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastCounters {
    /// Frames redirected in the kernel.
    pub packets: u64,
    /// Their bytes (L2 frame length, no FCS: as Warden counts).
    pub bytes: u64,
    /// `CLOCK_MONOTONIC_COARSE` time of the latest one (ns; 0: none yet).
    pub last_ns: u64,
}

impl FastCounters {
    fn of(v: &[u8; FAST_VAL_LEN]) -> Self {
        let u = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_ne_bytes(b)
        };
        FastCounters { packets: u(16), bytes: u(24), last_ns: u(32) }
    }
}

/// The fast path's rule for one frame, as the XDP program applies it: whether an entry of
/// mode `mode` admits `frame` (an Ethernet frame; `None` when the frame is not a shape the
/// program looks up at all), and the key it is looked up with (slot 0: the caller's slot
/// goes into [`FastKey::slot`]). Used by Warden to tell a frame the kernel would have
/// forwarded (one queued before its entry was inserted) from one it hands up on purpose.
pub fn fast_admits(frame: &[u8], mode: FastMode) -> Option<(FastKey, bool)> {
    let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    if frame.len() < 14 {
        return None;
    }
    let l3 = &frame[14..];
    let (proto, src, dst, l4, l4len) = match be16(frame, 12) {
        0x0800 => {
            if l3.len() < 20 || l3[0] != 0x45 || be16(l3, 6) & 0x3fff != 0 {
                return None;
            }
            let tot = usize::from(be16(l3, 2));
            if tot < 20 || tot > l3.len() {
                return None;
            }
            let a = |i: usize| std::net::IpAddr::from([l3[i], l3[i + 1], l3[i + 2], l3[i + 3]]);
            (l3[9], a(12), a(16), &l3[20..tot], tot - 20)
        }
        0x86dd => {
            if l3.len() < 40 || l3[0] >> 4 != 6 {
                return None;
            }
            let plen = usize::from(be16(l3, 4));
            if 40 + plen > l3.len() {
                return None;
            }
            let a = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&l3[i..i + 16]);
                std::net::IpAddr::from(o)
            };
            (l3[6], a(8), a(24), &l3[40..40 + plen], plen)
        }
        _ => return None,
    };
    let (sport, dport, ok) = match proto {
        6 => {
            if l4.len() < 20 {
                return None;
            }
            let doff = usize::from(l4[12] >> 4) * 4;
            // FIN 0x01, SYN 0x02, RST 0x04, URG 0x20.
            if doff < 20 || doff > l4len || l4[13] & 0x27 != 0 {
                return None;
            }
            let payload = (l4len - doff) as u32;
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let ok = match mode {
                FastMode::All => true,
                FastMode::AckOnly => payload == 0,
                FastMode::Range { lo, hi } => {
                    let span = hi.wrapping_sub(lo);
                    payload == 0
                        || (seq.wrapping_sub(lo) <= span && seq.wrapping_add(payload).wrapping_sub(lo) <= span)
                }
            };
            (be16(l4, 0), be16(l4, 2), ok)
        }
        17 => {
            if l4.len() < 8 || usize::from(be16(l4, 4)) != l4len {
                return None;
            }
            (be16(l4, 0), be16(l4, 2), mode == FastMode::All)
        }
        _ => return None,
    };
    Some((FastKey { slot: 0, proto, src, dst, sport, dport }, ok))
}

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
    /// Frames the fast path redirected to the peer in the kernel (flows Warden decided).
    pub fast_frames: u64,
    /// Bytes of those frames.
    pub fast_bytes: u64,
}

impl IfStats {
    const FIELDS: usize = 10;

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
        self.fast_frames += v[8];
        self.fast_bytes += v[9];
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

/// The fast path map, as a worker uses it (its own descriptor of the map: `Send`, no lock).
#[derive(Debug)]
pub struct FastTable {
    map: libbpf_rs::MapHandle,
}

impl FastTable {
    /// Entries the fast path map has room for (flow directions).
    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Inserts (or replaces) the fast path entry of `key` with `mode` and zero counters; with
    /// `src_mac`, only frames from that source MAC match it (the others go to Warden).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the map refuses it (full: `E2BIG`).
    pub fn insert(&self, key: &FastKey, mode: FastMode, src_mac: Option<[u8; 6]>) -> Result<(), Error> {
        let (m, lo, hi) = mode.code();
        let mut v = [0u8; FAST_VAL_LEN];
        v[..4].copy_from_slice(&m.to_ne_bytes());
        v[4..8].copy_from_slice(&lo.to_ne_bytes());
        v[8..12].copy_from_slice(&hi.to_ne_bytes());
        if let Some(mac) = src_mac {
            v[12..16].copy_from_slice(&1u32.to_ne_bytes());
            v[40..46].copy_from_slice(&mac);
        }
        self.map
            .update(&key.to_bytes(), &v, MapFlags::ANY)
            .map_err(bpf("insert a fast path entry"))
    }

    /// The counters of the fast path entry of `key` (`None`: no such entry). One system call,
    /// no allocation.
    ///
    /// # Errors
    /// [`Error::Bpf`] when the lookup fails.
    pub fn read(&self, key: &FastKey) -> Result<Option<FastCounters>, Error> {
        let mut v = [0u8; FAST_VAL_LEN];
        let found = self.map
            .lookup_into(&key.to_bytes(), &mut v, MapFlags::ANY)
            .map_err(bpf("read a fast path entry"))?;
        Ok(found.then(|| FastCounters::of(&v)))
    }

    /// Removes the fast path entry of `key` and returns its last counters (`None`: no such
    /// entry). One system call. A frame the program matched on another CPU just before may
    /// still be added to the removed entry (a race of nanoseconds).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the kernel refuses.
    pub fn remove(&self, key: &FastKey) -> Result<Option<FastCounters>, Error> {
        let mut v = [0u8; FAST_VAL_LEN];
        let found = self.map
            .lookup_into_and_delete(&key.to_bytes(), &mut v)
            .map_err(bpf("remove a fast path entry"))?;
        Ok(found.then(|| FastCounters::of(&v)))
    }

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
    /// CAP_BPF / root), with no room for fast path entries ([`Self::load_with_fast`]).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the kernel rejects the program or the maps.
    pub fn load(mode: AttachMode) -> Result<Self, Error> {
        Self::load_with_fast(mode, 0)
    }

    /// As [`Self::load`], with room for `fast_entries` fast path entries (flow directions;
    /// preallocated in the kernel, about 130 bytes each).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the kernel rejects the program or the maps.
    pub fn load_with_fast(mode: AttachMode, fast_entries: u32) -> Result<Self, Error> {
        // The skeleton borrows its object storage for as long as it lives; the program lives for
        // the whole process, so the storage is leaked once at start-up.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = WardenSkelBuilder::default().open(storage).map_err(bpf("open XDP object"))?;
        open.maps.fast.set_max_entries(fast_entries.max(2)).map_err(bpf("size the fast path map"))?;
        let skel = open.load().map_err(bpf("load XDP program"))?;
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = WardenSkelBuilder::default().open(storage).map_err(bpf("open XDP object (twin)"))?;
        let (m, o) = (&skel.maps, &mut open.maps);
        o.iface_cfg.reuse_fd(m.iface_cfg.as_fd()).map_err(bpf("share iface_cfg with the twin"))?;
        o.xsks.reuse_fd(m.xsks.as_fd()).map_err(bpf("share xsks with the twin"))?;
        o.peers.reuse_fd(m.peers.as_fd()).map_err(bpf("share peers with the twin"))?;
        o.if_stats.reuse_fd(m.if_stats.as_fd()).map_err(bpf("share if_stats with the twin"))?;
        o.fast.set_max_entries(fast_entries.max(2)).map_err(bpf("size the fast path map (twin)"))?;
        o.fast.reuse_fd(m.fast.as_fd()).map_err(bpf("share fast with the twin"))?;
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

    /// Turns the fast path on or off for frames arriving on `ifindex` (configured already with
    /// [`Self::configure_iface`]): while off, the program does not look the fast path map up
    /// for them (they go to their XSK).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the interface is not configured or the update fails.
    pub fn set_fast_path(&self, ifindex: u32, on: bool) -> Result<(), Error> {
        let maps = &self.skel.maps;
        let mut cfg = [0u8; 12];
        let found = maps
            .iface_cfg
            .lookup_into(&ifindex.to_ne_bytes(), &mut cfg, MapFlags::ANY)
            .map_err(bpf(format!("read the configuration of ifindex {ifindex}")))?;
        if !found {
            return Err(Error::OutOfRange("interface not configured"));
        }
        let mut flags = u32::from_ne_bytes([cfg[4], cfg[5], cfg[6], cfg[7]]);
        if on {
            flags |= FLAG_FAST;
        } else {
            flags &= !FLAG_FAST;
        }
        cfg[4..8].copy_from_slice(&flags.to_ne_bytes());
        maps.iface_cfg
            .update(&ifindex.to_ne_bytes(), &cfg, MapFlags::EXIST)
            .map_err(bpf(format!("set the fast path of ifindex {ifindex}")))
    }

    /// Whether frames redirected in the kernel to `ifindex` are transmitted: generic XDP
    /// always; native XDP when the device announces `ndo_xdp_xmit` in its XDP features (a
    /// veth only while its peer has GRO on or an XDP program: otherwise the kernel drops
    /// what is redirected to it). `false` when the query fails.
    pub fn accepts_redirects(&self, ifindex: u32) -> bool {
        if self.mode == AttachMode::Generic {
            return true;
        }
        Xdp::new(self.skel.progs.warden_xdp.as_fd())
            .query(ifindex as i32, XdpFlags::empty())
            .map(|q| q.feature_flags & XDP_ACT_NDO_XMIT != 0)
            .unwrap_or(false)
    }

    /// A handle on the fast path map for a worker thread ([`FastTable`]).
    ///
    /// # Errors
    /// [`Error::Bpf`] when the map's descriptor cannot be duplicated.
    pub fn fast_table(&self) -> Result<FastTable, Error> {
        let map = libbpf_rs::MapHandle::try_from(&self.skel.maps.fast).map_err(bpf("open the fast path map"))?;
        Ok(FastTable { map })
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
        for v in [1u64, 60, 2, 120, 3, 180, 4, 240, 5, 300] {
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
        assert_eq!((s.fast_frames, s.fast_bytes), (10, 600));
    }

    fn tcp4(flags: u8, seq: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let tot = (40 + payload) as u16;
        f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0x10, 0, 0, 0, 0, 0]);
        f.resize(f.len() + payload, 0xab);
        f
    }

    #[test]
    fn fast_keys_are_laid_out_as_the_c_struct() {
        let k = FastKey {
            slot: 3,
            proto: 6,
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: 40000,
            dport: 80,
        };
        let b = k.to_bytes();
        assert_eq!(&b[..8], &[3, 0, 0, 0, 6, 4, 0, 0]);
        assert_eq!(&b[8..12], &[198, 18, 0, 1]);
        assert!(b[12..24].iter().all(|x| *x == 0));
        assert_eq!(&b[24..28], &[198, 18, 0, 2]);
        assert_eq!(&b[40..], &[0x9c, 0x40, 0, 80]);
        let k6 = FastKey { src: "2001:db8::1".parse().unwrap(), dst: "2001:db8::2".parse().unwrap(), ..k };
        let b = k6.to_bytes();
        assert_eq!(b[5], 6);
        assert_eq!(b[23], 1);
        assert_eq!(b[39], 2);
    }

    #[test]
    fn fast_rule_admits_by_mode_and_hands_up_control_segments() {
        const ACK: u8 = 0x10;
        let (key, ok) = fast_admits(&tcp4(ACK, 1000, 100), FastMode::All).unwrap();
        assert!(ok);
        assert_eq!((key.sport, key.dport, key.proto), (40000, 80, 6));
        for flags in [0x02 | ACK, 0x01 | ACK, 0x04, 0x20 | ACK] {
            assert!(fast_admits(&tcp4(flags, 1000, 0), FastMode::All).is_none(), "flags {flags:#x}");
        }
        assert!(!fast_admits(&tcp4(ACK, 1000, 1), FastMode::AckOnly).unwrap().1);
        assert!(fast_admits(&tcp4(ACK, 1000, 0), FastMode::AckOnly).unwrap().1);
        let r = FastMode::Range { lo: 1000, hi: 2000 };
        assert!(fast_admits(&tcp4(ACK, 1000, 1000), r).unwrap().1);
        assert!(!fast_admits(&tcp4(ACK, 1000, 1001), r).unwrap().1, "past hi");
        assert!(!fast_admits(&tcp4(ACK, 999, 10), r).unwrap().1, "before lo");
        assert!(fast_admits(&tcp4(ACK, 5, 0), r).unwrap().1, "no payload");
        let wrap = FastMode::Range { lo: u32::MAX - 10, hi: 100 };
        assert!(fast_admits(&tcp4(ACK, u32::MAX - 5, 50), wrap).unwrap().1, "across the wrap");
        // IPv4 options, fragments, a truncated packet: not looked up.
        let mut opt = tcp4(ACK, 1000, 0);
        opt[14] = 0x46;
        assert!(fast_admits(&opt, FastMode::All).is_none());
        let mut frag = tcp4(ACK, 1000, 0);
        frag[20] = 0x20;
        assert!(fast_admits(&frag, FastMode::All).is_none());
        let mut short = tcp4(ACK, 1000, 10);
        short.truncate(short.len() - 1);
        assert!(fast_admits(&short, FastMode::All).is_none());
    }
}
