//! End-to-end test of the Oracle TNS parser: the real python-oracledb client (thin mode, from
//! PyPI, in its own venv) in the client namespace against a fake TNS listener
//! (`fixtures/fake_tns_listener.py`) in the server namespace on non-standard ports, Warden
//! inline. Root only (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::ConnectionRecord;

/// The venv `scripts/install-deps.sh` makes; created here too when missing.
const VENV: &str = "/opt/warden-venv/oracledb";

const LISTENER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_tns_listener.py");

const CLIENT: &str = r#"
import sys, oracledb
host, port = sys.argv[1], int(sys.argv[2])
try:
    oracledb.connect(user="scott", password="tiger", dsn=f"{host}:{port}/ORCLPDB1", program="warden-e2e-tns",
                     machine="e2e-client", osuser="e2e-user", tcp_connect_timeout=5)
    print("connected")
except Exception as e:
    print(type(e).__name__, e)
"#;

const REFUSE_DATA: &str = "(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))";

/// The venv's python with `oracledb` importable (installed from PyPI when missing).
fn oracledb_python() -> String {
    let py = format!("{VENV}/bin/python");
    if !try_sh(&[&py, "-c", "import oracledb"]) {
        sh(&["mkdir", "-p", "/opt/warden-venv"]);
        sh(&["/usr/bin/python3", "-m", "venv", VENV]);
        sh(&[&format!("{VENV}/bin/pip"), "install", "-q", "--disable-pip-version-check", "oracledb"]);
    }
    py
}

fn wait_listening(t: &Topo, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let cmd = format!("ss -ltn | grep -q '{S4}:{port} '");
    while !t.exec(&t.s, &["sh", "-c", &cmd]).status.success() {
        assert!(Instant::now() < deadline, "fake listener on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn l7(r: &ConnectionRecord) -> &serde_json::Map<String, serde_json::Value> {
    r.l7.as_ref().unwrap_or_else(|| panic!("no l7 in {r:?}"))
}

/// Checks what every record of these connections carries from the client's CONNECT.
fn check_connect(r: &ConnectionRecord, address_port: u16) {
    assert_eq!(r.app, "tns", "{r:?}");
    let m = l7(r);
    assert_eq!(m["version"], 319, "{m:?}");
    assert_eq!(m["version_compatible"], 300);
    assert_eq!(m["service_name"], "ORCLPDB1");
    assert_eq!(m["program"], "warden-e2e-tns");
    assert_eq!(m["client_host"], "e2e-client");
    assert_eq!(m["client_user"], "e2e-user");
    assert_eq!(m["address_host"], S4);
    assert_eq!(m["address_port"], address_port);
    // Connect data over 230 bytes: sent in a DATA packet after the CONNECT.
    assert!(m["connect_data_length"].as_u64().unwrap() > 230, "{m:?}");
    assert!(m["descriptor"].as_str().unwrap().starts_with("(DESCRIPTION="), "{m:?}");
    assert!(m.get("violation").is_none(), "{m:?}");
}

/// A refused connection, a redirected one (REDIRECT to a second listener that refuses) and an
/// accepted one (ACCEPT of version 319, after which the client sends its first TTC message in
/// 4-byte-length framing), each checked in Warden's records.
#[test]
fn oracledb_thin_refused_redirected_and_accepted() {
    let py = oracledb_python();
    let mut t = Topo::new(ClientLink::Veth);
    let script = t.path("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let s = t.s.clone();
    t.spawn(&s, &["python3", LISTENER, "refuse", S4, "15210"]);
    t.spawn(&s, &["python3", LISTENER, "redirect", S4, "15211", "15210"]);
    t.spawn(&s, &["python3", LISTENER, "accept", S4, "15212"]);
    for port in [15210, 15211, 15212] {
        wait_listening(&t, port);
    }
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    std::thread::sleep(Duration::from_millis(1000));
    let c = t.c.clone();
    let run = |port: &str| {
        let out = t.exec(&c, &["timeout", "60", &py, script.to_str().unwrap(), S4, port]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let refused = run("15210");
    assert!(refused.contains("DPY-6001") && refused.contains("ORA-12514"), "{refused}");
    let redirected = run("15211");
    assert!(redirected.contains("DPY-6001") && redirected.contains("port 15210"), "{redirected}");
    let accepted = run("15212");
    assert!(accepted.contains("DPY-4011"), "{accepted}");

    let closed = |all: &[ConnectionRecord], port: u16| all.iter().filter(|r| r.closed && r.server_port == port).count();
    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        closed(all, 15210) >= 2 && closed(all, 15211) >= 1 && closed(all, 15212) >= 1
    });
    let on = |port: u16| -> Vec<&ConnectionRecord> {
        records.iter().filter(|r| r.closed && r.server_port == port).collect()
    };
    let (refuse, redirect, accept) = (on(15210), on(15211), on(15212));
    assert_eq!((refuse.len(), redirect.len(), accept.len()), (2, 1, 1), "{records:#?}\n{}", t.warden_log());

    // Refused, directly and after the redirect (whose connect data still names port 15211).
    let mut ports: Vec<u64> = Vec::new();
    for r in &refuse {
        let m = l7(r);
        let port = m["address_port"].as_u64().unwrap();
        check_connect(r, port as u16);
        ports.push(port);
        assert_eq!(m["refuse_err"], 12514, "{m:?}");
        assert_eq!(m["refuse_user_reason"], 0x22);
        assert_eq!(m["refuse_system_reason"], 0);
        assert_eq!(m["refuse_data"], REFUSE_DATA);
        assert_eq!(m["vsnnum"], 0);
        assert_eq!(m["packet_types"], serde_json::json!(["CONNECT", "REFUSE", "DATA"]));
        assert_eq!(m["packets_to_server"], 2);
        assert_eq!(m["data_packets_to_server"], 1);
        assert_eq!(m["packets_to_client"], 1);
    }
    ports.sort();
    assert_eq!(ports, [15210, 15211]);

    let r = redirect[0];
    check_connect(r, 15211);
    let m = l7(r);
    assert_eq!(m["redirects"], 1, "{m:?}");
    assert_eq!(m["redirect_host"], S4);
    assert_eq!(m["redirect_port"], 15210);
    assert_eq!(m["packet_types"], serde_json::json!(["CONNECT", "REDIRECT", "DATA"]));
    assert_eq!(m["data_packets_to_client"], 1);

    let r = accept[0];
    check_connect(r, 15212);
    let m = l7(r);
    assert_eq!(m["accept_version"], 319, "{m:?}");
    assert_eq!(m["accept_sdu"], 8192);
    assert_eq!(m["large_sdu"], true);
    // The connect data, then the TTC protocol negotiation framed with a 4-byte length.
    assert_eq!(m["data_packets_to_server"], 2);
    assert_eq!(m["client_banner"], "python-oracledb");
}
