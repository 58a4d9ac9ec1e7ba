//! Container names and pod metadata from the files container runtimes keep (no daemon API):
//!
//! - containers/storage's `containers.json` (Podman and CRI-O:
//!   `/var/lib/containers/storage/<driver>-containers/containers.json`, an array of
//!   `{"id", "names": [...], "metadata": "<JSON text>"}`): id → names;
//! - Docker's `/var/lib/docker/containers/<id>/config.v2.json` (`"Name": "/db"`, the
//!   container's `Config.Labels`, where the kubelet's dockershim put the pod's
//!   `io.kubernetes.*` labels);
//! - the OCI bundle `config.json` the runtime hands to runc, whose `annotations` carry the CRI
//!   metadata: containerd's CRI plugin under
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
//!   (`io.kubernetes.cri.container-type`, `...cri.container-name`, `...cri.sandbox-name`,
//!   `...cri.sandbox-namespace`, `...cri.sandbox-uid`), CRI-O's (and Podman's) under
//!   `/run/containers/storage/overlay-containers/<id>/userdata/config.json` (Podman's also
//!   under `/var/lib/containers/storage/overlay-containers/<id>/userdata/`):
//!   `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`,
//!   `io.kubernetes.container.name`, `io.kubernetes.cri-o.ContainerType` and the pod's labels
//!   as JSON text in the sandbox's `io.kubernetes.cri-o.Labels` (keys under `io.kubernetes.`
//!   are the kubelet's own and are left out of [`Meta::labels`]).
//!
//! Sources: containers/storage `containers.go` (the `Container` JSON fields), moby
//! `container/container.go` (`config.v2.json`), containerd `internal/cri/annotations`
//! (`pkg/cri/annotations` before 2.0), CRI-O `pkg/annotations` and `internal/annotations`,
//! the kubelet's `pkg/kubelet/types/labels.go` (`io.kubernetes.pod.*`).
//!
//! Every reader is bounded ([`MAX_FILE`]) and tolerant: a missing or malformed file gives
//! nothing, never an error, since metadata only adds names to what the cgroup said.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Largest metadata file read (bytes); larger ones are skipped.
pub const MAX_FILE: u64 = 16 << 20;

/// What the runtime's files say about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The runtime whose files had it (`podman`, `docker`, `containerd`, `cri-o`).
    pub runtime: Option<&'static str>,
    /// Container name (Kubernetes: the container's name in the pod spec).
    pub name: Option<String>,
    /// Kubernetes pod name.
    pub pod_name: Option<String>,
    /// Kubernetes pod namespace.
    pub pod_namespace: Option<String>,
    /// Kubernetes pod uid.
    pub pod_uid: Option<String>,
    /// The pod's labels (without the kubelet's `io.kubernetes.*`).
    pub labels: BTreeMap<String, String>,
    /// True for a pod's sandbox (pause) container.
    pub sandbox: bool,
}

fn read_bounded(path: &Path) -> Option<String> {
    let md = std::fs::metadata(path).ok()?;
    if !md.is_file() || md.len() > MAX_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

/// Names of the containers in a containers/storage `containers.json` (`id → first name`).
pub fn storage_names(text: &str) -> BTreeMap<String, String> {
    let list: Vec<StorageContainer> = serde_json::from_str(text).unwrap_or_default();
    list.into_iter().filter_map(|c| Some((c.id, c.names.into_iter().next()?))).collect()
}

/// The name containers/storage under `root` (`var/lib/containers/storage`, any graph
/// driver) has for `id`.
pub fn storage_name(root: &Path, id: &str) -> Option<String> {
    let dir = root.join("var/lib/containers/storage");
    let mut entries: Vec<_> = std::fs::read_dir(&dir).ok()?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|n| n.to_string_lossy().ends_with("-containers"))
        .filter_map(|n| read_bounded(&dir.join(n).join("containers.json")))
        .find_map(|t| storage_names(&t).remove(id))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<DockerInner>,
}

#[derive(Deserialize, Default)]
struct DockerInner {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Reads Docker's `config.v2.json`: the name (its leading `/` dropped) and the pod fields of
/// the kubelet's labels when dockershim made it.
pub fn docker(text: &str) -> Option<Meta> {
    let c: DockerConfig = serde_json::from_str(text).ok()?;
    let labels = c.config.and_then(|i| i.labels).unwrap_or_default();
    let mut m = from_kube_keys(&labels);
    m.runtime = Some("docker");
    m.sandbox = labels.get("io.kubernetes.docker.type").is_some_and(|t| t == "podsandbox");
    let name = c.name.trim_start_matches('/');
    if m.name.is_none() && !name.is_empty() {
        m.name = Some(name.to_string());
    }
    Some(m)
}

/// The kubelet's `io.kubernetes.*` keys (labels or annotations).
fn from_kube_keys(kv: &BTreeMap<String, String>) -> Meta {
    let get = |k: &str| kv.get(k).filter(|v| !v.is_empty()).cloned();
    Meta {
        name: get("io.kubernetes.container.name").filter(|n| n != "POD"),
        pod_name: get("io.kubernetes.pod.name"),
        pod_namespace: get("io.kubernetes.pod.namespace"),
        pod_uid: get("io.kubernetes.pod.uid"),
        ..Meta::default()
    }
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Reads an OCI bundle `config.json`'s annotations (CRI metadata of containerd, CRI-O, and
/// Podman's `io.container.manager = libpod`). `None` when the file does not parse.
pub fn bundle(text: &str) -> Option<Meta> {
    let b: Bundle = serde_json::from_str(text).ok()?;
    let a = &b.annotations;
    let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
    let mut m = from_kube_keys(a);
    if a.keys().any(|k| k.starts_with("io.kubernetes.cri.")) {
        m.runtime = Some("containerd");
        m.sandbox = get("io.kubernetes.cri.container-type").as_deref() == Some("sandbox");
        m.name = m.name.or_else(|| get("io.kubernetes.cri.container-name"));
        m.pod_name = m.pod_name.or_else(|| get("io.kubernetes.cri.sandbox-name"));
        m.pod_namespace = m.pod_namespace.or_else(|| get("io.kubernetes.cri.sandbox-namespace"));
        m.pod_uid = m.pod_uid.or_else(|| get("io.kubernetes.cri.sandbox-uid"));
    } else if get("io.container.manager").as_deref() == Some("libpod") {
        m.runtime = Some("podman");
    } else if a.contains_key("io.kubernetes.cri-o.ContainerType") {
        m.runtime = Some("cri-o");
        m.sandbox = get("io.kubernetes.cri-o.ContainerType").as_deref() == Some("sandbox");
        m.pod_name = m.pod_name.or_else(|| get("io.kubernetes.cri-o.KubeName"));
        m.pod_namespace = m.pod_namespace.or_else(|| get("io.kubernetes.cri-o.Namespace"));
    } else if let Some(n) = get("nerdctl/name") {
        // containerd without Kubernetes (nerdctl).
        m.runtime = Some("containerd");
        m.name = Some(n);
    }
    if m.sandbox {
        // The sandbox's labels are the pod's (CRI-O keeps them as JSON text).
        if let Some(l) = get("io.kubernetes.cri-o.Labels") {
            let labels: BTreeMap<String, String> = serde_json::from_str(&l).unwrap_or_default();
            m.labels = labels.into_iter().filter(|(k, _)| !k.starts_with("io.kubernetes.")).collect();
        }
        m.name = None;
    }
    Some(m)
}

/// Everything the files under `root` say about container `id` (`runtime` from its cgroup,
/// when known, picks where to look first; every place is tried).
pub fn lookup(root: &Path, runtime: Option<&str>, id: &str) -> Meta {
    let mut m = Meta::default();
    let merge = |m: &mut Meta, o: Meta| {
        m.runtime = m.runtime.or(o.runtime);
        m.name = m.name.take().or(o.name);
        m.pod_name = m.pod_name.take().or(o.pod_name);
        m.pod_namespace = m.pod_namespace.take().or(o.pod_namespace);
        m.pod_uid = m.pod_uid.take().or(o.pod_uid);
        if m.labels.is_empty() {
            m.labels = o.labels;
        }
        m.sandbox |= o.sandbox;
    };
    // OCI bundles: containerd's (every namespace), then containers/storage's runroot and graphroot.
    let mut bundles = Vec::new();
    let tasks = root.join("run/containerd/io.containerd.runtime.v2.task");
    if let Ok(d) = std::fs::read_dir(&tasks) {
        let mut ns: Vec<_> = d.filter_map(Result::ok).map(|e| e.file_name()).collect();
        ns.sort();
        bundles.extend(ns.into_iter().map(|n| tasks.join(n).join(id).join("config.json")));
    }
    for store in ["run/containers/storage", "var/lib/containers/storage"] {
        bundles.push(root.join(store).join("overlay-containers").join(id).join("userdata/config.json"));
    }
    if runtime == Some("docker") {
        bundles.reverse();
    }
    for b in &bundles {
        if let Some(o) = read_bounded(b).as_deref().and_then(bundle) {
            merge(&mut m, o);
            break;
        }
    }
    if let Some(o) = read_bounded(&root.join("var/lib/docker/containers").join(id).join("config.v2.json")).as_deref().and_then(docker) {
        merge(&mut m, o);
    }
    if m.name.is_none() && !m.sandbox && matches!(m.runtime.or(runtime), Some("podman") | Some("cri-o") | None) {
        if let Some(n) = storage_name(root, id) {
            if m.runtime.is_none() && runtime.is_none() {
                m.runtime = Some("podman");
            }
            m.name = Some(n);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity/root"))
    }

    const PODMAN: &str = "ce8cb697cef3ffbfe462ab3ad8441608b1e5b93c57a8b787d13f52a7d43ff095";

    #[test]
    fn containers_json_names() {
        let text = std::fs::read_to_string(root().join("var/lib/containers/storage/overlay-containers/containers.json")).unwrap();
        let names = storage_names(&text);
        assert_eq!(names.get(PODMAN).map(String::as_str), Some("h12id-c11735"));
        assert_eq!(names.get(&"b2".repeat(32)).map(String::as_str), Some("k8s_cart_cart-7d9f8_shop_0f1e2d3c-4b5a-4697-8879-6a5b4c3d2e1f_0"));
        assert_eq!(names.len(), 3);
        assert!(storage_names("not json").is_empty());
        assert!(storage_names(r#"[{"id": "x"}]"#).is_empty(), "no names, no entry");
    }

    #[test]
    fn docker_config_v2() {
        let m = lookup(&root(), Some("docker"), &"e5".repeat(32));
        assert_eq!(m.runtime, Some("docker"));
        assert_eq!(m.name.as_deref(), Some("db"));
        assert_eq!(m.pod_name, None);
        // dockershim's labels.
        let m = docker(
            r#"{"Name": "/k8s_web_web-0_default_u_0", "Config": {"Labels": {"io.kubernetes.container.name": "web",
            "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": "u",
            "io.kubernetes.docker.type": "container"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (m.name.as_deref(), m.pod_name.as_deref(), m.pod_namespace.as_deref(), m.pod_uid.as_deref(), m.sandbox),
            (Some("web"), Some("web-0"), Some("default"), Some("u"), false)
        );
        assert_eq!(docker("{"), None);
    }

    #[test]
    fn cri_o_bundles() {
        let sandbox = lookup(&root(), Some("cri-o"), &"a1".repeat(32));
        assert_eq!(sandbox.runtime, Some("cri-o"));
        assert!(sandbox.sandbox);
        assert_eq!(sandbox.name, None, "a sandbox has no container name");
        assert_eq!(sandbox.pod_name.as_deref(), Some("cart-7d9f8"));
        assert_eq!(sandbox.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(sandbox.pod_uid.as_deref(), Some("0f1e2d3c-4b5a-4697-8879-6a5b4c3d2e1f"));
        let want: BTreeMap<String, String> = [("app", "cart"), ("tier", "backend")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(sandbox.labels, want);
        let c = lookup(&root(), Some("cri-o"), &"b2".repeat(32));
        assert_eq!((c.runtime, c.sandbox, c.name.as_deref()), (Some("cri-o"), false, Some("cart")));
        assert_eq!(c.pod_name.as_deref(), Some("cart-7d9f8"));
        assert!(c.labels.is_empty(), "a container's Labels annotation is not the pod's labels");
    }

    #[test]
    fn containerd_bundles() {
        // The cgroupfs path did not say which runtime: the task directory does.
        let c = lookup(&root(), None, &"d4".repeat(32));
        assert_eq!(c.runtime, Some("containerd"));
        assert_eq!(
            (c.name.as_deref(), c.pod_name.as_deref(), c.pod_namespace.as_deref(), c.pod_uid.as_deref(), c.sandbox),
            (Some("nginx"), Some("web-0"), Some("default"), Some("11111111-2222-4333-8444-555555555555"), false)
        );
        let s = lookup(&root(), None, &"c3".repeat(32));
        assert!(s.sandbox);
        assert_eq!(s.name, None);
        let n = bundle(r#"{"annotations": {"nerdctl/name": "api"}}"#).unwrap();
        assert_eq!((n.runtime, n.name.as_deref()), (Some("containerd"), Some("api")));
    }

    #[test]
    fn podman_recorded_here() {
        let m = lookup(&root(), Some("podman"), PODMAN);
        assert_eq!(m.runtime, Some("podman"));
        assert_eq!(m.name.as_deref(), Some("h12id-c11735"));
        assert_eq!(m.pod_name, None);
        // Unknown ids and broken files give nothing.
        assert_eq!(lookup(&root(), None, &"f0".repeat(32)), Meta::default());
        assert_eq!(bundle("[1,2"), None);
    }
}
