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
