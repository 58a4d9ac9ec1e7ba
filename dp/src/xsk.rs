//! AF_XDP sockets (XSKs) and their UMEM: the only module with `unsafe` code.
//!
//! A [`Group`] is one UMEM shared by the XSKs of one inline pair that one worker serves: one
//! [`Port`] per (interface, rx queue), each with its own fill and completion rings (required when
//! a UMEM is shared across devices; the shared-UMEM bind flag goes on every socket after the
//! first). Because both sides live in one UMEM, forwarding is zero-copy in user space: the rx
//! descriptor of a frame received on side A is put unchanged on the tx ring of side B.
//!
//! Frame ownership rule (the safety contract of every access to UMEM memory below): a frame
//! handed to a fill or tx ring belongs to the kernel and is not touched until it comes back
//! through an rx or completion ring. The group's free list, the fill rings, the rx rings, the tx
//! rings and the completion rings partition the UMEM frames; a frame is in exactly one of them
//! or in the hands of the worker: for the duration of one batch, or, for an IP fragment, until
//! its datagram is released by reassembly (bounded by `[defrag] max_frames`).
//!
//! Binding uses no copy/zero-copy flag, so the kernel takes zero-copy where the driver offers it
//! and copy mode elsewhere (veth and tap: copy mode). `XDP_USE_NEED_WAKEUP` is always set: the
//! worker kicks the kernel once per batch, only when the ring says so.

use std::num::NonZeroU32;
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
    User,
};

/// Bytes per UMEM frame. 4096 leaves room for a 1500-byte MTU frame plus headroom, and for
/// jumbo frames up to about 3.5 KB.
pub const FRAME_SIZE: u32 = 4096;

/// Largest frame that fits a UMEM frame after the kernel's XDP headroom (256 bytes).
pub const MAX_FRAME_LEN: usize = (FRAME_SIZE - 256) as usize;

/// Errors setting up sockets.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A system call failed; `step` says which.
    #[error("{step}: {errno}")]
    Sys {
        /// The step, e.g. "bind XSK on veth0 queue 0".
        step: String,
        /// The errno text.
        errno: String,
    },
}

fn sys(step: impl Into<String>) -> impl FnOnce(xdpilone::Errno) -> XskError {
    let step = step.into();
    move |e| XskError::Sys { step, errno: format!("{e}") }
}

/// Anonymous page-aligned memory registered as a UMEM. Unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is plain memory owned by one worker at a time; moving it between threads
// (control thread builds the group, the worker then owns it) is sound.
unsafe impl Send for Area {}

impl Area {
    fn new(len: usize) -> Result<Self, XskError> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XskError::Sys {
                step: format!("mmap {len} bytes of UMEM"),
                errno: std::io::Error::last_os_error().to_string(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| XskError::Sys {
            step: "mmap UMEM".into(),
            errno: "null mapping".into(),
        })?;
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `new`; the Umem and every socket using
        // it are dropped before the Area (field order in Group), so the kernel no longer uses it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Which side of the inline pair a port is on.
pub type Side = u8;

/// One XSK: one (interface, rx queue) with its four rings.
pub struct Port {
    /// Side of the pair (0 = `a`, 1 = `b`).
    pub side: Side,
    /// Interface slot (as in the XDP program's maps).
    pub slot: u16,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// Rx queue id.
    pub queue: u32,
    fq: FillQueue,
    cq: CompletionQueue,
    rx: RingRx,
    tx: RingTx,
    user: User,
    in_fill: u32,
    /// Times the fill ring was found empty when refilling.
    pub fill_empty: u64,
}

impl Port {
    /// The socket fd to put into the XSKMAP.
    pub fn fd(&self) -> i32 {
        self.rx.as_raw_fd()
    }

    /// Kernel statistics of this socket: (rx dropped, rx ring full). One getsockopt: call from
    /// the control path only.
    pub fn kernel_stats(&self) -> (u64, u64) {
        match self.user.statistics_v2() {
            Ok(s) => (s.rx_dropped, s.rx_ring_full),
            Err(_) => (0, 0),
        }
    }
}

/// Where one side of a group binds.
#[derive(Debug, Clone)]
pub struct SideSpec {
    /// Interface name (for error messages).
    pub name: String,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// Interface slot.
    pub slot: u16,
    /// Rx queues this group binds on this interface.
    pub queues: Vec<u32>,
}

/// One UMEM and its ports (see the module docs).
pub struct Group {
    // Field order matters for drop: ports (sockets) first, then the Umem, then the memory.
    /// The ports, side 0 first.
    pub ports: Vec<Port>,
    umem: Umem,
    area: Area,
    free: Vec<u64>,
    ring_size: u32,
    reserve: usize,
    /// Most frames one port's fill ring holds: the ring size, or an even share of the frames
    /// outside the reserve when the ports together would want more, so that no port starves
    /// the others (frames return to the free list in any order).
    fill_share: u32,
}

impl Group {
    /// Creates the UMEM (`frames` x [`FRAME_SIZE`] bytes) and binds one XSK per queue of both
    /// sides, each with `ring_size` entries in all four rings, and fills the fill rings.
    ///
    /// # Errors
    /// [`XskError::Sys`] naming the failing step (typically `bind` when the interface does not
    /// exist, is down, or another XSK holds the queue).
    pub fn open(sides: [&SideSpec; 2], frames: u32, ring_size: u32) -> Result<Self, XskError> {
        let len = frames as usize * FRAME_SIZE as usize;
        let area = Area::new(len)?;
        let cfg = UmemConfig {
            fill_size: ring_size,
            complete_size: ring_size,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        let slice = NonNull::slice_from_raw_parts(area.ptr, len);
        // SAFETY: `slice` is the page-aligned mapping owned by `area`, which outlives the Umem
        // (it is dropped after it, see the field order of Group).
        let umem = unsafe { Umem::new(cfg, slice) }.map_err(sys("register UMEM"))?;
        let mut ports = Vec::new();
        for (side, spec) in sides.iter().enumerate() {
            for &queue in &spec.queues {
                let first = ports.is_empty();
                ports.push(bind_port(&umem, ring_size, side as Side, spec, queue, first)?);
            }
        }
        let free = (0..u64::from(frames)).rev().map(|i| i * u64::from(FRAME_SIZE)).collect();
        // Keep some frames out of the fill rings for frames handed over by other workers.
        let reserve = (frames as usize / 8).clamp(16, 1024);
        let mut g = Group { ports, umem, area, free, ring_size, reserve, fill_share: ring_size };
        g.set_fill_share();
        g.refill();
        Ok(g)
    }

    fn set_fill_share(&mut self) {
        let frames = self.umem.len_frames() as usize;
        let share = frames.saturating_sub(self.reserve) / self.ports.len().max(1);
        self.fill_share = (share as u32).clamp(1, self.ring_size);
    }

    /// Binds one more XSK to this group's UMEM for each of `spec.queues` on side `side` (rx
    /// queues an interface gained after the group was opened) and fills their fill rings.
    /// Returns, per queue, the new port's index or why it could not be bound (the others are
    /// bound all the same).
    pub fn add_ports(&mut self, side: Side, spec: &SideSpec) -> Vec<Result<usize, XskError>> {
        let mut out = Vec::with_capacity(spec.queues.len());
        for &queue in &spec.queues {
            let first = self.ports.is_empty();
            out.push(bind_port(&self.umem, self.ring_size, side, spec, queue, first).map(|p| {
                self.ports.push(p);
                self.ports.len() - 1
            }));
        }
        self.set_fill_share();
        self.refill();
        out
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Reaps completions of every port into the free list and refills every fill ring,
    /// kicking the kernel only where the ring asks for it.
    pub fn recycle(&mut self) {
        for p in &mut self.ports {
            let mut rd = p.cq.complete(self.ring_size);
            while let Some(addr) = rd.read() {
                self.free.push(addr - addr % u64::from(FRAME_SIZE));
            }
            rd.release();
        }
        self.refill();
    }

    /// Moves free frames into the fill rings: first every port up to a quarter of its share
    /// (from frames beyond half the reserve), then up to its share (beyond the reserve), so a
    /// port whose ring is (nearly) empty, such as a queue bound later while the older ports'
    /// rings hold the frames, gets frames before the others are topped up.
    fn refill(&mut self) {
        for p in &mut self.ports {
            if p.in_fill == 0 {
                p.fill_empty += 1;
            }
        }
        let low = (self.fill_share / 4).max(1);
        for (target, keep) in [(low, self.reserve / 2), (self.fill_share, self.reserve)] {
            for p in &mut self.ports {
                let spare = self.free.len().saturating_sub(keep);
                let want = target.saturating_sub(p.in_fill).min(spare as u32);
                if want == 0 {
                    continue;
                }
                let n = {
                    let mut w = p.fq.fill(want);
                    let start = self.free.len() - w.capacity() as usize;
                    let n = w.insert(self.free[start..].iter().copied());
                    w.commit();
                    n
                };
                self.free.truncate(self.free.len() - n as usize);
                p.in_fill += n;
            }
        }
        for p in &mut self.ports {
            if p.fq.needs_wakeup() {
                p.fq.wake();
            }
        }
    }

    /// Takes up to `out.len()` received descriptors from port `port`. The frames now belong to
    /// the caller until passed to [`Group::transmit`] or [`Group::release`].
    pub fn receive(&mut self, port: usize, out: &mut [XdpDesc]) -> usize {
        let p = &mut self.ports[port];
        let mut rd = p.rx.receive(out.len() as u32);
        let mut n = 0;
        while let Some(d) = rd.read() {
            out[n] = d;
            n += 1;
        }
        rd.release();
        p.in_fill = p.in_fill.saturating_sub(n as u32);
        n
    }

    /// The bytes of a frame the caller owns (from [`Group::receive`] or [`Group::write`]).
    /// Returns an empty slice for a descriptor outside the UMEM (never produced by the kernel).
    pub fn frame(&self, d: &XdpDesc) -> &[u8] {
        let (start, len) = (d.addr as usize, d.len as usize);
        match start.checked_add(len) {
            Some(end) if end <= self.area.len => {
                // SAFETY: the range is inside the mapping (checked above); by the frame ownership
                // rule the kernel does not write this frame while the caller owns it, and no
                // mutable reference to it exists (`write` only touches frames taken from the
                // free list, which are disjoint from owned rx frames).
                unsafe { std::slice::from_raw_parts(self.area.ptr.as_ptr().add(start), len) }
            }
            _ => &[],
        }
    }

    /// Copies `data` into a free frame and returns its descriptor (the caller owns the frame),
    /// or `None` when no frame is free or `data` is too long.
    pub fn write(&mut self, data: &[u8]) -> Option<XdpDesc> {
        if data.len() > FRAME_SIZE as usize {
            return None;
        }
        let addr = self.free.pop()?;
        let start = addr as usize;
        if start + FRAME_SIZE as usize > self.area.len {
            return None;
        }
        // SAFETY: `addr` came from the free list, so neither the kernel nor any outstanding
        // slice refers to this frame; the range is inside the mapping (checked above).
        let dst = unsafe {
            std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(start), data.len())
        };
        dst.copy_from_slice(data);
        Some(XdpDesc { addr, len: data.len() as u32, options: 0 })
    }

    /// Puts `descs` on port `port`'s tx ring. Returns how many were queued; the caller must
    /// [`Group::release`] the rest (tx ring full) and call [`Group::kick_tx`] after the batch.
    pub fn transmit(&mut self, port: usize, descs: &[XdpDesc]) -> usize {
        if descs.is_empty() {
            return 0;
        }
        let p = &mut self.ports[port];
        // The ring serves a reservation from its cached view of the kernel's consumer index
        // first and refreshes it only when that view shows no room at all, so a short
        // reservation is retried once with a fresh view before anything counts as ring-full.
        let mut n = 0;
        for _ in 0..2 {
            let rest = &descs[n..];
            if rest.is_empty() {
                break;
            }
            let mut w = p.tx.transmit(rest.len() as u32);
            n += w.insert(rest.iter().copied()) as usize;
            w.commit();
        }
        n
    }

    /// Free entries of port `port`'s tx ring (as of the kernel's last published consumer index).
    pub fn tx_room(&self, port: usize) -> u32 {
        self.ring_size.saturating_sub(self.ports[port].tx.pending())
    }

    /// Returns frames the caller owns (dropped frames) to the free list.
    pub fn release(&mut self, descs: &[XdpDesc]) {
        for d in descs {
            self.free.push(d.addr - d.addr % u64::from(FRAME_SIZE));
        }
    }

    /// Kicks every tx ring that still holds frames (in copy mode the kernel sends at most 32
    /// frames per kick). Returns the number of frames still queued over all tx rings.
    pub fn kick_tx(&mut self) -> u32 {
        let mut queued = 0;
        for p in &mut self.ports {
            // One kick per 32 queued frames. The kernel publishes its consumer index lazily
            // (at the start of the next kick), so progress cannot be judged between kicks.
            let pending = p.tx.pending();
            // Copy mode transmits only inside the kick, whatever the need-wakeup flag says.
            if pending > 0 {
                for _ in 0..pending.div_ceil(32).min(64) {
                    p.tx.wake();
                }
            }
            queued += p.tx.pending();
        }
        queued
    }

    /// The Umem (kept for its lifetime; exposed for diagnostics).
    pub fn frames(&self) -> u32 {
        self.umem.len_frames()
    }
}

/// Creates an XSK on queue `queue` of `spec`'s interface, with `ring_size` entries in each of
/// its four rings, and binds it to `umem`: the UMEM's own socket when `first`, else a new socket
/// sharing the UMEM.
fn bind_port(umem: &Umem, ring_size: u32, side: Side, spec: &SideSpec, queue: u32, first: bool) -> Result<Port, XskError> {
    let what = format!("{} queue {queue}", spec.name);
    let mut info = IfInfo::invalid();
    info.from_ifindex(spec.ifindex).map_err(sys(format!("look up {}", spec.name)))?;
    info.set_queue(queue);
    // The first socket is the UMEM's own fd; later ones are new sockets bound with the
    // shared-UMEM flag (xdpilone sets it when the fds differ).
    let sock = if first { Socket::with_shared(&info, umem) } else { Socket::new(&info) }
        .map_err(sys(format!("create XSK for {what}")))?;
    let dev = umem.fq_cq(&sock).map_err(sys(format!("fill/completion rings for {what}")))?;
    let size = NonZeroU32::new(ring_size);
    // The kernel refuses any other flag next to XDP_SHARED_UMEM: later sockets inherit
    // need-wakeup (and copy/zero-copy) from the UMEM's first socket.
    let bind_flags = if first { SocketConfig::XDP_BIND_NEED_WAKEUP } else { 0 };
    let user = umem
        .rx_tx(&sock, &SocketConfig { rx_size: size, tx_size: size, bind_flags })
        .map_err(sys(format!("rx/tx rings for {what}")))?;
    let rx = user.map_rx().map_err(sys(format!("map rx ring of {what}")))?;
    let tx = user.map_tx().map_err(sys(format!("map tx ring of {what}")))?;
    umem.bind(&user).map_err(sys(format!("bind XSK on {what}")))?;
    let (fq, cq) = dev.into_parts();
    Ok(Port {
        side,
        slot: spec.slot,
        ifindex: spec.ifindex,
        queue,
        fq,
        cq,
        rx,
        tx,
        user,
        in_fill: 0,
        fill_empty: 0,
    })
}

/// What ended a [`wait_rx`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Woken {
    /// An rx ring has frames.
    pub rx: bool,
    /// The waker fd was signalled ([`crate::poll::Waker`]).
    pub waker: bool,
}

/// Sleeps in one poll(2) until one of `fds` (XSK fds, at most 255 are watched) has received
/// frames, `waker` (an eventfd; negative: none) is signalled, or `timeout_ms` passes (0: do not
/// wait). Used by an idle worker only; errors (EINTR) just end the wait, as a timeout.
pub fn wait_rx(fds: &[i32], waker: i32, timeout_ms: i32) -> Woken {
    const MAX: usize = 256;
    let mut p = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX];
    // Slot 0: the waker (poll(2) skips a negative fd), then the sockets.
    p[0] = libc::pollfd { fd: waker, events: libc::POLLIN, revents: 0 };
    let n = 1 + fds.len().min(MAX - 1);
    for (slot, &fd) in p[1..n].iter_mut().zip(fds.iter()) {
        slot.fd = fd;
        slot.events = libc::POLLIN;
    }
    // SAFETY: `p` is a valid array of `n` <= MAX initialised pollfd structs that lives across
    // the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if r <= 0 {
        return Woken::default();
    }
    Woken { rx: p[1..n].iter().any(|q| q.revents & libc::POLLIN != 0), waker: p[0].revents & libc::POLLIN != 0 }
}

/// Receive-only AF_PACKET sockets for monitor mode ([`crate::monitor`]): the three calls nix
/// has no safe form for (binding to an interface, `SOL_PACKET` options, `PACKET_STATISTICS`),
/// kept here so that the only hand-written `unsafe` stays in this module.
pub mod packet {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    /// Opens a non-blocking `AF_PACKET`/`SOCK_RAW` socket for every protocol (`ETH_P_ALL`),
    /// bound to interface `ifindex`: it receives the frames the interface receives and the
    /// frames sent out of it (`PACKET_OUTGOING`).
    ///
    /// # Errors
    /// socket(2) or bind(2) failed (not root / no CAP_NET_RAW, no such interface).
    pub fn open(ifindex: u32) -> io::Result<OwnedFd> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with constant arguments; the returned descriptor is checked and
        // owned by the OwnedFd only when valid.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, i32::from(proto))
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is an initialised sockaddr_ll that lives across the call, and the
        // length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// setsockopt(`SOL_PACKET`, `opt`, an int `value`) (`PACKET_VNET_HDR`, `PACKET_FANOUT`).
    ///
    /// # Errors
    /// The kernel refused the option (the errno).
    pub fn set_int(fd: BorrowedFd<'_>, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: the option value is a live c_int and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// getsockopt(`SOL_PACKET`, `opt`) of an int option (`PACKET_FANOUT`: the group id the
    /// kernel chose, its type and flags).
    ///
    /// # Errors
    /// The kernel refused (the errno).
    pub fn get_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and `len` is the size of `v`.
        let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_PACKET, opt, std::ptr::addr_of_mut!(v).cast(), &mut len) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v)
    }

    /// `PACKET_STATISTICS` since the previous call (the kernel resets them on read): frames
    /// the socket received and frames it dropped (receive buffer full), in that order.
    ///
    /// # Errors
    /// The kernel refused (the errno).
    pub fn statistics(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live and `len` is the size of `st`.
        let r = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, std::ptr::addr_of_mut!(st).cast(), &mut len)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.tp_packets, st.tp_drops))
    }
}
