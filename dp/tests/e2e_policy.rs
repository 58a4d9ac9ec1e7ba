//! End-to-end policy enforcement: real clients and servers in namespaces, Warden inline, a
//! workload in learn, alert or protect mode. Root only (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use warden_control::{Client, ConnectionRecord, Reply, Request, ServiceSpec, WorkloadSpec};

/// The server namespace's addresses as workload `srv` in `mode`, plus `rules`.
fn policy(mode: &str, rules: &str) -> String {
    format!("[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"{mode}\"\n\n{rules}")
}

const ALLOW_8080: &str =
    "[[rule]]\nid = 10\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\naction = \"allow\"\n";

fn start(t: &mut Topo, policy_text: &str) -> Client {
    t.start_warden_policy(policy_text);
    t.subscribed()
}

fn wait_listen(t: &Topo, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let pat = format!("sh -c \"ss -ltnH | grep -q ':{port} '\"");
    while !t
        .exec(&t.s, &["sh", "-c", &format!("ss -ltnH | grep -q ':{port} '")])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port} ({pat})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_server(t: &mut Topo, port: u16) -> u32 {
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("index.html"), 2000);
    let s = t.s.clone();
    let pid = t.spawn(
        &s,
        &[
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "::",
            "-d",
            www.to_str().unwrap(),
        ],
    );
    wait_listen(t, port);
    pid
}

fn redis_server(t: &mut Topo, port: u16) -> u32 {
    let s = t.s.clone();
    let dir = t.path("");
    let pid = t.spawn(
        &s,
        &[
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            &format!("{S4} {S6}"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    wait_listen(t, port);
    pid
}

fn curl(t: &Topo, host: &str, port: u16) -> String {
    let url = if host.contains(':') {
        format!("http://[{host}]:{port}/index.html")
    } else {
        format!("http://{host}:{port}/index.html")
    };
    let out = t.exec(
        &t.c,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &url,
        ],
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn redis_ping(t: &Topo, host: &str, port: u16) -> bool {
    let out = t.exec(
        &t.c,
        &["timeout", "5", "redis-cli", "-h", host, "-p", &port.to_string(), "PING"],
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "PONG"
}

fn stop(t: &mut Topo, pid: u32) {
    t.signal(pid, Signal::SIGTERM);
    t.wait_exit(pid, Duration::from_secs(5));
}

fn apply(t: &Topo, text: &str) -> Reply {
    t.client()
        .request(&Request::PolicyApply { text: text.to_string() })
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", t.warden_log()))
}

/// Protect mode, IPv4 and IPv6: curl to the allowed port works and is `allowed` by rule 10;
/// redis-cli to a port no rule allows fails, is reported `denied`, and raises a `denied` event.
#[test]
fn protect_allows_the_rule_and_denies_the_rest() {
    let mut t = Topo::new(ClientLink::Veth);
    http_server(&mut t, 8080);
    redis_server(&mut t, 7777);
    let mut ctl = start(&mut t, &policy("protect", ALLOW_8080));
    for host in [S4, S6] {
        assert_eq!(curl(&t, host, 8080), "200", "curl {host}: {}", t.warden_log());
        assert!(!redis_ping(&t, host, 7777), "redis to {host} passed in protect mode");
    }
    let closed_http = |r: &ConnectionRecord| r.server_port == 8080 && r.closed;
    let (recs, events) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, ev| {
        recs.iter().filter(|r| closed_http(r)).count() >= 2
            && ev.iter().filter(|e| e.connection().server_port == 7777).count() >= 2
    });
    for host in [S4, S6] {
        let http = recs
            .iter()
            .find(|r| closed_http(r) && r.server_ip == host)
            .unwrap_or_else(|| panic!("no http record for {host}: {recs:#?}"));
        assert_eq!(http.verdict.as_deref(), Some("allowed"), "{http:?}");
        assert_eq!(http.rule_id, Some(10));
        assert_eq!(http.server_workload.as_deref(), Some("srv"));
        assert_eq!(http.mode.as_deref(), Some("protect"));
        let ev = events
            .iter()
            .find(|e| e.connection().server_port == 7777 && e.connection().server_ip == host)
            .unwrap_or_else(|| panic!("no denied event for {host}: {events:#?}"));
        assert_eq!(ev.kind(), "denied");
        assert_eq!(ev.connection().verdict.as_deref(), Some("denied"));
        assert_eq!(ev.connection().rule_id, None, "decided by the mode's default");
        assert_eq!(
            ev.connection().packets_to_client, 0,
            "the server answered a denied session"
        );
    }
    // Hit counters and the drop counter.
    let stats = match t.client().request(&Request::PolicyStats {}).unwrap() {
        Reply::PolicyStats(v) => v,
        other => panic!("{other:?}"),
    };
    let rule10 = stats.iter().find(|s| s.id == Some(10)).unwrap();
    assert!(rule10.sessions >= 2, "{stats:?}");
    let denied = stats.iter().find(|s| s.default.as_deref() == Some("protect")).unwrap();
    assert!(denied.sessions >= 2, "{stats:?}");
    let counters = format!("{:?}", t.client().request(&Request::Counters {}).unwrap());
    assert!(counters.contains("policy_denied"), "{counters}");
}

/// An app rule allowing only `http` on 8080: HTTP works; Redis and SSH served on 8080 are cut
/// off once detected (dropped and reset), and reported `denied` with their app.
#[test]
fn app_rule_lets_only_http_through_on_its_port() {
    let mut t = Topo::new(ClientLink::Veth);
    let rule = "[[rule]]\nid = 20\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\napps = [\"http\"]\naction = \"allow\"\n";
    let pid = http_server(&mut t, 8080);
    let mut ctl = start(&mut t, &policy("protect", rule));
    assert_eq!(curl(&t, S4, 8080), "200", "{}", t.warden_log());
    stop(&mut t, pid);
    let pid = redis_server(&mut t, 8080);
    assert!(!redis_ping(&t, S4, 8080), "redis on 8080 passed an http-only rule");
    stop(&mut t, pid);
    let hostkey = t.path("hostkey");
    sh(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        hostkey.to_str().unwrap(),
    ]);
    std::fs::create_dir_all("/run/sshd").unwrap();
    let s = t.s.clone();
    t.spawn(
        &s,
        &[
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            "/dev/null",
            "-o",
            "Port=8080",
            "-o",
            &format!("ListenAddress={S4}"),
            "-o",
            &format!("HostKey={}", hostkey.display()),
            "-o",
            "PidFile=none",
        ],
    );
    wait_listen(&t, 8080);
    let c = t.c.clone();
    let out = t.exec(
        &c,
        &[
            "ssh",
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-p",
            "8080",
            &format!("nobody@{S4}"),
            "true",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("Remote protocol version"),
        "the ssh banner crossed: {log}"
    );
    let (recs, events) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, ev| {
        ["redis", "ssh"]
            .iter()
            .all(|a| ev.iter().any(|e| e.connection().app == *a))
            && recs.iter().any(|r| r.app == "http")
    });
    let http = recs
        .iter()
        .find(|r| r.app == "http")
        .unwrap_or_else(|| panic!("no http record: {recs:#?}\n{}", t.warden_log()));
    assert_eq!(
        (http.verdict.as_deref(), http.rule_id),
        (Some("allowed"), Some(20)),
        "{http:?}"
    );
    for app in ["redis", "ssh"] {
        let e = events
            .iter()
            .find(|e| e.connection().app == app)
            .unwrap_or_else(|| panic!("no event for {app}: {events:#?}"));
        assert_eq!(e.kind(), "denied");
        assert_eq!(e.connection().server_port, 8080);
    }
}

/// Alert mode: what protect mode denies flows, and is reported `violation` (record and event).
#[test]
fn alert_forwards_and_reports_violations() {
    let mut t = Topo::new(ClientLink::Veth);
    http_server(&mut t, 8080);
    redis_server(&mut t, 7777);
    let mut ctl = start(&mut t, &policy("alert", ALLOW_8080));
    assert_eq!(curl(&t, S4, 8080), "200");
    assert!(redis_ping(&t, S6, 7777), "alert mode blocked redis: {}", t.warden_log());
    let (recs, events) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, ev| {
        ev.iter().any(|e| e.connection().server_port == 7777) && recs.iter().any(|r| r.server_port == 7777 && r.closed)
    });
    let ev = events.iter().find(|e| e.connection().server_port == 7777).unwrap();
    assert_eq!(ev.kind(), "violation");
    let rec = recs.iter().find(|r| r.server_port == 7777 && r.closed).unwrap();
    assert_eq!(rec.verdict.as_deref(), Some("violation"));
    assert_eq!(rec.app, "redis");
    assert!(rec.packets_to_client > 0);
    let http = recs.iter().find(|r| r.server_port == 8080 && r.closed).unwrap();
    assert_eq!(http.verdict.as_deref(), Some("allowed"));
}

/// Learn mode forwards everything and reports it `learned`; the learned policy, applied,
/// protects the workload: the same traffic passes, new traffic does not.
#[test]
fn learned_policy_allows_what_was_seen_and_nothing_else() {
    let mut t = Topo::new(ClientLink::Veth);
    http_server(&mut t, 8080);
    redis_server(&mut t, 7777);
    redis_server(&mut t, 7778);
    let mut ctl = start(&mut t, &policy("learn", ""));
    assert_eq!(curl(&t, S4, 8080), "200");
    assert!(redis_ping(&t, S4, 7777));
    let (recs, _) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, _| {
        [8080, 7777]
            .iter()
            .all(|p| recs.iter().any(|r| r.server_port == *p && r.closed))
    });
    for p in [8080, 7777] {
        let r = recs.iter().find(|r| r.server_port == p && r.closed).unwrap();
        assert_eq!(r.verdict.as_deref(), Some("learned"), "{r:?}");
        assert_eq!(r.mode.as_deref(), Some("learn"));
    }
    let learned = match t.client().request(&Request::PolicyLearned {}).unwrap() {
        Reply::PolicyText(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(learned.contains("protect"), "{learned}");
    assert!(
        matches!(apply(&t, &learned), Reply::Done(_)),
        "learned policy rejected:\n{learned}"
    );
    assert_eq!(curl(&t, S4, 8080), "200", "learned policy blocks http:\n{learned}");
    assert!(redis_ping(&t, S4, 7777), "learned policy blocks redis:\n{learned}");
    assert!(
        !redis_ping(&t, S4, 7778),
        "learned policy lets new traffic through:\n{learned}"
    );
    let show = match t.client().request(&Request::PolicyShow {}).unwrap() {
        Reply::PolicyText(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(show.contains("protect"));
}

/// Mode changes, workload edits and whole-policy swaps under continuous allowed traffic (a ping
/// stream and a rate-limited download, IPv4 and IPv6) lose no packet and no byte.
#[test]
fn policy_changes_under_traffic_lose_nothing_allowed() {
    let mut t = Topo::new(ClientLink::Veth);
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("big.bin"), 12_000_000);
    let s = t.s.clone();
    t.spawn(
        &s,
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "::",
            "-d",
            www.to_str().unwrap(),
        ],
    );
    wait_listen(&t, 8080);
    let rules = format!("{ALLOW_8080}\n[[rule]]\nid = 11\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"icmp\"\naction = \"allow\"\n\n[[rule]]\nid = 12\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"icmpv6\"\naction = \"allow\"\n");
    let _ctl = start(&mut t, &policy("protect", &rules));
    let c = t.c.clone();
    let pings: Vec<_> = [S4, S6]
        .iter()
        .map(|dst| {
            let (c, dst) = (c.clone(), dst.to_string());
            std::thread::spawn(move || {
                std::process::Command::new("ip")
                    .args([
                        "netns", "exec", &c, "ping", "-q", "-c", "300", "-i", "0.02", "-W", "2", &dst,
                    ])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let download = {
        let c = c.clone();
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &c,
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    "--limit-rate",
                    "2500K",
                    "--max-time",
                    "30",
                ])
                .arg(format!("http://[{S6}]:8080/big.bin"))
                .output()
                .unwrap()
        })
    };
    let mut ctl = t.client();
    let with_extra = format!("{}\n[[rule]]\nid = 13\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"udp\"\nports = [\"53\"]\naction = \"allow\"\n", policy("protect", &rules));
    for step in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        let req = match step % 4 {
            0 => Request::SetMode {
                id: "srv".into(),
                mode: "alert".into(),
            },
            1 => Request::SetMode {
                id: "srv".into(),
                mode: "protect".into(),
            },
            2 => Request::PolicyApply {
                text: with_extra.clone(),
            },
            _ => Request::SetWorkload {
                workload: WorkloadSpec {
                    id: format!("other{step}"),
                    ips: vec![format!("198.18.0.{}", 50 + step)],
                    mode: Some("protect".into()),
                    ..Default::default()
                },
            },
        };
        let r = ctl.request(&req);
        assert!(matches!(r, Ok(Reply::Done(_))), "step {step}: {r:?}");
    }
    for (p, dst) in pings.into_iter().zip([S4, S6]) {
        let out = p.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("300 received") && text.contains(" 0% packet loss"),
            "ping {dst}: {text}"
        );
    }
    let out = download.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "12000000",
        "download through policy swaps"
    );
}

/// A bad policy is rejected whole with its line and field, and the running one stays.
#[test]
fn a_bad_policy_is_rejected_and_the_running_one_stays() {
    let mut t = Topo::new(ClientLink::Veth);
    http_server(&mut t, 8080);
    let _ctl = start(&mut t, &policy("protect", ALLOW_8080));
    let bad = policy(
        "protect",
        "[[rule]]\nid = 10\nfrom = \"any\"\nto = \"nosuch\"\naction = \"allow\"\n",
    );
    let err = t
        .client()
        .request(&Request::PolicyApply { text: bad })
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 9") && err.contains("\"to\""), "{err}");
    assert_eq!(curl(&t, S4, 8080), "200", "the running policy was lost");
    let show = match t.client().request(&Request::PolicyShow {}).unwrap() {
        Reply::PolicyText(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(show.contains("8080"), "{show}");
}

/// An `fqdn` rule on a protect-mode client workload: HTTP to the server is denied until a DNS
/// answer seen by Warden gives the server's address a name the rule allows.
#[test]
fn fqdn_rule_allows_a_server_once_dns_named_it() {
    let mut t = Topo::new(ClientLink::Veth);
    http_server(&mut t, 8080);
    let s = t.s.clone();
    t.spawn(
        &s,
        &["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", &format!("--listen-address={S4}"), "--port=5300", &format!("--address=/web.svc.test/{S4}"), "--pid-file="],
    );
    let text = format!(
        "[[workload]]\nid = \"cli\"\nips = [\"{C4}\", \"{C6}\"]\nmode = \"protect\"\n\n\
         [[rule]]\nid = 1\nfrom = \"cli\"\nto = \"any\"\nip_proto = \"udp\"\nports = [\"5300\"]\naction = \"allow\"\n\n\
         [[rule]]\nid = 2\nfrom = \"cli\"\nto = \"external\"\nip_proto = \"tcp\"\nports = [\"8080\"]\nfqdn = \"*.svc.test\"\naction = \"allow\"\n"
    );
    let mut ctl = start(&mut t, &text);
    assert_eq!(curl(&t, S4, 8080), "000", "allowed before any DNS answer named the server");
    let c = t.c.clone();
    let out = t.exec(&c, &["dig", "+short", "+time=2", "+tries=2", "-p", "5300", &format!("@{S4}"), "web.svc.test", "A"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), S4, "dig: {}", t.warden_log());
    assert_eq!(curl(&t, S4, 8080), "200", "the fqdn rule did not allow the named server");
    // The answer was taken as an answer to dig's own query and stored for the client.
    match t.client().request(&Request::Status {}).unwrap() {
        Reply::Status(st) => {
            let n = st.dns_names;
            assert!(n.stored >= 1 && n.refused_unsolicited == 0 && n.refused_off_chain == 0, "{n:?}");
        }
        other => panic!("{other:?}"),
    }
    let (recs, _) = collect_messages(&mut ctl, Duration::from_secs(20), |recs, _| {
        recs.iter().any(|r| r.server_port == 8080 && r.closed && r.verdict.as_deref() == Some("allowed"))
    });
    let ok = recs.iter().find(|r| r.server_port == 8080 && r.verdict.as_deref() == Some("allowed")).unwrap();
    assert_eq!((ok.rule_id, ok.client_workload.as_deref()), (Some(2), Some("cli")));
    let dns = recs.iter().find(|r| r.server_port == 5300).expect("dns record");
    assert_eq!((dns.verdict.as_deref(), dns.rule_id), (Some("allowed"), Some(1)));
}

/// `policy show` through the socket.
fn shown(t: &Topo) -> String {
    match t.client().request(&Request::PolicyShow {}).unwrap() {
        Reply::PolicyText(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Services (for `k8s_external_ip_mitm`) set and removed over the control socket: validated as
/// the file's `[[service]]` (the error names the field, the running policy stays), shown by
/// `policy show`, counted in `status`, kept through workload edits, a removed workload leaves
/// their backing lists, a claim on another workload's address is logged, and, like every
/// runtime edit, a reload of the policy file replaces them.
#[test]
fn services_are_set_over_the_socket_and_kept_through_workload_edits() {
    let mut t = Topo::new(ClientLink::Veth);
    let pid = t.start_warden_policy(&policy("alert", ALLOW_8080));
    let mut ctl = t.client();
    let set = |ctl: &mut Client, spec: ServiceSpec| ctl.request(&Request::SetService { service: spec });
    let pay = ServiceSpec {
        name: "payments".into(),
        namespace: Some("shop".into()),
        external_ips: vec![S4.into(), "198.19.9.9".into(), S6.into()],
        ports: vec!["443".into(), "8000-8100".into()],
        workloads: vec!["cli".into()],
    };
    // The backing workload must exist: rejected naming the field, nothing changes.
    let g0 = status_of(&mut ctl).policy_generation;
    let e = set(&mut ctl, pay.clone()).unwrap_err().to_string();
    assert!(e.contains("service shop/payments rejected") && e.contains("\"workloads\"") && e.contains("unknown workload \"cli\""), "{e}");
    assert_eq!(status_of(&mut ctl).policy_generation, g0);
    let r = ctl.request(&Request::SetWorkload {
        workload: WorkloadSpec { id: "cli".into(), ips: vec![C4.into(), C6.into()], ..Default::default() },
    });
    assert!(matches!(r, Ok(Reply::Done(_))), "{r:?}");
    // Bad addresses and ports are refused by field too.
    for (bad, field) in [
        (ServiceSpec { external_ips: vec!["198.19.9.300".into()], ..pay.clone() }, "external_ips"),
        (ServiceSpec { external_ips: vec!["127.0.0.1".into()], ..pay.clone() }, "external_ips"),
        (ServiceSpec { external_ips: vec![], ..pay.clone() }, "external_ips"),
        (ServiceSpec { ports: vec!["0-x".into()], ..pay.clone() }, "ports"),
        (ServiceSpec { name: "Payments".into(), ..pay.clone() }, "name"),
    ] {
        let e = set(&mut ctl, bad.clone()).unwrap_err().to_string();
        assert!(e.contains(&format!("field \"{field}\"")), "{bad:?}: {e}");
    }
    let r = set(&mut ctl, pay.clone()).unwrap();
    assert!(matches!(&r, Reply::Done(m) if m.contains("service shop/payments set") && m.contains("1 service(s)")), "{r:?}");
    // payments claims srv's addresses, and cli (not srv) backs it: the daemon says so.
    let log = t.warden_log();
    assert!(log.contains("service shop/payments claims 198.18.0.2") && log.contains("k8s_external_ip_mitm"), "{log}");
    // A second service, in the default namespace; setting payments again replaces it.
    set(&mut ctl, ServiceSpec { name: "dns".into(), namespace: None, external_ips: vec!["198.19.0.53".into()], ports: vec![], workloads: vec![] }).unwrap();
    set(&mut ctl, ServiceSpec { ports: vec!["443".into()], ..pay.clone() }).unwrap();
    let st = status_of(&mut ctl);
    assert_eq!((st.policy_services, st.policy_workloads), (2, 2));
    let text = shown(&t);
    let p = warden_dp::policy::Policy::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let svc = |p: &warden_dp::policy::Policy, ns: &str, name: &str| {
        p.services.iter().find(|s| s.namespace == ns && s.name == name).cloned()
    };
    let payments = svc(&p, "shop", "payments").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(payments.external_ips.len(), 3);
    assert_eq!(payments.ports.as_ref().map(Vec::len), Some(1), "replaced, not added: {text}");
    assert_eq!(payments.workloads, vec!["cli".to_string()]);
    assert!(svc(&p, "default", "dns").is_some(), "{text}");
    // Workload edits keep the services (they go through the policy's file form).
    ctl.request(&Request::SetMode { id: "srv".into(), mode: "protect".into() }).unwrap();
    assert_eq!(status_of(&mut ctl).policy_services, 2);
    // Removing cli removes it from payments' backing workloads; the service stays.
    ctl.request(&Request::RemoveWorkload { id: "cli".into() }).unwrap();
    let p = warden_dp::policy::Policy::from_toml(&shown(&t)).unwrap();
    assert_eq!(svc(&p, "shop", "payments").map(|s| s.workloads), Some(vec![]));
    // Removing: by namespace and name; an unknown one is an error.
    let e = ctl.request(&Request::RemoveService { namespace: None, name: "payments".into() }).unwrap_err();
    assert!(e.to_string().contains("no service default/payments"), "{e}");
    let r = ctl.request(&Request::RemoveService { namespace: Some("shop".into()), name: "payments".into() }).unwrap();
    assert!(matches!(&r, Reply::Done(m) if m.contains("service shop/payments removed")), "{r:?}");
    assert_eq!(status_of(&mut ctl).policy_services, 1);
    // A reload of the policy file replaces runtime edits, services included.
    t.signal(pid, Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&mut ctl).policy_services != 0 {
        assert!(Instant::now() < deadline, "reload kept the services: {}", t.warden_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!shown(&t).contains("[[service]]"));
}

fn status_of(ctl: &mut Client) -> warden_control::Status {
    match ctl.request(&Request::Status {}).unwrap() {
        Reply::Status(s) => s,
        other => panic!("{other:?}"),
    }
}
