//! End-to-end ICMP: forged errors, redirects and echo requests sent through Warden (python3-scapy
//! in the client namespace, `fixtures/icmp_attacks.py`) to a workload in protect or alert mode;
//! what reaches the workload is captured by tcpdump in its namespace. Root only (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use warden_control::{ConnectionRecord, Reply, Request};
use warden_dp::wire::{self, L4};

/// Debian's interpreter, where python3-scapy is installed.
const PY: &str = "/usr/bin/python3";
const PORT: u16 = 8080;
/// Identifiers of the workload's own pings (`ping -e`).
const PING_ID4: u16 = 0x4242;
const PING_ID6: u16 = 0x4243;

fn script() -> String {
    format!("{}/tests/fixtures/icmp_attacks.py", env!("CARGO_MANIFEST_DIR"))
}

/// Workload `srv` (the server namespace) in `mode`: anyone may reach TCP 8080, `srv` may ping
/// anywhere; nothing else (no ICMP to `srv`).
fn policy(mode: &str) -> String {
    format!(
        "[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"{mode}\"\n\n\
         [[rule]]\nid = 10\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"{PORT}\"]\naction = \"allow\"\n\n\
         [[rule]]\nid = 11\nfrom = \"srv\"\nto = \"any\"\nip_proto = \"icmp\"\naction = \"allow\"\n\n\
         [[rule]]\nid = 12\nfrom = \"srv\"\nto = \"any\"\nip_proto = \"icmpv6\"\naction = \"allow\"\n"
    )
}

fn mac(t: &Topo, ns: &str, dev: &str) -> String {
    let out = t.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the workload's interface received: raw frames of the capture.
fn captured(path: &std::path::Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
    let mut v = Vec::new();
    while let Some(Ok(p)) = r.next_packet() {
        v.push(p.data.to_vec());
    }
    v
}

fn contains(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}

/// Echo replies with `ident` that reached the workload (answers to its own pings).
fn replies_with(frames: &[Vec<u8>], ident: u16) -> usize {
    frames
        .iter()
        .filter_map(|f| wire::decode(f).ok()?.ip)
        .filter(|ip| [S4, S6].contains(&ip.dst.to_string().as_str()))
        .filter(|ip| matches!(ip.l4, L4::Icmp { kind: 0 | 129, ident: i, .. } if i == ident))
        .count()
}

/// One line about a captured frame, for failure messages.
fn describe(frame: &[u8]) -> String {
    match wire::decode(frame).ok().and_then(|f| f.ip) {
        Some(ip) => format!("{} -> {} {:?}", ip.src, ip.dst, ip.l4),
        None => format!("{frame:02x?}"),
    }
}

struct Outcome {
    sent: Vec<String>,
    frames: Vec<Vec<u8>>,
    records: Vec<ConnectionRecord>,
    icmp: std::collections::BTreeMap<String, u64>,
    dropped_icmp: u64,
}

/// Runs the whole scenario against a workload in `mode`.
fn run(mode: &str) -> Outcome {
    let start = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1} s] {mode}: {what}", start.elapsed().as_secs_f64());
    let mut t = Topo::new(ClientLink::Veth);
    step("topology up");
    // The workload must not act on the forged redirects that a non-protect mode forwards.
    for knob in ["net.ipv4.conf.all.accept_redirects=0", "net.ipv6.conf.all.accept_redirects=0"] {
        assert!(t.exec(&t.s, &["sysctl", "-qw", knob]).status.success());
    }
    let s = t.s.clone();
    let sp = script();
    t.spawn(&s, &[PY, &sp, "serve", &PORT.to_string()]);
    wait_for("the echo server", Duration::from_secs(20), || {
        t.exec(&t.s, &["sh", "-c", &format!("ss -ltnH | grep -q ':{PORT} '")]).status.success()
    });
    let pcap = t.path("workload.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let s0 = t.s0.clone();
    let tcpdump = t.spawn(&s, &["tcpdump", "-U", "-n", "-i", &s0, "-w", &pcap_s, "icmp or icmp6"]);
    wait_for("tcpdump", Duration::from_secs(20), || std::fs::metadata(&pcap).map(|m| m.len() >= 24).unwrap_or(false));
    std::thread::sleep(Duration::from_millis(300));

    step("echo server and capture running");
    t.start_warden_policy(&policy(mode));
    let mut ctl = t.subscribed();
    step("warden running");

    // Control: the workload's own pings (allowed by rules 11 and 12) are answered.
    for (v, dst, id) in [("-4", C4, PING_ID4), ("-6", C6, PING_ID6)] {
        let id = id.to_string();
        let out = t.exec(&t.s, &["timeout", "30", "ping", "-n", v, "-c", "3", "-i", "0.2", "-W", "2", "-e", &id, dst]);
        assert!(out.status.success(), "ping {dst}: {}\n{}", String::from_utf8_lossy(&out.stdout), t.warden_log());
    }

    let cfg = serde_json::json!({
        "iface": t.c0, "src_mac": mac(&t, &t.c, &t.c0), "dst_mac": mac(&t, &t.s, &t.s0),
        "c4": C4, "s4": S4, "c6": C6, "s6": S6,
        "router4": "198.18.0.254", "other4": "198.18.0.77",
        "router6": "2001:db8::fe", "other6": "2001:db8::77",
        "port": PORT, "ping_id4": PING_ID4, "ping_id6": PING_ID6,
    });
    step("pings answered");
    let out = t.exec(&t.c, &["timeout", "120", PY, &sp, "attack", &cfg.to_string()]);
    step("attack sent");
    assert!(
        out.status.success(),
        "attack script: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent: Vec<String> =
        report["sent"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();

    // Final records of both TCP connections (closed by the script).
    let (records, _) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, _| {
        [C4, C6].iter().all(|c| recs.iter().any(|r| r.closed && r.server_port == PORT && r.client_ip == *c))
    });
    step("records collected");
    let counters = match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => c,
        other => panic!("{other:?}"),
    };
    let mut icmp = std::collections::BTreeMap::new();
    for w in &counters.workers {
        for (k, n) in &w.icmp {
            *icmp.entry(k.clone()).or_insert(0) += n;
        }
    }
    let dropped_icmp = counters.interfaces.iter().filter_map(|i| i.dropped.get("icmp_rejected")).sum();
    t.signal(tcpdump, Signal::SIGTERM);
    t.wait_exit(tcpdump, Duration::from_secs(5));
    let frames = captured(&pcap);
    assert_eq!(replies_with(&frames, PING_ID4), 3, "the workload's IPv4 pings were answered");
    assert_eq!(replies_with(&frames, PING_ID6), 3, "the workload's IPv6 pings were answered");
    Outcome { sent, frames, records, icmp, dropped_icmp }
}

fn tcp_record<'a>(o: &'a Outcome, client: &str) -> &'a ConnectionRecord {
    o.records
        .iter()
        .rev()
        .find(|r| r.closed && r.server_port == PORT && r.client_ip == client)
        .unwrap_or_else(|| panic!("no final record for {client}: {:#?}", o.records))
}

/// Protect mode: the legitimate packet-too-big errors (a router, in-window quote) reach the
/// workload and are counted in their session's record; forged errors (a third party's
/// out-of-window quote, an error sent the wrong way), redirects and echo requests riding the
/// workload's own pings do not arrive, and are counted.
#[test]
fn protect_keeps_forged_icmp_from_the_workload() {
    let o = run("protect");
    assert_eq!(o.sent.len(), 10);
    for m in &o.sent {
        let arrived = o.frames.iter().find(|f| contains(f, m.as_bytes()));
        if m.starts_with("CTL") {
            assert!(arrived.is_some(), "legitimate {m} did not reach the workload");
        } else {
            assert!(arrived.is_none(), "forged {m} reached the workload in protect mode: {}", describe(arrived.unwrap()));
        }
    }
    let v4 = tcp_record(&o, C4);
    assert_eq!(v4.icmp_errors, Some(1), "{v4:?}");
    assert_eq!(v4.icmp_errors_rejected, Some(2), "out of window and wrong direction: {v4:?}");
    let v6 = tcp_record(&o, C6);
    assert_eq!((v6.icmp_errors, v6.icmp_errors_rejected), (Some(1), Some(1)), "{v6:?}");
    let n = |k: &str| o.icmp.get(k).copied().unwrap_or(0);
    assert_eq!(n("redirects_dropped"), 2, "{:?}", o.icmp);
    assert_eq!(n("rejected_seq_out_of_window"), 2, "{:?}", o.icmp);
    assert_eq!(n("rejected_wrong_direction"), 1, "{:?}", o.icmp);
    assert_eq!(n("rejected_dropped"), 3, "{:?}", o.icmp);
    assert_eq!(n("echo_reply_opened"), 1, "{:?}", o.icmp);
    assert_eq!(o.dropped_icmp, 5, "rejected errors and redirects dropped as icmp_rejected");
    // The forged echo requests opened sessions of their own, denied.
    let echo = o.records.iter().find(|r| r.ip_proto == 1 && r.client_ip == C4 && r.client_port == PING_ID4);
    assert_eq!(echo.and_then(|r| r.verdict.as_deref()), Some("denied"), "{:#?}", o.records);
}

/// Alert mode: the same frames are all forwarded, and the forged ones are flagged (record
/// fields and counters), none dropped.
#[test]
fn alert_forwards_forged_icmp_and_flags_it() {
    let o = run("alert");
    for m in &o.sent {
        assert!(o.frames.iter().any(|f| contains(f, m.as_bytes())), "{m} was not forwarded in alert mode");
    }
    let v4 = tcp_record(&o, C4);
    // The in-window redirect is counted toward the session too (it is about it); the two
    // forged errors are rejected.
    assert_eq!((v4.icmp_errors, v4.icmp_errors_rejected), (Some(2), Some(2)), "{v4:?}");
    let n = |k: &str| o.icmp.get(k).copied().unwrap_or(0);
    assert_eq!((n("redirects"), n("redirects_dropped")), (2, 0), "{:?}", o.icmp);
    assert_eq!(n("rejected_seq_out_of_window") + n("rejected_wrong_direction"), 3, "{:?}", o.icmp);
    assert_eq!(n("rejected_dropped"), 0);
    assert_eq!(o.dropped_icmp, 0);
    let echo = o.records.iter().find(|r| r.ip_proto == 1 && r.client_ip == C4 && r.client_port == PING_ID4);
    assert_eq!(echo.and_then(|r| r.verdict.as_deref()), Some("violation"), "{:#?}", o.records);
}
