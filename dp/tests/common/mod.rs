//! Test topologies for end-to-end tests (root only).
//!
//! `client ns` --veth-- [`a` | Warden in `mid ns` | `b`] --veth-- `server ns`
//!
//! Every namespace and interface name is unique to the test (pid + counter), addresses come only
//! from 198.18.0.0/15 and 2001:db8::/32, there is no default route, and everything (processes by
//! PID, namespaces and the interfaces in them) is removed on drop, also when the test fails.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use warden_control::{Client, ConnectionRecord, Reply, Request};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns whether it succeeded (output discarded).
pub fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panics unless running as root (the e2e tests create namespaces and load XDP programs).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (they create network namespaces and attach XDP): run ./scripts/test.sh as root"
    );
}

/// Which kind of interface the client side of Warden uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientLink {
    /// A veth pair between the client namespace and the middle.
    Veth,
    /// A tap device in the middle whose file descriptor is held by a small bridge process that
    /// shuttles frames to a veth leading to the client namespace (the tap plays a VM's NIC).
    Tap,
}

/// Three namespaces and two links, with Warden's interfaces in the middle.
pub struct Topo {
    /// Unique name stem.
    pub id: String,
    /// Client namespace.
    pub c: String,
    /// Middle namespace (Warden's).
    pub m: String,
    /// Server namespace.
    pub s: String,
    /// Warden's client-side interface (in `m`).
    pub a: String,
    /// Warden's server-side interface (in `m`).
    pub b: String,
    /// Client's interface (in `c`).
    pub c0: String,
    /// Server's interface (in `s`).
    pub s0: String,
    children: Vec<Child>,
    extra_ns: Vec<String>,
    tmp: PathBuf,
}

/// Client IPv4 address.
pub const C4: &str = "198.18.0.1";
/// Server IPv4 address.
pub const S4: &str = "198.18.0.2";
/// Client IPv6 address.
pub const C6: &str = "2001:db8::1";
/// Server IPv6 address.
pub const S6: &str = "2001:db8::2";

const TAP_BRIDGE: &str = r#"
import fcntl, os, select, socket, struct, sys
tap_name, veth = sys.argv[1], sys.argv[2]
fd = os.open("/dev/net/tun", os.O_RDWR)
IFF_TAP, IFF_NO_PI, TUNSETIFF = 0x0002, 0x1000, 0x400454ca
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap_name.encode(), IFF_TAP | IFF_NO_PI))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((veth, 0))
print("ready", flush=True)
while True:
    r, _, _ = select.select([fd, s], [], [])
    try:
        if fd in r:
            s.send(os.read(fd, 65536))
        if s in r:
            pkt, addr = s.recvfrom(65536)
            if addr[2] != socket.PACKET_OUTGOING:
                os.write(fd, pkt)
    except OSError:
        # Link state changes (ENETDOWN while the peer comes up) and full queues: keep going.
        pass
"#;

impl Topo {
    /// Builds the topology; offloads are off on the end hosts so frames on the wire are the
    /// frames the stacks see (and AF_XDP copy mode gets complete checksums).
    pub fn new(link: ClientLink) -> Topo {
        Self::with_queues(link, 1)
    }

    /// As [`Topo::new`], with `queues` rx/tx queues on every veth (multi-queue tests).
    pub fn with_queues(link: ClientLink, queues: u32) -> Topo {
        require_root();
        let q = queues.to_string();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("w{:x}{}", std::process::id() & 0xffff, n);
        let tmp = std::env::temp_dir().join(format!("warden-e2e-{id}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut t = Topo {
            c: format!("{id}-c"),
            m: format!("{id}-m"),
            s: format!("{id}-s"),
            a: format!("{id}a"),
            b: format!("{id}b"),
            c0: format!("{id}c0"),
            s0: format!("{id}s0"),
            id,
            children: Vec::new(),
            extra_ns: Vec::new(),
            tmp,
        };
        for ns in [&t.c, &t.m, &t.s] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Server side: veth s0 (server) <-> b (Warden).
        sh(&[
            "ip",
            "link",
            "add",
            &t.s0,
            "netns",
            &t.s,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &t.b,
            "netns",
            &t.m,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        match link {
            ClientLink::Veth => {
                sh(&[
                    "ip",
                    "link",
                    "add",
                    &t.c0,
                    "netns",
                    &t.c,
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &t.a,
                    "netns",
                    &t.m,
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                ]);
            }
            ClientLink::Tap => {
                let x = format!("{}x", t.id);
                sh(&["ip", "link", "add", &t.c0, "netns", &t.c, "type", "veth", "peer", "name", &x, "netns", &t.m]);
                sh(&["ip", "-n", &t.m, "link", "set", &x, "up"]);
                let script = t.tmp.join("tapbridge.py");
                std::fs::write(&script, TAP_BRIDGE).unwrap();
                let mut child = Command::new("ip")
                    .args(["netns", "exec", &t.m, "python3", "-u"])
                    .arg(&script)
                    .args([&t.a, &x])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                use std::io::BufRead;
                std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
                assert_eq!(line.trim(), "ready", "tap bridge did not start");
                t.children.push(child);
            }
        }
        for (ns, dev, v4, v6) in [(&t.c, &t.c0, C4, C6), (&t.s, &t.s0, S4, S6)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
        for dev in [&t.a, &t.b] {
            sh(&["ip", "-n", &t.m, "link", "set", dev, "up"]);
        }
        t
    }

    /// Adds a second inline pair in the same middle namespace: client namespace `{id}-c2`
    /// (198.18.1.1) -- `{id}a2` | `{id}b2` -- server namespace `{id}-s2` (198.18.1.2). Returns
    /// (a2, b2, client ns, server ns); removed with the topology.
    pub fn extra_pair(&mut self) -> (String, String, String, String) {
        let (c2, s2) = (format!("{}-c2", self.id), format!("{}-s2", self.id));
        let (a2, b2, c20, s20) =
            (format!("{}a2", self.id), format!("{}b2", self.id), format!("{}c2", self.id), format!("{}s2", self.id));
        for ns in [&c2, &s2] {
            sh(&["ip", "netns", "add", ns]);
            self.extra_ns.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "link", "add", &c20, "netns", &c2, "type", "veth", "peer", "name", &a2, "netns", &self.m]);
        sh(&["ip", "link", "add", &s20, "netns", &s2, "type", "veth", "peer", "name", &b2, "netns", &self.m]);
        for (ns, dev, v4) in [(&c2, &c20, "198.18.1.1"), (&s2, &s20, "198.18.1.2")] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        for dev in [&a2, &b2] {
            sh(&["ip", "-n", &self.m, "link", "set", dev, "up"]);
        }
        (a2, b2, c2, s2)
    }

    /// A path in the test's private temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Control socket path for this test's Warden.
    pub fn socket(&self) -> PathBuf {
        self.path("warden.sock")
    }

    /// Runs `args` inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        Command::new(v[0]).args(&v[1..]).output().unwrap()
    }

    /// Starts a long-running process in `ns`; it is killed (by PID) when the topology drops.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts Warden in the middle namespace with `extra` arguments after `run`, waits for its
    /// socket, and returns its PID. Session linger is shortened so final records come quickly.
    pub fn start_warden(&mut self, extra: &[&str]) -> u32 {
        let cfg = self.path("warden.toml");
        std::fs::write(&cfg, "[sessions]\ntcp_closed_timeout = 1\n").unwrap();
        let log = std::fs::File::create(self.path("warden.log")).unwrap();
        let sock = self.socket();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.m, env!("CARGO_BIN_EXE_warden"), "run", "--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(&sock)
            .args(["--report-interval", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Client::connect(&sock).is_ok() {
                return pid;
            }
            if let Some(c) = self.children.last_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("warden exited with {st}: {}", self.warden_log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("warden did not open its socket: {}", self.warden_log());
    }

    /// Warden's stderr so far.
    pub fn warden_log(&self) -> String {
        std::fs::read_to_string(self.path("warden.log")).unwrap_or_default()
    }

    /// A control client for this test's Warden.
    pub fn client(&self) -> Client {
        Client::connect(self.socket()).unwrap()
    }

    /// A control client already subscribed to reports. Subscribe before making traffic: a batch
    /// carries only what changed since the previous one, so a late subscriber misses sessions
    /// that were reported before it joined.
    pub fn subscribed(&self) -> Client {
        let mut c = self.client();
        c.subscribe().unwrap();
        c
    }

    /// Waits for the child with `pid` to exit and returns whether it exited successfully.
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let idx = self.children.iter().position(|c| c.id() == pid)?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.children[idx].try_wait() {
                return Some(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits for the child with `pid` to exit and returns its exit status (128 + the signal
    /// number when a signal ended it); `None` when it still runs after `timeout`.
    pub fn wait_code(&mut self, pid: u32, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + timeout;
        let idx = self.children.iter().position(|c| c.id() == pid)?;
        loop {
            if let Ok(Some(st)) = self.children[idx].try_wait() {
                return st.code().or_else(|| st.signal().map(|s| 128 + s));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` to the child with `pid`.
    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }

    /// Pings `dst` from the client namespace; true when all `count` replies arrive.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        let c = count.to_string();
        self.exec(&self.c, &["ping", "-c", &c, "-i", "0.2", "-W", "1", dst]).status.success()
    }

    /// Whether an XDP program is attached to `dev` in the middle namespace.
    pub fn has_xdp(&self, dev: &str) -> bool {
        let out = self.exec(&self.m, &["ip", "-d", "link", "show", dev]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dev in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["-n", &self.m, "link", "set", dev, "xdp", "off"]).output();
        }
        for ns in [&self.c, &self.m, &self.s].into_iter().chain(self.extra_ns.iter()) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Waits (up to 20 s) until something listens on TCP `port` in namespace `ns`.
pub fn wait_listen(t: &Topo, ns: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.exec(ns, &["sh", "-c", &format!("ss -ltnH | grep -q ':{port} '")]).status.success() {
        assert!(Instant::now() < deadline, "nothing listens on {port} in {ns}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The MAC address of `dev` in `ns`.
pub fn mac(t: &Topo, ns: &str, dev: &str) -> String {
    let out = t.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    let m = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(m.len(), 17, "no MAC for {dev} in {ns}");
    m
}

/// Collects records from a subscribed client ([`Topo::subscribed`]) until `done` says the
/// wanted ones arrived or `timeout` passes.
pub fn collect_reports(
    client: &mut Client,
    timeout: Duration,
    mut done: impl FnMut(&[ConnectionRecord]) -> bool,
) -> Vec<ConnectionRecord> {
    let deadline = Instant::now() + timeout;
    let mut all: Vec<ConnectionRecord> = Vec::new();
    while Instant::now() < deadline {
        let batch = client.next_report().unwrap();
        all.extend(batch.connections);
        if done(&all) {
            break;
        }
    }
    all
}

/// Collects report records (in arrival order) and events from a subscribed client until
/// `done` holds for them or `timeout` passes.
pub fn collect_messages(
    client: &mut Client,
    timeout: Duration,
    mut done: impl FnMut(&[ConnectionRecord], &[warden_control::Event]) -> bool,
) -> (Vec<ConnectionRecord>, Vec<warden_control::Event>) {
    let deadline = Instant::now() + timeout;
    let (mut recs, mut events) = (Vec::new(), Vec::new());
    while Instant::now() < deadline && !done(&recs, &events) {
        match client.next_message().unwrap() {
            Reply::Report(b) => recs.extend(b.connections),
            Reply::Event(e) => events.push(e),
            _ => {}
        }
    }
    (recs, events)
}

/// Requests and returns the live sessions.
pub fn sessions(client: &mut Client) -> Vec<ConnectionRecord> {
    match client.request(&Request::ListSessions { limit: None }).unwrap() {
        Reply::Sessions(v) => v,
        other => panic!("unexpected {other:?}"),
    }
}

/// Writes `bytes` of pseudo-random content to `path` (deterministic, no RNG dependency).
pub fn write_blob(path: &std::path::Path, bytes: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = Vec::with_capacity(bytes);
    while buf.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(bytes);
    f.write_all(&buf).unwrap();
}
