//! End-to-end tests for the second batch of app parsers (Couchbase/memcached binary, NTP, DHCP,
//! Kafka, MongoDB, Cassandra): real Debian servers and real client libraries in the test's own
//! network namespaces, Warden inline between them, non-standard ports where the client lets us
//! choose. Root only (see `common`). Each test builds and removes its own topology.
//!
//! Kafka, MongoDB and Cassandra have no server in Debian: their clients talk to a socat sink
//! that accepts and never answers, so the records hold the clients' first requests (the same
//! setup as the corpus captures of those protocols).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use warden_control::{Client, ConnectionRecord};

/// Debian's interpreter, where the python3-* client libraries are installed (a `python3` from
/// another installation earlier in PATH would not have them).
const PY: &str = "/usr/bin/python3";

/// Starts Warden inline between the client and server namespaces and returns a subscribed
/// control client.
fn inline(t: &mut Topo) -> Client {
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    t.subscribed()
}

/// A TCP sink on `S4:port` in the server namespace: accepts connections (any number), reads and
/// discards what arrives, answers nothing, closes when the client closes.
fn sink(t: &mut Topo, port: u16) {
    let s = t.s.clone();
    t.spawn(&s, &["socat", "-u", &format!("TCP-LISTEN:{port},bind={S4},reuseaddr,fork"), "OPEN:/dev/null"]);
}

/// kafka-python: a consumer bootstrapping from the sink, given up when nothing answers.
const KAFKA_PY: &str = r#"
from kafka import KafkaConsumer
from kafka.errors import NoBrokersAvailable
try:
    KafkaConsumer(bootstrap_servers='$S4:19092', client_id='warden-e2e-kafka',
                  api_version_auto_timeout_ms=2000, request_timeout_ms=3000)
except NoBrokersAvailable:
    print('ok')
"#;

/// pymongo: a command that needs server selection, given up after a second.
const MONGO_PY: &str = r#"
import pymongo
from pymongo.errors import ServerSelectionTimeoutError
c = pymongo.MongoClient('$S4', 27117, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000,
                        appname='warden-e2e')
try:
    c.admin.command('ping')
except ServerSelectionTimeoutError:
    print('ok')
c.close()
"#;

/// cassandra-driver: connecting the cluster (`KW` is replaced by extra keyword arguments).
const CASSANDRA_PY: &str = r#"
from cassandra.cluster import Cluster, NoHostAvailable
try:
    Cluster(['$S4'], port=19142, connect_timeout=1, control_connection_timeout=1 KW).connect()
except NoHostAvailable:
    print('ok')
"#;

/// Runs a python script (`$S4` in it replaced by the server's address) in the client namespace;
/// panics with its output unless it prints `ok`.
fn client_py(t: &Topo, script: &str) {
    let out = t.exec(&t.c, &["timeout", "30", PY, "-c", &script.replace("$S4", S4)]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "client script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until a TCP port accepts connections from the client namespace.
fn wait_port(t: &Topo, port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let probe = format!("exec 3<>/dev/tcp/{S4}/{port}");
        if t.exec(&t.c, &["bash", "-c", &probe]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("port {port} did not open");
}

/// The string values of the array `key` of a record's l7 fields.
fn strings(r: &ConnectionRecord, key: &str) -> Vec<String> {
    r.l7.as_ref()
        .and_then(|l| l.get(key))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The closed TCP records on `port`, panicking (with all records) unless `n` of them arrive.
fn closed_on(records: &[ConnectionRecord], port: u16, n: usize) -> Vec<&ConnectionRecord> {
    let v: Vec<_> = records.iter().filter(|r| r.closed && r.ip_proto == 6 && r.server_port == port).collect();
    assert!(v.len() >= n, "wanted {n} closed records on port {port}, got {}: {records:#?}", v.len());
    v
}

/// memcached with the binary protocol only; libmemcached's tools with `--binary` set, get,
/// delete, ask stats and flush, one connection each.
#[test]
fn couchbase_memcached_binary_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    let s = t.s.clone();
    t.spawn(&s, &["memcached", "-u", "root", "-l", S4, "-p", "11311", "-B", "binary", "-U", "0"]);
    let mut ctl = inline(&mut t);
    wait_port(&t, 11311);
    let dir = t.path("mc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wkey"), "warden e2e value\n").unwrap();
    let servers = format!("--servers={S4}:11311");
    let run = |args: &[&str]| {
        let cmd = format!("cd {} && {}", dir.display(), args.join(" "));
        let out = t.exec(&t.c, &["timeout", "10", "sh", "-c", &cmd]);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["memccp", "--binary", &servers, "wkey"]);
    assert_eq!(run(&["memccat", "--binary", &servers, "wkey"]).trim_end(), "warden e2e value");
    run(&["memcrm", "--binary", &servers, "wkey"]);
    assert!(run(&["memcstat", "--binary", &servers]).contains("pid"));
    run(&["memcflush", "--binary", &servers]);
    // wait_port's probe connection (no bytes) is one more closed session on the port.
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| {
        all.iter().filter(|r| r.closed && r.server_port == 11311 && r.app == "couchbase").count() >= 5
    });
    let mc: Vec<_> = closed_on(&records, 11311, 5).into_iter().filter(|r| r.app == "couchbase").collect();
    assert_eq!(mc.len(), 5, "{records:#?}");
    let ops: Vec<String> = mc.iter().flat_map(|r| strings(r, "opcodes")).collect();
    // libmemcached reads with GETK, asks VERSION before STAT and ends each connection with QUIT.
    for want in ["SET", "GETK", "DELETE", "VERSION", "STAT", "FLUSH", "QUIT"] {
        assert!(ops.iter().any(|o| o == want), "{want} not in {ops:?}");
    }
    for r in &mc {
        let l7 = r.l7.as_ref().unwrap();
        assert!(l7["requests"].as_u64().unwrap() >= 1, "{r:?}");
        assert!(l7["responses"].as_u64().unwrap() >= 1, "{r:?}");
    }
    // The get of the deleted-then-absent key is not asked; every answer here is a success.
    let set = mc.iter().find(|r| strings(r, "opcodes").contains(&"SET".to_string())).unwrap();
    assert_eq!(set.l7.as_ref().unwrap()["errors"], 0, "{set:?}");
}

/// chronyd serving NTP (local stratum 8) on port 11123, queried by `chronyd -Q` (measures the
/// offset once, changes nothing). Neither daemon controls the clock (`-x`, `-Q`).
#[test]
fn ntp_chrony_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    let conf = t.path("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "allow 198.18.0.0/15\nlocal stratum 8\nport 11123\ncmdport 0\nbindcmdaddress /\npidfile {}\ndriftfile {}\n",
            t.path("chronyd.pid").display(),
            t.path("chrony.drift").display()
        ),
    )
    .unwrap();
    let s = t.s.clone();
    t.spawn(&s, &["chronyd", "-d", "-x", "-u", "root", "-f", conf.to_str().unwrap()]);
    let mut ctl = inline(&mut t);
    std::thread::sleep(Duration::from_millis(800));
    let pid = format!("pidfile {}", t.path("client.pid").display());
    let server = format!("server {S4} iburst port 11123 maxsamples 1");
    let out = t.exec(
        &t.c,
        &[
            "timeout",
            "20",
            "chronyd",
            "-Q",
            "-u",
            "root",
            "-f",
            "/dev/null",
            &server,
            &pid,
            "cmdport 0",
            "bindcmdaddress /",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && log.contains("System clock wrong by"), "chronyd -Q: {log}");
    let done = |r: &ConnectionRecord| {
        r.server_port == 11123 && r.ip_proto == 17 && r.l7.as_ref().is_some_and(|l| l.contains_key("stratum"))
    };
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| all.iter().any(done));
    let r = records.iter().rev().find(|r| done(r)).unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(r.app, "ntp", "{r:?}");
    assert_eq!(r.client_ip, C4);
    let l7 = r.l7.as_ref().unwrap();
    assert_eq!(l7["version"], 4, "{l7:?}");
    assert_eq!(l7["mode"], "client", "{l7:?}");
    assert_eq!(l7["reply_mode"], "server", "{l7:?}");
    assert_eq!(l7["stratum"], 8, "{l7:?}");
    // A local reference has refid 127.127.1.1 (chrony's "LOCL" shown as an address at stratum 8).
    assert!(l7["refid"].as_str().is_some(), "{l7:?}");
    assert!(l7["packets_to_server"].as_u64().unwrap() >= 1 && l7["packets_to_client"].as_u64().unwrap() >= 1);
}

/// dnsmasq as a DHCP server on the server's veth, busybox udhcpc in the client namespace
/// (broadcast DISCOVER from 0.0.0.0:68 crossing Warden's bridge). The client's script is
/// `/bin/true`, so nothing is configured with the lease.
#[test]
fn dhcp_dnsmasq_udhcpc_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    let s = t.s.clone();
    let (leases, pidf) = (t.path("dnsmasq.leases"), t.path("dnsmasq.pid"));
    t.spawn(
        &s,
        &[
            "dnsmasq",
            "-d",
            "-C",
            "/dev/null",
            "--port=0",
            &format!("--interface={}", t.s0),
            "--bind-interfaces",
            "--dhcp-range=198.18.0.100,198.18.0.150,255.254.0.0,1h",
            &format!("--dhcp-leasefile={}", leases.display()),
            &format!("--pid-file={}", pidf.display()),
        ],
    );
    let mut ctl = inline(&mut t);
    std::thread::sleep(Duration::from_millis(800));
    let out = t.exec(&t.c, &["ip", "-br", "link", "show", &t.c0]);
    let mac = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2).expect("client MAC").to_string();
    let out = t.exec(
        &t.c,
        &[
            "timeout",
            "30",
            "busybox",
            "udhcpc",
            "-i",
            &t.c0,
            "-n",
            "-q",
            "-f",
            "-s",
            "/bin/true",
            "-t",
            "5",
            "-T",
            "2",
            "-x",
            "hostname:warden-e2e",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && log.contains("obtained"), "udhcpc: {log}");
    let lease = std::fs::read_to_string(&leases).unwrap();
    let assigned = lease.split_whitespace().nth(2).expect("lease address").to_string();
    let last: u8 = assigned.strip_prefix("198.18.0.").and_then(|x| x.parse().ok()).unwrap_or(0);
    assert!((100..=150).contains(&last), "{lease}");

    let types = |all: &[ConnectionRecord]| -> Vec<String> {
        all.iter().filter(|r| r.app == "dhcp").flat_map(|r| strings(r, "message_types")).collect()
    };
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| {
        let ty = types(all);
        ["DISCOVER", "OFFER", "REQUEST", "ACK"].iter().all(|w| ty.iter().any(|t| t == w))
    });
    let ty = types(&records);
    for want in ["DISCOVER", "OFFER", "REQUEST", "ACK"] {
        assert!(ty.iter().any(|t| t == want), "{want} not in {ty:?}: {records:#?}");
    }
    let dhcp: Vec<_> = records.iter().filter(|r| r.app == "dhcp").collect();
    assert!(dhcp.iter().all(|r| r.ip_proto == 17 && (r.server_port == 67 || r.client_port == 67)), "{dhcp:#?}");
    // The broadcast DISCOVER's session: from 0.0.0.0:68 to 255.255.255.255:67.
    assert!(
        dhcp.iter().any(|r| r.client_ip == "0.0.0.0" && r.server_ip == "255.255.255.255" && r.server_port == 67),
        "{dhcp:#?}"
    );
    let field = |k: &str| -> Vec<String> {
        dhcp.iter().filter_map(|r| r.l7.as_ref()?.get(k)?.as_str().map(String::from)).collect()
    };
    assert!(field("client_mac").iter().all(|m| *m == mac) && !field("client_mac").is_empty(), "{dhcp:#?}");
    assert!(field("assigned_address").contains(&assigned), "{assigned} {dhcp:#?}");
    assert!(field("hostname").iter().any(|h| h == "warden-e2e"), "{dhcp:#?}");
    assert!(field("server_id").iter().any(|h| h == S4), "{dhcp:#?}");
}

/// kafka-python (Debian's python3-kafka) bootstrapping against a sink on port 19092: it sends
/// ApiVersions probes with its client id and gives up when nothing answers.
#[test]
fn kafka_python_client_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    sink(&mut t, 19092);
    let mut ctl = inline(&mut t);
    wait_port(&t, 19092);
    client_py(&t, KAFKA_PY);
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| {
        all.iter().any(|r| r.closed && r.server_port == 19092 && r.app == "kafka")
    });
    let k: Vec<_> = closed_on(&records, 19092, 1).into_iter().filter(|r| r.app == "kafka").collect();
    assert!(!k.is_empty(), "{records:#?}");
    for r in &k {
        let l7 = r.l7.as_ref().unwrap();
        assert_eq!(l7["client_id"], "warden-e2e-kafka", "{l7:?}");
        assert_eq!(l7["first_api_key"], 18, "{l7:?}");
        assert!(strings(r, "api_names").iter().any(|n| n == "ApiVersions"), "{l7:?}");
        assert!(l7["requests"].as_u64().unwrap() >= 1, "{l7:?}");
        assert_eq!(l7["responses"], 0, "{l7:?}");
    }
}

/// pymongo (Debian's python3-pymongo) against a sink on port 27117: its handshake is
/// `isMaster` on `admin.$cmd` (OP_QUERY in pymongo 3.x, OP_MSG `hello` in 4.x); server
/// selection gives up after a second.
#[test]
fn mongodb_pymongo_client_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    sink(&mut t, 27117);
    let mut ctl = inline(&mut t);
    wait_port(&t, 27117);
    client_py(&t, MONGO_PY);
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| {
        all.iter().any(|r| r.closed && r.server_port == 27117 && r.app == "mongodb")
    });
    let m: Vec<_> = closed_on(&records, 27117, 1).into_iter().filter(|r| r.app == "mongodb").collect();
    assert!(!m.is_empty(), "{records:#?}");
    for r in &m {
        let l7 = r.l7.as_ref().unwrap();
        let cmd = l7["command"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(cmd == "ismaster" || cmd == "hello", "{l7:?}");
        assert_eq!(l7["db"], "admin", "{l7:?}");
        assert!(l7["messages_to_server"].as_u64().unwrap() >= 1, "{l7:?}");
        assert_eq!(l7["messages_to_client"], 0, "{l7:?}");
        let ops = l7["opcodes"].as_object().unwrap();
        assert!(ops.contains_key("OP_QUERY") || ops.contains_key("OP_MSG"), "{l7:?}");
    }
}

/// The DataStax python driver (Debian's python3-cassandra) against a sink on port 19142, once
/// with its default protocol version (DSE v2, 0x42, which a Cassandra server refuses and the
/// driver then downgrades) and once each with v4 and v5: every connection opens with OPTIONS.
#[test]
fn cassandra_driver_detected_inline() {
    let mut t = Topo::new(ClientLink::Veth);
    sink(&mut t, 19142);
    let mut ctl = inline(&mut t);
    wait_port(&t, 19142);
    for kw in ["", ", protocol_version=4", ", protocol_version=5"] {
        client_py(&t, &CASSANDRA_PY.replace("KW", kw));
    }
    let records = collect_reports(&mut ctl, Duration::from_secs(15), |all| {
        all.iter().filter(|r| r.closed && r.server_port == 19142 && r.app == "cassandra").count() >= 3
    });
    let c: Vec<_> = closed_on(&records, 19142, 3).into_iter().filter(|r| r.app == "cassandra").collect();
    assert!(c.len() >= 3, "{records:#?}");
    let mut versions: Vec<u64> = Vec::new();
    for r in &c {
        let l7 = r.l7.as_ref().unwrap();
        assert_eq!(strings(r, "opcodes"), ["OPTIONS"], "{l7:?}");
        assert_eq!(l7["frames_to_server"], 1, "{l7:?}");
        assert_eq!(l7["frames_to_client"], 0, "{l7:?}");
        versions.push(l7["request_version"].as_u64().unwrap());
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions, [4, 5, 0x42], "{c:#?}");
}
