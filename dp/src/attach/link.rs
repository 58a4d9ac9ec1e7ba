//! Reading and changing interfaces through iproute2 (`ip -j -d`, `bridge -j`) and ethtool
//! (`ethtool --json -k`, `ethtool -K`), in Warden's own network namespace or another one
//! (`nsenter --net=PATH`).
//!
//! Why the tools and not a netlink crate: every value Warden must copy or restore (bridge
//! port flags, VLANs, offload features) is read and written here exactly as an administrator
//! would with the same tools (`ip -d link show` prints what `ip link set ... type
//! bridge_slave` takes), the tools are on every host that has bridges (iproute2 and ethtool
//! are dependencies of the package), ethtool's feature names are stable strings across kernel
//! versions (the netlink crates expose ETHTOOL_MSG_FEATURES_* as bitsets whose bit names must
//! be fetched separately), and none of this runs on the packet path (an attach is a handful of
//! commands, about 20 ms). Entering another namespace with `nsenter` keeps Warden's own threads
//! in its namespace (`setns` would move the calling thread and needs `unsafe` around fork).
//! Every command's failure is an error naming the command and its stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// A network namespace commands run in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ns {
    /// Warden's own.
    Own,
    /// Another one, by its nsfs file (`/run/netns/NAME`, `/proc/PID/ns/net`).
    Path(PathBuf),
}

impl Ns {
    fn command(&self, prog: &str) -> Command {
        match self {
            Ns::Own => Command::new(prog),
            Ns::Path(p) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", p.display())).arg("--").arg(prog);
                c
            }
        }
    }
}

/// Runs `prog args` in `ns`; its stdout.
///
/// # Errors
/// The program cannot be started or exits non-zero (the message has the command and stderr).
pub fn run(ns: &Ns, prog: &str, args: &[&str]) -> Result<String, String> {
    let out = ns
        .command(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        let where_ = match ns {
            Ns::Own => String::new(),
            Ns::Path(p) => format!(" (in {})", p.display()),
        };
        return Err(format!(
            "{prog} {}{where_}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` in `ns`.
///
/// # Errors
/// As [`run`].
pub fn ip(ns: &Ns, args: &[&str]) -> Result<String, String> {
    run(ns, "ip", args)
}

/// One interface as `ip -j -d link show` describes it (the fields attach uses; `raw` keeps the
/// whole object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Name.
    pub ifname: String,
    /// The peer's ifindex (veth: `iflink`), in the namespace `link_netnsid` names when set,
    /// else in the same namespace.
    pub link_index: Option<u32>,
    /// Namespace id of the peer's namespace, as this namespace numbers it.
    pub link_netnsid: Option<i64>,
    /// `linkinfo.info_kind` (`veth`, `tun`, `bridge`, ...).
    pub kind: Option<String>,
    /// For `tun`: `tap` or `tun`.
    pub tun_type: Option<String>,
    /// The bridge (or other master) it is a port of.
    pub master: Option<String>,
    /// MTU, bytes.
    pub mtu: u32,
    /// MAC address.
    pub address: String,
    /// Administratively up.
    pub up: bool,
    /// `linkinfo.info_slave_data` (bridge port settings) when a port of a bridge.
    pub port: Option<serde_json::Map<String, serde_json::Value>>,
    /// An XDP program is attached (`xdp` in `ip -j -d`).
    pub xdp: bool,
}

impl Link {
    fn from_json(v: &serde_json::Value) -> Option<Link> {
        let li = v.get("linkinfo");
        let s = |o: Option<&serde_json::Value>, k: &str| o.and_then(|o| o.get(k)).and_then(|x| x.as_str()).map(str::to_string);
        Some(Link {
            ifindex: v.get("ifindex")?.as_u64()? as u32,
            ifname: v.get("ifname")?.as_str()?.to_string(),
            link_index: v.get("link_index").and_then(|x| x.as_u64()).map(|x| x as u32),
            link_netnsid: v.get("link_netnsid").and_then(|x| x.as_i64()),
            kind: s(li, "info_kind"),
            tun_type: s(li.and_then(|l| l.get("info_data")), "type"),
            master: s(Some(v), "master"),
            mtu: v.get("mtu").and_then(|x| x.as_u64()).unwrap_or(1500) as u32,
            address: s(Some(v), "address").unwrap_or_default(),
            up: v
                .get("flags")
                .and_then(|f| f.as_array())
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP"))),
            port: match (s(li, "info_slave_kind").as_deref(), li.and_then(|l| l.get("info_slave_data"))) {
                (Some("bridge"), Some(serde_json::Value::Object(m))) => Some(m.clone()),
                _ => None,
            },
            xdp: v.get("xdp").is_some(),
        })
    }
}

/// Every interface of `ns`.
///
/// # Errors
/// `ip` fails or prints what is not its JSON.
pub fn links(ns: &Ns) -> Result<Vec<Link>, String> {
    let out = ip(ns, &["-j", "-d", "link", "show"])?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| format!("ip -j -d link show: {e}"))?;
    Ok(v.iter().filter_map(Link::from_json).collect())
}

/// Interface `name` of `ns`.
///
/// # Errors
/// No such interface, or `ip` fails.
pub fn link(ns: &Ns, name: &str) -> Result<Link, String> {
    let out = ip(ns, &["-j", "-d", "link", "show", "dev", name])?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| format!("ip -j -d link show {name}: {e}"))?;
    v.first().and_then(Link::from_json).ok_or_else(|| format!("no interface {name}"))
}

/// Whether `name` exists in Warden's namespace with index `ifindex`.
pub fn exists(name: &str, ifindex: u32) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok_and(|i| i == ifindex)
}

/// The global-scope addresses of `dev` in `ns` (`ADDR` without prefix length).
///
/// # Errors
/// `ip` fails.
pub fn addresses(ns: &Ns, dev: &str) -> Result<Vec<String>, String> {
    let out = ip(ns, &["-j", "addr", "show", "dev", dev, "scope", "global"])?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| format!("ip -j addr show {dev}: {e}"))?;
    Ok(v.iter()
        .filter_map(|l| l.get("addr_info")?.as_array().cloned())
        .flatten()
        .filter_map(|a| a.get("local")?.as_str().map(str::to_string))
        .collect())
}

/// The bridge port settings `ip link set dev X type bridge_slave` takes, from `ip -d`'s
/// `info_slave_data` (JSON key → option name; booleans `on`/`off`). Read-only fields (state,
/// ids, timers) are not among them.
pub const PORT_OPTIONS: &[(&str, &str)] = &[
    ("priority", "priority"),
    ("cost", "cost"),
    ("hairpin", "hairpin"),
    ("guard", "guard"),
    ("root_block", "root_block"),
    ("fastleave", "fastleave"),
    ("learning", "learning"),
    ("flood", "flood"),
    ("proxy_arp", "proxy_arp"),
    ("proxy_arp_wifi", "proxy_arp_wifi"),
    ("multicast_router", "mcast_router"),
    ("mcast_flood", "mcast_flood"),
    ("bcast_flood", "bcast_flood"),
    ("mcast_to_unicast", "mcast_to_unicast"),
    ("neigh_suppress", "neigh_suppress"),
    ("group_fwd_mask", "group_fwd_mask"),
    ("vlan_tunnel", "vlan_tunnel"),
    ("isolated", "isolated"),
    ("locked", "locked"),
    ("mab", "mab"),
];

/// `ip link set` arguments that give a port the settings `port` (an `info_slave_data`).
pub fn port_args(port: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, opt) in PORT_OPTIONS {
        let Some(v) = port.get(*key) else { continue };
        let val = match v {
            serde_json::Value::Bool(b) => (if *b { "on" } else { "off" }).to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => continue,
        };
        out.push(opt.to_string());
        out.push(val);
    }
    out
}

/// Gives bridge port `dev` (in Warden's namespace) the settings `port`.
///
/// # Errors
/// `ip` refuses one of them.
pub fn set_port(dev: &str, port: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    let args = port_args(port);
    if args.is_empty() {
        return Ok(());
    }
    let mut v: Vec<&str> = vec!["link", "set", "dev", dev, "type", "bridge_slave"];
    v.extend(args.iter().map(String::as_str));
    ip(&Ns::Own, &v).map(|_| ())
}

/// One VLAN entry of a bridge port (`bridge -j vlan show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vlan {
    /// VLAN id (first of a range).
    pub vid: u16,
    /// Last id of a range (`vlanEnd`).
    pub end: Option<u16>,
    /// Port VLAN id.
    pub pvid: bool,
    /// Egress untagged.
    pub untagged: bool,
}

/// The VLANs of bridge port `dev` (empty when the bridge has none configured).
///
/// # Errors
/// `bridge` fails.
pub fn vlans(dev: &str) -> Result<Vec<Vlan>, String> {
    let out = run(&Ns::Own, "bridge", &["-j", "vlan", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Array(Vec::new()));
    let mut res = Vec::new();
    for port in v.as_array().into_iter().flatten() {
        for e in port.get("vlans").and_then(|x| x.as_array()).into_iter().flatten() {
            let flags: Vec<&str> =
                e.get("flags").and_then(|f| f.as_array()).into_iter().flatten().filter_map(|x| x.as_str()).collect();
            let Some(vid) = e.get("vlan").and_then(|x| x.as_u64()) else { continue };
            res.push(Vlan {
                vid: vid as u16,
                end: e.get("vlanEnd").and_then(|x| x.as_u64()).map(|x| x as u16),
                pvid: flags.contains(&"PVID"),
                untagged: flags.contains(&"Egress Untagged"),
            });
        }
    }
    Ok(res)
}

/// Makes the VLANs of bridge port `dev` exactly `want`.
///
/// # Errors
/// `bridge` refuses a change.
pub fn set_vlans(dev: &str, want: &[Vlan]) -> Result<(), String> {
    let have = vlans(dev)?;
    let range = |v: &Vlan| match v.end {
        Some(e) => format!("{}-{e}", v.vid),
        None => v.vid.to_string(),
    };
    for v in have.iter().filter(|v| !want.contains(v)) {
        run(&Ns::Own, "bridge", &["vlan", "del", "dev", dev, "vid", &range(v)])?;
    }
    for v in want.iter().filter(|v| !have.contains(v)) {
        let r = range(v);
        let mut a = vec!["vlan", "add", "dev", dev, "vid", &r];
        if v.pvid {
            a.push("pvid");
        }
        if v.untagged {
            a.push("untagged");
        }
        run(&Ns::Own, "bridge", &a)?;
    }
    Ok(())
}

/// The offload features attach changes: tx checksum offload (veth: `tx-checksum-ip-generic`;
/// other drivers the IPv4/IPv6 forms) and GRO.
pub const TX_CSUM: &[&str] = &["tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-sctp"];
/// Generic receive offload (gives a veth NAPI, which in-kernel redirects into its peer need).
pub const GRO: &str = "generic-receive-offload";

/// The features of `dev` in `ns` that are not fixed: name → requested (what `ethtool -K` set).
///
/// # Errors
/// ethtool fails or prints what is not its JSON.
pub fn features(ns: &Ns, dev: &str) -> Result<BTreeMap<String, bool>, String> {
    let out = run(ns, "ethtool", &["--json", "-k", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ethtool --json -k {dev}: {e}"))?;
    let obj = v.as_array().and_then(|a| a.first()).and_then(|o| o.as_object()).ok_or_else(|| format!("ethtool -k {dev}: no object"))?;
    Ok(obj
        .iter()
        .filter_map(|(k, f)| {
            let f = f.as_object()?;
            if f.get("fixed").and_then(|x| x.as_bool()) != Some(false) {
                return None;
            }
            Some((k.clone(), f.get("requested").and_then(|x| x.as_bool())?))
        })
        .collect())
}

/// Sets features of `dev` in `ns` (`ethtool -K dev NAME on|off ...`); names not in `known`
/// (the device's changeable features) are skipped.
///
/// # Errors
/// ethtool refuses.
pub fn set_features(ns: &Ns, dev: &str, set: &[(String, bool)]) -> Result<(), String> {
    if set.is_empty() {
        return Ok(());
    }
    let mut a: Vec<&str> = vec!["-K", dev];
    for (k, on) in set {
        a.push(k);
        a.push(if *on { "on" } else { "off" });
    }
    run(ns, "ethtool", &a).map(|_| ())
}

/// Feature settings: (ethtool feature name, on).
pub type Features = Vec<(String, bool)>;

/// The changes that give `dev` the wanted tx checksum state (`tx`) and GRO (`gro`, `None`:
/// unchanged), as (feature, value) pairs; and the previous values of what changes.
pub fn feature_changes(now: &BTreeMap<String, bool>, tx: Option<bool>, gro: Option<bool>) -> (Features, Features) {
    let mut set = Vec::new();
    let mut old = Vec::new();
    let mut want = |name: &str, v: bool| {
        if let Some(&cur) = now.get(name) {
            if cur != v {
                set.push((name.to_string(), v));
                old.push((name.to_string(), cur));
            }
        }
    };
    if let Some(tx) = tx {
        for f in TX_CSUM {
            want(f, tx);
        }
    }
    if let Some(g) = gro {
        want(GRO, g);
    }
    (set, old)
}

/// The nsfs file of network namespace name `name` (`/run/netns/NAME`), or `name` itself when
/// it is a path.
pub fn netns_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    }
}

/// The inode of a namespace file (same inode: same namespace).
pub fn ns_inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_settings_become_bridge_slave_options() {
        let j: serde_json::Value = serde_json::from_str(
            r#"{"state":"forwarding","priority":32,"cost":2,"hairpin":true,"learning":false,"flood":true,
                "multicast_router":1,"group_fwd_mask":"0","isolated":true,"id":"0x8001","hold_timer":0.0}"#,
        )
        .unwrap();
        let a = port_args(j.as_object().unwrap());
        assert_eq!(
            a,
            [
                "priority", "32", "cost", "2", "hairpin", "on", "learning", "off", "flood", "on", "mcast_router", "1",
                "group_fwd_mask", "0", "isolated", "on"
            ]
        );
    }

    #[test]
    fn link_json_fields() {
        let j: serde_json::Value = serde_json::from_str(
            r#"{"ifindex":7,"ifname":"veth1","link_index":2,"link_netnsid":0,"flags":["BROADCAST","UP"],"mtu":1450,
                "master":"br0","address":"aa:bb:cc:dd:ee:ff",
                "linkinfo":{"info_kind":"veth","info_slave_kind":"bridge","info_slave_data":{"learning":true}}}"#,
        )
        .unwrap();
        let l = Link::from_json(&j).unwrap();
        assert_eq!((l.ifindex, l.link_index, l.link_netnsid, l.mtu, l.up), (7, Some(2), Some(0), 1450, true));
        assert_eq!(l.master.as_deref(), Some("br0"));
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert!(l.port.unwrap().contains_key("learning"));
        let t: serde_json::Value = serde_json::from_str(
            r#"{"ifindex":9,"ifname":"tap0","flags":["BROADCAST"],"mtu":1500,"address":"aa:bb:cc:dd:ee:01",
                "linkinfo":{"info_kind":"tun","info_data":{"type":"tap"}}}"#,
        )
        .unwrap();
        let l = Link::from_json(&t).unwrap();
        assert_eq!((l.kind.as_deref(), l.tun_type.as_deref(), l.up, l.port.is_none()), (Some("tun"), Some("tap"), false, true));
    }

    #[test]
    fn feature_changes_only_what_differs_and_remembers_it() {
        let now: BTreeMap<String, bool> =
            [("tx-checksum-ip-generic".to_string(), true), (GRO.to_string(), false)].into_iter().collect();
        let (set, old) = feature_changes(&now, Some(false), Some(true));
        assert_eq!(set, [("tx-checksum-ip-generic".to_string(), false), (GRO.to_string(), true)]);
        assert_eq!(old, [("tx-checksum-ip-generic".to_string(), true), (GRO.to_string(), false)]);
        let (set, _) = feature_changes(&now, Some(true), None);
        assert!(set.is_empty());
    }
}
