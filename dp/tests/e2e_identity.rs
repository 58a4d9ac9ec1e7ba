//! Who is talking, on this machine's real runtime: a Podman container (runc, cgroupfs manager,
//! an image `podman import`ed from a busybox-static rootfs, on a network of its own in
//! 198.18.0.0/15) is found from its network namespace (`/proc/PID/ns/net` and the
//! `/run/netns/...` file Podman made) with its id, name and runtime; its identity and address
//! fill a policy workload selected by container name; a host process's namespace names no
//! container; a tap held by a process (as QEMU holds a VM's) is found with its holder.
//!
//! Records naming containers through a running daemon need an attachment (the attach stage,
//! `e2e_attach.rs`), which sets the registry; here the registry and the reporter are tested
//! without a daemon (`control::tests::records_and_events_carry_identities`).
//!
//! Everything the test creates (container, image, network, rootfs, namespace) has the test's
//! pid in its name and is removed at the end, also when it fails. Podman's default network
//! (10.88.0.0/16) is never used.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use warden_dp::identity::{discover_netns, discover_tap, Discovery, Registry};
use warden_dp::policy::{CompiledPolicy, Policy};

/// What the test made, removed on drop (container first, then image, network, rootfs).
#[derive(Default)]
struct Made {
    container: Option<String>,
    image: Option<String>,
    network: Option<String>,
    rootfs: Option<PathBuf>,
    netns: Option<String>,
    holder: Option<std::process::Child>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(mut c) = self.holder.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = &self.container {
            try_sh(&["podman", "rm", "-f", "-t", "0", c]);
        }
        if let Some(i) = &self.image {
            try_sh(&["podman", "rmi", "-f", i]);
        }
        if let Some(n) = &self.network {
            try_sh(&["podman", "network", "rm", "-f", n]);
        }
        if let Some(r) = &self.rootfs {
            let _ = std::fs::remove_dir_all(r);
        }
        if let Some(n) = &self.netns {
            try_sh(&["ip", "netns", "del", n]);
        }
    }
}

fn podman(args: &[&str]) -> String {
    let mut all = vec!["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&sh(&all).stdout).trim().to_string()
}

/// True when the ELF64 little-endian file `elf` has a PT_INTERP program header.
fn has_interp(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    assert!(elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2, "not an ELF64 file");
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, n) = (u16_at(0x36), u16_at(0x38));
    (0..n).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// A rootfs holding the static busybox and its applet links, imported as `image`.
fn import_busybox(made: &mut Made, image: &str) {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (scripts/install-deps.sh: busybox-static)");
    // A dynamic busybox (a PT_INTERP program header naming the loader) would need the host's
    // libraries inside the image.
    assert!(!has_interp(&busybox), "/bin/busybox is not static: install busybox-static (scripts/install-deps.sh)");
    let root = std::env::temp_dir().join(format!("warden-identity-{}", std::process::id()));
    made.rootfs = Some(root.clone());
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/busybox"), busybox).unwrap();
    sh(&["chmod", "0755", root.join("bin/busybox").to_str().unwrap()]);
    for applet in ["sh", "sleep", "ip", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let mut tar = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new("podman").args(["import", "-", image]).stdin(tar.stdout.take().unwrap()).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of the rootfs");
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    made.image = Some(image.to_string());
}

/// A network of the test's own in 198.18.0.0/15 (a third octet from the pid, the next ones if
/// another test's network has it).
fn create_network(made: &mut Made, name: &str) {
    let pid = std::process::id();
    for i in 0..20 {
        let subnet = format!("198.18.{}.0/24", 200 + (pid + i) % 50);
        if try_sh(&["podman", "network", "create", "--subnet", &subnet, name]) {
            made.network = Some(name.to_string());
            return;
        }
    }
    panic!("podman network create {name}: no free 198.18.200-249.0/24 subnet");
}

#[test]
fn podman_container_from_its_network_namespace() {
    require_root();
    let pid = std::process::id();
    let mut made = Made::default();
    let (image, net, name) = (format!("localhost/warden-id-{pid}"), format!("wid-net-{pid}"), format!("wid-web-{pid}"));
    import_busybox(&mut made, &image);
    create_network(&mut made, &net);
    made.container = Some(name.clone());
    let id = podman(&[
        "run", "-d", "--name", &name, "--network", &net, "--ulimit", "nofile=20000:20000", "--ulimit",
        "nproc=4096:4096", &image, "sleep", "600",
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&podman(&["inspect", &name])).unwrap();
    let c = &inspect[0];
    assert_eq!(c["Id"].as_str(), Some(id.as_str()));
    let cpid = c["State"]["Pid"].as_u64().expect("a running container");
    let ip = c["NetworkSettings"]["Networks"][&net]["IPAddress"].as_str().expect("an address").to_string();
    assert!(ip.starts_with("198.18."), "{ip}");

    // From the process's namespace link.
    let who = discover_netns(format!("/proc/{cpid}/ns/net"));
    assert_eq!(who.container_id.as_deref(), Some(id.as_str()), "{who:?}");
    assert_eq!(who.container_name.as_deref(), Some(name.as_str()));
    assert_eq!(who.runtime.as_deref(), Some("podman"));
    assert_eq!((who.pod_name.as_ref(), who.vm_name.as_ref()), (None, None));
    // This machine's form of the cgroup path.
    let cg = Discovery::host().cgroup_of(cpid as u32).expect("a container cgroup");
    assert_eq!(cg.id.as_deref(), Some(id.as_str()));
    let raw = std::fs::read_to_string(format!("/proc/{cpid}/cgroup")).unwrap();
    assert!(raw.contains(&format!("/libpod_parent/libpod-{id}")), "{raw}");
    // From the namespace file Podman bind-mounted (the form the CNI plugin gets).
    let sandbox = c["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default();
    if !sandbox.is_empty() {
        assert_eq!(std::fs::metadata(sandbox).unwrap().ino(), std::fs::metadata(format!("/proc/{cpid}/ns/net")).unwrap().ino());
        assert_eq!(Discovery::host().netns(sandbox.as_ref()).unwrap(), who, "{sandbox}");
    }
    // The host's own namespace: this test process, no container.
    let host = discover_netns("/proc/self/ns/net");
    assert_eq!(host.container_id, None, "{host:?}");

    // Registry and a policy workload selected by container name.
    let registry = Registry::new();
    registry.set(&name, who.clone(), vec![ip.parse().unwrap()]);
    assert_eq!(registry.lookup(ip.parse().unwrap()).as_ref(), Some(&who));
    let policy = Policy::from_toml(&format!(
        "default_mode = \"protect\"\n[[workload]]\nid = \"web\"\ncontainers = [\"wid-web-{pid}\"]\n[[workload]]\nid = \"other\"\ncontainers = [\"nothing-*\"]\n"
    ))
    .unwrap();
    let (filled, notes) = policy.with_discovered(&registry.list());
    assert!(notes.is_empty(), "{notes:?}");
    let compiled = CompiledPolicy::compile(&filled).unwrap();
    let w = compiled.workload_of(ip.parse().unwrap()).expect("the container's address is a workload's");
    assert_eq!(compiled.workload_id(w), "web");
    assert!(filled.workloads[1].ips.is_empty());
}

#[test]
fn tap_held_by_a_process() {
    require_root();
    let pid = std::process::id();
    let mut made = Made::default();
    let ns = format!("wid-tap-{pid}");
    sh(&["ip", "netns", "add", &ns]);
    made.netns = Some(ns.clone());
    let tap = format!("widtap{}", pid % 100_000);
    // A process holding the tap as QEMU does (TUNSETIFF on /dev/net/tun), in the test's namespace.
    let script = format!(
        "import fcntl, struct, sys, time\n\
         f = open('/dev/net/tun', 'r+b', buffering=0)\n\
         fcntl.ioctl(f, 0x400454ca, struct.pack('16sH22x', b'{tap}', 0x0002 | 0x1000))\n\
         print('ready', flush=True)\n\
         time.sleep(600)\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let holder = child.id();
    made.holder = Some(child);
    let holders = Discovery::host().tap_holders(&tap);
    assert_eq!(holders, vec![holder], "the python process (ip netns exec execs it in place)");
    // No libvirt domain and no machine cgroup: only the interface is known.
    let who = discover_tap(&tap);
    assert_eq!(who.host_iface.as_deref(), Some(tap.as_str()));
    assert_eq!(who.vm_name, None);
}

/// The daemon starts with a policy whose workload is selected by identity only (no `ips`),
/// keeps it as written, answers `ListWorkloads` (nothing attached: an empty list, not an
/// error), still forwards the test's traffic, and refuses a bad selector naming line and field.
#[test]
fn daemon_serves_workloads_and_selector_policies() {
    use warden_control::{Reply, Request};
    require_root();
    let mut t = Topo::new(ClientLink::Veth);
    let policy = format!(
        "default_mode = \"learn\"\n[[workload]]\nid = \"web\"\ncontainers = [\"web-*\"]\npod_labels = {{ app = \"web\" }}\nmode = \"protect\"\n\n[[workload]]\nid = \"client\"\nips = [\"{C4}\"]\n"
    );
    t.start_warden_policy(&policy);
    let mut c = t.client();
    match c.request(&Request::ListWorkloads {}) {
        Ok(Reply::Workloads(v)) => assert!(v.is_empty(), "{v:?}"),
        other => panic!("ListWorkloads: {other:?}"),
    }
    let Ok(Reply::PolicyText(text)) = c.request(&Request::PolicyShow {}) else { panic!("policy show") };
    assert!(text.contains("containers = [\"web-*\"]"), "{text}");
    assert!(text.contains("app = \"web\""), "{text}");
    // The selected workload has no address yet: the server is no workload, the client's
    // learn mode forwards.
    assert!(t.ping(S4, 1), "{}", t.warden_log());
    let bad = "[[workload]]\nid = \"web\"\npods = [\"web-*\"]\n".to_string();
    let err = c.request(&Request::PolicyApply { text: bad }).expect_err("a pod pattern without namespace");
    let msg = err.to_string();
    assert!(msg.contains("line 3") && msg.contains("\"pods\"") && msg.contains("namespace/name"), "{msg}");
}
