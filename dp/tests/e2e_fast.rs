//! The XDP fast path for decided flows (issue 16) end to end: the program's decisions on test
//! frames (`BPF_PROG_TEST_RUN`), a long HTTP download that moves to the fast path with a record
//! as exact as the server's own capture, a policy change to deny in the middle of it that
//! stops it, and the same download with the fast path off. Root only; everything in
//! namespaces made here, addresses from 198.18.0.0/15.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use warden_control::{ConnectionRecord, Reply, Request};

/// The download's size (bytes): tens of MB, so most of its frames come after the response
/// head, when the session can move to the fast path.
const BLOB: usize = 40_000_000;

/// In-kernel forwarding into a veth needs NAPI on the receiving end: GRO on (as for
/// fail_open), else Warden keeps the fast path off for that direction.
fn gro_on(t: &Topo) {
    for (ns, dev) in [(&t.c, &t.c0), (&t.s, &t.s0)] {
        sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"]);
    }
}

/// python's http.server on 8080 in the server namespace, serving `blob` of [`BLOB`] bytes.
fn serve_blob(t: &mut Topo) {
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("blob"), BLOB);
    let s = t.s.clone();
    t.spawn(&s, &["python3", "-m", "http.server", "8080", "--bind", S4, "-d", www.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", 8080);
}

/// Starts curl in the client namespace downloading the blob at `rate` (curl's
/// `--limit-rate`), writing the bytes received to a file; returns the child.
fn curl(t: &Topo, rate: &str) -> std::process::Child {
    let out = t.path("got");
    Command::new("ip")
        .args(["netns", "exec", &t.c, "curl", "-s", "--max-time", "60", "--limit-rate", rate, "-o"])
        .arg(&out)
        .arg(format!("http://{S4}:8080/blob"))
        .spawn()
        .unwrap()
}

/// The final record of the download (server port 8080), collected from the report stream.
fn final_record(client: &mut warden_control::Client) -> ConnectionRecord {
    let recs = collect_reports(client, Duration::from_secs(30), |r| r.iter().any(|c| c.server_port == 8080 && c.closed));
    recs.into_iter().find(|c| c.server_port == 8080 && c.closed).expect("a final record of the download")
}

/// The worker counters of the fast path, summed over workers.
fn fast_counters(t: &Topo) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => {
            for w in c.workers {
                for (k, v) in w.fast_path {
                    *out.entry(k).or_insert(0) += v;
                }
            }
        }
        other => panic!("{other:?}"),
    }
    out
}

/// Downloads the blob through Warden (`config` appended to its configuration) while the
/// server's interface is captured; returns Warden's final record and the record `warden
/// replay` makes of the server's capture of the same connection (the reference: every frame
/// the server sent and received, counted by another program).
fn download(config: &str) -> (ConnectionRecord, ConnectionRecord, std::collections::BTreeMap<String, u64>) {
    let mut t = Topo::new(ClientLink::Veth);
    gro_on(&t);
    serve_blob(&mut t);
    let pair = format!("{}:{}", t.a, t.b);
    t.start_warden_config(config, &["--inline", &pair]);
    let mut sub = t.subscribed();
    let cap = t.capture_server("server.pcap", "tcp port 8080");
    let mut c = curl(&t, "25M");
    assert!(c.wait().unwrap().success(), "the download failed: {}", t.warden_log());
    assert_eq!(std::fs::metadata(t.path("got")).unwrap().len(), BLOB as u64);
    let rec = final_record(&mut sub);
    let counters = fast_counters(&t);
    // The capture ends after the connection's last frame (the final record came after it).
    std::thread::sleep(Duration::from_millis(300));
    let (server, _) = t.replay_capture(cap);
    let reference = server
        .into_iter()
        .find(|r| r.server_port == 8080 && r.client_port == rec.client_port)
        .expect("the connection in the server's capture");
    (rec, reference, counters)
}

#[test]
fn a_long_download_moves_to_the_fast_path_and_its_record_matches_the_server() {
    require_root();
    let (rec, server, counters) = download("");
    assert_eq!(rec.app, "http");
    assert!(rec.fast_path, "{rec:?}");
    let frames = rec.packets_to_server + rec.packets_to_client;
    let fast = rec.fast_path_frames.unwrap_or(0);
    assert!(fast * 10 >= frames * 9, "most frames in the kernel: {fast} of {frames}");
    assert!(counters.get("frames").copied().unwrap_or(0) >= fast, "{counters:?}");
    assert!(counters.get("offloaded").copied().unwrap_or(0) >= 1, "{counters:?}");
    // Exact: what the server's interface carried, frame for frame and byte for byte.
    assert_eq!(
        (rec.packets_to_client, rec.bytes_to_client, rec.packets_to_server, rec.bytes_to_server),
        (server.packets_to_client, server.bytes_to_client, server.packets_to_server, server.bytes_to_server),
        "Warden's record vs the server's capture"
    );
    assert!(rec.bytes_to_client > BLOB as u64);
    assert_eq!(rec.end_reason.as_deref(), Some("fin"));
}

#[test]
fn with_the_fast_path_off_the_record_is_the_same() {
    require_root();
    let (rec, server, counters) = download("[dataplane]\nfast_path = false\n");
    assert!(!rec.fast_path && rec.fast_path_frames.is_none(), "{rec:?}");
    assert!(counters.is_empty(), "no fast path counters when off: {counters:?}");
    assert_eq!(
        (rec.packets_to_client, rec.bytes_to_client, rec.packets_to_server, rec.bytes_to_server),
        (server.packets_to_client, server.bytes_to_client, server.packets_to_server, server.bytes_to_server),
    );
    assert_eq!(rec.app, "http");
}

#[test]
fn a_policy_change_to_deny_stops_an_offloaded_download() {
    require_root();
    let mut t = Topo::new(ClientLink::Veth);
    gro_on(&t);
    serve_blob(&mut t);
    let workloads = format!(
        "[[workload]]\nid = \"cli\"\nips = [\"{C4}\"]\nmode = \"protect\"\n\n[[workload]]\nid = \"srv\"\nips = [\"{S4}\"]\nmode = \"protect\"\n\n"
    );
    let allow = "[[rule]]\nid = 10\nfrom = \"cli\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\naction = \"allow\"\n";
    t.start_warden_policy(&format!("{workloads}{allow}"));
    let mut sub = t.subscribed();
    let mut c = curl(&t, "4M");
    // Wait until the download is on the fast path.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fast_counters(&t).get("active").copied().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the download never moved to the fast path: {}", t.warden_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = std::fs::metadata(t.path("got")).map(|m| m.len()).unwrap_or(0);
    // Deny it: the same workloads without the rule (protect mode denies by default).
    match t.client().request(&Request::PolicyApply { text: workloads.clone() }).unwrap() {
        Reply::Done(_) => {}
        other => panic!("{other:?}"),
    }
    let status = c.wait().unwrap();
    let got = std::fs::metadata(t.path("got")).map(|m| m.len()).unwrap_or(0);
    assert!(!status.success(), "the download went on after the deny ({got} bytes)");
    assert!(got < BLOB as u64, "received all {got} bytes");
    assert!(got >= before);
    let counters = fast_counters(&t);
    assert!(counters.get("removed_policy").copied().unwrap_or(0) >= 1, "{counters:?}");
    assert_eq!(counters.get("active").copied(), Some(0), "{counters:?}");
    let rec = final_record(&mut sub);
    assert_eq!(rec.verdict.as_deref(), Some("denied"), "{rec:?}");
    assert!(rec.fast_path && rec.packets_dropped_to_client + rec.packets_dropped_to_server > 0, "{rec:?}");
}

/// The program's decisions on test frames (`BPF_PROG_TEST_RUN`) against the Rust rule
/// (`warden_xdp::fast_admits`): with Warden's socket bound, a frame whose entry admits it is
/// redirected to the peer and counted in the entry and the interface's fast counters; a SYN,
/// FIN, RST, data on an ack-only entry, a frame from the other side, IP options: to the
/// socket. Without the interface flag, nothing is looked up.
#[test]
fn xdp_program_fast_paths_only_what_its_entries_admit() {
    use warden_dp::xsk::{Group, SideSpec};
    use warden_xdp::{action, fast_admits, AttachMode, FastMode, XdpProgram};
    require_root();
    let id = format!("wf{:x}", std::process::id() & 0xffff);
    let (ns, x, y) = (format!("{id}-n"), format!("{id}x"), format!("{id}y"));
    sh(&["ip", "netns", "add", &ns]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _ns = Ns(ns.clone());
    sh(&["ip", "-n", &ns, "link", "add", &x, "type", "veth", "peer", "name", &y]);
    for d in [&x, &y] {
        sh(&["ip", "-n", &ns, "link", "set", d, "up"]);
    }
    let r = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let xdp = XdpProgram::load_with_fast(AttachMode::Native, 8).unwrap();
        let ix = nix::net::if_::if_nametoindex(x.as_str()).unwrap();
        let iy = nix::net::if_::if_nametoindex(y.as_str()).unwrap();
        let sx = SideSpec { name: x.clone(), ifindex: ix, slot: 1, queues: vec![0] };
        let sy = SideSpec { name: y.clone(), ifindex: iy, slot: 2, queues: vec![0] };
        let group = Group::open([&sx, &sy], 256, 64).unwrap();
        for p in &group.ports {
            xdp.register_xsk(u32::from(p.slot), p.queue, p.fd()).unwrap();
        }
        xdp.configure_iface(ix, 1, iy, warden_xdp::FailMode::Open, 0).unwrap();
        xdp.configure_iface(iy, 2, ix, warden_xdp::FailMode::Open, 0).unwrap();
        let table = xdp.fast_table().unwrap();
        let client = tcp4(0x10, 1000, 0);
        let (mut key, _) = fast_admits(&client, FastMode::All).unwrap();
        key.slot = 1;
        table.insert(&key, FastMode::AckOnly, None).unwrap();
        let run = |ifindex: u32, frame: &[u8]| xdp.test_run(ifindex, 0, frame).unwrap();
        // The flag is off: not even looked up.
        assert_eq!(run(ix, &client), action::REDIRECT);
        assert_eq!(table.read(&key).unwrap().unwrap().packets, 0);
        xdp.set_fast_path(ix, true).unwrap();
        xdp.set_fast_path(iy, true).unwrap();
        let cases: [(&str, Vec<u8>, FastMode); 6] = [
            ("pure ACK", tcp4(0x10, 1000, 0), FastMode::AckOnly),
            ("data on ack-only", tcp4(0x18, 1000, 100), FastMode::AckOnly),
            ("FIN", tcp4(0x11, 1000, 0), FastMode::AckOnly),
            ("RST", tcp4(0x04, 1000, 0), FastMode::AckOnly),
            ("in range", tcp4(0x10, 5000, 1000), FastMode::Range { lo: 5000, hi: 6000 }),
            ("past the range", tcp4(0x10, 5500, 1000), FastMode::Range { lo: 5000, hi: 6000 }),
        ];
        let mut fast = 0;
        for (what, frame, mode) in &cases {
            table.insert(&key, *mode, None).unwrap();
            let before = xdp.iface_stats(1).unwrap();
            let expected = fast_admits(frame, *mode).is_some_and(|(_, ok)| ok);
            assert_eq!(run(ix, frame), action::REDIRECT, "{what}: redirected either way (peer or socket)");
            let after = xdp.iface_stats(1).unwrap();
            let took = after.fast_frames - before.fast_frames;
            assert_eq!(took == 1, expected, "{what}: the program and fast_admits disagree");
            assert_eq!(after.to_xsk_frames - before.to_xsk_frames, 1 - took, "{what}");
            if expected {
                fast += 1;
                let c = table.read(&key).unwrap().unwrap();
                assert_eq!((c.packets, c.bytes), (1, frame.len() as u64), "{what}: counted in its entry");
                assert!(c.last_ns > 0);
            }
        }
        assert_eq!(fast, 2);
        // The same flow arriving on the other side (spoofed): no entry for that slot.
        table.insert(&key, FastMode::All, None).unwrap();
        let before = xdp.iface_stats(2).unwrap();
        run(iy, &client);
        assert_eq!(xdp.iface_stats(2).unwrap().fast_frames, before.fast_frames, "wrong side");
        // An entry limited to a source MAC (an attachment's address over its bridge): the
        // workload's MAC is forwarded, another (the host claiming its address) handed up.
        let mac = [0x02, 0, 0, 0, 0, 1];
        table.insert(&key, FastMode::All, Some(mac)).unwrap();
        let mut other = client.clone();
        other[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        for (what, frame, fast) in [("its MAC", &client, 1), ("another MAC", &other, 0)] {
            assert_eq!(&client[6..12], &mac, "tcp4's source MAC");
            let before = xdp.iface_stats(1).unwrap();
            run(ix, frame);
            let after = xdp.iface_stats(1).unwrap();
            assert_eq!((after.fast_frames - before.fast_frames, after.to_xsk_frames - before.to_xsk_frames), (fast, 1 - fast), "{what}");
        }
        assert_eq!(table.read(&key).unwrap().unwrap().packets, 1);
        table.insert(&key, FastMode::All, None).unwrap();
        // IP options are handed up whatever the entry says.
        let mut opts = client.clone();
        opts[14] = 0x46;
        let before = xdp.iface_stats(1).unwrap();
        run(ix, &opts);
        assert_eq!(xdp.iface_stats(1).unwrap().fast_frames, before.fast_frames, "IP options");
        let c = table.remove(&key).unwrap().unwrap();
        assert_eq!(c.packets, 0);
        assert!(table.read(&key).unwrap().is_none());
        // Warden gone: fail_open redirects without any fast path counting.
        table.insert(&key, FastMode::All, None).unwrap();
        drop(group);
        let before = xdp.iface_stats(1).unwrap();
        assert_eq!(run(ix, &client), action::REDIRECT);
        let after = xdp.iface_stats(1).unwrap();
        assert_eq!((after.fast_frames, after.fail_open_frames), (before.fast_frames, before.fail_open_frames + 1));
    })
    .join();
    assert!(r.is_ok(), "see the panic above");
}

/// An Ethernet + IPv4 + TCP frame 198.18.0.1:40000 -> 198.18.0.2:80 with `flags`, sequence
/// number `seq` and `payload` bytes.
fn tcp4(flags: u8, seq: u32, payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let tot = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0x10, 0, 0, 0, 0, 0]);
    f.resize(f.len() + payload, 0xab);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}
