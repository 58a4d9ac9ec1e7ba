//! Warden as a service: the systemd unit (`systemd-analyze verify`), the notify protocol against
//! a NOTIFY_SOCKET listener (READY=1, STATUS=, WATCHDOG=1, pings stopping while a worker is
//! stuck), SIGHUP reloading the policy file while traffic crosses the pair, and the control
//! socket's access control (a non-root client refused admin requests and served read ones, an
//! unsafe socket directory refused, the connection cap with its admin reserve, read timeouts).
//! Root only.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use warden_control::{Client, ClientError, Reply, Request};

/// Every datagram received on `sock` within `d`, with its arrival time.
fn collect(sock: &UnixDatagram, d: Duration) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let end = Instant::now() + d;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(_) => break,
        }
    }
    out
}

fn pings(msgs: &[(Instant, String)]) -> usize {
    msgs.iter().filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1")).count()
}

fn statuses(msgs: &[(Instant, String)]) -> Vec<String> {
    msgs.iter()
        .flat_map(|(_, m)| m.lines().filter_map(|l| l.strip_prefix("STATUS=")).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn status(t: &Topo) -> warden_control::Status {
    match t.client().request(&Request::Status {}).unwrap() {
        Reply::Status(s) => s,
        r => panic!("not a status: {r:?}"),
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    require_root();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/warden.service")).unwrap();
    for key in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "ExecReload=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(key)), "conf/warden.service lacks {key}");
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = std::env::temp_dir().join(format!("warden-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warden.service");
    std::fs::write(&path, unit.replace("/usr/bin/warden", env!("CARGO_BIN_EXE_warden"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even for unknown keys and unparsable values: every line it prints is one.
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}

#[test]
fn notify_ready_status_and_watchdog_that_stops_for_a_stuck_worker() {
    let mut t = Topo::new(ClientLink::Veth);
    let np = t.path("notify.sock");
    let listener = UnixDatagram::bind(&np).unwrap();
    let np_s = np.to_str().unwrap().to_string();
    // 600 ms: pings every 200 ms.
    t.start_warden_with("", &["--inline", &format!("{}:{}", t.a, t.b), "--workers", "2", "--test-hooks"], &[
        ("NOTIFY_SOCKET", &np_s),
        ("WATCHDOG_USEC", "600000"),
    ]);
    let first = collect(&listener, Duration::from_secs(2));
    assert!(first.iter().any(|(_, m)| m.lines().any(|l| l == "READY=1")), "no READY=1: {first:?}");
    assert!(pings(&first) >= 4, "too few WATCHDOG=1 in 2 s: {first:?}");
    assert!(ping_ok(&t), "no traffic through the pair: {}", t.warden_log());
    let later = collect(&listener, Duration::from_millis(1500));
    let st = statuses(&later);
    let last = st.last().unwrap_or_else(|| panic!("no STATUS=: {later:?}"));
    assert!(last.starts_with("1 inline pair(s), "), "{last}");
    let frames: u64 = last.split(", ").find_map(|p| p.strip_suffix(" frame(s)")).unwrap().parse().unwrap();
    assert!(frames >= 6, "frames in STATUS after 3 pings: {last}");

    // Worker 1 stops looping for 3 s: no ping while it is stuck, STATUS names it, pings resume.
    t.client().request(&Request::TestStallWorker { worker: 1, secs: 3 }).unwrap();
    let stalled_at = Instant::now();
    let during = collect(&listener, Duration::from_millis(3500));
    let inside: Vec<_> = during
        .iter()
        .filter(|(at, _)| *at > stalled_at + Duration::from_millis(450) && *at < stalled_at + Duration::from_millis(2900))
        .cloned()
        .collect();
    assert_eq!(pings(&inside), 0, "pings while worker 1 was stuck: {inside:?}");
    assert!(statuses(&inside).iter().any(|s| s.contains("worker 1 is not looping")), "{inside:?}");
    let after = collect(&listener, Duration::from_secs(2));
    assert!(pings(&after) >= 3, "pings did not resume: {after:?}");
    assert!(t.warden_log().contains("worker 1 has not looped"), "{}", t.warden_log());
}

fn ping_ok(t: &Topo) -> bool {
    t.ping(S4, 3)
}

const POLICY_V1: &str = r#"
default_mode = "learn"
[[workload]]
id = "server"
ips = ["198.18.0.2"]
mode = "protect"
[[rule]]
id = 1
from = "any"
to = "server"
ip_proto = "icmp"
action = "allow"
"#;

#[test]
fn sighup_reloads_the_policy_while_traffic_flows() {
    let mut t = Topo::new(ClientLink::Veth);
    let np = t.path("notify.sock");
    let listener = UnixDatagram::bind(&np).unwrap();
    let np_s = np.to_str().unwrap().to_string();
    let policy = t.path("policy.toml");
    std::fs::write(&policy, POLICY_V1).unwrap();
    let pid = t.start_warden_with(
        &format!("[policy]\nfile = \"{}\"\n", policy.display()),
        &["--inline", &format!("{}:{}", t.a, t.b)],
        &[("NOTIFY_SOCKET", &np_s)],
    );
    let g1 = status(&t);
    assert_eq!(g1.policy_rules, 1);
    // 200 pings 20 ms apart (4 s) while the policy is reloaded twice.
    let c = t.c.clone();
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &c, "ping", "-q", "-c", "200", "-i", "0.02", "-W", "1", S4])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(800));
    // A second rule: the ICMP session is decided again under the new generation, still allowed.
    let v2 = format!(
        "{POLICY_V1}\n[[rule]]\nid = 2\nfrom = \"any\"\nto = \"server\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n"
    );
    std::fs::write(&policy, v2).unwrap();
    let _ = collect(&listener, Duration::from_millis(10));
    t.signal(pid, Signal::SIGHUP);
    let msgs = collect(&listener, Duration::from_millis(1500));
    let text: String = msgs.iter().map(|(_, m)| m.as_str()).collect();
    let reloading = text.find("RELOADING=1").unwrap_or_else(|| panic!("no RELOADING=1: {text}"));
    assert!(text[reloading..].contains("READY=1"), "no READY=1 after the reload: {text}");
    assert!(text.contains("MONOTONIC_USEC="), "{text}");
    let g2 = status(&t);
    assert_eq!(g2.policy_generation, g1.policy_generation + 1, "{}", t.warden_log());
    assert_eq!(g2.policy_rules, 2);
    // A broken file: the running policy stays, Warden keeps running.
    std::fs::write(&policy, "[[rule]]\nid = \"x\"\n").unwrap();
    t.signal(pid, Signal::SIGHUP);
    let msgs = collect(&listener, Duration::from_millis(1000));
    let text: String = msgs.iter().map(|(_, m)| m.as_str()).collect();
    assert!(text.contains("policy not reloaded"), "{text}");
    let g3 = status(&t);
    assert_eq!((g3.policy_generation, g3.policy_rules), (g2.policy_generation, 2));
    let out = pinger.join().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("200 packets transmitted, 200 received"), "frames lost across the reloads: {summary}");
    assert!(t.warden_log().contains("policy reloaded (SIGHUP)"), "{}", t.warden_log());
}

/// A uid (and its gid) with no entry in the user database, for a non-root client.
fn free_uid() -> u32 {
    (61000..62000)
        .find(|u| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u)).ok().flatten().is_none()
                && nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*u)).ok().flatten().is_none()
        })
        .expect("a free uid in 61000..62000")
}

/// A minimal control client: one request line, the response line on stdout, exit 0 when `ok`.
const CLIENT: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except BrokenPipeError:
    pass  # refused at connect: the reason is already waiting
line = s.makefile().readline()
print(line.strip())
sys.exit(0 if json.loads(line).get("ok") else 1)
"#;

/// Sends `request` (a JSON line) as `uid` (gid `uid`, no supplementary groups) through
/// [`CLIENT`]; (ok, response line).
fn request_as(uid: u32, sock: &std::path::Path, request: &str) -> (bool, String) {
    let u = uid.to_string();
    let out = Command::new("setpriv")
        .args(["--reuid", &u, "--regid", &u, "--clear-groups", "/usr/bin/python3", "-c", CLIENT])
        .arg(sock)
        .arg(request)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_read_only_client_is_refused_admin_requests() {
    let mut t = Topo::new(ClientLink::Veth);
    let reader = free_uid();
    let stranger = reader + 1;
    t.start_warden_with(&format!("[control]\nread_uids = [{reader}]\nread_timeout = 2\n"), &[], &[]);
    let sock = t.socket();
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o666);
    let (ok, out) = request_as(reader, &sock, r#"{"cmd":"status"}"#);
    assert!(ok && out.contains("uptime_s"), "read-only status: {out}");
    let (ok, out) = request_as(reader, &sock, r#"{"cmd":"counters"}"#);
    assert!(ok, "read-only counters: {out}");
    let (ok, out) = request_as(reader, &sock, &serde_json::json!({"cmd": "policy_apply", "text": POLICY_V1}).to_string());
    assert!(!ok && out.contains("permission denied: policy_apply needs the admin role"), "{out}");
    let (ok, out) = request_as(stranger, &sock, r#"{"cmd":"status"}"#);
    assert!(!ok && out.contains(&format!("permission denied: uid {stranger}")), "{out}");
    // The daemon keeps running and root is admin.
    match t.client().request(&Request::PolicyApply { text: POLICY_V1.into() }).unwrap() {
        Reply::Done(m) => assert!(m.contains("generation")),
        r => panic!("{r:?}"),
    }
    assert_eq!(status(&t).policy_rules, 1);
    // A request line that never completes: closed after read_timeout with an error line.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"cmd\":\"sta").unwrap();
    let started = Instant::now();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("no complete request within 2 s"), "{line}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed too early");
}

#[test]
fn the_connection_cap_keeps_room_for_admin() {
    let mut t = Topo::new(ClientLink::Veth);
    let reader = free_uid();
    t.start_warden_with(&format!("[control]\nread_uids = [{reader}]\nmax_connections = 2\nadmin_reserve = 1\n"), &[], &[]);
    let sock = t.socket();
    let mut held: Vec<Client> = (0..2).map(|_| t.client()).collect();
    for c in &mut held {
        c.request(&Request::Status {}).unwrap();
    }
    // At the cap: a read-only client is refused...
    let (ok, out) = request_as(reader, &sock, r#"{"cmd":"status"}"#);
    assert!(!ok && out.contains("too many control connections"), "{out}");
    // ... an admin still gets a slot from the reserve ...
    let mut admin = t.client();
    assert!(matches!(admin.request(&Request::Status {}).unwrap(), Reply::Status(_)));
    // ... until the reserve is used up too.
    let mut over = Client::connect(&sock).unwrap();
    match over.request(&Request::Status {}) {
        Err(ClientError::Daemon(m)) => assert!(m.contains("too many control connections"), "{m}"),
        r => panic!("fourth connection served: {r:?}"),
    }
    drop(held);
    drop(admin);
    std::thread::sleep(Duration::from_millis(200));
    let (ok, out) = request_as(reader, &sock, r#"{"cmd":"status"}"#);
    assert!(ok, "slots were not given back: {out}");
}

#[test]
fn a_socket_directory_others_can_write_is_refused() {
    require_root();
    let dir = std::env::temp_dir().join(format!("warden-unsafe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", "--socket"])
        .arg(dir.join("warden.sock"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "warden ran with an unsafe socket directory: {err}");
    assert!(err.contains("writable by other users"), "{err}");
}
