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
//! `cargo run --release -p warden-perf --bin sessions-mem` (`--phase table` for one phase;
//! `--callgrind --sessions 131072`: instructions per operation of each measured loop instead,
//! under valgrind, a figure the load of a shared machine does not move).
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
    /// Instead of the phases' figures: instructions per operation of each measured loop, each
    /// phase run under callgrind (needs valgrind; use a smaller `--sessions`, it is ~50x slower).
    #[arg(long)]
    callgrind: bool,
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

fn table_key(i: usize) -> (FlowKey, warden_dp::flow::End) {
    let (c, port) = client(i);
    FlowKey::new(0, 6, Addr::v4(c), port, Addr::v4(SERVER), 80)
}

/// Flows `range` into `t`, one SYN each, final records drained in batches of 64 (a measured
/// loop: `--callgrind` counts its instructions by name).
#[inline(never)]
fn measure_table(t: &mut SessionTable, range: std::ops::Range<usize>, out: &mut Vec<SessionSnapshot>) -> Result<()> {
    table_loop(t, range, out)
}

#[inline(always)]
fn table_loop(t: &mut SessionTable, range: std::ops::Range<usize>, out: &mut Vec<SessionSnapshot>) -> Result<()> {
    for i in range {
        let (k, from) = table_key(i);
        t.track(&k, from, 58, syn_seg(i as u32), 0, T0 + i as u64 * 1000)
            .context("table refused a session")?;
        if t.ended_pending() >= 64 {
            t.drain_ended_upto(out, 64);
            out.clear();
        }
    }
    Ok(())
}

fn phase_table(n: usize) -> Result<()> {
    println!("table: SessionTable of {n} sessions");
    let m0 = mem()?;
    let c = Cost::start();
    let mut t = SessionTable::new(n, Timeouts::default());
    let took = c.per(1);
    let m1 = mem()?;
    report("allocated at start", m0, m1, n);
    println!("  allocation: {took}");
    let mut out: Vec<SessionSnapshot> = Vec::with_capacity(64);
    let c = Cost::start();
    measure_table(&mut t, 0..n, &mut out)?;
    let per = c.per(n);
    let m2 = mem()?;
    report("full", m0, m2, n);
    println!("  creation: {per}; live {}", t.len());
    // Churn: as many new flows again; each evicts the oldest embryonic session.
    let c = Cost::start();
    measure_table_churn(&mut t, n..2 * n, &mut out)?;
    let per = c.per(n);
    let m3 = mem()?;
    report("after a churn of as many new flows", m0, m3, n);
    let st = t.stats();
    println!(
        "  churn: {per}; created {}, evicted {}, live {}, index refused {}, longest index probe {} buckets",
        st.created,
        st.evicted,
        t.len(),
        st.index_refused,
        t.index_max_dist()
    );
    Ok(())
}

/// [`measure_table`] into a full table (a name of its own for `--callgrind`).
#[inline(never)]
fn measure_table_churn(t: &mut SessionTable, range: std::ops::Range<usize>, out: &mut Vec<SessionSnapshot>) -> Result<()> {
    table_loop(t, range, out)
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

/// What a worker-like loop over SYN frames keeps between frames.
struct SynWorker {
    frame: [u8; 4096],
    out: Vec<SessionSnapshot>,
    last_report: u64,
}

/// SYNs of flows `range` through `insp` as a worker drives it (a measured loop).
#[inline(never)]
fn measure_inspector(insp: &mut Inspector, w: &mut SynWorker, range: std::ops::Range<usize>) -> Result<()> {
    inspector_loop(insp, w, range)
}

#[inline(always)]
fn inspector_loop(insp: &mut Inspector, w: &mut SynWorker, range: std::ops::Range<usize>) -> Result<()> {
    for i in range {
        let (src, sport) = client(i);
        let syn = Syn { src, sport, dst: SERVER, dport: 80, seq: i as u32 };
        warden_perf::syn_frame(&mut w.frame, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &syn);
        let now = T0 + i as u64 * 1000;
        let v = insp.process(&w.frame[..warden_perf::SYN_FRAME_LEN], FrameMeta::new(0, 1, now));
        if v != Verdict::Forward {
            bail!("SYN {i} not forwarded: {v:?}");
        }
        if i % 64 == 63 {
            worker_tick(insp, now, &mut w.last_report, &mut w.out);
        }
    }
    Ok(())
}

/// [`measure_inspector`] into a full table (a name of its own for `--callgrind`).
#[inline(never)]
fn measure_inspector_churn(insp: &mut Inspector, w: &mut SynWorker, range: std::ops::Range<usize>) -> Result<()> {
    inspector_loop(insp, w, range)
}

fn phase_inspector(n: usize) -> Result<()> {
    println!("inspector: Inspector with a table of {n} sessions, default engine");
    let m0 = mem()?;
    let c = Cost::start();
    let mut insp = Inspector::new(n, Timeouts::default(), MalformedPolicy::Drop);
    let took = c.per(1);
    let m1 = mem()?;
    report("allocated at start", m0, m1, n);
    println!("  allocation: {took}");
    let mut w = SynWorker { frame: [0; 4096], out: Vec::new(), last_report: T0 };
    let c = Cost::start();
    measure_inspector(&mut insp, &mut w, 0..n)?;
    let per = c.per(n);
    let m2 = mem()?;
    report("full", m0, m2, n);
    println!("  creation: {per}; live {}, app pool full {}", insp.sessions.len(), insp.engine.pool_full);
    let c = Cost::start();
    measure_inspector_churn(&mut insp, &mut w, n..2 * n)?;
    let per = c.per(n);
    let m3 = mem()?;
    report("after a churn of as many new flows", m0, m3, n);
    let st = insp.sessions.stats();
    println!(
        "  churn: {per}; created {}, evicted {}, live {}, index refused {}, longest index probe {} buckets",
        st.created,
        st.evicted,
        insp.sessions.len(),
        st.index_refused,
        insp.sessions.index_max_dist()
    );
    Ok(())
}

/// The HTTP exchanges of the `inspected` phase.
struct Http {
    frame: [u8; 4096],
    request: Vec<u8>,
    response: Vec<u8>,
}

const CMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SMAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CISN: u32 = 1000;
const SISN: u32 = 5000;

impl Http {
    fn new(response_bytes: usize) -> Result<Self> {
        let request = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n".to_vec();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {response_bytes}\r\n\r\n");
        let mut response = head.into_bytes();
        response.resize(response.len() + response_bytes, b'x');
        if response.len() > 4000 {
            bail!("--response-bytes must keep the response in one frame");
        }
        Ok(Http { frame: [0; 4096], request, response })
    }

    /// One segment of session `i` (`to_server`: sent by the client) through `insp`.
    #[allow(clippy::too_many_arguments)]
    fn step(&mut self, insp: &mut Inspector, i: usize, to_server: bool, seq: u32, ack: u32, flags: u8, payload: Payload, now: u64) -> Result<()> {
        let (c, port) = client(i);
        let seg = if to_server {
            Seg { src: c, sport: port, dst: SERVER, dport: 80, seq, ack, flags }
        } else {
            Seg { src: SERVER, sport: 80, dst: c, dport: port, seq, ack, flags }
        };
        let (src, dst, iface) = if to_server { (CMAC, SMAC, 0) } else { (SMAC, CMAC, 1) };
        let payload: &[u8] = match payload {
            Payload::None => b"",
            Payload::Request => &self.request,
            Payload::Response => &self.response,
        };
        let len = tcp_frame(&mut self.frame, src, dst, &seg, payload);
        let v = insp.process(&self.frame[..len], FrameMeta::new(0, iface, now));
        if v != Verdict::Forward {
            bail!("session {i}: frame not forwarded: {v:?}");
        }
        Ok(())
    }
}

/// What a segment of [`Http`] carries.
#[derive(Clone, Copy)]
enum Payload {
    None,
    Request,
    Response,
}

/// Handshake, request and response of sessions `range` (a measured loop).
#[inline(never)]
fn measure_inspected(insp: &mut Inspector, h: &mut Http, range: std::ops::Range<usize>) -> Result<()> {
    let req = h.request.len() as u32;
    for i in range {
        let now = T0 + i as u64 * 10_000;
        h.step(insp, i, true, CISN, 0, tcpflag::SYN, Payload::None, now)?;
        h.step(insp, i, false, SISN, CISN + 1, tcpflag::SYN | tcpflag::ACK, Payload::None, now + 1)?;
        h.step(insp, i, true, CISN + 1, SISN + 1, tcpflag::ACK, Payload::None, now + 2)?;
        h.step(insp, i, true, CISN + 1, SISN + 1, tcpflag::ACK | tcpflag::PSH, Payload::Request, now + 3)?;
        h.step(insp, i, false, SISN + 1, CISN + 1 + req, tcpflag::ACK | tcpflag::PSH, Payload::Response, now + 4)?;
    }
    Ok(())
}

fn phase_inspected(k: usize, response_bytes: usize) -> Result<()> {
    println!("inspected: {k} HTTP sessions, response {response_bytes} bytes");
    let m0 = mem()?;
    let mut insp = Inspector::new(k.max(1), Timeouts::default(), MalformedPolicy::Drop);
    let m1 = mem()?;
    report("allocated at start (table and engine)", m0, m1, k);
    let mut h = Http::new(response_bytes)?;
    let c = Cost::start();
    measure_inspected(&mut insp, &mut h, 0..k)?;
    let per = c.per(k);
    let m2 = mem()?;
    report("handshake, request, response (not yet acknowledged)", m1, m2, k);
    println!(
        "  per session (5 frames): {per}; app pool full {}; stream bytes held {}, kept for conflict checks {}",
        insp.engine.pool_full,
        insp.engine.buffered(),
        insp.engine.kept()
    );
    let (req, resp) = (h.request.len() as u32, h.response.len() as u32);
    for i in 0..k {
        let now = T0 + i as u64 * 10_000 + 5;
        h.step(&mut insp, i, true, CISN + 1 + req, SISN + 1 + resp, tcpflag::ACK, Payload::None, now)?;
    }
    let m3 = mem()?;
    report("after the client acknowledged the responses", m1, m3, k);
    println!("  stream bytes held {}, kept {}", insp.engine.buffered(), insp.engine.kept());
    Ok(())
}

/// Instructions per operation of each measured loop, each phase run under callgrind
/// (`valgrind --tool=callgrind`, counting only inside the loop's function): a figure the
/// machine's load does not move.
fn callgrind(exe: &std::path::Path, n: usize, k: usize, response_bytes: usize) -> Result<()> {
    println!("instructions per operation (callgrind, {n} sessions, {k} inspected):");
    let measures = [
        ("table", "measure_table", n, "table: session created"),
        ("table", "measure_table_churn", n, "table: session created evicting one"),
        ("inspector", "measure_inspector", n, "inspector: SYN creating a session"),
        ("inspector", "measure_inspector_churn", n, "inspector: SYN creating a session evicting one"),
        ("inspected", "measure_inspected", k, "inspected: HTTP session, 5 frames"),
    ];
    for (phase, func, ops, what) in measures {
        let out = std::env::temp_dir().join(format!("sessions-mem-{}-{func}.callgrind", std::process::id()));
        let st = Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(format!("--toggle-collect=*{func}"))
            .arg(exe)
            .args(["--phase", phase, "--sessions", &n.to_string(), "--inspected", &k.to_string()])
            .args(["--response-bytes", &response_bytes.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("run valgrind (apt install valgrind)")?;
        if !st.success() {
            bail!("{phase} under callgrind: {st}");
        }
        let text = std::fs::read_to_string(&out).with_context(|| format!("read {}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        let ir: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no summary in the callgrind output")?;
        println!("  {what}: {:.0}", ir as f64 / ops.max(1) as f64);
    }
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
    println!(
        "  AppCtx {} (parser state AppState {}: its largest parser's, threat state Threats {} inside each; Stream {} x 2; mid-stream walks Mid {}; echo Mirror {})",
        size_of::<AppCtx>(),
        size_of::<AppState>(),
        size_of::<warden_dp::detect::Threats>(),
        size_of::<warden_dp::stream::Stream>(),
        size_of::<warden_dp::app::midstream::Mid>(),
        size_of::<warden_dp::app::echo::Mirror>()
    );
    println!("  AppSummary {}", size_of::<AppSummary>());
    let mut t = SessionTable::new(n, Timeouts::default());
    let f = t.footprint();
    t.set_shadow_states(true);
    let shadow = t.footprint().shadow;
    drop(t);
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
    println!(
        "  while a shadow policy is loaded: + shadow states {:.1} = {:.1} bytes per session",
        per(shadow),
        f.per_session() + per(shadow)
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
        None if args.callgrind => callgrind(&std::env::current_exe()?, args.sessions, args.inspected, args.response_bytes),
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
