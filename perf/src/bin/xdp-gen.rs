//! The rig's generator: one thread transmitting a fixed Ethernet/IPv4/UDP frame on an AF_XDP
//! socket (copy mode, as on veth) for a fixed time, at full speed or at an offered rate.
//!
//! With `--sink-pin` it also reads the sink's pinned counter map just before the first frame
//! and just after the last one completes, so the sink rate covers the same window as the
//! offered rate. Frames of 56 bytes or more carry a latency stamp (`warden_perf::stamp`,
//! written before each batch is queued), and the sink's latency histogram is read over the same
//! window. `--watch NAME=TID` reports the CPU time of those threads (the forwarder's) over each
//! run. Prints one JSON object on stdout.
use std::path::PathBuf;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Parser;
use serde::Serialize;
use xdpilone::xdp::XdpDesc;
use xdpilone::{BufIdx, DeviceQueue, RingTx, Umem, UmemConfig};

#[derive(Parser)]
struct Args {
    /// Interface to transmit on.
    #[arg(long)]
    iface: String,
    /// Frame length in bytes, Ethernet header included, FCS excluded.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Offered rate in frames per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Destination MAC (the sink's, or whatever the forwarder must accept).
    #[arg(long)]
    dst_mac: String,
    /// Source MAC; the interface's own by default.
    #[arg(long)]
    src_mac: Option<String>,
    /// Pinned sink counter map to read before and after (see `xdp-sink attach`).
    #[arg(long)]
    sink_pin: Option<PathBuf>,
    /// Seconds of unmeasured sending before the measured run.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Measured runs (one warm-up first); the median is reported at the top level.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Descriptors queued per loop iteration.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// A thread whose CPU time over each run is reported, as NAME=TID (repeatable).
    #[arg(long)]
    watch: Vec<String>,
    /// Tx queues to send on, one AF_XDP socket each, batches taken in turn (veth delivers tx
    /// queue q to the peer's rx queue q). Queue q's frames come from their own source address,
    /// 198.18.0.x, the first one that Warden's owner hash (`FlowKey::owner_spread`, zone
    /// `--zone`) gives to worker q of `--queues` workers: each worker's queue carries the
    /// flow it owns, with no handoff.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Warden's zone of the pair forwarding the frames (its first pair: 0), for `--queues`.
    #[arg(long, default_value_t = 0)]
    zone: u16,
}

/// One tx queue's socket and its frame.
struct Lane {
    tx: RingTx,
    device: DeviceQueue,
    desc: XdpDesc,
    /// The frame's bytes in the lane's UMEM (stamped before each batch).
    frame: &'static mut [u8],
    _rxtx: xdpilone::User,
}

/// The source address of queue `q`'s flow: 198.18.0.1 for a single queue, else the first
/// 198.18.0.x (x >= 1) whose flow to `DST_IP` Warden's owner hash gives to worker `q`.
fn lane_source(q: u32, queues: u32, zone: u16) -> [u8; 4] {
    use warden_dp::flow::{Addr, FlowKey};
    if queues <= 1 {
        return warden_perf::SRC_IP;
    }
    for x in 1..=254u8 {
        let src = [198, 18, 0, x];
        let (key, _) = FlowKey::new(zone, 17, Addr::v4(src), 9, Addr::v4(warden_perf::DST_IP), 9);
        if key.owner_spread() % queues == q {
            return src;
        }
    }
    [198, 18, 0, 1 + q as u8]
}

/// What the runs measured: the median run (by sink rate, else offered rate), and all runs.
#[derive(Serialize)]
struct Report {
    iface: String,
    size: usize,
    #[serde(flatten)]
    median: Run,
    runs: Vec<Run>,
}

/// What one run measured.
#[derive(Serialize, Clone)]
struct Run {
    /// Seconds from the first frame queued to the last one completed.
    secs: f64,
    /// Frames the kernel took from the tx ring (sent to the interface, or dropped by it).
    offered: u64,
    offered_pps: f64,
    sink_frames: Option<u64>,
    sink_bytes: Option<u64>,
    sink_pps: Option<f64>,
    /// Share of the run each CPU was busy (cpu0 first), from /proc/stat.
    cpu_busy: Vec<f64>,
    /// Share of the run each CPU spent in softirq (cpu0 first), from /proc/stat.
    cpu_softirq: Vec<f64>,
    /// Each watched thread's CPU time over the run, as a share of one core (`--watch`).
    tasks: std::collections::BTreeMap<String, f64>,
    /// Stamped frames the sink timed.
    lat_frames: Option<u64>,
    /// Latency quantiles, generator to sink (µs, upper bounds of 1 µs buckets below 1 ms).
    lat_p50_us: Option<f64>,
    lat_p99_us: Option<f64>,
    lat_p999_us: Option<f64>,
}

/// One page of umem; the alignment makes the whole umem page aligned.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn main() -> Result<()> {
    let args = Args::parse();
    let src_mac = match &args.src_mac {
        Some(m) => warden_perf::parse_mac(m)?,
        None => warden_perf::iface_mac(&args.iface)?,
    };
    let dst_mac = warden_perf::parse_mac(&args.dst_mac)?;
    let mut watch = Vec::new();
    for w in &args.watch {
        let (name, tid) = w.split_once('=').ok_or_else(|| anyhow!("--watch expects NAME=TID, got {w}"))?;
        watch.push((name.to_string(), tid.parse::<u32>().map_err(|_| anyhow!("--watch {w}: bad TID"))?));
    }
    let task_cpu = |watch: &[(String, u32)]| -> Result<Vec<u64>> {
        watch.iter().map(|(_, tid)| warden_perf::task_cpu_ns(*tid)).collect()
    };

    let mut lanes = Vec::new();
    for q in 0..args.queues.max(1) {
        let frame = warden_perf::udp_frame_from(args.size, src_mac, dst_mac, lane_source(q, args.queues, args.zone))?;
        // Four pages: a frame is one page (UmemConfig's default frame size) and only frame 0
        // is used, by every descriptor: in copy mode the kernel copies it into an skb each time.
        let pages: &'static mut [Page] = Box::leak(vec![Page([0; 4096]); 4].into_boxed_slice());
        pages[0].0[..frame.len()].copy_from_slice(&frame);
        let len = std::mem::size_of_val(pages);
        let area = NonNull::slice_from_raw_parts(NonNull::from(&mut *pages).cast::<u8>(), len);
        // SAFETY: `area` is page aligned, `len` bytes long, and leaked, so it outlives the Umem.
        let umem = unsafe { Umem::new(UmemConfig::default(), area) }.map_err(xerr("create umem"))?;
        // A socket closed just before (the previous run) frees its queue in a deferred work
        // item: until then bind fails with EBUSY.
        let mut tries = 0;
        let (device, tx, rxtx) = loop {
            match warden_perf::open_tx_queue(&umem, &args.iface, q) {
                Err(e) if e.get_raw() == libc::EBUSY && tries < 40 => tries += 1,
                r => break r.map_err(xerr("open AF_XDP tx socket"))?,
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let desc = XdpDesc {
            addr: umem.frame(BufIdx(0)).expect("frame 0").offset,
            len: frame.len() as u32,
            options: 0,
        };
        // The umem stays alive with the sockets (leaked with its pages for the whole run).
        std::mem::forget(umem);
        let flen = frame.len();
        lanes.push(Lane { tx, device, desc, frame: &mut pages[0].0[..flen], _rxtx: rxtx });
    }
    if args.warmup > 0.0 {
        send(&mut lanes, args.warmup, args.rate, args.batch);
    }

    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        let sink_before = args
            .sink_pin
            .as_deref()
            .map(warden_perf::read_sink)
            .transpose()?;
        let lat_before = args.sink_pin.as_deref().map(warden_perf::read_latency).transpose()?;
        let soft_before = warden_perf::cpu_softirq_jiffies()?;
        let tasks_before = task_cpu(&watch)?;
        let cpu_before = warden_perf::cpu_jiffies()?;
        let (done, secs) = send(&mut lanes, args.duration, args.rate, args.batch);
        let cpu_after = warden_perf::cpu_jiffies()?;
        let tasks_after = task_cpu(&watch)?;
        let soft_after = warden_perf::cpu_softirq_jiffies()?;
        let cpu_busy = warden_perf::cpu_busy(&cpu_before, &cpu_after);
        let cpu_softirq = soft_before
            .iter()
            .zip(&soft_after)
            .zip(cpu_before.iter().zip(&cpu_after))
            .map(|((b, a), (tb, ta))| (a - b) as f64 / (ta.1 - tb.1).max(1) as f64)
            .collect();
        let tasks = watch
            .iter()
            .zip(tasks_before.iter().zip(&tasks_after))
            .map(|((name, _), (b, a))| (name.clone(), a.saturating_sub(*b) as f64 / 1e9 / secs))
            .collect();
        std::thread::sleep(Duration::from_millis(20)); // let the last frames cross the forwarder
        let lat = lat_before
            .zip(args.sink_pin.as_deref().map(warden_perf::read_latency).transpose()?)
            .map(|(b, a)| a.iter().zip(&b).map(|(a, b)| a - b).collect::<Vec<u64>>());
        let q = |p: f64| lat.as_deref().and_then(|h| warden_perf::lat_quantile(h, p));
        let sink_after = args
            .sink_pin
            .as_deref()
            .map(warden_perf::read_sink)
            .transpose()?;
        let sink = sink_before
            .zip(sink_after)
            .map(|(b, a)| (a.frames - b.frames, a.bytes - b.bytes));
        runs.push(Run {
            secs,
            offered: done,
            offered_pps: done as f64 / secs,
            sink_frames: sink.map(|s| s.0),
            sink_bytes: sink.map(|s| s.1),
            sink_pps: sink.map(|s| s.0 as f64 / secs),
            cpu_busy,
            cpu_softirq,
            tasks,
            lat_frames: lat.as_ref().map(|h| h.iter().sum()),
            lat_p50_us: q(0.5),
            lat_p99_us: q(0.99),
            lat_p999_us: q(0.999),
        });
    }
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| {
        a.sink_pps
            .unwrap_or(a.offered_pps)
            .total_cmp(&b.sink_pps.unwrap_or(b.offered_pps))
    });
    let median = order[order.len() / 2].clone();
    let report = Report {
        iface: args.iface,
        size: args.size,
        median,
        runs,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Transmits each lane's frame (stamped before each batch), a batch per lane in turn, for
/// `secs` seconds (at `rate` frames/s over all lanes unless 0), then waits up to 200 ms for the
/// kernel to complete what is still queued. Returns the frames completed and the seconds from
/// the start to the last completion.
fn send(lanes: &mut [Lane], secs: f64, rate: u64, batch: u32) -> (u64, f64) {
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let (mut queued, mut done) = (0u64, 0u64);
    let mut now = start;
    let mut turn = 0usize;
    while now < stop || (queued > done && now < stop + Duration::from_millis(200)) {
        let lane = &mut lanes[turn % lanes.len()];
        turn = turn.wrapping_add(1);
        if now < stop {
            let mut want = u64::from(batch);
            if rate > 0 {
                let due = (rate as f64 * (now - start).as_secs_f64()) as u64;
                want = want.min(due.saturating_sub(queued));
            }
            if want > 0 {
                // Copy mode: the kernel copies the frame in the wake-up below, so every
                // descriptor of this batch carries this time.
                warden_perf::stamp(lane.frame, warden_perf::monotonic_ns());
                let mut w = lane.tx.transmit(want as u32);
                queued += u64::from(w.insert(std::iter::repeat(lane.desc)));
                w.commit();
            }
        }
        if lane.tx.needs_wakeup() {
            lane.tx.wake();
        }
        let mut c = lane.device.complete(u32::MAX);
        while c.read().is_some() {
            done += 1;
        }
        c.release();
        now = Instant::now();
    }
    (done, (now - start).as_secs_f64())
}

fn xerr(step: &'static str) -> impl Fn(xdpilone::Errno) -> anyhow::Error {
    move |e| anyhow!("{step}: {e}")
}
