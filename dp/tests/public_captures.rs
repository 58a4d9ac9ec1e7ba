//! The public capture set (`tests/captures/public/`, README there): captures other people
//! recorded (Zeek's and Arkime's test traces, a few others) and own recordings of real tools,
//! for every app Warden parses and every tunnel type of issue 11. Each flow is labelled by an
//! independent dissector, tshark, in `labels.json` (`perf/public/label.py` writes it; the few
//! flows where tshark is clearly wrong are corrected in `overrides.tsv`, each with its reason).
//!
//! Every capture is replayed (`replay_file`, default config) and every labelled flow must get
//! tshark's label from Warden; a flow tshark labels `none` (no protocol Warden parses) must stay
//! `unknown`, and so must every TCP/UDP session Warden reports that is not a labelled flow (an
//! outer tunnel flow, say): no false labels. Flows Warden gets wrong today are listed in
//! `misses.tsv` with what Warden says and why (the feature that is missing). The test fails
//! when a flow not in that list is wrong, when a listed flow is now right (remove it: the list
//! only shrinks) or wrong in another way than listed (update it), and when a listed flow is not
//! in the set. `perf/public/score.sh` prints the same comparison per protocol, beside nDPI.
//!
//! Matching: sessions and labelled flows meet on their protocol and two endpoints (direction
//! free). When several labelled flows share those (the same 5-tuple on several VLANs or in
//! several tunnels), each session goes to the latest flow that started before it (first frame
//! times, microseconds); a flow with no session is `no record`. A flow's verdict is the set of
//! apps other than `unknown` of its sessions (a flow Warden splits into several sessions, as a
//! UDP flow after an idle timeout, is one flow here).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use warden_dp::config::Config;
use warden_dp::replay::replay_file;

fn set_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/public")
}

/// One labelled flow of `labels.json`.
struct Flow {
    id: String,
    key: Key,
    first_us: u64,
    label: String,
}

/// Protocol and the two endpoints, lower one first.
type Key = (String, (String, u16), (String, u16));

fn key(proto: &str, a: (String, u16), b: (String, u16)) -> Key {
    if a <= b {
        (proto.to_string(), a, b)
    } else {
        (proto.to_string(), b, a)
    }
}

/// Canonical text of an address (tshark and Warden may write IPv6 differently).
fn addr(s: &str) -> String {
    s.parse::<std::net::IpAddr>().map_or_else(|_| s.to_string(), |a| a.to_string())
}

fn end_text(a: &str, port: u16) -> String {
    if a.contains(':') {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    }
}

fn labels() -> BTreeMap<String, Vec<Flow>> {
    let text = std::fs::read_to_string(set_dir().join("labels.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for (cap, flows) in v["captures"].as_object().unwrap() {
        let flows = flows
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap().to_string();
                let p = |k: &str| f[k].as_u64().unwrap() as u16;
                Flow {
                    id: s("flow"),
                    key: key(
                        &s("proto"),
                        (addr(&s("client")), p("client_port")),
                        (addr(&s("server")), p("server_port")),
                    ),
                    first_us: f["first_us"].as_u64().unwrap(),
                    label: s("label"),
                }
            })
            .collect();
        out.insert(cap.clone(), flows);
    }
    out
}

/// An expected miss: what Warden says now and why.
struct Miss {
    got: String,
    reason: String,
    seen: bool,
}

/// `misses.tsv`: capture, flow, label, what Warden says, reason (tab separated, `#` comments).
fn misses() -> BTreeMap<(String, String), Miss> {
    let text = std::fs::read_to_string(set_dir().join("misses.tsv")).unwrap();
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "misses.tsv line {}: want 5 tab-separated fields: {line}", n + 1);
        assert!(!f[4].trim().is_empty(), "misses.tsv line {}: no reason", n + 1);
        let prev = out.insert(
            (f[0].to_string(), f[1].to_string()),
            Miss { got: f[3].to_string(), reason: f[4].to_string(), seen: false },
        );
        assert!(prev.is_none(), "misses.tsv line {}: listed twice", n + 1);
    }
    out
}

/// A session Warden reported: its key, first frame (µs) and app.
struct Session {
    key: Key,
    id: String,
    first_us: u64,
    app: String,
}

fn sessions(path: &Path) -> Result<Vec<Session>, String> {
    let (records, _) = replay_file(path, &Config::default()).map_err(|e| {
        // Relative to the set and up to the first ';', as in misses.tsv.
        let text = e.to_string().replace(&format!("{}/", set_dir().display()), "");
        text.split(';').next().unwrap_or_default().to_string()
    })?;
    let mut out = Vec::new();
    for r in records {
        let proto = match r.ip_proto {
            6 => "tcp",
            17 => "udp",
            _ => continue,
        };
        let (c, s) = (addr(&r.client_ip), addr(&r.server_ip));
        let first = humantime::parse_rfc3339(&r.first_seen).map_err(|e| format!("{}: {e}", r.first_seen))?;
        let first_us = first.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
        out.push(Session {
            key: key(proto, (c.clone(), r.client_port), (s.clone(), r.server_port)),
            id: format!("{proto} {} > {}", end_text(&c, r.client_port), end_text(&s, r.server_port)),
            first_us,
            app: r.app,
        });
    }
    Ok(out)
}

/// Verdict text of a set of apps: `no record`, `unknown`, the app, or apps joined by `+`.
fn verdict(apps: Option<&BTreeSet<String>>) -> String {
    match apps {
        None => "no record".into(),
        Some(a) => {
            let known: Vec<&str> = a.iter().map(String::as_str).filter(|x| *x != "unknown").collect();
            if known.is_empty() {
                "unknown".into()
            } else {
                known.join("+")
            }
        }
    }
}

fn right(label: &str, got: &str) -> bool {
    if label == "none" {
        got == "unknown" || got == "no record"
    } else {
        got == label
    }
}

/// (capture, flow id, label, Warden's verdict) of every labelled flow, and of every session
/// that is no labelled flow (label `none`).
fn outcomes(cap: &str, flows: &[Flow]) -> Vec<(String, String, String, String)> {
    let path = set_dir().join(cap);
    let sess = match sessions(&path) {
        Ok(s) => s,
        Err(e) => {
            return flows
                .iter()
                .map(|f| (cap.to_string(), f.id.clone(), f.label.clone(), format!("error: {e}")))
                .collect();
        }
    };
    let mut apps: Vec<Option<BTreeSet<String>>> = vec![None; flows.len()];
    let mut extra: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &sess {
        let mut cands: Vec<usize> = (0..flows.len()).filter(|&i| flows[i].key == s.key).collect();
        if cands.is_empty() {
            extra.entry(s.id.clone()).or_default().insert(s.app.clone());
            continue;
        }
        cands.sort_by_key(|&i| flows[i].first_us);
        let i = cands.iter().rev().find(|&&i| flows[i].first_us <= s.first_us + 1).copied().unwrap_or(cands[0]);
        apps[i].get_or_insert_with(BTreeSet::new).insert(s.app.clone());
    }
    let mut out: Vec<_> = flows
        .iter()
        .zip(&apps)
        .map(|(f, a)| (cap.to_string(), f.id.clone(), f.label.clone(), verdict(a.as_ref())))
        .collect();
    out.extend(extra.iter().map(|(id, a)| (cap.to_string(), id.clone(), "none".to_string(), verdict(Some(a)))));
    out
}

#[test]
fn every_public_flow_gets_tsharks_label() {
    let labels = labels();
    let mut misses = misses();
    let caps: Vec<(&String, &Vec<Flow>)> = labels.iter().collect();
    // Two replays at a time (the debug build replays a capture in about 0.1 s).
    let results: Vec<_> = std::thread::scope(|sc| {
        let halves: Vec<_> = caps
            .chunks(caps.len().div_ceil(2))
            .map(|part| sc.spawn(move || part.iter().flat_map(|(c, f)| outcomes(c, f)).collect::<Vec<_>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    let mut per_app: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (cap, id, label, got) in &results {
        let ok = right(label, got);
        let e = per_app.entry(label.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(ok);
        match misses.get_mut(&(cap.clone(), id.clone())) {
            None if !ok => {
                failures.push(format!("{cap} | {id} | {label} | {got} | not in misses.tsv: wrong, tshark says {label}"))
            }
            None => {}
            Some(m) => {
                m.seen = true;
                if ok {
                    failures.push(format!(
                        "{cap} | {id}: listed as a miss ({}) but Warden now says {got}: remove it from misses.tsv",
                        m.reason
                    ));
                } else if m.got != *got {
                    failures
                        .push(format!("{cap} | {id}: misses.tsv says Warden gives {}, now {got}: update it", m.got));
                }
            }
        }
    }
    for ((cap, id), m) in &misses {
        if !m.seen {
            failures.push(format!("{cap} | {id}: in misses.tsv but no such flow in the set"));
        }
    }
    let summary: Vec<String> = per_app.iter().map(|(a, (n, r))| format!("{a} {r}/{n}")).collect();
    eprintln!("public captures: {} flows; right per tshark label: {}", results.len(), summary.join(", "));
    assert!(failures.is_empty(), "{} public-capture failures:\n{}", failures.len(), failures.join("\n"));
}

/// labels.json covers exactly the captures of the set (a capture added without running
/// `perf/public/label.py` would not be tested).
#[test]
fn labels_cover_every_capture_of_the_set() {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut files = BTreeSet::new();
    walk(&set_dir(), &set_dir(), &mut files);
    let labelled: BTreeSet<String> = labels().into_keys().collect();
    assert_eq!(files, labelled, "run perf/public/label.py after adding or removing captures");
    assert!(files.len() > 200, "{} captures", files.len());
}
