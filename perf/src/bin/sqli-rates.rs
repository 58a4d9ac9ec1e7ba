//! SQL injection detection rates and cost (perf/RESULTS.md, "SQL injection detection").
//!
//! Reads the set built by `perf/sqli/dataset.py` (JSON lines: HTTP requests and SQL statements,
//! each labelled attack or benign with its source) and runs every detector variant on every
//! item: detection rate (attacks flagged / attacks) and false-positive rate (benign flagged /
//! benign) per source and overall, and the cost of one check (median ns over many, run in
//! release mode).
//!
//! HTTP items go through Warden's real HTTP/1 parser (`Http::feed`, which URL-decodes the path,
//! each query value and each form value and runs libinjection on them): that is the
//! `production` row. The other HTTP rows decode the values here the same way and run one
//! detector on each. SQL items are statements; `production` is `Threats::sql_in` (the rules).
//!
//! `cargo run --release -p warden-perf --bin sqli-rates -- perf/out/sqli-dataset.jsonl`
//! (`--show DETECTOR` prints the misses and false positives of one variant).
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;
use warden_dp::app::http::Http;
use warden_dp::app::{AppParser, Dir};
use warden_dp::detect::sql::{Dialect, Fragments, StatementDetector};
use warden_dp::detect::sqli::{is_plain, HttpValue, Libinjection, SqliDetector};
use warden_dp::detect::urlenc::{decode_into, needs_decoding, values, MAX_VALUE};
use warden_dp::detect::Threats;

struct Item {
    kind: String,
    attack: bool,
    source: String,
    bytes: Vec<u8>,
    dialect: Dialect,
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

/// The request's raw values: the path, each query value, each form value.
fn raw_values(req: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let line_end = req.windows(2).position(|w| w == b"\r\n").unwrap_or(req.len());
    let line = &req[..line_end];
    let target = line.split(|&c| c == b' ').nth(1).unwrap_or_default();
    let (path, query) = match target.iter().position(|&c| c == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[][..]),
    };
    out.push((path.to_vec(), false));
    out.extend(values(query).map(|v| (v.to_vec(), true)));
    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&req[..i]).to_ascii_lowercase();
        if head.contains("application/x-www-form-urlencoded") {
            out.extend(values(&req[i + 4..]).map(|v| (v.to_vec(), true)));
        }
    }
    out
}

fn decoded(raw: &[u8], plus: bool) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_VALUE];
    let n = decode_into(raw, plus, &mut buf);
    buf.truncate(n);
    buf
}

type Check = Box<dyn Fn(&Item) -> bool>;

fn http_detectors() -> Vec<(&'static str, Check)> {
    let li = |v: &[u8]| !is_plain(v) && Libinjection.is_injection(v);
    let rules = StatementDetector::new(Dialect::Mysql);
    vec![
        (
            "production: Http parser (HttpValue on decoded + raw values)",
            Box::new(|it: &Item| {
                let mut h = Http::default();
                let _ = h.feed(Dir::ToServer, &it.bytes);
                h.threats().is_some_and(|t| !t.is_empty())
            }),
        ),
        (
            "libinjection, decoded values only",
            Box::new(move |it: &Item| raw_values(&it.bytes).iter().any(|(r, plus)| li(&decoded(r, *plus)))),
        ),
        ("libinjection, raw values only", Box::new(move |it: &Item| raw_values(&it.bytes).iter().any(|(r, _)| li(r)))),
        (
            "statement rules on decoded values",
            Box::new(move |it: &Item| {
                raw_values(&it.bytes).iter().any(|(r, plus)| rules.is_injection(&decoded(r, *plus)))
            }),
        ),
        (
            "statement rules on value inside WHERE id=<v> or name='<v>'",
            Box::new(move |it: &Item| {
                raw_values(&it.bytes).iter().skip(1).any(|(r, plus)| {
                    let v = decoded(r, *plus);
                    let mut a = b"SELECT * FROM items WHERE id=".to_vec();
                    a.extend_from_slice(&v);
                    let mut b = b"SELECT * FROM items WHERE name='".to_vec();
                    b.extend_from_slice(&v);
                    b.push(b'\'');
                    rules.is_injection(&a) && rules.is_injection(&b)
                })
            }),
        ),
        (
            "HttpValue (libinjection, else rules in contexts), decoded only",
            Box::new(move |it: &Item| {
                raw_values(&it.bytes).iter().any(|(r, plus)| HttpValue { rules: true }.is_injection(&decoded(r, *plus)))
            }),
        ),
        (
            "statement rules (lenient) alone on WHERE c=<v> / c='<v>' / c=\"<v>\" / `<v>`=1",
            Box::new(move |it: &Item| {
                raw_values(&it.bytes).iter().any(|(r, plus)| {
                    let v = decoded(r, *plus);
                    !is_plain(&v) && warden_dp::detect::sqli::in_contexts(&v).is_some()
                })
            }),
        ),
        (
            "libinjection OR statement rules (decoded values)",
            Box::new(move |it: &Item| {
                raw_values(&it.bytes).iter().any(|(r, plus)| {
                    let v = decoded(r, *plus);
                    li(&v) || (needs_decoding(r, *plus) && li(r)) || rules.is_injection(&v)
                })
            }),
        ),
    ]
}

fn sql_detectors() -> Vec<(&'static str, Check)> {
    let det = |f: Fragments| {
        move |it: &Item| {
            StatementDetector { dialect: it.dialect, fragments: f, ..StatementDetector::default() }
                .is_injection(&it.bytes)
        }
    };
    vec![
        (
            "production: Threats::sql_in (statement rules)",
            Box::new(|it: &Item| Threats::default().sql_in(Dir::ToServer, it.dialect, false, &it.bytes)),
        ),
        ("libinjection on the whole statement", Box::new(|it: &Item| Libinjection.is_injection(&it.bytes))),
        ("rules + libinjection after each WHERE comparison", Box::new(det(Fragments::AfterComparison))),
        ("rules + libinjection at each string literal", Box::new(det(Fragments::AtStrings))),
    ]
}

fn median_ns(items: &[&Item], f: &Check) -> f64 {
    // Every item (at most 4000, spread over the set), 20 runs each; median of per-item means.
    let step = (items.len() / 4000).max(1);
    let mut v: Vec<f64> = items
        .iter()
        .step_by(step)
        .map(|it| {
            let t = Instant::now();
            for _ in 0..20 {
                std::hint::black_box(f(std::hint::black_box(it)));
            }
            t.elapsed().as_nanos() as f64 / 20.0
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("perf/out/sqli-dataset.jsonl");
    let show = args.iter().position(|a| a == "--show").and_then(|i| args.get(i + 1)).cloned();
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path} (run perf/sqli/dataset.py)"))?;
    let mut items = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = s("kind");
        let body = if kind == "http" { s("request") } else { s("text") };
        items.push(Item {
            attack: s("label") == "attack",
            source: s("source"),
            bytes: latin1(&body),
            dialect: match s("dialect").as_str() {
                "mysql" => Dialect::Mysql,
                "cql" => Dialect::Cql,
                _ => Dialect::Ansi,
            },
            kind,
        });
    }
    for (kind, dets) in [("http", http_detectors()), ("sql", sql_detectors())] {
        let set: Vec<&Item> = items.iter().filter(|i| i.kind == kind).collect();
        println!("\n## {kind}: {} items\n", set.len());
        let mut sources: BTreeMap<(bool, &str), Vec<&Item>> = BTreeMap::new();
        for it in &set {
            sources.entry((!it.attack, it.source.as_str())).or_default().push(it);
        }
        let names: Vec<String> = (0..dets.len()).map(|i| format!("D{}", i + 1)).collect();
        for (i, (name, _)) in dets.iter().enumerate() {
            println!("- D{}: {name}", i + 1);
        }
        println!("\n| source | label | n | {} |", names.join(" | "));
        println!("| --- | --- | ---: |{}", " ---: |".repeat(dets.len()));
        let mut tot: BTreeMap<(bool, bool), (usize, Vec<usize>)> = BTreeMap::new();
        for ((benign, src), its) in &sources {
            let mut row = Vec::new();
            for (di, (dname, f)) in dets.iter().enumerate() {
                let mut n = 0;
                for it in its {
                    let hit = f(it);
                    n += usize::from(hit);
                    if show.as_deref().is_some_and(|s| dname.starts_with(s)) && hit != it.attack {
                        let t = String::from_utf8_lossy(&it.bytes);
                        println!("  [{}] {src}: {}", if hit { "FP" } else { "miss" }, &t[..t.len().min(300)]);
                    }
                }
                row.push(format!("{:.1} %", 100.0 * n as f64 / its.len().max(1) as f64));
                let union = src.contains("union");
                for key in [(*benign, false), (*benign, true)] {
                    if key.1 && union {
                        continue;
                    }
                    let e = tot.entry(key).or_insert((0, vec![0; dets.len()]));
                    if di == 0 {
                        e.0 += its.len();
                    }
                    e.1[di] += n;
                }
            }
            let label = if *benign { "benign" } else { "attack" };
            println!("| {src} | {label} | {} | {} |", its.len(), row.join(" | "));
        }
        for ((benign, no_union), (n, hits)) in &tot {
            let what = match (benign, no_union) {
                (false, false) => "**all attacks** (detection rate)",
                (false, true) => "**attacks without sqlmap union_query**",
                (true, false) => "**all benign** (false-positive rate)",
                (true, true) => continue,
            };
            let row: Vec<String> =
                hits.iter().map(|h| format!("{:.1} %", 100.0 * *h as f64 / (*n).max(1) as f64)).collect();
            println!("| {what} | | {n} | {} |", row.join(" | "));
        }
        let benign: Vec<&Item> = set.iter().copied().filter(|i| !i.attack).collect();
        let row: Vec<String> = dets.iter().map(|(_, f)| format!("{:.0}", median_ns(&set, f))).collect();
        println!("| median ns per check, all items | | | {} |", row.join(" | "));
        let row: Vec<String> = dets.iter().map(|(_, f)| format!("{:.0}", median_ns(&benign, f))).collect();
        println!("| median ns per check, benign items | | | {} |", row.join(" | "));
    }
    // Cost of one check of one decoded HTTP value (the unit the HTTP parser calls per value).
    let mut vals: Vec<(bool, Vec<u8>)> = Vec::new();
    for it in items.iter().filter(|i| i.kind == "http") {
        for (r, plus) in raw_values(&it.bytes).iter().skip(1) {
            vals.push((it.attack, decoded(r, *plus)));
        }
    }
    println!("\n## cost of one check of one decoded HTTP value ({} values)\n", vals.len());
    println!("| check | median ns, all values | median ns, benign values |\n| --- | ---: | ---: |");
    let value_checks: Vec<(&str, Box<dyn Fn(&[u8]) -> bool>)> = vec![
        ("libinjection", Box::new(|v: &[u8]| Libinjection.is_injection(v))),
        ("statement rules in 4 contexts", Box::new(|v: &[u8]| warden_dp::detect::sqli::in_contexts(v).is_some())),
        ("HttpValue (production)", Box::new(|v: &[u8]| HttpValue::default().is_injection(v))),
    ];
    for (name, f) in &value_checks {
        let med = |benign_only: bool| {
            let sel: Vec<&Vec<u8>> = vals.iter().filter(|(a, _)| !benign_only || !a).map(|(_, v)| v).collect();
            let step = (sel.len() / 4000).max(1);
            let mut t: Vec<f64> = sel
                .iter()
                .step_by(step)
                .map(|v| {
                    let s = Instant::now();
                    for _ in 0..20 {
                        std::hint::black_box(f(std::hint::black_box(v)));
                    }
                    s.elapsed().as_nanos() as f64 / 20.0
                })
                .collect();
            t.sort_by(|a, b| a.total_cmp(b));
            t.get(t.len() / 2).copied().unwrap_or(0.0)
        };
        println!("| {name} | {:.0} | {:.0} |", med(false), med(true));
    }
    Ok(())
}
