//! `warden-cni` end to end with Debian's real CNI plugins (containernetworking-plugins:
//! `bridge` and `host-local` in /usr/lib/cni), run as a runtime runs a network configuration
//! list (CNI spec §3: each plugin's ADD gets the previous one's result as `prevResult`; DEL in
//! reverse order with the final ADD result).
//!
//! Topology, all made by the test: a "host" namespace `{id}-h` where Warden runs (no inline
//! pairs), the plugins run and the `bridge` plugin makes the bridge `{id}br` (gateway
//! 198.18.40.1/24, host-local's state in the test's directory); container namespaces
//! `{id}-c` (protect) and `{id}-c2` (learn, the control) get their `eth0` from the chain. A
//! UDP server in the host namespace is the bridge side's truth.
//!
//! The first IP frame the protect namespace ever sends is a datagram written the moment ADD
//! returns, by a sender started (and blocked) before ADD: nothing else can race it. A tcpdump
//! inside the namespace, started before ADD, records every frame the namespace sent; each IP
//! frame in it must be Warden's (in a record as received and dropped, verdict `denied`) and
//! never reach the server. IPv6 is disabled in the container namespaces so the kernel's own
//! link-up chatter (MLD reports, router solicitations, sent while the `bridge` plugin brings
//! `eth0` up, before `warden-cni` runs: README "CNI") is not in the way; ARP is not IP, and a
//! static neighbour entry for the gateway makes the datagram the namespace's first frame
//! after link-up.
//!
//! DEL then restores the plumbing: the host veth back on the bridge with the settings it had,
//! no XDP program, Warden's interface gone, the namespace reaching the server without Warden.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{collect_reports, require_root, sh, wait_for_socket, warden_run};
use serde_json::{json, Value};
use warden_control::{AttachInfo, Client, Reply, Request};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where Debian's containernetworking-plugins put the plugins.
const CNI_DIR: &str = "/usr/lib/cni";
/// The bridge's subnet and its gateway (the bridge's address in the host namespace).
const SUBNET: &str = "198.18.40.0/24";
const GW: &str = "198.18.40.1";
/// The UDP port of the server on the bridge side (one tcpdump decodes as plain UDP).
const PORT: u16 = 47123;

/// The test's namespaces, processes and files; everything is removed on drop (processes by
/// PID, then the namespaces and the interfaces in them, the bridge with the host namespace).
struct Cni {
    id: String,
    host: String,
    tmp: PathBuf,
    namespaces: Vec<String>,
    children: Vec<Child>,
    plugin: PathBuf,
}

impl Drop for Cni {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Builds (or finds up to date) the `warden-cni` binary next to the `warden` this test runs:
/// it belongs to another package of the workspace, which `cargo test -p warden-dp` does not
/// build.
fn plugin_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_warden")).parent().unwrap().to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cargo.args(["build", "--quiet", "-p", "warden-cni"]).current_dir(&root);
    if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cargo.arg("--release");
    }
    let out = cargo.output().unwrap();
    assert!(out.status.success(), "building warden-cni: {}", String::from_utf8_lossy(&out.stderr));
    let bin = dir.join("warden-cni");
    assert!(bin.is_file(), "{} missing after cargo build -p warden-cni", bin.display());
    bin
}

/// One plugin run's exit status, stdout and stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cni {
    fn new() -> Cni {
        require_root();
        for p in ["bridge", "host-local"] {
            assert!(
                Path::new(CNI_DIR).join(p).is_file(),
                "{CNI_DIR}/{p} missing: install containernetworking-plugins (scripts/install-deps.sh)"
            );
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("wc{:x}{n}", std::process::id() & 0xffff);
        let tmp = std::env::temp_dir().join(format!("warden-e2e-{id}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut t = Cni {
            host: format!("{id}-h"),
            id,
            tmp,
            namespaces: Vec::new(),
            children: Vec::new(),
            plugin: plugin_binary(),
        };
        let host = t.host.clone();
        t.netns(&host);
        t
    }

    /// Creates namespace `name` (removed on drop) with its loopback up.
    fn netns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// A container namespace: IPv6 off (see the module docs).
    fn container(&mut self, suffix: &str) -> String {
        let ns = format!("{}-{suffix}", self.id);
        self.netns(&ns);
        for k in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
            sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", k]);
        }
        ns
    }

    fn socket(&self) -> PathBuf {
        self.tmp.join("warden.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.join("warden.log")).unwrap_or_default()
    }

    /// Starts Warden in the host namespace with no inline pairs and waits for its socket.
    fn start_warden(&mut self) {
        let cfg = self.tmp.join("warden.toml");
        // Attachment state in the test's directory, not the host's /run/warden/attach.
        let state = self.tmp.join("attach");
        std::fs::write(&cfg, format!("[sessions]\ntcp_closed_timeout = 1\n[attach]\nstate_dir = \"{}\"\n", state.display())).unwrap();
        let log = std::fs::File::create(self.tmp.join("warden.log")).unwrap();
        let child = warden_run(Some(&self.host), &cfg, &self.socket(), log).spawn().unwrap();
        self.children.push(child);
        let (sock, log) = (self.socket(), self.tmp.join("warden.log"));
        wait_for_socket(&sock, self.children.last_mut().unwrap(), &log);
    }

    /// The network configuration list: `bridge` (+ `host-local`) then `warden-cni` with `mode`.
    fn conflist(&self, mode: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": format!("{}-net", self.id),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": format!("{}br", self.id),
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET}]],
                        "dataDir": self.tmp.join("ipam").display().to_string()
                    }
                },
                {
                    "type": "warden-cni",
                    "socket": self.socket().display().to_string(),
                    "mode": mode,
                    "timeoutMs": 20000
                }
            ]
        })
    }

    /// Runs one plugin as a runtime does: in the host namespace, CNI_* in its environment,
    /// its request configuration (§3: the plugin's object with `cniVersion`, `name` and
    /// `prevResult` inserted) on stdin.
    fn plugin(&self, cmd: &str, ns: &str, container: &str, list: &Value, i: usize, prev: Option<&Value>) -> Run {
        let mut conf = list["plugins"][i].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let ty = conf["type"].as_str().unwrap().to_string();
        let exe = if ty == "warden-cni" { self.plugin.clone() } else { Path::new(CNI_DIR).join(&ty) };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host])
            .arg(exe)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", format!("{CNI_DIR}:{}", self.plugin.parent().unwrap().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `bridge` ADD alone: the namespace's eth0 with its address; returns the result.
    fn bridge_add(&self, ns: &str, container: &str, list: &Value) -> Value {
        let r = self.plugin("ADD", ns, container, list, 0, None);
        assert!(r.ok, "bridge ADD: {}{}", r.stdout, r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// Starts a process in `ns` that sends one UDP datagram of `payload` to the server when a
    /// line arrives on its stdin, then prints `sent` and exits. Started before ADD, so sending
    /// costs nothing but the write that releases it.
    fn sender(&mut self, ns: &str, payload: &str) -> usize {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nsys.stdin.readline()\n\
             s.sendto(b'{payload}',('{GW}',{PORT}))\nprint('sent',flush=True)\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-u", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Releases sender `i` and waits for it to say it sent.
    fn fire(&mut self, i: usize) {
        let c = &mut self.children[i];
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "sent");
    }

    /// The UDP server on the bridge side: every datagram's source and payload, one per line,
    /// in `server.txt`.
    fn server(&mut self) {
        let out = self.tmp.join("server.txt");
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{PORT}))\n\
             print('ready',flush=True)\nf=open('{}','a')\nwhile True:\n    d,a=s.recvfrom(2048)\n    \
             f.write(a[0]+' '+d.decode(errors='replace')+'\\n');f.flush()\n",
            out.display()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host, "python3", "-u", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        self.children.push(child);
    }

    fn server_got(&self) -> String {
        std::fs::read_to_string(self.tmp.join("server.txt")).unwrap_or_default()
    }

    /// Waits until the server received `payload` (true) or `timeout` passed (false).
    fn server_waits_for(&self, payload: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.server_got().contains(payload) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A static neighbour entry for the gateway in `ns` (the bridge's MAC from the result),
    /// so the datagram is not preceded by an ARP exchange.
    fn static_gateway(&self, ns: &str, result: &Value) {
        let br = format!("{}br", self.id);
        let mac = result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == br.as_str())
            .and_then(|i| i["mac"].as_str())
            .unwrap_or_else(|| panic!("no bridge in {result}"))
            .to_string();
        sh(&["ip", "-n", ns, "neigh", "replace", GW, "lladdr", &mac, "dev", "eth0", "nud", "permanent"]);
    }

    /// The host-side veth of a `bridge` result (the interface without a sandbox that is not
    /// the bridge).
    fn host_veth(&self, result: &Value) -> String {
        let br = format!("{}br", self.id);
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] != br.as_str() && i.get("sandbox").and_then(|s| s.as_str()).unwrap_or("").is_empty())
            .and_then(|i| i["name"].as_str())
            .unwrap_or_else(|| panic!("no host veth in {result}"))
            .to_string()
    }

    /// What Warden must put back on detach: the host veth's bridge, MTU, MAC, state, XDP
    /// (none) and offload settings.
    fn plumbing(&self, dev: &str) -> String {
        let link = String::from_utf8_lossy(&sh(&["ip", "-n", &self.host, "-d", "-j", "link", "show", dev]).stdout).into_owned();
        let l: Value = serde_json::from_str(&link).unwrap();
        let l = &l[0];
        let offloads = sh(&["ip", "netns", "exec", &self.host, "ethtool", "-k", dev]).stdout;
        format!(
            "master={} mtu={} mac={} operstate={} xdp={}\n{}",
            l["master"],
            l["mtu"],
            l["address"],
            l["operstate"],
            l.get("xdp").is_some(),
            String::from_utf8_lossy(&offloads)
        )
    }

    fn client(&self) -> Client {
        Client::connect(self.socket()).unwrap()
    }

    fn attachments(&self) -> Vec<AttachInfo> {
        match self.client().request(&Request::ListAttachments {}).unwrap() {
            Reply::Attachments(l) => l,
            other => panic!("{other:?}"),
        }
    }

    /// tcpdump inside `ns` on every interface, from before the interface exists; returns its
    /// index in `children` (stopped by [`Cni::stop`]).
    fn capture(&mut self, ns: &str, file: &Path) -> usize {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "any", "-nn", "--immediate-mode", "-U", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("listening on any") {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "tcpdump in {ns} exited: {said}");
            said.push_str(&line);
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        self.children.push(child);
        self.children.len() - 1
    }

    /// Stops process `i` with SIGTERM (tcpdump flushes its file) and waits for it.
    fn stop(&mut self, i: usize) {
        let c = &mut self.children[i];
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = c.wait();
    }
}

/// The frames of a capture file as tcpdump prints them (`-i any` captures: each line names
/// the direction, `Out` for what the namespace sent; interface names are resolved in the
/// reader's namespace, so they may be wrong).
fn frames(file: &Path) -> Vec<String> {
    let out = sh(&["tcpdump", "-nn", "-r", file.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn container_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

#[test]
fn first_packet_after_cni_add_is_inspected_and_denied_and_del_restores_the_plumbing() {
    let mut t = Cni::new();
    t.start_warden();
    t.server();
    let mut reports = t.client();
    reports.subscribe().unwrap();

    // The protect namespace: capture and sender in place before anything is plumbed.
    let c = t.container("c");
    let pcap = t.tmp.join("c.pcap");
    let dump = t.capture(&c, &pcap);
    let payload = format!("first-{}", t.id);
    let sender = t.sender(&c, &payload);

    let protect = t.conflist("protect");
    let ctr = format!("{}-ctr-a", t.id);
    let bridge_result = t.bridge_add(&c, &ctr, &protect);
    let ip = container_ip(&bridge_result);
    let veth = t.host_veth(&bridge_result);
    let before = t.plumbing(&veth);
    t.static_gateway(&c, &bridge_result);

    let started = Instant::now();
    let add = t.plugin("ADD", &c, &ctr, &protect, 1, Some(&bridge_result));
    // ADD has returned: the datagram goes now, before anything else.
    t.fire(sender);
    eprintln!("warden-cni ADD (attach included) took {:?}", started.elapsed());
    assert!(add.ok, "warden-cni ADD failed: {}\n{}\nwarden log:\n{}", add.stdout, add.stderr, t.log());
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result, bridge_result, "warden-cni passes the bridge plugin's result on unchanged");

    let attached = t.attachments();
    let info = attached.iter().find(|a| a.host_iface == veth).unwrap_or_else(|| panic!("{veth} not in {attached:?}"));
    assert_eq!((info.kind.as_str(), info.mode.as_str(), &info.ips), ("netns", "protect", &vec![ip.clone()]), "{info:?}");
    assert!(info.name.starts_with("cni_") && info.name.ends_with("_eth0"), "{info:?}");
    let name = info.name.clone();

    // Warden received the datagram and dropped it.
    let recs = collect_reports(&mut reports, Duration::from_secs(10), |all| {
        all.iter().any(|r| r.client_ip == ip && r.server_port == PORT && r.packets_dropped_to_server > 0)
    });
    let rec = recs
        .iter()
        .rev()
        .find(|r| r.client_ip == ip && r.server_port == PORT && r.ip_proto == 17)
        .unwrap_or_else(|| panic!("no record of {ip} -> {GW}:{PORT} in {recs:#?}\nwarden log:\n{}", t.log()));
    std::thread::sleep(Duration::from_millis(1500));
    t.stop(dump);

    // Every IP frame the namespace sent is the datagram, sent after ADD returned, and Warden
    // received and dropped each.
    let all = frames(&pcap);
    let ip_frames: Vec<&String> = all.iter().filter(|l| l.contains(" Out IP ") || l.contains(" Out IP6 ")).collect();
    assert!(!ip_frames.is_empty(), "the namespace sent no IP frame: {all:#?}");
    for f in &ip_frames {
        assert!(f.contains(&format!("{ip}.")) && f.contains(&format!("> {GW}.{PORT}: UDP")), "an IP frame that is not the test's: {f}\n{all:#?}");
    }
    let n = ip_frames.len() as u64;
    eprintln!(
        "frames the namespace sent and received:\n{}\nWarden's record: {} -> {}:{} verdict {:?} mode {:?}, {} frames to server, {} dropped",
        all.join("\n"),
        rec.client_ip,
        rec.server_ip,
        rec.server_port,
        rec.verdict,
        rec.mode,
        rec.packets_to_server,
        rec.packets_dropped_to_server
    );
    assert_eq!(rec.verdict.as_deref(), Some("denied"), "{rec:#?}");
    assert_eq!((rec.packets_to_server, rec.packets_dropped_to_server), (n, n), "{rec:#?}\n{all:#?}");
    assert!(!t.server_got().contains(&payload), "the server got the first datagram: {}", t.server_got());

    // Control: a learn-mode namespace on the same bridge, attached the same way, reaches the
    // server through Warden.
    let c2 = t.container("c2");
    let learn = t.conflist("learn");
    let ctr2 = format!("{}-ctr-b", t.id);
    let r2 = t.bridge_add(&c2, &ctr2, &learn);
    t.static_gateway(&c2, &r2);
    let add2 = t.plugin("ADD", &c2, &ctr2, &learn, 1, Some(&r2));
    assert!(add2.ok, "control ADD: {}{}", add2.stdout, add2.stderr);
    let ctl = format!("control-{}", t.id);
    let s2 = t.sender(&c2, &ctl);
    t.fire(s2);
    assert!(t.server_waits_for(&ctl, Duration::from_secs(5)), "the learn-mode namespace did not reach the server through Warden");

    // DEL (reverse order): warden-cni restores the plumbing exactly, twice is fine, then the
    // bridge plugin removes the rest.
    let warden_iface = info.warden_iface.clone();
    let del = t.plugin("DEL", &c, &ctr, &protect, 1, Some(&result));
    assert!(del.ok && del.stdout.is_empty(), "warden-cni DEL: {}{}", del.stdout, del.stderr);
    assert!(t.attachments().iter().all(|a| a.name != name));
    assert_eq!(t.plumbing(&veth), before, "the host veth's plumbing after DEL");
    if let Some(w) = warden_iface {
        assert!(!Command::new("ip").args(["-n", &t.host, "link", "show", &w]).output().unwrap().status.success(), "{w} left behind");
    }
    let again = format!("after-del-{}", t.id);
    let s3 = t.sender(&c, &again);
    t.fire(s3);
    assert!(t.server_waits_for(&again, Duration::from_secs(5)), "no connectivity after DEL: {}", t.server_got());
    let del = t.plugin("DEL", &c, &ctr, &protect, 1, Some(&result));
    assert!(del.ok, "a second DEL: {}{}", del.stdout, del.stderr);
    let del = t.plugin("DEL", &c, &ctr, &protect, 0, Some(&result));
    assert!(del.ok, "bridge DEL: {}{}", del.stdout, del.stderr);
    assert!(!Command::new("ip").args(["-n", &t.host, "link", "show", &veth]).output().unwrap().status.success());
    for (i, prev) in [(1, &r2), (0, &r2)] {
        let d = t.plugin("DEL", &c2, &ctr2, &learn, i, Some(prev));
        assert!(d.ok, "control DEL: {}{}", d.stdout, d.stderr);
    }
    assert!(t.attachments().is_empty());
}
