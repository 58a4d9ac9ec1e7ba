//! `warden replay --policy A --shadow B` (the binary) over one capture of real clients holding
//! two kinds of flows to the workload 198.18.0.2: HTTP on port 80 and Redis on port 6379
//! (`corpus/http.pcap` and `corpus/redis.pcap` written one after the other into one pcap).
//! The running policy (alert mode) allows both; the candidate (protect) allows only port 80.
//! Exactly the Redis sessions must carry `shadow_verdict: denied` and make up the diff, and
//! the replay summary's diff must be the one the records add up to.

use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::pcap::{PcapReader, PcapWriter};
use warden_control::ConnectionRecord;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus").join(name)
}

const ACTIVE: &str = r#"
[[workload]]
id = "srv"
ips = ["198.18.0.2"]
mode = "alert"

[[rule]]
id = 1
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["80"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["6379"]
action = "allow"
"#;

const CANDIDATE: &str = r#"
[[workload]]
id = "srv"
ips = ["198.18.0.2"]
mode = "protect"

[[rule]]
id = 1
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["80"]
apps = ["http"]
action = "allow"
"#;

#[test]
fn replay_with_a_shadow_shows_exactly_the_flows_the_candidate_would_deny() {
    let dir = std::env::temp_dir().join(format!("warden-shadow-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One capture: the HTTP flows, then the Redis flows (their timestamps moved after).
    let merged = dir.join("http-redis.pcap");
    {
        let mut w: Option<PcapWriter<std::fs::File>> = None;
        let mut shift = 0u64;
        let mut last = 0u64;
        for f in ["http.pcap", "redis.pcap"] {
            let mut r = PcapReader::new(std::fs::File::open(corpus(f)).unwrap()).unwrap();
            let w = w.get_or_insert_with(|| PcapWriter::with_header(std::fs::File::create(&merged).unwrap(), r.header()).unwrap());
            let mut first = None;
            while let Some(p) = r.next_packet() {
                let mut p = p.unwrap().into_owned();
                let ns = p.timestamp.as_nanos() as u64;
                let base = *first.get_or_insert(ns);
                let t = shift + (ns - base);
                last = last.max(t);
                p.timestamp = std::time::Duration::from_nanos(t);
                w.write_packet(&p).unwrap();
            }
            shift = last + 60_000_000_000;
        }
    }
    let (a, b) = (dir.join("active.toml"), dir.join("candidate.toml"));
    std::fs::write(&a, ACTIVE).unwrap();
    std::fs::write(&b, CANDIDATE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("replay")
        .arg(&merged)
        .arg("--policy")
        .arg(&a)
        .arg("--shadow")
        .arg(&b)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let records: Vec<ConnectionRecord> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_port = |p: u16| records.iter().filter(move |r| r.server_port == p && r.ip_proto == 6);
    let (http, redis) = (by_port(80).count(), by_port(6379).count());
    assert!(http >= 5 && redis >= 5, "{http} http, {redis} redis sessions");
    // The running policy allows both (alert mode forwards everything anyway).
    assert!(records.iter().all(|r| r.verdict.as_deref() == Some("allowed")), "{records:?}");
    for r in by_port(80) {
        assert_eq!((r.app.as_str(), r.shadow_verdict.as_deref()), ("http", None), "{r:?}");
    }
    for r in by_port(6379) {
        assert_eq!((r.shadow_verdict.as_deref(), r.shadow_rule_id, r.rule_id), (Some("denied"), None, Some(2)), "{r:?}");
    }
    // The summary's diff (stderr) is what the records add up to: one group, the Redis port.
    let lines: Vec<&str> = stderr.lines().skip_while(|l| !l.ends_with("shadow policy diff:")).skip(1).collect();
    assert_eq!(lines[0], format!("{} session(s) compared, {redis} differ", http + redis), "{stderr}");
    assert!(lines[1].starts_with("CHANGE"), "{stderr}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&row[..7], ["deny", "-", "srv", "tcp/6379", "allowed(2)", "denied(default)", &redis.to_string()], "{stderr}");
    assert_eq!(lines.len(), 3, "exactly one group: {stderr}");
    // Without the shadow: no shadow fields, no diff.
    let out = Command::new(env!("CARGO_BIN_EXE_warden")).arg("replay").arg(&merged).arg("--policy").arg(&a).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("shadow_verdict"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("shadow policy diff"));
    let _ = std::fs::remove_dir_all(&dir);
}
