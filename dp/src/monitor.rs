//! Monitor mode: receive-only capture of an interface's frames, in both directions, fed to the
//! same [`crate::inspect::Inspector`] as inline traffic; nothing is forwarded or dropped.
//!
//! **Source.** One `AF_PACKET` socket ([`Source`]) per worker serving the monitored interface,
//! bound to it for every protocol, so it gets the frames the interface receives
//! (`PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`, `PACKET_OTHERHOST`) and the frames
//! sent out of it (`PACKET_OUTGOING`): [`Dir::In`] and [`Dir::Out`]. The sockets of one
//! interface are one `PACKET_FANOUT` group of type `PACKET_FANOUT_HASH`, whose hash is the
//! kernel's symmetric flow hash (`__skb_get_hash_symmetric`: addresses and ports, both
//! directions alike), so every frame of a 5-tuple lands on one socket, in the order the kernel
//! saw them. The worker then hands the frame to the owner of its flow exactly as on the inline
//! path (`owners[owner_spread(key) % n]`, [`crate::worker`]), through the same SPSC ring for
//! the whole 5-tuple, so a flow's frames keep their order (the SYN before the SYN|ACK) and
//! meet one session table. The group id is the kernel's (`PACKET_FANOUT_FLAG_UNIQUEID`), so
//! no other program's group is joined by accident.
//!
//! **Batched receive.** `recvmmsg(2)` takes up to [`BATCH`] frames per system call into
//! buffers allocated once per socket ([`SLOT`] bytes each: a 64 KiB GSO/GRO frame fits), and
//! the worker sleeps in its one poll(2) on these sockets too ([`crate::poll`]).
//!
//! **Checksums and offloads.** The socket asks for a `virtio_net_hdr` before each frame
//! (`PACKET_VNET_HDR`). A frame the host sends with checksum offload (and, on veth, a frame
//! a namespace sent that way) carries only the pseudo-header sum in its TCP/UDP checksum
//! field (`CHECKSUM_PARTIAL`, flag `NEEDS_CSUM`); [`complete_checksum`] computes the
//! checksum the device would have written, so normalisation judges what the receiver gets.
//! A GSO (or GRO) frame is inspected as the one frame the interface handed over: its bytes go
//! to the streams and parsers whole, and it counts as one packet; records match inline
//! counts packet for packet only when the interface does no segmentation offload (as on a
//! veth whose sender has tx checksumming off, which turns TSO off too).
//!
//! **Kernel drops.** A socket whose receive buffer is full loses frames in the kernel;
//! `PACKET_STATISTICS` counts them ([`Source::kernel_stats`]), reported per interface as
//! `monitor_kernel_dropped`. The receive buffer is raised to [`RCVBUF`] bytes.
//!
//! **What monitor mode can promise.** It sees what crossed the interface; it cannot stop
//! anything. Sessions on monitored interfaces are evaluated as in alert mode: a workload in
//! protect mode gets `violation` where inline would have `denied` it, no exception policy or
//! threat action drops, and records, events and `list_interfaces` say `monitor`.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmmsg, LinkAddr, MsgFlags, MultiHeaders};

use crate::policy::{CompiledPolicy, Mode};
use crate::xsk::packet;

/// Frames taken per `recvmmsg(2)`.
pub const BATCH: usize = 32;

/// Bytes of the `virtio_net_hdr` before each frame (`PACKET_VNET_HDR`).
pub const VNET_HDR_LEN: usize = 10;

/// Bytes of one receive buffer: the virtio header and a 64 KiB frame (a GSO/GRO frame) with
/// its Ethernet and VLAN headers.
pub const SLOT: usize = VNET_HDR_LEN + 65536 + 64;

/// Receive buffer of each socket (bytes; `SO_RCVBUFFORCE`, so above `rmem_max`).
pub const RCVBUF: usize = 8 << 20;

/// `virtio_net_hdr.flags`: the checksum from `csum_start` is yet to be computed.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// Which way a frame crossed the monitored interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received on it (sent by whatever is behind the interface).
    In,
    /// Sent out of it (going to whatever is behind the interface).
    Out,
}

impl Dir {
    /// The direction of a frame from its `sll_pkttype`.
    pub fn of_pkttype(t: u8) -> Dir {
        if t == libc::PACKET_OUTGOING {
            Dir::Out
        } else {
            Dir::In
        }
    }

    /// 0 for [`Dir::In`], 1 for [`Dir::Out`] (the side index of the monitor's two slots).
    pub fn side(self) -> usize {
        match self {
            Dir::In => 0,
            Dir::Out => 1,
        }
    }
}

/// Completes the checksum of `frame` as the device would (checksum offload) when its
/// `virtio_net_hdr` `vnet` says it is partial: the ones' complement of the sum from
/// `csum_start` to the end, written at `csum_start + csum_offset` (RFC 1071; the field holds
/// the pseudo-header sum). A zero UDP checksum is written as 0xffff (RFC 768). Returns false
/// when the header's offsets do not fit the frame (the frame is left unchanged, and the
/// inspector will count a bad checksum).
pub fn complete_checksum(vnet: &[u8; VNET_HDR_LEN], frame: &mut [u8]) -> bool {
    if vnet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(u16::from_ne_bytes([vnet[6], vnet[7]]));
    let off = usize::from(u16::from_ne_bytes([vnet[8], vnet[9]]));
    let field = start + off;
    if field + 2 > frame.len() {
        return false;
    }
    let mut c = !crate::checksum::fold(crate::checksum::add(0, &frame[start..]));
    if c == 0 && off == 6 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The policy a monitored interface is evaluated under: `p` with every protect-mode workload
/// (and a protect `default_mode`) in alert mode, so a session protect mode would deny is a
/// `violation` and nothing counts as dropped (module docs). None when no workload is in protect
/// mode (then `p` itself applies).
pub fn alert_only(p: &CompiledPolicy) -> Option<CompiledPolicy> {
    if !p.policy().workloads.iter().any(|w| w.mode == Mode::Protect) {
        return None;
    }
    let mut q = p.policy().clone();
    for w in &mut q.workloads {
        if w.mode == Mode::Protect {
            w.mode = Mode::Alert;
        }
    }
    if q.default_mode == Mode::Protect {
        q.default_mode = Mode::Alert;
    }
    match CompiledPolicy::compile(&q) {
        Ok(c) => Some(c),
        Err(e) => {
            // Only modes changed, so this cannot fail for a policy that compiled.
            tracing::error!("monitor: alert-mode form of the policy does not compile: {e}");
            None
        }
    }
}

/// One receive-only socket on a monitored interface, with its batch buffers (allocated once).
pub struct Source {
    fd: OwnedFd,
    hdrs: MultiHeaders<LinkAddr>,
    buf: Vec<u8>,
    /// (bytes received with the virtio header, direction) of each frame of the last batch.
    got: [(usize, Dir); BATCH],
    /// Frames whose virtio header did not fit them (counted, inspected unchanged).
    pub bad_vnet: u64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("fd", &self.fd).finish_non_exhaustive()
    }
}

/// Opens `n` sockets on interface `ifindex`, joined in one `PACKET_FANOUT_HASH` group when
/// `n > 1` (module docs). Socket `i` is for the `i`-th worker serving the interface, which
/// makes its [`Source`] (whose batch headers hold pointers and stay on that thread).
///
/// # Errors
/// A socket could not be opened, bound, given its options or joined to the group (not root,
/// no such interface); the message names the step.
pub fn open_group(ifindex: u32, n: usize) -> Result<Vec<OwnedFd>, String> {
    let mut out = Vec::with_capacity(n);
    let mut group: Option<libc::c_int> = None;
    for i in 0..n.max(1) {
        let fd = packet::open(ifindex).map_err(|e| format!("AF_PACKET socket on ifindex {ifindex}: {e}"))?;
        packet::set_int(fd.as_fd(), libc::PACKET_VNET_HDR, 1).map_err(|e| format!("PACKET_VNET_HDR: {e}"))?;
        if let Err(e) = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF) {
            tracing::warn!("monitor socket: SO_RCVBUFFORCE {RCVBUF}: {e} (the default receive buffer stays)");
        }
        if n > 1 {
            let arg = match group {
                None => (libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
                Some(id) => (libc::PACKET_FANOUT_HASH << 16) | (id as u32 & 0xffff),
            };
            packet::set_int(fd.as_fd(), libc::PACKET_FANOUT, arg as libc::c_int)
                .map_err(|e| format!("PACKET_FANOUT (socket {i} of {n}): {e}"))?;
            if group.is_none() {
                let v = packet::get_int(fd.as_fd(), libc::PACKET_FANOUT).map_err(|e| format!("PACKET_FANOUT id: {e}"))?;
                group = Some(v & 0xffff);
            }
        }
        // Counters start now: what the socket queued before it was a member is not ours.
        let _ = packet::statistics(fd.as_fd());
        out.push(fd);
    }
    Ok(out)
}

impl Source {
    /// A source over a socket from [`open_group`], with its batch buffers
    /// ([`BATCH`] x [`SLOT`] bytes, about 2 MiB).
    pub fn new(fd: OwnedFd) -> Source {
        Source {
            fd,
            hdrs: MultiHeaders::preallocate(BATCH, None),
            buf: vec![0; BATCH * SLOT],
            got: [(0, Dir::In); BATCH],
            bad_vnet: 0,
        }
    }

    /// The socket (for poll(2)).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receives up to `max` (at most [`BATCH`]) frames without waiting: one system call.
    /// Returns how many; read them with [`Self::frame`]. Errors (EAGAIN: nothing queued;
    /// ENETDOWN: the interface went down) are 0 frames.
    pub fn receive(&mut self, max: usize) -> usize {
        let max = max.clamp(1, BATCH);
        let mut chunks = self.buf.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| match chunks.next() {
            Some(c) => [IoSliceMut::new(c)],
            None => [IoSliceMut::new(&mut [])],
        });
        let Ok(res) = recvmmsg(self.fd.as_raw_fd(), &mut self.hdrs, iovs[..max].iter_mut(), MsgFlags::MSG_DONTWAIT, None)
        else {
            return 0;
        };
        let mut n = 0;
        for m in res {
            let dir = m.address.map_or(Dir::In, |a| Dir::of_pkttype(a.pkttype()));
            self.got[n] = (m.bytes.min(SLOT), dir);
            n += 1;
        }
        n
    }

    /// Frame `i` of the last batch: its direction and its bytes (Ethernet header first), with
    /// a partial checksum completed ([`complete_checksum`]).
    pub fn frame(&mut self, i: usize) -> (Dir, &[u8]) {
        let (len, dir) = self.got[i];
        let slot = &mut self.buf[i * SLOT..i * SLOT + len];
        if len < VNET_HDR_LEN {
            return (dir, &[]);
        }
        let (hdr, frame) = slot.split_at_mut(VNET_HDR_LEN);
        let mut vnet = [0u8; VNET_HDR_LEN];
        vnet.copy_from_slice(hdr);
        if !complete_checksum(&vnet, frame) {
            self.bad_vnet += 1;
        }
        (dir, frame)
    }

    /// `PACKET_STATISTICS` since the previous call: frames the kernel queued to this socket
    /// and frames it dropped because the socket's buffer was full ((0, 0) if unreadable).
    pub fn kernel_stats(&self) -> (u64, u64) {
        packet::statistics(self.fd.as_fd()).map_or((0, 0), |(p, d)| (u64::from(p), u64::from(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    /// A UDP/IPv4 frame from 198.18.200.1:5000 to 198.18.200.2:53 with `payload`, its
    /// checksum field holding only the pseudo-header sum (as with checksum offload), and the
    /// virtio header the kernel gives it.
    fn partial_udp(payload: &[u8]) -> ([u8; VNET_HDR_LEN], Vec<u8>) {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (20 + 8 + payload.len()) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 200, 1]);
        f[30..34].copy_from_slice(&[198, 18, 200, 2]);
        crate::checksum::fill_ipv4_header(&mut f[14..34]);
        f[34..36].copy_from_slice(&5000u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        // Pseudo-header sum, not complemented, as the stack leaves it for the device.
        let mut s = crate::checksum::add(0, &f[26..34]);
        s += 17 + u64::from(8 + payload.len() as u16);
        let pseudo = crate::checksum::fold(s);
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut v = [0u8; VNET_HDR_LEN];
        v[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        v[6..8].copy_from_slice(&34u16.to_ne_bytes());
        v[8..10].copy_from_slice(&6u16.to_ne_bytes());
        (v, f)
    }

    fn udp_checksum_ok(frame: &[u8]) -> bool {
        let f = wire::decode(frame).expect("decodes");
        crate::checksum::transport_ok(f.ip.as_ref().expect("ip")).is_ok()
    }

    #[test]
    fn a_partial_checksum_is_completed_as_the_device_would() {
        for payload in [&b"warden"[..], b"odd", b""] {
            let (v, mut f) = partial_udp(payload);
            assert!(!udp_checksum_ok(&f), "a partial checksum does not verify");
            assert!(complete_checksum(&v, &mut f));
            assert!(udp_checksum_ok(&f), "completed checksum of {payload:?}");
        }
        // No NEEDS_CSUM: the frame is left alone.
        let (mut v, f0) = partial_udp(b"x");
        v[0] = 0;
        let mut f = f0.clone();
        assert!(complete_checksum(&v, &mut f));
        assert_eq!(f, f0);
    }

    #[test]
    fn offsets_past_the_frame_are_refused_without_writing() {
        let (mut v, f0) = partial_udp(b"abc");
        v[6..8].copy_from_slice(&(f0.len() as u16).to_ne_bytes());
        let mut f = f0.clone();
        assert!(!complete_checksum(&v, &mut f));
        assert_eq!(f, f0);
        v[6..8].copy_from_slice(&u16::MAX.to_ne_bytes());
        v[8..10].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(!complete_checksum(&v, &mut f));
    }

    #[test]
    fn the_monitor_policy_reads_protect_as_alert() {
        let text = r#"
[[workload]]
id = "web"
ips = ["198.18.0.2"]
mode = "protect"
[[workload]]
id = "db"
ips = ["198.18.0.3"]
mode = "learn"
[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["80"]
action = "allow"
"#;
        let p = CompiledPolicy::compile(&crate::policy::Policy::from_toml(text).unwrap()).unwrap();
        let a = alert_only(&p).expect("a protect workload: an alert form");
        let modes = |c: &CompiledPolicy| c.policy().workloads.iter().map(|w| w.mode).collect::<Vec<_>>();
        assert_eq!(modes(&a), [Mode::Alert, Mode::Learn]);
        assert_eq!(a.rules().len(), p.rules().len());
        let db = p.workload_by_id("db");
        assert_eq!(a.workload_by_id("db"), db, "workload indices are unchanged");
        // Nothing in protect mode: the policy applies as it is.
        let q = CompiledPolicy::compile(&crate::policy::Policy::from_toml(&text.replace("protect", "alert")).unwrap()).unwrap();
        assert!(alert_only(&q).is_none());
    }

    #[test]
    fn directions_from_the_packet_type() {
        assert_eq!(Dir::of_pkttype(libc::PACKET_OUTGOING), Dir::Out);
        for t in [libc::PACKET_HOST, libc::PACKET_BROADCAST, libc::PACKET_MULTICAST, libc::PACKET_OTHERHOST] {
            assert_eq!(Dir::of_pkttype(t), Dir::In);
        }
        assert_eq!((Dir::In.side(), Dir::Out.side()), (0, 1));
    }

    /// Runs `f` on a thread in a network namespace of its own (with `lo` up and 198.18.200.1
    /// on it), so the test sees only its own frames; root only.
    fn in_own_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        assert!(nix::unistd::geteuid().is_root(), "monitor socket tests need root (CAP_NET_RAW, CAP_SYS_ADMIN)");
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            // A child forked from this thread starts in its network namespace.
            for args in [&["link", "set", "lo", "up"][..], &["addr", "add", "198.18.200.1/32", "dev", "lo"]] {
                let st = std::process::Command::new("ip").args(args).status().expect("ip");
                assert!(st.success(), "ip {args:?}");
            }
            f()
        })
        .join()
        .expect("test thread")
    }

    /// Receives on `srcs` until `want` frames arrived or 2 s passed; returns (socket index,
    /// direction, UDP source port, UDP destination port, checksum verifies) per frame.
    fn drain(srcs: &mut [Source], want: usize) -> Vec<(usize, Dir, u16, u16, bool)> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while out.len() < want && std::time::Instant::now() < deadline {
            let fds: Vec<i32> = srcs.iter().map(Source::fd).collect();
            crate::xsk::wait_rx(&fds, -1, 100);
            for (si, s) in srcs.iter_mut().enumerate() {
                let n = s.receive(BATCH);
                for i in 0..n {
                    let (dir, data) = s.frame(i);
                    let Ok(f) = wire::decode(data) else { continue };
                    let Some(ip) = f.ip.as_ref() else { continue };
                    if ip.proto != 17 {
                        continue;
                    }
                    let ok = crate::checksum::transport_ok(ip).is_ok();
                    out.push((si, dir, ip.sport, ip.dport, ok));
                }
            }
        }
        out
    }

    #[test]
    fn a_socket_sees_both_directions_with_complete_checksums() {
        let got = in_own_netns(|| {
            let lo = nix::net::if_::if_nametoindex("lo").unwrap();
            let mut srcs: Vec<Source> = open_group(lo, 1).unwrap().into_iter().map(Source::new).collect();
            let a = std::net::UdpSocket::bind("198.18.200.1:40001").unwrap();
            let b = std::net::UdpSocket::bind("198.18.200.1:40002").unwrap();
            for _ in 0..5 {
                a.send_to(b"monitor me", "198.18.200.1:40002").unwrap();
            }
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                b.recv_from(&mut buf).unwrap();
            }
            let got = drain(&mut srcs, 10);
            let (p, d) = srcs[0].kernel_stats();
            (got, p, d)
        });
        let (frames, queued, dropped) = got;
        // On lo every datagram is sent out of it and received on it.
        let out = frames.iter().filter(|f| f.1 == Dir::Out).count();
        let inc = frames.iter().filter(|f| f.1 == Dir::In).count();
        assert_eq!((out, inc), (5, 5), "{frames:?}");
        assert!(frames.iter().all(|f| (f.2, f.3) == (40001, 40002)), "{frames:?}");
        assert!(frames.iter().all(|f| f.4), "every checksum verifies after completion: {frames:?}");
        assert!(queued >= 10, "PACKET_STATISTICS counted {queued} frames");
        assert_eq!(dropped, 0);
    }

    #[test]
    fn a_fanout_group_keeps_each_flow_on_one_socket() {
        let frames = in_own_netns(|| {
            let lo = nix::net::if_::if_nametoindex("lo").unwrap();
            let mut srcs: Vec<Source> = open_group(lo, 3).unwrap().into_iter().map(Source::new).collect();
            let server = std::net::UdpSocket::bind("198.18.200.1:40100").unwrap();
            let mut clients = Vec::new();
            for i in 0..24u16 {
                let c = std::net::UdpSocket::bind(("198.18.200.1", 41000 + i)).unwrap();
                c.send_to(b"q", "198.18.200.1:40100").unwrap();
                clients.push(c);
            }
            let mut buf = [0u8; 16];
            for _ in 0..24 {
                let (_, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(b"a", from).unwrap();
            }
            drain(&mut srcs, 24 * 4)
        });
        assert_eq!(frames.len(), 24 * 4, "request and answer, each out and in: {frames:?}");
        let mut used = std::collections::BTreeSet::new();
        for port in 41000..41024u16 {
            let socks: std::collections::BTreeSet<usize> = frames
                .iter()
                .filter(|f| f.2 == port || f.3 == port)
                .map(|f| f.0)
                .collect();
            assert_eq!(socks.len(), 1, "flow from port {port} on sockets {socks:?}");
            used.extend(socks);
        }
        assert!(used.len() > 1, "24 flows spread over more than one socket: {used:?}");
    }
}
