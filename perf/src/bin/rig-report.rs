//! Turns the rig's per-run results (one JSON object per line, from `xdp-gen` plus the leg,
//! placement and note `rig.sh` adds, or a `skipped` reason) into the printed table and the
//! JSON file under `perf/out/`. Each leg's sink rate is compared with the in-kernel redirect's
//! at the same frame size: from this run, or else from the newest earlier `rig-*.json`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The results, one JSON object per line.
    #[arg(long)]
    results: PathBuf,
    /// Where to write the run's JSON.
    #[arg(long)]
    out: PathBuf,
    /// Where earlier runs' JSON files are (for the redirect ceiling when this run has none).
    #[arg(long)]
    previous_dir: Option<PathBuf>,
    /// The command line that ran the rig, recorded in the JSON.
    #[arg(long, default_value = "")]
    command: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results).context("read results")?;
    let mut rows: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let earlier = args
        .previous_dir
        .as_deref()
        .map(earlier_rows)
        .unwrap_or_default();
    let ceiling = |rows: &[Value], size: &Value| {
        rows.iter()
            .find(|r| r["leg"] == "redirect" && &r["size"] == size && r["sink_pps"].is_number())
            .and_then(|r| r["sink_pps"].as_f64())
    };
    for i in 0..rows.len() {
        let size = rows[i]["size"].clone();
        let (ceil, from) = match ceiling(&rows, &size) {
            Some(c) => (Some(c), "this run".to_string()),
            None => match earlier
                .iter()
                .find_map(|(f, r)| ceiling(r, &size).map(|c| (c, f)))
            {
                Some((c, f)) => (Some(c), f.clone()),
                None => (None, String::new()),
            },
        };
        if let (Some(o), Some(s)) = (
            rows[i]["offered_pps"].as_f64(),
            rows[i]["sink_pps"].as_f64(),
        ) {
            rows[i]["loss"] = json!(1.0 - s / o.max(1.0));
        }
        if let (Some(c), Some(s)) = (ceil, rows[i]["sink_pps"].as_f64()) {
            rows[i]["ratio_vs_redirect"] = json!(s / c);
            rows[i]["redirect_from"] = json!(from);
        }
    }

    let mpps = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{:.3}", x / 1e6));
    println!(
        "{:<9} {:>5} {:>8} {:>8} {:>6} {:>9} {:>9}  placement / note",
        "leg", "bytes", "offered", "sink", "loss", "vs redir", "busy 0/1"
    );
    for r in &rows {
        let leg = r["leg"].as_str().unwrap_or("?");
        let size = r["size"].as_u64().unwrap_or(0);
        if let Some(why) = r["skipped"].as_str() {
            println!(
                "{leg:<9} {size:>5} {:>8} {:>8} {:>6} {:>9} {:>9}  SKIPPED: {why}",
                "-", "-", "-", "-", "-"
            );
            continue;
        }
        let ratio = r["ratio_vs_redirect"].as_f64().map_or("-".into(), |x| {
            let mark = if r["redirect_from"] == "this run" {
                ""
            } else {
                "*"
            };
            format!("{:.2}{mark}", x)
        });
        let note = r["note"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(|n| format!(" ({n})"));
        println!(
            "{leg:<9} {size:>5} {:>8} {:>8} {:>6} {:>9} {:>9}  {}{}",
            mpps(&r["offered_pps"]),
            mpps(&r["sink_pps"]),
            r["loss"]
                .as_f64()
                .map_or("-".into(), |l| format!("{:.0}%", l * 100.0)),
            ratio,
            busy(&r["cpu_busy"]),
            r["placement"].as_str().unwrap_or(""),
            note.unwrap_or_default()
        );
    }
    if rows
        .iter()
        .any(|r| r["redirect_from"].as_str().is_some_and(|f| f != "this run"))
    {
        println!("* redirect ceiling taken from an earlier run (see redirect_from in the JSON)");
    }

    println!(
        "offered, sink: Mpps (median of the runs); loss: share of offered frames not at the sink;"
    );
    println!(
        "busy 0/1: % of the run cpu0 and cpu1 were busy (see perf/README.md for how to read it)"
    );
    let report = json!({
        "command": args.command,
        "machine": machine(),
        "rows": rows,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("write {}", args.out.display()))?;
    println!("written {}", args.out.display());
    Ok(())
}

/// `cpu_busy` as "100/87".
fn busy(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| format!("{:.0}", x * 100.0))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("/")
    }
}

/// Rows of earlier `rig-*.json` files in `dir`, newest first.
fn earlier_rows(dir: &Path) -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rig-"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .rev()
        .filter_map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, v["rows"].as_array()?.clone()))
        })
        .collect()
}

/// Core count, kernel release and CPU model of this machine.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo").lines().find_map(|l| {
        l.strip_prefix("model name")
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
    });
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu": cpu,
    })
}
