//! Monitor mode end to end ([`warden_dp::monitor`]): Warden watches an interface receive-only.
//! Root only (see `common`). Each test builds and removes its own topology.
//!
//! - The same connections seen by Warden inline and by a second Warden only monitoring the
//!   server's interface give the same records (apps, 5-tuples, client/server, packet and byte
//!   counts, verdicts in alert mode, L7 fields).
//! - On a plain bridge path (no Warden inline), monitoring an interface started and stopped
//!   through the control socket drops nothing even in protect mode, and says it could not
//!   enforce: the sessions protect mode would deny are violations in alert mode, and the
//!   interface is listed as monitored.

mod common;

use std::time::Duration;

use common::*;
use warden_control::{AttachSpec, Client, ConnectionRecord, Reply, Request};

/// Server workload in `mode`; HTTP to it is allowed, anything else is not.
fn policy(mode: &str) -> String {
    format!(
        r#"
[[workload]]
id = "srv"
ips = ["{S4}", "{S6}"]
mode = "{mode}"

[[rule]]
id = 10
from = "any"
to = "srv"
ip_proto = "tcp"
ports = ["8080"]
apps = ["http"]
action = "allow"
"#
    )
}

/// Starts the servers: python's http.server on 8080, redis-server on 7777, dnsmasq on 5300.
fn servers(t: &mut Topo) {
    index_server(t, 8080);
    let s = t.s.clone();
    let dir = t.path("");
    t.spawn(
        &s,
        &["redis-server", "--port", "7777", "--bind", S4, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir.to_str().unwrap()],
    );
    t.spawn(
        &s,
        &["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", &format!("--listen-address={S4}"), "--port=5300", "--address=/svc.test/198.18.0.77", "--pid-file="],
    );
    t.wait_listening(&s, "tcp", 7777);
    t.wait_listening(&s, "udp", 5300);
}

/// The traffic: two HTTP downloads (IPv4, IPv6), three redis commands, one DNS query over UDP.
fn traffic(t: &Topo) {
    assert_eq!(curl_index(t, S4, 8080), "200", "http v4: {}", t.warden_log());
    assert_eq!(curl_index(t, S6, 8080), "200", "http v6: {}", t.warden_log());
    for cmd in [&["SET", "k", "v"][..], &["GET", "k"], &["PING"]] {
        let mut args = vec!["redis-cli", "-h", S4, "-p", "7777"];
        args.extend_from_slice(cmd);
        let out = t.exec(&t.c, &args);
        assert!(out.status.success(), "redis-cli {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = t.exec(&t.c, &["dig", "+short", "+time=2", "+tries=1", "-p", "5300", "@198.18.0.2", "svc.test", "A"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "198.18.0.77", "dig");
}

/// The sessions of [`traffic`]: 2 HTTP, 3 redis (all closed) and the DNS query.
fn all_seen(all: &[ConnectionRecord]) -> bool {
    let n = |port: u16, proto: u8| all.iter().filter(|r| r.server_port == port && r.ip_proto == proto && (r.closed || proto == 17)).count();
    n(8080, 6) >= 2 && n(7777, 6) >= 3 && n(5300, 17) >= 1
}

/// The last record of each session of [`traffic`], by 5-tuple.
fn finals(records: &[ConnectionRecord]) -> std::collections::BTreeMap<(u8, String, u16, String, u16), ConnectionRecord> {
    let mut out = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| [8080, 7777, 5300].contains(&r.server_port)) {
        out.insert((r.ip_proto, r.client_ip.clone(), r.client_port, r.server_ip.clone(), r.server_port), r.clone());
    }
    out
}

/// What must be equal between an inline record and a monitor record of the same connection.
fn essence(r: &ConnectionRecord) -> String {
    format!(
        "app={} to_server={}p/{}B to_client={}p/{}B dropped={}/{} closed={} end={:?} midstream={} verdict={:?} rule={:?} l7={}",
        r.app,
        r.packets_to_server,
        r.bytes_to_server,
        r.packets_to_client,
        r.bytes_to_client,
        r.packets_dropped_to_server,
        r.packets_dropped_to_client,
        r.closed,
        r.end_reason,
        r.midstream,
        r.verdict,
        r.rule_id,
        serde_json::to_string(&r.l7).unwrap()
    )
}

/// Starts a second Warden in namespace `ns` monitoring `iface` (`warden run --monitor`), with
/// its own socket, configuration and log; returns a client subscribed to its reports.
fn start_monitor_warden(t: &mut Topo, ns: &str, iface: &str, policy_file: &str) -> (u32, Client, std::path::PathBuf) {
    let cfg = t.path("monitor.toml");
    std::fs::write(&cfg, "[sessions]\ntcp_closed_timeout = 1\n[dataplane]\nworkers = 2\n").unwrap();
    let sock = t.path("monitor.sock");
    let log_path = t.path("monitor.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = warden_run(Some(ns), &cfg, &sock, log).args(["--monitor", iface, "--policy", policy_file]).spawn().unwrap();
    let pid = child.id();
    wait_for_socket(&sock, t.adopt(child), &log_path);
    let mut c = Client::connect(&sock).unwrap();
    c.subscribe().unwrap();
    (pid, c, log_path)
}

/// Warden inline between the client and the server, and a second Warden (two workers, so
/// flows are handed between them) only monitoring the server's interface in the server's
/// namespace: every connection has the same record in both, in alert mode (a DNS query no
/// rule allows is a violation in both).
#[test]
fn monitor_and_inline_records_of_the_same_connections_match() {
    let mut t = Topo::new(ClientLink::Veth);
    servers(&mut t);
    let file = t.path("policy.toml");
    std::fs::write(&file, policy("alert")).unwrap();
    let s = t.s.clone();
    let s0 = t.s0.clone();
    let (_, mut mon, mon_log) = start_monitor_warden(&mut t, &s, &s0, file.to_str().unwrap());
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b), "--policy", file.to_str().unwrap()]);
    let mut inl = t.subscribed();
    std::thread::sleep(Duration::from_millis(500));
    traffic(&t);
    let inline = finals(&collect_reports(&mut inl, Duration::from_secs(20), all_seen));
    let monitor = finals(&collect_reports(&mut mon, Duration::from_secs(20), all_seen));
    let log = || std::fs::read_to_string(&mon_log).unwrap_or_default();
    assert_eq!(inline.len(), 6, "inline records: {inline:#?}");
    assert_eq!(
        inline.keys().collect::<Vec<_>>(),
        monitor.keys().collect::<Vec<_>>(),
        "the same 5-tuples with the same client and server; monitor log: {}",
        log()
    );
    for (k, i) in &inline {
        let m = &monitor[k];
        assert_eq!(essence(i), essence(m), "{k:?}\ninline: {i:#?}\nmonitor: {m:#?}");
        assert_eq!(m.iface, s0, "the client's frames arrived on the monitored interface");
    }
    let apps: Vec<(&str, &str)> = inline.values().map(|r| (r.app.as_str(), r.verdict.as_deref().unwrap_or("-"))).collect();
    assert_eq!(
        apps.iter().filter(|a| **a == ("http", "allowed")).count(),
        2,
        "{apps:?}"
    );
    assert_eq!(apps.iter().filter(|a| **a == ("redis", "violation")).count(), 3, "{apps:?}");
    assert_eq!(apps.iter().filter(|a| **a == ("dns", "violation")).count(), 1, "{apps:?}");
    // The monitor saw every frame: nothing lost in the kernel, both directions counted.
    let mut ctl = Client::connect(t.path("monitor.sock")).unwrap();
    let Reply::Counters(c) = ctl.request(&Request::Counters {}).unwrap() else { panic!("counters") };
    let ifc = c.interfaces.iter().find(|i| i.name == s0).expect("monitored interface in the counters");
    assert!(ifc.monitor && ifc.rx_frames > 0 && ifc.tx_frames > 0, "{ifc:?}");
    assert_eq!(ifc.monitor_kernel_dropped, 0, "{ifc:?}");
    assert!(ifc.dropped.is_empty(), "{ifc:?}");
    // Which worker read which frame is the kernel's fanout hash, which worker owns a flow is
    // Warden's: frames cross between the two (informational; not every run needs to).
    let moved: Vec<(u64, u64)> = c.workers.iter().map(|w| (w.handoff_out, w.handoff_in)).collect();
    eprintln!("monitor workers (handoff_out, handoff_in): {moved:?}");
    assert_eq!(c.workers.iter().map(|w| w.handoff_dropped).sum::<u64>(), 0, "{moved:?}");
}

/// A plain bridge between the client's and the server's links, Warden not in the path: a
/// monitor attached through the socket on the client's link sees the connections, drops
/// nothing although the server is in protect mode with no rule for redis (the commands
/// succeed), reports them as alert mode would (violation) and lists the interface as
/// monitored; detached, it ends their sessions and sees nothing more.
#[test]
fn monitor_mode_drops_nothing_in_protect_mode_and_says_so() {
    let mut t = Topo::new(ClientLink::Veth);
    let br = format!("{}br", t.id);
    sh(&["ip", "-n", &t.m, "link", "add", &br, "type", "bridge"]);
    for dev in [&t.a, &t.b] {
        sh(&["ip", "-n", &t.m, "link", "set", dev, "master", &br]);
    }
    sh(&["ip", "-n", &t.m, "link", "set", &br, "up"]);
    servers(&mut t);
    let file = t.path("policy.toml");
    std::fs::write(&file, policy("protect")).unwrap();
    t.start_warden(&["--policy", file.to_str().unwrap()]);
    let mut ctl = t.client();
    let spec = AttachSpec { target: t.a.clone(), kind: Some("iface".into()), monitor: true, mode: Some("protect".into()), ..Default::default() };
    let info = match ctl.request(&Request::Attach { spec }).unwrap() {
        Reply::Attached(i) => i,
        other => panic!("attach: {other:?}"),
    };
    assert!(info.monitor && info.host_iface == t.a && info.name == t.a, "{info:?}");
    assert_eq!(info.mode, "alert", "protect cannot be enforced by a monitor");
    let Reply::Interfaces(list) = ctl.request(&Request::ListInterfaces {}).unwrap() else { panic!("interfaces") };
    let i = list.iter().find(|i| i.name == t.a).expect("monitored interface listed");
    assert!(i.monitor && i.xdp_mode == "monitor" && i.peer.is_empty(), "{i:?}");
    let Reply::Attachments(list) = ctl.request(&Request::ListAttachments {}).unwrap() else { panic!("attachments") };
    assert_eq!(list.len(), 1, "{list:?}");
    let mut sub = t.subscribed();
    std::thread::sleep(Duration::from_millis(300));
    // Protect mode would deny redis (no rule allows it): monitored, every command succeeds.
    traffic(&t);
    let records = finals(&collect_reports(&mut sub, Duration::from_secs(20), all_seen));
    assert_eq!(records.len(), 6, "{records:#?}\n{}", t.warden_log());
    for r in records.values() {
        let want = if r.app == "http" { "allowed" } else { "violation" };
        assert_eq!(r.verdict.as_deref(), Some(want), "{r:#?}");
        assert_eq!((r.packets_dropped_to_server, r.packets_dropped_to_client), (0, 0), "{r:#?}");
        assert_eq!(r.iface, t.a, "the client is behind the monitored interface");
        assert!(r.packets_to_server > 0 && r.packets_to_client > 0, "{r:#?}");
    }
    assert_eq!(records.values().filter(|r| r.app == "redis").count(), 3);
    assert_eq!(records.values().filter(|r| r.app == "dns").count(), 1);
    assert!(t.warden_log().contains("monitor mode cannot enforce"), "{}", t.warden_log());
    // Detach: the interface is no longer watched.
    match ctl.request(&Request::Detach { name: t.a.clone() }).unwrap() {
        Reply::Done(m) => assert!(m.contains("monitor") && m.contains(&t.a), "{m}"),
        other => panic!("detach: {other:?}"),
    }
    let Reply::Interfaces(list) = ctl.request(&Request::ListInterfaces {}).unwrap() else { panic!("interfaces") };
    assert!(list.iter().all(|i| i.name != t.a), "{list:?}");
    assert_eq!(curl_index(&t, S4, 8080), "200");
    std::thread::sleep(Duration::from_millis(1500));
    let live = sessions(&mut ctl);
    assert!(live.is_empty(), "nothing is watched after detach: {live:#?}");
    let Reply::Counters(c) = ctl.request(&Request::Counters {}).unwrap() else { panic!("counters") };
    assert!(c.interfaces.iter().all(|i| i.name != t.a), "{:?}", c.interfaces);
}
