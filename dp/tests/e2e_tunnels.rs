//! Tunnels through Warden inline: a VXLAN tunnel (`ip link add ... type vxlan`) and a keyed GRE
//! tunnel between the client and server namespaces carry HTTP (python's http.server) and Redis
//! (redis-server). Warden sees only the outer flows on its wire; the inner sessions must be
//! reported with their `tunnel` object, and a protect policy written on the inner addresses
//! must let HTTP through and block Redis inside either tunnel. Root only (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::ConnectionRecord;

/// Inner addresses: VXLAN 198.19.42.0/24, GRE 198.19.47.0/24 (.1 client side, .2 server).
const VX_C: &str = "198.19.42.1";
const VX_S: &str = "198.19.42.2";
const GRE_C: &str = "198.19.47.1";
const GRE_S: &str = "198.19.47.2";
const VNI: u32 = 42;
const GRE_KEY: u32 = 7;

/// Creates the two tunnels in the client and server namespaces over the test's pair: VXLAN
/// with the kernel's driver; GRE with the kernel's when it has `ip_gre`, else with the
/// user-space endpoint `fixtures/gre_endpoint.py` (same RFC 2890 keyed frames on the wire; the
/// test machines' kernels are built without GRE).
fn tunnels(t: &mut Topo) {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gre_endpoint.py");
    for (ns, dev, local, remote, vx, gre, peer) in [
        (t.c.clone(), t.c0.clone(), C4, S4, VX_C, GRE_C, GRE_S),
        (t.s.clone(), t.s0.clone(), S4, C4, VX_S, GRE_S, GRE_C),
    ] {
        let vni = VNI.to_string();
        let key = GRE_KEY.to_string();
        sh(&["ip", "-n", &ns, "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", local, "remote", remote, "dstport", "4789", "dev", &dev]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("{vx}/24"), "dev", "vx0"]);
        if try_sh(&["ip", "-n", &ns, "link", "add", "gre0", "type", "gre", "local", local, "remote", remote, "key", &key]) {
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{gre}/24"), "dev", "gre0"]);
        } else {
            let mut child = std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "python3", "-u", fixture, "gre0", local, remote, &key])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            use std::io::BufRead;
            std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "GRE endpoint did not start");
            t.adopt(child);
            sh(&["ip", "-n", &ns, "addr", "add", gre, "peer", &format!("{peer}/32"), "dev", "gre0"]);
            // Room for the 24 bytes of IPv4 and GRE headers inside the veth's 1500.
            sh(&["ip", "-n", &ns, "link", "set", "gre0", "mtu", "1400"]);
        }
        for d in ["vx0", "gre0"] {
            sh(&["ip", "-n", &ns, "link", "set", d, "up"]);
            // Checksums complete on the wire, as on the end hosts' veths (`Topo`).
            try_sh(&["ip", "netns", "exec", &ns, "ethtool", "-K", d, "tx", "off", "tso", "off", "gso", "off"]);
        }
    }
}

/// Protect policy: the inner server addresses take HTTP on 8080 and nothing else; the tunnel
/// endpoints (the namespaces' outer addresses) may exchange VXLAN and GRE.
fn policy() -> String {
    format!(
        r#"
[[workload]]
id = "inner-srv"
ips = ["{VX_S}", "{GRE_S}"]
mode = "protect"

[[workload]]
id = "vteps"
ips = ["{C4}", "{S4}"]
mode = "protect"

[[rule]]
id = 1
from = "any"
to = "inner-srv"
ip_proto = "tcp"
ports = ["8080"]
action = "allow"

[[rule]]
id = 2
from = "vteps"
to = "vteps"
ip_proto = "udp"
ports = ["4789"]
action = "allow"

[[rule]]
id = 3
from = "vteps"
to = "vteps"
ip_proto = "47"
action = "allow"
"#
    )
}

fn wait_listen(t: &Topo, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.exec(&t.s, &["sh", "-c", &format!("ss -ltnH | grep -q ':{port} '")]).status.success() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The inner session to `server`:`port`, once reported.
fn inner_record(t: &Topo, server: &str, port: u16) -> ConnectionRecord {
    let mut client = t.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = sessions(&mut client);
        if let Some(r) = all.iter().find(|r| r.server_ip == server && r.server_port == port) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no session to {server}:{port} in {all:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vxlan_and_gre_inner_flows_are_reported_and_policed() {
    let mut t = Topo::new(ClientLink::Veth);
    tunnels(&mut t);
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("index.html"), 20_000);
    let s = t.s.clone();
    t.spawn(&s, &["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "-d", www.to_str().unwrap()]);
    let dir = t.path("");
    t.spawn(&s, &["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir.to_str().unwrap()]);
    wait_listen(&t, 8080);
    wait_listen(&t, 6379);
    t.start_warden_policy(&policy());

    for (server, kind, id) in [(VX_S, "vxlan", VNI), (GRE_S, "gre", GRE_KEY)] {
        // HTTP inside the tunnel: allowed, complete.
        let out = t.exec(&t.c, &["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", &format!("http://{server}:8080/index.html")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "20000", "HTTP over {kind}: {}", String::from_utf8_lossy(&out.stderr));
        let r = inner_record(&t, server, 8080);
        assert_eq!(r.app, "http", "{r:#?}");
        assert_eq!(r.verdict.as_deref(), Some("allowed"), "{r:#?}");
        let tun = r.tunnel.as_ref().unwrap_or_else(|| panic!("no tunnel object: {r:#?}"));
        assert_eq!((tun.kind.as_str(), tun.id, tun.outer_client.as_str(), tun.outer_server.as_str()), (kind, id, C4, S4));
        assert!(r.bytes_to_client > 20_000, "{r:#?}");

        // Redis inside the same tunnel: denied from its first frame; the server never answers.
        let out = t.exec(&t.c, &["timeout", "5", "redis-cli", "-h", server, "-p", "6379", "PING"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("PONG"), "Redis over {kind} got through");
        let r = inner_record(&t, server, 6379);
        assert_eq!(r.verdict.as_deref(), Some("denied"), "{r:#?}");
        assert!(r.packets_dropped_to_server >= 1, "{r:#?}");
        assert_eq!(r.tunnel.as_ref().map(|t| t.kind.as_str()), Some(kind));
    }

    // The outer flows are sessions too, marked as carriers.
    let all = sessions(&mut t.client());
    for kind in ["vxlan", "gre"] {
        assert!(all.iter().any(|r| r.tunnel_carrier.as_deref() == Some(kind) && (r.server_ip == S4 || r.server_ip == C4)), "no {kind} carrier in {all:#?}");
    }
    let workers = match t.client().request(&warden_control::Request::Counters {}).unwrap() {
        warden_control::Reply::Counters(c) => c.workers,
        other => panic!("{other:?}"),
    };
    for kind in ["vxlan", "gre"] {
        let n: u64 = workers.iter().map(|w| w.tunnels.get(kind).copied().unwrap_or(0)).sum();
        assert!(n > 10, "{kind} frames decapsulated: {n} ({workers:#?})");
    }
}
