//! End to end: rate and cross-session threats inline with real tools. `hping3 --flood` sends
//! SYNs at the server's web port while `curl` downloads a file from it through Warden in
//! protect mode: the flood is reported and its excess dropped, the download completes whole.
//! Then a MariaDB server with a real account meets a loop of wrong passwords from the same
//! client: `mysql_access_denied` (the server's error 1045, repeated) is reported; a client
//! that logs in right is not. `dig axfr` against dnsmasq is reported as `dns_zone_transfer`; an
//! ordinary query is answered and raises nothing.

mod common;

use std::time::Duration;

use common::*;
use warden_control::{Event, Reply, Request};

/// Waits up to 30 s for `ok`.
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn policy() -> String {
    format!(
        r#"
[[workload]]
id = "web"
ips = ["{S4}"]
mode = "protect"

[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["8080", "3306", "5300"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "udp"
ports = ["5300"]
action = "allow"
"#
    )
}

#[test]
fn a_syn_flood_is_cut_while_a_download_continues_and_wrong_passwords_are_reported() {
    require_root();
    let mut t = Topo::new(ClientLink::Veth);
    let (s, c) = (t.s.clone(), t.c.clone());
    // A 16 MiB file served by python's http.server.
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    t.spawn(&s, &["python3", "-m", "http.server", "--bind", S4, "--directory", www.to_str().unwrap(), "8080"]);
    // MariaDB with a real account (error 1045 for a wrong password).
    let init = t.path("init.sql");
    std::fs::write(&init, "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'apppass';\n").unwrap();
    t.mariadb(3306, &["--skip-name-resolve", &format!("--init-file={}", init.display())]);
    // dnsmasq answering for svc.test (it refuses zone transfers: the query is what counts).
    t.spawn(
        &s,
        &["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", &format!("--listen-address={S4}"), "--port=5300", "--address=/svc.test/198.18.0.77", "--pid-file="],
    );
    let pol = t.path("policy.toml");
    std::fs::write(&pol, policy()).unwrap();
    let pair = format!("{}:{}", t.a, t.b);
    t.start_warden_config("", &["--inline", &pair, "--policy", pol.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", 8080);
    t.wait_listening(&s, "tcp", 3306);
    let mut ctl = t.subscribed();

    // The download (about 6 s at 3 MB/s) with a 3 s flood in its middle.
    let out = t.path("got");
    let url = format!("http://{S4}:8080/blob");
    let curl = t.spawn(&c, &["curl", "-sf", "--limit-rate", "3M", "-o", out.to_str().unwrap(), &url]);
    std::thread::sleep(Duration::from_millis(1500));
    t.exec(&c, &["timeout", "3", "hping3", "--flood", "-S", "-p", "8080", S4]);
    wait_until("the download to end", || !std::path::Path::new(&format!("/proc/{curl}")).exists() || std::fs::metadata(&out).is_ok_and(|m| m.len() == blob.len() as u64));
    wait_until("the download to be complete", || std::fs::read(&out).is_ok_and(|b| b == blob));

    // Wrong passwords, then a right one from the same client.
    for i in 0..8 {
        t.exec(&c, &["mariadb", "-h", S4, "-u", "app", &format!("-pwrong{i}"), "--skip-ssl", "-e", "SELECT 1"]);
    }
    let ok = t.exec(&c, &["mariadb", "-h", S4, "-u", "app", "-papppass", "--skip-ssl", "-e", "SELECT 1"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // A zone transfer request (TCP) and an ordinary query (the control).
    t.wait_listening(&s, "tcp", 5300);
    t.exec(&c, &["dig", "+time=2", "+tries=1", "-p", "5300", &format!("@{S4}"), "svc.test", "AXFR"]);
    let a = t.exec(&c, &["dig", "+short", "+time=2", "+tries=1", "-p", "5300", &format!("@{S4}"), "www.svc.test"]);
    assert_eq!(String::from_utf8_lossy(&a.stdout).trim(), "198.18.0.77");

    let (_, events) = collect_messages(&mut ctl, Duration::from_secs(30), |_, events| {
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Threat { threat, .. } => Some(threat.id.as_str()),
                _ => None,
            })
            .collect();
        ids.contains(&"tcp_syn_flood") && ids.contains(&"mysql_access_denied") && ids.contains(&"dns_zone_transfer")
    });
    let threat = |id: &str| {
        events.iter().find_map(|e| match e {
            Event::Threat { threat, connection } if threat.id == id => Some((threat.clone(), connection.clone())),
            _ => None,
        })
    };
    let (flood, conn) = threat("tcp_syn_flood").unwrap_or_else(|| panic!("no flood event: {events:#?}\n{}", t.warden_log()));
    assert_eq!((flood.action.as_deref(), conn.server_ip.as_str(), conn.server_port), (Some("drop"), S4, 8080), "{flood:?}");
    assert!(flood.frame.is_some(), "{flood:?}");
    let (auth, conn) = threat("mysql_access_denied").unwrap_or_else(|| panic!("no auth event: {events:#?}"));
    assert_eq!((conn.client_ip.as_str(), conn.server_port), (C4, 3306), "{auth:?} {conn:?}");
    let (axfr, conn) = threat("dns_zone_transfer").unwrap_or_else(|| panic!("no AXFR event: {events:#?}"));
    assert_eq!((axfr.action.as_deref(), conn.server_port), (Some("alert"), 5300), "{axfr:?}");
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Threat { threat, .. } if threat.id.starts_with("dns_"))).count(), 1, "{events:#?}");
    // The catalogue's counters: SYNs dropped by the flood's action.
    let Ok(Reply::Threats(list)) = t.client().request(&Request::Threats {}) else { panic!("threats request") };
    let syn = list.iter().find(|x| x.id == "tcp_syn_flood").unwrap();
    assert!(syn.dropped_frames > 1000, "{syn:?}");
    assert_eq!(list.len(), 30);
    // And per worker in the counters: detections, drops, events sent, none lost.
    let Ok(Reply::Counters(cnt)) = t.client().request(&Request::Counters {}) else { panic!("counters request") };
    let w = &cnt.workers[0].threats;
    assert!(w.get("dropped").is_some_and(|n| *n > 1000) && w.get("events").is_some_and(|n| *n >= 3), "{w:?}");
    assert_eq!(w.get("events_lost"), None, "{w:?}");
}
