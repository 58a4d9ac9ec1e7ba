//! Test topologies for end-to-end tests (root only).
//!
//! `client ns` --veth-- [`a` | Warden in `mid ns` | `b`] --veth-- `server ns`
//!
//! [`Topo::far_client`] adds a host behind two routers and a small-MTU link on the client
//! side; [`Topo::capture_server`] / [`Topo::replay_capture`] record the server's interface and
//! replay it, the reference for Warden's counts.
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

    /// A namespace `{id}-x` linked to Warden's middle namespace by a veth pair, for a collector
    /// Warden sends to: 198.18.9.1/30 in the middle namespace, 198.18.9.2/30 in `{id}-x`.
    /// Returns (namespace, collector address); removed with the topology.
    pub fn collector_ns(&mut self) -> (String, &'static str) {
        let x = format!("{}-x", self.id);
        let (xm, xx) = (format!("{}xm", self.id), format!("{}xx", self.id));
        sh(&["ip", "netns", "add", &x]);
        self.extra_ns.push(x.clone());
        sh(&["ip", "-n", &x, "link", "set", "lo", "up"]);
        sh(&["ip", "link", "add", &xx, "netns", &x, "type", "veth", "peer", "name", &xm, "netns", &self.m]);
        sh(&["ip", "-n", &self.m, "addr", "add", "198.18.9.1/30", "dev", &xm]);
        sh(&["ip", "-n", &x, "addr", "add", "198.18.9.2/30", "dev", &xx]);
        sh(&["ip", "-n", &self.m, "link", "set", &xm, "up"]);
        sh(&["ip", "-n", &x, "link", "set", &xx, "up"]);
        (x, "198.18.9.2")
    }

    /// Puts a host behind two routers on the client side, with a link of `mtu` bytes between
    /// the routers (the client namespace becomes the first router):
    ///
    /// `far host ns` --1500-- `router ns` --`mtu`-- `client ns` (router; C4/C6 on c0) --[Warden]-- `server ns`
    ///
    /// Both TCP ends have 1500-byte links and advertise an MSS to match, so the small link is
    /// only found by Path MTU discovery: the client namespace answers a too-big packet from
    /// the server with ICMP "fragmentation needed" / ICMPv6 "packet too big", which crosses
    /// Warden; a far-host packet without DF is fragmented by the router namespace and its
    /// fragments cross Warden. IPv6 is configured only when `mtu` >= 1280 (RFC 8200 §5).
    /// Specific routes only (198.18.2.0/24 and 2001:db8:2::/64 between the routers,
    /// 198.18.3.0/24 and 2001:db8:3::/64 to the far host); removed with the topology.
    pub fn far_client(&mut self, mtu: u32) -> FarHost {
        let (r, h) = (format!("{}-r", self.id), format!("{}-h", self.id));
        for ns in [&r, &h] {
            sh(&["ip", "netns", "add", ns]);
            self.extra_ns.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (cr, rc, rh, hr) = (
            format!("{}cr", self.id),
            format!("{}rc", self.id),
            format!("{}rh", self.id),
            format!("{}hr", self.id),
        );
        let m = mtu.to_string();
        sh(&["ip", "link", "add", &cr, "netns", &self.c, "mtu", &m, "type", "veth", "peer", "name", &rc, "netns", &r, "mtu", &m]);
        sh(&["ip", "link", "add", &rh, "netns", &r, "type", "veth", "peer", "name", &hr, "netns", &h]);
        let v6 = mtu >= 1280;
        let c = self.c.clone();
        for (ns, dev, v4, a6) in [
            (&c, &cr, "198.18.2.1", "2001:db8:2::1"),
            (&r, &rc, "198.18.2.2", "2001:db8:2::2"),
            (&r, &rh, "198.18.3.1", "2001:db8:3::1"),
            (&h, &hr, FAR4, FAR6),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            if v6 {
                sh(&["ip", "-n", ns, "addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
        }
        for ns in [&c, &r] {
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            if v6 {
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            }
        }
        let routes: [(&str, &str, &str); 4] = [
            (&self.s, "198.18.3.0/24", C4),
            (&c, "198.18.3.0/24", "198.18.2.2"),
            (&r, "198.18.0.0/24", "198.18.2.1"),
            (&h, "198.18.0.0/24", "198.18.3.1"),
        ];
        for (ns, to, via) in routes {
            sh(&["ip", "-n", ns, "route", "add", to, "via", via]);
        }
        if v6 {
            let routes: [(&str, &str, &str); 4] = [
                (&self.s, "2001:db8:3::/64", C6),
                (&c, "2001:db8:3::/64", "2001:db8:2::2"),
                (&r, "2001:db8::/64", "2001:db8:2::1"),
                (&h, "2001:db8::/64", "2001:db8:3::1"),
            ];
            for (ns, to, via) in routes {
                sh(&["ip", "-n", ns, "-6", "route", "add", to, "via", via]);
            }
        }
        FarHost { ns: h, router: r }
    }

    /// Waits (up to 20 s) until something in `ns` listens on `port` (`proto`: "tcp" or "udp").
    pub fn wait_listening(&self, ns: &str, proto: &str, port: u16) {
        let flag = if proto == "udp" { "-lunH" } else { "-ltnH" };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.exec(ns, &["sh", "-c", &format!("ss {flag} | grep -q ':{port} '")]).status.success() {
            assert!(Instant::now() < deadline, "nothing listens on {proto} port {port} in {ns}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts tcpdump on the server's interface (whole frames, BPF `filter`, "" for all) and
    /// waits until it captures. Stop it with [`Topo::replay_capture`].
    pub fn capture_server(&mut self, name: &str, filter: &str) -> Capture {
        let path = self.path(name);
        let p = path.to_str().unwrap().to_string();
        let (s, s0) = (self.s.clone(), self.s0.clone());
        // A large capture buffer so a loaded machine does not make tcpdump drop frames.
        let mut args = vec!["tcpdump", "-i", &s0, "-B", "32768", "-U", "-s", "0", "-w", &p];
        if !filter.is_empty() {
            args.push(filter);
        }
        let pid = self.spawn(&s, &args);
        // tcpdump writes the pcap header once it captures.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).map(|m| m.len() < 24).unwrap_or(true) {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture { pid, path }
    }

    /// Stops a capture and returns what `warden replay` makes of it (default configuration):
    /// the records and the totals (frames, fragments reassembled).
    pub fn replay_capture(&mut self, cap: Capture) -> (Vec<ConnectionRecord>, warden_dp::replay::ReplaySummary) {
        self.signal(cap.pid, nix::sys::signal::Signal::SIGINT);
        self.wait_exit(cap.pid, Duration::from_secs(5));
        warden_dp::replay::replay_file(&cap.path, &warden_dp::config::Config::default())
            .unwrap_or_else(|e| panic!("replay of the server capture: {e}"))
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
        exec_in(ns, args)
    }

    /// Starts a long-running process in `ns`; it is killed (by PID) when the topology drops.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> u32 {
        let child = spawn_in(ns, args);
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts MariaDB in the server namespace on `S4`:`port` from a throwaway data directory
    /// under the test's directory (`mariadb-install-db`, no test database, no binary log),
    /// with `extra` server options (`--skip-grant-tables`, `--init-file=...`); returns its PID.
    pub fn mariadb(&mut self, port: u16, extra: &[&str]) -> u32 {
        let my = self.path("my");
        std::fs::create_dir_all(&my).unwrap();
        sh(&["mariadb-install-db", "--no-defaults", "--user=root", &format!("--datadir={}", my.display()), "--skip-test-db"]);
        let mut args = vec![
            "mariadbd".to_string(),
            "--no-defaults".into(),
            "--user=root".into(),
            format!("--datadir={}", my.display()),
            format!("--socket={}/sock", my.display()),
            format!("--pid-file={}/pid", my.display()),
            format!("--bind-address={S4}"),
            format!("--port={port}"),
            "--skip-log-bin".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let s = self.s.clone();
        self.spawn(&s, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Ends `child` (by its PID) with the topology, as the processes [`Topo::spawn`] starts;
    /// returns it, for the caller to wait on.
    pub fn adopt(&mut self, child: Child) -> &mut Child {
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// Starts Warden in the middle namespace with `extra` arguments after `run`, waits for its
    /// socket, and returns its PID. Session linger is shortened so final records come quickly.
    pub fn start_warden(&mut self, extra: &[&str]) -> u32 {
        self.start_warden_with("", extra, &[])
    }

    /// Starts Warden inline on the test's pair with `policy` (TOML text) as its policy file.
    pub fn start_warden_policy(&mut self, policy: &str) -> u32 {
        let file = self.path("policy.toml");
        std::fs::write(&file, policy).unwrap();
        let pair = format!("{}:{}", self.a, self.b);
        self.start_warden(&["--inline", &pair, "--policy", file.to_str().unwrap()])
    }

    /// As [`Topo::start_warden`], with `config` (TOML sections) appended to its config file.
    pub fn start_warden_config(&mut self, config: &str, extra: &[&str]) -> u32 {
        self.start_warden_with(config, extra, &[])
    }

    /// As [`Topo::start_warden`], with `config` appended to the test's `warden.toml` and `env`
    /// set in Warden's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub fn start_warden_with(&mut self, config: &str, extra: &[&str], env: &[(&str, &str)]) -> u32 {
        let cfg = self.path("warden.toml");
        std::fs::write(&cfg, format!("[sessions]\ntcp_closed_timeout = 1\n{config}")).unwrap();
        let log = std::fs::File::create(self.path("warden.log")).unwrap();
        let sock = self.socket();
        let child = warden_run(Some(&self.m), &cfg, &sock, log).args(extra).envs(env.iter().copied()).spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        let log = self.path("warden.log");
        wait_for_socket(&sock, self.children.last_mut().unwrap(), &log);
        pid
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

/// The MAC address of `dev` in `ns`.
pub fn mac(t: &Topo, ns: &str, dev: &str) -> String {
    let out = t.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    let m = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(m.len(), 17, "no MAC for {dev} in {ns}");
    m
}

/// The far host's IPv4 address ([`Topo::far_client`]).
pub const FAR4: &str = "198.18.3.2";
/// The far host's IPv6 address ([`Topo::far_client`]).
pub const FAR6: &str = "2001:db8:3::2";

/// A host behind a small-MTU link ([`Topo::far_client`]).
pub struct FarHost {
    /// The far host's namespace (FAR4, FAR6).
    pub ns: String,
    /// The namespace of the router between the small link and the far host.
    pub router: String,
}

/// A running tcpdump ([`Topo::capture_server`]).
pub struct Capture {
    /// tcpdump's PID.
    pub pid: u32,
    /// The pcap file it writes.
    pub path: PathBuf,
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
            Reply::Event(e) => events.push(e.event),
            Reply::Lost(l) => panic!("the report stream lost messages: {l:?}"),
            _ => {}
        }
    }
    (recs, events)
}

/// Requests and returns the live sessions (every page).
pub fn sessions(client: &mut Client) -> Vec<ConnectionRecord> {
    sessions_paged(client, 1000).concat()
}

/// Walks the live sessions in pages of at most `page_size`, following the cursors; returns
/// the pages (each checked to hold at most `page_size`).
pub fn sessions_paged(client: &mut Client, page_size: usize) -> Vec<Vec<ConnectionRecord>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let req = Request::ListSessions { limit: None, page_size: Some(page_size), after };
        match client.request(&req).unwrap() {
            Reply::SessionPage(p) => {
                assert!(p.sessions.len() <= page_size, "page of {} > {page_size}", p.sessions.len());
                pages.push(p.sessions);
                match p.next {
                    Some(n) => after = Some(n),
                    None => return pages,
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(pages.len() < 100_000, "the walk does not end");
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

/// Starts python's `http.server` in the server namespace on `port` (both address families),
/// serving a 2000-byte `index.html`, and waits until it listens.
pub fn index_server(t: &mut Topo, port: u16) {
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("index.html"), 2000);
    let s = t.s.clone();
    t.spawn(&s, &["python3", "-m", "http.server", &port.to_string(), "--bind", "::", "-d", www.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", port);
}

/// Fetches `/index.html` from `host`:`port` with curl in the client namespace (3 s at most);
/// returns the HTTP status curl printed (`000` when there was no answer).
pub fn curl_index(t: &Topo, host: &str, port: u16) -> String {
    let url = if host.contains(':') { format!("http://[{host}]:{port}/index.html") } else { format!("http://{host}:{port}/index.html") };
    let out = t.exec(&t.c, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", &url]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `args` inside network namespace `ns` (`ip netns exec`) and returns its output.
pub fn exec_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap()
}

/// Starts `args` inside network namespace `ns` with its output discarded; the caller ends it
/// by its PID.
pub fn spawn_in(ns: &str, args: &[&str]) -> Child {
    Command::new("ip").args(["netns", "exec", ns]).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// `warden run --config CFG --socket SOCK --report-interval 1` (inside namespace `ns` when
/// given), stdout discarded and stderr to `log`: the caller adds arguments and spawns it.
pub fn warden_run(ns: Option<&str>, cfg: &std::path::Path, sock: &std::path::Path, log: std::fs::File) -> Command {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_warden")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_warden")),
    };
    cmd.args(["run", "--config"]).arg(cfg).arg("--socket").arg(sock).args(["--report-interval", "1"]);
    cmd.stdout(Stdio::null()).stderr(log);
    cmd
}

/// Waits up to 20 s for a Warden started as `child` to accept connections on `sock`; panics
/// with its log (file `log`) when it exits first or never does.
pub fn wait_for_socket(sock: &std::path::Path, child: &mut Child, log: &std::path::Path) {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if Client::connect(sock).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("warden exited with {st}: {}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("warden did not open its socket: {}", log());
}
