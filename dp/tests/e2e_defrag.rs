//! End to end: real fragmented traffic through Warden inline. `ping -s 5000` (IPv4 and IPv6)
//! and 4000-byte UDP datagrams (larger than the 1500-byte MTU, so the sending stack fragments
//! them) echoed by a Python UDP server in the other namespace: everything arrives whole, each
//! datagram is one packet of its session, and the fragments are counted as reassembled. In
//! protect mode with a policy that does not allow the UDP port, nothing of a fragmented datagram
//! reaches the server, while an allowed port still works. TCP across a small-MTU link beyond
//! Warden (576 bytes for IPv4, 1280 for IPv6; [`Topo::far_client`]): Path MTU discovery's ICMP
//! errors cross Warden and count in their session, IPv4 segments sent without DF cross it in
//! the fragments a router made, and each 3 MB transfer arrives intact as one HTTP session, in
//! alert and protect mode. Root only (see `common`).

mod common;

use std::time::Duration;

use common::*;
use warden_control::{ConnectionRecord, Reply, Request, WorkerCounters};

/// Logs the length and SHA-256 of every datagram it receives on `port` (IPv4 and IPv6) to
/// `log`, and sends it back.
const SERVER: &str = r#"
import hashlib, socket, sys
port, log = int(sys.argv[1]), open(sys.argv[2], 'a', buffering=1)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(('::', port))
while True:
    d, a = s.recvfrom(65535)
    log.write('%d %s\n' % (len(d), hashlib.sha256(d).hexdigest()))
    s.sendto(d, a)
"#;

/// Sends one datagram of `n` bytes to `host`:`port` and prints `echo <len> same|different`
/// (or `timeout`), then the SHA-256 of what it sent.
const CLIENT: &str = r#"
import hashlib, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
data = bytes((i * 7 + i // 251) % 256 for i in range(n))
s.sendto(data, (host, port))
try:
    d, _ = s.recvfrom(65535)
    print('echo %d %s' % (len(d), 'same' if d == data else 'different'))
except socket.timeout:
    print('timeout')
print(hashlib.sha256(data).hexdigest())
"#;

fn udp_server(t: &mut Topo, port: u16) -> std::path::PathBuf {
    let script = t.path("udp_server.py");
    std::fs::write(&script, SERVER).unwrap();
    let log = t.path(&format!("udp-{port}.log"));
    std::fs::write(&log, "").unwrap();
    let s = t.s.clone();
    t.spawn(
        &s,
        &[
            "python3",
            script.to_str().unwrap(),
            &port.to_string(),
            log.to_str().unwrap(),
        ],
    );
    t.wait_listening(&t.s, "udp", port);
    log
}

/// Sends `n` bytes from the client namespace; returns (the client's verdict line, the SHA-256
/// of the datagram sent).
fn send_udp(t: &Topo, host: &str, port: u16, n: usize) -> (String, String) {
    let script = t.path("udp_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let out = t.exec(
        &t.c,
        &[
            "python3",
            script.to_str().unwrap(),
            host,
            &port.to_string(),
            &n.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let verdict = lines.next().unwrap_or_default().to_string();
    let sha = lines.next().unwrap_or_default().to_string();
    assert!(
        !sha.is_empty(),
        "client failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (verdict, sha)
}

fn big_ping(t: &Topo, host: &str) -> bool {
    t.exec(
        &t.c,
        &[
            "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "5000", host,
        ],
    )
    .status
    .success()
}

fn counters(t: &Topo) -> Vec<WorkerCounters> {
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => c.workers,
        other => panic!("{other:?}"),
    }
}

/// Frames the kernel counted as dropped between the XDP program and Warden's sockets on
/// interface `name` (XSK rx ring full or no fill buffer).
fn lost_before_warden(t: &Topo, name: &str) -> u64 {
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => c
            .interfaces
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.xsk_rx_dropped + i.xsk_rx_ring_full + i.fill_ring_empty)
            .sum(),
        other => panic!("{other:?}"),
    }
}

fn find<'a>(
    recs: &'a [ConnectionRecord],
    proto: u8,
    host: &str,
    port: u16,
) -> &'a ConnectionRecord {
    recs.iter()
        .find(|r| r.ip_proto == proto && r.server_ip == host && r.server_port == port)
        .unwrap_or_else(|| panic!("no session {proto} {host}:{port} in {recs:#?}"))
}

/// Fragmented pings and UDP datagrams pass whole and are counted as one packet each.
fn fragmented_traffic_passes_whole(workers: u32) {
    let mut t = Topo::with_queues(ClientLink::Veth, workers);
    let log = udp_server(&mut t, 9998);
    t.start_warden(&[
        "--inline",
        &format!("{}:{}", t.a, t.b),
        "--workers",
        &workers.to_string(),
    ]);
    for host in [S4, S6] {
        assert!(
            big_ping(&t, host),
            "ping -s 5000 {host}: {}",
            t.warden_log()
        );
    }
    let mut sent = Vec::new();
    for host in [S4, S6] {
        let (verdict, sha) = send_udp(&t, host, 9998, 4000);
        assert_eq!(verdict, "echo 4000 same", "{host}: {}", t.warden_log());
        sent.push(format!("4000 {sha}"));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.lines().collect::<Vec<_>>(),
        sent,
        "the server received each datagram once, whole"
    );
    let recs = sessions(&mut t.client());
    for (proto, host) in [(1, S4), (58, S6)] {
        let r = recs
            .iter()
            .find(|r| r.ip_proto == proto && r.server_ip == host)
            .expect("icmp session");
        assert_eq!(
            (r.packets_to_server, r.packets_to_client),
            (3, 3),
            "one packet per echo: {r:?}"
        );
        assert!(
            r.bytes_to_server > 3 * 5000 && r.bytes_to_client > 3 * 5000,
            "{r:?}"
        );
    }
    for host in [S4, S6] {
        let r = find(&recs, 17, host, 9998);
        assert_eq!((r.packets_to_server, r.packets_to_client), (1, 1), "{r:?}");
        assert!(
            r.bytes_to_server > 4000 + 3 * 14,
            "the bytes of every fragment frame: {r:?}"
        );
        assert_eq!(
            (r.packets_dropped_to_server, r.packets_dropped_to_client),
            (0, 0)
        );
    }
    let w = counters(&t);
    let sum = |f: fn(&WorkerCounters) -> u64| w.iter().map(f).sum::<u64>();
    // 2 x 3 echo requests and replies, 2 x 2 UDP datagrams: 16 datagrams of 3 or 4 fragments.
    assert_eq!(sum(|w| w.defrag.reassembled), 16, "{w:?}");
    assert!(sum(|w| w.defrag.fragments) >= 16 * 3, "{w:?}");
    assert_eq!(sum(|w| w.defrag.held), 0, "{w:?}");
    assert_eq!(
        sum(|w| w.defrag.timeouts + w.defrag.exceptions + w.defrag.malformed),
        0,
        "{w:?}"
    );
}

#[test]
fn fragmented_ping_and_udp_pass_whole_as_one_packet_each() {
    fragmented_traffic_passes_whole(1);
}

/// Two workers and two queues: fragments and whole packets may arrive on either queue; they
/// are owned by address, so each datagram is reassembled by the worker that owns its session.
#[test]
fn fragmented_traffic_passes_whole_with_two_workers() {
    fragmented_traffic_passes_whole(2);
}

/// Protect mode: ICMP and UDP 9998 allowed, UDP 9999 not. A 4000-byte datagram to 9999 does not
/// reach the server (none of its fragments), and its session is denied; 9998 still works.
#[test]
fn protect_mode_drops_every_fragment_of_a_denied_datagram() {
    let mut t = Topo::new(ClientLink::Veth);
    let allowed = udp_server(&mut t, 9998);
    let denied = udp_server(&mut t, 9999);
    let policy = format!(
        "[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"protect\"\n\n\
         [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"icmp\"\naction = \"allow\"\n\n\
         [[rule]]\nid = 2\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"icmpv6\"\naction = \"allow\"\n\n\
         [[rule]]\nid = 3\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"udp\"\nports = [\"9998\"]\naction = \"allow\"\n"
    );
    t.start_warden_policy(&policy);
    let mut ctl = t.subscribed();
    for host in [S4, S6] {
        assert!(
            big_ping(&t, host),
            "ping -s 5000 {host} (allowed): {}",
            t.warden_log()
        );
        let (verdict, _) = send_udp(&t, host, 9999, 4000);
        assert_eq!(verdict, "timeout", "{host}: a denied datagram was answered");
        let (verdict, _) = send_udp(&t, host, 9998, 4000);
        assert_eq!(verdict, "echo 4000 same", "{host}: {}", t.warden_log());
    }
    assert_eq!(
        std::fs::read_to_string(&denied).unwrap(),
        "",
        "the server received a denied datagram"
    );
    assert_eq!(
        std::fs::read_to_string(&allowed).unwrap().lines().count(),
        2
    );
    // Denied sessions linger briefly: their events tell what was dropped.
    let denied_event = |e: &warden_control::Event, host: &str| {
        e.kind() == "denied"
            && e.connection().server_port == 9999
            && e.connection().server_ip == host
    };
    let (_, events) = collect_messages(&mut ctl, Duration::from_secs(15), |_, ev| {
        [S4, S6]
            .iter()
            .all(|h| ev.iter().any(|e| denied_event(e, h)))
    });
    for host in [S4, S6] {
        let e = events
            .iter()
            .find(|e| denied_event(e, host))
            .unwrap_or_else(|| panic!("no denied event for {host}: {events:#?}"));
        let r = e.connection();
        assert_eq!(
            (r.ip_proto, r.verdict.as_deref()),
            (17, Some("denied")),
            "{r:?}"
        );
        assert_eq!(
            (
                r.packets_to_server,
                r.packets_dropped_to_server,
                r.packets_to_client
            ),
            (1, 1, 0),
            "{r:?}"
        );
    }
    let recs = sessions(&mut t.client());
    for host in [S4, S6] {
        let ok = find(&recs, 17, host, 9998);
        assert_eq!(
            (ok.verdict.as_deref(), ok.rule_id),
            (Some("allowed"), Some(3))
        );
    }
    let w = counters(&t);
    assert_eq!(w.iter().map(|w| w.defrag.held).sum::<u64>(), 0);
    let c = format!("{:?}", t.client().request(&Request::Counters {}).unwrap());
    assert!(c.contains("policy_denied"), "{c}");
}

/// Serves its directory (GET) and answers a POST with the length and SHA-256 of the body it
/// received. IPv4 and IPv6.
const HTTP_SERVER: &str = r#"
import hashlib, http.server, os, socket, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        left, n, h = int(self.headers['Content-Length']), 0, hashlib.sha256()
        while left:
            d = self.rfile.read(min(left, 65536))
            if not d:
                break
            h.update(d)
            n += len(d)
            left -= len(d)
        body = ('%d %s' % (n, h.hexdigest())).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
os.chdir(sys.argv[2])
Server(('::', int(sys.argv[1])), Handler).serve_forever()
"#;

/// Size of the body downloaded and uploaded across the small link (bytes).
const BODY: u64 = 3_000_000;

/// A 3 MB download and a 3 MB upload (curl) between the far host of [`Topo::far_client`],
/// behind an `mtu`-byte link, and an HTTP server, through Warden with the server a workload in
/// `mode` whose policy allows HTTP on 8080. Both ends have 1500-byte links: the download
/// finds the small link by Path MTU discovery (the first router's ICMP error crosses Warden
/// towards the server); the far host sends without DF (IPv4), so each upload segment crosses
/// Warden in fragments the second router made. Both bodies arrive intact (SHA-256), each
/// transfer is one HTTP session, allowed by the rule, its counts those of a capture at the
/// server, and the error counted in the download's session.
fn tcp_across_a_small_mtu_link(mtu: u32, v6: bool, mode: &str) {
    let mut t = Topo::new(ClientLink::Veth);
    let far = t.far_client(mtu);
    let (host, url) = if v6 {
        (FAR6, format!("http://[{S6}]:8080"))
    } else {
        (FAR4, format!("http://{S4}:8080"))
    };
    if !v6 {
        sh(&[
            "ip",
            "netns",
            "exec",
            &far.ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_no_pmtu_disc=1",
        ]);
    }
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob = www.join("blob.bin");
    write_blob(&blob, BODY as usize);
    let sha = String::from_utf8(sh(&["sha256sum", blob.to_str().unwrap()]).stdout).unwrap();
    let sha = sha.split_whitespace().next().unwrap().to_string();
    let script = t.path("http_server.py");
    std::fs::write(&script, HTTP_SERVER).unwrap();
    let s = t.s.clone();
    t.spawn(
        &s,
        &[
            "python3",
            script.to_str().unwrap(),
            "8080",
            www.to_str().unwrap(),
        ],
    );
    let cap = t.capture_server("server.pcap", "");
    let policy = format!(
        "[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"{mode}\"\n\n\
         [[rule]]\nid = 7\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\napps = [\"http\"]\naction = \"allow\"\n"
    );
    t.start_warden_policy(&policy);
    let mut ctl = t.subscribed();
    t.wait_listening(&t.s, "tcp", 8080);

    let upload = || {
        let out = t.exec(
            &far.ns,
            &[
                "curl",
                "-sf",
                "--max-time",
                "120",
                "-H",
                "Expect:",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", blob.display()),
                &format!("{url}/upload"),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{BODY} {sha}"),
            "upload: {}",
            t.warden_log()
        );
    };
    let download = || {
        let out = t.exec(
            &far.ns,
            &[
                "sh",
                "-c",
                &format!("curl -sf --max-time 120 {url}/blob.bin | sha256sum"),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next(),
            Some(sha.as_str()),
            "download: {}",
            t.warden_log()
        );
    };
    // Whichever end learns the path MTU first advertises a smaller MSS from then on. IPv4: the
    // upload first, so the far host sends full-size segments for the router to fragment.
    // IPv6: the download first, so the server discovers the path MTU through Warden (the far
    // host learns it for its upload from the router next to it).
    if v6 {
        download();
        upload();
    } else {
        upload();
        download();
    }
    // The server learned the small link's MTU from the error that crossed Warden.
    let route = String::from_utf8(t.exec(&t.s, &["ip", "route", "get", host]).stdout).unwrap();
    assert!(
        route.contains(&format!("mtu {mtu}")),
        "no path MTU discovery: {route}"
    );

    let recs = collect_reports(&mut ctl, Duration::from_secs(30), |all| {
        all.iter()
            .filter(|r| r.client_ip == host && r.closed)
            .count()
            >= 2
    });
    let closed: Vec<&ConnectionRecord> = recs
        .iter()
        .filter(|r| r.client_ip == host && r.closed)
        .collect();
    assert_eq!(closed.len(), 2, "one session per transfer: {recs:#?}");
    // Neither the fragments nor the errors made sessions of their own.
    let others: Vec<_> = recs
        .iter()
        .filter(|r| {
            (r.client_ip == host || r.server_ip == host) && (r.ip_proto, r.server_port) != (6, 8080)
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    let (seen, summary) = t.replay_capture(cap);
    for r in &closed {
        assert_eq!(r.app, "http", "{r:?}");
        assert_eq!(
            (
                r.verdict.as_deref(),
                r.rule_id,
                r.mode.as_deref(),
                r.end_reason.as_deref()
            ),
            (Some("allowed"), Some(7), Some(mode), Some("fin")),
            "{r:?}"
        );
        assert_eq!(
            (r.packets_dropped_to_server, r.packets_dropped_to_client),
            (0, 0),
            "{r:?}"
        );
        assert_eq!(r.icmp_errors_rejected.unwrap_or(0), 0, "{r:?}");
        // The upload says what it is (octet-stream), so its bytes are not read as a form.
        assert!(r.threats.is_empty(), "{r:?}");
        let s = seen
            .iter()
            .find(|s| {
                s.client_ip == host && s.client_port == r.client_port && s.server_port == 8080
            })
            .unwrap_or_else(|| panic!("session {r:?} not in the server capture"));
        let (rp, sp) = ((r.packets_to_server, r.packets_to_client), (s.packets_to_server, s.packets_to_client));
        if rp == sp {
            assert_eq!(
                (r.bytes_to_server, r.bytes_to_client),
                (s.bytes_to_server, s.bytes_to_client),
                "warden record vs server capture: {r:#?} {s:#?}"
            );
        } else {
            // A frame the kernel dropped between the XDP program and Warden's socket (its rx
            // ring full on a loaded machine; counted in the interface's XSK statistics) is in
            // the server's capture, never crossed Warden and was sent again: the record may
            // lack at most those, per direction.
            let lost = [lost_before_warden(&t, &t.a), lost_before_warden(&t, &t.b)];
            assert!(
                rp.0 <= sp.0 && rp.1 <= sp.1 && sp.0 - rp.0 <= lost[0] && sp.1 - rp.1 <= lost[1],
                "warden record vs server capture (frames lost before Warden {lost:?}): {r:#?} {s:#?}"
            );
        }
    }
    let download = closed
        .iter()
        .find(|r| r.bytes_to_client > BODY)
        .expect("the download's session");
    let upload = closed
        .iter()
        .find(|r| r.bytes_to_server > BODY)
        .expect("the upload's session");
    assert!(
        download.icmp_errors.unwrap_or(0) >= 1,
        "the error is counted in its session: {download:?}"
    );
    // After discovery the server's segments fit the small link (IP and TCP headers, timestamps).
    let payload = u64::from(mtu) - if v6 { 72 } else { 52 };
    assert!(download.packets_to_client > BODY / payload, "{download:?}");
    let w = counters(&t);
    let sum = |f: fn(&WorkerCounters) -> u64| w.iter().map(f).sum::<u64>();
    assert_eq!(sum(|w| w.defrag.held), 0, "{w:?}");
    assert_eq!(
        sum(|w| w.defrag.timeouts + w.defrag.exceptions + w.defrag.malformed + w.defrag.overlaps),
        0,
        "{w:?}"
    );
    if !v6 {
        // Every full upload segment (1500 bytes, no DF) crossed Warden in three fragments and
        // was inspected as one packet.
        let segments = BODY / 1448;
        assert!(summary.reassembled >= segments, "{summary:?}");
        assert!(summary.fragments_forwarded >= 3 * segments, "{summary:?}");
        assert_eq!(sum(|w| w.defrag.reassembled), summary.reassembled, "{w:?}");
        assert!(
            upload.packets_to_server < summary.fragments_forwarded,
            "{upload:?}"
        );
    } else {
        assert_eq!(sum(|w| w.defrag.reassembled), 0, "{w:?}");
    }
}

#[test]
fn tcp_across_a_576_byte_link_v4_alert() {
    tcp_across_a_small_mtu_link(576, false, "alert");
}

#[test]
fn tcp_across_a_576_byte_link_v4_protect() {
    tcp_across_a_small_mtu_link(576, false, "protect");
}

#[test]
fn tcp_across_a_1280_byte_link_v6_alert() {
    tcp_across_a_small_mtu_link(1280, true, "alert");
}

#[test]
fn tcp_across_a_1280_byte_link_v6_protect() {
    tcp_across_a_small_mtu_link(1280, true, "protect");
}
