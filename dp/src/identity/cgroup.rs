//! Container id, runtime, Kubernetes pod uid and libvirt VM name from a process's cgroup path
//! (`/proc/PID/cgroup`, cgroup v1 and v2 lines).
//!
//! The forms, as each runtime and cgroup manager names the cgroup it creates (the container
//! id is 64 lowercase hex digits; a pod uid is a UUID whose `-` the systemd driver writes as
//! `_`):
//!
//! | runtime, cgroup manager | path (last components) |
//! | --- | --- |
//! | Podman, cgroupfs (this machine) | `/libpod_parent/libpod-<id>` |
//! | Podman, systemd | `/machine.slice/libpod-<id>.scope` (v2 may add `/container`); conmon: `libpod-conmon-<id>.scope` |
//! | Docker, cgroupfs | `/docker/<id>` |
//! | Docker, systemd | `/system.slice/docker-<id>.scope` |
//! | containerd (CRI), systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | any CRI runtime, cgroupfs | `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` (guaranteed QoS) |
//! | CRI-O, systemd | `.../kubepods-pod<uid_>.slice/crio-<id>.scope`; conmon: `crio-conmon-<id>.scope` |
//! | Docker under the kubelet (dockershim, cri-dockerd), systemd | `.../kubepods-besteffort-pod<uid_>.slice/docker-<id>.scope` |
//! | libvirt QEMU, systemd | `/machine.slice/machine-qemu\x2d<n>\x2d<name>.scope/...` |
//! | libvirt QEMU, cgroupfs | `/machine/qemu-<n>-<name>.libvirt-qemu/...` |
//!
//! Sources: Podman's `libpod/runtime_ctr.go` (`libpod_parent`, `libpod-` and `libpod-conmon-`
//! scopes), runc's `libcontainer/cgroups/systemd` (`<prefix>-<id>.scope` from a cgroupsPath
//! `slice:prefix:id`), the kubelet's `pkg/kubelet/cm/cgroup_manager_linux.go` (QoS slices and
//! `pod<uid>`, `-` escaped to `_` under systemd), CRI-O's `internal/config/cgmgr`, libvirt's
//! `src/util/vircgroup.c` (machine names, `\x2d` is systemd's escape of `-`).

/// What a cgroup path says about who runs in it. Every field is `None` when the path does
/// not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupRef {
    /// `podman`, `docker`, `containerd` or `cri-o`; `None` also for the kubelet's cgroupfs
    /// form (`/kubepods/.../<id>`), where only the runtime's metadata tells.
    pub runtime: Option<&'static str>,
    /// Container id (64 lowercase hex digits).
    pub id: Option<String>,
    /// Kubernetes pod uid (with `-`, as the API server writes it).
    pub pod_uid: Option<String>,
    /// True for a runtime's monitor process (Podman's and CRI-O's conmon), which runs beside
    /// the container, not in it.
    pub monitor: bool,
    /// libvirt domain name (a QEMU process's cgroup).
    pub vm_name: Option<String>,
}

impl CgroupRef {
    /// True when the path named nothing at all.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.pod_uid.is_none() && self.vm_name.is_none()
    }
}

/// True for a container id: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a pod uid in either spelling (`-` or the systemd driver's `_`): 8-4-4-4-12 hex.
fn pod_uid(s: &str) -> Option<String> {
    let u: String = s.chars().map(|c| if c == '_' { '-' } else { c }).collect();
    let groups: Vec<&str> = u.split('-').collect();
    let ok = groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| u.to_ascii_lowercase())
}

/// systemd's unit-name unescaping of `\xNN` (`machine-qemu\x2d1\x2dvm1.scope`).
fn unescape_systemd(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `<n>-<name>` of a libvirt machine (the domain id, then the name, which may hold `-`).
fn vm_of(rest: &str) -> Option<String> {
    let (n, name) = rest.split_once('-')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()).then(|| name.to_string())
}

/// Reads one cgroup path (the third field of a `/proc/PID/cgroup` line). The deepest
/// component naming a container wins (Podman's systemd v2 form puts the payload in a
/// `container` child of the scope).
pub fn parse_path(path: &str) -> CgroupRef {
    let mut r = CgroupRef::default();
    let mut in_kubepods = false;
    let mut prev = "";
    for c in path.split('/').filter(|c| !c.is_empty()) {
        let unit = c.strip_suffix(".scope").unwrap_or(c);
        let prefixed = [
            ("libpod-conmon-", "podman", true),
            ("libpod-", "podman", false),
            ("crio-conmon-", "cri-o", true),
            ("crio-", "cri-o", false),
            ("cri-containerd-", "containerd", false),
            ("docker-", "docker", false),
        ];
        let mut hit = false;
        for (prefix, runtime, monitor) in prefixed {
            if let Some(id) = unit.strip_prefix(prefix) {
                if is_container_id(id) {
                    r.runtime = Some(runtime);
                    r.id = Some(id.to_string());
                    r.monitor = monitor;
                    hit = true;
                }
                break;
            }
        }
        if !hit && is_container_id(c) && (prev == "docker" || in_kubepods) {
            r.runtime = (prev == "docker").then_some("docker");
            r.id = Some(c.to_string());
            r.monitor = false;
        }
        if c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-") {
            in_kubepods = true;
            // `kubepods-burstable-pod<uid_>.slice`, `kubepods-pod<uid_>.slice`.
            if let Some(slice) = c.strip_suffix(".slice") {
                if let Some(i) = slice.rfind("-pod") {
                    if let Some(u) = pod_uid(&slice[i + 4..]) {
                        r.pod_uid = Some(u);
                    }
                }
            }
        } else if in_kubepods {
            if let Some(u) = c.strip_prefix("pod").and_then(pod_uid) {
                r.pod_uid = Some(u);
            }
        }
        if let Some(m) = c.strip_prefix("machine-qemu").and_then(|m| m.strip_suffix(".scope")) {
            let m = unescape_systemd(m);
            if let Some(name) = m.strip_prefix('-').and_then(vm_of) {
                r.vm_name = Some(name);
            }
        } else if let Some(m) = c.strip_suffix(".libvirt-qemu").and_then(|m| m.strip_prefix("qemu-")) {
            if let Some(name) = vm_of(m) {
                r.vm_name = Some(name);
            }
        }
        prev = c;
    }
    r
}

/// Reads `/proc/PID/cgroup` (`hierarchy-id:controllers:path` per line; v2's line is
/// `0::path`, a hybrid host has both) and keeps the line that says most: a container that is
/// not a monitor, then a monitor, then a pod or VM. `None` when no line names anything.
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupRef> {
    let rank = |r: &CgroupRef| match (&r.id, r.monitor) {
        (Some(_), false) => 3 + u8::from(r.pod_uid.is_some()),
        (Some(_), true) => 2,
        (None, _) => 1,
    };
    let mut best: Option<CgroupRef> = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        let r = parse_path(path);
        if r.is_empty() {
            continue;
        }
        if best.as_ref().is_none_or(|b| rank(&r) > rank(b)) {
            best = Some(r);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ce8cb697cef3ffbfe462ab3ad8441608b1e5b93c57a8b787d13f52a7d43ff095";
    const UID: &str = "5f3c8a2e-9d4b-4c1a-8e7f-0a1b2c3d4e5f";

    /// (path, runtime, id, pod uid, monitor, vm).
    type Row<'a> = (String, Option<&'a str>, Option<&'a str>, Option<&'a str>, bool, Option<&'a str>);

    /// Every known form.
    #[test]
    fn every_known_form() {
        let uid_ = UID.replace('-', "_");
        let rows: Vec<Row<'_>> = vec![
            (format!("/libpod_parent/libpod-{ID}"), Some("podman"), Some(ID), None, false, None),
            (format!("/machine.slice/libpod-{ID}.scope"), Some("podman"), Some(ID), None, false, None),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some("podman"), Some(ID), None, false, None),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), Some("podman"), Some(ID), None, true, None),
            ("/libpod_parent/conmon".to_string(), None, None, None, false, None),
            (format!("/docker/{ID}"), Some("docker"), Some(ID), None, false, None),
            (format!("/system.slice/docker-{ID}.scope"), Some("docker"), Some(ID), None, false, None),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
                Some(ID),
                Some(UID),
                false,
                None,
            ),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), None, Some(ID), Some(UID), false, None),
            (format!("/kubepods/pod{UID}/{ID}"), None, Some(ID), Some(UID), false, None),
            (format!("/kubepods/burstable/pod{UID}"), None, None, Some(UID), false, None),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                Some("cri-o"),
                Some(ID),
                Some(UID),
                false,
                None,
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{ID}.scope"),
                Some("cri-o"),
                Some(ID),
                Some(UID),
                true,
                None,
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/docker-{ID}.scope"),
                Some("docker"),
                Some(ID),
                Some(UID),
                false,
                None,
            ),
            (r"/machine.slice/machine-qemu\x2d3\x2dweb\x2dvm.scope/libvirt/emulator".into(), None, None, None, false, Some("web-vm")),
            ("/machine/qemu-1-db.libvirt-qemu/emulator".into(), None, None, None, false, Some("db")),
            ("/user.slice/user-0.slice/session-3.scope".into(), None, None, None, false, None),
            ("/".into(), None, None, None, false, None),
            // Not ids: too short, upper case, a hex run outside the known places.
            (format!("/docker/{}", &ID[..12]), None, None, None, false, None),
            (format!("/docker/{}", ID.to_uppercase()), None, None, None, false, None),
            (format!("/system.slice/{ID}"), None, None, None, false, None),
            ("/kubepods/besteffort/podnot-a-uid".into(), None, None, None, false, None),
        ];
        for (path, runtime, id, uid, monitor, vm) in rows {
            let r = parse_path(&path);
            assert_eq!(r.runtime, runtime, "{path}");
            assert_eq!(r.id.as_deref(), id, "{path}");
            assert_eq!(r.pod_uid.as_deref(), uid, "{path}");
            assert_eq!(r.monitor, monitor, "{path}");
            assert_eq!(r.vm_name.as_deref(), vm, "{path}");
        }
    }

    /// This machine's hybrid layout (v1 controllers and the v2 line), recorded from a Podman
    /// container run with `--cgroup-manager=cgroupfs`.
    #[test]
    fn v1_and_v2_lines() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/identity/root/proc/1001/cgroup"
        ))
        .expect("fixture");
        let r = parse_proc_cgroup(&text).expect("a container");
        assert_eq!(r.runtime, Some("podman"));
        assert_eq!(r.id.as_deref(), Some(ID));
        // A v2-only host: one line.
        let r = parse_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")).expect("v2");
        assert_eq!((r.runtime, r.id.as_deref()), (Some("docker"), Some(ID)));
        // A v1 host where only some controllers are in the container's cgroup, and the
        // memory one (not first) carries the pod.
        let uid_ = UID.replace('-', "_");
        let text = format!(
            "12:cpuset:/\n11:memory:/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope\n1:name=systemd:/\n0::/\n"
        );
        let r = parse_proc_cgroup(&text).expect("v1");
        assert_eq!((r.runtime, r.id.as_deref(), r.pod_uid.as_deref()), (Some("containerd"), Some(ID), Some(UID)));
        // A host process: nothing.
        assert_eq!(parse_proc_cgroup("0::/init.scope\n1:name=systemd:/init.scope\n"), None);
        // Garbage lines are skipped, not fatal.
        assert_eq!(parse_proc_cgroup("no colons here\n\n::\n"), None);
    }
}
