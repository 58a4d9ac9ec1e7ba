//! Who is behind an attached interface: the container, Kubernetes pod or VM (issue 12, "who
//! is talking"). Runs on the control thread when something is attached, never on the packet
//! path.
//!
//! # Containers: network namespace → processes → cgroup → runtime metadata
//! 1. The namespace's inode: `stat` of the path given (`/proc/PID/ns/net`,
//!    `/run/netns/NAME`, `/var/run/docker/netns/...`; nsfs files have the namespace's inode).
//! 2. The processes in it: every `/proc/PID/ns/net` whose link reads `net:[INODE]`.
//! 3. Their cgroup (`/proc/PID/cgroup`, v1 and v2 lines): container id, runtime and pod uid
//!    in the forms of each runtime and cgroup manager ([`cgroup`]: Podman cgroupfs
//!    `/libpod_parent/libpod-<id>` and systemd `libpod-<id>.scope`, Docker `/docker/<id>` and
//!    `docker-<id>.scope`, containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`,
//!    the kubelet's `kubepods-<qos>-pod<uid>.slice` and `/kubepods/<qos>/pod<uid>/<id>`).
//! 4. Names and pod metadata from the runtimes' own files ([`meta`]): containers/storage's
//!    `containers.json` (Podman, CRI-O), Docker's `config.v2.json`, the CRI annotations in the
//!    OCI bundle `config.json` (containerd, CRI-O), CRI-O's pod labels.
//!
//! A pod's namespace holds its sandbox (pause) container and its app containers: the pod's
//! fields come from any of them, the container fields from the first app container (lowest
//! pid), else from the sandbox. Runtime monitors (conmon) never run in the namespace, and
//! host processes there (no container cgroup) are skipped.
//!
//! # VMs: tap → libvirt domain
//! [`libvirt`]: the live domain XML under `/run/libvirt/qemu` naming the tap as an
//! interface's `target dev`; else the process holding the tap (a `/dev/net/tun` descriptor
//! whose `fdinfo` says `iff: NAME`) and its libvirt machine cgroup.
//!
//! # Registry
//! [`Registry`]: what was discovered per attachment, with its addresses, read where records
//! are built (`client_identity` / `server_identity`) and by `ListWorkloads`, and the source
//! of the addresses of policy workloads selected by identity ([`crate::policy::Selector`]).
//!
//! Every path is under a root directory ([`Discovery::new`]; `/` on a host), so the tests run
//! on recorded files in `dp/tests/fixtures/identity/root` (README there).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use warden_control::Identity;

pub mod cgroup;
pub mod libvirt;
pub mod meta;
mod registry;

pub use registry::{Discovered, Registry};

/// Most processes whose namespace link is read in one scan (a bound on the work of one
/// discovery on a host with very many processes).
pub const MAX_PROCS: usize = 1 << 20;

/// Finds identities under one root directory (`/` on a host).
#[derive(Debug, Clone)]
pub struct Discovery {
    root: PathBuf,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery::host()
    }
}

/// `net:[4026531840]` → 4026531840.
fn netns_link_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// One container found in a namespace, before merging.
struct Found {
    cg: cgroup::CgroupRef,
    meta: meta::Meta,
}

impl Discovery {
    /// Discovery on this host (`/`).
    pub fn host() -> Self {
        Discovery { root: PathBuf::from("/") }
    }

    /// Discovery under `root` (tests: a directory of recorded files).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Discovery { root: root.into() }
    }

    fn proc(&self) -> PathBuf {
        self.root.join("proc")
    }

    /// Pids (ascending) whose network namespace is `inode`.
    pub fn pids_in_netns(&self, inode: u64) -> Vec<u32> {
        self.pids_where(|base| {
            std::fs::read_link(base.join("ns/net")).ok().and_then(|l| netns_link_inode(&l.to_string_lossy())) == Some(inode)
        })
    }

    /// Pids (ascending, at most [`MAX_PROCS`] entries of `/proc` read) whose `/proc/PID`
    /// directory passes `keep`.
    fn pids_where(&self, keep: impl Fn(&Path) -> bool) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(self.proc()) else { return Vec::new() };
        let mut pids: Vec<u32> = dir
            .filter_map(Result::ok)
            .take(MAX_PROCS)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| keep(&self.proc().join(pid.to_string())))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// What `/proc/PID/cgroup` says about `pid` (`None`: unreadable, or no container, pod or VM).
    pub fn cgroup_of(&self, pid: u32) -> Option<cgroup::CgroupRef> {
        let text = std::fs::read_to_string(self.proc().join(pid.to_string()).join("cgroup")).ok()?;
        cgroup::parse_proc_cgroup(&text)
    }

    /// The identity of the network namespace at `path`.
    ///
    /// # Errors
    /// `path` cannot be read (`stat`). A namespace with no container in it is not an error:
    /// its identity is empty.
    pub fn netns(&self, path: &Path) -> Result<Identity, String> {
        let md = std::fs::metadata(path).map_err(|e| format!("network namespace {}: {e}", path.display()))?;
        Ok(self.netns_inode(md.ino()))
    }

    /// The identity of the network namespace with inode `inode`: its processes' containers
    /// merged as the module docs say.
    pub fn netns_inode(&self, inode: u64) -> Identity {
        let mut found: Vec<Found> = Vec::new();
        for pid in self.pids_in_netns(inode) {
            let Some(cg) = self.cgroup_of(pid) else { continue };
            if cg.monitor || found.iter().any(|f| f.cg.id.is_some() && f.cg.id == cg.id) {
                continue;
            }
            let meta = match &cg.id {
                Some(id) => meta::lookup(&self.root, cg.runtime, id),
                None => meta::Meta::default(),
            };
            found.push(Found { cg, meta });
        }
        merge(&found)
    }

    /// The identity behind tap `name`: the libvirt domain naming it, else the VM of the
    /// process holding it; `host_iface` is `name` in any case.
    pub fn tap(&self, name: &str) -> Identity {
        let vm_name = libvirt::find(&self.root, name).or_else(|| {
            self.tap_holders(name).into_iter().find_map(|pid| self.cgroup_of(pid).and_then(|c| c.vm_name))
        });
        Identity { vm_name, host_iface: Some(name.to_string()), ..Identity::default() }
    }

    /// Pids (ascending) holding a `/dev/net/tun` descriptor attached to `tap` (its fdinfo's
    /// `iff:` line, Linux's `tun_chr_show_fdinfo`).
    pub fn tap_holders(&self, tap: &str) -> Vec<u32> {
        self.pids_where(|base| {
            let Ok(fds) = std::fs::read_dir(base.join("fd")) else { return false };
            fds.filter_map(Result::ok).any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/net/tun"))
                    && std::fs::read_to_string(base.join("fdinfo").join(fd.file_name()))
                        .is_ok_and(|info| info.lines().any(|l| l.strip_prefix("iff:").is_some_and(|v| v.trim() == tap)))
            })
        })
    }
}

/// One identity from the containers found in a namespace (module docs).
fn merge(found: &[Found]) -> Identity {
    let mut id = Identity::default();
    // Container fields: the first app container, else the first container (a sandbox alone).
    let main = found
        .iter()
        .find(|f| f.cg.id.is_some() && !f.meta.sandbox)
        .or_else(|| found.iter().find(|f| f.cg.id.is_some()));
    if let Some(f) = main {
        id.container_id = f.cg.id.clone();
        id.container_name = f.meta.name.clone();
        id.runtime = f.meta.runtime.or(f.cg.runtime).map(String::from);
    }
    for f in found {
        let pick = |a: &mut Option<String>, b: &Option<String>| {
            if a.is_none() {
                a.clone_from(b);
            }
        };
        pick(&mut id.pod_name, &f.meta.pod_name);
        pick(&mut id.pod_namespace, &f.meta.pod_namespace);
        pick(&mut id.pod_uid, &f.meta.pod_uid);
        pick(&mut id.pod_uid, &f.cg.pod_uid);
        pick(&mut id.vm_name, &f.cg.vm_name);
        if id.pod_labels.is_empty() {
            id.pod_labels.clone_from(&f.meta.labels);
        }
        if id.runtime.is_none() {
            id.runtime = f.meta.runtime.or(f.cg.runtime).map(String::from);
        }
    }
    id
}

/// The identity of the network namespace at `path` on this host (`/proc/PID/ns/net`,
/// `/run/netns/NAME`): the API the attach stage calls. An unreadable path gives an empty
/// identity (logged); [`Discovery::netns`] returns the error instead.
pub fn discover_netns(path: impl AsRef<Path>) -> Identity {
    Discovery::host().netns(path.as_ref()).unwrap_or_else(|e| {
        tracing::debug!("identity: {e}");
        Identity::default()
    })
}

/// The identity behind tap `name` on this host ([`Discovery::tap`]).
pub fn discover_tap(name: &str) -> Identity {
    Discovery::host().tap(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Discovery {
        Discovery::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity/root"))
    }

    #[test]
    fn processes_by_namespace() {
        let d = fixtures();
        assert_eq!(d.pids_in_netns(4026532900), vec![2001, 2002]);
        assert_eq!(d.pids_in_netns(4026531840), vec![1, 2003, 5001]);
        assert!(d.pids_in_netns(42).is_empty());
        assert_eq!(netns_link_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(netns_link_inode("mnt:[4026531840]"), None);
    }

    #[test]
    fn podman_container_recorded_here() {
        let id = fixtures().netns_inode(4026532805);
        assert_eq!(id.container_id.as_deref(), Some("ce8cb697cef3ffbfe462ab3ad8441608b1e5b93c57a8b787d13f52a7d43ff095"));
        assert_eq!(id.container_name.as_deref(), Some("h12id-c11735"));
        assert_eq!(id.runtime.as_deref(), Some("podman"));
        assert_eq!((id.pod_name, id.vm_name), (None, None));
    }

    #[test]
    fn cri_o_pod_app_container_and_pod_labels() {
        let id = fixtures().netns_inode(4026532900);
        assert_eq!(id.container_id, Some("b2".repeat(32)), "the app container, not the sandbox");
        assert_eq!(id.container_name.as_deref(), Some("cart"));
        assert_eq!(id.runtime.as_deref(), Some("cri-o"));
        assert_eq!(id.pod_name.as_deref(), Some("cart-7d9f8"));
        assert_eq!(id.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(id.pod_uid.as_deref(), Some("0f1e2d3c-4b5a-4697-8879-6a5b4c3d2e1f"));
        assert_eq!(id.pod_labels.get("app").map(String::as_str), Some("cart"));
        assert_eq!(id.pod_labels.len(), 2);
    }

    #[test]
    fn containerd_pod_on_cgroupfs() {
        let id = fixtures().netns_inode(4026533000);
        assert_eq!(id.container_id, Some("d4".repeat(32)));
        assert_eq!(id.container_name.as_deref(), Some("nginx"));
        assert_eq!(id.runtime.as_deref(), Some("containerd"));
        assert_eq!(id.pod_name.as_deref(), Some("web-0"));
        assert_eq!(id.pod_namespace.as_deref(), Some("default"));
        assert_eq!(id.pod_uid.as_deref(), Some("11111111-2222-4333-8444-555555555555"));
    }

    #[test]
    fn docker_container() {
        let id = fixtures().netns_inode(4026533100);
        assert_eq!(id.container_id, Some("e5".repeat(32)));
        assert_eq!(id.container_name.as_deref(), Some("db"));
        assert_eq!(id.runtime.as_deref(), Some("docker"));
    }

    #[test]
    fn host_namespace_is_nobody() {
        // pid 1 (init.scope), a CRI-O conmon (monitor) and QEMU live there: no container.
        let id = fixtures().netns_inode(4026531840);
        assert_eq!(id.container_id, None);
        assert_eq!(id.vm_name.as_deref(), Some("db-vm"), "QEMU's machine cgroup");
        assert_eq!(fixtures().netns_inode(7), Identity::default());
    }

    #[test]
    fn taps() {
        let d = fixtures();
        let web = d.tap("vnet0");
        assert_eq!((web.vm_name.as_deref(), web.host_iface.as_deref()), (Some("web-vm"), Some("vnet0")));
        assert_eq!(d.tap("vnet1").vm_name.as_deref(), Some("db-vm"));
        assert_eq!(d.tap_holders("vnet7"), vec![5001]);
        assert!(d.tap_holders("vnet0").is_empty());
        // No XML names vnet7: the holder's machine cgroup does.
        assert_eq!(d.tap("vnet7").vm_name.as_deref(), Some("db-vm"));
        let none = d.tap("tap-none");
        assert_eq!((none.vm_name, none.host_iface.as_deref()), (None, Some("tap-none")));
    }

    #[test]
    fn netns_path_errors_and_host() {
        assert!(fixtures().netns(Path::new("/nonexistent/ns")).unwrap_err().contains("/nonexistent/ns"));
        assert_eq!(discover_netns("/nonexistent/ns"), Identity::default());
        // This test's own namespace on the real host: whatever it holds, discovery reads it.
        let me = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap();
        assert!(Discovery::host().pids_in_netns(me).contains(&std::process::id()));
    }
}
