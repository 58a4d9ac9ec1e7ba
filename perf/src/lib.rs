//! Warden perf rig (see perf/README.md): the generator, sink and in-kernel redirect used by
//! `perf/rig.sh`, and the helpers they share.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::Serialize;
use warden_dp::checksum;
use warden_dp::flow::Addr;

/// libbpf-rs skeletons of the rig's XDP programs (built from `src/bpf/` by `build.rs`).
#[allow(
    clippy::all,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]
pub mod skel {
    /// `src/bpf/redirect.bpf.c`: devmap redirect between the two interfaces of a pair.
    pub mod redirect {
        include!(concat!(env!("OUT_DIR"), "/redirect.skel.rs"));
    }
    /// `src/bpf/sink.bpf.c`: counts and drops every frame.
    pub mod sink {
        include!(concat!(env!("OUT_DIR"), "/sink.skel.rs"));
    }
}

/// Where `xdp-sink attach` pins the sink's counter map unless told otherwise.
pub const SINK_PIN: &str = "/sys/fs/bpf/wperf-sink-counts";

/// The kernel's index of interface `name` (in the caller's network namespace).
pub fn ifindex(name: &str) -> Result<i32> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let s = std::fs::read_to_string(&path).with_context(|| format!("no interface {name}"))?;
    s.trim().parse().with_context(|| format!("bad {path}"))
}

/// The MAC address of interface `name` (in the caller's network namespace).
pub fn iface_mac(name: &str) -> Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .with_context(|| format!("no interface {name}"))?;
    parse_mac(s.trim())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().with_context(|| format!("bad MAC {s}"))?;
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s}"))?;
    }
    if parts.next().is_some() {
        bail!("bad MAC {s}");
    }
    Ok(mac)
}

/// Source address of the generated frames (in 198.18.0.0/15, the benchmarking range).
pub const SRC_IP: [u8; 4] = [198, 18, 0, 1];
/// Destination address of the generated frames.
pub const DST_IP: [u8; 4] = [198, 19, 0, 1];

/// Builds an Ethernet/IPv4/UDP frame of exactly `len` bytes (no FCS), `SRC_IP:9 -> DST_IP:9`,
/// with correct IPv4 and UDP checksums and a zero payload.
pub fn udp_frame(len: usize, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Result<Vec<u8>> {
    udp_frame_from(len, src_mac, dst_mac, SRC_IP)
}

/// [`udp_frame`] from source address `src` (`src:9 -> DST_IP:9`).
pub fn udp_frame_from(len: usize, src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4]) -> Result<Vec<u8>> {
    const HDRS: usize = 14 + 20 + 8;
    if !(HDRS..=9000).contains(&len) {
        bail!("frame length {len} outside {HDRS}..=9000");
    }
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let udp_len = ip_len - 20;
    let ip = &mut f[14..34];
    ip[0] = 0x45; // version 4, 5-word header
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&DST_IP);
    checksum::fill_ipv4_header(ip);
    let udp = &mut f[34..];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    checksum::fill(&Addr::v4(src), &Addr::v4(DST_IP), 17, udp, 6);
    Ok(f)
}

/// Length of a frame built by [`syn_frame`]: Ethernet, IPv4 without options, TCP with one
/// MSS option (24 bytes).
pub const SYN_FRAME_LEN: usize = 14 + 20 + 24;

/// The fields of one TCP SYN that vary between frames of a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    /// Source IPv4 address.
    pub src: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination IPv4 address.
    pub dst: [u8; 4],
    /// Destination port.
    pub dport: u16,
    /// Initial sequence number.
    pub seq: u32,
}

/// Writes an Ethernet/IPv4/TCP SYN (MSS 1460, window 64240, TTL 64, correct IPv4 and TCP
/// checksums) into `buf[..SYN_FRAME_LEN]`. Panics if `buf` is shorter (a programming error:
/// callers pass UMEM frames of 4096 bytes).
pub fn syn_frame(buf: &mut [u8], src_mac: [u8; 6], dst_mac: [u8; 6], syn: &Syn) {
    let f = &mut buf[..SYN_FRAME_LEN];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(syn.seq as u16).to_be_bytes()); // identification
    ip[12..16].copy_from_slice(&syn.src);
    ip[16..20].copy_from_slice(&syn.dst);
    checksum::fill_ipv4_header(ip);
    let tcp = &mut f[34..58];
    tcp[0..2].copy_from_slice(&syn.sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&syn.dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&syn.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&[0; 4]);
    tcp[12] = 6 << 4; // data offset: 6 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[16..20].copy_from_slice(&[0; 4]); // checksum, urgent pointer
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    checksum::fill(&Addr::v4(syn.src), &Addr::v4(syn.dst), 6, tcp, 16);
}

/// Length of a frame built by [`tcp_frame`] with `payload` bytes: Ethernet, IPv4 without
/// options, TCP without options (20 bytes), the payload.
pub const fn tcp_frame_len(payload: usize) -> usize {
    14 + 20 + 20 + payload
}

/// One TCP segment between two IPv4 ends: addresses, ports, sequence and acknowledgment
/// numbers, flags ([`warden_dp::wire::tcpflag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// Source IPv4 address.
    pub src: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination IPv4 address.
    pub dst: [u8; 4],
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (sent as is; meaningful with ACK).
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
}

/// Writes an Ethernet/IPv4/TCP segment without TCP options carrying `payload` (window 64240,
/// TTL 64, correct IPv4 and TCP checksums) into `buf[..tcp_frame_len(payload.len())]` and
/// returns that length. Panics if `buf` is shorter or the frame is over 65535 bytes of IP
/// (a programming error: callers pass 4096-byte buffers and small payloads).
pub fn tcp_frame(buf: &mut [u8], src_mac: [u8; 6], dst_mac: [u8; 6], seg: &Seg, payload: &[u8]) -> usize {
    let len = tcp_frame_len(payload.len());
    let ip_len = u16::try_from(len - 14).expect("IP datagram over 65535 bytes");
    let f = &mut buf[..len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[12..16].copy_from_slice(&seg.src);
    ip[16..20].copy_from_slice(&seg.dst);
    checksum::fill_ipv4_header(ip);
    let tcp = &mut f[34..];
    tcp[0..2].copy_from_slice(&seg.sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&seg.dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = seg.flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[16..20].copy_from_slice(&[0; 4]); // checksum, urgent pointer
    tcp[20..].copy_from_slice(payload);
    checksum::fill(&Addr::v4(seg.src), &Addr::v4(seg.dst), 6, tcp, 16);
    len
}

/// Creates an AF_XDP socket on queue 0 of `iface` with a tx ring of 2048 entries and no rx
/// ring, bound in copy mode with need-wakeup, sharing `umem`'s fill/completion rings.
pub fn open_tx(
    umem: &xdpilone::Umem,
    iface: &str,
) -> Result<(xdpilone::DeviceQueue, xdpilone::RingTx, xdpilone::User), xdpilone::Errno> {
    open_tx_queue(umem, iface, 0)
}

/// [`open_tx`] on tx queue `queue` of `iface` (veth delivers it to the peer's rx queue of the
/// same number, when the peer has that many).
pub fn open_tx_queue(
    umem: &xdpilone::Umem,
    iface: &str,
    queue: u32,
) -> Result<(xdpilone::DeviceQueue, xdpilone::RingTx, xdpilone::User), xdpilone::Errno> {
    use xdpilone::{IfInfo, Socket, SocketConfig};
    let mut info = IfInfo::invalid();
    let name = std::ffi::CString::new(iface).map_err(|_| xdpilone::Errno::last_os_error())?;
    info.from_name(&name)?;
    info.set_queue(queue);
    let sock = Socket::with_shared(&info, umem)?;
    let device = umem.fq_cq(&sock)?;
    let config = SocketConfig {
        rx_size: None,
        tx_size: std::num::NonZeroU32::new(1 << 11),
        bind_flags: SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
    };
    let rxtx = umem.rx_tx(&sock, &config)?;
    let tx = rxtx.map_tx()?;
    umem.bind(&rxtx)?;
    Ok((device, tx, rxtx))
}

/// Per-CPU (busy, total) jiffies from `/proc/stat`, `cpu0` first; idle and iowait are not busy.
pub fn cpu_jiffies() -> Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let mut cpus = Vec::new();
    for line in stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
    {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum(); // user..steal; guest time is inside user
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        cpus.push((total - idle, total));
    }
    Ok(cpus)
}

/// The share of time each CPU was busy between two [`cpu_jiffies`] samples.
pub fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64)
        .collect()
}

/// The sink's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    /// Frames that reached the sink interface's XDP program.
    pub frames: u64,
    /// Their bytes (L2 length, no FCS).
    pub bytes: u64,
}

/// Reads the sink's counter map pinned at `pin` (see `xdp-sink attach`).
pub fn read_sink(pin: &Path) -> Result<SinkCounts> {
    let map = MapHandle::from_pinned_path(pin)
        .with_context(|| format!("open pinned sink map {}", pin.display()))?;
    let per_cpu = map
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("read sink counters")?
        .unwrap_or_default();
    let mut total = SinkCounts::default();
    for v in per_cpu {
        let word = |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        total.frames += word(0);
        total.bytes += word(1);
    }
    Ok(total)
}

/// Where a latency stamp starts in a [`udp_frame`] (its UDP payload): `"WPTS"`, the
/// CLOCK_MONOTONIC time in ns (little endian), and a word that keeps the UDP checksum right.
pub const STAMP_OFFSET: usize = 42;
/// Bytes of a stamp; frames shorter than `STAMP_OFFSET + STAMP_LEN` (56) are not stamped.
pub const STAMP_LEN: usize = 14;

/// Writes a latency stamp of time `ns` into a [`udp_frame`] (whose payload was zeros, or an
/// earlier stamp): the sink adds `now - ns` to its histogram. The payload's 16-bit words sum to
/// zero (one's complement), so the UDP checksum computed over a zero payload stays valid and
/// Warden inspects the frame as it would any other. Does nothing to a frame too short.
pub fn stamp(frame: &mut [u8], ns: u64) {
    let Some(s) = frame.get_mut(STAMP_OFFSET..STAMP_OFFSET + STAMP_LEN) else { return };
    s[0..4].copy_from_slice(b"WPTS");
    s[4..12].copy_from_slice(&ns.to_le_bytes());
    let mut sum: u32 = s[..12].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    s[12..14].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// CLOCK_MONOTONIC now, in ns (the clock of the sink's `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec the call writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Buckets of the sink's latency histogram (`sink.bpf.c`, map `lat`): 1024 of 1 µs, 64 of 1 ms
/// (from 1 ms), one for 65 ms or more (and stamps from the future).
pub const LAT_BUCKETS: usize = 1024 + 64 + 1;

/// Upper bound (µs) of latency bucket `i` (infinite for the last).
pub fn lat_upper_us(i: usize) -> f64 {
    match i {
        i if i < 1024 => (i + 1) as f64,
        i if i < 1024 + 64 => ((i - 1024 + 2) * 1000) as f64,
        _ => f64::INFINITY,
    }
}

/// The sink's latency histogram (frames per bucket, summed over CPUs); its map is pinned next
/// to the counters, at `<pin>-lat`.
pub fn read_latency(pin: &Path) -> Result<Vec<u64>> {
    let path = format!("{}-lat", pin.display());
    let map = MapHandle::from_pinned_path(&path).with_context(|| format!("open pinned latency map {path}"))?;
    let mut hist = vec![0u64; LAT_BUCKETS];
    for (i, h) in hist.iter_mut().enumerate() {
        let per_cpu = map
            .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
            .context("read latency histogram")?
            .unwrap_or_default();
        *h = per_cpu.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"))).sum();
    }
    Ok(hist)
}

/// The `q` quantile (0..=1) of a latency histogram, as its bucket's upper bound in µs; `None`
/// when empty.
pub fn lat_quantile(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some(lat_upper_us(i));
        }
    }
    Some(f64::INFINITY)
}

/// CPU time (ns) a thread has run so far: the first field of `/proc/<tid>/schedstat` (user and
/// system, at ns resolution).
pub fn task_cpu_ns(tid: u32) -> Result<u64> {
    let path = format!("/proc/{tid}/schedstat");
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    s.split_whitespace().next().and_then(|v| v.parse().ok()).with_context(|| format!("bad {path}"))
}

/// Per-CPU softirq jiffies from `/proc/stat`, `cpu0` first.
pub fn cpu_softirq_jiffies() -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    Ok(stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| l.split_whitespace().nth(7).and_then(|v| v.parse().ok()).unwrap_or(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_frames_keep_their_checksum_and_quantiles_read_buckets() {
        let mut f = udp_frame(64, [2; 6], [4; 6]).unwrap();
        for ns in [0, 1, 0xffff_ffff_ffff_ffff, 1_234_567_890_123, monotonic_ns()] {
            stamp(&mut f, ns);
            assert_eq!(&f[42..46], b"WPTS");
            assert_eq!(u64::from_le_bytes(f[46..54].try_into().unwrap()), ns);
            let d = warden_dp::wire::decode(&f).unwrap();
            assert_eq!(checksum::transport_ok(d.ip.as_ref().unwrap()), Ok(()), "stamp {ns}");
        }
        let mut short = udp_frame(50, [2; 6], [4; 6]).unwrap();
        stamp(&mut short, 5);
        assert_eq!(short, udp_frame(50, [2; 6], [4; 6]).unwrap());
        let mut h = vec![0u64; LAT_BUCKETS];
        h[9] = 50; // 9..10 us
        h[30] = 49; // 30..31 us
        h[1024 + 2] = 1; // 3..4 ms
        assert_eq!(lat_quantile(&h, 0.5), Some(10.0));
        assert_eq!(lat_quantile(&h, 0.99), Some(31.0));
        assert_eq!(lat_quantile(&h, 1.0), Some(4000.0));
        assert_eq!(lat_quantile(&[0; 4], 0.5), None);
    }

    #[test]
    fn udp_frame_checksums_verify() {
        for len in [64, 1500] {
            let f = udp_frame(len, [2; 6], [4; 6]).unwrap();
            assert_eq!(f.len(), len);
            // What Warden verifies, as the receiving host does.
            let d = warden_dp::wire::decode(&f).unwrap();
            assert!(checksum::ipv4_header_ok(&d));
            assert_eq!(checksum::transport_ok(d.ip.as_ref().unwrap()), Ok(()));
        }
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
    }

    #[test]
    fn syn_frame_decodes_and_checksums_verify() {
        let syn = Syn { src: [198, 19, 7, 9], sport: 40123, dst: [198, 18, 0, 2], dport: 443, seq: 0xdead_beef };
        let mut buf = [0xaau8; 128];
        syn_frame(&mut buf, [2; 6], [4; 6], &syn);
        let f = &buf[..SYN_FRAME_LEN];
        // Warden's decoder reads it as the SYN it is, with the checksums a host accepts.
        let d = warden_dp::wire::decode(f).unwrap();
        assert!(checksum::ipv4_header_ok(&d));
        assert_eq!(checksum::transport_ok(d.ip.as_ref().unwrap()), Ok(()));
        let ip = d.ip.unwrap();
        assert_eq!((ip.sport, ip.dport, ip.src.to_string(), ip.dst.to_string()), (40123, 443, "198.19.7.9".into(), "198.18.0.2".into()));
        assert!(matches!(ip.l4, warden_dp::wire::L4::Tcp { flags: 0x02, seq: 0xdead_beef, .. }));
    }

    #[test]
    fn tcp_frame_decodes_with_its_payload_and_checksums_verify() {
        let seg = Seg { src: [198, 18, 0, 1], sport: 1024, dst: [198, 19, 0, 1], dport: 80, seq: 7, ack: 99, flags: 0x18 };
        let mut buf = [0xaau8; 256];
        let n = tcp_frame(&mut buf, [2; 6], [4; 6], &seg, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(n, tcp_frame_len(18));
        let d = warden_dp::wire::decode(&buf[..n]).unwrap();
        assert!(checksum::ipv4_header_ok(&d));
        let ip = d.ip.unwrap();
        assert_eq!(checksum::transport_ok(&ip), Ok(()));
        assert_eq!((ip.sport, ip.dport, ip.payload), (1024, 80, &b"GET / HTTP/1.1\r\n\r\n"[..]));
        assert!(matches!(ip.l4, warden_dp::wire::L4::Tcp { flags: 0x18, seq: 7, ack: 99, .. }));
    }
}
