//! Cost of metrics on the worker and on the control thread. Pure CPU, no network, no root.
//!
//! ```text
//! cargo run --release -p warden-perf --bin metrics-cost [-- --iters 5000000]
//! ```
//!
//! Prints, best of 5 passes of `iters` iterations each (thread CPU time, so time other
//! processes take on a shared machine does not count):
//! - `clock pair`: two `Instant::now()` reads, what a worker adds per rx batch (and per busy
//!   loop) for the latency histogram and loop time;
//! - `batch accounting`: the per-batch work the worker does for metrics (two clock reads,
//!   `Latency::observe_batch`, `LoopStats::busy`), and the same divided by a 64-frame batch;
//! - `render`: one scrape's exposition on the control thread ([`warden_dp::metrics::render`])
//!   for 2 workers and 2 interfaces, with its size in bytes.
use std::hint::black_box;
use std::time::{Duration, Instant};

use warden_dp::metrics::{render, Interface, LoopStats, Snapshot};
use warden_dp::worker::{IfCounters, WorkerStats};

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Best (lowest) thread CPU ns per iteration of `f` over 5 passes of `iters`.
fn best(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let t = cpu_ns();
            for i in 0..iters {
                f(i);
            }
            (cpu_ns() - t) as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let iters: u64 = std::env::args()
        .skip_while(|a| a != "--iters")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let empty = best(iters, |i| {
        black_box(i);
    });
    let clock = best(iters, |_| {
        let a = Instant::now();
        black_box(a.elapsed());
    });
    let mut st = LoopStats::default();
    let batch = best(iters, |i| {
        let a = Instant::now();
        black_box(i);
        let took = a.elapsed();
        st.latency.observe_batch(took + Duration::from_nanos(i % 50_000), 64);
        st.busy(took);
    });
    black_box(st);
    println!("loop overhead    {empty:8.1} ns/iter (subtracted below)");
    println!("clock pair       {:8.1} ns per batch", clock - empty);
    println!("batch accounting {:8.1} ns per batch = {:.2} ns per frame at 64 frames", batch - empty, (batch - empty) / 64.0);

    let mut snap = Snapshot { uptime_s: 1, pairs: 1, ..Default::default() };
    for (slot, name) in [(0u16, "eth-a"), (1, "eth-b")] {
        snap.interfaces.push(Interface { name: name.into(), slot, ..Default::default() });
    }
    for w in 0..2 {
        let mut ws = WorkerStats { worker: w, ..Default::default() };
        ws.ifaces.insert(0, IfCounters { rx_frames: 1 << 40, ..Default::default() });
        ws.ifaces.insert(1, IfCounters { rx_frames: 1 << 40, ..Default::default() });
        snap.workers.push(ws);
    }
    let n = 200;
    let mut size = 0;
    let render_ns = best(n, |_| {
        size = black_box(render(snap.clone())).len();
    });
    println!("render           {:8.1} us per scrape ({size} bytes, 2 workers, 2 interfaces)", render_ns / 1e3);
}
