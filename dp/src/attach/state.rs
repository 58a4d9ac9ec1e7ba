//! The state of each attachment, on disk under `[attach] state_dir` (default
//! `/run/warden/attach`, a tmpfs: a reboot recreates every interface anyway), one JSON file per
//! attachment, written *before* each change to the plumbing so that a Warden killed at any
//! point leaves a file saying what it had set out to do and what the original was. Files are
//! written to a temporary name, synced and renamed (rename is atomic within a directory,
//! rename(2)), so a reader sees the old or the new state, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warden_control::{AttachSpec, Identity};

use super::link::Vlan;

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being set up: some of the changes may have been made (a restart restores).
    Starting,
    /// Inline: the host interface is off its bridge, Warden's far end is on it.
    Attached,
    /// The workload's interface went away; the original plumbing is gone with it and Warden's
    /// interfaces were removed. Re-attached when the same identity returns.
    Gone,
}

/// Everything needed to restore an attachment's original plumbing and to attach it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// File format version.
    pub version: u32,
    /// The attachment's name (file name, policy workload id).
    pub name: String,
    /// The request as made (for re-attachment).
    pub spec: AttachSpec,
    /// `container`, `netns`, `tap`, `iface`.
    pub kind: String,
    /// What identifies the workload when it returns (container id, namespace, tap name).
    pub key: String,
    /// Phase.
    pub phase: Phase,
    /// The workload's namespace file, when known.
    pub netns: Option<PathBuf>,
    /// The interface inside it.
    pub inner: Option<String>,
    /// The host-side interface (veth peer or tap).
    pub host: String,
    /// Its ifindex when attached (a new interface of the same name is another one).
    pub host_ifindex: u32,
    /// The bridge it was a port of.
    pub bridge: String,
    /// Its bridge port settings (`info_slave_data`).
    pub port: serde_json::Map<String, serde_json::Value>,
    /// Its VLANs on the bridge.
    pub vlans: Vec<Vlan>,
    /// Its MTU, bytes (Warden's veths get the same).
    pub mtu: u32,
    /// Its MAC (Warden's far end gets the same, so the bridge's own address, when derived
    /// from its ports, does not change).
    pub mac: String,
    /// Warden's near end (inline pair with the host interface).
    pub near: String,
    /// Warden's far end (on the bridge in the host interface's place).
    pub far: String,
    /// Features of the inner interface changed, with their previous values.
    pub inner_features: Vec<(String, bool)>,
    /// Features of the host interface changed, with their previous values.
    pub host_features: Vec<(String, bool)>,
    /// Mode enforced.
    pub mode: String,
    /// Addresses.
    pub ips: Vec<String>,
    /// The MAC the workload sends from (its inner interface's; `None` for a tap, or in a state
    /// written before Warden recorded it).
    #[serde(default)]
    pub inner_mac: Option<String>,
    /// The policy workload its addresses belong to.
    pub workload: Option<String>,
    /// True when that workload is Warden's implicit one (named after the attachment).
    pub implicit: bool,
    /// Who it is.
    pub identity: Identity,
}

/// Current [`State::version`].
pub const VERSION: u32 = 1;

/// True when `name` can be an attachment name: 1 to 64 of `[A-Za-z0-9._-]`, not starting
/// with a dot (it names a file in the state directory and a policy workload).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Writes `s` atomically (temporary file, fsync, rename) under `dir`, creating `dir` (mode
/// 0700) when missing.
///
/// # Errors
/// The directory or file cannot be written.
pub fn save(dir: &Path, s: &State) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("attach state directory {}: {e}", dir.display()))?;
    let path = file(dir, &s.name);
    let tmp = dir.join(format!(".{}.tmp", s.name));
    let text = serde_json::to_vec_pretty(s).map_err(|e| format!("internal: {e}"))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes the state of attachment `name`.
pub fn remove(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(file(dir, name));
}

/// Every state under `dir` (files that do not parse are reported, not fatal).
pub fn load_all(dir: &Path) -> (Vec<State>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return (ok, bad) };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<State>(&b).map_err(|e| e.to_string())) {
            Ok(s) => ok.push(s),
            Err(e) => bad.push(format!("{}: {e}", p.display())),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> State {
        State {
            version: VERSION,
            name: name.into(),
            spec: AttachSpec { target: "ns1".into(), ..Default::default() },
            kind: "netns".into(),
            key: "ns1".into(),
            phase: Phase::Starting,
            netns: Some("/run/netns/ns1".into()),
            inner: Some("eth0".into()),
            host: "veth1".into(),
            host_ifindex: 7,
            bridge: "br0".into(),
            port: serde_json::Map::new(),
            vlans: vec![Vlan { vid: 1, end: None, pvid: true, untagged: true }],
            mtu: 1500,
            mac: "aa:bb:cc:dd:ee:ff".into(),
            near: "wdn1".into(),
            far: "wdb1".into(),
            inner_features: vec![("tx-checksum-ip-generic".into(), true)],
            host_features: Vec::new(),
            mode: "protect".into(),
            ips: vec!["198.18.0.2".into()],
            inner_mac: Some("02:00:00:00:00:02".into()),
            workload: Some(name.into()),
            implicit: true,
            identity: Identity::default(),
        }
    }

    #[test]
    fn states_round_trip_through_the_directory() {
        let dir = std::env::temp_dir().join(format!("warden-attach-state-{}", std::process::id()));
        let a = sample("a");
        let mut b = sample("b");
        b.phase = Phase::Attached;
        save(&dir, &a).unwrap();
        save(&dir, &b).unwrap();
        std::fs::write(dir.join("broken.json"), "{").unwrap();
        let (ok, bad) = load_all(&dir);
        assert_eq!(ok, vec![a, b.clone()]);
        assert_eq!(bad.len(), 1);
        remove(&dir, "a");
        std::fs::remove_file(dir.join("broken.json")).unwrap();
        assert_eq!(load_all(&dir).0, vec![b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_file_and_workload_safe() {
        for ok in ["web", "pod-1.a_b", "x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65), "../etc"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
