//! End to end: the TLS and SSH threats inline. OpenSSL's `s_server` listens on the server's
//! IPv4 address (workload `strict`, protect mode) and IPv6 address (workload `watched`, alert
//! mode); Warden runs with `[threats.tls_1_0] action = "drop"` and the other actions at their
//! defaults. From the client namespace: `openssl s_client -tls1_2` (the control) and `-tls1`
//! to both, then the crafted peers of `tests/captures/threats/tls_ssh_peers.py` (an SSL 3.0
//! ClientHello, a Heartbleed request after a TLS 1.1 handshake, an SSH-1.5 client against a
//! "1.99" server) against `strict`. (`s_server` serves one connection at a time and a dropped
//! session leaves it waiting for its client: the crafted TLS peers use a second `s_server` on
//! port 8443.) The TLS 1.0 client is cut in protect mode and served in
//! alert mode; the SSL 3.0, Heartbleed and SSH-1 sessions are reset (their default action);
//! every threat is in its session's record and comes as a `threat` event.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use warden_control::{ConnectionRecord, Event};

fn peers() -> String {
    format!("{}/tests/captures/threats/tls_ssh_peers.py", env!("CARGO_MANIFEST_DIR"))
}

fn policy() -> String {
    format!(
        r#"
[[workload]]
id = "strict"
ips = ["{S4}"]
mode = "protect"

[[workload]]
id = "watched"
ips = ["{S6}"]
mode = "alert"

[[rule]]
id = 1
from = "any"
to = "strict"
ip_proto = "tcp"
ports = ["443", "8443", "22"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "watched"
ip_proto = "tcp"
ports = ["443"]
action = "allow"
"#
    )
}

fn ids(r: &ConnectionRecord) -> Vec<&str> {
    r.threats.iter().map(|t| t.id.as_str()).collect()
}

fn version(r: &ConnectionRecord) -> &str {
    r.l7.as_ref().and_then(|l| l.get("version")).and_then(|v| v.as_str()).unwrap_or_default()
}

#[test]
fn tls_and_ssh_threats_inline() {
    require_root();
    let mut t = Topo::new(ClientLink::Veth);
    let (s, c) = (t.s.clone(), t.c.clone());
    let (key, cert) = (t.path("key.pem"), t.path("cert.pem"));
    sh(&[
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key.to_str().unwrap(), "-out",
        cert.to_str().unwrap(), "-days", "2", "-subj", "/CN=server.warden.test",
    ]);
    let legacy = "DEFAULT:@SECLEVEL=0";
    for addr in [format!("{S4}:443"), format!("{S4}:8443"), format!("[{S6}]:443")] {
        t.spawn(
            &s,
            &[
                "openssl", "s_server", "-accept", &addr, "-cert", cert.to_str().unwrap(), "-key", key.to_str().unwrap(),
                "-www", "-cipher", legacy, "-quiet",
            ],
        );
    }
    let peers = peers();
    t.spawn(&s, &["python3", &peers, "ssh1-server", "22", "SSH-1.99-OpenSSH_3.9p1"]);
    let pol = t.path("policy.toml");
    std::fs::write(&pol, policy()).unwrap();
    let pair = format!("{}:{}", t.a, t.b);
    t.start_warden_config("[threats.tls_1_0]\naction = \"drop\"\n", &["--inline", &pair, "--policy", pol.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", 443);
    t.wait_listening(&s, "tcp", 8443);
    t.wait_listening(&s, "tcp", 22);
    let mut ctl = t.subscribed();

    // openssl s_client: the page `s_server -www` answers when the handshake completes.
    let s_client = |addr: &str, version: &str| -> String {
        let cmd = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 6 openssl s_client -connect '{addr}' -{version} -cipher '{legacy}' -quiet 2>&1"
        );
        String::from_utf8_lossy(&t.exec(&c, &["sh", "-c", &cmd]).stdout).into_owned()
    };
    let ok = "HTTP/1.0 200 ok";
    let out = s_client(&format!("{S4}:443"), "tls1_2");
    assert!(out.contains(ok), "TLS 1.2 to strict: {out}");
    let out = s_client(&format!("{S4}:443"), "tls1");
    assert!(!out.contains(ok), "TLS 1.0 to strict was served: {out}");
    let out = s_client(&format!("[{S6}]:443"), "tls1");
    assert!(out.contains(ok), "TLS 1.0 to watched: {out}");
    // The crafted peers end by themselves (reset or answered); their exit status is not the
    // truth here, Warden's records are.
    t.exec(&c, &["timeout", "10", "python3", &peers, "sslv3-client", S4, "8443"]);
    t.exec(&c, &["timeout", "10", "python3", &peers, "heartbleed", S4, "8443"]);
    t.exec(&c, &["timeout", "10", "python3", &peers, "ssh1-client", S4, "22", "SSH-1.5-PuTTY_Release_0.52"]);

    // The sessions, by what they are: (server, port, what). Keyed by first frame too: a late
    // frame of a session that ended (the killed s_client's FIN after the drop) opens a new
    // mid-stream session of the same 5-tuple.
    type Latest = HashMap<(String, u16, String), ConnectionRecord>;
    let latest_of = |recs: &[ConnectionRecord]| -> Latest {
        recs.iter().map(|r| ((r.server_ip.clone(), r.client_port, r.first_seen.clone()), r.clone())).collect()
    };
    let find = |recs: &Latest, server: &str, port: u16, f: &dyn Fn(&ConnectionRecord) -> bool| {
        recs.values().find(|r| r.server_ip == server && r.server_port == port && f(r)).cloned()
    };
    let (recs, events) = collect_messages(&mut ctl, Duration::from_secs(60), |recs, events| {
        let latest = latest_of(recs);
        let done = [
            find(&latest, S4, 443, &|r| ids(r).contains(&"tls_1_0") && r.threat_block.is_some()),
            find(&latest, S6, 443, &|r| ids(r).contains(&"tls_1_0")),
            find(&latest, S4, 8443, &|r| ids(r).contains(&"tls_sslv2_sslv3") && r.threat_block.is_some()),
            find(&latest, S4, 8443, &|r| ids(r).contains(&"tls_heartbleed") && r.threat_block.is_some()),
            find(&latest, S4, 22, &|r| ids(r).contains(&"ssh_v1") && r.threat_block.is_some()),
        ]
        .iter()
        .all(Option::is_some);
        done && events.iter().filter(|e| matches!(e, Event::Threat { .. })).count() >= 6
    });
    let latest = latest_of(&recs);
    let all = || format!("{:#?}\n{}", latest.values().collect::<Vec<_>>(), t.warden_log());

    // Protect mode, `drop` from the configuration: the ServerHello and everything after it.
    let r = find(&latest, S4, 443, &|r| ids(r).contains(&"tls_1_0")).unwrap_or_else(|| panic!("TLS 1.0 to strict: {}", all()));
    assert_eq!((r.threat_block.as_deref(), r.threat_action.as_deref()), (Some("tls_1_0"), Some("drop")), "{r:#?}");
    assert!(r.packets_dropped_to_client >= 1, "{r:#?}");
    // The control: TLS 1.2 to the same server, no threat.
    let r = find(&latest, S4, 443, &|r| version(r) == "TLSv1.2").unwrap_or_else(|| panic!("TLS 1.2: {}", all()));
    assert!(r.threats.is_empty() && r.threat_block.is_none(), "{r:#?}");
    // Alert mode: reported, served.
    let r = find(&latest, S6, 443, &|r| ids(r).contains(&"tls_1_0")).unwrap_or_else(|| panic!("TLS 1.0 to watched: {}", all()));
    assert_eq!((r.threat_block.as_deref(), r.packets_dropped_to_client + r.packets_dropped_to_server), (None, 0), "{r:#?}");
    // Default `reset` actions.
    for (id, port) in [("tls_sslv2_sslv3", 8443), ("tls_heartbleed", 8443), ("ssh_v1", 22)] {
        let r = find(&latest, S4, port, &|r| ids(r).contains(&id)).unwrap_or_else(|| panic!("{id}: {}", all()));
        assert_eq!((r.threat_block.as_deref(), r.threat_action.as_deref()), (Some(id), Some("reset")), "{r:#?}");
    }
    let r = find(&latest, S4, 8443, &|r| ids(r).contains(&"tls_heartbleed")).unwrap();
    assert!(ids(&r).contains(&"tls_1_1"), "the Heartbleed peer negotiated TLS 1.1: {r:#?}");
    // Events: each threat once per session, with the action taken.
    let threat_events: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Threat { threat, connection } => Some((threat.id.as_str(), connection.server_ip.as_str(), threat.action.as_deref())),
            _ => None,
        })
        .collect();
    for want in [
        ("tls_1_0", S4, Some("drop")),
        ("tls_1_0", S6, Some("alert")),
        ("tls_sslv2_sslv3", S4, Some("reset")),
        ("tls_heartbleed", S4, Some("reset")),
        ("tls_1_1", S4, Some("alert")),
        ("ssh_v1", S4, Some("reset")),
    ] {
        assert!(threat_events.contains(&want), "no event {want:?} in {threat_events:?}");
    }
}
