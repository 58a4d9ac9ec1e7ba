//! The per-core cost of a SYN flood, without veth or AF_XDP: random-tuple SYNs (as
//! `syn-flood` builds them) through one `Inspector` the way a worker drives it (batches of 64
//! frames, expiry every batch, final records drained when 64 wait, in batches of 64, every session's report
//! every `--report-ms` of flood time), with a session table of `--max-sessions`, once without a
//! policy and once under a protect policy that denies every SYN. Prints ns per SYN and what
//! happened to the sessions. Pure CPU, no root:
//! `cargo run --release -p warden-perf --bin synflood-cpu`.
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use warden_dp::inspect::{FrameMeta, Inspector, MalformedPolicy};
use warden_dp::policy::{CompiledPolicy, Policy};
use warden_dp::session::Timeouts;
use warden_perf::Syn;

#[derive(Parser)]
struct Args {
    /// SYNs per variant.
    #[arg(long, default_value_t = 2_000_000)]
    count: u64,
    /// Session table size.
    #[arg(long, default_value_t = 65536)]
    max_sessions: usize,
    /// Flood rate the clock advances at (SYNs per second of flood time).
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Report interval in flood time (ms).
    #[arg(long, default_value_t = 1000)]
    report_ms: u64,
}

const POLICY: &str = r#"
[[workload]]
id = "srv"
ips = ["198.18.0.2"]
mode = "protect"
[[workload]]
id = "cli"
ips = ["198.18.0.1"]
mode = "protect"
[[rule]]
id = 1
from = "cli"
to = "srv"
ip_proto = "tcp"
ports = ["5201"]
action = "allow"
"#;

fn main() -> Result<()> {
    let args = Args::parse();
    for protect in [false, true] {
        let mut insp = Inspector::new(args.max_sessions, Timeouts::default(), MalformedPolicy::Drop);
        if protect {
            insp.set_policy(Arc::new(CompiledPolicy::compile(&Policy::from_toml(POLICY)?)?), 1);
        }
        let mut frame = [0u8; 4096];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let step_ns = 1_000_000_000 / args.rate.max(1);
        let mut now = 1_700_000_000_000_000_000u64;
        let mut last_report = now;
        let mut reports = Vec::new();
        let mut records = 0u64;
        let start = Instant::now();
        let mut dropped = 0u64;
        for i in 0..args.count {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let src = 0xc612_0000u32 | (r as u32 & 0x1_ffff);
            let syn = Syn {
                src: src.to_be_bytes(),
                sport: 1024 + (r >> 17) as u16 % 64000,
                dst: [198, 18, 0, 2],
                dport: 1 + (r >> 33) as u16 % 65535,
                seq: (r >> 32) as u32,
            };
            warden_perf::syn_frame(&mut frame, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &syn);
            now += step_ns;
            let v = insp.process(&frame[..warden_perf::SYN_FRAME_LEN], FrameMeta::new(0, 1, now));
            dropped += u64::from(v != warden_dp::inspect::Verdict::Forward);
            if i % 64 == 63 {
                // A worker loop: events, expiry, reports when due.
                insp.drain_events(&mut reports);
                insp.sessions.expire(now, 256);
                let batch = warden_dp::worker::REPORT_BATCH;
                if now - last_report >= args.report_ms * 1_000_000 {
                    last_report = now;
                    while insp.drain_reports_upto(&mut reports, batch) {
                        records += reports.len() as u64;
                        reports.clear();
                    }
                } else if insp.sessions.ended_pending() >= batch {
                    while insp.drain_ended_upto(&mut reports, batch) {
                        records += reports.len() as u64;
                        reports.clear();
                    }
                }
                records += reports.len() as u64;
                reports.clear();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let st = insp.sessions.stats();
        println!(
            "{}: {} SYNs in {:.2} s = {:.0} ns/SYN ({:.0} k/s); dropped {dropped}; sessions created {}, expired {}, evicted {} (lingering {}, embryonic {}), refused {}; snapshots and events drained {records}; app pool full {}; index refused {}, longest index probe {} buckets",
            if protect { "protect (all denied)" } else { "no policy" },
            args.count,
            secs,
            secs * 1e9 / args.count as f64,
            args.count as f64 / secs / 1e3,
            st.created,
            st.expired,
            st.evicted,
            st.evicted_lingering,
            st.evicted_embryonic,
            st.refused,
            insp.engine.pool_full,
            st.index_refused,
            insp.sessions.index_max_dist(),
        );
    }
    Ok(())
}
