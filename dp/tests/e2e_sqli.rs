//! End to end: SQL injection detected inline. A small Python HTTP app in the server namespace
//! (non-standard port), curl in the client namespace through Warden: a benign request, a GET
//! whose query value is an injection and a form POST carrying a UNION SELECT; then MariaDB with
//! a benign and an injected statement. The injections' records carry `threats` and subscribers
//! get one threat event per injected session.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use warden_control::{ConnectionRecord, Event};

const APP: &str = r#"
import sys
from http.server import HTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    def reply(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n:
            self.rfile.read(n)
        b = b'ok\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_GET = reply
    do_POST = reply
    def log_message(self, *a):
        pass
HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what} did not come up");
}

/// Records (latest per client port) and threat events, until `done` or the timeout.
fn collect(
    client: &mut warden_control::Client,
    timeout: Duration,
    mut done: impl FnMut(&HashMap<u16, ConnectionRecord>, &[Event]) -> bool,
) -> (HashMap<u16, ConnectionRecord>, Vec<Event>) {
    let latest = |recs: &[ConnectionRecord]| -> HashMap<u16, ConnectionRecord> {
        recs.iter().map(|r| (r.client_port, r.clone())).collect()
    };
    let (recs, events) = collect_messages(client, timeout, |recs, ev| done(&latest(recs), ev));
    (latest(&recs), events)
}

fn path_of(r: &ConnectionRecord) -> String {
    r.l7.as_ref().and_then(|l| l.get("path")).and_then(|p| p.as_str()).unwrap_or_default().to_string()
}

/// The record's `l7` as text (the statement is the first or the last query: the mariadb
/// client sends `select @@version_comment limit 1` first).
fn query_of(r: &ConnectionRecord) -> String {
    r.l7.as_ref().map(|l| serde_json::to_string(l).unwrap_or_default()).unwrap_or_default()
}

#[test]
fn sql_injection_in_http_and_mysql_detected_inline() {
    require_root();
    let mut t = Topo::new(ClientLink::Veth);
    let (s, c) = (t.s.clone(), t.c.clone());
    let app = t.path("app.py");
    std::fs::write(&app, APP).unwrap();
    t.spawn(&s, &["python3", app.to_str().unwrap(), S4, "8089"]);
    // MariaDB: a throwaway datadir, no grant tables.
    t.mariadb(3398, &["--skip-grant-tables"]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    let base = format!("http://{S4}:8089");
    wait_until("python app", || {
        t.exec(&c, &["curl", "-sf", "-o", "/dev/null", &format!("{base}/health")]).status.success()
    });
    wait_until("mariadb", || {
        t.exec(&c, &["mariadb-admin", "-h", S4, "-P", "3398", "-u", "root", "ping"]).status.success()
    });

    let curl = |args: &[&str]| {
        let mut a = vec!["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        let out = t.exec(&c, &a);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "curl {args:?}");
    };
    curl(&[&format!("{base}/item?id=1")]);
    curl(&[&format!("{base}/item?id=1%27%20OR%20%271%27%3D%271")]);
    curl(&["--data", "id=2+UNION+ALL+SELECT+NULL%2CNULL%2Cversion%28%29--+-", &format!("{base}/item")]);
    let sql = |q: &str| {
        let out = t.exec(&c, &["mariadb", "-h", S4, "-P", "3398", "-u", "app", "-D", "mysql", "-N", "-e", q]);
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sql("SELECT 6 * 7");
    sql("SELECT name FROM mysql.help_topic WHERE name = 'x' OR 'a'='a' LIMIT 1");

    let http = |recs: &HashMap<u16, ConnectionRecord>, want: &dyn Fn(&ConnectionRecord) -> bool| {
        recs.values().find(|r| r.server_port == 8089 && r.closed && want(r)).cloned()
    };
    let benign = |r: &ConnectionRecord| path_of(r) == "/item?id=1";
    let get = |r: &ConnectionRecord| r.server_port == 8089 && path_of(r).contains("%27");
    let post = |r: &ConnectionRecord| {
        r.server_port == 8089 && r.l7.as_ref().is_some_and(|l| l.get("method").is_some_and(|m| m == "POST"))
    };
    let my_ok = |r: &ConnectionRecord| r.server_port == 3398 && r.closed && query_of(r).contains("6 * 7");
    let my_bad = |r: &ConnectionRecord| r.server_port == 3398 && r.closed && query_of(r).contains("'a'='a'");
    let (recs, events) = collect(&mut ctl, Duration::from_secs(25), |recs, events| {
        let injected: Vec<u16> =
            recs.values().filter(|r| get(r) || post(r) || my_bad(r)).map(|r| r.client_port).collect();
        http(recs, &benign).is_some()
            && http(recs, &get).is_some()
            && http(recs, &post).is_some()
            && recs.values().any(my_ok)
            && recs.values().any(my_bad)
            && injected.len() == 3
            && events
                .iter()
                .map(|e| match e {
                    Event::Threat { threat, .. } => threat.count,
                    _ => 0,
                })
                .sum::<u32>()
                == 3
    });
    let dump = || format!("records: {recs:#?}\nevents: {events:#?}");

    let r = http(&recs, &benign).unwrap_or_else(|| panic!("no benign record\n{}", dump()));
    assert_eq!(r.app, "http");
    assert!(r.threats.is_empty(), "benign request flagged: {r:?}");
    let r = http(&recs, &get).unwrap_or_else(|| panic!("no GET injection record\n{}", dump()));
    assert_eq!(r.threats.len(), 1, "{r:?}");
    let th = &r.threats[0];
    assert_eq!((th.id.as_str(), th.dir.as_str(), th.evidence.as_str()), ("sql_injection", "to_server", "1' OR '1'='1"));
    let r = http(&recs, &post).unwrap_or_else(|| panic!("no POST injection record\n{}", dump()));
    assert_eq!((r.threats[0].id.as_str(), r.threats[0].dir.as_str()), ("sql_injection", "to_server"), "{r:?}");
    assert!(r.threats[0].evidence.contains("UNION ALL SELECT"), "{r:?}");
    let r = recs.values().find(|r| my_ok(r)).unwrap_or_else(|| panic!("no benign MariaDB record\n{}", dump()));
    assert_eq!(r.app, "mysql");
    assert!(r.threats.is_empty(), "benign statement flagged: {r:?}");
    let r = recs.values().find(|r| my_bad(r)).unwrap_or_else(|| panic!("no injected MariaDB record\n{}", dump()));
    assert_eq!((r.threats[0].id.as_str(), r.threats[0].reason.as_str()), ("sql_injection", "tautology"), "{r:?}");

    // Threat events are merged per (threat, client, server): the first injection is an event
    // at once with its session's record, the other two are counted into the next one (10 s
    // later); no detection is lost and benign sessions raise none.
    let injected: Vec<u16> = recs.values().filter(|r| get(r) || post(r) || my_bad(r)).map(|r| r.client_port).collect();
    let mut total = 0;
    for e in &events {
        let Event::Threat { threat, connection } = e else { panic!("not a threat event: {e:?}") };
        assert_eq!(threat.id, "sql_injection");
        assert_eq!((threat.severity.as_deref(), threat.action.as_deref()), (Some("critical"), Some("alert")));
        assert!(threat.frame.is_some() && threat.frame_len.is_some(), "{threat:?}");
        assert!(injected.contains(&connection.client_port), "event for a benign session {connection:?}");
        // With its session's record: the record lists the threat too.
        if !connection.app.is_empty() && connection.app != "unknown" {
            assert!(connection.threats.iter().any(|t| t.id == threat.id), "{connection:?}");
        }
        total += threat.count;
    }
    assert_eq!(total, 3, "{}", dump());
    assert!(events.len() <= 2, "{}", dump());
}
