//! TFTP through Warden inline, end to end: Debian's tftpd-hpa (`in.tftpd` in the foreground in
//! the server namespace, on a non-standard port) and the tftp-hpa client. The transfer runs on
//! a new server port (a new UDP flow whose first packet the server sends); its record must be
//! labelled tftp, carry the request's file and the transfer's counts, point at the request
//! flow, and have the TFTP client as client. With two workers, a transfer owned by another
//! worker than its request is joined the same way (the expectation table is shared).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;
use warden_control::ConnectionRecord;
use warden_dp::flow::{Addr, FlowKey};

const PORT: u16 = 6969;

/// Starts `in.tftpd` serving (and accepting uploads into) the test's `tftproot` directory, with
/// the transfer port forced into `data_ports`; returns the directory and the server's PID.
fn start_tftpd(t: &mut Topo, data_ports: &str) -> (std::path::PathBuf, u32) {
    let root = t.path("tftproot");
    std::fs::create_dir_all(&root).unwrap();
    // Uploads are written as the unprivileged user tftpd switches to (inside its chroot).
    sh(&["chmod", "0777", root.to_str().unwrap()]);
    let s = t.s.clone();
    let addr = format!("{S4}:{PORT}");
    let pid = t.spawn(&s, &["in.tftpd", "-L", "-4", "-a", &addr, "-c", "-s", root.to_str().unwrap(), "-R", data_ports]);
    std::thread::sleep(Duration::from_millis(200));
    (root, pid)
}

/// Runs one tftp-hpa command in the client namespace from client port `cport`.
fn tftp(t: &Topo, cport: u16, cmd: &[&str]) {
    let range = format!("{cport}:{cport}");
    let port = PORT.to_string();
    let mut args = vec!["timeout", "20", "tftp", "-4", "-m", "binary", "-R", &range, S4, &port, "-c"];
    args.extend_from_slice(cmd);
    let out = t.exec(&t.c, &args);
    assert!(
        out.status.success(),
        "tftp {cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The latest record of every UDP flow (UDP sessions stay live; each report carries the newest
/// snapshot), by (client port, server port).
fn latest(records: &[ConnectionRecord]) -> BTreeMap<(u16, u16), ConnectionRecord> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| r.ip_proto == 17) {
        m.insert((r.client_port, r.server_port), r.clone());
    }
    m
}

fn l7<'a>(r: &'a ConnectionRecord, k: &str) -> &'a serde_json::Value {
    &r.l7.as_ref().unwrap_or_else(|| panic!("no l7: {r:?}"))[k]
}

/// Waits until the transfer from client port `cport` reports `data_bytes == bytes` (or an
/// error), then checks its record and its request's.
fn check_transfer(
    all: &BTreeMap<(u16, u16), ConnectionRecord>,
    cport: u16,
    op: &str,
    file: &str,
    bytes: Option<u64>,
) -> ConnectionRecord {
    let req = all.get(&(cport, PORT)).unwrap_or_else(|| panic!("no request flow from {cport}: {all:#?}"));
    assert_eq!(req.app, "tftp", "{req:?}");
    assert_eq!((req.client_ip.as_str(), req.server_ip.as_str()), (C4, S4));
    assert_eq!((l7(req, "op"), l7(req, "file"), l7(req, "mode")), (&json!(op), &json!(file), &json!("octet")));
    let data: Vec<&ConnectionRecord> =
        all.iter().filter(|((c, s), _)| *c == cport && *s != PORT).map(|(_, r)| r).collect();
    assert_eq!(data.len(), 1, "one transfer flow from {cport}: {data:#?}");
    let d = data[0];
    assert_eq!(d.app, "tftp", "{d:?}");
    // The server sent the flow's first packet; the TFTP client is still the client.
    assert_eq!((d.client_ip.as_str(), d.client_port, d.server_ip.as_str()), (C4, cport, S4), "{d:?}");
    assert_eq!(l7(d, "request_flow"), &json!(format!("{C4}:{cport} -> {S4}:{PORT}")));
    assert_eq!((l7(d, "op"), l7(d, "file"), l7(d, "mode")), (&json!(op), &json!(file), &json!("octet")));
    if let Some(n) = bytes {
        assert_eq!(l7(d, "data_bytes"), &json!(n), "{d:?}");
        assert_eq!(l7(d, "data_blocks"), &json!(n / 512 + 1), "{d:?}");
        assert_eq!(l7(d, "completed"), &json!(true), "{d:?}");
        assert_eq!(l7(d, "retransmitted"), &json!(0), "{d:?}");
        // DATA goes from the sender of the file to the receiver.
        let (sender_bytes, receiver_bytes) =
            if op == "read" { (d.bytes_to_client, d.bytes_to_server) } else { (d.bytes_to_server, d.bytes_to_client) };
        assert!(sender_bytes > n && receiver_bytes < n / 4, "{d:?}");
    }
    d.clone()
}

fn transfer_done(all: &[ConnectionRecord], cport: u16, bytes: Option<u64>) -> bool {
    // The request's own record may come from another worker, in another report batch.
    let request_seen = all.iter().any(|r| r.client_port == cport && r.server_port == PORT);
    request_seen && all.iter().any(|r| {
        r.client_port == cport
            && r.server_port != PORT
            && r.l7.as_ref().is_some_and(|l| match bytes {
                Some(n) => l["data_bytes"] == n && l["completed"] == true,
                None => l.get("error").is_some(),
            })
    })
}

#[test]
fn tftp_get_put_and_error_are_joined_to_their_requests() {
    let mut t = Topo::new(ClientLink::Veth);
    let (root, _) = start_tftpd(&mut t, "50000:50100");
    let size = 100_000u64;
    write_blob(&root.join("boot.img"), size as usize);
    let up = t.path("upload.bin");
    write_blob(&up, 30_000);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    std::thread::sleep(Duration::from_millis(1000));

    let got = t.path("got.img");
    tftp(&t, 41001, &["get", "boot.img", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(root.join("boot.img")).unwrap(), "download differs");
    tftp(&t, 41002, &["put", up.to_str().unwrap(), "up.bin"]);
    // tftpd may still be writing when the client exits.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(root.join("up.bin")).unwrap(), std::fs::read(&up).unwrap(), "upload differs");
    // A missing file: tftp-hpa reports the error and exits 0 or 1 depending on the version.
    let _ = t.exec(
        &t.c.clone(),
        &[
            "timeout",
            "20",
            "tftp",
            "-4",
            "-m",
            "binary",
            "-R",
            "41003:41003",
            S4,
            "6969",
            "-c",
            "get",
            "missing.txt",
            t.path("none").to_str().unwrap(),
        ],
    );

    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        transfer_done(all, 41001, Some(size))
            && transfer_done(all, 41002, Some(30_000))
            && transfer_done(all, 41003, None)
    });
    let all = latest(&records);
    check_transfer(&all, 41001, "read", "boot.img", Some(size));
    check_transfer(&all, 41002, "write", "up.bin", Some(30_000));
    let e = check_transfer(&all, 41003, "read", "missing.txt", None);
    assert_eq!(l7(&e, "error_code"), &json!(1), "{e:?}");
    assert_eq!(l7(&e, "completed"), &json!(false));
    // Three requests registered, three transfers joined, nothing dropped.
    match t.client().request(&warden_control::Request::Status {}).unwrap() {
        warden_control::Reply::Status(st) => {
            let rf = st.related_flows;
            assert_eq!((rf.registered, rf.joined, rf.replaced, rf.failed), (3, 3, 0, 0), "{rf:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Worker owning a UDP flow of the first inline pair (zone 0) among two: `spread % 2`.
fn owner(cport: u16, sport: u16) -> u32 {
    FlowKey::new(0, 17, Addr::v4([198, 18, 0, 1]), cport, Addr::v4([198, 18, 0, 2]), sport).0.spread() % 2
}

#[test]
fn tftp_transfer_owned_by_another_worker_is_joined() {
    let mut t = Topo::with_queues(ClientLink::Veth, 2);
    let size = 20_000u64;
    // The test picks each transfer's 5-tuple (client port, and the one transfer port tftpd may
    // use) so that one transfer is owned by the other worker than its request and one by the
    // same worker.
    let (c_cross, c_same) = (42001u16, 42002u16);
    let ports = 50200u16..50300;
    let d_cross = ports.clone().find(|d| owner(c_cross, PORT) != owner(c_cross, *d)).unwrap();
    let d_same = ports.clone().find(|d| owner(c_same, PORT) == owner(c_same, *d)).unwrap();
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b), "--workers", "2"]);
    let mut ctl = t.subscribed();
    std::thread::sleep(Duration::from_millis(1000));
    for (c, d) in [(c_cross, d_cross), (c_same, d_same)] {
        let (root, pid) = start_tftpd(&mut t, &format!("{d}:{d}"));
        write_blob(&root.join("a.bin"), size as usize);
        let got = t.path(&format!("got{c}"));
        tftp(&t, c, &["get", "a.bin", got.to_str().unwrap()]);
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(root.join("a.bin")).unwrap());
        t.signal(pid, nix::sys::signal::Signal::SIGTERM);
        assert!(t.wait_exit(pid, Duration::from_secs(5)).is_some(), "in.tftpd did not stop");
    }
    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        transfer_done(all, c_cross, Some(size)) && transfer_done(all, c_same, Some(size))
    });
    let all = latest(&records);
    for (c, d) in [(c_cross, d_cross), (c_same, d_same)] {
        let r = check_transfer(&all, c, "read", "a.bin", Some(size));
        assert_eq!(r.server_port, d);
    }
}
