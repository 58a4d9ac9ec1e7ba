//! End-to-end app rules that stay true: a connection that starts as HTTP and then carries Redis
//! commands, on a port where only HTTP is allowed. The truth is what the server received (a
//! Python server logging every byte, a real redis-server's MONITOR stream and keys). Root only
//! (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::{Client, Reply, Request};

/// Only `http` to the server on 8080 and 8081 (`apps`), in `mode`.
fn policy(mode: &str, apps: &str) -> String {
    format!(
        "[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"{mode}\"\n\n\
         [[rule]]\nid = 30\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\", \"8081\"]\napps = [{apps}]\naction = \"allow\"\n"
    )
}

fn apply(t: &Topo, text: &str) {
    let r = t.client().request(&Request::PolicyApply { text: text.to_string() });
    assert!(matches!(r, Ok(Reply::Done(_))), "apply: {r:?}\n{}", t.warden_log());
}

fn wait_listen(t: &Topo, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.exec(&t.s, &["sh", "-c", &format!("ss -ltnH | grep -q ':{port} '")]).status.success() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that answers one HTTP request with `200 OK` and then logs every byte it receives
/// (all connections, appended to `log`): a server that would act on whatever comes.
const SERVER: &str = r#"
import socket, sys
addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(16)
log = open(path, "ab", 0)
while True:
    c, _ = srv.accept()
    c.settimeout(5)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                break
            buf += d
            log.write(d)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        while True:
            d = c.recv(4096)
            if not d:
                break
            log.write(d)
    except OSError:
        pass
    c.close()
"#;

/// The client: an HTTP request (waiting for the answer, or not), then a RESP `SET key value`
/// in its own segment; prints what came back (`reset` when the connection was reset).
const CLIENT: &str = r#"
import socket, sys, time
host, port, wait, key = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "wait", sys.argv[4]
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET / HTTP/1.1\r\nHost: srv\r\n\r\n" if wait else b"GET / HTTP/1.0\r\n\r\n"
s.sendall(req)
if wait:
    got = b""
    while not got.endswith(b"ok"):
        d = s.recv(4096)
        if not d:
            break
        got += d
    print("http:", got.split(b"\r\n")[0].decode())
cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nvalue\r\n" % (len(key), key.encode())
try:
    s.sendall(cmd)
    print("after:", s.recv(4096))
except ConnectionResetError:
    print("reset")
except socket.timeout:
    print("timeout")
"#;

fn client(t: &Topo, port: u16, wait: bool, key: &str) -> String {
    let script = t.path("client.py");
    let out = t.exec(
        &t.c,
        &["timeout", "10", "python3", script.to_str().unwrap(), S4, &port.to_string(), if wait { "wait" } else { "nowait" }, key],
    );
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Waits until `path` contains `needle` (true) or `timeout` passes (false).
fn file_gets(path: &std::path::Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(t: &mut Topo, text: &str) -> Client {
    t.start_warden_policy(text);
    t.subscribed()
}

/// HTTP, answered, then Redis commands on the same connection where only HTTP is allowed:
/// protect mode resets the connection on the first RESP segment and the server never sees it;
/// alert mode lets it through and reports a violation whose app went from http to redis.
#[test]
fn http_then_redis_commands_are_cut_on_an_http_only_port() {
    let mut t = Topo::new(ClientLink::Veth);
    std::fs::write(t.path("server.py"), SERVER).unwrap();
    std::fs::write(t.path("client.py"), CLIENT).unwrap();
    let log = t.path("received.log");
    let s = t.s.clone();
    let (server, log_arg) = (t.path("server.py"), log.to_str().unwrap().to_string());
    t.spawn(&s, &["python3", server.to_str().unwrap(), S4, "8080", &log_arg]);
    wait_listen(&t, 8080);
    let mut ctl = start(&mut t, &policy("protect", "\"http\""));

    let out = client(&t, 8080, true, "protected_key");
    assert!(out.contains("http: HTTP/1.1 200 OK"), "the HTTP exchange must pass: {out}\n{}", t.warden_log());
    assert!(file_gets(&log, "GET / HTTP/1.1", Duration::from_secs(5)), "the server saw no request");
    // The server would have logged the command within this time in the alert run below.
    std::thread::sleep(Duration::from_secs(1));
    let got = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).to_string();
    assert!(!got.contains("protected_key") && !got.contains("SET"), "a Redis command reached the server: {got:?}\n{out}");
    let (recs, events) = collect_messages(&mut ctl, Duration::from_secs(20), |_, ev| {
        ev.iter().any(|e| e.connection().server_port == 8080)
    });
    let ev = events
        .iter()
        .find(|e| e.connection().server_port == 8080)
        .unwrap_or_else(|| panic!("no event: {events:#?}\n{recs:#?}\n{}", t.warden_log()));
    assert_eq!(ev.kind(), "denied");
    let c = ev.connection();
    assert_eq!((c.app.as_str(), c.previous_app.as_deref(), c.verdict.as_deref()), ("redis", Some("http"), Some("denied")), "{c:?}");

    apply(&t, &policy("alert", "\"http\""));
    let out = client(&t, 8080, true, "alerted_key");
    assert!(out.contains("http: HTTP/1.1 200 OK"), "{out}");
    assert!(file_gets(&log, "alerted_key", Duration::from_secs(5)), "alert mode blocked the command: {out}");
    let (_, events) = collect_messages(&mut ctl, Duration::from_secs(20), |_, ev| {
        ev.iter().any(|e| e.connection().server_port == 8080 && e.kind() == "violation")
    });
    let ev = events
        .iter()
        .find(|e| e.connection().server_port == 8080 && e.kind() == "violation")
        .unwrap_or_else(|| panic!("no violation: {events:#?}"));
    assert_eq!((ev.connection().app.as_str(), ev.connection().previous_app.as_deref()), ("redis", Some("http")));
}

/// A real redis-server behind an http-only rule: a client sends an HTTP request and, without
/// waiting, a RESP `SET` in the next segment. In protect mode MONITOR never shows the `SET` and
/// the key does not exist; with Redis allowed too (control) both do.
#[test]
fn redis_behind_an_http_only_rule_never_sees_the_command() {
    let mut t = Topo::new(ClientLink::Veth);
    std::fs::write(t.path("client.py"), CLIENT).unwrap();
    let s = t.s.clone();
    let dir = t.path("");
    t.spawn(
        &s,
        &["redis-server", "--port", "8081", "--bind", S4, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir.to_str().unwrap()],
    );
    wait_listen(&t, 8081);
    // MONITOR from inside the server's namespace (local: it does not cross Warden).
    let monitor = t.path("monitor.log");
    t.spawn(
        &s,
        &["sh", "-c", &format!("exec stdbuf -oL redis-cli -h {S4} -p 8081 monitor > {}", monitor.display())],
    );
    assert!(file_gets(&monitor, "OK", Duration::from_secs(10)), "MONITOR did not start");
    let exists = |t: &Topo, key: &str| {
        let out = t.exec(&t.s, &["redis-cli", "-h", S4, "-p", "8081", "EXISTS", key]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let _ctl = start(&mut t, &policy("protect", "\"http\""));

    let out = client(&t, 8081, false, "kprotect");
    std::thread::sleep(Duration::from_secs(1));
    let seen = std::fs::read_to_string(&monitor).unwrap_or_default();
    assert!(!seen.contains("kprotect"), "the SET reached redis: {seen}\n{out}\n{}", t.warden_log());
    assert_eq!(exists(&t, "kprotect"), "0", "{out}");

    // Control: Redis allowed as well, the same bytes get through.
    apply(&t, &policy("protect", "\"http\", \"redis\""));
    let out = client(&t, 8081, false, "kcontrol");
    assert!(file_gets(&monitor, "kcontrol", Duration::from_secs(5)), "control: MONITOR shows no SET: {out}\n{seen}");
    assert_eq!(exists(&t, "kcontrol"), "1", "{out}");
}
