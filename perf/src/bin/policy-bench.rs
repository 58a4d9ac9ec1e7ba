//! Policy rule lookup benchmark: nanoseconds per `CompiledPolicy::evaluate` (and per
//! `reference_evaluate`, the linear matcher, for comparison) on random policies of 10, 1 000
//! and 100 000 rules, over random connection facts; then nanoseconds per
//! `CompiledPolicy::external_ip_mitm` (the `k8s_external_ip_mitm` lookup) with 10, 1 000 and
//! 10 000 services. Pure CPU, no network, no root.
//!
//! ```text
//! cargo run --release -p warden-perf --bin policy-bench [-- --facts 200000 --seed 1]
//! ```
//!
//! Two rule mixes:
//! - `mixed`: rules as an operator writes them: `from`/`to` a workload (most), `any`,
//!   `external` or a CIDR of a usual length (v4 /8 /16 /20 /24 /28 /32, v6 /32 /48 /56 /64
//!   /96 /128); mostly TCP/UDP with one port, a list or a range; some app and fqdn rules;
//!   priorities with ties.
//! - `cidr-all`: every rule end a CIDR of a uniformly random length (v4 0..=32, v6 0..=128)
//!   inside 198.18.0.0/15 or 2001:db8::/32: the worst case for the prefix tables (many nested
//!   prefixes contain each address).
//!
//! Facts: client and server mostly workload addresses (otherwise random addresses inside
//! and outside the ranges), ports mostly ones rules name, app unknown-yet/unknown/random.
//!
//! Figures: **mean** = thread CPU time of an untimed pass over all facts / facts, best of 5
//! passes (the reliable throughput figure; CPU time, so time lost to other processes on a
//! shared machine does not count); **median** and **p99** = per-call times measured with a
//! `Instant::now()` pair around each call, minus the median cost of an empty pair (printed as
//! `timer`), so they carry ~±10 ns of noise.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use warden_dp::app::App;
use warden_dp::policy::{
    known_apps, reference_evaluate, Action, Cidr, CompiledPolicy, Endpoint, Facts, Fqdn, IpProto, Mode, Policy,
    PortRange, Rule, Service, Workload,
};

#[derive(Parser)]
struct Args {
    /// Random facts per configuration.
    #[arg(long, default_value_t = 200_000)]
    facts: usize,
    /// Facts for the reference matcher at 1 000 rules (it is slow).
    #[arg(long, default_value_t = 50_000)]
    reference_facts: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rule counts to run.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
    rules: Vec<usize>,
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

const V4_BASE: u32 = 0xC612_0000; // 198.18.0.0/15
const V6_BASE: u128 = 0x2001_0db8 << 96; // 2001:db8::/32
const COMMON_PORTS: &[u16] = &[22, 53, 80, 443, 3306, 5432, 6379, 8080, 9092, 27017, 0, 1, 65535];

fn v4_in_range(r: &mut Rng) -> u32 {
    V4_BASE | r.below(1 << 17) as u32
}

fn v6_in_range(r: &mut Rng) -> u128 {
    V6_BASE | (u128::from(r.next()) << 32 | u128::from(r.next() as u32)) >> r.below(64)
}

fn cidr(addr: IpAddr, len: u8) -> Cidr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::from(a) & (u32::MAX << (32 - u32::from(len)))
            };
            Cidr {
                addr: IpAddr::V4(m.into()),
                len,
            }
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::from(a) & (u128::MAX << (128 - u32::from(len)))
            };
            Cidr {
                addr: IpAddr::V6(m.into()),
                len,
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    Mixed,
    CidrAll,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Mixed => "mixed",
            Mix::CidrAll => "cidr-all",
        }
    }
}

fn random_cidr(r: &mut Rng, mix: Mix, v4: bool) -> Cidr {
    if v4 {
        let a = IpAddr::V4(Ipv4Addr::from(v4_in_range(r)));
        let len = match mix {
            Mix::Mixed => *r.pick(&[8u8, 16, 20, 24, 24, 28, 32, 32]),
            Mix::CidrAll => r.below(33) as u8,
        };
        cidr(a, len)
    } else {
        let a = IpAddr::V6(Ipv6Addr::from(v6_in_range(r)));
        let len = match mix {
            Mix::Mixed => *r.pick(&[32u8, 48, 56, 64, 64, 96, 128, 128]),
            Mix::CidrAll => r.below(129) as u8,
        };
        cidr(a, len)
    }
}

fn policy(r: &mut Rng, rules: usize, mix: Mix) -> Policy {
    let n_workloads = (rules / 20).clamp(4, 2000);
    let modes = [Mode::Learn, Mode::Alert, Mode::Protect];
    let workloads: Vec<Workload> = (0..n_workloads)
        .map(|i| {
            let i = i as u32;
            Workload {
                id: format!("w{i}"),
                ips: vec![
                    IpAddr::V4(Ipv4Addr::from(V4_BASE + 16 + i)),
                    IpAddr::V6(Ipv6Addr::from(V6_BASE + 16 + u128::from(i))),
                ],
                macs: vec![],
                iface: None,
                mode: *r.pick(&modes),
                select: Default::default(),
            }
        })
        .collect();
    let apps: Vec<App> = known_apps().collect();
    let mut out = Vec::with_capacity(rules);
    for id in 0..rules as u32 {
        let v4 = r.chance(70);
        let end = |r: &mut Rng, wl_pct: u64| -> Endpoint {
            if mix == Mix::CidrAll {
                return Endpoint::Cidr(random_cidr(r, mix, v4));
            }
            let x = r.below(100);
            if x < wl_pct {
                Endpoint::Workload(r.pick(&workloads).id.clone())
            } else if x < wl_pct + 15 {
                Endpoint::Any
            } else if x < wl_pct + 25 {
                Endpoint::External
            } else {
                Endpoint::Cidr(random_cidr(r, mix, v4))
            }
        };
        let from = end(r, 35);
        let to = end(r, 50);
        let ip_proto = *r.pick(&[
            IpProto::Tcp,
            IpProto::Tcp,
            IpProto::Tcp,
            IpProto::Udp,
            IpProto::Icmp,
            IpProto::Any,
        ]);
        let ports = (ip_proto != IpProto::Icmp && r.chance(80)).then(|| match r.below(4) {
            0 | 1 => vec![{
                let p = if r.chance(70) {
                    *r.pick(COMMON_PORTS)
                } else {
                    r.below(65536) as u16
                };
                PortRange { lo: p, hi: p }
            }],
            2 => (0..2 + r.below(4))
                .map(|_| {
                    let p = r.below(65536) as u16;
                    PortRange { lo: p, hi: p }
                })
                .collect(),
            _ => {
                let lo = r.below(65000) as u16;
                vec![PortRange {
                    lo,
                    hi: lo + r.below(500) as u16,
                }]
            }
        });
        let apps = r.chance(15).then(|| vec![*r.pick(&apps)]);
        let fqdn = r.chance(5).then(|| Fqdn {
            name: format!("s{}.example.test", r.below(50)),
            wildcard: r.chance(50),
        });
        let priority = if r.chance(50) { r.below(rules as u64) as u32 } else { id };
        let action = if r.chance(60) { Action::Allow } else { Action::Deny };
        out.push(Rule {
            id,
            from,
            to,
            ip_proto,
            ports,
            apps,
            fqdn,
            action,
            priority,
        });
    }
    Policy {
        default_mode: Mode::Learn,
        workloads,
        rules: out,
        services: Vec::new(),
        ..Policy::default()
    }
}

const NAMES: &[&str] = &["s1.example.test", "x.s2.example.test", "other.test"];

fn facts(r: &mut Rng, p: &Policy, n: usize) -> Vec<Facts<'static>> {
    let apps: Vec<App> = known_apps().collect();
    let rule_ports: Vec<u16> = p
        .rules
        .iter()
        .filter_map(|r| r.ports.as_ref().map(|v| v[0].lo))
        .take(4096)
        .collect();
    (0..n)
        .map(|_| {
            let v4 = r.chance(70);
            let addr = |r: &mut Rng| -> IpAddr {
                if r.chance(70) {
                    let w = r.pick(&p.workloads);
                    w.ips[if v4 { 0 } else { 1 }]
                } else if r.chance(80) {
                    if v4 {
                        IpAddr::V4(v4_in_range(r).into())
                    } else {
                        IpAddr::V6(v6_in_range(r).into())
                    }
                } else if v4 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, r.below(256) as u8))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, r.below(65536) as u16))
                }
            };
            let (client, server) = (addr(r), addr(r));
            let n_names = r.below(3) as usize;
            Facts {
                client,
                server,
                ip_proto: *r.pick(&[6, 6, 6, 17, 17, 1, 58]),
                server_port: if !rule_ports.is_empty() && r.chance(60) {
                    *r.pick(&rule_ports)
                } else if r.chance(50) {
                    *r.pick(COMMON_PORTS)
                } else {
                    r.below(65536) as u16
                },
                app: match r.below(4) {
                    0 => None,
                    1 => Some(App::Unknown),
                    _ => Some(*r.pick(&apps)),
                },
                server_names: &NAMES[..n_names],
                client_names: &[],
            }
        })
        .collect()
}

struct Row {
    mix: &'static str,
    rules: usize,
    matcher: &'static str,
    compile_ms: f64,
    facts: usize,
    mean: f64,
    median: f64,
    p99: f64,
    enforced: f64,
    by_rule: f64,
}

/// Passes over the facts for the mean figure (the best is kept).
const PASSES: usize = 5;

/// CPU time of the calling thread, in ns (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn timer_overhead() -> f64 {
    let mut v: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2] as f64
}

fn measure(
    eval: &dyn Fn(&Facts<'_>) -> warden_dp::policy::Decision,
    fs: &[Facts<'_>],
    timer: f64,
) -> (f64, f64, f64, f64, f64) {
    // Warm-up and counts.
    let (mut enforced, mut by_rule) = (0usize, 0usize);
    for f in fs {
        let d = eval(f);
        enforced += usize::from(d.verdict.is_some());
        by_rule += usize::from(d.rule_id.is_some());
    }
    // Mean: thread CPU time (time the thread was descheduled by other work on the machine does
    // not count), best of PASSES passes.
    let mut mean = f64::INFINITY;
    for _ in 0..PASSES {
        let t = thread_cpu_ns();
        for f in fs {
            black_box(eval(black_box(f)));
        }
        mean = mean.min((thread_cpu_ns() - t) as f64 / fs.len() as f64);
    }
    let mut each: Vec<f64> = fs
        .iter()
        .map(|f| {
            let t = Instant::now();
            black_box(eval(black_box(f)));
            (t.elapsed().as_nanos() as f64 - timer).max(0.0)
        })
        .collect();
    each.sort_unstable_by(|a, b| a.total_cmp(b));
    let q = |p: f64| each[((each.len() as f64 * p) as usize).min(each.len() - 1)];
    let n = fs.len() as f64;
    (
        mean,
        q(0.5),
        q(0.99),
        100.0 * enforced as f64 / n,
        100.0 * by_rule as f64 / n,
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let timer = timer_overhead();
    let mut rows = Vec::new();
    for mix in [Mix::Mixed, Mix::CidrAll] {
        for &n in &args.rules {
            let mut r = Rng(args.seed ^ (n as u64) ^ ((mix as u64) << 40));
            let p = policy(&mut r, n, mix);
            let t = Instant::now();
            let c = CompiledPolicy::compile(&p)?;
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let fs = facts(&mut r, &p, args.facts);
            // The two matchers must agree (a sample, the reference is slow at size).
            for f in fs.iter().take(if n <= 1000 { 20_000 } else { 200 }) {
                anyhow::ensure!(c.evaluate(f) == reference_evaluate(&p, f), "matchers disagree on {f:?}");
            }
            let (mean, median, p99, enforced, by_rule) = measure(&|f| c.evaluate(f), &fs, timer);
            let compiled_row = Row {
                mix: mix.name(),
                rules: n,
                matcher: "compiled",
                compile_ms,
                facts: fs.len(),
                mean,
                median,
                p99,
                enforced,
                by_rule,
            };
            eprintln!("{} {} rules: {:?}", mix.name(), n, c.index_stats());
            rows.push(compiled_row);
            if n <= 1000 {
                let nf = if n <= 10 {
                    fs.len()
                } else {
                    args.reference_facts.min(fs.len())
                };
                let (mean, median, p99, enforced, by_rule) = measure(&|f| reference_evaluate(&p, f), &fs[..nf], timer);
                rows.push(Row {
                    mix: mix.name(),
                    rules: n,
                    matcher: "reference",
                    compile_ms: 0.0,
                    facts: nf,
                    mean,
                    median,
                    p99,
                    enforced,
                    by_rule,
                });
            }
        }
    }
    let ext_rows = external_ips(&args)?;
    println!("timer overhead (median empty Instant pair, subtracted from median/p99): {timer:.0} ns");
    println!();
    println!("| mix | rules | matcher | compile ms | facts | mean ns | median ns | p99 ns | enforced | rule-decided |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let compile = if r.matcher == "compiled" {
            format!("{:.1}", r.compile_ms)
        } else {
            "-".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} % | {:.0} % |",
            r.mix, r.rules, r.matcher, compile, r.facts, r.mean, r.median, r.p99, r.enforced, r.by_rule
        );
    }
    println!();
    println!("externalIP lookup (`external_ip_mitm`, after an evaluation; half the servers claimed):");
    println!();
    println!("| services | claims | compile ms | facts | mean ns | flagged |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in ext_rows {
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.0} % |",
            r.services, r.claims, r.compile_ms, r.facts, r.mean, r.flagged
        );
    }
    Ok(())
}

struct ExtRow {
    services: usize,
    claims: usize,
    compile_ms: f64,
    facts: usize,
    mean: f64,
    flagged: f64,
}

/// The externalIP lookup on a 1 000-rule mixed policy with `n` services: each claims two
/// addresses (a workload's a third of the time, else an outside one), half of them on one or
/// two port ranges, backed by one to three workloads; facts are the evaluation benchmark's,
/// with the server replaced by a claimed address half of the time.
fn external_ips(args: &Args) -> Result<Vec<ExtRow>> {
    let mut rows = Vec::new();
    for n in [10usize, 1000, 10_000] {
        let mut r = Rng(args.seed ^ 0xe17 ^ (n as u64) << 20);
        let mut p = policy(&mut r, 1000, Mix::Mixed);
        let mut claimed = Vec::new();
        let mut claims = 0;
        for i in 0..n {
            let v4 = r.chance(70);
            let external_ips: Vec<IpAddr> = (0..2)
                .map(|_| {
                    if r.chance(33) {
                        r.pick(&p.workloads).ips[usize::from(!v4)]
                    } else if v4 {
                        IpAddr::V4(Ipv4Addr::from(v4_in_range(&mut r)))
                    } else {
                        IpAddr::V6(Ipv6Addr::from(v6_in_range(&mut r)))
                    }
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let ports = r.chance(50).then(|| {
                (0..1 + r.below(2))
                    .map(|_| {
                        let lo = *r.pick(COMMON_PORTS);
                        PortRange { lo, hi: lo.saturating_add(r.below(3) as u16 * 50) }
                    })
                    .collect::<Vec<_>>()
            });
            claims += external_ips.len() * ports.as_ref().map_or(1, Vec::len);
            claimed.extend(external_ips.iter().copied());
            let backing = (0..1 + r.below(3)).map(|_| r.pick(&p.workloads).id.clone()).collect::<std::collections::BTreeSet<_>>();
            p.services.push(Service {
                name: format!("s{i}"),
                namespace: "bench".into(),
                external_ips,
                ports,
                workloads: backing.into_iter().collect(),
            });
        }
        let t = Instant::now();
        let c = CompiledPolicy::compile(&p)?;
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut fs = facts(&mut r, &p, args.facts);
        for f in fs.iter_mut() {
            if r.chance(50) {
                f.server = *r.pick(&claimed);
            }
        }
        let calls: Vec<_> = fs.iter().map(|f| (c.evaluate(f).client_workload, f.server, f.ip_proto, f.server_port)).collect();
        let flagged = calls.iter().filter(|a| c.external_ip_mitm(a.0, a.1, a.2, a.3).is_some()).count();
        let mut mean = f64::INFINITY;
        for _ in 0..PASSES {
            let t = thread_cpu_ns();
            for a in &calls {
                let a = black_box(a);
                black_box(c.external_ip_mitm(a.0, a.1, a.2, a.3));
            }
            mean = mean.min((thread_cpu_ns() - t) as f64 / calls.len() as f64);
        }
        rows.push(ExtRow {
            services: n,
            claims,
            compile_ms,
            facts: calls.len(),
            mean,
            flagged: 100.0 * flagged as f64 / calls.len() as f64,
        });
    }
    Ok(rows)
}
