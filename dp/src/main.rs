//! The `warden` binary: `warden run` (the inline dataplane) and `warden replay` (offline).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden_dp::config::{Config, InlinePair};

#[derive(Parser)]
#[command(name = "warden", version, about = "Inline L3-L7 dataplane over AF_XDP")]
struct Cli {
    /// Log format on stderr: `text` or `json` (one JSON object per line); overrides
    /// `[log] format`.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the dataplane inline between interface pairs (root).
    Run {
        /// Configuration file (warden.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Inline pair A:B (repeatable); adds to the pairs of the config file.
        #[arg(long, value_name = "A:B")]
        inline: Vec<String>,
        /// Monitor interface IFACE receive-only (repeatable; monitor mode: records and alerts,
        /// nothing forwarded or dropped); adds to the config file's `[[monitor]]`.
        #[arg(long, value_name = "IFACE")]
        monitor: Vec<String>,
        /// Worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Control socket path.
        #[arg(long)]
        socket: Option<String>,
        /// Seconds between connection report batches.
        #[arg(long, value_name = "SECS")]
        report_interval: Option<u64>,
        /// Policy file (TOML) enforced from the start; overrides `[policy] file`.
        #[arg(long, value_name = "FILE")]
        policy: Option<String>,
        /// Serve Prometheus metrics on ADDR (`IP:PORT`, e.g. 127.0.0.1:9597; GET /metrics);
        /// overrides `[metrics] listen`. Off when neither is set.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Test hook: honour test-only control requests (`test_kill_worker`). For end-to-end
        /// tests; hidden from --help.
        #[arg(long, hide = true)]
        test_hooks: bool,
    },
    /// Run the inspection pipeline over a pcap/pcapng file (Ethernet, Linux cooked SLL/SLL2,
    /// raw IP, BSD/OpenBSD loopback); print one connection record per session as JSON lines on
    /// stdout and a summary on stderr. An unsupported link type, or a capture none of whose
    /// frames could be inspected, is an error.
    Replay {
        /// Capture file.
        file: PathBuf,
        /// Configuration file (session sizes and timeouts apply).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Policy file: records get the verdicts it would give.
        #[arg(long, value_name = "FILE")]
        policy: Option<String>,
        /// Pipelines to split the flows over, by the hash the workers use (the same records
        /// as with 1, except for detectors that span host pairs: see `replay_file_threads`).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
        /// Shadow policy file, evaluated beside --policy: records get `shadow_verdict` /
        /// `shadow_rule_id` where it differs, and stderr gets its diff (as `wardenctl policy
        /// diff`).
        #[arg(long, value_name = "FILE")]
        shadow: Option<String>,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config, String> {
    match config {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The log format: the flag, else the config file's `[log] format` (read again by the
    // command; a file that does not load is reported by it), else text.
    let file_format = match &cli.cmd {
        Cmd::Run { config: Some(p), .. } | Cmd::Replay { config: Some(p), .. } => {
            Config::load(p).ok().and_then(|c| c.log.format)
        }
        _ => None,
    };
    let json = cli.log_format.as_deref().or(file_format.as_deref()) == Some("json");
    warden_dp::logging::init(json);
    let result = match cli.cmd {
        Cmd::Run {
            config,
            inline,
            monitor,
            workers,
            socket,
            report_interval,
            policy,
            metrics,
            test_hooks,
        } => (|| {
            // The same reading at start and on SIGHUP: the file, then the command line.
            let read = move || -> Result<Config, String> {
                let mut cfg = load(config.as_ref())?;
                for p in &inline {
                    cfg.inline.push(InlinePair::parse_flag(p)?);
                }
                for m in &monitor {
                    cfg.monitor.push(warden_dp::config::MonitorIface { iface: m.clone() });
                }
                if let Some(w) = workers {
                    cfg.dataplane.workers = w;
                }
                if let Some(s) = &socket {
                    cfg.dataplane.socket = s.clone();
                }
                if let Some(r) = report_interval {
                    cfg.dataplane.report_interval = r;
                }
                if policy.is_some() {
                    cfg.policy.file = policy.clone();
                }
                if metrics.is_some() {
                    cfg.metrics.listen = metrics.clone();
                }
                cfg.validate("command line").map_err(|e| e.to_string())?;
                Ok(cfg)
            };
            let cfg = read()?;
            let opts = warden_dp::daemon::RunOptions { test_hooks, reload: Some(std::sync::Arc::new(read)) };
            warden_dp::daemon::run(cfg, opts).map_err(|e| format!("{e:#}"))
        })(),
        Cmd::Replay { file, config, policy, threads, shadow } => (|| {
            let mut cfg = load(config.as_ref())?;
            if policy.is_some() {
                cfg.policy.file = policy;
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let sum = warden_dp::replay::replay_json_with(&file, &cfg, usize::from(threads), shadow.as_deref(), &mut out)
                .map_err(|e| e.to_string())?;
            drop(out);
            let secs = sum.seconds.max(1e-9);
            let cpu: Vec<String> = sum.thread_cpu_s.iter().map(|s| format!("{s:.3}")).collect();
            eprintln!(
                "replay {}: {} frames, {} bytes, {} sessions, {} malformed, {} skipped, {} spoofed, {:.3} s, {:.0} frames/s, {:.3} Gbit/s; {} threads, CPU {:.3} s (process), {} s (pipelines)",
                file.display(),
                sum.frames,
                sum.bytes,
                sum.sessions,
                sum.malformed,
                sum.skipped.total(),
                sum.spoofed,
                sum.seconds,
                sum.frames as f64 / secs,
                sum.bytes as f64 * 8.0 / secs / 1e9,
                sum.threads,
                sum.cpu_s,
                cpu.join(" + ")
            );
            if sum.skipped.total() > 0 {
                let on: Vec<String> = sum.unsupported.iter().map(|u| format!("{u}: {} frames", u.frames)).collect();
                eprintln!(
                    "replay {}: {} frames skipped ({}){}{}",
                    file.display(),
                    sum.skipped.total(),
                    sum.skipped,
                    if on.is_empty() { "" } else { "; unsupported " },
                    on.join(", ")
                );
            }
            if !sum.threats.is_empty() {
                let t: Vec<String> = sum.threats.iter().map(|(id, hits, dropped)| format!("{id} {hits} ({dropped} frames dropped)")).collect();
                eprintln!("replay {}: threats: {}; {} threat events", file.display(), t.join(", "), sum.threat_events.len());
            }
            let tunnels: Vec<String> = sum.tunnels.named().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            if !tunnels.is_empty() {
                eprintln!("replay {}: tunnel frames: {}", file.display(), tunnels.join(", "));
            }
            if sum.reassembled + sum.fragments_forwarded + sum.fragments_dropped > 0 {
                eprintln!(
                    "replay {}: {} datagrams reassembled, {} fragment frames forwarded, {} dropped",
                    file.display(),
                    sum.reassembled,
                    sum.fragments_forwarded,
                    sum.fragments_dropped
                );
            }
            if let Some(d) = &sum.shadow_diff {
                eprintln!("replay {}: shadow policy diff:", file.display());
                for line in warden_control::render::policy_diff(d) {
                    eprintln!("{line}");
                }
            }
            Ok(())
        })(),
        Cmd::CheckConfig { file } => Config::load(&file)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                for w in &cfg.warnings {
                    eprintln!("warden: warning: {w}");
                }
                warden_dp::daemon::load_policy(&cfg).map(|_| ())
            })
            .map(|_| println!("{}: ok", file.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e}");
            ExitCode::FAILURE
        }
    }
}
