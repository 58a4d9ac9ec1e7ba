//! Summarises one run of `perf/synflood.sh`: the established flow's throughput before, during
//! and after the SYN flood (from `tcp-bulk serve`'s samples and the flood's start and end
//! times), Warden's memory over the run, and what its counters say happened to the flood
//! (sessions created, evicted by class, refused, frames dropped by reason). Prints a table and
//! appends one JSON object to `--out`. Exits non-zero when a check fails.
//!
//! Memory bound: the first memory sample is taken after Warden started, before any traffic.
//! Everything its configuration sizes (session slab and map, ended-record queue, app contexts,
//! UMEM, rings) is allocated by then; what that could occupy if all of it were resident is
//! `VmData + RssFile + RssShmem` of that sample. The report path allocates as records flow, up
//! to its own bound: `report_queue` reports of at most `REPORT_BATCH` snapshots between the
//! worker and the reporter, at most `workers x max_sessions` (at least `MAX_PENDING`)
//! connection records in the reporter (counted at their size plus 1 KiB of strings and index
//! each), and at most `MAX_LEARNED` learned connections (256 bytes each). Peak resident memory
//! (`VmHWM`) must stay under the sum, allocated memory (`VmData`) must not grow by more than
//! the report path's bound, and memory must plateau: the highest resident memory sampled in
//! the second half of the flood at most 8 MiB above the highest of the first half (the table
//! is full long before), so more SYNs do not take more memory.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Name of the run (policy variant).
    #[arg(long)]
    label: String,
    /// `tcp-bulk serve` output: one JSON object per interval.
    #[arg(long)]
    samples: PathBuf,
    /// `syn-flood` output.
    #[arg(long)]
    flood: PathBuf,
    /// Memory samples: `unix_ns VmRSS VmHWM VmData RssFile RssShmem` (KiB) per line, the first
    /// before any traffic.
    #[arg(long)]
    mem: PathBuf,
    /// `wardenctl --json counters` right before the flood.
    #[arg(long)]
    counters_before: PathBuf,
    /// `wardenctl --json counters` after the flood.
    #[arg(long)]
    counters_after: PathBuf,
    /// Seconds of the transfer's start left out of the unloaded window (TCP ramp-up).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The loaded throughput must be at least this share of the unloaded one.
    #[arg(long, default_value_t = 0.9)]
    min_ratio: f64,
    /// `[dataplane] report_queue` of the Warden measured (reports between worker and reporter).
    #[arg(long, default_value_t = 256)]
    report_queue: u64,
    /// `[sessions] max` of the Warden measured.
    #[arg(long, default_value_t = 65536)]
    max_sessions: u64,
    /// Its worker threads.
    #[arg(long, default_value_t = 1)]
    workers: u64,
    /// `tcp-bulk idle` output: idle established connections held through the flood and how many
    /// still carried an echo after it (all must).
    #[arg(long)]
    idle: Option<PathBuf>,
    /// File the run's JSON object is appended to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra fields recorded as they are (a JSON object: command, load, placement, ...).
    #[arg(long, default_value = "{}")]
    meta: String,
}

/// One throughput sample: the interval [start, end] in Unix seconds and its bytes.
struct Sample {
    start: f64,
    end: f64,
    bytes: f64,
}

/// One memory sample (KiB).
#[derive(Clone, Copy)]
struct Mem {
    t: f64,
    rss: u64,
    hwm: u64,
    data: u64,
    file: u64,
    shmem: u64,
}

fn read_lines(p: &PathBuf) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("read {}", p.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Mean throughput (Mbit/s) of the samples lying entirely inside [from, to].
fn mbit(samples: &[Sample], from: f64, to: f64) -> Option<(f64, f64, usize)> {
    let inside: Vec<&Sample> = samples.iter().filter(|s| s.start >= from && s.end <= to).collect();
    if inside.is_empty() {
        return None;
    }
    let bytes: f64 = inside.iter().map(|s| s.bytes).sum();
    let secs: f64 = inside.iter().map(|s| s.end - s.start).sum();
    let worst = inside.iter().map(|s| s.bytes * 8.0 / (s.end - s.start) / 1e6).fold(f64::MAX, f64::min);
    Some((bytes * 8.0 / secs / 1e6, worst, inside.len()))
}

/// Sums a counter over the worker lines (those with a `worker` field).
fn worker_sum(lines: &[Value], field: &str) -> u64 {
    lines.iter().filter(|v| v.get("worker").is_some()).filter_map(|v| v[field].as_u64()).sum()
}

/// Frames dropped by reason, summed over interfaces.
fn drops(lines: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for v in lines.iter().filter(|v| v.get("name").is_some()) {
        if let Some(d) = v["dropped"].as_object() {
            for (k, n) in d {
                *m.entry(k.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
            }
        }
    }
    m
}

fn iface_sum(lines: &[Value], field: &str) -> u64 {
    lines.iter().filter(|v| v.get("name").is_some()).filter_map(|v| v[field].as_u64()).sum()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let samples: Vec<Sample> = read_lines(&args.samples)?
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            let end = v["end_unix_ns"].as_f64().context("end_unix_ns")? / 1e9;
            Ok(Sample { start: end - v["secs"].as_f64().context("secs")?, end, bytes: v["bytes"].as_f64().context("bytes")? })
        })
        .collect::<Result<_>>()?;
    let flood: Value = serde_json::from_str(&std::fs::read_to_string(&args.flood).context("read flood")?)?;
    let (f0, f1) = (
        flood["start_unix_ns"].as_f64().context("start_unix_ns")? / 1e9,
        flood["end_unix_ns"].as_f64().context("end_unix_ns")? / 1e9,
    );
    let Some(first) = samples.first() else { bail!("no throughput samples: did the transfer run?") };
    let unloaded = mbit(&samples, first.start + args.warmup, f0).context("no unloaded samples")?;
    let loaded = mbit(&samples, f0, f1).context("no samples during the flood")?;
    let after = mbit(&samples, f1, f64::MAX);
    let ratio = loaded.0 / unloaded.0;

    let mem: Vec<Mem> = read_lines(&args.mem)?
        .iter()
        .filter_map(|l| {
            let v: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (v.len() == 6).then(|| Mem { t: v[0] as f64 / 1e9, rss: v[1], hwm: v[2], data: v[3], file: v[4], shmem: v[5] })
        })
        .collect();
    let (Some(start), Some(end)) = (mem.first().copied(), mem.last().copied()) else { bail!("no memory samples") };
    let pending_max = (args.max_sessions * args.workers).max(warden_dp::control::MAX_PENDING as u64);
    let report_path = (args.report_queue
        * warden_dp::worker::REPORT_BATCH as u64
        * std::mem::size_of::<warden_dp::session::SessionSnapshot>() as u64
        + pending_max * (std::mem::size_of::<warden_control::ConnectionRecord>() as u64 + 1024)
        + warden_dp::control::MAX_LEARNED as u64 * 256)
        / 1024;
    let preallocated = start.data + start.file + start.shmem;
    let bound = preallocated + report_path;
    let before = mem.iter().rfind(|m| m.t <= f0).copied().unwrap_or(start);
    let peak_rss = mem.iter().map(|m| m.rss).max().unwrap_or(0);
    // RSS at each tenth of the flood: flat once the table has filled.
    let steps: Vec<u64> = (1..=10)
        .filter_map(|i| {
            let t = f0 + (f1 - f0) * f64::from(i) / 10.0;
            mem.iter().rfind(|m| m.t <= t).map(|m| m.rss / 1024)
        })
        .collect();

    let parse = |p: &PathBuf| -> Result<Vec<Value>> { read_lines(p)?.iter().map(|l| Ok(serde_json::from_str(l)?)).collect() };
    let (cb, ca) = (parse(&args.counters_before)?, parse(&args.counters_after)?);
    let d = |f: &str| worker_sum(&ca, f).saturating_sub(worker_sum(&cb, f));
    let (db, da) = (drops(&cb), drops(&ca));
    let dropped: std::collections::BTreeMap<String, u64> =
        da.iter().map(|(k, n)| (k.clone(), n - db.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();

    let ok_tput = ratio >= args.min_ratio;
    let idle: Option<Value> = match &args.idle {
        Some(p) => Some(serde_json::from_str(std::fs::read_to_string(p).context("read idle")?.trim()).context("idle output")?),
        None => None,
    };
    let ok_idle = idle.as_ref().is_none_or(|v| v["conns"].as_u64().is_some() && v["alive"] == v["conns"]);
    let mid = (f0 + f1) / 2.0;
    let first_half = mem.iter().filter(|m| m.t > f0 && m.t <= mid).map(|m| m.rss).max().unwrap_or(before.rss);
    let second_half = mem.iter().filter(|m| m.t > mid && m.t <= f1).map(|m| m.rss).max().unwrap_or(end.rss);
    let plateau = second_half <= first_half + 8192;
    let ok_mem = end.hwm <= bound && end.data <= before.data + report_path && plateau;
    let sent = flood["sent"].as_u64().unwrap_or(0);
    println!("== {} ==", args.label);
    println!(
        "flood: {sent} SYNs in {:.1} s ({:.0} /s) to {} ports {}",
        f1 - f0,
        flood["pps"].as_f64().unwrap_or(0.0),
        flood["dst_ip"].as_str().unwrap_or("?"),
        flood["dst_ports"].as_str().unwrap_or("?")
    );
    println!(
        "established flow: unloaded {:.0} Mbit/s ({} samples), during flood {:.0} Mbit/s (worst 250 ms: {:.0}), after {} -> {:.1} % of unloaded [{}]",
        unloaded.0,
        unloaded.2,
        loaded.0,
        loaded.1,
        after.map(|a| format!("{:.0} Mbit/s", a.0)).unwrap_or_else(|| "-".into()),
        100.0 * ratio,
        if ok_tput { "ok" } else { "FAIL" }
    );
    if let Some(v) = &idle {
        println!(
            "idle established connections held through the flood: {} of {} still work [{}]",
            v["alive"],
            v["conns"],
            if ok_idle { "ok" } else { "FAIL" }
        );
    }
    println!(
        "warden memory (MiB): bound {} (allocated at start {} + report path {}); RSS at start {}, before flood {}, peak {} (VmHWM {}), after {}; VmData before {} after {} [{}]",
        bound / 1024,
        preallocated / 1024,
        report_path / 1024,
        start.rss / 1024,
        before.rss / 1024,
        peak_rss / 1024,
        end.hwm / 1024,
        end.rss / 1024,
        before.data / 1024,
        end.data / 1024,
        if ok_mem { "ok" } else { "FAIL" }
    );
    println!(
        "RSS (MiB) at each tenth of the flood: {steps:?}; highest in the first half {}, in the second {} [{}]",
        first_half / 1024,
        second_half / 1024,
        if plateau { "flat" } else { "GROWING" }
    );
    println!(
        "sessions during the flood: created {}, expired {}, evicted {} (lingering {}, embryonic {}, one-way {}, two-way {}), refused {}; live after {}",
        d("sessions_created"),
        d("sessions_expired"),
        d("sessions_evicted"),
        d("sessions_evicted_lingering"),
        d("sessions_evicted_embryonic"),
        d("sessions_evicted_one_way"),
        d("sessions_evicted_two_way"),
        d("sessions_refused"),
        worker_sum(&ca, "sessions_active"),
    );
    println!(
        "frames dropped by Warden: {dropped:?}; lost at Warden's rx rings (xsk_rx_dropped): {}",
        iface_sum(&ca, "xsk_rx_dropped").saturating_sub(iface_sum(&cb, "xsk_rx_dropped"))
    );
    let meta: Value = serde_json::from_str(&args.meta).context("--meta is not JSON")?;
    let row = json!({
        "label": args.label,
        "meta": meta,
        "flood": flood,
        "throughput_mbit": {"unloaded": unloaded.0, "loaded": loaded.0, "loaded_worst_interval": loaded.1, "after": after.map(|a| a.0), "ratio": ratio},
"memory_kib": {"bound": bound, "preallocated": preallocated, "report_path": report_path, "rss_start": start.rss, "rss_before": before.rss, "rss_peak_sampled": peak_rss, "hwm_end": end.hwm, "rss_end": end.rss, "data_before": before.data, "data_end": end.data, "rss_tenths_mib": steps, "rss_max_first_half_kib": first_half, "rss_max_second_half_kib": second_half},
        "sessions": {
            "created": d("sessions_created"), "expired": d("sessions_expired"), "evicted": d("sessions_evicted"),
            "evicted_lingering": d("sessions_evicted_lingering"), "evicted_embryonic": d("sessions_evicted_embryonic"),
            "evicted_one_way": d("sessions_evicted_one_way"), "evicted_two_way": d("sessions_evicted_two_way"),
            "refused": d("sessions_refused"), "live_after": worker_sum(&ca, "sessions_active"),
        },
        "dropped": dropped,
        "idle_connections": idle,
        "pass": {"throughput": ok_tput, "memory": ok_mem, "idle_connections": ok_idle},
    });
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
        writeln!(f, "{row}")?;
    }
    if !(ok_tput && ok_mem && ok_idle) {
        std::process::exit(1);
    }
    Ok(())
}
