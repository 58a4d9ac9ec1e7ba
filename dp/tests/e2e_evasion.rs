//! The evasion suite, live (root only, see `common`). A TCP client in user space written with
//! python3-scapy (`fixtures/evasion.py`) talks from addresses and a MAC of its own in the client
//! namespace (the kernel there owns none of them, so it never answers for them; the server's
//! namespace has static neighbour entries) to real servers behind Warden inline: python's
//! `http.server` (logs every request line), nginx (access log of `$request`) and redis-server
//! (MONITOR, keys). It makes a real handshake, then sends one evasion form: bytes the server
//! drops or delivers differently (the decoy) next to the bytes it takes (the real request), and
//! writes every frame it sent and received to a pcap in the test's directory.
//!
//! The server's log and reply are the truth. For each form Warden's connection record must show
//! what the server saw (app, method, path, the `sql_injection` threat), and in protect mode a
//! request the policy denies (a Redis command on a port whose rule allows only HTTP) hidden by
//! the form must still be denied: the key never arrives. The workload `web` (the server) is in
//! protect mode, with one rule: HTTP only, on the ports of all three servers.
//!
//! Each form is one test with a topology of its own. `truth_of_every_form_without_warden` runs
//! every case with a Linux bridge in Warden's place and checks only the server side: that each
//! form does to the host what it is meant to (the decoy is dropped, the urgent byte goes out of
//! band, ...). With `WARDEN_EVASION_CAPTURES=<dir>` every case's pcap is copied there (that is
//! how `tests/captures/evasion/` was made, see its README); `evasion_captures_replayed` runs
//! `warden replay` over those.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use warden_control::{Client, ConnectionRecord, Reply, Request};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/evasion.py");
/// Debian's interpreter (python3-scapy is installed for it).
const PY: &str = "/usr/bin/python3";
/// The scapy client's MAC.
const XMAC: &str = "02:00:00:00:0e:11";
/// The scapy client's addresses (v4, v6), with the server's ordinary receive window.
const X: [&str; 2] = ["198.18.0.11", "2001:db8::11"];
/// Its addresses (v4, v6) whose route on the server clamps the advertised window to [`WINDOW`].
const XW: [&str; 2] = ["198.18.0.12", "2001:db8::12"];
/// The server's receive window towards [`XW`] (bytes).
const WINDOW: u32 = 64;
/// python3 http.server.
const HTTP: u16 = 8080;
const NGINX: u16 = 8081;
const REDIS: u16 = 6379;
/// IPv4 identification / IPv6 flow label of frames the server's namespace drops at ingress,
/// after Warden: a segment lost between Warden and the server.
const LOST_MARK: u32 = 0xdead;
/// Seconds of quiet after the in-window RST: more than a closed session lingers
/// (`tcp_closed_timeout` = 1 s in `Topo::start_warden`'s config).
const PAUSE_S: f64 = 2.5;

/// Logs each request line, answers `ok` (keep-alive: HTTP/1.1 with a length), IPv4 and IPv6;
/// a path with `/slow` is answered after half a second (a slow backend).
const HTTP_SERVER: &str = r#"
import socket, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
log = open(sys.argv[2], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        log.write(self.requestline + "\n")
        if "/slow" in self.path:
            time.sleep(0.5)
        b = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
S(("::", int(sys.argv[1])), H).serve_forever()
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fam {
    V4 = 0,
    V6 = 1,
}

impl Fam {
    fn server(self) -> &'static str {
        [S4, S6][self as usize]
    }
    fn name(self) -> &'static str {
        ["v4", "v6"][self as usize]
    }
}

/// What a case must come to.
#[derive(Debug, Clone)]
enum Expect {
    /// The HTTP server logs each of `lines` (its request lines) and none of `never`, with or
    /// without Warden; Warden's record: app `http`, method GET, the first request's `path`,
    /// `sql_injection` iff `sqli`, `requests` requests, allowed, ended by FIN.
    Served { lines: Vec<String>, never: Vec<String>, path: String, sqli: bool, requests: u32 },
    /// A Redis `SET key` hidden by the form: without Warden it reaches redis (the form works on
    /// the host); with Warden in protect mode it must not (the rule allows only HTTP), and the
    /// record is denied (`retrans_lost`: the differing retransmission dropped and counted, as
    /// for [`Expect::Retrans`]).
    Hidden { key: String },
    /// A retransmission differing from the original, which was lost after Warden parsed it:
    /// without Warden the server logs `line` (it only ever got the retransmission); with Warden
    /// in protect mode the retransmission is dropped (the server never logs it) and the record
    /// counts the differing bytes in `tcp_overlap_conflicts`.
    Retrans { line: String },
    /// Urgent data whose reading depends on when the server's application reads (a second
    /// urgent mark): without Warden the server logs each of `lines`; with Warden in protect
    /// mode the segment with the second mark is dropped (`tcp_urgent_ambiguous`), so the
    /// server never logs `stopped`.
    Ambiguous { lines: Vec<String>, stopped: String },
}

/// One run of the scapy client.
#[derive(Debug, Clone)]
struct Case {
    label: String,
    fam: Fam,
    port: u16,
    /// From an [`XW`] address (the server advertises [`WINDOW`] bytes).
    small_window: bool,
    sport: u16,
    /// `form`, `real` and the form's own fields (see `evasion.py`).
    spec: Value,
    expect: Expect,
}

impl Case {
    fn client(&self) -> &'static str {
        if self.small_window {
            XW[self.fam as usize]
        } else {
            X[self.fam as usize]
        }
    }
}

/// What `evasion.py` printed.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Outcome {
    established: bool,
    window: u32,
    syn_ack_acked: Option<u32>,
    reply: String,
    fin: bool,
    rst: bool,
    #[serde(default)]
    challenge_ack: Option<bool>,
    #[serde(default)]
    differing: Option<u32>,
    #[serde(default)]
    fragments: Option<u64>,
    sent: u32,
    received: u32,
    events: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

struct Done {
    case: Case,
    out: Outcome,
    /// IP fragments that reached the server's interface during the case.
    frags_at_server: u64,
    /// Failures of the server-side truth, checked right after the run.
    truth: Vec<String>,
}

/// A topology with the servers, Warden inline (protect policy) or a bridge in its place.
struct Suite {
    t: Topo,
    ctl: Option<Client>,
    web_mac: String,
    http_log: PathBuf,
    nginx_log: PathBuf,
    monitor: PathBuf,
    next_sport: u16,
    done: Vec<Done>,
}

#[derive(Clone, Copy)]
struct Servers {
    nginx: bool,
    redis: bool,
}

const HTTP_ONLY: Servers = Servers { nginx: false, redis: false };
const WITH_REDIS: Servers = Servers { nginx: false, redis: true };
const ALL: Servers = Servers { nginx: true, redis: true };

fn policy() -> String {
    format!(
        r#"
[[workload]]
id = "web"
ips = ["{S4}", "{S6}"]
mode = "protect"

[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["{HTTP}", "{NGINX}", "{REDIS}"]
apps = ["http"]
action = "allow"
"#
    )
}

impl Suite {
    /// `warden`: Warden inline with [`policy`]; else a Linux bridge joins its two interfaces.
    fn start(warden: bool, servers: Servers) -> Suite {
        let mut t = Topo::new(ClientLink::Veth);
        let s = t.s.clone();
        for a in X.iter().chain(XW.iter()) {
            sh(&["ip", "-n", &s, "neigh", "add", a, "lladdr", XMAC, "dev", &t.s0, "nud", "permanent"]);
        }
        for a in XW {
            let host = if a.contains(':') { format!("{a}/128") } else { format!("{a}/32") };
            sh(&["ip", "-n", &s, "route", "add", &host, "dev", &t.s0, "window", &WINDOW.to_string()]);
        }
        // At the server's ingress (after Warden, before the server's stack): a segment lost
        // between the two, and a count of the IP fragments that reach the server.
        let nft = t.path("server.nft");
        std::fs::write(
            &nft,
            format!(
                "table netdev warden_evasion {{\n counter frags {{ }}\n chain ingress {{\n  type filter hook ingress device \"{}\" priority 0; policy accept;\n  \
                 ip id {LOST_MARK:#x} drop\n  ip6 flowlabel {LOST_MARK:#x} drop\n  ip frag-off & 0x3fff != 0 counter name frags\n  \
                 ip6 nexthdr 44 counter name frags\n }}\n}}\n",
                t.s0
            ),
        )
        .unwrap();
        sh(&["ip", "netns", "exec", &s, "nft", "-f", nft.to_str().unwrap()]);

        let http_log = t.path("http.log");
        std::fs::write(&http_log, "").unwrap();
        let script = t.path("http_server.py");
        std::fs::write(&script, HTTP_SERVER).unwrap();
        t.spawn(&s, &[PY, script.to_str().unwrap(), &HTTP.to_string(), http_log.to_str().unwrap()]);
        let nginx_log = t.path("nginx/access.log");
        if servers.nginx {
            start_nginx(&mut t);
        }
        let monitor = t.path("monitor.log");
        if servers.redis {
            let dir = t.path("");
            t.spawn(
                &s,
                &[
                    "redis-server", "--port", &REDIS.to_string(), "--bind", S4, S6, "--save", "", "--appendonly", "no",
                    "--protected-mode", "no", "--dir", dir.to_str().unwrap(),
                ],
            );
            t.wait_listening(&s, "tcp", REDIS);
            // MONITOR from inside the server's namespace (local: it does not cross Warden).
            t.spawn(&s, &["sh", "-c", &format!("exec stdbuf -oL redis-cli -h {S4} -p {REDIS} monitor > {}", monitor.display())]);
            wait_for(|| std::fs::read_to_string(&monitor).is_ok_and(|m| m.contains("OK")), "redis MONITOR");
        }
        t.wait_listening(&s, "tcp", HTTP);
        let web_mac = mac(&t, &s, &t.s0);
        let ctl = if warden {
            // The injection is the marker of what Warden read: reported, not reset, so that the
            // server's log can show what the host read.
            let file = t.path("policy.toml");
            std::fs::write(&file, policy()).unwrap();
            let pair = format!("{}:{}", t.a, t.b);
            t.start_warden_config(
                "[threats.sql_injection]\naction = \"alert\"\n",
                &["--inline", &pair, "--policy", file.to_str().unwrap()],
            );
            Some(t.subscribed())
        } else {
            let m = t.m.clone();
            let br = format!("{}br", t.id);
            sh(&["ip", "-n", &m, "link", "add", &br, "type", "bridge"]);
            for dev in [&t.a, &t.b] {
                sh(&["ip", "-n", &m, "link", "set", dev, "master", &br]);
            }
            sh(&["ip", "-n", &m, "link", "set", &br, "up"]);
            for f in ["iptables", "ip6tables"] {
                try_sh(&["ip", "netns", "exec", &m, "sysctl", "-qw", &format!("net.bridge.bridge-nf-call-{f}=0")]);
            }
            None
        };
        Suite { t, ctl, web_mac, http_log, nginx_log, monitor, next_sport: 40001, done: Vec::new() }
    }

    fn warden(&self) -> bool {
        self.ctl.is_some()
    }

    fn sport(&mut self) -> u16 {
        self.next_sport += 1;
        self.next_sport - 1
    }

    /// The request lines the server on `port` logged.
    fn log_of(&self, port: u16) -> String {
        let p = if port == NGINX { &self.nginx_log } else { &self.http_log };
        std::fs::read_to_string(p).unwrap_or_default()
    }

    /// The server side's count of IP fragments received (nft counter at its ingress).
    fn frags_at_server(&self) -> u64 {
        let out = self.t.exec(&self.t.s, &["nft", "list", "counter", "netdev", "warden_evasion", "frags"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text.split_whitespace().skip_while(|w| *w != "packets").nth(1);
        n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("nft counter: {text}"))
    }

    fn redis_has(&self, key: &str) -> bool {
        let out = self.t.exec(&self.t.s, &["redis-cli", "-h", S4, "-p", &REDIS.to_string(), "EXISTS", key]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Runs the scapy client for `case` and checks the server side at once.
    fn run(&mut self, case: Case) {
        let pcap = self.t.path(&format!("{}.pcap", case.sport));
        let mut spec = case.spec.clone();
        let o = spec.as_object_mut().unwrap();
        for (k, v) in [
            ("iface", json!(self.t.c0)),
            ("my_mac", json!(XMAC)),
            ("peer_mac", json!(self.web_mac)),
            ("me", json!(case.client())),
            ("peer", json!(case.fam.server())),
            ("sport", json!(case.sport)),
            ("dport", json!(case.port)),
            ("pcap", json!(pcap)),
        ] {
            o.insert(k.into(), v);
        }
        let frags_before = self.frags_at_server();
        let res = self.t.exec(&self.t.c, &[PY, CLIENT, &spec.to_string()]);
        let stdout = String::from_utf8_lossy(&res.stdout);
        let out: Outcome = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{}: evasion.py: {stdout}{}", case.label, String::from_utf8_lossy(&res.stderr)));
        assert!(
            res.status.success() && out.error.is_none(),
            "{}: evasion.py failed: {out:?}\n{}",
            case.label,
            String::from_utf8_lossy(&res.stderr)
        );
        if let Ok(dir) = std::env::var("WARDEN_EVASION_CAPTURES") {
            let name = case.label.replace([' ', ':'], "-");
            std::fs::copy(&pcap, PathBuf::from(dir).join(format!("{name}.pcap"))).unwrap();
        }
        let frags_at_server = self.frags_at_server() - frags_before;
        let truth = self.truth(&case, &out, frags_at_server);
        self.done.push(Done { case, out, frags_at_server, truth });
    }

    /// The server side of a case: what the form must do to the host (without Warden), or what
    /// Warden must let happen (with it).
    fn truth(&self, case: &Case, out: &Outcome, frags_at_server: u64) -> Vec<String> {
        let mut f = Vec::new();
        let form = case.spec["form"].as_str().unwrap_or_default();
        // With Warden, a hidden command that never got as far as a handshake was denied too.
        let refused_hidden = self.warden() && matches!(case.expect, Expect::Hidden { .. });
        if !out.established && !refused_hidden {
            f.push(format!("no handshake: no SYN|ACK reached the client (events {:?})", out.events));
        }
        if form == "challenge" && out.established && out.challenge_ack != Some(true) {
            f.push(if self.warden() {
                "no challenge ACK came back: the in-window RST did not reach the server, or its answer the client \
                 (RFC 5961 §3.2: the challenge ACK is the host's business)"
                    .to_string()
            } else {
                "the server sent no challenge ACK for the in-window RST (RFC 5961 §3.2)".to_string()
            });
        }
        if form == "syn_data" && out.established && out.syn_ack_acked != Some(0) {
            f.push(format!("the SYN|ACK acknowledged {:?} bytes of the SYN's data", out.syn_ack_acked));
        }
        let sent = out.fragments.unwrap_or(0);
        if form == "frag" && frags_at_server != sent {
            f.push(format!("{frags_at_server} of the {sent} IP fragments reached the server"));
        }
        if form == "frag_overlap" && self.warden() && frags_at_server != 0 {
            f.push(format!("{frags_at_server} of the {sent} overlapping fragments reached the server (protect drops them)"));
        }
        if form == "frag_overlap" && !self.warden() && frags_at_server != sent {
            f.push(format!("harness: {frags_at_server} of the {sent} overlapping fragments reached the server"));
        }
        if (form == "window" || form == "rst_window") && out.window != WINDOW {
            f.push(format!("harness: the server advertised {} bytes, not {WINDOW}", out.window));
        }
        match &case.expect {
            Expect::Served { lines, never, .. } => {
                let log = self.log_of(case.port);
                for l in lines {
                    if !log.lines().any(|x| x == l) {
                        f.push(format!("the server did not get `{}`", l.escape_debug()));
                    }
                }
                for l in never {
                    if log.lines().any(|x| x == l) {
                        f.push(format!("the server got the decoy `{}`", l.escape_debug()));
                    }
                }
            }
            Expect::Hidden { key } => {
                std::thread::sleep(Duration::from_millis(200));
                let arrived = self.redis_has(key);
                let monitor = std::fs::read_to_string(&self.monitor).unwrap_or_default();
                // (The EXISTS checks come from the server's own address.)
                let seen: Vec<&str> = monitor.lines().filter(|l| l.contains(key.as_str()) && l.contains("\"SET\"")).collect();
                if self.warden() && (arrived || !seen.is_empty()) {
                    f.push(format!("the hidden Redis command reached redis (key exists: {arrived}, MONITOR: {seen:?})"));
                }
                if !self.warden() && !arrived {
                    f.push(format!("without Warden the hidden SET did not reach redis (MONITOR: {seen:?})"));
                }
            }
            Expect::Ambiguous { lines, stopped } => {
                let log = self.log_of(case.port);
                if self.warden() && log.lines().any(|x| x == stopped) {
                    f.push(format!("the server got `{}` behind an ambiguous urgent mark", stopped.escape_debug()));
                }
                for l in lines.iter().filter(|_| !self.warden()) {
                    if !log.lines().any(|x| x == l) {
                        f.push(format!("without Warden the server did not get `{}`", l.escape_debug()));
                    }
                }
            }
            Expect::Retrans { line } => {
                let got = self.log_of(case.port).lines().any(|x| x == line);
                if self.warden() && got {
                    f.push(format!("the differing retransmission reached the server, which logged `{line}`"));
                }
                if !self.warden() && !got {
                    f.push(format!("without Warden the server did not take the retransmission `{line}`"));
                }
            }
        }
        f
    }

    /// Waits for the final records of every case (with Warden), checks them, and panics with a
    /// report of every case that failed.
    fn finish(mut self) {
        assert!(!self.done.is_empty());
        let recs = match self.ctl.as_mut() {
            Some(ctl) => {
                let sports: Vec<u16> = self.done.iter().map(|d| d.case.sport).collect();
                // At least three report cycles, so that sessions opened late (a pickup in
                // mid-stream) are reported too, then until every one has its final record.
                let settle = Instant::now() + Duration::from_secs(3);
                let (recs, _) = collect_messages(ctl, Duration::from_secs(25), |recs, _| {
                    let l = latest(recs);
                    Instant::now() >= settle
                        && sports.iter().all(|p| {
                        let mine: Vec<&ConnectionRecord> = l.values().filter(|r| on_sport(r, *p)).collect();
                        !mine.is_empty() && mine.iter().all(|r| r.closed)
                    })
                });
                latest(&recs).into_values().collect()
            }
            None => Vec::new(),
        };
        let counters = self.ctl.is_some().then(|| counters(&self.t));
        let mut report = String::new();
        let mut failed = 0;
        for d in &self.done {
            let mut f = d.truth.clone();
            let mine: Vec<&ConnectionRecord> = recs.iter().filter(|r| on_sport(r, d.case.sport)).collect();
            if self.ctl.is_some() {
                f.extend(check_record(d, &mine));
            }
            let status = if f.is_empty() { "ok" } else { "FAILED" };
            let line = format!("[{}] {status}\n{}", d.case.label, describe(&self, d, &mine));
            eprintln!("{line}");
            if !f.is_empty() {
                failed += 1;
                report.push_str(&line);
                for x in f {
                    report.push_str(&format!("  - {x}\n"));
                }
            }
        }
        if let Some(c) = counters {
            eprintln!("counters: {c}");
        }
        assert!(failed == 0, "{failed} of {} cases failed:\n{report}\nwarden log:\n{}", self.done.len(), self.t.warden_log());
    }
}

fn start_nginx(t: &mut Topo) {
    let (www, dir) = (t.path("www"), t.path("nginx"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(www.join("index.html"), "ok\n").unwrap();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
         http {{\n log_format req '$request';\n access_log {d}/access.log req;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         server {{\n  listen {S4}:{NGINX};\n  listen [{S6}]:{NGINX};\n  root {};\n  location / {{ try_files $uri /index.html; }}\n }}\n}}\n",
        www.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    std::fs::write(dir.join("access.log"), "").unwrap();
    let s = t.s.clone();
    t.spawn(&s, &["nginx", "-c", path.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", NGINX);
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counters(t: &Topo) -> String {
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => {
            let d: Vec<String> = c
                .workers
                .iter()
                .map(|w| {
                    format!(
                        "worker {}: sessions {} malformed {:?} exceptions {:?} policy_dropped {} spoofed {} defrag {:?}",
                        w.worker, w.sessions_created, w.malformed, w.exceptions, w.policy_dropped, w.spoofed, w.defrag
                    )
                })
                .collect();
            d.join("; ")
        }
        other => panic!("{other:?}"),
    }
}

type Key = (String, u16, String, u16, String);

/// The latest record of each session.
fn latest(recs: &[ConnectionRecord]) -> BTreeMap<Key, ConnectionRecord> {
    let mut m = BTreeMap::new();
    for r in recs {
        m.insert((r.client_ip.clone(), r.client_port, r.server_ip.clone(), r.server_port, r.first_seen.clone()), r.clone());
    }
    m
}

/// A record of the scapy client's connection from `sport` (either way round: a session
/// picked up mid-stream may have its ends swapped).
fn on_sport(r: &ConnectionRecord, sport: u16) -> bool {
    let x = |ip: &str| X.contains(&ip) || XW.contains(&ip);
    r.ip_proto == 6 && ((x(&r.client_ip) && r.client_port == sport) || (x(&r.server_ip) && r.server_port == sport))
}

fn l7_str(r: &ConnectionRecord, k: &str) -> Option<String> {
    r.l7.as_ref().and_then(|l| l.get(k)).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))
}

/// A record in one line: what Warden saw of the connection.
fn brief(r: &ConnectionRecord) -> String {
    let threats: Vec<String> = r.threats.iter().map(|t| format!("{}({}: {})", t.id, t.reason, t.evidence)).collect();
    format!(
        "{}:{} -> {}:{} app={} path={:?} method={:?} requests={:?} threats={threats:?} verdict={:?} state={} end={:?} \
         inspection={:?}/{:?}/{:?} dropped={}/{} pkts={}/{} conflicts={:?} prev_app={:?} unknown={:?}",
        r.client_ip,
        r.client_port,
        r.server_ip,
        r.server_port,
        r.app,
        l7_str(r, "path"),
        l7_str(r, "method"),
        l7_str(r, "requests"),
        r.verdict,
        r.state,
        r.end_reason,
        r.inspection,
        r.inspection_reason,
        r.exception_action,
        r.packets_dropped_to_server,
        r.packets_dropped_to_client,
        r.packets_to_server,
        r.packets_to_client,
        r.tcp_overlap_conflicts,
        r.previous_app,
        r.app_unknown_reason,
    )
}

fn describe(s: &Suite, d: &Done, recs: &[&ConnectionRecord]) -> String {
    let c = &d.case;
    let mut out = format!("  sent: {}\n", c.spec["real"].as_str().unwrap_or_default().escape_debug());
    if let Some(x) = c.spec.get("real2") {
        out.push_str(&format!("  then: {}\n", x.as_str().unwrap_or_default().escape_debug()));
    }
    if let Some(x) = c.spec.get("decoy") {
        out.push_str(&format!("  decoy: {}\n", x.as_str().unwrap_or_default().escape_debug()));
    }
    out.push_str(&format!(
        "  client: {} frames sent, {} received, fin {} rst {}, events {:?}, reply {:?}; IP fragments at the server {}\n",
        d.out.sent,
        d.out.received,
        d.out.fin,
        d.out.rst,
        d.out.events,
        d.out.reply.lines().next().unwrap_or_default(),
        d.frags_at_server,
    ));
    match &c.expect {
        Expect::Hidden { key } => {
            out.push_str(&format!("  server (redis): key {key} exists: {}\n", s.redis_has(key)));
        }
        _ => {
            let tag = format!("e{}", c.sport);
            let lines: Vec<String> = s.log_of(c.port).lines().filter(|l| l.contains(&tag)).map(String::from).collect();
            out.push_str(&format!("  server log: {lines:?}\n"));
        }
    }
    if s.warden() {
        if recs.is_empty() {
            out.push_str("  warden: no record\n");
        }
        for r in recs {
            out.push_str(&format!("  warden: {}\n", brief(r)));
        }
    }
    out
}

/// Warden's record against the expectation.
fn check_record(d: &Done, recs: &[&ConnectionRecord]) -> Vec<String> {
    let c = &d.case;
    let mut f = Vec::new();
    // The session the client's SYN opened.
    let Some(r) = recs.iter().find(|r| r.client_ip == c.client() && r.client_port == c.sport) else {
        return vec!["no record of the connection opened by the client's SYN".into()];
    };
    if recs.len() > 1 {
        f.push(format!("{} sessions for one connection", recs.len()));
    }
    match &c.expect {
        Expect::Served { path, sqli, requests, .. } => {
            let want_path: String = path.chars().take(256).collect();
            if r.app != "http" {
                f.push(format!("app {} (the server spoke HTTP)", r.app));
            }
            if l7_str(r, "method").as_deref() != Some("GET") {
                f.push(format!("method {:?}, the server got GET", l7_str(r, "method")));
            }
            if l7_str(r, "path").as_deref() != Some(want_path.as_str()) {
                f.push(format!("path {:?}, the server got {want_path:?}", l7_str(r, "path")));
            }
            let has = r.threats.iter().any(|t| t.id == "sql_injection");
            if has != *sqli {
                f.push(if *sqli {
                    "no sql_injection threat: the server got the injection".to_string()
                } else {
                    format!("threats {:?} on a benign request", r.threats)
                });
            }
            if l7_str(r, "requests") != Some(requests.to_string()) {
                f.push(format!("requests {:?}, the server got {requests}", l7_str(r, "requests")));
            }
            if r.verdict.as_deref() != Some("allowed") {
                f.push(format!("verdict {:?} for HTTP on an HTTP port", r.verdict));
            }
            if !r.closed || r.end_reason.as_deref() != Some("fin") {
                f.push(format!("ended {:?} (closed {}), the connection ended with FINs", r.end_reason, r.closed));
            }
        }
        // A differing retransmission is stopped as such (what Warden inspected stays the lost
        // original), whatever the retransmission carries.
        Expect::Retrans { .. } => f.extend(retrans_dropped(d, r)),
        Expect::Ambiguous { .. } => {
            if !r.anomalies.iter().any(|a| a == "tcp_urgent_ambiguous") {
                f.push(format!("anomalies {:?}: a second urgent mark is ambiguous", r.anomalies));
            }
            if r.packets_dropped_to_server == 0 {
                f.push("nothing dropped to the server: the ambiguous segment went through".into());
            }
        }
        Expect::Hidden { .. } if c.spec["form"] == "retrans_lost" => f.extend(retrans_dropped(d, r)),
        Expect::Hidden { .. } => {
            if r.verdict.as_deref() != Some("denied") {
                f.push(format!("verdict {:?}: a Redis command on an HTTP-only port", r.verdict));
            }
        }
    }
    f
}

/// The differing retransmission dropped, its differing bytes counted.
fn retrans_dropped(d: &Done, r: &ConnectionRecord) -> Vec<String> {
    let mut f = Vec::new();
    if r.tcp_overlap_conflicts != d.out.differing {
        f.push(format!("tcp_overlap_conflicts {:?}, {:?} bytes differed", r.tcp_overlap_conflicts, d.out.differing));
    }
    if r.packets_dropped_to_server == 0 {
        f.push("nothing dropped to the server: the differing retransmission went through".into());
    }
    f
}

// ---- requests --------------------------------------------------------------------------------

/// An SQL injection in the query (the evidence `1' OR '1'='1`), tagged with the case's port.
fn sqli(sport: u16) -> String {
    format!("/e{sport}?id=1%27%20OR%20%271%27%3D%271")
}

/// A benign path of `len` bytes: `/e<sport>?id=1&pad=xxx...`.
fn benign(sport: u16, len: usize) -> String {
    let mut p = format!("/e{sport}?id=1&pad=");
    assert!(p.len() <= len, "{p} longer than {len}");
    while p.len() < len {
        p.push('x');
    }
    p
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
}

fn line(path: &str) -> String {
    format!("GET {path} HTTP/1.1")
}

/// `form` with the decoy a benign request and the real one an SQL injection of the same
/// length, to python's http.server.
fn http_case(s: &mut Suite, form: &str, fam: Fam, extra: Value) -> Case {
    let sport = s.sport();
    let (bad, good) = (sqli(sport), benign(sport, sqli(sport).len()));
    let mut spec = json!({"form": form, "real": get(&bad), "decoy": get(&good)});
    merge(&mut spec, extra);
    Case {
        label: format!("{form} {} http", fam.name()),
        fam,
        port: HTTP,
        small_window: false,
        sport,
        spec,
        expect: Expect::Served { lines: vec![line(&bad)], never: vec![line(&good)], path: bad, sqli: true, requests: 1 },
    }
}

/// RESP `SET ev<sport> 1` then `QUIT` (redis answers and closes).
fn resp_set(key: &str) -> String {
    format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n*1\r\n$4\r\nQUIT\r\n", key.len())
}

/// An HTTP request of exactly `len` bytes (the decoy in front of a Redis command).
fn http_of_len(len: usize) -> String {
    let fixed = "GET / HTTP/1.1\r\nHost: web\r\n\r\n".len();
    assert!(len > fixed);
    format!("GET /{} HTTP/1.1\r\nHost: web\r\n\r\n", "x".repeat(len - fixed))
}

/// `form` hiding a Redis command behind an HTTP decoy, to redis on the HTTP-only port.
fn redis_case(s: &mut Suite, form: &str, fam: Fam, extra: Value) -> Case {
    let sport = s.sport();
    let key = format!("ev{sport}");
    let real = resp_set(&key);
    let mut spec = json!({"form": form, "real": real, "decoy": http_of_len(real.len())});
    merge(&mut spec, extra);
    Case {
        label: format!("{form} {} redis", fam.name()),
        fam,
        port: REDIS,
        small_window: false,
        sport,
        spec,
        expect: Expect::Hidden { key },
    }
}

fn merge(spec: &mut Value, extra: Value) {
    if let (Some(o), Value::Object(e)) = (spec.as_object_mut(), extra) {
        o.extend(e);
    }
}

// ---- the forms -------------------------------------------------------------------------------

/// Controls: a plain request, plain SQL injections (python, nginx, v4 and v6), a plain Redis
/// command on the HTTP-only port.
fn controls(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    let sport = s.sport();
    let p = benign(sport, 30);
    v.push(Case {
        label: "plain v4 http benign".into(),
        fam: Fam::V4,
        port: HTTP,
        small_window: false,
        sport,
        spec: json!({"form": "plain", "real": get(&p)}),
        expect: Expect::Served { lines: vec![line(&p)], never: vec![], path: p, sqli: false, requests: 1 },
    });
    for (fam, port) in [(Fam::V4, HTTP), (Fam::V6, HTTP), (Fam::V4, NGINX)] {
        let sport = s.sport();
        let p = sqli(sport);
        v.push(Case {
            label: format!("plain {} {} sqli", fam.name(), if port == NGINX { "nginx" } else { "http" }),
            fam,
            port,
            small_window: false,
            sport,
            spec: json!({"form": "plain", "real": get(&p)}),
            expect: Expect::Served { lines: vec![line(&p)], never: vec![], path: p, sqli: true, requests: 1 },
        });
    }
    let sport = s.sport();
    let p = union_select(sport, "");
    v.push(Case {
        label: "plain v4 http union-select".into(),
        fam: Fam::V4,
        port: HTTP,
        small_window: false,
        sport,
        spec: json!({"form": "plain", "real": get(&p)}),
        expect: Expect::Served { lines: vec![line(&p)], never: vec![], path: p, sqli: true, requests: 1 },
    });
    let sport = s.sport();
    let key = format!("ev{sport}");
    v.push(Case {
        label: "plain v4 redis".into(),
        fam: Fam::V4,
        port: REDIS,
        small_window: false,
        sport,
        spec: json!({"form": "plain", "real": resp_set(&key)}),
        expect: Expect::Hidden { key },
    });
    v
}

/// `/e<sport>?id=-1%20UNION%20SEL<mark>ECT%20password%20FROM%20users`.
fn union_select(sport: u16, mark: &str) -> String {
    format!("/e{sport}?id=-1%20UNION%20SEL{mark}ECT%20password%20FROM%20users")
}

/// Form 1: a decoy with a bad TCP checksum at the real request's sequence number.
fn form_badsum(s: &mut Suite) -> Vec<Case> {
    vec![
        http_case(s, "badsum", Fam::V4, json!({})),
        http_case(s, "badsum", Fam::V6, json!({})),
        redis_case(s, "badsum", Fam::V4, json!({})),
    ]
}

/// Forms 2 and 4: the decoy beyond the advertised window (on a data segment, or on a RST|ACK), at
/// the place the real request's later part takes once the window has moved.
fn window_case(s: &mut Suite, form: &str) -> Case {
    let sport = s.sport();
    let pad = "a".repeat(90);
    let bad = format!("/e{sport}?pad={pad}&id=1%27%20OR%20%271%27%3D%271");
    let mut good = format!("/e{sport}?pad={pad}&id=1&pad=");
    while good.len() < bad.len() {
        good.push('x');
    }
    Case {
        label: format!("{form} v4 http"),
        fam: Fam::V4,
        port: HTTP,
        small_window: true,
        sport,
        spec: json!({"form": form, "real": get(&bad), "decoy": get(&good)}),
        expect: Expect::Served { lines: vec![line(&bad)], never: vec![line(&good)], path: bad, sqli: true, requests: 1 },
    }
}

fn form_window(s: &mut Suite) -> Vec<Case> {
    vec![window_case(s, "window")]
}

/// Form 3: a decoy without the ACK flag; a decoy whose ACK number is older than the server's
/// send window allows (RFC 5961 §5.2: the host drops it).
fn form_noack(s: &mut Suite) -> Vec<Case> {
    vec![
        http_case(s, "noack", Fam::V4, json!({})),
        redis_case(s, "noack", Fam::V4, json!({})),
        http_case(s, "oldack", Fam::V4, json!({})),
        redis_case(s, "oldack", Fam::V4, json!({})),
    ]
}

fn form_rst_window(s: &mut Suite) -> Vec<Case> {
    vec![window_case(s, "rst_window")]
}

/// Form 5: a benign keep-alive request, a RST in window but not exact (challenge ACK), quiet for
/// longer than a closed session lingers in Warden, then an SQL injection on the same connection.
/// The same with a RST|ACK at the first byte of the benign request, sent right behind it (in
/// what the client sent and the server has not acknowledged yet; below the server's RCV.NXT
/// when it arrives): the host does not reset either.
fn form_challenge(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    for form in ["challenge", "rst_stale"] {
        let sport = s.sport();
        let first = format!("/e{sport}/first");
        let bad = sqli(sport);
        v.push(Case {
            label: format!("{form} v4 http"),
            fam: Fam::V4,
            port: HTTP,
            small_window: false,
            sport,
            spec: json!({
                "form": form,
                "real": format!("GET {first} HTTP/1.1\r\nHost: web\r\n\r\n"),
                "real2": get(&bad),
                "pause_s": PAUSE_S,
            }),
            expect: Expect::Served {
                lines: vec![line(&first), line(&bad)],
                never: vec![],
                path: first,
                sqli: true,
                requests: 2,
            },
        });
    }
    v
}

/// Form 6: the original (benign) lost after Warden, then a retransmission with other bytes.
fn form_retrans(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let mut c = http_case(s, "retrans_lost", fam, json!({"mark": LOST_MARK}));
        let Expect::Served { path, .. } = &c.expect else { unreachable!() };
        c.expect = Expect::Retrans { line: line(path) };
        v.push(c);
    }
    v.push(redis_case(s, "retrans_lost", Fam::V4, json!({"mark": LOST_MARK})));
    v
}

/// Form 7: the decoy on the SYN (no TCP Fast Open: the server ignores it), the real request at
/// ISN+1.
fn form_syn_data(s: &mut Suite) -> Vec<Case> {
    vec![
        http_case(s, "syn_data", Fam::V4, json!({})),
        http_case(s, "syn_data", Fam::V6, json!({})),
        redis_case(s, "syn_data", Fam::V4, json!({})),
    ]
}

/// Form 8: an urgent byte inside the path (Linux delivers it out of band).
fn form_urgent(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    let sport = s.sport();
    let (sent, got) = (format!("/malicXious?c={sport}&e{sport}"), format!("/malicious?c={sport}&e{sport}"));
    let real = get(&sent);
    v.push(Case {
        label: "urgent v4 http malicious".into(),
        fam: Fam::V4,
        port: HTTP,
        small_window: false,
        sport,
        spec: json!({"form": "urgent", "real": real, "urgent": real.find('X').unwrap()}),
        expect: Expect::Served { lines: vec![line(&got)], never: vec![line(&sent)], path: got, sqli: false, requests: 1 },
    });
    let sport = s.sport();
    let (sent, got) = (union_select(sport, "X"), union_select(sport, ""));
    let real = get(&sent);
    v.push(Case {
        label: "urgent v4 http union-select".into(),
        fam: Fam::V4,
        port: HTTP,
        small_window: false,
        sport,
        spec: json!({"form": "urgent", "real": real, "urgent": real.find("SELX").unwrap() + 3}),
        expect: Expect::Served { lines: vec![line(&got)], never: vec![line(&sent)], path: got, sqli: true, requests: 1 },
    });
    // Two urgent marks: the E of SELECT, then a byte of a later header, arriving while the
    // server is busy with a slow request before them. Linux moves its urgent mark to the second
    // before the application read up to the first, so the E is read in band: the server gets
    // UNION SELECT. Whether it does depends on when the application reads, which nothing on
    // the wire shows: in protect mode Warden stops the segment with the second mark.
    let sport = s.sport();
    let slow = format!("/e{sport}/slow");
    let first = format!("GET {slow} HTTP/1.1\r\nHost: web\r\n\r\n");
    let union = union_select(sport, "");
    let real = format!("{first}GET {union} HTTP/1.1\r\nX-Pad: aZb\r\nHost: web\r\nConnection: close\r\n\r\n");
    let second_line = real[first.len()..].find("\r\n").unwrap() + first.len() + 2;
    v.push(Case {
        label: "urgent2 v4 http union-select".into(),
        fam: Fam::V4,
        port: HTTP,
        small_window: false,
        sport,
        spec: json!({
            "form": "urgent2",
            "real": real,
            "lead": first.len(),
            "urgent": first.len() + real[first.len()..].find("SELECT").unwrap() + 3,
            "split": second_line,
            "urgent2": real.find("aZb").unwrap() + 1,
        }),
        expect: Expect::Ambiguous { lines: vec![line(&slow), line(&union)], stopped: line(&union) },
    });
    v
}

/// Form 9: an SQL injection split over IP fragments; a decoy in overlapping fragments that differ.
fn form_fragments(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let mut c = http_case(s, "frag", fam, json!({"fragsize": 24}));
        c.spec.as_object_mut().unwrap().remove("decoy");
        if let Expect::Served { never, .. } = &mut c.expect {
            never.clear();
        }
        v.push(c);
    }
    for fam in [Fam::V4, Fam::V6] {
        v.push(http_case(s, "frag_overlap", fam, json!({})));
    }
    v.push(redis_case(s, "frag_overlap", Fam::V4, json!({})));
    v
}

/// Form 10: a leading CRLF before the request line (nginx; python's http.server closes the
/// connection on an empty first line), and HTTP/0.9 `GET /path` (nginx and python).
fn form_lenient_http(s: &mut Suite) -> Vec<Case> {
    let mut v = Vec::new();
    let sport = s.sport();
    let p = sqli(sport);
    v.push(Case {
        label: "crlf v4 nginx".into(),
        fam: Fam::V4,
        port: NGINX,
        small_window: false,
        sport,
        spec: json!({"form": "plain", "real": format!("\r\n{}", get(&p))}),
        expect: Expect::Served { lines: vec![line(&p)], never: vec![], path: p, sqli: true, requests: 1 },
    });
    for port in [NGINX, HTTP] {
        let sport = s.sport();
        let p = sqli(sport);
        v.push(Case {
            label: format!("http09 v4 {}", if port == NGINX { "nginx" } else { "http" }),
            fam: Fam::V4,
            port,
            small_window: false,
            sport,
            // python's http.server reads header lines after a 0.9 request line too: it answers
            // once an empty line follows (to Warden, an empty line before the next request).
            spec: json!({"form": "plain", "real": format!("GET {p}\r\n{}", if port == HTTP { "\r\n" } else { "" })}),
            expect: Expect::Served { lines: vec![format!("GET {p}")], never: vec![], path: p, sqli: true, requests: 1 },
        });
    }
    v
}

fn run_form(servers: Servers, cases: fn(&mut Suite) -> Vec<Case>) {
    let mut s = Suite::start(true, servers);
    for c in cases(&mut s) {
        s.run(c);
    }
    s.finish();
}

#[test]
fn controls_plain_requests_and_injections() {
    run_form(ALL, controls);
}

#[test]
fn form01_decoy_with_bad_tcp_checksum() {
    run_form(WITH_REDIS, form_badsum);
}

#[test]
fn form02_decoy_beyond_the_receive_window() {
    run_form(HTTP_ONLY, form_window);
}

#[test]
fn form03_decoy_without_ack_flag() {
    run_form(WITH_REDIS, form_noack);
}

#[test]
fn form04_decoy_on_out_of_window_rst() {
    run_form(HTTP_ONLY, form_rst_window);
}

#[test]
fn form05_in_window_rst_then_more_data() {
    run_form(HTTP_ONLY, form_challenge);
}

#[test]
fn form06_differing_retransmission_after_parsing() {
    run_form(WITH_REDIS, form_retrans);
}

#[test]
fn form07_data_on_the_syn() {
    run_form(WITH_REDIS, form_syn_data);
}

#[test]
fn form08_urgent_byte_out_of_band() {
    run_form(HTTP_ONLY, form_urgent);
}

#[test]
fn form09_ip_fragments() {
    run_form(WITH_REDIS, form_fragments);
}

#[test]
fn form10_lenient_http_request_lines() {
    run_form(ALL, form_lenient_http);
}

/// Every case with a Linux bridge instead of Warden: the server side is what each form is
/// meant to do to the host (decoys dropped, the urgent byte out of band, the challenge ACK,
/// SYN data ignored, the overlapping datagram dropped, hidden commands delivered).
#[test]
fn truth_of_every_form_without_warden() {
    let mut s = Suite::start(false, ALL);
    let forms: [fn(&mut Suite) -> Vec<Case>; 11] = [
        controls,
        form_badsum,
        form_window,
        form_noack,
        form_rst_window,
        form_challenge,
        form_retrans,
        form_syn_data,
        form_urgent,
        form_fragments,
        form_lenient_http,
    ];
    for f in forms {
        for c in f(&mut s) {
            s.run(c);
        }
    }
    s.finish();
}

// ---- replay ----------------------------------------------------------------------------------

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/evasion").join(name)
}

/// `warden replay --policy` (web in protect mode, as above) over the kept captures (made by the
/// truth test, README there): each shows the SQL injection the server logged.
#[test]
fn evasion_captures_replayed() {
    let dir = std::env::temp_dir().join(format!("warden-evasion-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pol = dir.join("policy.toml");
    std::fs::write(&pol, policy()).unwrap();
    // Crafted captures: their decoys are judged by their checksums from the first frame on
    // (replay's default, `auto`, decides only after 64 checksummed packets).
    let cfg = dir.join("warden.toml");
    std::fs::write(&cfg, "[normalization]\nchecksums = \"verify\"\n").unwrap();
    let mut failures = Vec::new();
    for (name, path) in [
        ("badsum-v4-http.pcap", "/e40007?id=1%27%20OR%20%271%27%3D%271"),
        ("urgent-v4-http-union-select.pcap", "/e40022?id=-1%20UNION%20SELECT%20password%20FROM%20users"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("replay")
            .arg("--policy")
            .arg(&pol)
            .arg("--config")
            .arg(&cfg)
            .arg(capture(name))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "replay {name}: {}", String::from_utf8_lossy(&out.stderr));
        let recs: Vec<ConnectionRecord> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let r = recs.iter().find(|r| r.ip_proto == 6 && r.server_port == HTTP);
        let Some(r) = r else {
            failures.push(format!("{name}: no record: {recs:?}"));
            continue;
        };
        let ok = r.app == "http"
            && l7_str(r, "path").as_deref() == Some(path)
            && r.threats.iter().any(|t| t.id == "sql_injection");
        if !ok {
            failures.push(format!("{name}: the server got {path} (an SQL injection); warden replay: {}", brief(r)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
