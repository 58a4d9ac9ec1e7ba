//! End-to-end tests of failure handling: a worker that dies takes Warden down so every pair
//! falls to its fail mode (and the service manager restarts it); every rx queue of a managed
//! interface is inspected or dropped while Warden runs, also after a channel change. Root only
//! (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::{FailMode, Reply, Request};

/// Status Warden exits with when a worker dies (`daemon::EXIT_THREAD_FAILED`).
const EXIT_THREAD_FAILED: i32 = 70;

/// In-kernel fail_open forwarding into a veth needs GRO (NAPI) on the receiving end.
fn gro_on(t: &Topo) {
    for (ns, dev) in [(&t.c, &t.c0), (&t.s, &t.s0)] {
        sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"]);
    }
}

/// Kills worker `worker` through the test hook and checks that Warden exits with
/// [`EXIT_THREAD_FAILED`], logging which worker panicked, where and why, and leaves the XDP
/// program attached (the pair is in its fail mode, not detached).
fn kill_worker_and_expect_exit(t: &mut Topo, pid: u32, worker: usize) {
    match t.client().request(&Request::TestKillWorker { worker }) {
        Ok(Reply::Done(_)) => {}
        // The process may already be gone before the reply is written.
        Ok(r) => panic!("unexpected {r:?}"),
        Err(_) => {}
    }
    let code = t.wait_code(pid, Duration::from_secs(10));
    assert_eq!(code, Some(EXIT_THREAD_FAILED), "warden did not exit non-zero: {}", t.warden_log());
    let log = t.warden_log();
    assert!(log.contains(&format!("warden-w{worker}")), "log does not name the worker: {log}");
    assert!(log.contains("told to panic (test hook)"), "log lacks the panic message: {log}");
    assert!(log.contains("worker.rs:"), "log lacks the panic location: {log}");
    assert!(t.has_xdp(&t.a) && t.has_xdp(&t.b), "XDP must stay attached so the fail mode applies");
}

#[test]
fn killed_worker_exits_nonzero_and_fail_open_keeps_forwarding() {
    let mut t = Topo::new(ClientLink::Veth);
    gro_on(&t);
    let pid = t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b), "--workers", "2", "--test-hooks"]);
    assert!(t.ping(S4, 2));
    // Warden inspected the pings before the failure.
    let before = sessions(&mut t.client());
    assert!(before.iter().any(|r| r.ip_proto == 1), "{before:?}");
    kill_worker_and_expect_exit(&mut t, pid, 1);
    assert!(t.ping(S4, 3), "fail_open did not keep the wire connected after the worker died");
    assert!(t.ping(S6, 2));
}

#[test]
fn killed_worker_exits_nonzero_and_fail_closed_drops() {
    let mut t = Topo::new(ClientLink::Veth);
    gro_on(&t);
    let pid = t.start_warden(&["--test-hooks"]);
    t.client()
        .request(&Request::AddInlinePair { a: t.a.clone(), b: t.b.clone(), fail_mode: FailMode::Closed })
        .unwrap();
    assert!(t.ping(S4, 2));
    kill_worker_and_expect_exit(&mut t, pid, 0);
    assert!(!t.ping(S4, 2), "fail_closed forwarded after the worker died");
    assert!(!t.ping(S6, 1), "fail_closed forwarded IPv6 after the worker died");
}

#[test]
fn test_hook_is_refused_without_the_flag() {
    let mut t = Topo::new(ClientLink::Veth);
    let pid = t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let r = t.client().request(&Request::TestKillWorker { worker: 0 });
    let err = r.expect_err("the test hook must be refused without --test-hooks").to_string();
    assert!(err.contains("test hooks are off"), "{err}");
    assert_eq!(t.wait_code(pid, Duration::from_millis(1500)), None, "warden exited: {}", t.warden_log());
    assert!(t.ping(S4, 2), "warden stopped forwarding after a refused test hook");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && sessions(&mut t.client()).iter().all(|r| r.ip_proto != 1) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sessions(&mut t.client()).iter().any(|r| r.ip_proto == 1), "pings were not inspected");
}

/// UDP echo server on `port`: answers every datagram, and after `secs` seconds writes how many
/// datagrams each client port sent it to `out` ("client_port count" lines).
const UDP_ECHO: &str = r#"
import os, select, socket, sys, time
out, secs, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
got = {}
end = time.time() + secs
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.1)
    if r:
        data, peer = s.recvfrom(2048)
        got[peer[1]] = got.get(peer[1], 0) + 1
        s.sendto(data, peer)
with open(out + ".tmp", "w") as f:
    for p, n in sorted(got.items()):
        f.write(f"{p} {n}\n")
os.rename(out + ".tmp", out)
"#;

/// Sends one datagram every 20 ms from each of `flows` sockets (one flow each: the kernel
/// spreads flows over the tx queues by their hash) to `dst`:`port` for `secs` seconds, and
/// reads the echoes.
const UDP_SEND: &str = r#"
import socket, sys, time
dst, port, secs, flows = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
socks = []
for _ in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    socks.append(s)
end = time.time() + secs
while time.time() < end:
    for s in socks:
        s.sendto(b"warden queue test", (dst, port))
        try:
            while True:
                s.recv(2048)
        except BlockingIOError:
            pass
    time.sleep(0.02)
"#;

/// Sets the rx and tx queue counts of `dev` in `ns` (`ethtool -L`).
fn channels(t: &Topo, ns: &str, dev: &str, n: u32) {
    let n = n.to_string();
    let out = t.exec(ns, &["ethtool", "-L", dev, "rx", &n, "tx", &n]);
    assert!(out.status.success(), "ethtool -L {dev} {n}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Per-rx-queue XDP redirect counts of veth `dev` in `ns` (`ethtool -S`).
fn xdp_redirects(t: &Topo, ns: &str, dev: &str, queues: u32) -> Vec<u64> {
    let out = String::from_utf8_lossy(&t.exec(ns, &["ethtool", "-S", dev]).stdout).to_string();
    (0..queues)
        .map(|q| {
            let key = format!("rx_queue_{q}_xdp_redirect:");
            out.lines()
                .find_map(|l| l.trim().strip_prefix(&key).map(|v| v.trim().parse::<u64>().unwrap()))
                .unwrap_or_else(|| panic!("no {key} in ethtool -S {dev}: {out}"))
        })
        .collect()
}

fn interfaces(t: &Topo) -> Vec<warden_control::InterfaceInfo> {
    match t.client().request(&Request::ListInterfaces {}).unwrap() {
        Reply::Interfaces(v) => v,
        r => panic!("{r:?}"),
    }
}

fn iface_counters(t: &Topo) -> Vec<warden_control::InterfaceCounters> {
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => c.interfaces,
        r => panic!("{r:?}"),
    }
}

#[test]
fn every_rx_queue_is_inspected_also_after_a_channel_change() {
    let mut t = Topo::with_queues(ClientLink::Veth, 4);
    // Start with 2 of the 4 queues in use on both links.
    let links = [(t.c.clone(), t.c0.clone()), (t.m.clone(), t.a.clone()), (t.m.clone(), t.b.clone()), (t.s.clone(), t.s0.clone())];
    for (ns, dev) in &links {
        channels(&t, ns, dev, 2);
    }
    let (echo, send) = (t.path("echo.py"), t.path("send.py"));
    std::fs::write(&echo, UDP_ECHO).unwrap();
    std::fs::write(&send, UDP_SEND).unwrap();
    let counts = t.path("counts");
    t.spawn(&t.s.clone(), &["python3", echo.to_str().unwrap(), counts.to_str().unwrap(), "12", "6000"]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b), "--workers", "2"]);
    for i in interfaces(&t) {
        assert_eq!((i.queues, i.bound_queues), (2, 2), "{i:?}");
    }
    let sender = |secs: &str, flows: &str| {
        let out = t.exec(&t.c, &["python3", send.to_str().unwrap(), S4, "6000", secs, flows]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    sender("1", "8");
    // Grow the channels: the middle first (a veth with XDP needs as many rx queues as its peer
    // has tx queues), then the ends, and send on every queue at once: frames on a queue
    // Warden has not bound yet are dropped, never forwarded uninspected.
    for (ns, dev) in [&links[1], &links[2], &links[0], &links[3]] {
        channels(&t, ns, dev, 4);
    }
    // 64 flows: every one of the 4 queues gets some (checked below).
    sender("3", "64");
    for i in interfaces(&t) {
        assert_eq!((i.queues, i.bound_queues), (4, 4), "new queues were not bound: {i:?}\n{}", t.warden_log());
    }
    // Every frame arrived on a queue with a Warden socket, or was dropped there: none took the
    // fail path while Warden ran.
    let counters = iface_counters(&t);
    for c in &counters {
        assert_eq!((c.xdp_fail_open, c.xdp_fail_closed), (0, 0), "{c:?}");
        assert!(c.xdp_to_xsk > 0, "{c:?}");
    }
    // The kernel really used every queue in both directions.
    for (ns, dev) in [&links[1], &links[2]] {
        let r = xdp_redirects(&t, ns, dev, 4);
        assert!(r.iter().all(|n| *n > 0), "{dev}: XDP redirects per rx queue {r:?}");
    }
    // Everything the server received, Warden inspected: each flow is a session that counted at
    // least as many datagrams to the server as the server got.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !counts.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&counts).expect("echo server counts");
    let got: Vec<(u16, u64)> = text
        .lines()
        .map(|l| {
            let (p, n) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), 8 + 64, "flows the server heard from: {text}");
    let live = sessions(&mut t.client());
    for (port, n) in got {
        let s = live
            .iter()
            .find(|r| r.ip_proto == 17 && r.server_port == 6000 && r.client_port == port)
            .unwrap_or_else(|| panic!("no session for client port {port}: {live:#?}"));
        assert!(s.packets_to_server >= n && s.packets_to_client >= 1, "port {port}: server got {n}, Warden saw {s:?}");
    }
}

/// The XDP program's decision for every kind of queue, run by the kernel on a test frame
/// (`BPF_PROG_TEST_RUN`) in a namespace of this test: a queue with a registered socket goes to
/// it; while Warden's sockets exist, a queue without one (not bound, or beyond the queues Warden
/// can bind) is dropped and counted; once the sockets are closed (Warden gone), the pair's fail
/// mode applies.
#[test]
fn xdp_program_drops_unbound_queues_while_warden_runs_and_fails_over_when_it_is_gone() {
    use warden_dp::xsk::{Group, SideSpec};
    use warden_xdp::{action, AttachMode, XdpProgram, MAX_QUEUES};
    require_root();
    let id = format!("wx{:x}", std::process::id() & 0xffff);
    let (ns, x, y) = (format!("{id}-n"), format!("{id}x"), format!("{id}y"));
    let rxq = (MAX_QUEUES + 4).to_string();
    sh(&["ip", "netns", "add", &ns]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _ns = Ns(ns.clone());
    sh(&[
        "ip", "-n", &ns, "link", "add", &x, "numrxqueues", &rxq, "numtxqueues", "4", "type", "veth", "peer", "name", &y,
        "numrxqueues", "4", "numtxqueues", "4",
    ]);
    for d in [&x, &y] {
        sh(&["ip", "-n", &ns, "link", "set", d, "up"]);
    }
    let r = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let xdp = XdpProgram::load(AttachMode::Native).unwrap();
        let ix = nix::net::if_::if_nametoindex(x.as_str()).unwrap();
        let iy = nix::net::if_::if_nametoindex(y.as_str()).unwrap();
        // Warden binds queues 0 and 2 of x and queue 0 of y.
        let sx = SideSpec { name: x.clone(), ifindex: ix, slot: 3, queues: vec![0, 2] };
        let sy = SideSpec { name: y.clone(), ifindex: iy, slot: 4, queues: vec![0] };
        let group = Group::open([&sx, &sy], 256, 64).unwrap();
        for p in &group.ports {
            xdp.register_xsk(u32::from(p.slot), p.queue, p.fd()).unwrap();
        }
        xdp.configure_iface(ix, 3, iy, warden_xdp::FailMode::Open, 0).unwrap();
        xdp.configure_iface(iy, 4, ix, warden_xdp::FailMode::Closed, 0).unwrap();
        let frame = common_frame();
        let run = |ifindex: u32, q: u32| xdp.test_run(ifindex, q, &frame).unwrap();
        // Running: bound queues go to their socket, the others are dropped, even beyond the
        // queues the XSKMAP has room for.
        assert_eq!(run(ix, 0), action::REDIRECT);
        assert_eq!(run(ix, 2), action::REDIRECT);
        for q in [1, 3, MAX_QUEUES - 1, MAX_QUEUES + 3] {
            assert_eq!(run(ix, q), action::DROP, "queue {q} of a running Warden");
        }
        assert_eq!(run(iy, 1), action::DROP);
        let s = xdp.iface_stats(3).unwrap();
        assert_eq!((s.to_xsk_frames, s.unbound_frames, s.fail_open_frames), (2, 4, 0), "{s:?}");
        assert_eq!(s.unbound_bytes, 4 * frame.len() as u64);
        // Warden gone (its sockets closed): the fail modes.
        drop(group);
        for q in [0, 1, 2, MAX_QUEUES + 3] {
            assert_eq!(run(ix, q), action::REDIRECT, "fail_open queue {q}: redirect to the peer");
        }
        assert_eq!(run(iy, 0), action::DROP, "fail_closed");
        let s = xdp.iface_stats(3).unwrap();
        assert_eq!((s.to_xsk_frames, s.unbound_frames, s.fail_open_frames), (2, 4, 4), "{s:?}");
        let s = xdp.iface_stats(4).unwrap();
        assert_eq!((s.unbound_frames, s.fail_closed_frames), (1, 1), "{s:?}");
    })
    .join();
    assert!(r.is_ok(), "see the panic above");
}

/// A minimal Ethernet + IPv4 + UDP frame between the test addresses.
fn common_frame() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0, 9, 0, 0, 0x2a]);
    f.resize(60, 0);
    f
}
