//! The attack suite on live traffic (root only, see `common`): Warden inline in front of the
//! workload `web` (the server namespace, `iface` = Warden's interface on its side), whose
//! policy allows TCP 8080 in and TCP 443 out and nothing else. The attacker (the client
//! namespace) crafts frames with python3-scapy (`fixtures/attacker.py`) and then connects for
//! real from its port 443 to one of web's denied ports, where a real server
//! (`fixtures/attack_sink.py`) writes down what its application received: that log is the
//! truth. Attacks, over IPv4 and IPv6: a SYN|ACK first, a bare ACK first, a SYN spoofed from
//! web's address, a bare ACK after a denied SYN has ended, and a plain connection to an
//! address on web's side that the policy does not list.
//!
//! Protect mode: the server application receives nothing on the denied ports (accept() never
//! returns), the control connections (the attacker's to 8080, web's own to the attacker's 443)
//! get through, and the records count every dropped frame with its reason. Alert mode: the
//! same traffic reaches the server, and the records, events and counters report it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use warden_control::{Client, ConnectionRecord, Event, Reply, Request};

const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/attack_sink.py");
const ATTACKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/attacker.py");
/// Debian's interpreter (python3-scapy is installed for it).
const PY: &str = "/usr/bin/python3";
const ALLOWED: u16 = 8080;
/// Each attack on a denied port of its own, so their sessions never share a 5-tuple.
const ATTACKS: [(&str, u16); 4] =
    [("synack-first", 2222), ("bare-ack", 2223), ("spoofed-syn", 2224), ("ack-after-denied-syn", 2225)];
/// An address on web's side of the pair that the policy does not list (web's interface makes
/// it web's), and the denied port the attacker connects to there with the kernel's TCP.
const UNLISTED: [&str; 2] = ["198.18.0.77", "2001:db8::77"];
const UNLISTED_PORT: u16 = 2226;
/// Seconds the attacker waits after its denied SYN: more than the linger of a denied session
/// (`tcp_closed_timeout` = 1 s in `Topo::start_warden`'s config).
const LINGER_S: &str = "2.5";

/// What `attacker.py` reports for one attack.
#[derive(Debug, serde::Deserialize)]
struct Attack {
    attack: String,
    port: u16,
    /// `v4` or `v6`.
    family: String,
    /// Frames crafted from the attacker's own address.
    crafted: u64,
    /// Frames crafted claiming web's address.
    spoofed: u64,
    /// The real connections' outcomes.
    connects: Vec<String>,
}

impl Attack {
    /// Web's address in the attack's family.
    fn web(&self) -> &'static str {
        if self.family == "v6" {
            S6
        } else {
            S4
        }
    }

    /// True for the records of this attack's sessions (its port, its family).
    fn is_on(&self, x: &ConnectionRecord) -> bool {
        on_port(x, self.port) && (x.server_ip == self.web() || x.client_ip == self.web())
    }
}

fn policy(mode: &str, iface: &str) -> String {
    format!(
        r#"
[[workload]]
id = "web"
ips = ["{S4}", "{S6}"]
iface = "{iface}"
mode = "{mode}"

[[rule]]
id = 1
from = "web"
to = "any"
ip_proto = "tcp"
ports = ["443"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["{ALLOWED}"]
action = "allow"
"#
    )
}

/// One line to `host:port` from `ns` with the kernel's TCP; true when the server took it and
/// closed.
fn send_line(t: &Topo, ns: &str, host: &str, port: u16, line: &str) -> bool {
    let script = "import socket, sys\n\
                  s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n\
                  s.sendall(sys.argv[3].encode() + b'\\n')\n\
                  while s.recv(4096): pass\n";
    t.exec(ns, &[PY, "-c", script, host, &port.to_string(), line]).status.success()
}

fn read_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The log lines of connections the server application accepted on `port`.
fn accepted_on(log: &str, port: u16) -> Vec<&str> {
    log.lines().filter(|l| l.split(' ').nth(1) == Some(&port.to_string())).collect()
}

struct Suite {
    t: Topo,
    ctl: Client,
    /// The workload's server log.
    log: std::path::PathBuf,
}

fn start(mode: &str) -> Suite {
    let mut t = Topo::new(ClientLink::Veth);
    let log = t.path("web.log");
    let s = t.s.clone();
    let mut args = vec![PY.to_string(), SINK.to_string(), log.display().to_string(), ALLOWED.to_string()];
    args.extend(ATTACKS.iter().map(|(_, p)| p.to_string()));
    args.push(UNLISTED_PORT.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.spawn(&s, &args);
    for p in std::iter::once(ALLOWED).chain(ATTACKS.iter().map(|a| a.1)) {
        t.wait_listening(&s, "tcp", p);
    }
    // Secondary (IPv4) and deprecated (IPv6) so that web's own connections keep S4/S6 as
    // their source.
    sh(&["ip", "-n", &s, "addr", "add", &format!("{}/24", UNLISTED[0]), "dev", &t.s0]);
    sh(&["ip", "-n", &s, "addr", "add", &format!("{}/64", UNLISTED[1]), "dev", &t.s0, "nodad", "preferred_lft", "0"]);
    let text = policy(mode, &t.b);
    t.start_warden_policy(&text);
    let ctl = t.subscribed();
    Suite { t, ctl, log }
}

impl Suite {
    /// The controls: the attacker's connection to the allowed port, and web's own connection
    /// out to the attacker's 443 (the orientation the attacks try to pass for). Both must
    /// reach their server's application.
    fn controls(&mut self, me: &str, web: &str) {
        let fam = if web.contains(':') { "v6" } else { "v4" };
        let line = format!("CONTROL-{fam}");
        assert!(send_line(&self.t, &self.t.c, web, ALLOWED, &line), "control to {ALLOWED}: {}", self.t.warden_log());
        assert!(read_log(&self.log).contains(&line), "the server did not get the control: {}", read_log(&self.log));
        // The attacker's side runs a one-connection server on 443 (gone before the attacks,
        // which bind that port for their own connections).
        let out_log = self.t.path(&format!("evil-{fam}.log"));
        let c = self.t.c.clone();
        let pid = self.t.spawn(&c, &[PY, SINK, out_log.to_str().unwrap(), "--once", "443"]);
        self.t.wait_listening(&c, "tcp", 443);
        let line = format!("EGRESS-{fam}");
        assert!(send_line(&self.t, &self.t.s, me, 443, &line), "web's own connection to 443: {}", self.t.warden_log());
        assert_eq!(self.t.wait_exit(pid, Duration::from_secs(10)), Some(true), "the one-connection server did not finish");
        assert!(read_log(&out_log).contains(&line), "{}", read_log(&out_log));
    }

    /// The attacker's plain connection to web's denied port at an address of web's that the
    /// policy does not list; true when it connected.
    fn unlisted(&self, family: usize) -> bool {
        send_line(&self.t, &self.t.c, UNLISTED[family], UNLISTED_PORT, &format!("ATTACK-unlisted-{family}"))
    }

    /// Runs every attack from the attacker's namespace against `web`.
    fn attacks(&self, me: &str, web: &str) -> Vec<Attack> {
        let t = &self.t;
        let (my_mac, web_mac) = (mac(t, &t.c, &t.c0), mac(t, &t.s, &t.s0));
        let mut args = vec![PY, ATTACKER, &t.c0, &my_mac, &web_mac, me, web, LINGER_S];
        let specs: Vec<String> = ATTACKS.iter().map(|(a, p)| format!("{a}:{p}")).collect();
        args.extend(specs.iter().map(String::as_str));
        let out = t.exec(&t.c, &args);
        assert!(out.status.success(), "attacker.py: {}", String::from_utf8_lossy(&out.stderr));
        let v: Vec<Attack> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(v.len(), ATTACKS.len(), "{v:?}");
        v
    }

    fn counters(&self) -> (u64, BTreeMap<String, u64>) {
        let c = match self.t.client().request(&Request::Counters {}).unwrap() {
            Reply::Counters(c) => c,
            other => panic!("{other:?}"),
        };
        let mut ex = BTreeMap::new();
        for w in &c.workers {
            for (k, v) in &w.exceptions {
                *ex.entry(k.clone()).or_insert(0) += v;
            }
        }
        (c.workers.iter().map(|w| w.spoofed).sum(), ex)
    }
}

type Key = (String, u16, String, u16, String);

/// The latest record of each session (records are snapshots; the final one has `closed`).
fn latest(recs: &[ConnectionRecord]) -> BTreeMap<Key, ConnectionRecord> {
    let mut m = BTreeMap::new();
    for r in recs {
        let k = (r.client_ip.clone(), r.client_port, r.server_ip.clone(), r.server_port, r.first_seen.clone());
        m.insert(k, r.clone());
    }
    m
}

fn on_port(r: &ConnectionRecord, port: u16) -> bool {
    r.ip_proto == 6 && (r.server_port == port || r.client_port == port)
}

fn is_web(ip: &str) -> bool {
    ip == S4 || ip == S6
}

/// Waits until every TCP session (attacks and controls are all there is) has its final record
/// and `enough` holds for the final records.
fn collect_finals(
    s: &mut Suite,
    enough: impl Fn(&[&ConnectionRecord]) -> bool,
) -> (Vec<ConnectionRecord>, Vec<Event>) {
    let (recs, events) = collect_messages(&mut s.ctl, Duration::from_secs(30), |recs, _| {
        let l = latest(recs);
        let ours: Vec<&ConnectionRecord> = l.values().filter(|r| r.ip_proto == 6).collect();
        ours.iter().all(|r| r.closed) && enough(&ours)
    });
    (latest(&recs).into_values().collect(), events)
}

/// True for a control connection: the attacker's to the allowed port, or web's own to 443.
fn is_control(x: &ConnectionRecord) -> bool {
    on_port(x, ALLOWED) || (x.server_port == 443 && is_web(&x.client_ip) && !ATTACKS.iter().any(|a| x.client_port == a.1))
}

/// The controls (the attacker's connection to the allowed port, web's own to 443, in both
/// families) passed untouched: allowed by their rule, nothing dropped, no exception.
fn check_controls(finals: &[ConnectionRecord]) {
    let controls: Vec<&ConnectionRecord> = finals.iter().filter(|x| is_control(x)).collect();
    assert_eq!(controls.len(), 4, "{finals:#?}");
    for x in controls {
        assert_eq!(x.verdict.as_deref(), Some("allowed"), "{x:#?}");
        assert_eq!(x.rule_id, Some(if x.server_port == ALLOWED { 2 } else { 1 }), "{x:#?}");
        assert_eq!((x.packets_dropped_to_server, x.packets_dropped_to_client), (0, 0), "{x:#?}");
        assert_eq!((x.exception_action.as_deref(), x.inspection_reason.as_deref()), (None, None), "{x:#?}");
        assert!(x.closed && x.packets_to_server > 0 && x.packets_to_client > 0, "{x:#?}");
    }
}

/// Protect mode: nothing of any attack reaches web's application; the controls do; every
/// attack frame is dropped and counted in the records with its reason.
#[test]
fn protect_lets_no_attack_through_and_records_every_dropped_frame() {
    let mut s = start("protect");
    let mut results = Vec::new();
    for (me, web) in [(C4, S4), (C6, S6)] {
        s.controls(me, web);
        results.extend(s.attacks(me, web));
    }
    for family in [0, 1] {
        assert!(!s.unlisted(family), "connected to {}", UNLISTED[family]);
    }
    let wlog = read_log(&s.log);
    // The truth: the application never accepted a connection on a denied port.
    for (a, p) in ATTACKS.iter().copied().chain([("unlisted-address", UNLISTED_PORT)]) {
        assert!(accepted_on(&wlog, p).is_empty(), "{a} reached the server on {p}: {wlog}");
    }
    for r in &results {
        assert!(r.connects.iter().all(|c| c == "timeout"), "{r:?}");
    }
    let expected_reasons = |a: &str| -> BTreeSet<&'static str> {
        match a {
            "spoofed-syn" => ["policy_denied"].into(),
            _ => ["midstream", "policy_denied"].into(),
        }
    };
    let (finals, events) = collect_finals(&mut s, |ours| {
        results.iter().all(|r| {
            let got: BTreeSet<&str> =
                ours.iter().filter(|x| r.is_on(x)).filter_map(|x| x.inspection_reason.as_deref()).collect();
            got == expected_reasons(&r.attack)
        }) && ours.iter().filter(|x| is_control(x)).count() >= 4
            && UNLISTED.iter().all(|a| ours.iter().any(|x| x.server_ip == *a && x.server_port == UNLISTED_PORT))
    });
    let ctx = format!("{finals:#?}\n{}", s.t.warden_log());
    // Per attack and family.
    for r in &results {
        let web = r.web();
        let recs: Vec<&ConnectionRecord> = finals.iter().filter(|x| r.is_on(x)).collect();
        assert!(!recs.is_empty(), "{}: no record: {ctx}", r.attack);
        let mut midstream = 0;
        for x in &recs {
            let what = format!("{} {web}: {x:#?}", r.attack);
            assert_eq!(x.verdict.as_deref(), Some("denied"), "{what}");
            assert_eq!(x.server_workload.as_deref().or(x.client_workload.as_deref()), Some("web"), "{what}");
            // Nothing of the session went anywhere, and web never answered.
            assert_eq!((x.packets_dropped_to_server, x.packets_dropped_to_client), (x.packets_to_server, x.packets_to_client), "{what}");
            assert_eq!((x.bytes_dropped_to_server, x.bytes_dropped_to_client), (x.bytes_to_server, x.bytes_to_client), "{what}");
            let from_web = if is_web(&x.client_ip) { x.packets_to_server } else { x.packets_to_client };
            assert_eq!(from_web, 0, "web answered: {what}");
            match x.inspection_reason.as_deref() {
                Some("midstream") => {
                    midstream += 1;
                    assert_eq!((x.exception_action.as_deref(), x.inspection.as_deref()), (Some("drop_flow"), Some("bypassed")), "{what}");
                    // Exactly the frames the attacker crafted, dropped in the direction it sent them.
                    let dropped = if is_web(&x.client_ip) { x.packets_dropped_to_client } else { x.packets_dropped_to_server };
                    assert_eq!(dropped, r.crafted, "{what}");
                    let ev = events.iter().find(|e| {
                        e.kind() == "exception" && e.connection().first_seen == x.first_seen && on_port(e.connection(), r.port)
                    });
                    assert!(ev.is_some(), "no exception event: {what}\n{events:#?}");
                }
                Some("policy_denied") => {
                    // The real connection, decided the right way round.
                    assert_eq!((x.server_ip.as_str(), x.server_port), (web, r.port), "{what}");
                    assert!(x.packets_dropped_to_server >= 1, "{what}");
                    assert!(
                        events.iter().any(|e| e.kind() == "denied" && e.connection().first_seen == x.first_seen),
                        "no denied event: {what}"
                    );
                }
                other => panic!("reason {other:?}: {what}"),
            }
        }
        assert_eq!(midstream, u64::from(r.crafted > 0), "{}: {ctx}", r.attack);
    }
    check_controls(&finals);
    // The unlisted addresses are web's: denied, nothing answered.
    for a in UNLISTED {
        let x = finals.iter().find(|x| x.server_ip == a && x.server_port == UNLISTED_PORT);
        let x = x.unwrap_or_else(|| panic!("no record for {a}: {ctx}"));
        assert_eq!((x.verdict.as_deref(), x.server_workload.as_deref()), (Some("denied"), Some("web")), "{x:#?}");
        assert_eq!((x.packets_dropped_to_server, x.packets_to_client), (x.packets_to_server, 0), "{x:#?}");
    }
    // Counters: every spoofed frame (they belong to no session) and every mid-stream pickup.
    // At least: under heavy load one more frame was once counted as spoofed in both modes, not
    // one of the attacker's (see the branch's report); the drops above are exact.
    let (spoofed, exceptions) = s.counters();
    assert!(spoofed >= results.iter().map(|r| r.spoofed).sum::<u64>(), "spoofed {spoofed}: {ctx}");
    let mids = results.iter().filter(|r| r.crafted > 0).count() as u64;
    assert_eq!(exceptions.get("midstream").copied(), Some(mids), "{exceptions:?}");
}

/// Alert mode: the same attacks reach web's application, nothing is dropped, and each is
/// reported (a `midstream` + `pass_flow` exception or a `violation`, with its event; the
/// spoofed SYN also in the `spoofed` counter).
#[test]
fn alert_forwards_the_attacks_and_reports_them() {
    let mut s = start("alert");
    let mut results = Vec::new();
    for (me, web) in [(C4, S4), (C6, S6)] {
        s.controls(me, web);
        results.extend(s.attacks(me, web));
    }
    for family in [0, 1] {
        assert!(s.unlisted(family), "alert mode blocked {}", UNLISTED[family]);
    }
    let wlog = read_log(&s.log);
    for r in &results {
        let tag = format!("ATTACK-{}-{}", r.attack, r.family);
        assert!(
            accepted_on(&wlog, r.port).iter().any(|l| l.contains(&tag)),
            "{tag} did not reach the server in alert mode: {r:?}\n{wlog}"
        );
    }
    for family in [0, 1] {
        let tag = format!("ATTACK-unlisted-{family}");
        assert!(accepted_on(&wlog, UNLISTED_PORT).iter().any(|l| l.contains(&tag)), "{wlog}");
    }
    let reported = |x: &ConnectionRecord| {
        x.verdict.as_deref() == Some("violation")
            || (x.inspection_reason.as_deref() == Some("midstream") && x.exception_action.as_deref() == Some("pass_flow"))
    };
    let (finals, events) = collect_finals(&mut s, |ours| {
        results.iter().all(|r| ours.iter().any(|x| r.is_on(x) && reported(x)))
            && ours.iter().filter(|x| is_control(x)).count() >= 4
            && UNLISTED.iter().all(|a| ours.iter().any(|x| x.server_ip == *a && x.server_port == UNLISTED_PORT && reported(x)))
    });
    let ctx = format!("{finals:#?}\n{events:#?}");
    for x in &finals {
        assert_eq!((x.packets_dropped_to_server, x.packets_dropped_to_client), (0, 0), "{x:#?}");
    }
    for r in &results {
        assert!(finals.iter().any(|x| r.is_on(x) && reported(x)), "{r:?} not reported: {ctx}");
        assert!(
            events.iter().any(|e| r.is_on(e.connection()) && matches!(e.kind(), "exception" | "violation")),
            "{r:?}: no event: {ctx}"
        );
    }
    check_controls(&finals);
    for a in UNLISTED {
        let x = finals.iter().find(|x| x.server_ip == a && x.server_port == UNLISTED_PORT);
        let x = x.unwrap_or_else(|| panic!("no record for {a}: {ctx}"));
        assert_eq!((x.verdict.as_deref(), x.server_workload.as_deref()), (Some("violation"), Some("web")), "{x:#?}");
    }
    // The spoofed SYN was forwarded and counted but opened nothing: no session on its port
    // has web for its client.
    let spoofed_port = ATTACKS.iter().find(|a| a.0 == "spoofed-syn").unwrap().1;
    assert!(finals.iter().filter(|x| on_port(x, spoofed_port)).all(|x| !is_web(&x.client_ip)), "{ctx}");
    let (spoofed, exceptions) = s.counters();
    assert!(spoofed >= results.iter().map(|r| r.spoofed).sum::<u64>(), "spoofed {spoofed}: {ctx}");
    let mids = results.iter().filter(|r| r.crafted > 0).count() as u64;
    assert_eq!(exceptions.get("midstream").copied(), Some(mids), "{exceptions:?}");
}
