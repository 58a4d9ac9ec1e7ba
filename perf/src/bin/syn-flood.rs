//! SYN flood generator for `perf/synflood.sh`: transmits `--count` TCP SYNs with random source
//! addresses (within `--src-net`, default 198.18.0.0/15), random source ports and random (or
//! fixed) destination ports to `--dst-ip`, on an AF_XDP socket in copy mode (as `xdp-gen`),
//! at full speed or at `--rate` frames/s. Every frame is a different 5-tuple with correct
//! checksums; addresses listed with `--exclude` (the real client and server) are never used as
//! sources.
//!
//! Prints one JSON object: frames sent (completed by the kernel), seconds, rate, and the Unix
//! time (ns) of the first and last frame, so the benchmark can line the flood up with the
//! established flow's throughput samples.
use std::net::Ipv4Addr;
use std::ptr::NonNull;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use warden_perf::{Syn, SYN_FRAME_LEN};
use xdpilone::xdp::XdpDesc;
use xdpilone::{BufIdx, Umem, UmemConfig};

#[derive(Parser)]
struct Args {
    /// Interface to transmit on.
    #[arg(long)]
    iface: String,
    /// SYNs to send.
    #[arg(long, default_value_t = 10_000_000)]
    count: u64,
    /// Offered rate in frames per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Destination MAC (the server's).
    #[arg(long)]
    dst_mac: String,
    /// Source MAC; the interface's own by default.
    #[arg(long)]
    src_mac: Option<String>,
    /// Destination (server) address.
    #[arg(long, default_value = "198.18.0.2")]
    dst_ip: Ipv4Addr,
    /// Destination ports: one port, or `lo-hi` for a random port in the range per SYN.
    #[arg(long, default_value = "1-65535")]
    dst_ports: String,
    /// Source network of the random addresses (CIDR, within 198.18.0.0/15).
    #[arg(long, default_value = "198.18.0.0/15")]
    src_net: String,
    /// Source addresses never used (comma-separated): the hosts of the established flow.
    #[arg(long, value_delimiter = ',', default_value = "198.18.0.1,198.18.0.2")]
    exclude: Vec<Ipv4Addr>,
    /// Seed of the pseudo-random tuples.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Descriptors queued per loop iteration.
    #[arg(long, default_value_t = 64)]
    batch: u32,
}

#[derive(Serialize)]
struct Report {
    iface: String,
    /// SYNs the kernel took from the tx ring (handed to the interface).
    sent: u64,
    secs: f64,
    pps: f64,
    /// Unix time (ns) when the first SYN was queued.
    start_unix_ns: u128,
    /// Unix time (ns) when the last SYN completed.
    end_unix_ns: u128,
    dst_ip: String,
    dst_ports: String,
    src_net: String,
}

/// One UMEM frame; the alignment makes the whole UMEM page aligned.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// UMEM frames (each holds one SYN while the kernel owns it).
const FRAMES: u32 = 4096;

/// xorshift64*: fast, and good enough to spread tuples over the session table's hash.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn parse_ports(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.parse()?, b.parse()?),
        None => {
            let p = s.parse()?;
            (p, p)
        }
    };
    if lo == 0 || lo > hi {
        bail!("bad port range {s}");
    }
    Ok((lo, hi))
}

fn parse_net(s: &str) -> Result<(u32, u32)> {
    let (a, len) = s.split_once('/').with_context(|| format!("bad network {s}"))?;
    let a: Ipv4Addr = a.parse()?;
    let len: u32 = len.parse()?;
    if !(8..=32).contains(&len) {
        bail!("prefix length of {s} outside 8..=32");
    }
    let mask = u32::MAX << (32 - len);
    let base = u32::from(a) & mask;
    let bench = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    if base & 0xfffe_0000 != bench || len < 15 {
        bail!("{s} is not inside 198.18.0.0/15 (the benchmarking range)");
    }
    Ok((base, !mask))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let src_mac = match &args.src_mac {
        Some(m) => warden_perf::parse_mac(m)?,
        None => warden_perf::iface_mac(&args.iface)?,
    };
    let dst_mac = warden_perf::parse_mac(&args.dst_mac)?;
    let (port_lo, port_hi) = parse_ports(&args.dst_ports)?;
    let (net, host_mask) = parse_net(&args.src_net)?;
    let exclude: Vec<u32> = args.exclude.iter().map(|a| u32::from(*a)).collect();
    let dst = args.dst_ip.octets();

    // Leaked as a raw pointer: from here on the UMEM is only reached through `umem.frame`.
    let pages = Box::into_raw(vec![Page([0; 4096]); FRAMES as usize].into_boxed_slice());
    let len = FRAMES as usize * std::mem::size_of::<Page>();
    let base = NonNull::new(pages.cast::<u8>()).context("UMEM allocation")?;
    let area = NonNull::slice_from_raw_parts(base, len);
    // SAFETY: `area` is page aligned, `len` bytes long, and leaked, so it outlives the Umem.
    let umem = unsafe { Umem::new(UmemConfig::default(), area) }.map_err(xerr("create umem"))?;
    let mut tries = 0;
    let (mut device, mut tx, _rxtx) = loop {
        match warden_perf::open_tx(&umem, &args.iface) {
            Err(e) if e.get_raw() == libc::EBUSY && tries < 40 => tries += 1,
            r => break r.map_err(xerr("open AF_XDP tx socket"))?,
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut free: Vec<u32> = (0..FRAMES).rev().collect();
    let mut rng = Rng(args.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let batch = args.batch.clamp(1, 1024) as usize;
    let mut descs = Vec::with_capacity(batch);
    let (mut queued, mut done) = (0u64, 0u64);
    let start = Instant::now();
    let start_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut last_progress = Instant::now();
    while done < args.count {
        let now = Instant::now();
        let mut want = (args.count - queued).min(batch as u64).min(free.len() as u64);
        if args.rate > 0 {
            let due = (args.rate as f64 * (now - start).as_secs_f64()) as u64;
            want = want.min(due.saturating_sub(queued));
        }
        descs.clear();
        for _ in 0..want {
            let Some(i) = free.pop() else { break };
            let r = rng.next();
            let src = loop {
                let a = net | (rng.next() as u32 & host_mask);
                // Not the real hosts, not the network's first or last address.
                if !exclude.contains(&a) && a & host_mask != 0 && a & host_mask != host_mask {
                    break a;
                }
            };
            let span = u64::from(port_hi - port_lo) + 1;
            let syn = Syn {
                src: src.to_be_bytes(),
                sport: 1024 + (r % (65536 - 1024)) as u16,
                dst,
                dport: port_lo + ((r >> 16) % span) as u16,
                seq: (r >> 32) as u32,
            };
            let chunk = umem.frame(BufIdx(i)).context("UMEM frame")?;
            // SAFETY: frame `i` came from `free`: the kernel does not own it (it is neither on
            // the tx ring nor awaiting completion), and nothing else in this process refers to
            // it; the chunk is inside the leaked UMEM area and 4096 bytes long.
            let buf = unsafe { &mut *chunk.addr.as_ptr() };
            warden_perf::syn_frame(buf, src_mac, dst_mac, &syn);
            descs.push(XdpDesc { addr: chunk.offset, len: SYN_FRAME_LEN as u32, options: 0 });
        }
        if !descs.is_empty() {
            let mut w = tx.transmit(descs.len() as u32);
            let n = w.insert(descs.iter().copied());
            w.commit();
            queued += u64::from(n);
            // Frames the ring had no room for go back to the free list.
            for d in &descs[n as usize..] {
                free.push((d.addr / 4096) as u32);
            }
        }
        if tx.needs_wakeup() {
            tx.wake();
        }
        let mut c = device.complete(u32::MAX);
        let mut completed = 0;
        while let Some(addr) = c.read() {
            free.push((addr / 4096) as u32);
            completed += 1;
        }
        c.release();
        done += completed;
        if descs.is_empty() && completed == 0 && args.rate > 0 {
            // Ahead of the rate: leave the core to the other processes on it (the transfer's
            // client and server) instead of spinning.
            std::thread::sleep(Duration::from_micros(100));
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!("syn-flood: {done} sent");
        }
        if queued > done && now.duration_since(start) > Duration::from_secs(3600) {
            bail!("the interface stopped completing frames");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let end_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let report = Report {
        iface: args.iface,
        sent: done,
        secs,
        pps: done as f64 / secs,
        start_unix_ns: start_unix,
        end_unix_ns: end_unix,
        dst_ip: args.dst_ip.to_string(),
        dst_ports: args.dst_ports,
        src_net: args.src_net,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn xerr(step: &'static str) -> impl Fn(xdpilone::Errno) -> anyhow::Error {
    move |e| anyhow!("{step}: {e}")
}
