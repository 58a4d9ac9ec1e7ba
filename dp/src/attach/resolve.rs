//! Target resolution: from what `attach` names (a container id or name, a network namespace, a
//! tap, a host interface) to the workload's host-side interface in Warden's namespace, the
//! interface inside the workload's namespace, its addresses and what identifies it again later.
//!
//! Kernel facts used: a veth's `IFLA_LINK` (`link_index` in `ip -j -d`) is its peer's ifindex,
//! in the namespace `IFLA_LINK_NETNSID` (`link_netnsid`) names when the peer is elsewhere
//! (`veth_get_link_net`, drivers/net/veth.c); ifindexes are per namespace, so the peer found
//! in Warden's namespace must point back (its own `link_index` is the inner interface's
//! ifindex). A tap is a `tun` device of type `tap` (`IFF_TAP`); its other end is a file
//! descriptor in the process behind it (qemu), so the tap itself is the host-side interface.
//! Container runtimes keep each container's namespace as a file: podman and docker print it as
//! `NetworkSettings.SandboxKey` (`podman inspect`, `docker inspect`), otherwise
//! `/proc/<State.Pid>/ns/net`.

use std::path::PathBuf;

use warden_control::{AttachSpec, Identity};

use super::link::{self, Link, Ns};

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A container by id or name.
    Container,
    /// A network namespace by name or path.
    Netns,
    /// A tap device (a VM's NIC).
    Tap,
    /// A host-side veth by name.
    Iface,
}

impl Kind {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Netns => "netns",
            Kind::Tap => "tap",
            Kind::Iface => "iface",
        }
    }

    /// From the protocol's name.
    pub fn from_name(s: &str) -> Option<Kind> {
        Some(match s {
            "container" => Kind::Container,
            "netns" => Kind::Netns,
            "tap" => Kind::Tap,
            "iface" => Kind::Iface,
            _ => return None,
        })
    }
}

/// A resolved target (nothing changed yet).
#[derive(Debug, Clone)]
pub struct Target {
    /// Its kind.
    pub kind: Kind,
    /// What identifies it when it comes back (container id, namespace name or path, tap or
    /// interface name).
    pub key: String,
    /// The attachment's default name (container name, namespace name, interface).
    pub default_name: String,
    /// The workload's namespace, when known.
    pub netns: Option<PathBuf>,
    /// The interface inside it.
    pub inner: Option<String>,
    /// The host-side interface (veth peer or tap), in Warden's namespace.
    pub host: Link,
    /// The workload's addresses (the request's, else the inner interface's global ones).
    pub ips: Vec<String>,
    /// The MAC of the inner interface (the workload's own; `None` for a tap: the VM's NIC is
    /// not visible from the host).
    pub inner_mac: Option<String>,
    /// Who it is, as far as the runtime said.
    pub identity: Identity,
}

/// A container as its runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name (without docker's leading `/`).
    pub name: String,
    /// `podman` or `docker`.
    pub runtime: String,
    /// Its network namespace file.
    pub netns: PathBuf,
}

/// Reads `<runtime> inspect` JSON for one container; `None` when not running or without a
/// namespace.
pub fn parse_inspect(runtime: &str, json: &str) -> Option<Container> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let c = v.as_array()?.first()?;
    let state = c.get("State")?;
    if state.get("Running").and_then(|x| x.as_bool()) == Some(false) {
        return None;
    }
    let pid = state.get("Pid").and_then(|x| x.as_u64()).unwrap_or(0);
    let key = c.get("NetworkSettings").and_then(|n| n.get("SandboxKey")).and_then(|x| x.as_str()).unwrap_or("");
    let netns = if !key.is_empty() {
        PathBuf::from(key)
    } else if pid > 0 {
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    } else {
        return None;
    };
    Some(Container {
        id: c.get("Id")?.as_str()?.to_string(),
        name: c.get("Name").and_then(|x| x.as_str()).unwrap_or("").trim_start_matches('/').to_string(),
        runtime: runtime.to_string(),
        netns,
    })
}

/// Finds a running container by id or name with the runtimes' CLIs, in the order of
/// `runtimes` (`[attach] runtimes`).
///
/// # Errors
/// No runtime knows a running container of that name.
pub fn container(target: &str, runtimes: &[String]) -> Result<Container, String> {
    let mut why = Vec::new();
    for rt in runtimes {
        match link::run(&Ns::Own, rt, &["inspect", "--type", "container", "--format", "json", target])
            .or_else(|_| link::run(&Ns::Own, rt, &["container", "inspect", target]))
        {
            Ok(out) => match parse_inspect(rt, &out) {
                Some(c) => return Ok(c),
                None => why.push(format!("{rt}: {target} is not running or has no network namespace")),
            },
            Err(e) => why.push(e.lines().next().unwrap_or("").to_string()),
        }
    }
    Err(format!("no running container {target:?} ({})", why.join("; ")))
}

/// The interface to take inside `ns`: `ifname`, else its only non-loopback one.
fn inner_link(ns: &Ns, ifname: Option<&str>) -> Result<Link, String> {
    if let Some(n) = ifname {
        return link::link(ns, n);
    }
    let all: Vec<Link> = link::links(ns)?.into_iter().filter(|l| l.ifname != "lo").collect();
    match all.len() {
        1 => Ok(all.into_iter().next().unwrap_or_default()),
        0 => Err("the namespace has no interface but lo".into()),
        _ => Err(format!(
            "the namespace has several interfaces ({}): say which with ifname",
            all.iter().map(|l| l.ifname.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The veth in Warden's namespace whose peer is `inner` (in another namespace).
fn host_peer(inner: &Link) -> Result<Link, String> {
    if inner.kind.as_deref() != Some("veth") {
        return Err(format!(
            "{} is a {} interface, not a veth: only veth- and tap-connected workloads can be attached",
            inner.ifname,
            inner.kind.as_deref().unwrap_or("physical")
        ));
    }
    let peer = inner.link_index.ok_or_else(|| format!("{}: no peer index", inner.ifname))?;
    link::links(&Ns::Own)?
        .into_iter()
        .find(|l| l.ifindex == peer && l.kind.as_deref() == Some("veth") && l.link_index == Some(inner.ifindex))
        .ok_or_else(|| format!("the peer of {} is not in Warden's network namespace", inner.ifname))
}

/// The namespace under `/run/netns` holding the peer of host veth `host`, if any.
fn find_peer_ns(host: &Link) -> Option<(PathBuf, Link)> {
    let want = host.link_index?;
    for e in std::fs::read_dir("/run/netns").ok()?.flatten() {
        let p = e.path();
        let Ok(ls) = link::links(&Ns::Path(p.clone())) else { continue };
        if let Some(l) = ls.into_iter().find(|l| l.ifindex == want && l.link_index == Some(host.ifindex)) {
            return Some((p, l));
        }
    }
    None
}

/// Guesses the kind of `target` without touching any runtime that is not asked for: a path
/// or a name under `/run/netns` is a namespace, an interface of Warden's namespace is a tap or
/// an iface, anything else a container.
fn guess(target: &str) -> Kind {
    if target.starts_with('/') || link::netns_path(target).exists() && !target.contains('/') {
        return Kind::Netns;
    }
    match link::link(&Ns::Own, target) {
        Ok(l) if l.kind.as_deref() == Some("tun") => Kind::Tap,
        Ok(_) => Kind::Iface,
        Err(_) => Kind::Container,
    }
}

/// Resolves `spec` (nothing is changed).
///
/// # Errors
/// Unknown kind, target not found, not a veth/tap, the peer outside Warden's namespace.
pub fn resolve(spec: &AttachSpec, runtimes: &[String]) -> Result<Target, String> {
    // Targets and interface names go to the tools as arguments: never as options.
    for (what, v) in [("target", Some(spec.target.as_str())), ("ifname", spec.ifname.as_deref())] {
        if v.is_some_and(|v| v.is_empty() || v.starts_with('-') || v.len() > 4096) {
            return Err(format!("{what} {:?} is not a name", v.unwrap_or_default()));
        }
    }
    let kind = match &spec.kind {
        Some(k) => Kind::from_name(k).ok_or_else(|| format!("kind {k:?} is not container, netns, tap or iface"))?,
        None => guess(&spec.target),
    };
    let mut identity = Identity::default();
    let mut inner_mac = None;
    let (key, default_name, netns, inner, host) = match kind {
        Kind::Container | Kind::Netns => {
            let (key, name, path) = if kind == Kind::Container {
                let c = container(&spec.target, runtimes)?;
                identity.container_id = Some(c.id.clone());
                identity.container_name = Some(c.name.clone());
                identity.runtime = Some(c.runtime.clone());
                (c.id.clone(), if c.name.is_empty() { c.id[..c.id.len().min(12)].to_string() } else { c.name }, c.netns)
            } else {
                let p = link::netns_path(&spec.target);
                if !p.exists() {
                    return Err(format!("no network namespace {}", p.display()));
                }
                // A name under /run/netns names the attachment; another path (`/proc/PID/ns/net`,
                // a runtime's own file) by the namespace's inode.
                let named = p.parent().is_some_and(|d| d == std::path::Path::new("/run/netns") || d == std::path::Path::new("/var/run/netns"));
                let name = match (named, p.file_name()) {
                    (true, Some(f)) => f.to_string_lossy().into_owned(),
                    _ => format!("netns-{}", link::ns_inode(&p).unwrap_or(0)),
                };
                (spec.target.clone(), name, p)
            };
            let ns = Ns::Path(path.clone());
            let inner = inner_link(&ns, spec.ifname.as_deref())?;
            let host = host_peer(&inner)?;
            inner_mac = Some(inner.address.clone());
            (key, name, Some(path), Some(inner.ifname), host)
        }
        Kind::Tap => {
            let l = link::link(&Ns::Own, &spec.target)?;
            if l.kind.as_deref() != Some("tun") || l.tun_type.as_deref() != Some("tap") {
                return Err(format!("{} is not a tap", spec.target));
            }
            (spec.target.clone(), spec.target.clone(), None, None, l)
        }
        Kind::Iface => {
            let l = link::link(&Ns::Own, &spec.target)?;
            if l.kind.as_deref() == Some("tun") {
                return Err(format!("{} is a tap: attach it with kind tap", spec.target));
            }
            if l.kind.as_deref() != Some("veth") {
                return Err(format!("{} is not a veth: only a workload's veth or tap can be attached", spec.target));
            }
            match find_peer_ns(&l) {
                Some((p, inner)) => {
                    inner_mac = Some(inner.address.clone());
                    (spec.target.clone(), spec.target.clone(), Some(p), Some(inner.ifname), l)
                }
                None => (spec.target.clone(), spec.target.clone(), None, None, l),
            }
        }
    };
    identity.host_iface = Some(host.ifname.clone());
    let ips = if !spec.ips.is_empty() {
        spec.ips.iter().map(|s| s.split('/').next().unwrap_or(s).to_string()).collect()
    } else {
        match (&netns, &inner) {
            (Some(p), Some(i)) => link::addresses(&Ns::Path(p.clone()), i)?,
            _ => Vec::new(),
        }
    };
    let inner_mac = inner_mac.filter(|m| !m.is_empty());
    Ok(Target { kind, key, default_name, netns, inner, host, ips, inner_mac, identity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_and_docker_inspect() {
        let p = r#"[{"Id":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","Name":"web",
            "State":{"Running":true,"Pid":4242},"NetworkSettings":{"SandboxKey":"/run/netns/netns-1b2c"}}]"#;
        let c = parse_inspect("podman", p).unwrap();
        assert_eq!((c.name.as_str(), c.netns.to_str().unwrap(), c.runtime.as_str()), ("web", "/run/netns/netns-1b2c", "podman"));
        let d = r#"[{"Id":"ab","Name":"/db","State":{"Running":true,"Pid":77},"NetworkSettings":{"SandboxKey":""}}]"#;
        let c = parse_inspect("docker", d).unwrap();
        assert_eq!((c.name.as_str(), c.netns.to_str().unwrap()), ("db", "/proc/77/ns/net"));
        let stopped = r#"[{"Id":"ab","Name":"x","State":{"Running":false,"Pid":0},"NetworkSettings":{}}]"#;
        assert!(parse_inspect("podman", stopped).is_none());
        assert!(parse_inspect("podman", "[]").is_none());
        assert!(parse_inspect("podman", "not json").is_none());
    }

    #[test]
    fn option_like_targets_are_refused_before_any_tool_runs() {
        for t in ["", "-h", "--help"] {
            let e = resolve(&AttachSpec { target: t.into(), kind: Some("container".into()), ..Default::default() }, &["podman".into()])
                .unwrap_err();
            assert!(e.contains("is not a name"), "{e}");
        }
        let e = resolve(
            &AttachSpec { target: "x".into(), kind: Some("netns".into()), ifname: Some("-x".into()), ..Default::default() },
            &[],
        )
        .unwrap_err();
        assert!(e.contains("ifname"), "{e}");
    }

    #[test]
    fn kinds_by_name() {
        for k in [Kind::Container, Kind::Netns, Kind::Tap, Kind::Iface] {
            assert_eq!(Kind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(Kind::from_name("vm"), None);
    }
}
