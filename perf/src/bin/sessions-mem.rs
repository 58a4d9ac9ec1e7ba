//! Memory per session (perf/RESULTS.md, "Memory per session (issue 16)").
//!
//! Opens `--sessions` sessions (default 1 048 576 = 1 Mi) in one worker's session table and
//! prints the bytes per entry (`size_of` of each part and the table's own account of what it
//! allocated), the process's resident memory (`VmRSS`, and `VmHWM` for the peak) before and
//! after, and the CPU time per session creation (thread CPU time, with wall clock beside it: the
//! machine is shared). Each phase runs in a child process of its own so its RSS starts clean:
//!
//! - `table`: the `SessionTable` alone, driven as the inspector drives it (`track` of a SYN per
//!   new flow): allocated at start, full, then a churn of as many new flows again (each evicts
//!   the oldest embryonic session, final records drained in batches of 64 as a worker does);
//! - `inspector`: a whole `Inspector` (default engine: 16 384 app contexts) with a table of
//!   `--sessions`, SYN frames through `process` as `synflood-cpu` sends them: at start, full,
//!   after the churn;
//! - `inspected`: `--inspected` sessions (default 16 384, the default app context pool) that
//!   each complete a handshake and exchange an HTTP request and a response of
//!   `--response-bytes`, once before and once after the client acknowledges the response
//!   (the stream keeps unacknowledged bytes for conflict checks): the memory an inspected
//!   session adds (app context, parser state, stream buffers).
//!
//! `cargo run --release -p warden-perf --bin sessions-mem` (`--phase table` for one phase).
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use warden_dp::flow::{Addr, FlowKey};
use warden_dp::inspect::{FrameMeta, Inspector, MalformedPolicy, Verdict};
use warden_dp::session::{SessionSnapshot, SessionTable, Timeouts};
use warden_dp::tcpseq::Segment;
use warden_dp::wire::tcpflag;
use warden_perf::{tcp_frame, Seg, Syn};

#[derive(Parser)]
struct Args {
    /// Sessions opened (and the table's size).
    #[arg(long, default_value_t = 1 << 20)]
    sessions: usize,
    /// Inspected sessions of the `inspected` phase.
    #[arg(long, default_value_t = 16384)]
    inspected: usize,
    /// Bytes of each HTTP response in the `inspected` phase.
    #[arg(long, default_value_t = 1000)]
    response_bytes: usize,
    /// One phase (`table`, `inspector`, `inspected`); all of them, each in a child, if absent.
    #[arg(long)]
    phase: Option<String>,
}

/// Memory figures of this process from `/proc/self/status`, in KiB.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: u64,
    hwm: u64,
    data: u64,
}

fn mem() -> Result<Mem> {
    let s = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok(Mem { rss: field("VmRSS:")?, hwm: field("VmHWM:")?, data: field("VmData:")? })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// This thread's CPU time (ns).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of one measured loop.
struct Cost {
    cpu0: u64,
    wall: Instant,
}

impl Cost {
    fn start() -> Self {
        Cost { cpu0: thread_cpu_ns(), wall: Instant::now() }
    }

    /// "x ns CPU/op (y ns wall/op)".
    fn per(&self, ops: usize) -> String {
        let ops = ops.max(1) as f64;
        let cpu = (thread_cpu_ns() - self.cpu0) as f64 / ops;
        let wall = self.wall.elapsed().as_nanos() as f64 / ops;
        format!("{cpu:.0} ns CPU/op ({wall:.0} ns wall/op)")
    }
}

fn report(what: &str, before: Mem, after: Mem, per: usize) {
    let d = after.rss.saturating_sub(before.rss);
    println!(
        "  {what}: RSS {:.1} -> {:.1} MiB (+{:.1} MiB, {:.1} B per session), peak {:.1} MiB, VmData {:.1} MiB",
        mib(before.rss),
        mib(after.rss),
        mib(d),
        d as f64 * 1024.0 / per.max(1) as f64,
        mib(after.hwm),
        mib(after.data),
    );
}

/// The `i`th flow's client: 2^17 addresses of 198.18.0.0/15, then the next source port.
fn client(i: usize) -> ([u8; 4], u16) {
    let a = 0xc612_0000u32 | (i as u32 & 0x1_ffff);
    (a.to_be_bytes(), 1024 + (i >> 17) as u16)
}

const SERVER: [u8; 4] = [198, 19, 0, 1];
const T0: u64 = 1_700_000_000_000_000_000;

fn syn_seg(seq: u32) -> Option<Segment> {
    Some(Segment { seq, ack: 0, flags: tcpflag::SYN, window: 64240, wscale: None, len: 0 })
}

fn phase_table(n: usize) -> Result<()> {
    println!("table: SessionTable of {n} sessions");
    let m0 = mem()?;
    let mut t = SessionTable::new(n, Timeouts::default());
    let m1 = mem()?;
    report("allocated at start", m0, m1, n);
    let key = |i: usize| {
        let (c, port) = client(i);
        FlowKey::new(0, 6, Addr::v4(c), port, Addr::v4(SERVER), 80)
    };
    let c = Cost::start();
    for i in 0..n {
        let (k, from) = key(i);
        t.track(&k, from, 58, syn_seg(i as u32), 0, T0 + i as u64 * 1000)
            .context("table refused a session")?;
    }
    let per = c.per(n);
    let m2 = mem()?;
    report("full", m0, m2, n);
    println!("  creation: {per}; live {}", t.len());
    // Churn: as many new flows again; each evicts the oldest embryonic session.
    let mut out: Vec<SessionSnapshot> = Vec::with_capacity(64);
    let c = Cost::start();
    for i in n..2 * n {
        let (k, from) = key(i);
        t.track(&k, from, 58, syn_seg(i as u32), 0, T0 + i as u64 * 1000)
            .context("table refused a session")?;
        if t.ended_pending() >= 64 {
            t.drain_ended_upto(&mut out, 64);
            out.clear();
        }
    }
    let per = c.per(n);
    let m3 = mem()?;
    report("after a churn of as many new flows", m0, m3, n);
    let st = t.stats();
    println!(
        "  churn: {per}; created {}, evicted {}, live {}, index rebuilds {}",
        st.created,
        st.evicted,
        t.len(),
        st.index_rebuilds
    );
    Ok(())
}

/// Drives `insp` the way a worker does every 64 frames (events, expiry, reports when due).
fn worker_tick(insp: &mut Inspector, now: u64, last_report: &mut u64, out: &mut Vec<SessionSnapshot>) {
    insp.drain_events(out);
    out.clear();
    insp.sessions.expire(now, 256);
    let batch = warden_dp::worker::REPORT_BATCH;
    if now - *last_report >= 1_000_000_000 {
        *last_report = now;
        while insp.drain_reports_upto(out, batch) {
            out.clear();
        }
    } else if insp.sessions.ended_pending() >= batch {
        while insp.drain_ended_upto(out, batch) {
            out.clear();
        }
    }
    out.clear();
}

fn phase_inspector(n: usize) -> Result<()> {
    println!("inspector: Inspector with a table of {n} sessions, default engine");
    let m0 = mem()?;
    let mut insp = Inspector::new(n, Timeouts::default(), MalformedPolicy::Drop);
    let m1 = mem()?;
    report("allocated at start", m0, m1, n);
    let mut frame = [0u8; 4096];
    let mut out = Vec::new();
    let mut last_report = T0;
    let mut run = |insp: &mut Inspector, range: std::ops::Range<usize>| -> Result<()> {
        for i in range {
            let (src, sport) = client(i);
            let syn = Syn { src, sport, dst: SERVER, dport: 80, seq: i as u32 };
            warden_perf::syn_frame(&mut frame, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &syn);
            let now = T0 + i as u64 * 1000;
            let v = insp.process(&frame[..warden_perf::SYN_FRAME_LEN], FrameMeta::new(0, 1, now));
            if v != Verdict::Forward {
                bail!("SYN {i} not forwarded: {v:?}");
            }
            if i % 64 == 63 {
                worker_tick(insp, now, &mut last_report, &mut out);
            }
        }
        Ok(())
    };
    let c = Cost::start();
    run(&mut insp, 0..n)?;
    let per = c.per(n);
    let m2 = mem()?;
    report("full", m0, m2, n);
    println!("  creation: {per}; live {}, app pool full {}", insp.sessions.len(), insp.engine.pool_full);
    let c = Cost::start();
    run(&mut insp, n..2 * n)?;
    let per = c.per(n);
    let m3 = mem()?;
    report("after a churn of as many new flows", m0, m3, n);
    let st = insp.sessions.stats();
    println!(
        "  churn: {per}; created {}, evicted {}, live {}, index rebuilds {}",
        st.created,
        st.evicted,
        insp.sessions.len(),
        st.index_rebuilds
    );
    Ok(())
}

fn phase_inspected(k: usize, response_bytes: usize) -> Result<()> {
    println!("inspected: {k} HTTP sessions, response {response_bytes} bytes");
    let m0 = mem()?;
    let mut insp = Inspector::new(k.max(1), Timeouts::default(), MalformedPolicy::Drop);
    let m1 = mem()?;
    report("allocated at start (table and engine)", m0, m1, k);
    let mut frame = [0u8; 4096];
    let (cmac, smac) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let request = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n", response_bytes);
    let mut response = head.into_bytes();
    response.resize(response.len() + response_bytes, b'x');
    if response.len() > 4000 {
        bail!("--response-bytes must keep the response in one frame");
    }
    let step = |insp: &mut Inspector, frame: &mut [u8; 4096], i: usize, client_sends: bool, seq: u32, ack: u32, flags: u8, payload: &[u8], now: u64| -> Result<()> {
        let (c, port) = client(i);
        let seg = if client_sends {
            Seg { src: c, sport: port, dst: SERVER, dport: 80, seq, ack, flags }
        } else {
            Seg { src: SERVER, sport: 80, dst: c, dport: port, seq, ack, flags }
        };
        let (src, dst, iface) = if client_sends { (cmac, smac, 0) } else { (smac, cmac, 1) };
        let len = tcp_frame(frame, src, dst, &seg, payload);
        let v = insp.process(&frame[..len], FrameMeta::new(0, iface, now));
        if v != Verdict::Forward {
            bail!("session {i}: frame not forwarded: {v:?}");
        }
        Ok(())
    };
    let (cisn, sisn) = (1000u32, 5000u32);
    let req = request.len() as u32;
    let resp = response.len() as u32;
    let c = Cost::start();
    for i in 0..k {
        let now = T0 + i as u64 * 10_000;
        step(&mut insp, &mut frame, i, true, cisn, 0, tcpflag::SYN, b"", now)?;
        step(&mut insp, &mut frame, i, false, sisn, cisn + 1, tcpflag::SYN | tcpflag::ACK, b"", now + 1)?;
        step(&mut insp, &mut frame, i, true, cisn + 1, sisn + 1, tcpflag::ACK, b"", now + 2)?;
        step(&mut insp, &mut frame, i, true, cisn + 1, sisn + 1, tcpflag::ACK | tcpflag::PSH, request, now + 3)?;
        step(&mut insp, &mut frame, i, false, sisn + 1, cisn + 1 + req, tcpflag::ACK | tcpflag::PSH, &response, now + 4)?;
    }
    let per = c.per(k);
    let m2 = mem()?;
    report("handshake, request, response (not yet acknowledged)", m1, m2, k);
    println!(
        "  per session (5 frames): {per}; app pool full {}; stream bytes held {}, kept for conflict checks {}",
        insp.engine.pool_full,
        insp.engine.buffered(),
        insp.engine.kept()
    );
    for i in 0..k {
        let now = T0 + i as u64 * 10_000 + 5;
        step(&mut insp, &mut frame, i, true, cisn + 1 + req, sisn + 1 + resp, tcpflag::ACK, b"", now)?;
    }
    let m3 = mem()?;
    report("after the client acknowledged the responses", m1, m3, k);
    println!("  stream bytes held {}, kept {}", insp.engine.buffered(), insp.engine.kept());
    Ok(())
}

fn sizes(n: usize) {
    use std::mem::size_of;
    use warden_dp::app::engine::{AppCtx, AppState, AppSummary};
    println!("sizes (bytes):");
    println!("  Session (table entry) {} (at most {})", size_of::<warden_dp::session::Session>(), warden_dp::session::Session::MAX_BYTES);
    println!("    FlowKey {}", size_of::<FlowKey>());
    println!("    PolicyState {}", size_of::<warden_dp::enforce::PolicyState>());
    println!("    TcpSeq {}", size_of::<warden_dp::tcpseq::TcpSeq>());
    println!("  SessionView (reports) {}, SessionSnapshot {}", size_of::<warden_dp::session::SessionView>(), size_of::<SessionSnapshot>());
    println!("  AppCtx {} (AppState {}, Stream {} x 2)", size_of::<AppCtx>(), size_of::<AppState>(), size_of::<warden_dp::stream::Stream>());
    println!("  AppSummary {}", size_of::<AppSummary>());
    let f = SessionTable::new(n, Timeouts::default()).footprint();
    let per = |b: usize| b as f64 / n as f64;
    println!(
        "table of {n} allocated (bytes per session): entries {:.1}, index {:.1}, dirty list {:.1}, side parts {:.1} = {:.1}; queues {:.1} MiB (bounded)",
        per(f.entries),
        per(f.index),
        per(f.dirty),
        per(f.side),
        f.per_session(),
        f.queues as f64 / (1 << 20) as f64,
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.phase.as_deref() {
        Some("table") => phase_table(args.sessions),
        Some("inspector") => phase_inspector(args.sessions),
        Some("inspected") => phase_inspected(args.inspected, args.response_bytes),
        Some(p) => bail!("unknown phase {p}"),
        None => {
            println!("load average before: {}", loadavg());
            sizes(args.sessions);
            let exe = std::env::current_exe()?;
            for phase in ["table", "inspector", "inspected"] {
                let st = Command::new(&exe)
                    .args(["--phase", phase, "--sessions", &args.sessions.to_string()])
                    .args(["--inspected", &args.inspected.to_string()])
                    .args(["--response-bytes", &args.response_bytes.to_string()])
                    .status()?;
                if !st.success() {
                    bail!("phase {phase} failed: {st}");
                }
            }
            println!("load average after: {}", loadavg());
            Ok(())
        }
    }
}
