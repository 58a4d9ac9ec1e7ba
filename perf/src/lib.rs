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
    ip[12..16].copy_from_slice(&SRC_IP);
    ip[16..20].copy_from_slice(&DST_IP);
    checksum::fill_ipv4_header(ip);
    let udp = &mut f[34..];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    checksum::fill(&Addr::v4(SRC_IP), &Addr::v4(DST_IP), 17, udp, 6);
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

/// Creates an AF_XDP socket on queue 0 of `iface` with a tx ring of 2048 entries and no rx
/// ring, bound in copy mode with need-wakeup, sharing `umem`'s fill/completion rings.
pub fn open_tx(
    umem: &xdpilone::Umem,
    iface: &str,
) -> Result<(xdpilone::DeviceQueue, xdpilone::RingTx, xdpilone::User), xdpilone::Errno> {
    use xdpilone::{IfInfo, Socket, SocketConfig};
    let mut info = IfInfo::invalid();
    let name = std::ffi::CString::new(iface).map_err(|_| xdpilone::Errno::last_os_error())?;
    info.from_name(&name)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
