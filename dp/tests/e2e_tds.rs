//! TDS end to end: FreeTDS `tsql` (TDS 7.4, encryption off) logs in to a fake SQL Server
//! (`tests/fixtures/fake_tds_server.py`, which refuses encryption) on a non-standard port through
//! Warden inline, and runs two SQL batches, the second an obvious injection. The record must say
//! `tds` with the login's user, database and application, the statements, and the injection in
//! `threats`.

mod common;

use std::time::Duration;

use common::{collect_reports, ClientLink, Topo, S4};

const PORT: u16 = 14331;

#[test]
fn tsql_login_and_batches_through_warden() {
    let mut t = Topo::new(ClientLink::Veth);
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_tds_server.py");
    let s = t.s.clone();
    t.spawn(&s, &["python3", "-u", server, S4, &PORT.to_string()]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    // The server listens once a local connection succeeds (inside its namespace: Warden sees
    // nothing of it).
    let probe = format!("exec 3<>/dev/tcp/{S4}/{PORT}");
    let up = (0..50).any(|_| {
        let ok = t.exec(&s, &["bash", "-c", &probe]).status.success();
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(up, "fake TDS server did not start");
    std::thread::sleep(Duration::from_millis(500));

    let conf = t.path("freetds.conf");
    std::fs::write(&conf, "[global]\n\ttds version = 7.4\n\tencryption = off\n").unwrap();
    let script = "SELECT name FROM sys.databases\ngo\nSELECT * FROM users WHERE name = '' OR '1'='1'\ngo\nexit\n";
    let cmd = format!(
        "printf '%s' \"$SCRIPT\" | FREETDSCONF={} timeout 20 tsql -H {S4} -p {PORT} {}",
        conf.display(),
        "-U warden_e2e -P 'E2e-pw!' -D inventory"
    );
    let c = t.c.clone();
    let out = t.exec(&c, &["env", &format!("SCRIPT={script}"), "sh", "-c", &cmd]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("Invalid object name 'users'"), "tsql did not get the server's error: {all}");

    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        all.iter().any(|r| r.server_port == PORT && r.closed && !r.threats.is_empty())
    });
    let r = records
        .iter()
        .rev()
        .find(|r| r.server_port == PORT && r.closed)
        .unwrap_or_else(|| panic!("no closed record for port {PORT}: {records:#?}\n{}", t.warden_log()));
    assert_eq!(r.app, "tds", "{r:?}");
    let l7 = r.l7.as_ref().expect("l7");
    assert_eq!(l7["tds_version"], "7.4", "{l7:?}");
    assert_eq!(l7["user"], "warden_e2e");
    assert_eq!(l7["database"], "inventory");
    assert_eq!(l7["app"], "TSQL");
    assert_eq!(l7["library"], "TDS-Library");
    assert_eq!(l7["server_name"], S4);
    assert_eq!(l7["encryption"], "not_supported");
    assert_eq!(l7["server_encryption"], "not_supported");
    assert_eq!(l7["encrypted"], false);
    assert_eq!(l7["login_ok"], true);
    assert_eq!(l7["server_program"], "Warden fake TDS");
    assert_eq!(l7["query_count"], 2);
    assert_eq!(l7["first_query"], "SELECT name FROM sys.databases\n");
    assert_eq!(l7["last_query"], "SELECT * FROM users WHERE name = '' OR '1'='1'\n");
    assert_eq!(l7["errors"], 1);
    assert_eq!(l7["first_error_number"], 208);
    assert!(!serde_json::to_string(l7).unwrap().contains("E2e-pw"), "password in the record");
    assert_eq!(r.threats.len(), 1, "{:?}", r.threats);
    let th = &r.threats[0];
    assert_eq!(th.id, "sql_injection");
    assert_eq!(th.dir, "to_server");
    assert_eq!(th.count, 1, "only the second batch is an injection");
    assert!(th.evidence.contains("OR '1'='1'"), "{th:?}");
}
