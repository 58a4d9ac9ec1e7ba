//! What the capture stage costs a worker per frame. Pure CPU, no network, no root.
//!
//! ```text
//! cargo run --release -p warden-perf --bin capture-cost [-- --frames 2000000]
//! ```
//!
//! Prints, for 64- and 1500-byte TCP frames, the worker thread's CPU ns per frame (thread CPU
//! time, best of 5 passes, so other processes on a shared machine do not count) of
//! [`warden_dp::capture::Tap`]:
//! - `off`: no capture and no pre-trigger ring (the `Tap::on` test the hot path pays);
//! - `all`: one capture taking every frame whole (copy into the ring; a second thread drains
//!   it as the writer would, so the ring does not fill);
//! - `all, snaplen 128`: the same cut at 128 bytes;
//! - `filter, no match`: one capture whose libpcap program (`udp port 53`) rejects the frame;
//! - `workload filter, match`: `(host 198.18.0.2 or host 2001:db8::2) and (tcp port 80)`;
//! - `pre-trigger`: the pre-trigger ring on (16 frames of 256 bytes per flow, 1024 flows).
//!
//! Copies the ring refused (the drain fell behind) are printed too: they cost less.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use warden_dp::capture::{bpf, ring, slot_bits, Active, Frames, Tap};
use warden_dp::inspect::Verdict;

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An Ethernet/IPv4/TCP frame 198.18.0.1:40000 -> 198.18.0.2:80 of `len` bytes.
fn frame(len: usize, sport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (len - 14) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(len, 0x61);
    f
}

fn active(filter: Option<&str>, snaplen: u32) -> Arc<Active> {
    Arc::new(Active {
        id: 1,
        slots: Some(slot_bits(&[0, 1])),
        program: filter.map(|f| bpf::compile(f).expect("filter compiles")),
        frames: Frames::All,
        snaplen,
        shared: Arc::default(),
    })
}

/// Best thread CPU ns per frame of offering `frames` (cycled) to a tap built by `make`, with a
/// thread draining the ring; also the copies the ring refused in the best pass.
fn measure(n: u64, frames: &[Vec<u8>], make: impl Fn(ring::Producer) -> Tap) -> (f64, u64) {
    let mut best = (f64::INFINITY, 0);
    for _ in 0..5 {
        let (prod, mut cons) = ring::ring(64 << 20);
        let mut tap = make(prod);
        let stop = Arc::new(AtomicBool::new(false));
        let drainer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(65_536);
                while !stop.load(Ordering::Relaxed) {
                    if cons.pop(&mut buf).is_none() {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let t = cpu_ns();
        for i in 0..n {
            let f = &frames[(i % frames.len() as u64) as usize];
            if tap.on() {
                tap.frame(0, (i & 1) as u16, i, f, Verdict::Forward);
            }
            black_box(&tap);
        }
        let ns = (cpu_ns() - t) as f64 / n as f64;
        stop.store(true, Ordering::Relaxed);
        let _ = drainer.join();
        if ns < best.0 {
            best = (ns, tap.stats().lost);
        }
    }
    best
}

fn main() {
    let n: u64 = std::env::args().skip_while(|a| a != "--frames").nth(1).and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    println!("capture-cost: thread CPU ns per frame, best of 5 passes of {n} frames");
    println!("{:<28} {:>10} {:>10}", "case", "64 B", "1500 B");
    let cases: Vec<(&str, Box<dyn Fn(ring::Producer) -> Tap>)> = vec![
        ("off", Box::new(|_| Tap::new(0, None, None))),
        (
            "all",
            Box::new(|p| {
                let mut t = Tap::new(0, Some(p), None);
                t.add(active(None, 65_535));
                t
            }),
        ),
        (
            "all, snaplen 128",
            Box::new(|p| {
                let mut t = Tap::new(0, Some(p), None);
                t.add(active(None, 128));
                t
            }),
        ),
        (
            "filter, no match",
            Box::new(|p| {
                let mut t = Tap::new(0, Some(p), None);
                t.add(active(Some("udp port 53"), 65_535));
                t
            }),
        ),
        (
            "workload filter, match",
            Box::new(|p| {
                let mut t = Tap::new(0, Some(p), None);
                t.add(active(Some("(host 198.18.0.2 or host 2001:db8::2) and (tcp port 80)"), 65_535));
                t
            }),
        ),
        (
            "pre-trigger (16 x 256 B)",
            Box::new(|p| {
                let files = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let pre = warden_dp::capture::pretrigger::Pretrigger::new(1024, 16, 256, 32, None, 1000, files);
                Tap::new(0, Some(p), Some(pre))
            }),
        ),
    ];
    for (name, make) in &cases {
        let mut row = format!("{name:<28}");
        let mut lost = Vec::new();
        for len in [64usize, 1500] {
            // 256 flows, so the pre-trigger ring works on a realistic table.
            let frames: Vec<Vec<u8>> = (0..256).map(|i| frame(len, 40_000 + i)).collect();
            let (ns, l) = measure(n, &frames, make);
            row += &format!(" {ns:>10.1}");
            lost.push(l);
        }
        if lost.iter().any(|l| *l > 0) {
            row += &format!("   (ring full: {lost:?} copies lost)");
        }
        println!("{row}");
    }
}
