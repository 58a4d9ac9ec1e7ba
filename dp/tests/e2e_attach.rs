//! Attach and detach end to end (issue 12): workloads on a Linux bridge (as CNI `bridge` and
//! podman build them) taken over by `attach` and given back by `detach`, a VM-like tap, a
//! Warden killed while attached, interfaces that go away and come back, and real Podman
//! containers.
//!
//! Topology (everything in namespaces the test creates; Warden runs in the bridge's namespace,
//! which plays the host):
//!
//! `c ns` (198.18.0.1) --veth `hc`-- [bridge `br` 198.18.0.254 in `m ns`] --veth `hs`-- `s ns` (198.18.0.2)
//!
//! After `attach s`: `hs` is off the bridge, inline with Warden's `wdn…`, whose peer `wdb…` is
//! the bridge port in its place.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{collect_reports, exec_in, require_root, sh, spawn_in, try_sh, wait_for_socket, warden_run, write_blob};
use warden_control::{AttachInfo, AttachSpec, Client, ConnectionRecord, Reply, Request};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const C4: &str = "198.18.0.1";
const S4: &str = "198.18.0.2";
const T4: &str = "198.18.0.3";
const HOST4: &str = "198.18.0.254";

/// The bridged topology and this test's Warden.
struct Bridged {
    id: String,
    m: String,
    c: String,
    s: String,
    br: String,
    hc: String,
    hs: String,
    tmp: std::path::PathBuf,
    children: Vec<Child>,
    warden: Option<u32>,
}

impl Bridged {
    fn new() -> Bridged {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("a{:x}{n}", std::process::id() & 0xffff);
        let tmp = std::env::temp_dir().join(format!("warden-e2e-{id}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let b = Bridged {
            m: format!("{id}-m"),
            c: format!("{id}-c"),
            s: format!("{id}-s"),
            br: format!("{id}br"),
            hc: format!("{id}hc"),
            hs: format!("{id}hs"),
            id,
            tmp,
            children: Vec::new(),
            warden: None,
        };
        for ns in [&b.m, &b.c, &b.s] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &b.m, "link", "add", &b.br, "type", "bridge"]);
        sh(&["ip", "-n", &b.m, "addr", "add", &format!("{HOST4}/24"), "dev", &b.br]);
        sh(&["ip", "-n", &b.m, "link", "set", &b.br, "up"]);
        for (ns, h, v4) in [(b.c.clone(), b.hc.clone(), C4), (b.s.clone(), b.hs.clone(), S4)] {
            b.workload_link(&ns, &h, v4);
        }
        b
    }

    /// A veth `eth0` in `ns` with `v4`, its peer `h` on the bridge (as CNI `bridge` does).
    fn workload_link(&self, ns: &str, h: &str, v4: &str) {
        sh(&["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", h, "netns", &self.m]);
        sh(&["ip", "-n", ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &self.m, "link", "set", h, "master", &self.br]);
        sh(&["ip", "-n", &self.m, "link", "set", h, "up"]);
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.join(name)
    }

    fn socket(&self) -> std::path::PathBuf {
        self.path("warden.sock")
    }

    fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        exec_in(ns, args)
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> u32 {
        let child = spawn_in(ns, args);
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts Warden (no inline pairs) in the bridge's namespace with its attach state under
    /// the test's directory; waits for its socket.
    fn start_warden(&mut self, extra_config: &str) -> u32 {
        let cfg = self.path("warden.toml");
        let state = self.path("attach-state");
        std::fs::write(
            &cfg,
            format!(
                "[sessions]\ntcp_closed_timeout = 1\n[attach]\nstate_dir = {:?}\nruntimes = []\n{extra_config}",
                state.to_str().unwrap()
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("warden.log")).unwrap();
        let child = warden_run(Some(&self.m), &cfg, &self.socket(), log).args(["--workers", "1"]).spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        self.warden = Some(pid);
        let (sock, log) = (self.socket(), self.path("warden.log"));
        wait_for_socket(&sock, self.children.last_mut().unwrap(), &log);
        pid
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("warden.log")).unwrap_or_default()
    }

    fn client(&self) -> Client {
        Client::connect(self.socket()).unwrap()
    }

    fn kill_warden(&mut self, sig: nix::sys::signal::Signal) {
        let pid = self.warden.take().expect("warden runs");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        let idx = self.children.iter().position(|c| c.id() == pid).unwrap();
        let mut c = self.children.remove(idx);
        let _ = c.wait();
    }

    fn attach(&self, spec: AttachSpec) -> AttachInfo {
        match self.client().request(&Request::Attach { spec: spec.clone() }) {
            Ok(Reply::Attached(i)) => i,
            other => panic!("attach {spec:?}: {other:?}\n{}", self.log()),
        }
    }

    fn attach_s(&self, mode: &str) -> AttachInfo {
        self.attach(AttachSpec {
            target: self.s.clone(),
            kind: Some("netns".into()),
            mode: Some(mode.into()),
            name: Some("web".into()),
            ..Default::default()
        })
    }

    fn detach(&self, name: &str) -> String {
        match self.client().request(&Request::Detach { name: name.into() }) {
            Ok(Reply::Done(m)) => m,
            other => panic!("detach {name}: {other:?}\n{}", self.log()),
        }
    }

    fn attachments(&self) -> Vec<AttachInfo> {
        match self.client().request(&Request::ListAttachments {}) {
            Ok(Reply::Attachments(v)) => v,
            other => panic!("list_attachments: {other:?}"),
        }
    }

    /// Waits until attachment `name` is in `state`.
    fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> AttachInfo {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.attachments();
            if let Some(a) = v.iter().find(|a| a.name == name && a.state.as_deref() == Some(state)) {
                return a.clone();
            }
            assert!(Instant::now() < deadline, "{name} not {state}: {v:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ping(&self, from: &str, dst: &str) -> bool {
        self.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "1", dst]).status.success()
    }

    /// Waits up to `secs` for a ping from `from` to `dst` to get through.
    fn ping_within(&self, from: &str, dst: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.exec(from, &["ping", "-c", "1", "-W", "1", dst]).status.success() {
                return true;
            }
        }
        false
    }

    /// python `http.server` in `s` on port 8080, serving 20 kB.
    fn http_server(&mut self) {
        let www = self.path("www");
        std::fs::create_dir_all(&www).unwrap();
        write_blob(&www.join("index.html"), 20_000);
        let s = self.s.clone();
        self.spawn(&s, &["python3", "-m", "http.server", "8080", "--bind", S4, "-d", www.to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.exec(&self.s, &["sh", "-c", "ss -ltnH | grep -q ':8080 '"]).status.success() {
            assert!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// curl from `ns` to the server; the HTTP status (`000`: no answer).
    fn curl(&self, ns: &str) -> String {
        let out = self.exec(
            ns,
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", &format!("http://{S4}:8080/index.html")],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// What `detach` must give back: the host interface's settings as `ip -d` shows them
    /// (without the port's run-time state: ids, timers, STP state) and the offload features of
    /// both veth ends.
    fn snapshot(&self, ns_inner: &str, inner: &str, host: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let j = self.exec(&self.m, &["ip", "-j", "-d", "link", "show", "dev", host]);
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        let l = &v[0];
        for k in ["ifindex", "mtu", "master", "address", "flags", "link_index", "link_netnsid", "promiscuity"] {
            out.insert(format!("host.{k}"), l[k].to_string());
        }
        let skip = ["state", "id", "no", "designated_port", "designated_cost", "bridge_id", "root_id", "hold_timer",
            "message_age_timer", "forward_delay_timer", "topology_change_ack", "config_pending"];
        if let Some(m) = l["linkinfo"]["info_slave_data"].as_object() {
            for (k, v) in m.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
                out.insert(format!("port.{k}"), v.to_string());
            }
        }
        let vl = self.exec(&self.m, &["bridge", "-j", "vlan", "show", "dev", host]);
        out.insert("vlans".into(), String::from_utf8_lossy(&vl.stdout).trim().to_string());
        for (ns, dev, tag) in [(self.m.as_str(), host, "host"), (ns_inner, inner, "inner")] {
            let k = self.exec(ns, &["ethtool", "-k", dev]);
            assert!(k.status.success());
            for line in String::from_utf8_lossy(&k.stdout).lines().skip(1) {
                out.insert(format!("{tag}.ethtool.{}", line.split(':').next().unwrap_or("").trim()), line.to_string());
            }
        }
        out
    }

    fn master(&self, dev: &str) -> Option<String> {
        let j = self.exec(&self.m, &["ip", "-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).ok()?;
        v[0]["master"].as_str().map(str::to_string)
    }

    /// Interfaces of the bridge's namespace whose name starts with `wd` (Warden's).
    fn warden_links(&self) -> Vec<String> {
        let j = self.exec(&self.m, &["ip", "-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("wd"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.c, &self.s, &self.m] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn subscribed(b: &Bridged) -> Client {
    let mut c = b.client();
    c.subscribe().unwrap();
    c
}

fn has(recs: &[ConnectionRecord], client: &str, server: &str, proto: u8) -> bool {
    recs.iter().any(|r| r.client_ip == client && r.server_ip == server && r.ip_proto == proto)
}

#[test]
fn bridge_attach_records_protect_and_exact_restore() {
    let mut b = Bridged::new();
    b.http_server();
    assert_eq!(b.curl(&b.c), "200", "the bridge works before Warden");
    let before = b.snapshot(&b.s, "eth0", &b.hs);
    b.start_warden("");
    let info = b.attach_s("learn");
    assert_eq!(info.host_iface, b.hs);
    assert_eq!(info.bridge.as_deref(), Some(b.br.as_str()));
    assert_eq!(info.workload.as_deref(), Some("web"));
    assert_eq!(info.ips, vec![S4.to_string()]);
    let far = info.warden_iface.clone().unwrap();
    assert_eq!(b.master(&b.hs), None, "the host interface is off the bridge");
    assert_eq!(b.master(&far).as_deref(), Some(b.br.as_str()), "Warden's far end is on the bridge");

    // Traffic from the other workload and from the host (the bridge's address) goes through
    // Warden and is reported with the attachment's workload.
    let mut sub = subscribed(&b);
    assert_eq!(b.curl(&b.c), "200");
    assert!(b.ping(&b.m, S4), "host -> attached workload");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, C4, S4, 6) && has(r, HOST4, S4, 1));
    let http = recs.iter().find(|r| r.client_ip == C4 && r.server_ip == S4 && r.ip_proto == 6).unwrap_or_else(|| panic!("no record of c -> s: {recs:?}"));
    assert_eq!(http.server_workload.as_deref(), Some("web"), "{http:?}");
    assert!(http.iface.starts_with("wdn"), "the client side is Warden's near end: {}", http.iface);
    assert!(has(&recs, HOST4, S4, 1), "no record of host -> s: {recs:?}");

    // Protect mode on the attachment's workload: no rule allows anything, so it is cut off.
    match b.client().request(&Request::SetMode { id: "web".into(), mode: "protect".into() }) {
        Ok(Reply::Done(_)) => {}
        other => panic!("set_mode: {other:?}"),
    }
    assert_eq!(b.attachments()[0].mode, "protect");
    assert_eq!(b.curl(&b.c), "000", "protect mode denies c -> s");
    assert!(!b.ping(&b.m, S4), "protect mode denies host -> s");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| {
        r.iter().any(|x| x.client_ip == C4 && x.server_ip == S4 && x.verdict.as_deref() == Some("denied"))
    });
    assert!(recs.iter().any(|x| x.client_ip == C4 && x.verdict.as_deref() == Some("denied")), "{recs:?}");

    let msg = b.detach("web");
    assert!(msg.contains("detached"), "{msg}");
    assert!(b.warden_links().is_empty(), "Warden's interfaces are gone: {:?}", b.warden_links());
    assert_eq!(b.attachments(), vec![]);
    let after = b.snapshot(&b.s, "eth0", &b.hs);
    assert_eq!(before, after, "detach restores the host interface's plumbing and both ends' offloads");
    assert_eq!(b.curl(&b.c), "200", "connectivity after detach");
    // The implicit workload left the policy with the attachment.
    match b.client().request(&Request::PolicyShow {}) {
        Ok(Reply::PolicyText(t)) => assert!(!t.contains("web"), "{t}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn routed_and_unknown_targets_are_refused_unchanged() {
    let mut b = Bridged::new();
    // A routed host veth (no bridge): as Calico's.
    let (ns, h) = (format!("{}-r", b.id), format!("{}hr", b.id));
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &h, "netns", &b.m]);
    b.start_warden("");
    let spec = AttachSpec { target: ns.clone(), kind: Some("netns".into()), ..Default::default() };
    let r = b.client().request(&Request::Attach { spec });
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let e = format!("{r:?}");
    assert!(e.contains("routed") && e.contains("nothing was changed"), "{e}");
    let r = b.client().request(&Request::Attach {
        spec: AttachSpec { target: format!("{}-none", b.id), kind: Some("netns".into()), ..Default::default() },
    });
    assert!(format!("{r:?}").contains("no network namespace"), "{r:?}");
    assert!(b.warden_links().is_empty());
    assert_eq!(b.master(&b.hs).as_deref(), Some(b.br.as_str()));
}

#[test]
fn killed_warden_leaves_the_wire_connected_and_the_next_adopts() {
    let mut b = Bridged::new();
    b.http_server();
    let before = b.snapshot(&b.s, "eth0", &b.hs);
    b.start_warden("");
    b.attach_s("learn");
    assert_eq!(b.curl(&b.c), "200");
    assert!(b.path("attach-state/web.json").exists(), "the state is on disk");
    b.kill_warden(nix::sys::signal::Signal::SIGKILL);
    // fail_open: the XDP program forwards between the host interface and Warden's veth.
    assert!(b.ping_within(&b.c, S4, 5), "no connectivity after SIGKILL (fail_open)");
    assert_eq!(b.curl(&b.c), "200", "TCP through fail_open");
    assert_eq!(b.master(&b.hs), None, "the plumbing stays as it was");

    b.start_warden("");
    let a = b.wait_state("web", "attached", Duration::from_secs(5));
    assert_eq!(a.host_iface, b.hs);
    let mut sub = subscribed(&b);
    assert_eq!(b.curl(&b.c), "200");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, C4, S4, 6));
    assert!(has(&recs, C4, S4, 6), "the adopted attachment is inspected: {recs:?}");
    b.detach("web");
    assert_eq!(before, b.snapshot(&b.s, "eth0", &b.hs));
    assert!(b.warden_links().is_empty());
    assert_eq!(b.curl(&b.c), "200");
}

#[test]
fn restart_with_restore_gives_the_plumbing_back() {
    let mut b = Bridged::new();
    let before = b.snapshot(&b.s, "eth0", &b.hs);
    b.start_warden("");
    b.attach_s("learn");
    b.kill_warden(nix::sys::signal::Signal::SIGKILL);
    b.start_warden("on_start = \"restore\"\n");
    assert_eq!(b.attachments(), vec![]);
    assert!(b.warden_links().is_empty());
    let after = b.snapshot(&b.s, "eth0", &b.hs);
    assert_eq!(before, after);
    let j = b.exec(&b.m, &["ip", "-d", "link", "show", "dev", &b.hs]);
    assert!(!String::from_utf8_lossy(&j.stdout).contains("prog/xdp"), "the killed Warden's program is removed");
    assert!(b.ping(&b.c, S4));
}

#[test]
fn interface_gone_is_detached_with_final_records_and_reattached_when_back() {
    let mut b = Bridged::new();
    b.start_warden("");
    b.attach_s("learn");
    let mut sub = subscribed(&b);
    // A long UDP flow: its session lives until the interface goes.
    let c = b.c.clone();
    b.spawn(&c, &["ping", "-i", "0.2", S4]);
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, C4, S4, 1));
    assert!(has(&recs, C4, S4, 1), "{recs:?}");
    sh(&["ip", "-n", &b.s, "link", "del", "eth0"]);
    let a = b.wait_state("web", "gone", Duration::from_secs(5));
    assert_eq!(a.warden_iface, None);
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| {
        r.iter().any(|x| x.client_ip == C4 && x.server_ip == S4 && x.closed)
    });
    assert!(recs.iter().any(|x| x.client_ip == C4 && x.closed), "a final record when the interface goes: {recs:?}");
    assert!(b.warden_links().is_empty(), "Warden's pair is removed: {:?}", b.warden_links());
    match b.client().request(&Request::PolicyShow {}) {
        Ok(Reply::PolicyText(t)) => assert!(!t.contains("\"web\""), "{t}"),
        other => panic!("{other:?}"),
    }

    // The same namespace gets its interface back (as a restarted container's CNI ADD would).
    let (s, hs) = (b.s.clone(), b.hs.clone());
    b.workload_link(&s, &hs, S4);
    let a = b.wait_state("web", "attached", Duration::from_secs(5));
    assert_eq!(a.mode, "learn");
    assert_eq!(b.master(&b.hs), None);
    // The new interface has a new MAC: the client's stale neighbour entry would take its
    // reachable time to go.
    sh(&["ip", "-n", &b.c, "neigh", "flush", "all"]);
    assert!(b.ping_within(&b.c, S4, 5), "{}", b.log());
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| {
        r.iter().any(|x| x.client_ip == C4 && x.server_ip == S4 && !x.closed && x.server_workload.as_deref() == Some("web"))
    });
    assert!(recs.iter().any(|x| x.client_ip == C4 && !x.closed && x.server_workload.as_deref() == Some("web")), "{recs:?}");
    b.detach("web");
    assert_eq!(b.master(&b.hs).as_deref(), Some(b.br.as_str()));
}

/// Deletes a namespace the test made when dropped (also when the test fails).
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// `[attach] watch_bridges`: the ports a watched bridge has when Warden starts and a workload
/// that joins it later are attached without a request, each with its workload and records.
#[test]
fn watched_bridge_ports_are_attached_as_they_appear() {
    let mut b = Bridged::new();
    b.start_warden(&format!("watch_bridges = [\"{}\"]\n", b.br));
    let (hc, hs) = (b.hc.clone(), b.hs.clone());
    b.wait_state(&hc, "attached", Duration::from_secs(5));
    b.wait_state(&hs, "attached", Duration::from_secs(5));
    // A new workload joins the bridge (as CNI `bridge` or podman would plug it).
    let n = NsGuard(format!("{}-n", b.id));
    sh(&["ip", "netns", "add", &n.0]);
    sh(&["ip", "-n", &n.0, "link", "set", "lo", "up"]);
    let hn = format!("{}hn", b.id);
    let t0 = Instant::now();
    b.workload_link(&n.0, &hn, T4);
    let a = b.wait_state(&hn, "attached", Duration::from_secs(5));
    eprintln!("the new port was attached {:?} after it joined the bridge", t0.elapsed());
    assert_eq!((a.kind.as_str(), a.ips.clone()), ("iface", vec![T4.to_string()]), "{a:?}");
    assert_eq!(b.master(&hn), None, "taken off the bridge");
    let mut sub = subscribed(&b);
    assert!(b.ping_within(&n.0, S4, 5), "{}", b.log());
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, T4, S4, 1));
    let r = recs.iter().find(|x| x.client_ip == T4 && x.server_ip == S4).unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!((r.client_workload.as_deref(), r.server_workload.as_deref()), (Some(hn.as_str()), Some(hs.as_str())), "{r:?}");
    for name in [&hn, &hc, &hs] {
        b.detach(name);
    }
    // Detached on request: the watch leaves them on their bridge.
    std::thread::sleep(Duration::from_millis(2500));
    for h in [&hn, &hc, &hs] {
        assert_eq!(b.master(h).as_deref(), Some(b.br.as_str()), "{h} stays detached: {:?}", b.attachments());
    }
}

/// A VM's NIC as libvirt makes it: a tap on the bridge whose fd a process holds; this one
/// answers ARP and ICMP echo for T4 with raw frames.
const TAP_VM: &str = r#"
import fcntl, os, struct, sys
name, ip = sys.argv[1], bytes(int(x) for x in sys.argv[2].split("."))
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", name.encode(), 0x0002 | 0x1000))
mac = bytes([0x02, 0x00, 0xc6, 0x12, 0x00, 0x03])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
print("ready", flush=True)
while True:
    f = os.read(fd, 65536)
    if len(f) < 42: continue
    dst, src, et = f[0:6], f[6:12], f[12:14]
    if et == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == ip:
        arp = f[14:22][:6] + b"\x00\x02" + mac + ip + f[22:28] + f[28:32]
        os.write(fd, src + mac + et + arp)
    elif et == b"\x08\x00" and f[23] == 1 and f[30:34] == ip and f[34] == 8:
        ihl = (f[14] & 15) * 4
        iph = bytearray(f[14:14 + ihl]); iph[12:16], iph[16:20] = f[30:34], f[26:30]
        iph[10:12] = b"\0\0"; iph[10:12] = struct.pack("!H", csum(bytes(iph)))
        tot = struct.unpack("!H", f[16:18])[0]
        icmp = bytearray(f[14 + ihl:14 + tot]); icmp[0] = 0; icmp[2:4] = b"\0\0"
        icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
        os.write(fd, src + mac + et + bytes(iph) + bytes(icmp))
"#;

#[test]
fn tap_held_by_a_process_is_attached_and_detached() {
    let mut b = Bridged::new();
    let tap = format!("{}tp", b.id);
    let script = b.path("vm.py");
    std::fs::write(&script, TAP_VM).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &b.m, "python3", "-u"])
        .arg(&script)
        .args([&tap, T4])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    b.children.push(child);
    sh(&["ip", "-n", &b.m, "link", "set", &tap, "master", &b.br]);
    sh(&["ip", "-n", &b.m, "link", "set", &tap, "up"]);
    assert!(b.ping_within(&b.c, T4, 5), "the VM answers before Warden");
    let before = b.snapshot(&b.m, &tap, &tap);
    b.start_warden("");
    let info = b.attach(AttachSpec {
        target: tap.clone(),
        kind: Some("tap".into()),
        ips: vec![T4.into()],
        name: Some("vm1".into()),
        mode: Some("alert".into()),
        ..Default::default()
    });
    assert_eq!((info.kind.as_str(), info.host_iface.as_str(), info.workload.as_deref()), ("tap", tap.as_str(), Some("vm1")));
    assert_eq!(b.master(&tap), None);
    let mut sub = subscribed(&b);
    assert!(b.ping_within(&b.c, T4, 5), "the VM answers through Warden");
    assert!(b.ping(&b.m, T4), "host -> VM");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, C4, T4, 1) && has(r, HOST4, T4, 1));
    let r = recs.iter().find(|r| r.client_ip == C4 && r.server_ip == T4).unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(r.server_workload.as_deref(), Some("vm1"));
    b.detach("vm1");
    assert_eq!(before, b.snapshot(&b.m, &tap, &tap));
    assert!(b.warden_links().is_empty());
    assert!(b.ping(&b.c, T4), "the VM answers after detach");
    assert!(try_sh(&["ip", "-n", &b.m, "link", "show", &tap]));
}

/// Podman containers, images, a network and Warden in the host namespace, all named after the
/// test's pid and removed on drop.
struct Pod {
    tag: String,
    image: String,
    net: String,
    subnet: u8,
    containers: Vec<String>,
    tmp: std::path::PathBuf,
    warden: Option<Child>,
}

impl Pod {
    fn podman(args: &[&str]) -> std::process::Output {
        let out = Command::new("podman")
            .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman (scripts/install-deps.sh installs it): {e}"));
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn new() -> Pod {
        require_root();
        let tag = format!("wdatt{}", std::process::id());
        let tmp = std::env::temp_dir().join(format!("warden-e2e-{tag}"));
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        let bb = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("busybox-static");
        std::fs::copy(bb, rootfs.join("bin/busybox")).unwrap();
        let list = Command::new(bb).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        write_blob(&rootfs.join("www/index.html"), 20_000);
        let image = format!("localhost/{tag}:latest");
        let tar = tmp.join("rootfs.tar");
        sh(&["tar", "-C", rootfs.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."]);
        let mut p = Pod { tag: tag.clone(), image: image.clone(), net: format!("{tag}-net"), subnet: 0, containers: Vec::new(), tmp, warden: None };
        Self::podman(&["import", tar.to_str().unwrap(), &image]);
        // A /24 of 198.18.100.0-198.18.199.255 no other podman network uses.
        let first = (std::process::id() % 100) as u8;
        p.subnet = (0..100u8)
            .map(|i| 100 + (first + i) % 100)
            .find(|x| {
                Command::new("podman")
                    .args(["network", "create", "--subnet", &format!("198.18.{x}.0/24"), &p.net])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("no free 198.18.x.0/24 for a podman network");
        for n in ["a", "b"] {
            let name = format!("{tag}-{n}");
            p.containers.push(name.clone());
            Self::podman(&[
                "run", "-d", "--name", &name, "--network", &p.net, "--ulimit", "nofile=20000:20000", "--ulimit",
                "nproc=4096:4096", &image, "httpd", "-f", "-p", "80", "-h", "/www",
            ]);
        }
        p
    }

    fn ip(&self, name: &str) -> String {
        let out = Self::podman(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// wget from container `from` to `ip` (3 s at most: busybox-static's own `wget -T` crashes
    /// in a container here); true when the page came.
    fn wget(&self, from: &str, ip: &str) -> bool {
        Command::new("podman")
            .args(["--runtime", "runc", "--cgroup-manager=cgroupfs", "exec", from, "timeout", "3", "wget", "-q", "-O", "/tmp/x"])
            .arg(format!("http://{ip}/index.html"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn curl(ip: &str) -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", &format!("http://{ip}/index.html")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn socket(&self) -> std::path::PathBuf {
        self.tmp.join("warden.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.join("warden.log")).unwrap_or_default()
    }

    fn start_warden(&mut self) {
        let cfg = self.tmp.join("warden.toml");
        let state = self.tmp.join("attach-state");
        std::fs::write(
            &cfg,
            format!("[sessions]\ntcp_closed_timeout = 1\n[attach]\nstate_dir = {:?}\nruntimes = [\"podman\"]\n", state.to_str().unwrap()),
        )
        .unwrap();
        let log = std::fs::File::create(self.tmp.join("warden.log")).unwrap();
        let child = warden_run(None, &cfg, &self.socket(), log).args(["--workers", "1"]).spawn().unwrap();
        let (sock, log) = (self.socket(), self.tmp.join("warden.log"));
        wait_for_socket(&sock, self.warden.insert(child), &log);
    }

    fn client(&self) -> Client {
        Client::connect(self.socket()).unwrap()
    }

    /// Runs `wardenctl --socket S args` (built beside `warden`); its stdout.
    fn wardenctl(&self, args: &[&str]) -> String {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_warden")).with_file_name("wardenctl");
        assert!(bin.exists(), "build wardenctl first (cargo build -p warden-control): {}", bin.display());
        let out = Command::new(bin).arg("--socket").arg(self.socket()).args(args).output().unwrap();
        assert!(out.status.success(), "wardenctl {args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut w) = self.warden.take() {
            // SIGTERM by PID, then the attachments are restored by detach below if any remain.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = w.wait();
        }
        for c in &self.containers {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", c]).output();
        }
        // Warden's own interfaces, if a failed test left any (named in the state files).
        let (states, _) = warden_dp::attach::state::load_all(&self.tmp.join("attach-state"));
        for st in states {
            let _ = Command::new("ip").args(["link", "del", "dev", &st.near]).output();
        }
        let _ = Command::new("podman").args(["network", "rm", "-f", &self.net]).output();
        let _ = Command::new("podman").args(["rmi", "-f", &self.image]).output();
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = &self.tag;
    }
}

#[test]
fn podman_containers_attached_by_name_protected_and_detached() {
    let mut p = Pod::new();
    let (a, b) = (p.containers[0].clone(), p.containers[1].clone());
    let (ipa, ipb) = (p.ip(&a), p.ip(&b));
    assert!(ipa.starts_with(&format!("198.18.{}.", p.subnet)) && ipb.starts_with("198.18."), "{ipa} {ipb}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.wget(&a, &ipb) {
        assert!(Instant::now() < deadline, "containers cannot talk before Warden");
    }
    p.start_warden();
    for n in [&a, &b] {
        let out = p.wardenctl(&["attach", n]);
        assert!(out.contains(n.as_str()) && out.contains("attached") && out.contains("wdb"), "{out}");
    }
    let list: Vec<AttachInfo> =
        p.wardenctl(&["--json", "attachments"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(list.len(), 2, "{list:?}");
    for (n, ip) in [(&a, &ipa), (&b, &ipb)] {
        let i = list.iter().find(|i| &i.name == n).unwrap_or_else(|| panic!("{n} not listed: {list:?}"));
        assert_eq!(i.kind, "container");
        assert_eq!(i.ips, vec![ip.clone()]);
        let id = i.identity.clone().unwrap_or_default();
        assert_eq!((id.container_name.as_deref(), id.runtime.as_deref()), (Some(n.as_str()), Some("podman")));
        assert!(i.bridge.is_some() && i.warden_iface.is_some(), "{i:?}");
    }
    let mut sub = p.client();
    sub.subscribe().unwrap();
    assert!(p.wget(&a, &ipb), "a -> b through Warden\n{}", p.log());
    assert_eq!(Pod::curl(&ipb), "200", "host -> b through Warden");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| {
        r.iter().any(|x| x.client_ip == ipa && x.server_ip == ipb && x.app == "http")
            && r.iter().any(|x| x.server_ip == ipb && x.client_ip != ipa && x.ip_proto == 6)
    });
    let r = recs.iter().find(|x| x.client_ip == ipa && x.server_ip == ipb && x.ip_proto == 6).unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!((r.client_workload.as_deref(), r.server_workload.as_deref()), (Some(a.as_str()), Some(b.as_str())), "{r:?}");
    assert_eq!(r.app, "http");
    // Who is talking: both ends named by discovery (namespace -> cgroup -> podman's metadata).
    for (end, n) in [(&r.client_identity, &a), (&r.server_identity, &b)] {
        let id = end.clone().unwrap_or_else(|| panic!("no identity for {n}: {r:?}"));
        assert_eq!((id.container_name.as_deref(), id.runtime.as_deref()), (Some(n.as_str()), Some("podman")), "{id:?}");
        assert!(id.container_id.as_ref().is_some_and(|c| c.len() == 64), "{id:?}");
        assert!(id.host_iface.is_some(), "{id:?}");
    }
    let host_rec = recs.iter().find(|x| x.server_ip == ipb && x.client_ip != ipa && x.ip_proto == 6).unwrap();
    assert!(host_rec.client_identity.is_none(), "the host is nobody's container: {host_rec:?}");
    let workloads = p.wardenctl(&["workloads"]);
    for n in [&a, &b] {
        assert!(workloads.contains(n.as_str()) && workloads.contains("podman"), "{workloads}");
    }

    // Protect by container name: a policy whose workload selects b by its name (no address in
    // the file) takes b's attachment and address, and denies what no rule allows.
    let policy = format!("[[workload]]\nid = \"guarded\"\ncontainers = [\"{b}\"]\nmode = \"protect\"\n");
    match p.client().request(&Request::PolicyApply { text: policy }) {
        Ok(Reply::Done(_)) => {}
        other => panic!("{other:?}"),
    }
    let list2: Vec<AttachInfo> =
        p.wardenctl(&["--json", "attachments"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ib = list2.iter().find(|i| &i.name == &b).unwrap();
    assert_eq!((ib.workload.as_deref(), ib.mode.as_str()), (Some("guarded"), "protect"), "{ib:?}");
    assert!(!p.wget(&a, &ipb), "protect mode on b's workload denies a -> b");
    assert_eq!(Pod::curl(&ipb), "000", "and host -> b");
    assert!(!p.wget(&b, &ipa), "b's egress is denied too (no rule allows it)");
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| {
        r.iter().any(|x| x.client_ip == ipa && x.server_ip == ipb && x.verdict.as_deref() == Some("denied"))
    });
    let d = recs.iter().find(|x| x.client_ip == ipa && x.server_ip == ipb && x.verdict.as_deref() == Some("denied"));
    let d = d.unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(d.server_workload.as_deref(), Some("guarded"), "{d:?}");
    assert_eq!(d.server_identity.as_ref().and_then(|i| i.container_name.as_deref()), Some(b.as_str()), "{d:?}");

    for n in [&a, &b] {
        let out = p.wardenctl(&["detach", n]);
        assert!(out.contains("detached"), "{out}");
    }
    for i in &list {
        let out = Command::new("ip").args(["-j", "link", "show", "dev", &i.host_iface]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["master"].as_str(), i.bridge.as_deref(), "{} is back on its bridge", i.host_iface);
        assert!(!try_sh(&["ip", "link", "show", "dev", i.warden_iface.as_deref().unwrap()]), "Warden's interface is gone");
    }
    assert!(p.wget(&a, &ipb) && p.wget(&b, &ipa), "connectivity after detach");
    assert_eq!(Pod::curl(&ipb), "200");
}

#[test]
fn graceful_stop_keeps_attachments_for_the_next_start_or_detaches_them() {
    let mut b = Bridged::new();
    let before = b.snapshot(&b.s, "eth0", &b.hs);
    b.start_warden("");
    b.attach_s("learn");
    // on_stop = "keep": the wire stays connected through the kernel until the next start.
    b.kill_warden(nix::sys::signal::Signal::SIGTERM);
    assert!(b.ping_within(&b.c, S4, 5), "kept attachment forwards in the kernel after a stop");
    assert_eq!(b.master(&b.hs), None);
    b.start_warden("on_stop = \"detach\"\n");
    b.wait_state("web", "attached", Duration::from_secs(5));
    // on_stop = "detach": a stop restores everything.
    b.kill_warden(nix::sys::signal::Signal::SIGTERM);
    assert!(b.warden_links().is_empty(), "{:?}", b.warden_links());
    assert_eq!(before, b.snapshot(&b.s, "eth0", &b.hs));
    assert!(!b.path("attach-state/web.json").exists());
    assert!(b.ping(&b.c, S4));
}

#[test]
fn namespace_by_proc_path_with_guessed_kind() {
    let mut b = Bridged::new();
    let s = b.s.clone();
    let pid = b.spawn(&s, &["sleep", "120"]);
    b.start_warden("");
    let info = b.attach(AttachSpec { target: format!("/proc/{pid}/ns/net"), ..Default::default() });
    assert_eq!(info.kind, "netns");
    assert!(info.name.starts_with("netns-"), "{info:?}");
    assert_eq!((info.host_iface.as_str(), info.ips.clone()), (b.hs.as_str(), vec![S4.to_string()]));
    let mut sub = subscribed(&b);
    assert!(b.ping_within(&b.c, S4, 5));
    let recs = collect_reports(&mut sub, Duration::from_secs(10), |r| has(r, C4, S4, 1));
    assert!(has(&recs, C4, S4, 1), "{recs:?}");
    // Detach takes the target as given too.
    b.detach(&format!("/proc/{pid}/ns/net"));
    assert_eq!(b.master(&b.hs).as_deref(), Some(b.br.as_str()));
}

/// Sends `n` UDP datagrams `payload` from `ns` to `dst`:`port` with source address
/// `src`:`sport` (an IP header of our own through a raw socket: the kernel does not check the
/// source).
fn send_udp_as(ns: &str, (src, sport): (&str, u16), dst: &str, port: u16, payload: &str, n: u32) {
    let code = format!(
        "import socket, struct\n\
         src, dst, data = socket.inet_aton('{src}'), socket.inet_aton('{dst}'), b'{payload}'\n\
         udp = struct.pack('!HHHH', {sport}, {port}, 8 + len(data), 0) + data\n\
         ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n\
         for _ in range({n}): s.sendto(ip + udp, ('{dst}', 0))\n"
    );
    let out = exec_in(ns, &["python3", "-c", &code]);
    assert!(out.status.success(), "raw send: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_attached_address_is_refused_from_anywhere_but_its_attachment() {
    // c and s attached; their addresses belong to workloads that list them without an
    // interface (as a workload selecting containers does: it may span several). "trusted" (c)
    // may send to "web" (s) on UDP 9999. A datagram claiming c's address from the host side
    // of s's attachment is spoofed and dropped; c's own datagrams arrive.
    let mut b = Bridged::new();
    let got = b.path("udp-9999");
    let code = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{S4}', 9999))\n\
         f = open('{}', 'ab', buffering=0)\nwhile True:\n    d, a = s.recvfrom(2048)\n    f.write(a[0].encode() + b' ' + d + b'\\n')\n",
        got.display()
    );
    let s = b.s.clone();
    b.spawn(&s, &["python3", "-c", &code]);
    b.start_warden("");
    let policy = format!(
        "[[workload]]\nid = \"trusted\"\nips = [\"{C4}\"]\nmode = \"protect\"\n\
         [[workload]]\nid = \"web\"\nips = [\"{S4}\"]\nmode = \"protect\"\n\
         [[rule]]\nid = 1\nfrom = \"trusted\"\nto = \"web\"\nip_proto = \"udp\"\nports = [\"9999\"]\naction = \"allow\"\n"
    );
    match b.client().request(&Request::PolicyApply { text: policy }) {
        Ok(Reply::Done(_)) => {}
        other => panic!("{other:?}\n{}", b.log()),
    }
    for (ns, name, wl) in [(b.c.clone(), "cli", "trusted"), (b.s.clone(), "srv", "web")] {
        let i = b.attach(AttachSpec { target: ns, kind: Some("netns".into()), name: Some(name.into()), ..Default::default() });
        assert_eq!(i.workload.as_deref(), Some(wl), "{i:?}");
    }
    let read = || std::fs::read_to_string(&got).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !read().contains("real") {
        assert!(Instant::now() < deadline, "c's own datagrams do not arrive: {:?}\n{}", read(), b.log());
        send_udp_as(&b.c, (C4, 40000), S4, 9999, "real", 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    // More of c's flow, so that it is on the XDP fast path where that is on: its entry at s's
    // attachment admits c's MAC only, the host's frames below come up to Warden.
    send_udp_as(&b.c, (C4, 40000), S4, 9999, "more", 5);
    std::thread::sleep(Duration::from_millis(600));
    let spoofed_before = spoofed(&b);
    // The host (the bridge's address) claims c's address; its frames reach Warden on the
    // bridge side of s's attachment. The real c is resolved on the bridge already.
    // Resolve s first (the ping itself is denied: no rule lets the host reach web).
    let _ = b.ping(&b.m, S4);
    // Both on a flow of its own and riding c's (same ports): over the bridge, the side a
    // frame arrives on does not say who sent it, the source MAC (the bridge's) does.
    send_udp_as(&b.m, (C4, 40001), S4, 9999, "spoof-new", 10);
    send_udp_as(&b.m, (C4, 40000), S4, 9999, "spoof-ride", 10);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!read().contains("spoof"), "a datagram claiming c's address from the host arrived: {:?}", read());
    let n = spoofed(&b) - spoofed_before;
    assert!(n >= 20, "{n} frames counted as spoofed\n{}", b.log());
    // c still may.
    send_udp_as(&b.c, (C4, 40000), S4, 9999, "again", 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read().contains("again") {
        assert!(Instant::now() < deadline, "c's datagram after the spoofed ones: {:?}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Frames counted as spoofed over every worker.
fn spoofed(b: &Bridged) -> u64 {
    match b.client().request(&Request::Counters {}) {
        Ok(Reply::Counters(c)) => c.workers.iter().map(|w| w.spoofed).sum(),
        other => panic!("counters: {other:?}"),
    }
}
