//! The shadow policy end to end: real curl clients and python HTTP servers in namespaces,
//! Warden inline, the server workload in alert mode with both of its ports (8080, 8081)
//! allowed. A candidate policy (protect, 8080 only) loaded with `policy_shadow` must decide
//! nothing, show exactly the 8081 sessions in `policy_diff` and in the records
//! (`shadow_verdict: denied`), and, once promoted, block 8081 while 8080 keeps working.
//! Root only (see `common`).

mod common;

use std::time::Duration;

use common::*;
use warden_control::{ConnectionRecord, Reply, Request};

fn policy(mode: &str, ports: &[u16]) -> String {
    let mut p = format!("[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"{mode}\"\n");
    for (i, port) in ports.iter().enumerate() {
        p += &format!(
            "\n[[rule]]\nid = {}\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"{port}\"]\naction = \"allow\"\n",
            10 + i
        );
    }
    p
}

#[test]
fn a_shadow_candidate_shows_the_flow_it_would_deny_and_promoting_blocks_it() {
    let mut t = Topo::new(ClientLink::Veth);
    index_server(&mut t, 8080);
    index_server(&mut t, 8081);
    t.start_warden_policy(&policy("alert", &[8080, 8081]));
    let mut ctl = t.client();
    // No shadow yet: diff and promote say so.
    assert!(ctl.request(&Request::PolicyDiff {}).is_err());
    assert!(ctl.request(&Request::PolicyPromote {}).is_err());
    match ctl.request(&Request::PolicyShadow { text: "[[workload]]\nid = 3\n".into() }) {
        Err(e) => assert!(e.to_string().contains("shadow policy rejected"), "{e}"),
        Ok(r) => panic!("a broken candidate was loaded: {r:?}"),
    }
    let r = ctl.request(&Request::PolicyShadow { text: policy("protect", &[8080]) }).unwrap();
    assert!(matches!(&r, Reply::Done(m) if m.contains("shadow policy loaded")), "{r:?}");
    let mut sub = t.subscribed();
    // The shadow decides nothing: both ports answer, in IPv4 and IPv6.
    for host in [S4, S6] {
        for port in [8080, 8081] {
            assert_eq!(curl_index(&t, host, port), "200", "{host}:{port}: {}", t.warden_log());
        }
    }
    let closed = |recs: &[ConnectionRecord], port: u16| recs.iter().filter(|r| r.server_port == port && r.closed).count();
    let recs = collect_reports(&mut sub, Duration::from_secs(20), |r| closed(r, 8080) >= 2 && closed(r, 8081) >= 2);
    let finals: Vec<&ConnectionRecord> = recs.iter().filter(|r| r.closed).collect();
    assert_eq!(finals.len(), 4, "{recs:?}");
    for r in &finals {
        assert_eq!(r.verdict.as_deref(), Some("allowed"), "{r:?}");
        let shadow = (r.shadow_verdict.as_deref(), r.shadow_rule_id);
        match r.server_port {
            8080 => assert_eq!(shadow, (None, None), "{r:?}"),
            _ => assert_eq!((r.server_port, shadow, r.rule_id), (8081, (Some("denied"), None), Some(11)), "{r:?}"),
        }
    }
    let Reply::PolicyDiff(d) = ctl.request(&Request::PolicyDiff {}).unwrap() else { panic!("no diff") };
    assert_eq!((d.compared, d.differing, d.entries.len()), (4, 2, 1), "{d:?}");
    let e = &d.entries[0];
    assert_eq!(
        (e.change.as_str(), e.client_workload.as_deref(), e.server_workload.as_deref(), e.ip_proto, e.server_port, e.sessions),
        ("deny", None, Some("srv"), 6, 8081, 2),
        "{d:?}"
    );
    assert_eq!((e.verdict.as_deref(), e.rule_id, e.shadow_verdict.as_deref(), e.shadow_rule_id), (Some("allowed"), Some(11), Some("denied"), None));
    assert!([C4, C6].contains(&e.example_client.as_str()) && [S4, S6].contains(&e.example_server.as_str()), "{e:?}");
    let Reply::Status(st) = ctl.request(&Request::Status {}).unwrap() else { panic!() };
    assert_eq!(st.shadow_rules, Some(1));
    // Promote: the candidate runs, the shadow is gone.
    let r = ctl.request(&Request::PolicyPromote {}).unwrap();
    assert!(matches!(&r, Reply::Done(m) if m.contains("promoted")), "{r:?}");
    for host in [S4, S6] {
        assert_eq!(curl_index(&t, host, 8080), "200", "{host}:8080 after promote: {}", t.warden_log());
        assert_eq!(curl_index(&t, host, 8081), "000", "{host}:8081 passed after promote");
    }
    let Reply::PolicyText(text) = ctl.request(&Request::PolicyShow {}).unwrap() else { panic!() };
    assert!(text.contains("protect") && !text.contains("8081"), "{text}");
    let Reply::Status(st) = ctl.request(&Request::Status {}).unwrap() else { panic!() };
    assert_eq!(st.shadow_rules, None);
    assert!(ctl.request(&Request::PolicyDiff {}).is_err(), "the shadow was dropped by promote");
}
